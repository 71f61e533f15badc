//! The inspect phase (`accept_proxy`, SNI routes): what a listener reads before it picks a
//! backend, on every engine. Clients send real bytes over loopback; backends say who they
//! are and echo, so each test sees where a client went and that every byte it sent arrived
//! in order, the PROXY header it sent excepted.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Closed, Ctx, Launch, Outcome, Proxy, connect, payload, wait_closed};
use crate::proxy::proxied_echo;

/// A backend that answers every connection with `name` and a newline, then echoes.
fn tagged_echo(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                if stream.write_all(format!("{name}\n").as_bytes()).is_err() {
                    return;
                }
                let mut chunk = [0u8; 16384];
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 || stream.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// Send `parts` (pausing `gap` between them), half-close, and read everything back.
fn send_parts(addr: SocketAddr, parts: &[&[u8]], gap: Duration) -> Vec<u8> {
    let stream = connect(addr);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = stream.try_clone().expect("clone");
    let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    let sender = thread::spawn(move || {
        for part in parts {
            writer.write_all(&part).expect("send");
            thread::sleep(gap);
        }
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut got = Vec::new();
    let _ = (&stream).read_to_end(&mut got);
    sender.join().expect("sender");
    got
}

/// A TLS ClientHello record asking for `name`, padded with `pad` bytes of extension.
fn client_hello(name: &str, pad: usize) -> Vec<u8> {
    let n = name.len() as u16;
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(n + 5).to_be_bytes());
    ext.extend_from_slice(&(n + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&n.to_be_bytes());
    ext.extend_from_slice(name.as_bytes());
    ext.extend_from_slice(&[0, 21]);
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.extend(std::iter::repeat_n(0, pad));
    let mut body = vec![3, 3];
    body.extend_from_slice(&[9; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut message = vec![1];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(message.len() as u16).to_be_bytes());
    record.extend_from_slice(&message);
    record
}

/// `accept_proxy`: the header's client address is the client (the backend, sent a v2
/// header, sees it), the header is not forwarded, every byte after it is; a header split
/// over several writes is read whole; a client without a valid header is closed and
/// reaches no backend.
pub fn accept_proxy_takes_the_client_from_the_header(ctx: &Ctx) -> Outcome {
    let (backend, seen) = proxied_echo();
    let text = format!(
        "[[listener]]\nbind = \"{{listen}}\"\npool = \"web\"\naccept_proxy = true\n\
         [[pool]]\nname = \"web\"\nsend_proxy = \"v2\"\n\
         [[pool.backend]]\naddress = \"{backend}\"\n"
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text).workers(1))?;
    let data = payload(200_000, 7);
    let header = b"PROXY TCP4 192.0.2.7 198.51.100.9 40000 443\r\n";
    let echoed = send_parts(
        proxy.addr,
        &[&header[..9], &header[9..], &data[..1000], &data[1000..]],
        Duration::from_millis(20),
    );
    assert!(
        echoed == data,
        "{} of {} bytes came back",
        echoed.len(),
        data.len()
    );
    let v2 = {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        h.extend_from_slice(&[203, 0, 113, 5, 198, 51, 100, 10]);
        h.extend_from_slice(&50000u16.to_be_bytes());
        h.extend_from_slice(&8443u16.to_be_bytes());
        h
    };
    let mut v2_and_data = v2.clone();
    v2_and_data.extend_from_slice(b"hello after a v2 header");
    let echoed = send_parts(proxy.addr, &[&v2_and_data], Duration::ZERO);
    assert_eq!(echoed, b"hello after a v2 header");
    let headers = seen.lock().expect("seen").clone();
    let addresses: Vec<_> = headers.iter().map(|h| h.addresses).collect();
    assert_eq!(
        addresses,
        vec![
            Some((
                "192.0.2.7:40000".parse().expect("addr"),
                "198.51.100.9:443".parse().expect("addr")
            )),
            Some((
                "203.0.113.5:50000".parse().expect("addr"),
                "198.51.100.10:8443".parse().expect("addr")
            )),
        ]
    );
    // No header, a broken one (a lone LF): closed, and nothing reaches the backend.
    for bad in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    ] {
        let mut stream = connect(proxy.addr);
        stream.write_all(bad).expect("send");
        let (closed, _) = wait_closed(&stream, Duration::from_secs(5));
        assert_eq!(closed, Closed::Reset, "a bad header is a protocol error");
    }
    assert_eq!(
        seen.lock().expect("seen").len(),
        2,
        "no bad client got through"
    );
    proxy.finish();
    Ok(())
}

/// SNI routes: an exact name, a wildcard and an unknown name go to their pools, a client that
/// is not TLS goes to the listener's own pool, and each backend gets the ClientHello and what
/// follows byte for byte (it echoes them). A ClientHello split over several writes, and
/// bigger than the first read, is read whole.
pub fn sni_routes_pick_the_pool(ctx: &Ctx) -> Outcome {
    let (api, wild, default) = (
        tagged_echo("api"),
        tagged_echo("wild"),
        tagged_echo("default"),
    );
    let text = format!(
        "[[listener]]\nbind = \"{{listen}}\"\npool = \"default\"\n\
         [[listener.route]]\nsni = \"api.example.com\"\npool = \"api\"\n\
         [[listener.route]]\nsni = \"*.example.com\"\npool = \"wild\"\n\
         [[pool]]\nname = \"default\"\n[[pool.backend]]\naddress = \"{default}\"\n\
         [[pool]]\nname = \"api\"\n[[pool.backend]]\naddress = \"{api}\"\n\
         [[pool]]\nname = \"wild\"\n[[pool.backend]]\naddress = \"{wild}\"\n"
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text).workers(2))?;
    let cases: [(&str, usize, &str); 5] = [
        ("api.example.com", 0, "api"),
        ("API.Example.COM", 0, "api"),
        ("www.example.com", 0, "wild"),
        ("a.b.example.com", 6000, "wild"),
        ("example.org", 0, "default"),
    ];
    for (name, pad, expected) in cases {
        let hello = client_hello(name, pad);
        let rest = payload(50_000, pad as u64);
        let (first, second) = hello.split_at(hello.len() / 3);
        let got = send_parts(
            proxy.addr,
            &[first, second, &rest],
            Duration::from_millis(10),
        );
        let mut sent = hello.clone();
        sent.extend_from_slice(&rest);
        let tag = format!("{expected}\n");
        assert!(
            got.starts_with(tag.as_bytes()),
            "{name}: went to {:?}",
            String::from_utf8_lossy(&got[..got.len().min(12)])
        );
        assert!(
            got[tag.len()..] == sent[..],
            "{name}: the bytes differ ({} of {})",
            got.len() - tag.len(),
            sent.len()
        );
    }
    let got = send_parts(proxy.addr, &[b"SSH-2.0-client\r\n"], Duration::ZERO);
    assert_eq!(got, b"default\nSSH-2.0-client\r\n");
    proxy.finish();
    Ok(())
}

/// `inspect_timeout`: a client silent past it is closed with `sni_fallback = "close"`, and
/// with the default goes to the listener's pool, where what it sends late still arrives
/// first and whole (the read that was out becomes the first read). A client that never
/// sends its PROXY header is closed at the timeout.
pub fn inspect_timeout_falls_back_or_closes(ctx: &Ctx) -> Outcome {
    let default = tagged_echo("default");
    let api = tagged_echo("api");
    let text = format!(
        "[[listener]]\nbind = \"{{listen}}\"\npool = \"default\"\ninspect_timeout = \"300ms\"\n\
         [[listener.route]]\nsni = \"api.example.com\"\npool = \"api\"\n\
         [[listener]]\nname = \"strict\"\nbind = \"{{listen2}}\"\npool = \"default\"\n\
         inspect_timeout = \"300ms\"\nsni_fallback = \"close\"\n\
         [[listener.route]]\nsni = \"api.example.com\"\npool = \"api\"\n\
         [[listener]]\nname = \"proxied\"\nbind = \"{{listen3}}\"\npool = \"default\"\n\
         inspect_timeout = \"300ms\"\naccept_proxy = true\n\
         [[pool]]\nname = \"default\"\n[[pool.backend]]\naddress = \"{default}\"\n\
         [[pool]]\nname = \"api\"\n[[pool.backend]]\naddress = \"{api}\"\n"
    );
    let listen2 = crate::harness::free_addr();
    let listen3 = crate::harness::free_addr();
    let text = text
        .replace("{listen2}", &listen2.to_string())
        .replace("{listen3}", &listen3.to_string());
    let proxy = Proxy::start(ctx, &Launch::file(&text).workers(1))?;
    // Late, on the default fallback: the greeting of the default pool's backend comes first
    // (it speaks first), then the late bytes' echo.
    let got = send_parts(
        proxy.addr,
        &[b"", b"late bytes"],
        Duration::from_millis(700),
    );
    assert_eq!(got, b"default\nlate bytes");
    for addr in [listen2, listen3] {
        let stream = connect(addr);
        let started = Instant::now();
        let (_, at) = wait_closed(&stream, Duration::from_secs(5));
        let took = at.duration_since(started);
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{addr}: closed after {took:?}, the timeout is 300 ms"
        );
    }
    proxy.finish();
    Ok(())
}
