//! One worker's share of the data plane: its connections, balancers and timers.
//!
//! A [`Shard`] is what an engine drives. It owns a generation-tagged slab of connections (each
//! with an engine-defined `Io` payload: sockets, buffers, pipes), one [`Balancer`] per pool and a
//! [`TimerWheel`]. It does the bookkeeping that every engine would otherwise repeat: picking
//! candidates on accept, counting active connections per backend, arming timers, and routing
//! stale completions to nowhere.
//!
//! # Call order
//! Each loop turn of an engine:
//! 1. [`Shard::accept`] new clients, [`Shard::handle_event`] every completion or readiness
//!    result, and [`Shard::handle_timeouts`] with the current time;
//! 2. drain [`Shard::poll_action`] until `None`, carrying out each action;
//! 3. sleep no later than [`Shard::next_timeout`].
//!
//! After an `Action::Close`, the engine finishes the connection's outstanding operations and then
//! calls [`Shard::release`], which frees the slot and hands back the `Io` payload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::affinity::{Affinity, AffinityPolicy};
use super::balance::{Balancer, PoolSnapshot};
use super::capacity::{Bucket, Capacity, Grant, QueuePolicy, RatePolicy, Room, Slot};
use super::conn::{Action, CloseReason, Conn, ConnParams, Dir, Event};
use super::slot::{Slab, SlotKey};
pub use super::stats::{
    BackendCounters, InspectRefusals, ListenerCounters, ResetCounts, ShardStats,
};
use super::timer::TimerWheel;
use crate::core::backend::BackendId;
use counters::Counters;
pub use record::Finished;
use record::Trail;

mod access;
mod counters;
mod intake;
mod record;
mod waiting;

pub use intake::{Inspect, RouteTarget};

/// Engines check timers at least every 100 ms. A longer gap between two checks means the
/// worker did not run (stopped by SIGSTOP, descheduled on an overloaded machine, a VM paused).
pub const STALL_GAP: Duration = Duration::from_secs(1);
/// After such a gap, timers wait this long before firing: bytes that arrived during the stall
/// must be seen as activity first. They may reach the socket only after the worker resumes, so
/// merely looking at what is ready at that instant is not enough (seen with epoll).
pub const RESUME_GRACE: Duration = Duration::from_millis(200);

/// Stale timer entries (of released connections) tolerated beyond twice the live connections
/// before the wheel is swept (see [`Shard::release`]).
pub const TIMER_SWEEP_SLACK: usize = 4096;

/// How a listener's connections are handled.
#[derive(Clone, Debug)]
pub struct ListenerPolicy {
    /// Index of the pool (and of its balancer) this listener sends to.
    pub pool: usize,
    /// Limits for each of its connections.
    pub params: ConnParams,
    /// Backends tried per connection: 1 + retries.
    pub candidates: usize,
    /// Its pool's waiting queue.
    pub queue: QueuePolicy,
    /// Its admission rate, if it has one.
    pub admission: Option<RatePolicy>,
    /// Its pool's sticky sessions, if it has them.
    pub affinity: Option<AffinityPolicy>,
    /// What it reads before picking a backend, if anything (see [`crate::core::inspect`]).
    pub inspect: Option<Arc<Inspect>>,
}

/// Why [`Shard::accept`] turned a client away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The shard holds `max_connections` already.
    Full,
    /// No such listener index.
    UnknownListener,
}

struct Entry<Io> {
    conn: Conn,
    listener: usize,
    pool: usize,
    /// The backend whose active count this connection holds.
    counted: Option<BackendId>,
    /// The backend whose slot of the pool's shared capacity this connection holds (a backend
    /// with `max_connections`), given back at release.
    slot: Option<BackendId>,
    /// Its ticket while it waits in the pool's queue.
    ticket: Option<u64>,
    /// Its inspect phase's buffer, on a listener that inspects.
    inspect: Option<Box<intake::Inspecting>>,
    /// The deadline registered in the wheel, if any.
    timer: Option<Instant>,
    in_ready: bool,
    trail: Trail,
    io: Io,
}

