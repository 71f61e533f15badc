//! The shard's side of the capacity every worker shares (see [`crate::core::capacity`]):
//! clients that must take a backend slot or an admission token, the queue they wait in, and
//! the grants that let them out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{ListenerPolicy, Shard};
use crate::core::affinity::Stick;
use crate::core::backend::BackendId;
use crate::core::balance::{Algorithm, Pick, PoolSnapshot};
use crate::core::capacity::{Arrival, Capacity, Eligible, Grant, Slot, WaiterView};
use crate::core::conn::{CloseReason, Conn, MAX_CANDIDATES};
use crate::core::slot::SlotKey;

#[cfg(test)]
mod tests;

impl<Io> Shard<Io> {
    /// Share `capacity` (slots, queues, rates) with the other workers; by default a shard has
    /// its own (see [`Capacity::local`]).
    pub fn with_capacity(mut self, capacity: Arc<Capacity>) -> Self {
        self.capacity = capacity;
        self.rooms.clear();
        self.buckets.clear();
        self.sync_capacity();
        self
    }

    /// Take the rooms of pools and the buckets of listeners this shard does not hold yet (at
    /// start, and after a reload added some or changed a rate).
    pub(super) fn sync_capacity(&mut self) {
        while self.rooms.len() < self.balancers.len() {
            let room = self.capacity.room(self.rooms.len());
            self.rooms.push(room);
        }
        self.waiting.resize(self.balancers.len(), 0);
        self.buckets = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, policy)| {
                policy
                    .admission
                    .map(|rate| self.capacity.bucket(i, rate.rate, rate.burst))
            })
            .collect();
        // By pool: a pool's table is the same whichever listener or route reaches it.
        let mut affinities = vec![None; self.balancers.len()];
        let targets = self.listeners.iter().flat_map(|policy| {
            let routes = policy.inspect.iter().flat_map(|i| i.routes.iter());
            let own = (policy.pool, policy.affinity);
            std::iter::once(own).chain(routes.map(|r| (r.pool, r.affinity)))
        });
        for (pool, affinity) in targets {
            if let (Some(slot), Some(affinity)) = (affinities.get_mut(pool), affinity) {
                *slot = Some(self.capacity.affinity(pool, affinity));
            }
        }
        self.affinities = affinities;
    }

    /// The backends to try for `client` of `listener`, best first: the balancer's pick, or,
    /// with sticky sessions, the backend the client had (see [`crate::core::affinity`])
    /// followed by the pick's others. `None` when no backend can take it.
    pub(super) fn pick_for(
        &mut self,
        now: Instant,
        policy: &ListenerPolicy,
        client: SocketAddr,
    ) -> Option<Pick> {
        let balancer = self.balancers.get_mut(policy.pool)?;
        let pick = balancer.pick(client.ip(), policy.candidates);
        let Some(table) = self.affinities.get(policy.pool).and_then(Option::as_ref) else {
            return pick;
        };
        let chosen = pick.map(|p| p.chosen());
        match table.stick(client.ip(), now, balancer.snapshot(), || chosen)? {
            Stick::Recorded(_) => pick,
            Stick::Kept(backend) => {
                let mut kept = Pick::new(backend);
                for &id in pick.iter().flat_map(|p| p.candidates()) {
                    if kept.count() < policy.candidates {
                        kept.push(id);
                    }
                }
                Some(kept)
            }
        }
    }

    /// Whether `listener`'s clients must go through the pool's capacity: a backend has a
    /// limit, the listener a rate, or clients wait already (who must not be overtaken).
    pub(super) fn gated(&self, listener: usize, policy: &ListenerPolicy) -> bool {
        let limited = self
            .balancers
            .get(policy.pool)
            .is_some_and(|b| b.snapshot().limited());
        limited
            || self.buckets.get(listener).is_some_and(Option::is_some)
            || self.rooms.get(policy.pool).is_some_and(|r| !r.is_empty())
    }

    /// Place connection `key` of a gated listener (see [`Shard::place`]): a slot and a token
    /// now if nobody waits and there is room, else a place in the queue, else a close for
    /// [`CloseReason::QueueFull`].
    pub(super) fn place_gated(
        &mut self,
        now: Instant,
        key: SlotKey,
        listener: usize,
        policy: &ListenerPolicy,
        client: SocketAddr,
    ) {
        let pool = policy.pool;
        let setup = self
            .rooms
            .get(pool)
            .cloned()
            .zip(self.balancers.get(pool).map(|b| Arc::clone(b.snapshot())));
        let pick = match setup {
            Some(_) => self.pick_for(now, policy, client),
            None => None,
        };
        let (Some((room, snapshot)), Some(pick)) = (setup, pick) else {
            // No such pool, or no backend is up: closed as before, whoever waits.
            self.set_conn(key, Conn::new(now, policy.params, &[]));
            return;
        };
        let bucket = self.buckets.get(listener).cloned().flatten();
        if room.is_empty() && bucket.as_ref().is_none_or(|b| b.try_take(now)) {
            if let Some((candidates, slot)) = take_slot(&room, &snapshot, &pick, policy.candidates)
            {
                self.set_conn(key, Conn::new(now, policy.params, &candidates));
                if let Some(entry) = self.conns.get_mut(key) {
                    entry.slot = slot;
                }
                return;
            }
            if let Some(bucket) = &bucket {
                bucket.refund(now);
            }
        }
        let deadline = now + policy.queue.timeout;
        let conn = Conn::waiting(now, policy.params, deadline, policy.queue.reset);
        self.set_conn(key, conn);
        let sticky = self.affinities.get(pool).is_some_and(Option::is_some);
        let eligible = if sticky || snapshot.algorithm() == Algorithm::SourceHash {
            Eligible::listed(pick.candidates())
        } else {
            Eligible::Any
        };
        let arrival = Arrival {
            worker: self.worker,
            key,
            listener,
            client,
            since: now,
            eligible,
            bucket,
        };
        match room.enqueue(arrival, policy.queue.size, &snapshot, now, &mut self.grants) {
            Ok(ticket) => {
                if let Some(entry) = self.conns.get_mut(key) {
                    entry.ticket = Some(ticket);
                }
                self.waiting[pool] += 1;
                self.stats.queued += 1;
                self.counters.queued(listener);
            }
            Err(_) => {
                let reason = CloseReason::QueueFull;
                self.set_conn(
                    key,
                    Conn::refused(now, policy.params, reason, policy.queue.reset),
                );
            }
        }
        self.apply_grants(now);
    }

    /// Let a waiting client out of the queue with `grant` (made by this worker or posted by
    /// another). A grant for a client that is gone, or no longer waiting, gives its slot back.
    pub fn admit(&mut self, now: Instant, grant: Grant) {
        self.clock = now;
        self.grants.push(grant);
        self.apply_grants(now);
    }

    fn admit_one(&mut self, now: Instant, grant: Grant) {
        let waiting = self.conns.get(grant.key).is_some_and(|e| {
            e.ticket == Some(grant.ticket) && e.pool == grant.pool && e.conn.is_waiting()
        });
        if !waiting {
            if let (Some(backend), true) = (grant.backend, grant.counted) {
                self.give_back(grant.pool, backend);
            }
            return;
        }
        let pool = grant.pool;
        let Some(entry) = self.conns.get_mut(grant.key) else {
            return;
        };
        entry.ticket = None;
        entry.trail.admitted = Some(now);
        entry.trail.touched = now;
        self.waiting[pool] = self.waiting[pool].saturating_sub(1);
        let listener = entry.listener;
        let client = entry.trail.client;
        let waited = now.saturating_duration_since(entry.trail.accepted);
        let retries = self.listeners.get(listener).map_or(1, |p| p.candidates);
        let pick = self.balancers[pool].pick(client.ip(), retries);
        let mut candidates = [BackendId(0); MAX_CANDIDATES];
        let mut count = 0;
        for id in grant
            .backend
            .into_iter()
            .chain(pick.iter().flat_map(|p| p.candidates().iter().copied()))
        {
            if count < retries.min(MAX_CANDIDATES) && !candidates[..count].contains(&id) {
                candidates[count] = id;
                count += 1;
            }
        }
        let Some(entry) = self.conns.get_mut(grant.key) else {
            return;
        };
        if grant.counted {
            entry.slot = grant.backend;
        }
        entry.conn.admit(now, &candidates[..count]);
        if !entry.in_ready {
            entry.in_ready = true;
            self.admitted.push_back(grant.key);
        }
        self.counters.admitted(listener, waited);
    }

    /// Give back a slot of `backend` in `pool`; waiting clients it lets out are granted.
    pub(super) fn give_back(&mut self, pool: usize, backend: BackendId) {
        let now = self.clock;
        if let (Some(room), Some(balancer)) = (self.rooms.get(pool), self.balancers.get(pool)) {
            room.release(balancer.snapshot(), backend, now, &mut self.grants);
        }
        self.apply_grants(now);
    }

    /// Apply this worker's grants, post the others', until none is left (a grant for a client
    /// that is gone gives its slot back, which may grant another).
    pub(super) fn apply_grants(&mut self, now: Instant) {
        while !self.grants.is_empty() {
            for grant in std::mem::take(&mut self.grants) {
                if grant.worker == self.worker {
                    self.admit_one(now, grant);
                } else {
                    self.capacity.post(grant);
                }
            }
        }
    }

    /// Walk pool `pool`'s queue if anyone waits (its snapshot changed).
    pub(super) fn dispatch_pool(&mut self, pool: usize) {
        let now = self.clock;
        if let (Some(room), Some(balancer)) = (self.rooms.get(pool), self.balancers.get(pool))
            && !room.is_empty()
        {
            room.dispatch(balancer.snapshot(), now, &mut self.grants);
        }
        self.apply_grants(now);
    }

    /// Walk the queues this shard has clients in whose next token is due at `now`.
    pub(super) fn dispatch_due(&mut self, now: Instant) {
        for pool in 0..self.rooms.len() {
            if self.waiting[pool] == 0 {
                continue;
            }
            let room = &self.rooms[pool];
            if room.retry_at().is_some_and(|at| at <= now) {
                room.dispatch(self.balancers[pool].snapshot(), now, &mut self.grants);
            }
        }
        self.apply_grants(now);
    }

    /// The earliest next token of a queue this shard has clients in.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        (0..self.rooms.len())
            .filter(|&pool| self.waiting[pool] > 0)
            .filter_map(|pool| self.rooms[pool].retry_at())
            .min()
    }

    /// This shard's clients waiting now, by pool.
    pub fn waiting(&self) -> &[usize] {
        &self.waiting
    }

    /// The capacity this shard shares.
    pub fn capacity(&self) -> &Arc<Capacity> {
        &self.capacity
    }

    /// Every client waiting in pool `pool`'s queue, from any worker.
    pub fn queue(&self, pool: usize) -> Vec<WaiterView> {
        self.rooms.get(pool).map_or_else(Vec::new, |r| r.waiters())
    }
}

