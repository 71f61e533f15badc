//! The load generator: N non-blocking connections per thread on an edge-triggered epoll loop,
//! or N UDP flows (`udp-rr`, `udp-stream`).
//!
//! Every run is bounded: it stops at `duration` (idle mode: after the opening phase plus
//! `hold`; udp-rr: plus at most its timeout to collect the answers still owed), after
//! `max_requests` (udp-stream: datagrams), or when every connection has finished, whichever is
//! first.

mod client;
mod pace;
mod report;
mod thread;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use report::{LatencyReport, Report};
pub use udp::MAX_DATAGRAM;

use crate::source::SourceRange;
use report::{Header, Tally};

/// Which way bulk data flows in [`Mode::Stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// The client writes (point it at a sink).
    #[default]
    Upload,
    /// The client reads (point it at a source; bytes are checked against [`crate::pattern`]).
    Download,
}

/// What each connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bulk transfer; with `bytes_per_conn`, each connection moves that many bytes, then (for
    /// upload) shuts down its write side and waits for the server to close.
    Stream {
        /// Which way the data flows.
        direction: Direction,
        /// Bytes per connection, or `None` to transfer until the deadline.
        bytes_per_conn: Option<u64>,
    },
    /// Request/response over persistent connections against an echo server: send `size`
    /// bytes, wait for the same bytes back (verified), repeat.
    Rr {
        /// Request size in bytes (at least 1).
        size: usize,
    },
    /// A new connection per request: connect, send `size` bytes, read them back, close.
    Connect {
        /// Request size in bytes; 0 just connects and closes.
        size: usize,
    },
    /// Open the connections, hold them for `hold`, close them.
    Idle {
        /// How long to keep them open once all are established (or the opening phase ends).
        hold: Duration,
    },
    /// UDP request/response against a UDP echo: each flow (socket) sends a `size`-byte
    /// datagram (8 bytes of sequence number, then the pattern) and waits for the exact same
    /// bytes back; after `timeout` without them the request counts as lost and a new one goes.
    UdpRr {
        /// Datagram size (8..=65,507).
        size: usize,
        /// How long to wait for an answer before counting the request lost.
        timeout: Duration,
    },
    /// UDP datagrams of `size` bytes from every socket, as fast as possible or at `rate`
    /// datagrams per second in total, into a UDP sink (nothing comes back).
    UdpStream {
        /// Datagram size (1..=65,507).
        size: usize,
        /// Datagrams per second, all sockets together; `None`: as fast as possible.
        rate: Option<u64>,
    },
}

/// `udp-stream`'s datagram size unless told: the largest that fits a 1,500-byte Ethernet MTU.
pub const DEFAULT_UDP_STREAM_SIZE: usize = 1_472;

/// `udp-rr`'s answer timeout unless told.
pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_millis(200);

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Stream {
                direction: Direction::Upload,
                ..
            } => "stream-upload",
            Mode::Stream {
                direction: Direction::Download,
                ..
            } => "stream-download",
            Mode::Rr { .. } => "rr",
            Mode::Connect { .. } => "connect",
            Mode::Idle { .. } => "idle",
            Mode::UdpRr { .. } => "udp-rr",
            Mode::UdpStream { .. } => "udp-stream",
        }
    }

    fn size(&self) -> Option<usize> {
        match self {
            Mode::Rr { size }
            | Mode::Connect { size }
            | Mode::UdpRr { size, .. }
            | Mode::UdpStream { size, .. } => Some(*size),
            _ => None,
        }
    }
}

/// A load run's settings; build with [`LoadConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Loopback address to load.
    pub target: SocketAddr,
    /// What each connection does.
    pub mode: Mode,
    /// Number of connections (concurrent slots in connect mode).
    pub connections: u32,
    /// Time limit; in idle mode, the limit of the opening phase.
    pub duration: Duration,
    /// Stop after this many requests (rr and connect modes).
    pub max_requests: Option<u64>,
    /// Bind client sockets to these source addresses, round-robin.
    pub sources: Option<SourceRange>,
    /// Event-loop threads (at least 1, at most `connections`).
    pub threads: u32,
    /// Most connects in flight per thread, so bursts do not overflow the target's backlog.
    pub max_connecting: u32,
    /// rr: requests per second, all connections together, paced per thread (each thread
    /// takes `rate / threads`); `None`: each connection sends its next request as soon as
    /// the last is answered. (udp-stream has its rate in [`Mode::UdpStream`].)
    pub rate: Option<u64>,
}

