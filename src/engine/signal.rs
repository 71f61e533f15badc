//! The process's signal table, one place for every engine, and the stop [`Phase`] that
//! workers read once per loop turn.
//!
//! | signal               | effect                                                            |
//! |----------------------|-------------------------------------------------------------------|
//! | TERM, INT, QUIT      | graceful stop: no new clients, drain for up to `shutdown_grace`   |
//! | another of those     | while draining: stop at once (abort what is open, exit status 0)  |
//! | HUP                  | reload: the control side re-reads the file (see `control::reload`) |
//! | USR1                 | reopens the access log file (logrotate); serving goes on          |
//! | USR2                 | logged as ignored (info); serving goes on                         |
//! | PIPE                 | ignored: sends use `MSG_NOSIGNAL`, and splice reports EPIPE       |
//!
//! The handlers (signal_hook's) only do async-signal-safe work: mark the signal pending and
//! write a byte to a self-pipe. A watcher thread, `ringlb-signals`, reads that pipe, logs, and
//! moves the phase on; it lives as long as the process, so the handlers stay installed until
//! exit. Two signals of one kind that arrive before the watcher looks count once, as the
//! kernel itself merges a signal that is already pending.
//!
//! The phase is process-wide and changes a handful of times in a process's life, so reading it
//! costs one relaxed load per loop turn, off the per-byte path.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use super::access_log::Reopen;
use super::notify;

/// The signals the watcher answers (SIGPIPE is ignored apart).
const WATCHED: [i32; 6] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2];

/// How far the process is on its way out. It only ever moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Accepting and serving.
    Serving = 0,
    /// No new clients; open connections may finish within the grace period.
    Draining = 1,
    /// Abort what is still open and exit now.
    Stopping = 2,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Serving,
            1 => Phase::Draining,
            _ => Phase::Stopping,
        }
    }

    /// The phase after one more stop request.
    fn next(self) -> Phase {
        match self {
            Phase::Serving => Phase::Draining,
            Phase::Draining | Phase::Stopping => Phase::Stopping,
        }
    }
}

/// The stop [`Phase`], moved on by the signal watcher (or [`Shutdown::request`]). It also
/// carries the opposite news for in-process callers: that every worker is up.
#[derive(Clone, Debug)]
pub struct Shutdown {
    phase: Arc<AtomicU8>,
    up: Arc<AtomicBool>,
    /// Set by SIGUSR1, taken by the access log's writer.
    reopen: Reopen,
    /// Set by SIGHUP, taken by the control side ([`Shutdown::take_reload`]).
    reload: Arc<AtomicBool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            phase: Arc::new(AtomicU8::new(Phase::Serving as u8)),
            up: Arc::default(),
            reopen: Reopen::default(),
            reload: Arc::default(),
        }
    }
}

impl Shutdown {
    /// A phase that the process's signals move on, by the table in the module documentation.
    pub fn from_signals() -> io::Result<Self> {
        // A dead peer must be an error result, never a process-killing signal. Registering a
        // handler replaces SIG_DFL (terminate) with one that does nothing.
        signal_hook::flag::register(SIGPIPE, Arc::new(AtomicBool::new(false)))?;
        let shutdown = Shutdown::default();
        let mut signals = Signals::new(WATCHED)?;
        let watched = shutdown.clone();
        // Detached on purpose: the handlers must stay installed until the process exits, or a
        // late SIGHUP would kill it after all.
        std::thread::Builder::new()
            .name("ringlb-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    on_signal(&watched, signal);
                }
            })?;
        if let Some(interval) = notify::watchdog_interval() {
            let alive = shutdown.clone();
            std::thread::Builder::new()
                .name("ringlb-watchdog".into())
                .spawn(move || keep_watchdog(&alive, interval / 2))?;
        }
        Ok(shutdown)
    }

    /// Ask every worker to drain and stop (tests, the demo). Never undoes a stop at once.
    pub fn request(&self) {
        let previous = self
            .phase
            .fetch_max(Phase::Draining as u8, Ordering::Relaxed);
        if Phase::from_u8(previous) == Phase::Serving {
            notify::stopping();
        }
    }

    /// One more stop request: serving becomes draining, draining becomes stopping at once.
    /// Returns the phase it moved to.
    pub fn escalate(&self) -> Phase {
        let step = |p| Some(Phase::from_u8(p).next() as u8);
        // The closure never refuses, so both arms carry the previous value.
        let previous = self
            .phase
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step)
            .unwrap_or_else(|p| p);
        if Phase::from_u8(previous) == Phase::Serving {
            notify::stopping();
        }
        Phase::from_u8(previous).next()
    }

    /// Where the process is now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// True once a stop was asked for (draining or stopping).
    pub fn requested(&self) -> bool {
        self.phase() != Phase::Serving
    }

    /// The end of a worker's drain, given the `deadline` it set when draining began (then plus
    /// the grace period): that deadline, or `now` once a stop at once was asked for, so that
    /// the worker's "grace over" path aborts what is open in this very loop turn.
    pub fn drain_until(&self, deadline: Instant, now: Instant) -> Instant {
        match self.phase() {
            Phase::Stopping => deadline.min(now),
            Phase::Serving | Phase::Draining => deadline,
        }
    }

    /// Ask for a reload, as SIGHUP does.
    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::Relaxed);
    }

    /// Whether a reload was asked for since the last call (the control side polls it).
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::Relaxed)
    }

    /// What SIGUSR1 requests: the access log's file reopened.
    pub fn log_reopen(&self) -> Reopen {
        self.reopen.clone()
    }

    /// Record that every worker has finished its set-up, and tell systemd (`READY=1`).
    pub fn mark_up(&self) {
        self.up.store(true, Ordering::Release);
        notify::ready();
    }

    /// True once every worker has finished its set-up (listeners bound on all of them).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
}