/// The candidates of `pick` with a slot taken on the first that has room (`Some(backend)`
/// when it was counted), or, for algorithms other than source hashing, of any Up backend with
/// room when none of the pick's has; at most `limit` candidates. `None`: no room.
fn take_slot(
    room: &crate::core::capacity::Room,
    snapshot: &PoolSnapshot,
    pick: &Pick,
    limit: usize,
) -> Option<(Vec<BackendId>, Option<BackendId>)> {
    let mut found = None;
    for &id in pick.candidates() {
        match room.try_take(snapshot, id) {
            Slot::Unlimited => {
                found = Some((id, None));
                break;
            }
            Slot::Taken => {
                found = Some((id, Some(id)));
                break;
            }
            Slot::Full => {}
        }
    }
    if found.is_none() && snapshot.algorithm() != Algorithm::SourceHash {
        for &id in snapshot.up() {
            if pick.contains(id) {
                continue;
            }
            match room.try_take(snapshot, id) {
                Slot::Unlimited => found = Some((id, None)),
                Slot::Taken => found = Some((id, Some(id))),
                Slot::Full => continue,
            }
            break;
        }
    }
    let (first, slot) = found?;
    let mut candidates = vec![first];
    candidates.extend(pick.candidates().iter().copied().filter(|&id| id != first));
    candidates.truncate(limit.clamp(1, MAX_CANDIDATES));
    Some((candidates, slot))
}
