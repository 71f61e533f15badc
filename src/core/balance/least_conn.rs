//! Weighted least connections: choose the Up backend whose load *with this connection*,
//! `(active + 1) / weight`, is smallest. Counting the new connection is what makes weights hold
//! from the first pick: with every count at 0, `active / weight` ties everywhere and an idle
//! pool would be served in turn whatever its weights, while `1 / weight` goes to the heaviest
//! first. Successive picks then follow the D'Hondt sequence, which gives each backend exactly
//! its share of any number of connections divisible by the total weight (weights 1:2:3 and 60
//! connections: 10, 20, 30).
//!
//! Loads are compared by cross-multiplication, `(a₁+1)·w₂ < (a₂+1)·w₁` in `u64` (the factors
//! fit 33 and 32 bits), which is exact where floats would round. Ties are broken in rotation:
//! the scan starts just after the previous pick (each worker starts at its own position, see
//! `Balancer`), and the first of equally loaded backends wins.

use std::cmp::Ordering;

use super::PoolSnapshot;
use super::pick::{MAX_CANDIDATES, Pick};
use crate::core::backend::BackendId;

/// A backend's load with one more connection, as the fraction `(active + 1) / weight`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    pub(crate) active: u32,
    pub(crate) weight: u32,
}

impl Load {
    /// The load of `id` given the worker's active counts (0 for ids beyond them).
    pub(crate) fn of(snapshot: &PoolSnapshot, active: &[u32], id: BackendId) -> Self {
        Self {
            active: active.get(id.index()).copied().unwrap_or(0),
            weight: snapshot.weight(id).max(1),
        }
    }

    /// Compares `(self.active + 1) / self.weight` with `other`'s exactly.
    pub(crate) fn cmp_load(self, other: Self) -> Ordering {
        let lhs = (u64::from(self.active) + 1) * u64::from(other.weight);
        let rhs = (u64::from(other.active) + 1) * u64::from(self.weight);
        lhs.cmp(&rhs)
    }
}

/// The `limit` least loaded of the backends fed to it, kept sorted while scanning: an inline
/// insertion list, so no allocation, and most backends are rejected by one comparison with the
/// current worst.
#[derive(Debug)]
pub(crate) struct LeastLoaded {
    entries: [(BackendId, Load); MAX_CANDIDATES],
    len: usize,
    limit: usize,
}

impl LeastLoaded {
    /// An empty list keeping at most `limit` (clamped to `1..=MAX_CANDIDATES`) entries.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            entries: [(
                BackendId(0),
                Load {
                    active: 0,
                    weight: 1,
                },
            ); MAX_CANDIDATES],
            len: 0,
            limit: limit.clamp(1, MAX_CANDIDATES),
        }
    }

    /// Offers a backend. Among equal loads the earlier offer ranks first, which is what makes
    /// the scan order the tie-breaker.
    pub(crate) fn offer(&mut self, id: BackendId, load: Load) {
        // Find the first entry strictly more loaded: the new one goes before it.
        let at = self.entries[..self.len]
            .iter()
            .position(|(_, l)| load.cmp_load(*l) == Ordering::Less)
            .unwrap_or(self.len);
        if at >= self.limit {
            return;
        }
        let end = self.len.min(self.limit - 1);
        // Shift [at, end) right by one, dropping the last entry when full.
        self.entries.copy_within(at..end, at + 1);
        self.entries[at] = (id, load);
        self.len = end + 1;
    }

    /// Turns the list into a pick, least loaded first; `None` if nothing was offered.
    pub(crate) fn into_pick(self) -> Option<Pick> {
        let (&(first, _), rest) = self.entries[..self.len].split_first()?;
        let mut pick = Pick::new(first);
        for &(id, _) in rest {
            pick.push(id);
        }
        Some(pick)
    }
}

/// Picks the least loaded Up backend, then up to `limit - 1` fallbacks in increasing load.
/// `cursor` is the worker's rotation position in the Up list; it moves past the chosen backend.
pub(crate) fn pick(
    snapshot: &PoolSnapshot,
    active: &[u32],
    cursor: &mut usize,
    limit: usize,
) -> Option<Pick> {
    let up = snapshot.up();
    if up.is_empty() {
        return None;
    }
    let start = *cursor % up.len();
    let mut best = LeastLoaded::new(limit);
    for &id in up[start..].iter().chain(&up[..start]) {
        best.offer(id, Load::of(snapshot, active, id));
    }
    let pick = best.into_pick()?;
    let position = up.iter().position(|&id| id == pick.chosen()).unwrap_or(0);
    *cursor = position + 1;
    Some(pick)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(active: u32, weight: u32) -> Load {
        Load { active, weight }
    }

    #[test]
    fn loads_compare_exactly() {
        // (1+1)/3 against (3+1)/6: equal.
        assert_eq!(load(1, 3).cmp_load(load(3, 6)), Ordering::Equal);
        assert_eq!(load(1, 3).cmp_load(load(1, 2)), Ordering::Less);
        // Idle: the heavier backend is the less loaded one.
        assert_eq!(load(0, 3).cmp_load(load(0, 1)), Ordering::Less);
        assert_eq!(
            load(u32::MAX, u32::MAX).cmp_load(load(u32::MAX - 1, u32::MAX)),
            Ordering::Greater
        );
    }

    #[test]
    fn least_loaded_keeps_sorted_stable_prefix() {
        let mut list = LeastLoaded::new(3);
        for (i, a) in [5, 1, 3, 1, 0, 9].into_iter().enumerate() {
            list.offer(BackendId(i as u32), load(a, 1));
        }
        let pick = list.into_pick().expect("offers were made");
        assert_eq!(
            pick.candidates(),
            [BackendId(4), BackendId(1), BackendId(3)]
        );
    }
}