impl LoadConfig {
    /// One connection, one thread, 1 s, no request limit, no source range.
    pub fn new(target: SocketAddr, mode: Mode) -> Self {
        Self {
            target,
            mode,
            connections: 1,
            duration: Duration::from_secs(1),
            max_requests: None,
            sources: None,
            threads: 1,
            max_connecting: 256,
            rate: None,
        }
    }
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is unusable (explained in the message).
    #[error("invalid load configuration: {0}")]
    Config(String),
    /// The target is not a loopback address.
    #[error("target {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    /// Setting up a thread or poller failed.
    #[error("load generator setup failed: {0}")]
    Io(#[from] io::Error),
    /// A load thread panicked (a bug); its results are lost.
    #[error("a load thread panicked")]
    ThreadPanicked,
}

/// State every load thread shares.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) config: LoadConfig,
    pub(crate) deadline: Instant,
    /// Requests handed out so far, checked against `max_requests`.
    issued: AtomicU64,
}

impl Common {
    /// Whether requests wait for the thread's pacer (rr with a rate).
    pub(crate) fn paced(&self) -> bool {
        self.config.rate.is_some() && matches!(self.config.mode, Mode::Rr { .. })
    }

    /// Claims one request from the budget; false once `max_requests` have been handed out.
    pub(crate) fn reserve_request(&self) -> bool {
        match self.config.max_requests {
            Some(max) => self.issued.fetch_add(1, Ordering::Relaxed) < max,
            None => true,
        }
    }
}

fn validate(c: &LoadConfig) -> Result<(), LoadError> {
    if !c.target.ip().is_loopback() {
        return Err(LoadError::NotLoopback(c.target));
    }
    if c.connections == 0 {
        return Err(LoadError::Config("connections must be at least 1".into()));
    }
    if c.duration.is_zero() {
        return Err(LoadError::Config("duration must be positive".into()));
    }
    if c.sources.is_some() && !c.target.is_ipv4() {
        return Err(LoadError::Config(
            "source ranges are IPv4; the target must be too".into(),
        ));
    }
    match (c.rate, c.mode) {
        (Some(0), _) => return Err(LoadError::Config("rate must be positive".into())),
        (Some(_), Mode::Rr { .. }) | (None, _) => {}
        (Some(_), _) => {
            return Err(LoadError::Config(
                "a request rate applies to rr mode only (udp-stream: Mode::UdpStream's)".into(),
            ));
        }
    }
    if let Mode::Rr { size: 0 } = c.mode {
        return Err(LoadError::Config("rr mode needs size >= 1".into()));
    }
    match c.mode {
        Mode::UdpRr { size, timeout } => {
            if !(udp::SEQ_BYTES..=MAX_DATAGRAM).contains(&size) {
                return Err(LoadError::Config(format!(
                    "udp-rr needs size {}..={MAX_DATAGRAM}",
                    udp::SEQ_BYTES
                )));
            }
            if timeout.is_zero() {
                return Err(LoadError::Config("udp-rr needs a positive timeout".into()));
            }
        }
        Mode::UdpStream { size, rate } => {
            if !(1..=MAX_DATAGRAM).contains(&size) {
                return Err(LoadError::Config(format!(
                    "udp-stream needs size 1..={MAX_DATAGRAM}"
                )));
            }
            if rate == Some(0) {
                return Err(LoadError::Config("udp-stream rate must be positive".into()));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Runs the load described by `config` and reports what happened.
///
/// Raises the open-files soft limit first (best effort) so that 10,000+ connections fit.
pub fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    validate(config)?;
    // Best effort: if it fails, too many connections show up as connect errors instead.
    let _ = crate::sys::raise_nofile_limit();
    let threads = config.threads.clamp(1, config.connections);
    let start = Instant::now();
    let common = Arc::new(Common {
        config: config.clone(),
        deadline: start + config.duration,
        issued: AtomicU64::new(0),
    });
    let mut handles = Vec::new();
    for t in 0..threads {
        let common = Arc::clone(&common);
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || match common.config.mode {
                Mode::UdpRr { .. } => udp::run_rr(&common, t, threads),
                Mode::UdpStream { .. } => udp::run_stream(&common, t, threads),
                _ => thread::run_thread(&common, t, threads),
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                // Threads already started stop by themselves at the deadline.
                return Err(LoadError::Io(e));
            }
        }
    }
    let mut total = Tally::new();
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => total.merge(t),
            Ok(Err(e)) => failure = Some(LoadError::Io(e)),
            Err(_) => failure = Some(LoadError::ThreadPanicked),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let header = Header {
        mode: config.mode.name(),
        target: config.target,
        connections: config.connections,
        threads,
        size: config.mode.size(),
        sources: config.sources.map(|s| s.to_string()),
    };
    Ok(Report::build(header, total, start.elapsed()))
}
