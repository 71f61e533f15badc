//! The result of one balancing decision: a backend and where to go if it refuses.

use crate::core::backend::BackendId;

/// Most backends one [`Pick`] names: the chosen one and up to 7 fallbacks.
pub const MAX_CANDIDATES: usize = 8;

/// A chosen backend followed by distinct fallbacks, best first, for connect retries: a retry
/// walks [`Pick::candidates`] and so never tries one backend twice. Stored inline (no heap
/// allocation per pick) and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    ids: [BackendId; MAX_CANDIDATES],
    /// At least 1: a pick always has its chosen backend.
    len: usize,
}

impl Pick {
    /// A pick of `chosen` with no fallbacks yet.
    pub(crate) fn new(chosen: BackendId) -> Self {
        Self {
            ids: [chosen; MAX_CANDIDATES],
            len: 1,
        }
    }

    /// The backend to connect to first.
    pub fn chosen(&self) -> BackendId {
        self.ids[0]
    }

    /// Every candidate in order, the chosen one first; all distinct.
    pub fn candidates(&self) -> &[BackendId] {
        &self.ids[..self.len]
    }

    /// The candidates after the chosen one, in the order to retry them.
    pub fn fallbacks(&self) -> &[BackendId] {
        &self.ids[1..self.len]
    }

    /// Whether `id` is among the candidates.
    pub fn contains(&self, id: BackendId) -> bool {
        self.candidates().contains(&id)
    }

    /// Number of candidates, to compare against a requested limit.
    pub(crate) fn count(&self) -> usize {
        self.len
    }

    /// Appends `id` unless it is already present or the pick is full; returns whether it was
    /// added.
    pub(crate) fn push(&mut self, id: BackendId) -> bool {
        if self.len >= MAX_CANDIDATES || self.contains(id) {
            return false;
        }
        self.ids[self.len] = id;
        self.len += 1;
        true
    }
}

/// Clamps a caller's candidate count into `1..=MAX_CANDIDATES`: a pick always names at least the
/// chosen backend.
pub(crate) fn clamp_candidates(max_candidates: usize) -> usize {
    max_candidates.clamp(1, MAX_CANDIDATES)
}
