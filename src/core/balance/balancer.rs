//! One worker's balancer: the shared snapshot plus the worker's own mutable state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::pick::{Pick, clamp_candidates};
use super::random_two::SplitMix64;
use super::round_robin::SmoothRoundRobin;
use super::{Algorithm, PoolSnapshot, least_conn, maglev, random_two};
use crate::core::backend::BackendId;

/// A worker's balancer for one pool. Each worker owns one, so the hot path shares nothing: the
/// rotation, the random generator and the active connection counts are per worker (least
/// connections therefore balances each worker's own connections, which with SO_REUSEPORT
/// spreading clients evenly balances the whole).
///
/// Call order per connection: [`Self::pick`], then [`Self::connection_opened`] for each
/// candidate as its connect attempt starts, and [`Self::connection_closed`] once that attempt
/// fails or the connection ends.
#[derive(Debug)]
pub struct Balancer {
    snapshot: Arc<PoolSnapshot>,
    /// Connect attempts and connections in progress, indexed by [`BackendId`].
    active: Vec<u32>,
    round_robin: SmoothRoundRobin,
    /// Least connections' rotation position in the Up list.
    cursor: usize,
    rng: SplitMix64,
    /// Random-two's shuffled copy of the Up list.
    sample: Vec<BackendId>,
    /// Where this worker's rotations start (its index): round robin starts this many picks
    /// into its cycle and least connections this many places into the Up list, so that W
    /// workers do not all send their first connection to the same backend.
    phase: usize,
}

impl Balancer {
    /// A balancer over `snapshot`; `seed` drives random-two's generator. Rotations start at
    /// the beginning: see [`Balancer::for_worker`] for a balancer per worker.
    pub fn new(snapshot: Arc<PoolSnapshot>, seed: u64) -> Self {
        let mut round_robin = SmoothRoundRobin::default();
        round_robin.reset(snapshot.len());
        Self {
            active: vec![0; snapshot.len()],
            sample: snapshot.up().to_vec(),
            cursor: 0,
            rng: SplitMix64::new(seed),
            round_robin,
            snapshot,
            phase: 0,
        }
    }

    /// The balancer of worker `worker` for pool `pool`: its own random sequence, and its
    /// rotations started `worker` steps in (see `phase`).
    pub fn for_worker(snapshot: Arc<PoolSnapshot>, worker: usize, pool: usize) -> Self {
        let mut seeds = SplitMix64::new((worker as u64) << 32 | pool as u64);
        let mut balancer = Balancer::new(snapshot, seeds.next_u64());
        balancer.phase = worker;
        balancer.start_rotations();
        balancer
    }

    /// Move the rotations to this worker's starting place: `phase` (modulo the Up backends)
    /// round-robin picks, which keeps the cycle's exact shares, and the least-connections
    /// cursor. O(phase × backends), at set-up and on a snapshot change only.
    fn start_rotations(&mut self) {
        let up = self.snapshot.up().len();
        if up == 0 {
            return;
        }
        self.cursor = self.phase % up;
        for _ in 0..self.phase % up {
            let _ = self.round_robin.pick(&self.snapshot, 1);
        }
    }

    /// Chooses a backend for a new connection from `client`, with up to `max_candidates`
    /// distinct candidates in all (clamped to `1..=MAX_CANDIDATES`; fewer when fewer backends
    /// are Up). `None` when no backend is Up. Only Up backends are ever named: Down and Draining
    /// ones take no new connections. The client address matters only to source hashing, which
    /// chooses the first Up owner at or after the client's Maglev slot.
    ///
    /// Does not count the connection: call [`Self::connection_opened`] as the attempt starts.
    /// Allocates nothing; O(1) for source hashing and random-two (O(k²) in the candidate count
    /// k), O(N) for round robin and least connections.
    pub fn pick(&mut self, client: IpAddr, max_candidates: usize) -> Option<Pick> {
        let limit = clamp_candidates(max_candidates);
        let snapshot = &*self.snapshot;
        match snapshot.algorithm() {
            Algorithm::RoundRobin => self.round_robin.pick(snapshot, limit),
            Algorithm::LeastConnections => {
                least_conn::pick(snapshot, &self.active, &mut self.cursor, limit)
            }
            Algorithm::RandomTwo => random_two::pick(
                snapshot,
                &self.active,
                &mut self.rng,
                &mut self.sample,
                limit,
            ),
            Algorithm::SourceHash => maglev::pick(snapshot, client, limit),
        }
    }

    /// Counts a connect attempt (and then the connection) to `id`. Unknown ids are ignored.
    pub fn connection_opened(&mut self, id: BackendId) {
        if let Some(count) = self.active.get_mut(id.index()) {
            *count = count.saturating_add(1);
        }
    }

    /// Uncounts a failed attempt or a finished connection to `id`; never goes below zero.
    /// Unknown ids are ignored.
    pub fn connection_closed(&mut self, id: BackendId) {
        if let Some(count) = self.active.get_mut(id.index()) {
            *count = count.saturating_sub(1);
        }
    }

    /// This worker's count of attempts and connections to `id` (0 for an unknown id).
    pub fn active(&self, id: BackendId) -> u32 {
        self.active.get(id.index()).copied().unwrap_or(0)
    }

    /// Switches to a new snapshot (between batches). Active counts stay by id when the new
    /// list only appended to the old ([`PoolSnapshot::keeps_ids`], what the control side
    /// sends), and otherwise follow backends by name, so a list that was rewritten keeps the
    /// counts of those that remain; the round-robin cycle restarts.
    ///
    /// Ids held by open connections stay right when the backend list is unchanged (any
    /// snapshot made by [`PoolSnapshot::with_state`]); after a reload that changed the list,
    /// translate them with [`PoolSnapshot::id_of`] before closing.
    pub fn update(&mut self, snapshot: Arc<PoolSnapshot>) {
        if self.snapshot.keeps_ids(&snapshot) {
            self.active.resize(snapshot.len(), 0);
        } else {
            // A BTreeMap, not a HashMap: the core uses no per-process random hasher state.
            let old: BTreeMap<&str, u32> = self
                .snapshot
                .backends()
                .iter()
                .zip(&self.active)
                .map(|(b, &n)| (b.name.as_str(), n))
                .collect();
            self.active = snapshot
                .backends()
                .iter()
                .map(|b| old.get(b.name.as_str()).copied().unwrap_or(0))
                .collect();
        }
        self.round_robin.reset(snapshot.len());
        self.sample.clear();
        self.sample.extend_from_slice(snapshot.up());
        self.snapshot = snapshot;
        self.start_rotations();
    }

    /// The snapshot picks are made from; ids in picks index its backends.
    pub fn snapshot(&self) -> &Arc<PoolSnapshot> {
        &self.snapshot
    }
}
