//! The control half of the worker runtime that every engine shares: applying what the inbox
//! brings (pool snapshots, accept commands, report requests) between two loop turns, and
//! building the report a worker answers with.
//!
//! An engine implements [`Controlled`] for its worker (three short methods: each engine keeps
//! its listeners and its shard its own way) and calls [`apply_inbox`] once per loop turn, after
//! its wait and before it handles what the wait returned; it wakes from the wait when the
//! inbox's eventfd becomes readable (see [`crate::engine::inbox`]).

use std::sync::Arc;

use super::inbox::{Inbox, Message, WorkerReport};
use crate::core::balance::PoolSnapshot;
use crate::core::shard::Shard;

/// What an engine's worker does for the control side.
pub trait Controlled {
    /// Replace pool `pool`'s snapshot; established connections are kept.
    fn update_pool(&mut self, pool: usize, snapshot: Arc<PoolSnapshot>);
    /// Start (`on`) or stop taking clients on listener `listener`. Stopping leaves clients in
    /// the kernel's listen backlog; connections already accepted are kept.
    fn set_accepting(&mut self, listener: usize, on: bool);
    /// This worker's counters now.
    fn report(&self) -> WorkerReport;
}

/// What a worker holds beyond its shard's counters, for its report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Loop turns so far.
    pub loop_turns: u64,
    /// Copy buffers held by connections now.
    pub buffers_in_use: u64,
    /// Pipes held by connections now.
    pub pipes_in_use: u64,
}

/// Apply every message waiting in `inbox` to `worker`, oldest first. Returns how many there
/// were (0 costs one atomic load). A report request whose asker has gone is dropped.
pub fn apply_inbox(inbox: &Inbox, worker: &mut impl Controlled) -> usize {
    let mut applied = 0;
    for message in inbox.drain() {
        applied += 1;
        match message {
            Message::Pool { pool, snapshot } => worker.update_pool(pool, snapshot),
            Message::Accepting { listener, on } => worker.set_accepting(listener, on),
            // The asker may have given up waiting; nothing to do then.
            Message::Report(reply) => drop(reply.send(worker.report())),
        }
    }
    applied
}

/// Worker `worker`'s report from its shard and `usage`.
pub fn report<Io>(worker: usize, shard: &Shard<Io>, usage: Usage) -> WorkerReport {
    WorkerReport {
        worker,
        stats: shard.stats(),
        backends: (0..shard.pools())
            .map(|pool| shard.backend_counters(pool))
            .collect(),
        listeners: shard.listener_counters(),
        connections: shard.len() as u64,
        loop_turns: usage.loop_turns,
        buffers_in_use: usage.buffers_in_use,
        pipes_in_use: usage.pipes_in_use,
    }
}

/// Log a listener's accept command once, the same way in every engine.
pub fn log_accepting(worker: usize, listener: usize, on: bool) {
    if on {
        tracing::info!(worker, listener, "listener enabled: accepting again");
    } else {
        tracing::info!(
            worker,
            listener,
            "listener disabled: clients wait in the backlog"
        );
    }
}
