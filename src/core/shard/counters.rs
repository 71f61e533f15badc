//! Per-worker counters by backend and by listener, kept beside the shard's connections.
//!
//! Written only by the worker that owns the shard, once per connection event (accept, connect
//! attempt, connect failure, release) and once per `Sent` event for bytes: never a shared cache
//! line, never an atomic. The control side asks for a copy ([`Shard::backend_counters`],
//! [`Shard::listener_counters`]) through the worker's inbox and sums the workers' copies.
//!
//! [`Shard::backend_counters`]: super::Shard::backend_counters
//! [`Shard::listener_counters`]: super::Shard::listener_counters

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::backend::BackendId;
use crate::core::balance::PoolSnapshot;
use crate::core::conn::Dir;
use crate::core::inspect::Refusal;
use crate::core::stats::{BackendCounters, ListenerCounters};

/// One shard's counters.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// By pool, then by [`BackendId`] index in the pool's current snapshot. `active` is not kept
    /// here: the balancer counts it already (see [`super::Shard::backend_counters`]).
    backends: Vec<Vec<BackendCounters>>,
    /// By listener index.
    listeners: Vec<ListenerCounters>,
}

impl Counters {
    pub(super) fn new(pools: impl Iterator<Item = usize>, listeners: usize) -> Self {
        Counters {
            backends: pools
                .map(|len| vec![BackendCounters::default(); len])
                .collect(),
            listeners: vec![ListenerCounters::default(); listeners],
        }
    }

    fn backend(&mut self, pool: usize, id: BackendId) -> Option<&mut BackendCounters> {
        self.backends.get_mut(pool)?.get_mut(id.index())
    }

    fn listener(&mut self, listener: usize) -> Option<&mut ListenerCounters> {
        self.listeners.get_mut(listener)
    }

    pub(super) fn accepted(&mut self, listener: usize) {
        if let Some(l) = self.listener(listener) {
            l.accepted += 1;
            l.active += 1;
        }
    }

    pub(super) fn refused(&mut self, listener: usize) {
        if let Some(l) = self.listener(listener) {
            l.refused += 1;
        }
    }

    pub(super) fn queued(&mut self, listener: usize) {
        if let Some(l) = self.listener(listener) {
            l.queued += 1;
        }
    }

    pub(super) fn admitted(&mut self, listener: usize, waited: Duration) {
        if let Some(l) = self.listener(listener) {
            l.admitted += 1;
            l.queue_wait
                .record(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// A client of `listener` turned away by the queue: full (or none), or timed out.
    pub(super) fn turned_away(&mut self, listener: usize, timed_out: bool) {
        if let Some(l) = self.listener(listener) {
            if timed_out {
                l.queue_timeout += 1;
            } else {
                l.queue_full += 1;
            }
        }
    }

    pub(super) fn inspect_refused(&mut self, listener: usize, refusal: Refusal) {
        if let Some(l) = self.listener(listener) {
            let counter = match refusal {
                Refusal::ProxyHeader => &mut l.inspect_refused.proxy_header,
                Refusal::Timeout => &mut l.inspect_refused.timeout,
                Refusal::NoServerName => &mut l.inspect_refused.no_server_name,
            };
            *counter += 1;
        }
    }

    pub(super) fn routed(&mut self, listener: usize, matched: bool) {
        if let Some(l) = self.listener(listener) {
            if matched {
                l.routed += 1;
            } else {
                l.unrouted += 1;
            }
        }
    }

    pub(super) fn released(&mut self, listener: usize) {
        if let Some(l) = self.listener(listener) {
            l.active = l.active.saturating_sub(1);
        }
    }

    pub(super) fn connect_started(&mut self, pool: usize, id: BackendId) {
        if let Some(b) = self.backend(pool, id) {
            b.connections += 1;
        }
    }

    pub(super) fn connected(&mut self, pool: usize, id: BackendId, took: Duration) {
        if let Some(b) = self.backend(pool, id) {
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            b.connect_time.record(us);
        }
    }

    pub(super) fn connect_failed(&mut self, pool: usize, id: BackendId) {
        if let Some(b) = self.backend(pool, id) {
            b.connect_failures += 1;
        }
    }

    pub(super) fn backend_reset(&mut self, pool: usize, id: BackendId) {
        if let Some(b) = self.backend(pool, id) {
            b.resets += 1;
        }
    }

    pub(super) fn sent(&mut self, pool: usize, id: BackendId, dir: Dir, bytes: u64) {
        if let Some(b) = self.backend(pool, id) {
            match dir {
                Dir::Upstream => b.bytes_in += bytes,
                Dir::Downstream => b.bytes_out += bytes,
            }
        }
    }

    /// Pool `pool` moves from snapshot `old` to `new`. When the backend list only grew at its
    /// end (the control side appends and never reorders while running) the counters are kept
    /// by id; otherwise (a reload that rewrote the list) they follow backends by name, as the
    /// balancer's active counts do.
    pub(super) fn repool(&mut self, pool: usize, old: &PoolSnapshot, new: &PoolSnapshot) {
        let Some(counters) = self.backends.get_mut(pool) else {
            return;
        };
        if old.keeps_ids(new) {
            counters.resize(new.len(), BackendCounters::default());
            return;
        }
        // A BTreeMap, not a HashMap: the core uses no per-process random hasher state.
        let by_name: BTreeMap<&str, BackendCounters> = old
            .backends()
            .iter()
            .zip(counters.iter())
            .map(|(b, c)| (b.name.as_str(), *c))
            .collect();
        *counters = new
            .backends()
            .iter()
            .map(|b| by_name.get(b.name.as_str()).copied().unwrap_or_default())
            .collect();
    }

    /// A new pool of `len` backends, after the last.
    pub(super) fn add_pool(&mut self, len: usize) {
        self.backends.push(vec![BackendCounters::default(); len]);
    }

    /// Listeners are only ever appended: new ones start from zero.
    pub(super) fn resize_listeners(&mut self, len: usize) {
        if len > self.listeners.len() {
            self.listeners.resize(len, ListenerCounters::default());
        }
    }

    /// Pool `pool`'s counters by backend id (without `active`).
    pub(super) fn pool(&self, pool: usize) -> &[BackendCounters] {
        self.backends.get(pool).map_or(&[], Vec::as_slice)
    }

    pub(super) fn listeners(&self) -> &[ListenerCounters] {
        &self.listeners
    }
}
