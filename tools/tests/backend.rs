//! Behaviour of the test backends, over real loopback sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringlb_tools::backend::{self, BackendConfig, BackendKind};
use ringlb_tools::pattern;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to backend");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set timeout");
    s
}

/// Sends `payload` from a writer thread, half-closes, and reads everything until EOF.
fn echo_round_trip(addr: SocketAddr, payload: Vec<u8>) -> Vec<u8> {
    let s = connect(addr);
    let mut w = s.try_clone().expect("clone stream");
    let writer = std::thread::spawn(move || {
        w.write_all(&payload).expect("write payload");
        w.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).expect("read echo until EOF");
    writer.join().expect("writer thread");
    got
}

/// Polls `f` until it holds or 3 s pass.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn echo_returns_exact_bytes_and_handles_half_close() {
    let b = backend::spawn(BackendKind::Echo, any_port()).expect("spawn echo");
    for (i, n) in [0usize, 1, 1 << 20].into_iter().enumerate() {
        let payload = random_bytes(n, i as u64 + 7);
        let got = echo_round_trip(b.local_addr(), payload.clone());
        assert_eq!(got.len(), payload.len(), "length for {n} B");
        assert!(got == payload, "echoed bytes differ for {n} B");
    }
    assert!(eventually(|| b.stats().active == 0));
    let st = b.stats();
    assert_eq!(st.connections, 3);
    assert_eq!(st.bytes_in, 1 + (1 << 20));
    assert_eq!(st.bytes_out, st.bytes_in);
}

#[test]
fn hello_greets_then_echoes() {
    let b = backend::spawn(BackendKind::Hello("b1".into()), any_port()).expect("spawn hello");
    let got = echo_round_trip(b.local_addr(), b"ping".to_vec());
    assert_eq!(got, b"b1\nping");
}

#[test]
fn http_serves_keep_alive_requests_and_counts_them() {
    let mut cfg = BackendConfig::new(BackendKind::Http { body_size: 10 }, any_port());
    cfg.name = Some("web1".into());
    let b = backend::spawn_with(cfg).expect("spawn http");
    let s = connect(b.local_addr());
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    const N: u64 = 20;
    for i in 0..N {
        // Every other request carries a body the server must skip.
        if i % 2 == 0 {
            write!(w, "GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n").expect("write request");
        } else {
            write!(w, "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").expect("write request");
        }
        let mut status = String::new();
        r.read_line(&mut status).expect("status line");
        assert_eq!(status, "HTTP/1.1 200 OK\r\n");
        let mut len = None;
        let mut tagged = false;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).expect("header line");
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse::<usize>().ok();
            }
            tagged |= lower.starts_with("x-backend: web1");
        }
        assert!(tagged, "X-Backend header present");
        let mut body = vec![0; len.expect("Content-Length header")];
        r.read_exact(&mut body).expect("body");
        assert_eq!(body, b"xxxxxxxxxx");
    }
    let st = b.stats();
    assert_eq!(st.requests, N);
    assert_eq!(st.connections, 1);
    // Garbage gets a 400 and the connection closed.
    w.write_all(b"NOT HTTP\r\n\r\n").expect("write garbage");
    let mut rest = String::new();
    r.read_to_string(&mut rest).expect("read until close");
    assert!(rest.starts_with("HTTP/1.1 400"), "got {rest:?}");
}

#[test]
fn sink_counts_and_source_sends_pattern() {
    let sink = backend::spawn(BackendKind::Sink, any_port()).expect("spawn sink");
    let mut s = connect(sink.local_addr());
    s.write_all(&[7u8; 100_000]).expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("sink closes after EOF");
    assert!(rest.is_empty());
    assert!(eventually(|| sink.stats().bytes_in == 100_000));

    let n = 300_001u64;
    let src =
        backend::spawn(BackendKind::Source { bytes: Some(n) }, any_port()).expect("spawn source");
    let s = connect(src.local_addr());
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).expect("read source");
    assert_eq!(got.len() as u64, n);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, b)| *b == pattern::byte_at(i as u64))
    );
}

#[test]
fn stop_unblocks_with_open_connections_and_closes_them() {
    let mut b = backend::spawn(BackendKind::Echo, any_port()).expect("spawn echo");
    let addr = b.local_addr();
    let mut s = connect(addr);
    assert!(eventually(|| b.stats().active == 1));
    let t = Instant::now();
    b.stop();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        t.elapsed()
    );
    let mut buf = [0u8; 1];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "connection closed"
    );
    assert!(TcpStream::connect(addr).is_err(), "listener closed");
}

#[test]
fn rejects_non_loopback_addresses() {
    let addr: SocketAddr = "0.0.0.0:0".parse().expect("literal address");
    assert!(backend::spawn(BackendKind::Echo, addr).is_err());
}

#[test]
fn udp_echo_returns_each_datagram_exactly() {
    let mut cfg = BackendConfig::new(BackendKind::UdpEcho, any_port());
    cfg.threads = 3;
    let b = backend::spawn_with(cfg).expect("spawn udp echo");
    let c = std::net::UdpSocket::bind("127.0.0.1:0").expect("client socket");
    c.connect(b.local_addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set timeout");
    let sizes = [1usize, 64, 1_472, 65_507];
    let mut buf = vec![0u8; 65_536];
    for (i, n) in sizes.into_iter().enumerate() {
        let payload = random_bytes(n, i as u64 + 11);
        c.send(&payload).expect("send datagram");
        let got = c.recv(&mut buf).expect("echoed datagram");
        assert_eq!(got, n, "size of the echo of {n} B");
        assert!(buf[..got] == payload[..], "echoed bytes differ for {n} B");
    }
    let total: usize = sizes.iter().sum();
    let st = b.stats();
    assert_eq!(st.datagrams_in, 4);
    assert_eq!(st.datagrams_out, 4);
    assert_eq!(st.bytes_in, total as u64);
    assert_eq!(st.bytes_out, total as u64);
    assert_eq!(st.connections, 1, "one sender");
}

#[test]
fn udp_sink_counts_datagrams_and_stops_promptly() {
    let mut b = backend::spawn(BackendKind::UdpSink, any_port()).expect("spawn udp sink");
    let c = std::net::UdpSocket::bind("127.0.0.1:0").expect("client socket");
    for _ in 0..100 {
        c.send_to(&[9u8; 500], b.local_addr())
            .expect("send datagram");
    }
    assert!(eventually(|| b.stats().datagrams_in == 100));
    let st = b.stats();
    assert_eq!(st.bytes_in, 50_000);
    assert_eq!((st.datagrams_out, st.bytes_out), (0, 0));
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set timeout");
    assert!(c.recv(&mut [0u8; 16]).is_err(), "a sink answers nothing");
    let t = Instant::now();
    b.stop();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        t.elapsed()
    );
}
