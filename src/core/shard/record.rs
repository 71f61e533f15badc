//! What the shard remembers of one connection for its access-log record.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::backend::BackendId;
use crate::core::conn::CloseReason;

/// One finished connection, handed out by [`super::Shard::take_records`] when the shard keeps
/// records ([`super::Shard::keep_records`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The client's address (unspecified, port 0, when the engine did not look it up).
    pub client: SocketAddr,
    pub listener: usize,
    pub pool: usize,
    /// The backend connected to, or last tried; `None` when none was picked.
    pub backend: Option<BackendId>,
    pub accepted: Instant,
    /// When it left the waiting queue (`None`: it never waited, or never got out).
    pub admitted: Option<Instant>,
    /// When the backend connection was established (`None`: never).
    pub connected: Option<Instant>,
    /// When the event or timeout that closed it was handled.
    pub closed: Instant,
    /// Bytes from the client, sent on to the backend.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    pub reason: CloseReason,
}

impl Finished {
    /// From accept to leaving the waiting queue: `None` for a client that never waited;
    /// for one turned away by the queue, until it was.
    pub fn wait(&self) -> Option<Duration> {
        match (self.admitted, self.reason) {
            (Some(at), _) => Some(at.saturating_duration_since(self.accepted)),
            (None, CloseReason::QueueTimeout | CloseReason::QueueFull) => Some(self.total()),
            (None, _) => None,
        }
    }

    /// From accept (or leaving the queue) to established.
    pub fn connect_time(&self) -> Option<Duration> {
        let from = self.admitted.unwrap_or(self.accepted);
        self.connected.map(|at| at.saturating_duration_since(from))
    }

    /// From accept to close.
    pub fn total(&self) -> Duration {
        self.closed.saturating_duration_since(self.accepted)
    }
}

/// Per-connection bookkeeping for records and connect times.
#[derive(Clone, Copy, Debug)]
pub(super) struct Trail {
    pub client: SocketAddr,
    /// Whether the client's socket peer (not a PROXY header's address) is on the loopback.
    pub client_on_loopback: bool,
    pub accepted: Instant,
    /// When it left the waiting queue, if it waited.
    pub admitted: Option<Instant>,
    /// When the latest event or timeout of this connection was handled: its next action is
    /// decided at that time (the core has no clock of its own).
    pub touched: Instant,
    /// The current (or last) connect attempt: its backend and start.
    pub attempt: Option<(BackendId, Instant)>,
    pub connected: Option<Instant>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Trail {
    pub fn new(client: SocketAddr, now: Instant) -> Self {
        Trail {
            client,
            client_on_loopback: on_loopback(client),
            accepted: now,
            admitted: None,
            touched: now,
            attempt: None,
            connected: None,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

/// Whether `addr` is on this host's loopback: 127.0.0.0/8, ::1, or 127.x mapped into IPv6.
pub(super) fn on_loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}
