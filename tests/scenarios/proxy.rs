//! The PROXY protocol toward backends (`send_proxy`): a backend that parses the header with
//! ringlb's strict parser sees the client's address and the address it connected to, then
//! exactly the client's bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ringlb::core::proxy_header::{Parsed, ProxyHeader, parse};

use crate::harness::{Ctx, Launch, Outcome, Proxy, connect, payload};

/// Headers a backend saw, in arrival order.
type Seen = Arc<Mutex<Vec<ProxyHeader>>>;

/// A backend that expects a PROXY header on every connection, records it, and echoes what
/// follows it until the client's end.
fn proxied_echo() -> (SocketAddr, Seen) {
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