/// One worker's connections and balancing state.
pub struct Shard<Io> {
    /// The worker's index: it seeds the balancers' choices (see [`Balancer::for_worker`]).
    worker: usize,
    listeners: Vec<ListenerPolicy>,
    balancers: Vec<Balancer>,
    conns: Slab<Entry<Io>>,
    wheel: TimerWheel,
    /// Connections that may have actions to hand out.
    ready: Vec<SlotKey>,
    /// Connections just let out of a queue, in that order: polled before `ready`, so that
    /// their connects start in the order the queue let them out.
    admitted: std::collections::VecDeque<SlotKey>,
    fired: Vec<SlotKey>,
    max_connections: usize,
    stats: ShardStats,
    counters: Counters,
    /// Finished connections not taken yet, when records are kept (`None`: not kept).
    records: Option<Vec<Finished>>,
    /// Whether a stall holds timers (engines on real time: yes; virtual-clock drivers that
    /// jump to the next deadline: no).
    guard_stalls: bool,
    /// When timers were last checked, to notice a stall.
    last_check: Instant,
    /// Timers are held until then after a stall (see [`RESUME_GRACE`]).
    held_until: Option<Instant>,
    /// The latest time the engine gave (for what happens where no time is passed in).
    clock: Instant,
    /// Slots, queues and rates shared with the other workers.
    capacity: Arc<Capacity>,
    /// Each pool's room in `capacity`, by pool index.
    rooms: Vec<Arc<Room>>,
    /// Each listener's bucket, for those with an admission rate.
    buckets: Vec<Option<Arc<Bucket>>>,
    /// Each pool's affinity table, for pools with sticky sessions, by pool index.
    affinities: Vec<Option<Arc<Affinity>>>,
    /// By pool: this shard's clients waiting in its queue.
    waiting: Vec<usize>,
    /// Grants made and not yet applied or posted.
    grants: Vec<Grant>,
}

