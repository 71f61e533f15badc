//! Smooth weighted round robin, as nginx does it (`ngx_http_upstream_get_peer`).
//!
//! Every pick adds each Up backend's weight to its running `current`, chooses the largest
//! `current` (the lowest id on ties) and subtracts the total weight from the winner. Over any
//! cycle of `Σw` picks from a fresh state each backend is chosen exactly `w` times, and the heavy
//! backends' picks are spread through the cycle instead of bunched: weights 5,1,1 give
//! `a a b a c a a`, not `a a a a a b c`. Equal weights give plain rotation.

use super::PoolSnapshot;
use super::pick::Pick;
use crate::core::backend::BackendId;

/// One worker's rotation state.
#[derive(Clone, Debug, Default)]
pub(crate) struct SmoothRoundRobin {
    /// Running score per backend, indexed by id; only Up backends' entries move.
    current: Vec<i64>,
}

impl SmoothRoundRobin {
    /// Starts a fresh cycle for a pool of `len` backends. Called on every snapshot change:
    /// scores earned under other weights or another Up set would skew the next cycle.
    pub(crate) fn reset(&mut self, len: usize) {
        self.current.clear();
        self.current.resize(len, 0);
    }

    /// Picks the next backend, then up to `limit - 1` fallbacks: the Up backends that follow
    /// the chosen one in id order, wrapping around. `None` when no backend is Up.
    pub(crate) fn pick(&mut self, snapshot: &PoolSnapshot, limit: usize) -> Option<Pick> {
        let up = snapshot.up();
        if self.current.len() != snapshot.len() {
            self.reset(snapshot.len());
        }
        // Weights are u32 and there are fewer than 2³² backends, so the total fits an i64;
        // scores stay within ±total because they sum to zero after every pick.
        let total = i64::try_from(snapshot.up_weight()).unwrap_or(i64::MAX);
        let mut best: Option<(usize, BackendId)> = None;
        for (position, &id) in up.iter().enumerate() {
            let Some(score) = self.current.get_mut(id.index()) else {
                continue;
            };
            *score = score.saturating_add(i64::from(snapshot.weight(id)));
            let better = match best {
                None => true,
                Some((_, b)) => *score > self.current.get(b.index()).copied().unwrap_or(0),
            };
            if better {
                best = Some((position, id));
            }
        }
        let (position, chosen) = best?;
        if let Some(score) = self.current.get_mut(chosen.index()) {
            *score = score.saturating_sub(total);
        }
        let mut pick = Pick::new(chosen);
        for &id in up.iter().cycle().skip(position + 1).take(up.len() - 1) {
            if pick.count() >= limit {
                break;
            }
            pick.push(id);
        }
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::backend::{BackendInfo, BackendState};
    use crate::core::balance::Algorithm;

    fn pool(weights: &[u32]) -> PoolSnapshot {
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| BackendInfo {
                name: format!("b{i}"),
                addr: ([10, 0, 0, i as u8], 80).into(),
                weight,
                max_connections: None,
                send_proxy: None,
            })
            .collect();
        PoolSnapshot::new(Algorithm::RoundRobin, backends, Vec::new())
    }

    fn sequence(snapshot: &PoolSnapshot, n: usize) -> Vec<u32> {
        let mut rr = SmoothRoundRobin::default();
        (0..n)
            .map(|_| rr.pick(snapshot, 1).expect("a backend is up").chosen().0)
            .collect()
    }

    #[test]
    fn nginx_example_is_smooth() {
        assert_eq!(sequence(&pool(&[5, 1, 1]), 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_rotate() {
        assert_eq!(sequence(&pool(&[3, 3, 3]), 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn fallbacks_follow_in_rotation_and_skip_down() {
        let snapshot = pool(&[1, 1, 1, 1]).with_state(BackendId(2), BackendState::Down);
        let mut rr = SmoothRoundRobin::default();
        let first = rr.pick(&snapshot, 8).expect("three are up");
        assert_eq!(
            first.candidates(),
            [BackendId(0), BackendId(1), BackendId(3)]
        );
        let second = rr.pick(&snapshot, 2).expect("three are up");
        assert_eq!(second.candidates(), [BackendId(1), BackendId(3)]);
    }
}
