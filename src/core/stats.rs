//! What a worker counts: connections, bytes, and the resets it made, by cause.

use super::conn::{CloseReason, Failure};

/// Counters a worker exposes (for logs, the demo, and later metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub accepted: u64,
    pub refused: u64,
    pub closed: u64,
    pub closed_no_backend: u64,
    pub closed_idle: u64,
    /// Closed by `client_fin` or `server_fin` while half-closed.
    pub closed_fin: u64,
    pub closed_failed: u64,
    pub connect_failures: u64,
    pub bytes_upstream: u64,
    pub bytes_downstream: u64,
    /// Directions that could not get a pipe to splice and forwarded by copy instead.
    pub copy_fallbacks: u64,
    /// Completions that named a freed or reused slot and were dropped.
    pub stale_events: u64,
    /// Times the worker was found to have stalled (timers then held, see `RESUME_GRACE`).
    pub stalls: u64,
    /// Sweeps of the timer wheel that dropped the entries of released connections.
    pub timer_sweeps: u64,
    /// Clients that waited in a queue because every eligible backend was full.
    pub queued: u64,
    /// Clients turned away because the queue was full (or there was none).
    pub closed_queue_full: u64,
    /// Clients that waited in the queue for its whole `queue_timeout`.
    pub closed_queue_timeout: u64,
    /// Clients the inspect phase refused.
    pub closed_inspect: u64,
    /// Connections closed with a reset (RST to the peers), by cause.
    pub resets: ResetCounts,
}

/// What one worker counts for one backend (a pool's backend by id). Summed over workers by
/// the control side; written only by the worker, once per connection event and once per send
/// completion for bytes (a plain add to the worker's own memory, never a shared line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCounters {
    /// Connections to it open now (established or connecting).
    pub active: u64,
    /// Connections it was picked for, since the start (each connect attempt counts once).
    pub connections: u64,
    /// Connect attempts that failed (refused, unreachable, timed out).
    pub connect_failures: u64,
    /// Connections to it that it reset (`ECONNRESET`, `EPIPE` on its side).
    pub resets: u64,
    /// Bytes sent to it (client → backend), as they are sent.
    pub bytes_in: u64,
    /// Bytes received from it (backend → client), as they are forwarded to the client.
    pub bytes_out: u64,
    /// How long its connects took, of those that succeeded.
    pub connect_time: ConnectTimes,
}

impl BackendCounters {
    /// Add another worker's counters (the control side sums workers' copies).
    pub fn add(&mut self, other: &BackendCounters) {
        self.active += other.active;
        self.connections += other.connections;
        self.connect_failures += other.connect_failures;
        self.resets += other.resets;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.connect_time.add(&other.connect_time);
    }
}

impl ListenerCounters {
    /// Add another worker's counters.
    pub fn add(&mut self, other: &ListenerCounters) {
        self.active += other.active;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.queued += other.queued;
        self.admitted += other.admitted;
        self.queue_full += other.queue_full;
        self.queue_timeout += other.queue_timeout;
        self.inspect_refused.proxy_header += other.inspect_refused.proxy_header;
        self.inspect_refused.timeout += other.inspect_refused.timeout;
        self.inspect_refused.no_server_name += other.inspect_refused.no_server_name;
        self.routed += other.routed;
        self.unrouted += other.unrouted;
        self.queue_wait.add(&other.queue_wait);
    }
}

/// Upper bounds (µs) of the connect-time histogram's buckets; the last bucket is unbounded.
/// From 0.5 ms (loopback, a LAN) to 5 s (far past any connect timeout worth having).
pub const CONNECT_TIME_BOUNDS_US: [u64; 13] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// A histogram of connect times with fixed buckets, so that workers' histograms add up (and map
/// onto a Prometheus histogram directly).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectTimes {
    /// `buckets[i]`: connects that took at most `CONNECT_TIME_BOUNDS_US[i]` and more than the
    /// bound before (not cumulative); the last entry counts the rest.
    pub buckets: [u64; CONNECT_TIME_BOUNDS_US.len() + 1],
    /// Sum of all connect times, µs.
    pub sum_us: u64,
}

