//! Pacing a load thread to a fixed rate: a token per `1 / rate` seconds since the start.
//!
//! The thread asks for a token before each request; a request that finds none waits until
//! [`Pacer::next_due`]. Tokens not taken when due (every connection was busy) may be taken
//! later, so that the average over the run stays at the rate as long as the target keeps up.

use std::time::Duration;

/// Hands out tokens at `rate` per second, counted from the run's start.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    /// Tokens per second (positive).
    rate: f64,
    /// Tokens taken so far.
    taken: u64,
}

impl Pacer {
    /// A pacer for `total` per second shared evenly by `threads` threads (this thread's
    /// share; at least one per second).
    pub(crate) fn for_thread(total: u64, threads: u32) -> Pacer {
        Pacer {
            rate: (total as f64 / f64::from(threads.max(1))).max(1.0),
            taken: 0,
        }
    }

    /// Takes a token if one is due `elapsed` after the start: token `k` (from 0) is due at
    /// `k / rate` seconds.
    pub(crate) fn try_take(&mut self, elapsed: Duration) -> bool {
        if elapsed >= self.next_due() {
            self.taken += 1;
            true
        } else {
            false
        }
    }

    /// When (since the start) the next token is due.
    pub(crate) fn next_due(&self) -> Duration {
        Duration::from_secs_f64(self.taken as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_token_per_interval() {
        // 2,000/s over 2 threads: 1,000/s each, a token per millisecond.
        let mut p = Pacer::for_thread(2_000, 2);
        assert!(p.try_take(Duration::ZERO));
        assert!(!p.try_take(Duration::ZERO));
        assert_eq!(p.next_due(), MS);
        assert!(!p.try_take(MS / 2));
        assert!(p.try_take(MS));
        assert!(!p.try_take(MS));
        assert_eq!(p.next_due(), 2 * MS);
    }

    #[test]
    fn late_tokens_are_kept_but_never_exceed_the_rate() {
        let mut p = Pacer::for_thread(1_000, 1);
        // Nobody asked for 10 ms: the 11 tokens due by then (0..=10 ms) can all be taken.
        let mut n = 0;
        while p.try_take(10 * MS) {
            n += 1;
        }
        assert_eq!(n, 11);
        assert_eq!(p.next_due(), 11 * MS);
        // Over a whole second no more than rate + 1 tokens.
        let mut total = n;
        for ms in 11..=1_000 {
            while p.try_take(ms * MS) {
                total += 1;
            }
        }
        assert_eq!(total, 1_001);
    }

    #[test]
    fn tiny_rates_are_at_least_one_per_second() {
        let mut p = Pacer::for_thread(1, 4);
        assert!(p.try_take(Duration::ZERO));
        assert_eq!(p.next_due(), Duration::from_secs(1));
    }
}
