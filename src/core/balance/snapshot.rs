//! The immutable view of one pool that every worker balances over.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Algorithm;
use super::maglev::{MaglevTable, next_prime, table_size_for};
use crate::core::backend::{BackendId, BackendInfo, BackendState};

/// One pool's backends, their states and everything precomputed from them (the Up list, the
/// Maglev table). Immutable: shared by all workers through an `Arc`, and replaced as a whole,
/// off the hot path, whenever the backend set or a state changes.
///
/// [`BackendId`]s index [`Self::backends`]. They stay valid in every snapshot derived with
/// [`Self::with_state`], and in any snapshot built from the same backend list in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSnapshot {
    algorithm: Algorithm,
    backends: Vec<BackendInfo>,
    states: Vec<BackendState>,
    /// Weights (at least 1) by id, dense so that O(N) scans stay within a few cache lines.
    weights: Vec<u32>,
    /// Backends in state Up, in index order: the only ones that take new connections.
    up: Vec<BackendId>,
    /// Whether any backend has a `max_connections`.
    limited: bool,
    /// Sum of the Up backends' weights.
    up_weight: u64,
    /// Maglev table size for this pool (depends on the backend count only, not on states).
    table_size: u32,
    /// The table over all backends, whatever their state; `Some` only for
    /// [`Algorithm::SourceHash`] with at least one backend. Shared by the snapshots that
    /// [`Self::with_state`] derives, since states do not enter it.
    maglev: Option<Arc<MaglevTable>>,
}

impl PoolSnapshot {
    /// Builds a snapshot; for [`Algorithm::SourceHash`] this builds the Maglev table (about a
    /// millisecond for 1000 backends), so call it off the hot path, and prefer
    /// [`Self::with_state`] for state changes.
    ///
    /// Tolerates any input: weights below 1 are stored as 1; missing states are Up and extra
    /// states are dropped; backends beyond `u32::MAX` are dropped (ids are 32 bits).
    pub fn new(
        algorithm: Algorithm,
        backends: Vec<BackendInfo>,
        states: Vec<BackendState>,
    ) -> Self {
        let size = table_size_for(backends.len());
        Self::with_table_size(algorithm, backends, states, size)
    }

    /// Like [`Self::new`] with an explicit Maglev table size (rounded up to a prime) instead of
    /// [`table_size_for`]. For tests and benchmarks; pools should use the default.
    pub fn with_table_size(
        algorithm: Algorithm,
        mut backends: Vec<BackendInfo>,
        mut states: Vec<BackendState>,
        table_size: u32,
    ) -> Self {
        // Ids are `u32`.
        backends.truncate(u32::MAX as usize);
        for b in &mut backends {
            b.weight = b.weight.max(1);
        }
        states.resize(backends.len(), BackendState::Up);
        let weights = backends.iter().map(|b| b.weight).collect();
        let mut snapshot = Self {
            algorithm,
            backends,
            weights,
            states,
            up: Vec::new(),
            up_weight: 0,
            limited: false,
            table_size: next_prime(table_size),
            maglev: None,
        };
        if algorithm == Algorithm::SourceHash {
            let all: Vec<BackendId> = (0..snapshot.backends.len())
                // Indices fit: the vector was truncated to `u32::MAX` entries.
                .map(|i| BackendId(i as u32))
                .collect();
            snapshot.maglev =
                MaglevTable::build(&snapshot.backends, &all, table_size).map(Arc::new);
        }
        snapshot.derive();
        snapshot
    }

