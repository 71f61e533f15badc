//! Sockets for scenarios: loopback ports handed out once, connections with timeouts, test
//! payloads, echo exchanges, custom backends, and waiting for a peer to close.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

/// A loopback address whose port is free for TCP and UDP and handed out once per test run.
///
/// Ports come from below the kernel's ephemeral range, in turn, never twice: a port taken
/// with `bind(0)` and released could be handed to the next scenario running in parallel
/// before the first one's listener binds it, and ringlb and HAProxy both bind with
/// `SO_REUSEPORT`, so two processes would then share the port and split each other's
/// connections silently. Nor can an outgoing connection's ephemeral source port take it in
/// the meantime. Falls back to `bind(0)` when the ephemeral range leaves no room below.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    /// Lowest port handed out.
    const FIRST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(FIRST);
    let span = below.saturating_sub(FIRST);
    // A different start in each run, so that a run does not meet the last one's TIME_WAITs.
    let start = std::process::id() % span.max(1);
    for _ in 0..span.min(1000) {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).expect("a port")));
        if TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    // The scenarios keep thousands of ephemeral UDP ports busy, which a TCP probe does not
    // see: the port must be free for both.
    for _ in 0..100 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
        let addr = probe.local_addr().expect("probe address");
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no loopback port free for both TCP and UDP in 100 tries")
}

/// Listening TCP sockets on 127.0.0.1:`port`, from /proc/net/tcp. Used to wait for start-up
/// without opening a connection (one would be proxied to a backend and skew its counters).
pub fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut f = l.split_whitespace();
            let _slot = f.next();
            f.next() == Some(local.as_str()) && f.nth(1) == Some("0A")
        })
        .count()
}

/// Connects with read and write timeouts of [`IO_TIMEOUT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s
}

/// Connects from `source` (a loopback address of the scenario's choosing, port picked by the
/// kernel) with the timeouts of [`connect`]. Clients a peer's log must name once each connect
/// from addresses other than 127.0.0.1: readiness probes come from 127.0.0.1, and on loopback
/// the kernel may give a later connection the port a probe had (`tcp_tw_reuse = 2`), so the
/// same address and port would be logged twice.
pub fn connect_from(addr: SocketAddr, source: Ipv4Addr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect from {source} to {addr}: {e}"));
    let s = TcpStream::from(socket);
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `data` from one thread while another reads the echo; half-closes after the last
/// byte and reads until end of stream. Returns what came back.
pub fn echo_exchange(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let stream = connect(addr);
    let mut writer = stream.try_clone().expect("clone the stream");
    let len = data.len();
    let sender = thread::spawn(move || {
        writer.write_all(&data).expect("write the payload");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut got = Vec::with_capacity(len);
    let read = (&stream).read_to_end(&mut got);
    sender.join().expect("writer thread");
    read.unwrap_or_else(|e| panic!("reading the echo of {len} bytes: {e} (got {})", got.len()));
    got
}

/// How a connection ended, as seen by a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A clean end of stream (FIN).
    Eof,
    /// ECONNRESET.
    Reset,
}

/// Reads (discarding any bytes) until the peer closes, for at most `limit`. Returns how it
/// ended and when, or panics on a timeout or an unexpected error.
pub fn wait_closed(stream: &TcpStream, limit: Duration) -> (Closed, Instant) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "connection still open after {limit:?}");
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        match (&*stream).read(&mut buf) {
            Ok(0) => return (Closed::Eof, Instant::now()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return (Closed::Reset, Instant::now());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("connection still open after {limit:?}")
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("unexpected error while waiting for a close: {e}"),
        }
    }
}

/// A one-connection backend written with std: accepts one connection (within 5 s) on an
/// ephemeral loopback port and hands it to `serve` on a thread of its own.
pub fn custom_backend<T, F>(serve: F) -> (SocketAddr, thread::JoinHandle<T>)
where
    T: Send + 'static,
    F: FnOnce(TcpStream) -> T + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a custom backend");
    let addr = listener.local_addr().expect("custom backend address");
    let handle = thread::spawn(move || serve(accept_one(&listener)));
    (addr, handle)
}

/// Like [`custom_backend`] for `n` connections, each served on a thread of its own; the
/// handle yields the results in accept order.
pub fn custom_backend_many<T, F>(n: usize, serve: F) -> (SocketAddr, thread::JoinHandle<Vec<T>>)
where
    T: Send + 'static,
    F: Fn(TcpStream) -> T + Send + Sync + Clone + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a custom backend");
    let addr = listener.local_addr().expect("custom backend address");
    let handle = thread::spawn(move || {
        let servers: Vec<_> = (0..n)
            .map(|_| {
                let stream = accept_one(&listener);
                let serve = serve.clone();
                thread::spawn(move || serve(stream))
            })
            .collect();
        servers
            .into_iter()
            .map(|h| join(h, "custom backend connection"))
            .collect()
    });
    (addr, handle)
}

/// Accepts one connection within 5 s and gives it 5 s read and write timeouts.
fn accept_one(listener: &TcpListener) -> TcpStream {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let started = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "custom backend: no connection within 5 s"
                );
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("custom backend accept: {e}"),
        }
    };
    stream.set_nonblocking(false).expect("blocking stream");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    stream
}

/// Closes `stream` abortively: SO_LINGER 0, so the peer gets RST.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}

/// Joins a thread, re-raising its panic with context.
pub fn join<T>(handle: thread::JoinHandle<T>, what: &str) -> T {
    match handle.join() {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{what} failed: {msg}")
        }
    }
}
