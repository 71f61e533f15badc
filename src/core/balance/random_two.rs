//! Power of two random choices (Mitzenmacher): sample two distinct Up backends uniformly and
//! choose the less loaded (by `(active + 1) / weight`, as in [`super::least_conn`], so that
//! weights count from the first pick). Nearly as well
//! balanced as least connections, at O(1) per pick instead of O(N), and workers that see stale
//! counts do not all pile onto the same "least loaded" backend.
//!
//! Fallbacks come from the same sample: up to `limit` distinct backends are sampled, the better
//! of the first two is chosen, and the rest follow in increasing load. Sampling is a partial
//! Fisher–Yates shuffle over the worker's own copy of the Up list, so it is exact, distinct and
//! allocation free.
//!
//! Randomness comes from [`SplitMix64`], seeded by the engine: never from the OS inside the core,
//! so a simulation with a fixed seed replays exactly.

use std::cmp::Ordering;

use super::PoolSnapshot;
use super::least_conn::{LeastLoaded, Load};
use super::pick::Pick;
use crate::core::backend::BackendId;

/// SplitMix64 (Steele, Lea, Flood 2014; the seeding generator of xoshiro): one add and three
/// xor-shift-multiplies per output, full period 2⁶⁴, and any seed, zero included, is fine.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator that replays the same sequence for the same seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0), by Lemire's multiply-shift: no division, and a bias
    /// below n/2⁶⁴, far beneath anything a load balancer could notice.
    pub fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        // The high half is below `n`, a `usize`.
        (wide >> 64) as usize
    }
}

/// Picks by two random choices. `sample` is the worker's copy of the snapshot's Up list (any
/// order; it is shuffled in place and stays a permutation of it).
pub(crate) fn pick(
    snapshot: &PoolSnapshot,
    active: &[u32],
    rng: &mut SplitMix64,
    sample: &mut [BackendId],
    limit: usize,
) -> Option<Pick> {
    let n = sample.len();
    if n == 0 {
        return None;
    }
    // At least two samples, or there is no choice to make.
    let k = limit.max(2).min(n);
    for i in 0..k {
        let j = i + rng.below(n - i);
        sample.swap(i, j);
    }
    let (first, second) = match sample[..k] {
        [a, b, ..] => (a, b),
        [a] => return Some(Pick::new(a)),
        [] => return None,
    };
    let (chosen, other) =
        match Load::of(snapshot, active, second).cmp_load(Load::of(snapshot, active, first)) {
            Ordering::Less => (second, first),
            _ => (first, second),
        };
    // The fallbacks, least loaded first; the other of the two ranks first among equals.
    let mut rest = LeastLoaded::new(limit.saturating_sub(1));
    for &id in std::iter::once(&other).chain(&sample[2..k]) {
        rest.offer(id, Load::of(snapshot, active, id));
    }
    let mut pick = Pick::new(chosen);
    if let Some(fallbacks) = rest.into_pick() {
        for &id in fallbacks.candidates() {
            if pick.count() >= limit {
                break;
            }
            pick.push(id);
        }
    }
    Some(pick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 0, as published with the reference implementation.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(7);
        assert_eq!(rng.below(0), 0);
        for n in [1usize, 2, 3, 1000] {
            for _ in 0..1000 {
                assert!(rng.below(n) < n);
            }
        }
    }
}
