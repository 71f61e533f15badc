//! Read access to a shard's connections and counters, and the changes the control side makes
//! between two loop turns (pool snapshots, listener policies).

use std::net::SocketAddr;
use std::sync::Arc;

use super::{BackendCounters, ListenerCounters, Shard, ShardStats};
use crate::core::backend::BackendId;
use crate::core::balance::{Balancer, PoolSnapshot};
use crate::core::conn::Conn;
use crate::core::slot::SlotKey;

use super::ListenerPolicy;

impl<Io> Shard<Io> {
    /// The connection `key` names, if it is current.
    pub fn conn(&self, key: SlotKey) -> Option<&Conn> {
        self.conns.get(key).map(|e| &e.conn)
    }

    /// The engine's payload for `key`, if it is current.
    pub fn io(&self, key: SlotKey) -> Option<&Io> {
        self.conns.get(key).map(|e| &e.io)
    }

    /// Mutable access to the engine's payload for `key`, if it is current.
    pub fn io_mut(&mut self, key: SlotKey) -> Option<&mut Io> {
        self.conns.get_mut(key).map(|e| &mut e.io)
    }

    /// The client address of connection `key`, when the engine looked it up (see
    /// [`Shard::needs_peer`]).
    pub fn client_addr(&self, key: SlotKey) -> Option<SocketAddr> {
        self.conns
            .get(key)
            .map(|e| e.trail.client)
            .filter(|a| !a.ip().is_unspecified())
    }

    /// Where backend `backend` of connection `key`'s pool listens.
    pub fn backend_addr(&self, key: SlotKey, backend: BackendId) -> Option<SocketAddr> {
        let entry = self.conns.get(key)?;
        self.balancers.get(entry.pool)?.snapshot().addr(backend)
    }

    /// Connections in the table, closing ones included.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Every current key (for shutdown sweeps).
    pub fn keys(&self) -> Vec<SlotKey> {
        self.conns.keys().collect()
    }

    /// Entries in the timer wheel, and the entries its memory has room for.
    pub fn timers(&self) -> (usize, usize) {
        (self.wheel.len(), self.wheel.capacity())
    }

    /// Counters so far.
    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    /// The balancer of pool `pool` (active counts, snapshot).
    pub fn balancer(&self, pool: usize) -> Option<&Balancer> {
        self.balancers.get(pool)
    }

    /// Replace pool `pool`'s snapshot (backend states or weights changed); takes effect for the
    /// next pick. Established connections are not touched.
    pub fn update_pool(&mut self, pool: usize, snapshot: Arc<PoolSnapshot>) {
        if pool == self.balancers.len() {
            // A pool added by a reload: pools are only ever appended.
            self.counters.add_pool(snapshot.len());
            let balancer = Balancer::for_worker(snapshot, self.worker, pool);
            self.balancers.push(balancer);
            self.sync_capacity();
            return;
        }
        if let Some(balancer) = self.balancers.get_mut(pool) {
            self.counters.repool(pool, balancer.snapshot(), &snapshot);
            balancer.update(snapshot);
            // A backend up again, a limit raised: waiting clients may go now.
            self.dispatch_pool(pool);
        }
    }

    /// New policies for every listener (a reload), in listener order: entries past the
    /// current ones are new listeners. They apply to connections accepted from now on; open
    /// ones keep the limits and pool they were accepted with. A policy naming a pool this
    /// shard does not have yet is taken as it is: its clients are refused until the pool
    /// arrives (the control side sends pools first).
    pub fn set_listeners(&mut self, policies: Vec<ListenerPolicy>) {
        self.counters.resize_listeners(policies.len());
        self.listeners = policies;
        self.sync_capacity();
    }

    /// This worker's counters for pool `pool`'s backends, by [`BackendId`] index in its current
    /// snapshot (empty for an unknown pool). A copy: the control side sums the workers' copies.
    pub fn backend_counters(&self, pool: usize) -> Vec<BackendCounters> {
        let Some(balancer) = self.balancers.get(pool) else {
            return Vec::new();
        };
        let mut counters = self.counters.pool(pool).to_vec();
        for (index, c) in counters.iter_mut().enumerate() {
            // Indices fit: snapshots hold at most `u32::MAX` backends.
            c.active = u64::from(balancer.active(BackendId(index as u32)));
        }
        counters
    }

    /// This worker's counters by listener index. A copy, as for [`Self::backend_counters`].
    pub fn listener_counters(&self) -> Vec<ListenerCounters> {
        self.counters.listeners().to_vec()
    }

    /// Pools this shard balances over.
    pub fn pools(&self) -> usize {
        self.balancers.len()
    }
}
