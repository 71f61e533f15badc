//! The process-wide connection limit (`max_connections`, HAProxy's `maxconn`), shared by every
//! worker.
//!
//! One counter of open connections, touched twice per connection (once when a client is taken,
//! once when its slot is released) and never per byte. A worker asks [`Admission::has_room`]
//! before it arms or calls `accept`; when the process is full it stops accepting, so that new
//! clients wait in the kernel's listen backlog instead of being accepted and closed, and it
//! accepts again once a slot frees: at once when it freed the slot itself, within a loop turn
//! (at most 100 ms) when another worker did.
//!
//! How each engine keeps to the limit:
//! - epoll takes a slot before it calls `accept` ([`Admission::try_reserve`]) and gives it back
//!   on `EAGAIN`: never over the limit.
//! - io_uring's accepts are asynchronous: one armed while there was room may still hand over a
//!   client after others filled the process, before its cancel lands. Near the limit accepts are
//!   single-shot (multishot only while [`MULTISHOT_ACCEPT_MIN_ROOM`] slots are free), so that is
//!   at most one client per listener and worker. Those are kept ([`Admitted::Over`]); a client
//!   beyond even that (a multishot burst larger than the free room) is closed and counted.
//! - blocking: an acceptor thread blocked in `accept` when others fill the process may take one
//!   client: at most one per listener.
//!
//! The bound beyond the limit is the configuration's `connections.budget.overshoot` (see
//! `config::fd_budget::overshoot`), and the descriptor budget counts it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::Config;

/// io_uring arms multishot accepts only while at least this many slots are free in the process
/// (and in the worker): one multishot completion batch may hand over as many clients as the
/// backlog holds. Below it, accepts are single-shot, one client each.
pub const MULTISHOT_ACCEPT_MIN_ROOM: usize = 256;

/// What [`Admission::admit`] decided for a client already accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Within the limit.
    Within,
    /// Over the limit but within the overshoot an accept in flight may cause: kept.
    Over,
    /// Beyond even that: the client must be closed. Not counted as open.
    Refused,
}

/// The shared count of open connections against the process-wide limit.
#[derive(Debug)]
pub struct Admission {
    open: AtomicUsize,
    limit: usize,
    /// Clients beyond `limit` that may be kept (see the module documentation).
    overshoot: usize,
    /// Clients kept beyond the limit.
    over: AtomicU64,
    /// Clients closed because even the overshoot was taken.
    refused: AtomicU64,
}

/// Counters of an [`Admission`], for the log line at stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    pub open: usize,
    pub limit: usize,
    /// Clients kept beyond the limit (accepts in flight when the process filled up).
    pub over: u64,
    /// Clients closed because the process was full beyond the overshoot.
    pub refused: u64,
}

impl Admission {
    /// A limit of `limit` open connections (at least 1), with `overshoot` more tolerated from
    /// accepts that were in flight.
    pub fn new(limit: usize, overshoot: usize) -> Self {
        Admission {
            open: AtomicUsize::new(0),
            limit: limit.max(1),
            overshoot,
            over: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The limit of `config`: its `max_connections` and the overshoot its engine may cause.
    pub fn for_config(config: &Config) -> Self {
        let budget = &config.connections.budget;
        Admission::new(
            config.connections.max_connections as usize,
            usize::try_from(budget.overshoot).unwrap_or(usize::MAX),
        )
    }

    // Relaxed ordering throughout: the counter orders nothing else; each operation is atomic,
    // which is all the limit needs.

    /// Free slots in the process (0 when full or over).
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.open.load(Ordering::Relaxed))
    }

    /// Whether a new client may be accepted now.
    pub fn has_room(&self) -> bool {
        self.room() > 0
    }

    /// Take a slot before calling `accept`, if one is free; give it back with
    /// [`Admission::release`] if no client comes.
    pub fn try_reserve(&self) -> bool {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.limit).then_some(open + 1)
            })
            .is_ok()
    }

    /// Count a client an accept already handed over.
    pub fn admit(&self) -> Admitted {
        let result = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.limit + self.overshoot).then_some(open + 1)
            });
        match result {
            Ok(before) if before < self.limit => Admitted::Within,
            Ok(_) => {
                self.over.fetch_add(1, Ordering::Relaxed);
                Admitted::Over
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Admitted::Refused
            }
        }
    }

    /// A connection's slot was released (or a reserved slot was not used).
    pub fn release(&self) {
        // Saturating: a release without its admission (a bug) must not wrap the count and
        // stop accepting for good.
        let _ = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                Some(open.saturating_sub(1))
            });
    }

    /// Counters so far.
    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            open: self.open.load(Ordering::Relaxed),
            limit: self.limit,
            over: self.over.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_come_back_on_release() {
        let admission = Admission::new(2, 0);
        assert!(admission.try_reserve());
        assert!(admission.try_reserve());
        assert!(!admission.try_reserve());
        assert!(!admission.has_room());
        admission.release();
        assert_eq!(admission.room(), 1);
        assert!(admission.try_reserve());
    }

    #[test]
    fn clients_handed_over_are_kept_up_to_the_overshoot_and_counted() {
        let admission = Admission::new(2, 1);
        assert_eq!(admission.admit(), Admitted::Within);
        assert_eq!(admission.admit(), Admitted::Within);
        assert_eq!(admission.admit(), Admitted::Over);
        assert_eq!(admission.admit(), Admitted::Refused);
        let stats = admission.stats();
        assert_eq!((stats.open, stats.over, stats.refused), (3, 1, 1));
        admission.release();
        admission.release();
        assert!(admission.has_room());
    }

    #[test]
    fn a_release_without_an_admission_does_not_wrap() {
        let admission = Admission::new(1, 0);
        admission.release();
        assert!(admission.try_reserve());
        assert!(!admission.try_reserve());
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let admission = Arc::new(Admission::new(100, 0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let admission = Arc::clone(&admission);
                std::thread::spawn(move || (0..1000).filter(|_| admission.try_reserve()).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(taken, 100);
        assert_eq!(admission.stats().open, 100);
    }
}
