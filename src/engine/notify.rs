//! systemd's notification protocol (`Type=notify`): `READY=1` once every worker listens,
//! `STOPPING=1` when a stop begins, and `WATCHDOG=1` at half the interval systemd asks for.
//!
//! Without `NOTIFY_SOCKET` in the environment (not started by systemd, tests, the demo) every
//! call is a no-op. Errors are logged, never fatal: a supervisor that cannot be told is no reason
//! to stop serving. A reload is framed by `RELOADING=1` (with `MONOTONIC_USEC`, as
//! `Type=notify-reload` wants) and `READY=1`.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: NotifyState<'_>, what: &str) {
    if let Err(err) = sd_notify::notify(&[state]) {
        tracing::warn!(%err, "could not notify systemd ({what})");
    }
}

/// Every worker has finished its set-up.
pub fn ready() {
    send(NotifyState::Ready, "ready");
}

/// A reload has begun; [`ready`] again when it is over.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    states.extend(NotifyState::monotonic_usec_now().ok());
    if let Err(err) = sd_notify::notify(&states) {
        tracing::warn!(%err, "could not notify systemd (reloading)");
    }
}

/// A graceful stop has begun.
pub fn stopping() {
    send(NotifyState::Stopping, "stopping");
}

/// The watchdog interval systemd set (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// One watchdog keep-alive.
pub fn watchdog() {
    send(NotifyState::Watchdog, "watchdog");
}