impl<Io> std::fmt::Debug for Shard<Io> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("connections", &self.conns.len())
            .field("timers", &self.wheel.len())
            .field("timer_capacity", &self.wheel.capacity())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<Io> Shard<Io> {
    /// Worker `worker`'s shard for `listeners`, balancing over `pools`; the worker's index
    /// seeds its random choices and where its rotations start (see [`Balancer::for_worker`]).
    pub fn new(
        now: Instant,
        listeners: Vec<ListenerPolicy>,
        pools: Vec<Arc<PoolSnapshot>>,
        max_connections: usize,
        worker: usize,
    ) -> Self {
        let counters = Counters::new(pools.iter().map(|p| p.len()), listeners.len());
        let pool_count = pools.len();
        let balancers = pools
            .into_iter()
            .enumerate()
            .map(|(i, pool)| Balancer::for_worker(pool, worker, i))
            .collect();
        Shard {
            worker,
            counters,
            records: None,
            listeners,
            balancers,
            conns: Slab::new(),
            wheel: TimerWheel::new(now),
            ready: Vec::new(),
            admitted: std::collections::VecDeque::new(),
            fired: Vec::new(),
            max_connections,
            stats: ShardStats::default(),
            guard_stalls: false,
            last_check: now,
            held_until: None,
            clock: now,
            capacity: Capacity::local(),
            rooms: Vec::new(),
            buckets: Vec::new(),
            affinities: Vec::new(),
            waiting: vec![0; pool_count],
            grants: Vec::new(),
        }
        .with_capacity(Capacity::local())
    }

    /// Whether `listener`'s clients' addresses are needed: picks depend on them (its pool
    /// hashes the source), records name them, or a client may wait in a queue, where `ringlb
    /// ctl show queue` names it. Engines look the address up (`getpeername`) only then.
    pub fn needs_peer(&self, listener: usize) -> bool {
        let Some(policy) = self.listeners.get(listener) else {
            return self.records.is_some();
        };
        let pool = self.balancers.get(policy.pool).map(|b| b.snapshot());
        self.records.is_some()
            || policy.admission.is_some()
            || policy.inspect.is_some()
            || policy.affinity.is_some()
            || pool.is_some_and(|p| {
                p.algorithm() == crate::core::balance::Algorithm::SourceHash
                    || p.limited()
                    || p.sends_proxy()
            })
    }

    /// Keep a [`Finished`] record of every connection (for the access log), to be taken with
    /// [`Self::take_records`] each loop turn. Engines then look up every client's address
    /// ([`Self::needs_peer`]).
    pub fn keep_records(mut self) -> Self {
        self.records = Some(Vec::new());
        self
    }

    /// The records of connections closed since the last call (none unless
    /// [`Self::keep_records`]).
    pub fn take_records(&mut self) -> impl Iterator<Item = Finished> + '_ {
        self.records
            .iter_mut()
            .flat_map(|records| records.drain(..))
    }

    /// Hold timers for [`RESUME_GRACE`] after the worker stalled for more than [`STALL_GAP`].
    /// Engines running on real time turn this on; a driver whose clock jumps from deadline to
    /// deadline must not (every jump would look like a stall).
    pub fn guard_stalls(mut self) -> Self {
        self.guard_stalls = true;
        self
    }

    /// Feed one result for connection `key`. Returns false (and counts it) when the key is
    /// stale: the connection it named is gone, and the event must not touch its successor.
    pub fn handle_event(&mut self, now: Instant, key: SlotKey, event: Event) -> bool {
        self.clock = now;
        let Some(entry) = self.conns.get_mut(key) else {
            self.stats.stale_events += 1;
            return false;
        };
        entry.trail.touched = now;
        let mut freed = None;
        match event {
            Event::Connected => {
                entry.trail.connected = Some(now);
                let backend = entry.conn.backend();
                let snapshot = self.balancers.get(entry.pool).map(|b| b.snapshot());
                let backend_on_loopback = backend
                    .and_then(|b| snapshot?.addr(b))
                    .is_some_and(record::on_loopback);
                entry
                    .conn
                    .peers_on_loopback(entry.trail.client_on_loopback, backend_on_loopback);
                let header = backend.and_then(|b| snapshot?.send_proxy(b)).is_some();
                if header || entry.inspect.is_some() {
                    entry.conn.send_preamble();
                }
                if let Some((backend, started)) = entry.trail.attempt {
                    let took = now.saturating_duration_since(started);
                    self.counters.connected(entry.pool, backend, took);
                }
            }
            Event::ConnectFailed { .. } => {
                self.stats.connect_failures += 1;
                if let Some(backend) = entry.counted.take() {
                    self.balancers[entry.pool].connection_closed(backend);
                    self.counters.connect_failed(entry.pool, backend);
                }
                freed = entry.slot.take().map(|backend| (entry.pool, backend));
            }
            Event::SpliceUnavailable { .. } => self.stats.copy_fallbacks += 1,
            Event::Sent { dir, bytes } => {
                match dir {
                    super::conn::Dir::Upstream => {
                        self.stats.bytes_upstream += bytes;
                        entry.trail.bytes_in += bytes;
                    }
                    super::conn::Dir::Downstream => {
                        self.stats.bytes_downstream += bytes;
                        entry.trail.bytes_out += bytes;
                    }
                }
                if let Some(backend) = entry.counted {
                    self.counters.sent(entry.pool, backend, dir, bytes);
                }
            }
            _ => {}
        }
        let inspecting = entry.conn.inspecting_until().is_some();
        entry.conn.handle_event(now, event);
        if !entry.in_ready {
            entry.in_ready = true;
            self.ready.push(key);
        }
        if let Some((pool, backend)) = freed {
            self.give_back(pool, backend);
        }
        if inspecting && event == (Event::Eof { dir: Dir::Upstream }) {
            self.cut_short(now, key, false);
        }
        true
    }

    /// Fire every timer due at `now`. After a stall (no check for [`STALL_GAP`]), timers are
    /// held for [`RESUME_GRACE`] so that what arrived meanwhile counts as activity first.
    pub fn handle_timeouts(&mut self, now: Instant) {
        if self.guard_stalls && now.saturating_duration_since(self.last_check) > STALL_GAP {
            self.held_until = Some(now + RESUME_GRACE);
            self.stats.stalls += 1;
        }
        self.last_check = now;
        if let Some(until) = self.held_until {
            if now < until {
                return;
            }
            self.held_until = None;
        }
        self.clock = now;
        self.dispatch_due(now);
        self.wheel.expire(now, &mut self.fired);
        let mut cut = Vec::new();
        for key in self.fired.drain(..) {
            // A timer of a connection that is gone is simply dropped.
            let Some(entry) = self.conns.get_mut(key) else {
                continue;
            };
            entry.timer = None;
            entry.trail.touched = now;
            if entry.conn.inspecting_until().is_some_and(|at| now >= at) {
                cut.push(key);
                continue;
            }
            entry.conn.handle_timeout(now);
            if !entry.in_ready {
                entry.in_ready = true;
                self.ready.push(key);
            }
        }
        for key in cut {
            self.cut_short(now, key, true);
        }
    }

    /// The next action for some connection, or `None` when every connection is waiting.
    pub fn poll_action(&mut self) -> Option<(SlotKey, Action)> {
        loop {
            // Clients let out of a queue first, in the order they were let out; then the rest.
            let (key, admitted) = match (self.admitted.front(), self.ready.last()) {
                (Some(&key), _) => (key, true),
                (None, Some(&key)) => (key, false),
                (None, None) => return None,
            };
            let Some(entry) = self.conns.get_mut(key) else {
                self.pop_ready(admitted);
                continue;
            };
            if let Some(action) = entry.conn.poll_action() {
                let mut freed = None;
                match action {
                    Action::SendPreamble if !intake::has_preamble(entry, &self.balancers) => {
                        // Nothing to send after all (an inspect phase that read nothing to
                        // forward, and no PROXY header): done at once.
                        if let Some(entry) = self.conns.get_mut(key) {
                            entry.conn.handle_event(self.clock, Event::PreambleSent);
                        }
                        continue;
                    }
                    Action::Connect { backend, .. } => {
                        let pool = entry.pool;
                        let snapshot = self.balancers[pool].snapshot();
                        if snapshot.limited() && entry.slot != Some(backend) {
                            // A retry, or a connect timed out in the core: the slot moves.
                            freed = entry.slot.take().map(|old| (pool, old));
                            match self.rooms[pool].try_take(snapshot, backend) {
                                Slot::Taken => entry.slot = Some(backend),
                                Slot::Unlimited => {}
                                Slot::Full => {
                                    // Its limit is reached: on to the next candidate.
                                    entry.conn.skip_candidate();
                                    if let Some((pool, old)) = freed {
                                        self.give_back(pool, old);
                                    }
                                    continue;
                                }
                            }
                        }
                        let balancer = &mut self.balancers[entry.pool];
                        if let Some(previous) = entry.counted.replace(backend) {
                            balancer.connection_closed(previous);
                        }
                        balancer.connection_opened(backend);
                        self.counters.connect_started(entry.pool, backend);
                        entry.trail.attempt = Some((backend, entry.trail.touched));
                    }
                    Action::Close { reason, .. } => {
                        if let Some(backend) = entry.counted.take() {
                            self.balancers[entry.pool].connection_closed(backend);
                        }
                        if let Some(ticket) = entry.ticket.take() {
                            // Not found: its grant is on the way, and is given back on arrival.
                            self.rooms[entry.pool].remove(ticket);
                            if let Some(n) = self.waiting.get_mut(entry.pool) {
                                *n = n.saturating_sub(1);
                            }
                        }
                        self.stats.closed += 1;
                        match reason {
                            CloseReason::NoBackend => self.stats.closed_no_backend += 1,
                            CloseReason::IdleTimeout => self.stats.closed_idle += 1,
                            CloseReason::FinTimeout(_) => self.stats.closed_fin += 1,
                            CloseReason::ClientFailed(_)
                            | CloseReason::BackendFailed(_)
                            | CloseReason::Local => self.stats.closed_failed += 1,
                            CloseReason::QueueFull => {
                                self.stats.closed_queue_full += 1;
                                self.counters.turned_away(entry.listener, false);
                            }
                            CloseReason::QueueTimeout => {
                                self.stats.closed_queue_timeout += 1;
                                self.counters.turned_away(entry.listener, true);
                            }
                            CloseReason::Inspect(refusal) => {
                                self.stats.closed_inspect += 1;
                                self.counters.inspect_refused(entry.listener, refusal);
                            }
                            CloseReason::Done | CloseReason::Aborted => {}
                        }
                        if let Action::Close { reset: true, .. } = action {
                            self.stats.resets.count(reason);
                        }
                        if let (CloseReason::BackendFailed(failure), Some((backend, _))) =
                            (reason, entry.trail.attempt)
                            && failure.peer_reset()
                        {
                            self.counters.backend_reset(entry.pool, backend);
                        }
                        if let Some(records) = &mut self.records {
                            records.push(finished(
                                entry.listener,
                                entry.pool,
                                &entry.trail,
                                reason,
                            ));
                        }
                    }
                    _ => {}
                }
                if let Some((pool, old)) = freed {
                    self.give_back(pool, old);
                }
                return Some((key, action));
            }
            entry.in_ready = false;
            let timer = entry
                .conn
                .poll_timeout()
                .filter(|&deadline| entry.timer.is_none_or(|armed| deadline < armed));
            if let Some(deadline) = timer {
                entry.timer = Some(deadline);
            }
            self.pop_ready(admitted);
            // Register the deadline only when it moved earlier than the one in the wheel; a later
            // one is found when the earlier entry fires (see timer.rs).
            if let Some(deadline) = timer {
                self.wheel.insert(key, deadline);
            }
        }
    }

    fn pop_ready(&mut self, admitted: bool) {
        if admitted {
            self.admitted.pop_front();
        } else {
            self.ready.pop();
        }
    }

    /// When [`Shard::handle_timeouts`] should next run (possibly early, never late).
    pub fn next_timeout(&mut self) -> Option<Instant> {
        let next = match (self.wheel.next_expiry(), self.retry_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.held_until {
            Some(until) => next.map(|at| at.max(until)),
            None => next,
        }
    }

    /// Free a closed connection's slot after its last outstanding operation has completed, and
    /// hand back its payload. Releasing a connection that never closed still settles its
    /// accounting. Returns `None` for a stale key.
    pub fn release(&mut self, key: SlotKey) -> Option<Io> {
        let entry = self.conns.remove(key)?;
        if let Some(backend) = entry.counted {
            self.balancers[entry.pool].connection_closed(backend);
        }
        if let Some(ticket) = entry.ticket {
            self.rooms[entry.pool].remove(ticket);
            if let Some(n) = self.waiting.get_mut(entry.pool) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(backend) = entry.slot {
            self.give_back(entry.pool, backend);
        }
        self.counters.released(entry.listener);
        self.sweep_timers_if_stale();
        Some(entry.io)
    }

    /// A released connection leaves its timer in the wheel, to be dropped when it fires (an
    /// idle timeout can be minutes away). Once the wheel holds more than twice the live
    /// connections plus [`TIMER_SWEEP_SLACK`], drop every entry no live connection needs in one
    /// sweep, so that the wheel's memory follows the connections that are open, not the ones
    /// that were. A sweep leaves at most one entry per live connection (and those already
    /// due), so it costs O(wheel) once per more than that many releases: O(1) per release.
    fn sweep_timers_if_stale(&mut self) {
        if self.wheel.len() <= 2 * self.conns.len() + TIMER_SWEEP_SLACK {
            return;
        }
        let conns = &self.conns;
        self.wheel
            .retain(|key| conns.get(key).and_then(|e| e.timer));
        self.stats.timer_sweeps += 1;
    }

    /// Close connection `key` now because the engine cannot carry it on (no pipe, no thread,
    /// a failed registration): a local failure, not the peer's ([`CloseReason::Local`]). Its
    /// `Close` comes from [`Shard::poll_action`]. Returns false for a stale key.
    pub fn abort(&mut self, key: SlotKey) -> bool {
        let Some(entry) = self.conns.get_mut(key) else {
            return false;
        };
        entry.conn.fail_locally();
        if !entry.in_ready {
            entry.in_ready = true;
            self.ready.push(key);
        }
        true
    }

    /// Close every connection now (the shutdown grace period is over).
    pub fn abort_all(&mut self) {
        let keys: Vec<SlotKey> = self.conns.keys().collect();
        for key in keys {
            if let Some(entry) = self.conns.get_mut(key) {
                entry.conn.abort();
                if !entry.in_ready {
                    entry.in_ready = true;
                    self.ready.push(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// The record of a connection closing for `reason`.
fn finished(listener: usize, pool: usize, trail: &Trail, reason: CloseReason) -> Finished {
    Finished {
        client: trail.client,
        listener,
        pool,
        backend: trail.attempt.map(|(backend, _)| backend),
        accepted: trail.accepted,
        admitted: trail.admitted,
        connected: trail.connected,
        closed: trail.touched,
        bytes_in: trail.bytes_in,
        bytes_out: trail.bytes_out,
        reason,
    }
}
