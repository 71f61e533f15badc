//! A listener's admission rate: a token bucket of `burst` tokens refilled at `rate` a second,
//! kept as the generic cell rate algorithm (one instant, no floating point): a client may go
//! at `now` when `now >= tat - tolerance`, and each one moves `tat` on by one interval.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One listener's rate, shared by every worker.
#[derive(Debug)]
pub struct Bucket {
    state: Mutex<Cell>,
}

#[derive(Debug)]
struct Cell {
    /// Time between two tokens: 1 s / rate.
    interval: Duration,
    /// How far ahead of `now` the theoretical arrival time may run: (burst − 1) intervals.
    tolerance: Duration,
    /// Theoretical arrival time of the next client; `None` before the first.
    tat: Option<Instant>,
}

impl Bucket {
    /// `rate` tokens a second (at least 1), `burst` at once (at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        let (interval, tolerance) = shape(rate, burst);
        Bucket {
            state: Mutex::new(Cell {
                interval,
                tolerance,
                tat: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cell> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the rate and burst (a reload); tokens already spent stay spent.
    pub fn configure(&self, rate: u32, burst: u32) {
        let (interval, tolerance) = shape(rate, burst);
        let mut cell = self.lock();
        cell.interval = interval;
        cell.tolerance = tolerance;
    }

    /// Take a token at `now` if there is one.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut cell = self.lock();
        let tat = cell.tat.map_or(now, |tat| tat.max(now));
        if tat.saturating_duration_since(now) > cell.tolerance {
            return false;
        }
        cell.tat = Some(tat + cell.interval);
        true
    }

    /// Put back a token taken at `now` that was not used after all.
    pub fn refund(&self, now: Instant) {
        let mut cell = self.lock();
        if let Some(tat) = cell.tat {
            cell.tat = Some(tat.checked_sub(cell.interval).unwrap_or(now).max(now));
        }
    }

    /// When the next token is there (now or in the past if there is one).
    pub fn next_at(&self, now: Instant) -> Instant {
        let cell = self.lock();
        match cell.tat {
            Some(tat) => tat.checked_sub(cell.tolerance).unwrap_or(now),
            None => now,
        }
    }
}

fn shape(rate: u32, burst: u32) -> (Duration, Duration) {
    let interval = Duration::from_secs(1) / rate.max(1);
    (interval, interval * (burst.max(1) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_one_token_per_interval() {
        let t0 = Instant::now();
        let bucket = Bucket::new(500, 50);
        let first = (0..60).filter(|_| bucket.try_take(t0)).count();
        assert_eq!(first, 50, "the burst");
        assert!(!bucket.try_take(t0 + Duration::from_micros(1999)));
        assert!(bucket.try_take(t0 + Duration::from_millis(2)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(2)));
        // Over one second, 500 more.
        let mut taken = 0;
        for ms in 3..=1002 {
            let now = t0 + Duration::from_millis(ms);
            while bucket.try_take(now) {
                taken += 1;
            }
        }
        assert_eq!(taken, 500);
    }

    #[test]
    fn a_quiet_spell_refills_at_most_the_burst() {
        let t0 = Instant::now();
        let bucket = Bucket::new(100, 5);
        while bucket.try_take(t0) {}
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| bucket.try_take(later)).count(), 5);
    }

    #[test]
    fn next_at_says_when_a_token_comes_and_refund_gives_one_back() {
        let t0 = Instant::now();
        let bucket = Bucket::new(10, 1);
        assert_eq!(bucket.next_at(t0), t0);
        assert!(bucket.try_take(t0));
        assert_eq!(bucket.next_at(t0), t0 + Duration::from_millis(100));
        bucket.refund(t0);
        assert!(bucket.try_take(t0), "the refunded token");
    }
}
