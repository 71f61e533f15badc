//! Slow start: a backend that comes back (its checks pass again, or it is set ready again)
//! balances with a weight that ramps from 1 to its own over the pool's `slow_start`, in ten
//! steps, each a new snapshot built off the workers (for source hashing, a Maglev table
//! rebuilt a few times rather than at every connection).

use std::time::{Duration, Instant};

use super::super::{Control, Ramp};
use crate::core::backend::{BackendId, BackendState};

/// Steps of a ramp: the weight grows by a tenth of the backend's at each.
const STEPS: u32 = 10;

/// The weight `elapsed` into a ramp of `slow_start` towards `weight`; `None` once it is over.
fn ramped(weight: u32, elapsed: Duration, slow_start: Duration) -> Option<u32> {
    if elapsed >= slow_start || slow_start.is_zero() {
        return None;
    }
    let step = (elapsed.as_nanos() * u128::from(STEPS) / slow_start.as_nanos()) as u32 + 1;
    Some((u64::from(weight) * u64::from(step) / u64::from(STEPS)).max(1) as u32)
}

impl Control {
    /// Publish backend `b` of pool `p` after a state change (it was `before`). One that comes
    /// up in a pool with `slow_start` begins its ramp: the snapshot is rebuilt with its small
    /// weight. Otherwise the state changes alone (the Maglev table is kept).
    pub(in crate::control) fn publish_state(&mut self, p: usize, b: usize, before: BackendState) {
        let slow_start = self
            .config
            .pools
            .get(p)
            .map_or(Duration::ZERO, |c| c.slow_start);
        let entry = &mut self.pools[p].backends[b];
        let after = entry.core_state();
        if after == BackendState::Up && before != BackendState::Up && !slow_start.is_zero() {
            let now = Instant::now();
            if let Some(weight) = ramped(entry.weight, Duration::ZERO, slow_start) {
                entry.ramp = Some(Ramp { since: now, weight });
                let snapshot = self.pools[p].rebuild();
                self.publish(p, snapshot);
                return;
            }
        }
        if after != BackendState::Up {
            entry.ramp = None;
        }
        // Indices fit: lists are capped at MAX_BACKENDS_PER_POOL entries.
        let snapshot = self.pools[p]
            .snapshot
            .with_state(BackendId(b as u32), after);
        self.publish(p, snapshot);
    }

    /// Move every ramp on to `now` (the control thread calls this a few times a second); a
    /// pool whose weights changed gets one new snapshot.
    pub fn step_ramps(&mut self, now: Instant) {
        for p in 0..self.pools.len() {
            let slow_start = self
                .config
                .pools
                .get(p)
                .map_or(Duration::ZERO, |c| c.slow_start);
            let mut changed = false;
            for entry in &mut self.pools[p].backends {
                let Some(ramp) = entry.ramp else {
                    continue;
                };
                let next = ramped(
                    entry.weight,
                    now.saturating_duration_since(ramp.since),
                    slow_start,
                );
                if next != Some(ramp.weight) {
                    entry.ramp = next.map(|weight| Ramp { weight, ..ramp });
                    changed = true;
                }
            }
            if changed {
                let snapshot = self.pools[p].rebuild();
                self.publish(p, snapshot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_steps_from_a_tenth_to_the_whole() {
        let s = Duration::from_secs(10);
        assert_eq!(ramped(100, Duration::ZERO, s), Some(10));
        assert_eq!(ramped(100, Duration::from_millis(999), s), Some(10));
        assert_eq!(ramped(100, Duration::from_secs(5), s), Some(60));
        assert_eq!(ramped(100, Duration::from_millis(9_999), s), Some(100));
        assert_eq!(ramped(100, s, s), None, "over");
        assert_eq!(ramped(3, Duration::ZERO, s), Some(1), "never below 1");
        assert_eq!(ramped(3, Duration::ZERO, Duration::ZERO), None, "off");
    }
}
