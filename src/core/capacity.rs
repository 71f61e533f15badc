//! What every worker shares about capacity: how many connections each backend holds now
//! against its `max_connections`, each pool's FIFO waiting queue, and each listener's
//! admission rate.
//!
//! The rest of the core is per worker; this is the one part that is process-wide, because a
//! limit of 100 connections to a backend is a promise to that backend, not to one worker.
//! Nothing here is touched per byte: a slot is taken once per connection (one compare-and-swap
//! on the backend's counter) and given back once; the queue's lock is taken only by clients
//! that find no room, by releases while someone waits, and by the ticks of a rate.
//!
//! # The queue's guarantee
//! Clients wait in one queue per pool, ordered by ticket: the order in which workers put them
//! there, under the queue's lock. Whenever room appears (a slot freed by any worker, a
//! backend coming up, a rate's next token), the queue is walked from its head and every
//! client that can go now is granted its slot, oldest first. A grant for a client on another
//! worker is posted to that worker ([`Post`]), which wakes it; the client's connect starts
//! when that worker next runs, so clients of different workers may *start* connecting in a
//! slightly different order than they were granted (by at most one loop turn of each worker),
//! but never take each other's slot. Two cases let a later client go first, both by design:
//! a client that may use only some backends (source hashing) waits for those, and a client
//! held back by its listener's admission rate does not hold back clients of other listeners.
//! While anyone waits, new clients join the queue's tail rather than taking a free slot.
//!
//! # Call order (the shard's)
//! 1. At accept, [`Room::is_empty`]: if nobody waits, take a token ([`Bucket::try_take`]) and
//!    a slot ([`Room::try_take`]) directly; otherwise, or without room,
//!    [`Room::enqueue`], which also dispatches.
//! 2. When a connection that holds a slot ends, or its connect fails: [`Room::release`],
//!    which dispatches if anyone waits.
//! 3. A waiting client that times out or closes: [`Room::remove`]. If it is not found, its
//!    grant is on the way, and the slot it carries must be given back when it arrives.
//! 4. Each loop turn with own clients waiting: [`Room::retry_at`] joins the timers, and
//!    [`Room::dispatch`] runs when it is due (a rate's next token).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use super::affinity::{Affinity, AffinityPolicy};
use super::backend::BackendId;
use super::balance::PoolSnapshot;
use super::conn::MAX_CANDIDATES;
use super::slot::SlotKey;

mod bucket;
mod queue;
#[cfg(test)]
mod tests;

pub use bucket::Bucket;
use queue::Queue;
pub use queue::WaiterView;

/// Most backends a pool's slot counters cover (the configuration allows no more per pool).
pub const MAX_SLOTS: usize = 1 << 16;

/// How a listener's clients queue (its pool's `queue_size`, `queue_timeout`, `queue_close`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Most clients waiting in the pool's queue; 0: none (clients without room are turned
    /// away at once).
    pub size: usize,
    /// Longest wait.
    pub timeout: Duration,
    /// Turn clients away with a reset (else an orderly close).
    pub reset: bool,
}

impl Default for QueuePolicy {
    /// No queue.
    fn default() -> Self {
        QueuePolicy {
            size: 0,
            timeout: Duration::ZERO,
            reset: true,
        }
    }
}

/// A listener's admission rate: `rate` new clients a second, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatePolicy {
    pub rate: u32,
    pub burst: u32,
}

/// A client that may leave the queue, for the worker that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The worker whose shard holds the client.
    pub worker: usize,
    pub pool: usize,
    pub key: SlotKey,
    pub ticket: u64,
    /// The backend whose slot it was given, or `None` when the pool has no limits (it was
    /// waiting for a token only): the worker picks as for any client.
    pub backend: Option<BackendId>,
    /// Whether a slot of `backend` was taken for it (a limited backend); a worker that finds
    /// the client gone gives it back.
    pub counted: bool,
}

/// How a grant reaches a worker other than the one that made it: the engine side posts it
/// to that worker's inbox and wakes it. Never called for grants to the worker that dispatched.
pub trait Post: Send + Sync + fmt::Debug {
    /// Hand `grant` to worker `grant.worker`, to apply with `Shard::admit`. If that worker has
    /// stopped, the grant may be dropped (its slot dies with the process).
    fn post(&self, grant: Grant);
}

/// A [`Post`] for a process with one worker (tests, the blocking engine's single shard):
/// every grant is the dispatcher's own, so nothing is ever posted.
#[derive(Debug, Default)]
pub struct NoPost;

impl Post for NoPost {
    fn post(&self, grant: Grant) {
        debug_assert!(
            false,
            "a grant for worker {} with nowhere to post",
            grant.worker
        );
    }
}

