//! The PROXY protocol toward backends (`send_proxy`): a backend that parses the header with
//! ringlb's strict parser sees the client's address and the address it connected to, then
//! exactly the client's bytes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ringlb::core::proxy_header::{Parsed, ProxyHeader, parse};

use crate::harness::{Ctx, Launch, Outcome, Proxy, connect, connect_from, payload};
use crate::peer::{self, Daemon};

/// Headers a backend saw, in arrival order.
pub(crate) type Seen = Arc<Mutex<Vec<ProxyHeader>>>;

/// A backend that expects a PROXY header on every connection, records it, and echoes what
/// follows it until the client's end.
pub(crate) fn proxied_echo() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = Arc::clone(&record);
            thread::spawn(move || serve(stream, &record));
        }
    });
    (addr, seen)
}

fn serve(mut stream: TcpStream, seen: &Mutex<Vec<ProxyHeader>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16384];
    let header = loop {
        match parse(&bytes) {
            Ok(Parsed::Complete(header)) => break header,
            Ok(Parsed::Incomplete { .. }) => {}
            Err(e) => panic!("backend: bad PROXY header: {e}"),
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    seen.lock().expect("seen").push(header);
    if stream.write_all(&bytes[header.len..]).is_err() {
        return;
    }
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&chunk[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Sends `data` and reads the echo to the end.
fn exchange(proxy: &Proxy, data: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut stream = connect(proxy.addr);
    let local = stream.local_addr().expect("local address");
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        let data = data.to_vec();
        thread::spawn(move || {
            stream.write_all(&data).expect("send");
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
        })
    };
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).expect("echo");
    writer.join().expect("writer");
    (local, echoed)
}

/// Two backends, one with `send_proxy = "v1"` of its own and one taking its pool's `"v2"`:
/// each sees the header of its version naming the client and the listener, then exactly the
/// client's bytes, which come back whole.
pub fn send_proxy_tells_backends_the_client(ctx: &Ctx) -> Outcome {
    let (one, seen_one) = proxied_echo();
    let (two, seen_two) = proxied_echo();
    let text = format!(
        "[[listener]]\nbind = \"{{listen}}\"\npool = \"web\"\n[[pool]]\nname = \"web\"\n\
         algorithm = \"round-robin\"\nsend_proxy = \"v2\"\n\
         [[pool.backend]]\nname = \"one\"\naddress = \"{one}\"\nsend_proxy = \"v1\"\n\
         [[pool.backend]]\nname = \"two\"\naddress = \"{two}\"\n"
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text).workers(1))?;
    let mut clients = Vec::new();
    for i in 0..4u64 {
        let data = payload(100_000 + i as usize, i);
        let (local, echoed) = exchange(&proxy, &data);
        assert!(
            echoed == data,
            "client {i}: {} bytes came back",
            echoed.len()
        );
        clients.push(local);
    }
    for (seen, version) in [(&seen_one, 1), (&seen_two, 2)] {
        let seen = seen.lock().expect("seen").clone();
        assert_eq!(seen.len(), 2, "each backend had two clients: {seen:?}");
        for header in seen {
            assert_eq!(header.version, version, "{header:?}");
            let (source, destination) = header.addresses.expect("addresses");
            assert!(clients.contains(&source), "{source} is not a client");
            assert_eq!(
                destination, proxy.addr,
                "the address the client connected to"
            );
        }
    }
    proxy.finish();
    Ok(())
}

/// nginx serving a stream on `listen ... proxy_protocol` that answers each connection with the
/// addresses it read from the PROXY header, and logs them to `access.log` in its directory
/// (one line per session, written when the session ends); stopped when dropped.
struct Nginx {
    addr: SocketAddr,
    daemon: Daemon,
}

impl Nginx {
    fn start(ctx: &Ctx) -> Result<Nginx, crate::harness::Skip> {
        let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
        let packages = "nginx-light, libnginx-mod-stream";
        let binary = peer::find(&["/usr/sbin/nginx", "/usr/bin/nginx"], packages)?;
        peer::find(&[module], packages)?;
        let addr = crate::harness::free_addr();
        let dir = peer::scratch(ctx, "nginx");
        let conf = format!(
            "load_module {module};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
             pid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\nstream {{\n\
             log_format peer \"proxy $proxy_protocol_addr:$proxy_protocol_port \
             $proxy_protocol_server_addr:$proxy_protocol_server_port\";\n\
             access_log {dir}/access.log peer;\n\
             server {{\nlisten {addr} proxy_protocol;\n\
             return \"$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr \
             $proxy_protocol_server_port\\n\";\n}}\n}}\n",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let mut command = std::process::Command::new(binary);
        command
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"));
        let daemon = Daemon::start(command, dir, &[addr]);
        Ok(Nginx { addr, daemon })
    }

    /// nginx's access log so far.
    fn access_log(&self) -> String {
        std::fs::read_to_string(self.daemon.dir.join("access.log")).unwrap_or_default()
    }
}

/// nginx with `listen ... proxy_protocol`, a receiver nobody here wrote, reads the client's
/// address and the listener's from ringlb's v1 and v2 headers: in what it answers each client,
/// and in its access log (`$proxy_protocol_addr:$proxy_protocol_port`), one line per client.
pub fn nginx_reads_the_proxy_header(ctx: &Ctx) -> Outcome {
    let nginx = Nginx::start(ctx)?;
    for version in ["v1", "v2"] {
        let text = format!(
            "[[listener]]\nbind = \"{{listen}}\"\npool = \"web\"\n[[pool]]\nname = \"web\"\n\
             [[pool.backend]]\naddress = \"{}\"\nsend_proxy = \"{version}\"\n",
            nginx.addr
        );
        let proxy = Proxy::start(ctx, &Launch::file(&text))?;
        let mut logged = Vec::new();
        for host in 2..5 {
            let mut stream = connect_from(proxy.addr, Ipv4Addr::new(127, 0, 0, host));
            let local = stream.local_addr().expect("local address");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("nginx's answer");
            assert_eq!(
                answer,
                format!(
                    "{} {} {} {}\n",
                    local.ip(),
                    local.port(),
                    proxy.addr.ip(),
                    proxy.addr.port()
                ),
                "{version}"
            );
            logged.push(format!("proxy {local} {}", proxy.addr));
        }
        peer::expect_log_lines(
            &format!("{version}: nginx's access log"),
            || nginx.access_log(),
            peer::whole_line,
            &logged,
        );
        proxy.finish();
    }
    drop(nginx);
    Ok(())
}