impl ConnectTimes {
    /// Count one connect that took `us` microseconds.
    pub fn record(&mut self, us: u64) {
        let bucket = CONNECT_TIME_BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Connects counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Add another worker's histogram.
    pub fn add(&mut self, other: &ConnectTimes) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

/// What one worker counts for one listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerCounters {
    /// Connections of this listener open now.
    pub active: u64,
    /// Clients accepted, since the start.
    pub accepted: u64,
    /// Clients turned away after accept (a full worker), since the start.
    pub refused: u64,
    /// Clients that joined the waiting queue.
    pub queued: u64,
    /// Clients let out of the queue to a backend.
    pub admitted: u64,
    /// Clients turned away because the queue was full (or there was none).
    pub queue_full: u64,
    /// Clients turned away after waiting `queue_timeout`.
    pub queue_timeout: u64,
    /// Clients the inspect phase refused, by why (see [`crate::core::inspect::Refusal`]).
    pub inspect_refused: InspectRefusals,
    /// Clients the inspect phase sent to a pool by their TLS server name (an SNI route
    /// matched), and clients it sent to the listener's own pool.
    pub routed: u64,
    pub unrouted: u64,
    /// How long clients let out of the queue had waited (buckets of [`CONNECT_TIME_BOUNDS_US`]).
    pub queue_wait: ConnectTimes,
}

/// Clients an inspect phase refused, by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InspectRefusals {
    /// No valid PROXY header (`accept_proxy`).
    pub proxy_header: u64,
    /// Nothing usable within `inspect_timeout`.
    pub timeout: u64,
    /// No server name, with `sni_fallback = "close"`.
    pub no_server_name: u64,
}

/// Connections a worker closed abortively, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetCounts {
    /// The client reset the connection (`ECONNRESET`, `EPIPE`).
    pub client_reset: u64,
    /// The client's socket failed otherwise.
    pub client_error: u64,
    /// The backend reset the connection (`ECONNRESET`, `EPIPE`).
    pub backend_reset: u64,
    /// The backend's socket failed otherwise.
    pub backend_error: u64,
    /// The engine could not carry the connection on ([`Failure::Local`]).
    pub local: u64,
    /// The shutdown grace period ended with the connection still open.
    pub shutdown: u64,
    /// Turned away by the waiting queue (full, or waited too long) with `queue_close =
    /// "reset"`.
    pub queue: u64,
    /// Refused by the inspect phase for an invalid PROXY header.
    pub inspect: u64,
}

impl ResetCounts {
    pub(super) fn count(&mut self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::ClientFailed(Failure::Local)
            | CloseReason::BackendFailed(Failure::Local)
            | CloseReason::Local => &mut self.local,
            CloseReason::ClientFailed(f) if f.peer_reset() => &mut self.client_reset,
            CloseReason::ClientFailed(_) => &mut self.client_error,
            CloseReason::BackendFailed(f) if f.peer_reset() => &mut self.backend_reset,
            CloseReason::BackendFailed(_) => &mut self.backend_error,
            CloseReason::Aborted => &mut self.shutdown,
            CloseReason::QueueFull | CloseReason::QueueTimeout => &mut self.queue,
            CloseReason::Inspect(_) => &mut self.inspect,
            // Never closed with a reset.
            CloseReason::Done
            | CloseReason::NoBackend
            | CloseReason::IdleTimeout
            | CloseReason::FinTimeout(_) => return,
        };
        *counter += 1;
    }

    /// Every reset counted.
    pub fn total(&self) -> u64 {
        self.client_reset
            + self.client_error
            + self.backend_reset
            + self.backend_error
            + self.local
            + self.shutdown
            + self.queue
            + self.inspect
    }
}