/// What a client may be connected to once it leaves the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eligible {
    /// Any Up backend (every algorithm but source hashing).
    Any,
    /// Only these, in order (source hashing: the client's own backend and its fallbacks).
    Listed {
        ids: [BackendId; MAX_CANDIDATES],
        len: u8,
    },
}

impl Eligible {
    /// The backends of a pick, at most [`MAX_CANDIDATES`].
    pub fn listed(candidates: &[BackendId]) -> Self {
        let mut ids = [BackendId(0); MAX_CANDIDATES];
        let len = candidates.len().min(MAX_CANDIDATES);
        ids[..len].copy_from_slice(&candidates[..len]);
        Eligible::Listed {
            ids,
            len: len as u8,
        }
    }
}

/// A client joining a queue.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub worker: usize,
    pub key: SlotKey,
    pub listener: usize,
    pub client: SocketAddr,
    pub since: Instant,
    pub eligible: Eligible,
    /// Its listener's admission rate, if it has one: a token is needed too.
    pub bucket: Option<Arc<Bucket>>,
}

/// Why [`Room::enqueue`] turned a client away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// What taking a slot of a backend found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The backend has no limit: nothing was counted.
    Unlimited,
    /// A slot was taken: give it back with [`Room::release`].
    Taken,
    /// The backend is at its limit.
    Full,
}

/// Every pool's room and affinity table and every listener's bucket, shared by all workers
/// and the control side.
#[derive(Debug)]
pub struct Capacity {
    rooms: RwLock<Vec<Arc<Room>>>,
    buckets: RwLock<Vec<Arc<Bucket>>>,
    /// By pool: its sticky-session table, for pools with `affinity = "source"`.
    affinities: RwLock<Vec<Option<Arc<Affinity>>>>,
    post: Box<dyn Post>,
    /// Keys the affinity tables' hashing (the core draws no randomness of its own).
    seed: u64,
}

impl Capacity {
    /// Rooms, buckets and tables made on demand; grants to other workers go through `post`;
    /// `seed` keys the affinity tables' hashing (see `core::affinity`).
    pub fn new(post: Box<dyn Post>, seed: u64) -> Self {
        Capacity {
            rooms: RwLock::new(Vec::new()),
            buckets: RwLock::new(Vec::new()),
            affinities: RwLock::new(Vec::new()),
            post,
            seed,
        }
    }

    /// For a process of one worker (see [`NoPost`]).
    pub fn local() -> Arc<Self> {
        Arc::new(Capacity::new(Box::new(NoPost), 0))
    }

    /// Pool `pool`'s affinity table, made on first use, with `policy` (applied also to one
    /// that exists: a reload may change it).
    pub fn affinity(&self, pool: usize, policy: AffinityPolicy) -> Arc<Affinity> {
        let existing = read(&self.affinities).get(pool).cloned().flatten();
        let table = existing.unwrap_or_else(|| {
            let mut tables = write(&self.affinities);
            if tables.len() <= pool {
                tables.resize(pool + 1, None);
            }
            Arc::clone(
                tables[pool].get_or_insert_with(|| Arc::new(Affinity::new(policy, self.seed))),
            )
        });
        table.configure(policy);
        table
    }

    /// Every pool's affinity table, by pool index (`None`: no affinity, or not used yet).
    pub fn affinities(&self) -> Vec<Option<Arc<Affinity>>> {
        read(&self.affinities).clone()
    }

    /// Pool `pool`'s room, made (with those before it) on first use. Pool indices are never
    /// reused, so a room is never shared by two pools.
    pub fn room(&self, pool: usize) -> Arc<Room> {
        if let Some(room) = read(&self.rooms).get(pool) {
            return Arc::clone(room);
        }
        let mut rooms = write(&self.rooms);
        while rooms.len() <= pool {
            let next = rooms.len();
            rooms.push(Arc::new(Room::new(next)));
        }
        Arc::clone(&rooms[pool])
    }

    /// Every room made so far, by pool index (for the control side's views).
    pub fn rooms(&self) -> Vec<Arc<Room>> {
        read(&self.rooms).clone()
    }

    /// Listener `listener`'s bucket, made on first use, with `rate` and `burst` (applied
    /// also to one that exists: a reload may change them).
    pub fn bucket(&self, listener: usize, rate: u32, burst: u32) -> Arc<Bucket> {
        let bucket = {
            let existing = read(&self.buckets).get(listener).cloned();
            existing.unwrap_or_else(|| {
                let mut buckets = write(&self.buckets);
                while buckets.len() <= listener {
                    buckets.push(Arc::new(Bucket::new(rate, burst)));
                }
                Arc::clone(&buckets[listener])
            })
        };
        bucket.configure(rate, burst);
        bucket
    }

    /// Hand `grant` to its worker (one other than the caller's).
    pub fn post(&self, grant: Grant) {
        self.post.post(grant);
    }
}

