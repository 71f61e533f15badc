//! Log lines that a storm must not multiply: a budget of lines per second, the rest counted
//! and reported with the next line that is let through.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::core::conn::{CloseReason, Failure};
use crate::core::slot::SlotKey;
use crate::sys::pipe::NoPipe;

/// The window a budget applies to.
const INTERVAL: Duration = Duration::from_secs(1);

/// Debug lines about resets per worker and second.
pub const RESET_LINES_PER_SECOND: u32 = 20;

/// At most `budget` lines per second.
#[derive(Debug)]
pub struct RateLimit {
    budget: u32,
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Default for RateLimit {
    /// One line per second.
    fn default() -> Self {
        RateLimit::new(1)
    }
}

impl RateLimit {
    /// At most `budget` lines per second.
    pub const fn new(budget: u32) -> Self {
        RateLimit {
            budget,
            window: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last one let through)` when a line may be logged at
    /// `now`; `None` (and the line is counted) when this second's budget is spent.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.window.is_none_or(|start| now >= start + INTERVAL) {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used >= self.budget {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Log, at debug under the target `ringlb::resets` and within `limit`, that worker `worker`
/// resets connection `key` (RST to both peers) for `reason`. Every engine calls this for each
/// `Close { reset: true }`.
pub fn log_reset(
    limit: &mut RateLimit,
    now: Instant,
    worker: usize,
    key: SlotKey,
    reason: CloseReason,
) {
    if !tracing::enabled!(target: "ringlb::resets", tracing::Level::DEBUG) {
        return;
    }
    if let Some(suppressed) = limit.allow(now) {
        tracing::debug!(
            target: "ringlb::resets",
            worker,
            conn = key.index(),
            cause = %ResetCause(reason),
            suppressed,
            "resetting connection"
        );
    }
}

/// Warn, within `limit` (one line a second: `RateLimit::default`), that worker `worker` found
/// no pipe for a direction that would splice, which forwards by copy instead. Every engine
/// calls this for each refusal; a client that opens connections can trigger it.
pub fn log_no_pipe(limit: &mut RateLimit, now: Instant, worker: usize, why: &NoPipe) {
    if let Some(suppressed) = limit.allow(now) {
        tracing::warn!(
            worker,
            %why,
            suppressed,
            "no pipe for splicing; the direction copies instead"
        );
    }
}

/// A reset's cause in words, errno included.
struct ResetCause(CloseReason);

impl fmt::Display for ResetCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            CloseReason::ClientFailed(failure) => write!(f, "client: {}", FailureText(failure)),
            CloseReason::BackendFailed(failure) => {
                write!(f, "backend: {}", FailureText(failure))
            }
            CloseReason::Local => f.write_str("the engine could not carry the connection on"),
            CloseReason::Aborted => f.write_str("shutdown grace period over"),
            other => write!(f, "{other:?}"),
        }
    }
}

struct FailureText(Failure);

impl fmt::Display for FailureText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Failure::Os(errno) => write!(f, "{}", io::Error::from_raw_os_error(errno)),
            Failure::ZeroWrite => f.write_str("the socket took no bytes"),
            Failure::Local => f.write_str("the engine could not carry the connection on"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_lets_that_many_lines_through_per_second_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(3);
        let first: Vec<_> = (0..5).map(|_| limit.allow(t0)).collect();
        assert_eq!(first, [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(limit.allow(t0 + Duration::from_millis(999)), None);
        // A new second: the three lines held back are reported with the first one let through.
        assert_eq!(limit.allow(t0 + INTERVAL), Some(3));
        assert_eq!(limit.allow(t0 + INTERVAL), Some(0));
    }

    #[test]
    fn causes_name_the_side_and_the_error() {
        let reset = CloseReason::ClientFailed(Failure::Os(libc::ECONNRESET));
        assert_eq!(
            ResetCause(reset).to_string(),
            format!("client: {}", io::Error::from_raw_os_error(libc::ECONNRESET))
        );
        assert!(
            ResetCause(CloseReason::BackendFailed(Failure::ZeroWrite))
                .to_string()
                .starts_with("backend: ")
        );
        assert_eq!(
            ResetCause(CloseReason::Aborted).to_string(),
            "shutdown grace period over"
        );
    }
}
