//! SIGTERM and SIGINT as a flag that workers read once per loop turn.
//!
//! The flag is process-wide and written only by the signal handler, so reading it costs one
//! relaxed load per loop turn, off the per-byte path. SIGPIPE is ignored once for the process:
//! every send already uses `MSG_NOSIGNAL`, and splice reports EPIPE as an error anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once SIGTERM or SIGINT arrived (or [`Shutdown::request`] was called). It also carries
/// the opposite news for in-process callers: that every worker is up.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    up: Arc<AtomicBool>,
}

impl Shutdown {
    /// A flag that the process's SIGTERM and SIGINT set.
    pub fn from_signals() -> std::io::Result<Self> {
        let shutdown = Shutdown::default();
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&shutdown.flag))?;
        }
        // A dead peer must be an error result, never a process-killing signal. Registering a
        // handler replaces SIG_DFL (terminate) with one that does nothing.
        signal_hook::flag::register(
            signal_hook::consts::SIGPIPE,
            Arc::new(AtomicBool::new(false)),
        )?;
        Ok(shutdown)
    }

    /// Ask every worker to stop (tests, the demo).
    pub fn request(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Record that every worker has finished its set-up.
    pub fn mark_up(&self) {
        self.up.store(true, Ordering::Release);
    }

    /// True once every worker has finished its set-up (listeners bound on all of them).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// True once a stop was asked for.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}