    /// Recomputes the Up list and its weight from the states.
    fn derive(&mut self) {
        self.up = self
            .states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.takes_new_connections())
            // Indices fit: the vector was truncated to `u32::MAX` entries.
            .map(|(i, _)| BackendId(i as u32))
            .collect();
        self.up_weight = self.up.iter().map(|&id| u64::from(self.weight(id))).sum();
        self.limited = self.backends.iter().any(|b| b.max_connections.is_some());
    }

    /// A new snapshot with one backend's state changed; ids are unchanged. Cheap: the Maglev
    /// table is shared, not rebuilt, so for source hashing only the clients of the backend that
    /// changed move. An unknown id yields an unchanged copy.
    pub fn with_state(&self, id: BackendId, state: BackendState) -> Self {
        let mut next = self.clone();
        if let Some(s) = next.states.get_mut(id.index()) {
            if *s == state {
                return next;
            }
            *s = state;
            next.derive();
        }
        next
    }

    /// The algorithm picks follow.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Number of backends in every state.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether the pool has no backends at all.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// One backend, or `None` for an id that is not from this snapshot's backend list.
    pub fn backend(&self, id: BackendId) -> Option<&BackendInfo> {
        self.backends.get(id.index())
    }

    /// Where to connect for `id`, or `None` for an unknown id.
    pub fn addr(&self, id: BackendId) -> Option<SocketAddr> {
        self.backend(id).map(|b| b.addr)
    }

    /// A backend's state; an unknown id reads as Down so that it is never chosen.
    pub fn state(&self, id: BackendId) -> BackendState {
        self.states
            .get(id.index())
            .copied()
            .unwrap_or(BackendState::Down)
    }

    /// Whether `new` only appended to this list: every backend here is at the same id there,
    /// with the same name or the same address (a backend renamed while it drains, so that a
    /// new one can take its name, keeps its id). Ids held by open connections then stay right.
    pub fn keeps_ids(&self, new: &PoolSnapshot) -> bool {
        self.len() <= new.len()
            && self
                .backends()
                .iter()
                .zip(new.backends())
                .all(|(a, b)| a.name == b.name || a.addr == b.addr)
    }

    /// The id of the backend called `name` (first match), e.g. to translate ids across a reload
    /// that changed the backend list.
    pub fn id_of(&self, name: &str) -> Option<BackendId> {
        self.backends
            .iter()
            .position(|b| b.name == name)
            // Positions fit: the vector was truncated to `u32::MAX` entries.
            .map(|i| BackendId(i as u32))
    }

    /// All backends, indexed by [`BackendId`].
    pub fn backends(&self) -> &[BackendInfo] {
        &self.backends
    }

    /// All states, indexed by [`BackendId`].
    pub fn states(&self) -> &[BackendState] {
        &self.states
    }

    /// The backends that take new connections, in id order.
    pub fn up(&self) -> &[BackendId] {
        &self.up
    }

    /// Sum of the weights of the Up backends.
    pub fn up_weight(&self) -> u64 {
        self.up_weight
    }

    /// The Maglev table size this pool uses (whether or not it hashes); prime.
    pub fn table_size(&self) -> u32 {
        self.table_size
    }

    /// The Maglev table over all backends, for [`Algorithm::SourceHash`] pools that have any.
    pub fn maglev(&self) -> Option<&MaglevTable> {
        self.maglev.as_deref()
    }

    /// Whether any backend has a connection limit: picks must then take a slot of the pool's
    /// shared capacity (see `core::capacity`).
    pub fn limited(&self) -> bool {
        self.limited
    }

    /// Whether any backend is sent a PROXY protocol header (engines then look clients'
    /// addresses up).
    pub fn sends_proxy(&self) -> bool {
        self.backends.iter().any(|b| b.send_proxy.is_some())
    }

    /// The PROXY protocol header `id` is sent, if any.
    pub fn send_proxy(&self, id: BackendId) -> Option<crate::core::proxy_header::ProxyVersion> {
        self.backends.get(id.index()).and_then(|b| b.send_proxy)
    }

    /// The connection limit of `id` (`None`: unlimited, or an unknown id).
    pub fn limit(&self, id: BackendId) -> Option<u32> {
        self.backends
            .get(id.index())
            .and_then(|b| b.max_connections)
    }

    /// The weight of `id` (at least 1), 1 for an unknown id.
    pub(crate) fn weight(&self, id: BackendId) -> u32 {
        self.weights.get(id.index()).copied().unwrap_or(1)
    }
}
