//! Test backends: echo, sink, source, HTTP and hello servers on loopback, and UDP echo and
//! sink servers.
//!
//! Each TCP backend runs an edge-triggered epoll loop (via mio) on a small number of threads so
//! that it is not the bottleneck when benchmarking the balancer with ~1,000 connections. The UDP
//! backends run one `SO_REUSEPORT` socket per thread (see `udp.rs`).

mod conn;
mod http;
mod udp;
mod worker;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

/// Body size of the HTTP backend's response when none is given.
pub const DEFAULT_HTTP_BODY_SIZE: usize = 64;

/// Listen backlog; large so that connection bursts (idle mode, connect mode) are not dropped.
pub const DEFAULT_BACKLOG: i32 = 4096;

/// What a backend does with each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    /// Echoes every byte back; on client EOF it flushes what is left, shuts down its write
    /// side, then closes.
    Echo,
    /// Reads and discards, counting bytes; closes on EOF.
    Sink,
    /// Writes the deterministic [`crate::pattern`] as fast as it can; with `bytes`, writes
    /// exactly that many, then shuts down its write side and closes once the client has.
    Source {
        /// Bytes to send per connection; `None` sends until the client goes away.
        bytes: Option<u64>,
    },
    /// HTTP/1.1 keep-alive server answering every request with `200` and a fixed body.
    Http {
        /// Size of the response body in bytes.
        body_size: usize,
    },
    /// Writes `name\n` on accept, then behaves like [`BackendKind::Echo`], so tests can tell
    /// which backend served a connection.
    Hello(String),
    /// UDP: sends every datagram back to its sender, byte for byte.
    UdpEcho,
    /// UDP: counts datagrams and bytes, answers nothing.
    UdpSink,
}

impl BackendKind {
    /// The HTTP backend with the default body size.
    pub fn http() -> Self {
        Self::Http {
            body_size: DEFAULT_HTTP_BODY_SIZE,
        }
    }

    /// Whether it serves UDP (datagrams) rather than TCP (connections).
    pub fn is_udp(&self) -> bool {
        matches!(self, Self::UdpEcho | Self::UdpSink)
    }
}

/// Everything needed to start a backend; [`spawn`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// What to do with connections.
    pub kind: BackendKind,
    /// Loopback address to listen on; port 0 picks an ephemeral port.
    pub addr: SocketAddr,
    /// Number of event-loop threads (at least 1).
    pub threads: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// Name reported by the HTTP backend in an `X-Backend` header.
    pub name: Option<String>,
}

impl BackendConfig {
    /// One thread, the default backlog, no name.
    pub fn new(kind: BackendKind, addr: SocketAddr) -> Self {
        Self {
            kind,
            addr,
            threads: 1,
            backlog: DEFAULT_BACKLOG,
            name: None,
        }
    }
}

/// A snapshot of a backend's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendStats {
    /// Connections accepted since start (UDP: distinct sender addresses and ports).
    pub connections: u64,
    /// HTTP requests answered (HTTP backend only; 0 for the others).
    pub requests: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Connections open right now.
    pub active: u64,
    /// Datagrams received (UDP backends only; 0 for the others).
    pub datagrams_in: u64,
    /// Datagrams sent (UDP echo only).
    pub datagrams_out: u64,
}

/// Counters shared between the handle and the event loops.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    connections: AtomicU64,
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    active: AtomicU64,
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    stop: AtomicBool,
    /// Connections per peer IP; touched once per accept, so a mutex is cheap enough.
    peers: Mutex<BTreeMap<IpAddr, u64>>,
}

impl Shared {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> BackendStats {
        BackendStats {
            connections: self.connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            datagrams_in: self.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: self.datagrams_out.load(Ordering::Relaxed),
        }
    }
}

/// A running backend; it stops (threads woken and joined) on [`BackendHandle::stop`] or drop.
#[derive(Debug)]
pub struct BackendHandle {
    local_addr: SocketAddr,
    kind: BackendKind,
    shared: Arc<Shared>,
    wakers: Vec<mio::Waker>,
    threads: Vec<JoinHandle<()>>,
}

impl BackendHandle {
    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What this backend does.
    pub fn kind(&self) -> &BackendKind {
        &self.kind
    }

    /// Current counters.
    pub fn stats(&self) -> BackendStats {
        self.shared.snapshot()
    }

    /// Connections accepted per peer IP address, e.g. to check source-address spreading.
    pub fn peers(&self) -> BTreeMap<IpAddr, u64> {
        // A poisoned lock only means an accept panicked mid-insert; the map is still usable.
        match self.shared.peers.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Stops accepting, closes every connection and joins the threads. Idempotent.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            // If waking fails the loop still sees the flag at its next poll timeout.
            let _ = w.wake();
        }
        for t in self.threads.drain(..) {
            // A panicked worker has already stopped; nothing more to clean up.
            let _ = t.join();
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a backend of `kind` on `addr` with default settings (see [`BackendConfig::new`]).
pub fn spawn(kind: BackendKind, addr: SocketAddr) -> io::Result<BackendHandle> {
    spawn_with(BackendConfig::new(kind, addr))
}

/// Starts a backend as configured. Fails if the address is not loopback or cannot be bound.
pub fn spawn_with(config: BackendConfig) -> io::Result<BackendHandle> {
    if !config.addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("backend address {} is not loopback", config.addr),
        ));
    }
    if config.kind.is_udp() {
        return spawn_udp(config);
    }
    let socket = Socket::new(
        Domain::for_address(config.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Lets a restarted backend rebind a port still held by TIME_WAIT connections.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&config.addr.into())?;
    socket.listen(config.backlog)?;
    let listener: std::net::TcpListener = socket.into();
    let local_addr = listener.local_addr()?;

    let shared = Arc::new(Shared::default());
    let proto = Arc::new(worker::Protocol::new(&config.kind, config.name.as_deref()));
    let mut handle = BackendHandle {
        local_addr,
        kind: config.kind.clone(),
        shared: Arc::clone(&shared),
        wakers: Vec::new(),
        threads: Vec::new(),
    };
    for i in 0..config.threads.max(1) {
        // Every worker watches its own dup of the listener; whoever accepts first wins.
        let l = mio::net::TcpListener::from_std(listener.try_clone()?);
        let (w, waker) = worker::Worker::new(l, Arc::clone(&shared), Arc::clone(&proto))?;
        let t = std::thread::Builder::new()
            .name(format!("backend-{}-{i}", local_addr.port()))
            .spawn(move || w.run())?;
        handle.wakers.push(waker);
        handle.threads.push(t);
    }
    Ok(handle)
}

/// Starts a UDP backend: one thread per `SO_REUSEPORT` socket.
fn spawn_udp(config: BackendConfig) -> io::Result<BackendHandle> {
    let echo = config.kind == BackendKind::UdpEcho;
    let socks = udp::bind(config.addr, config.threads)?;
    let local_addr = socks[0].local_addr()?;
    let shared = Arc::new(Shared::default());
    let mut handle = BackendHandle {
        local_addr,
        kind: config.kind,
        shared: Arc::clone(&shared),
        wakers: Vec::new(),
        threads: Vec::new(),
    };
    for (i, sock) in socks.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let t = std::thread::Builder::new()
            .name(format!("backend-udp-{}-{i}", local_addr.port()))
            .spawn(move || udp::run(sock, echo, shared))?;
        handle.threads.push(t);
    }
    Ok(handle)
}