/// One pool's slot counters and waiting queue.
pub struct Room {
    pool: usize,
    /// Connections holding a slot, by backend id; made when the pool is first limited.
    slots: OnceLock<Box<[AtomicU32]>>,
    /// Clients in the queue: read without the lock on every accept and release.
    waiting: AtomicUsize,
    queue: Mutex<Queue>,
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("pool", &self.pool)
            .field("waiting", &self.len())
            .finish()
    }
}

impl Room {
    fn new(pool: usize) -> Self {
        Room {
            pool,
            slots: OnceLock::new(),
            waiting: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
        }
    }

    fn slots(&self) -> &[AtomicU32] {
        self.slots
            .get_or_init(|| (0..MAX_SLOTS).map(|_| AtomicU32::new(0)).collect())
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    // Orderings: `waiting` and the slot counters are SeqCst, so that a client joining the
    // queue (which raises `waiting`, then looks for slots) and a release (which lowers a slot
    // count, then looks at `waiting`) cannot both miss each other: one of the two dispatches
    // and finds the other's change.

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clients waiting now.
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Connections holding a slot of `id` now.
    pub fn in_use(&self, id: BackendId) -> u32 {
        self.slots
            .get()
            .and_then(|s| s.get(id.index()))
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    /// Take a slot of `id` under `snapshot`'s limit for it.
    pub fn try_take(&self, snapshot: &PoolSnapshot, id: BackendId) -> Slot {
        let Some(limit) = snapshot.limit(id) else {
            return Slot::Unlimited;
        };
        let Some(counter) = self.slots().get(id.index()) else {
            return Slot::Full;
        };
        let taken = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if taken { Slot::Taken } else { Slot::Full }
    }

    /// Give back a slot of `id` (taken with [`Self::try_take`] or carried by a grant) and, if
    /// anyone waits, dispatch at `now`: grants are appended to `grants`.
    pub fn release(
        &self,
        snapshot: &PoolSnapshot,
        id: BackendId,
        now: Instant,
        grants: &mut Vec<Grant>,
    ) {
        self.give_back(id);
        if !self.is_empty() {
            self.dispatch(snapshot, now, grants);
        }
    }

    fn give_back(&self, id: BackendId) {
        if let Some(counter) = self.slots().get(id.index()) {
            // Saturating: a release without its slot (a bug) must not wrap the count and
            // close the backend for good.
            let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
        }
    }

    /// Put a client at the tail of the queue and dispatch at `now` (the client may be granted
    /// at once: room may have appeared meanwhile). Returns its ticket; `QueueFull` when `size`
    /// wait already and the walk did not let this one through.
    pub fn enqueue(
        &self,
        arrival: Arrival,
        size: usize,
        snapshot: &PoolSnapshot,
        now: Instant,
        grants: &mut Vec<Grant>,
    ) -> Result<u64, QueueFull> {
        let mut queue = self.lock();
        let full = queue.len() >= size;
        let ticket = queue.push(arrival);
        self.waiting.store(queue.len(), Ordering::SeqCst);
        self.dispatch_locked(&mut queue, snapshot, now, grants);
        // A full queue may hold only clients that wait for something this one does not need
        // (another listener's token, a sticky backend): it is turned away only when the walk
        // did not let it through.
        if full && queue.remove(ticket) {
            self.waiting.store(queue.len(), Ordering::SeqCst);
            return Err(QueueFull);
        }
        Ok(ticket)
    }

    /// Take the client with `ticket` out of the queue (it timed out, or is closing). False
    /// when it is not there: it was granted, and the grant is on its way to its worker.
    pub fn remove(&self, ticket: u64) -> bool {
        let mut queue = self.lock();
        let removed = queue.remove(ticket);
        self.waiting.store(queue.len(), Ordering::SeqCst);
        removed
    }

    /// Grant every client that can go now, oldest first (see the module documentation).
    pub fn dispatch(&self, snapshot: &PoolSnapshot, now: Instant, grants: &mut Vec<Grant>) {
        let mut queue = self.lock();
        self.dispatch_locked(&mut queue, snapshot, now, grants);
    }

    fn dispatch_locked(
        &self,
        queue: &mut Queue,
        snapshot: &PoolSnapshot,
        now: Instant,
        grants: &mut Vec<Grant>,
    ) {
        queue.dispatch(self, snapshot, now, grants);
        self.waiting.store(queue.len(), Ordering::SeqCst);
    }

    /// When a client held back only by its listener's rate can next go (`None`: nobody is).
    pub fn retry_at(&self) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        self.lock().retry_at()
    }

    /// The clients waiting, oldest first (for `ringlb ctl show queue`).
    pub fn waiters(&self) -> Vec<WaiterView> {
        self.lock().views(self.pool)
    }
}

/// How long a client waited, for the shard's histogram.
pub fn waited(since: Instant, now: Instant) -> Duration {
    now.saturating_duration_since(since)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