/// systemd's watchdog (`WatchdogSec=`): `WATCHDOG=1` every `every` once the workers are up,
/// until the process exits. It shows that the process runs and its threads are scheduled; a
/// worker that stops for good makes the process exit (see `engine::worker`), which systemd sees
/// anyway.
fn keep_watchdog(shutdown: &Shutdown, every: std::time::Duration) {
    loop {
        std::thread::sleep(every);
        if shutdown.is_up() {
            notify::watchdog();
        }
    }
}

/// What one delivered signal does (the table in the module documentation), on the watcher
/// thread, where logging is safe.
fn on_signal(shutdown: &Shutdown, signal: i32) {
    let name = signal_hook::low_level::signal_name(signal).unwrap_or("unknown");
    match signal {
        SIGTERM | SIGINT | SIGQUIT => match shutdown.escalate() {
            Phase::Stopping => tracing::warn!(
                signal = name,
                "second stop signal: aborting open connections and exiting now"
            ),
            Phase::Serving | Phase::Draining => tracing::info!(
                signal = name,
                "stopping: no new connections; open ones may finish within the grace period"
            ),
        },
        SIGHUP if shutdown.requested() => {
            tracing::warn!(signal = name, "stopping: no reload");
        }
        SIGHUP => {
            tracing::info!(signal = name, "reloading the configuration");
            shutdown.request_reload();
        }
        SIGUSR1 => {
            tracing::info!(signal = name, "reopening the access log");
            shutdown.reopen.request();
        }
        _ => tracing::info!(signal = name, "signal ignored; it has no meaning yet"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stop_signals_drain_then_stop_at_once() {
        for (first, second) in [(SIGTERM, SIGTERM), (SIGINT, SIGTERM), (SIGQUIT, SIGINT)] {
            let shutdown = Shutdown::default();
            on_signal(&shutdown, first);
            assert_eq!(shutdown.phase(), Phase::Draining);
            assert!(shutdown.requested());
            on_signal(&shutdown, second);
            assert_eq!(shutdown.phase(), Phase::Stopping);
            on_signal(&shutdown, first);
            assert_eq!(shutdown.phase(), Phase::Stopping, "stopping is final");
        }
    }

    #[test]
    fn hup_asks_for_a_reload_and_usr_signals_never_stop() {
        let shutdown = Shutdown::default();
        for signal in [SIGHUP, SIGUSR1, SIGUSR2, SIGHUP] {
            on_signal(&shutdown, signal);
            assert_eq!(shutdown.phase(), Phase::Serving);
        }
        assert!(shutdown.take_reload(), "HUP asks for a reload");
        assert!(!shutdown.take_reload(), "taken once");
        on_signal(&shutdown, SIGTERM);
        on_signal(&shutdown, SIGHUP);
        assert_eq!(shutdown.phase(), Phase::Draining, "HUP while draining");
        assert!(!shutdown.take_reload(), "no reload while stopping");
    }

    #[test]
    fn request_drains_and_never_undoes_a_stop() {
        let shutdown = Shutdown::default();
        shutdown.request();
        shutdown.request();
        assert_eq!(shutdown.phase(), Phase::Draining);
        assert_eq!(shutdown.escalate(), Phase::Stopping);
        shutdown.request();
        assert_eq!(shutdown.phase(), Phase::Stopping);
    }

    #[test]
    fn stop_at_once_pulls_the_drain_deadline_in() {
        let shutdown = Shutdown::default();
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        shutdown.request();
        assert_eq!(shutdown.drain_until(deadline, now), deadline);
        shutdown.escalate();
        assert_eq!(shutdown.drain_until(deadline, now), now);
        let past = now - Duration::from_millis(1);
        assert_eq!(shutdown.drain_until(past, now), past, "never later");
    }
}
