//! Sticky sessions (`affinity = "source"`): a client address keeps the backend it was sent to
//! for `affinity_ttl` after its last connection, even when the pool changes (a backend added,
//! a weight changed), as HAProxy's stick tables keep it.
//!
//! One table per pool, shared by every worker (SO_REUSEPORT spreads one client's connections
//! over all of them), bounded by `affinity_max_entries` with the least recently used entry
//! evicted first. A connection touches it once, at accept: [`Affinity::stick`] looks the
//! client up and either returns its backend (refreshing the entry) or records the one the
//! balancer picked. The table is split into [`SHARDS`] independently locked parts by the
//! address's hash, so that workers rarely wait for each other.
//!
//! A backend that is down (failed checks, `maint`) releases its clients: their entries are
//! replaced at their next connection. A draining backend keeps them, as HAProxy lets persistent
//! clients reach a draining server.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use siphasher::sip::SipHasher13;

use super::backend::{BackendId, BackendState};
use super::balance::PoolSnapshot;

/// Independently locked parts of a table.
pub const SHARDS: usize = 16;

/// A pool's affinity settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityPolicy {
    /// How long after its last connection a client keeps its backend.
    pub ttl: Duration,
    /// Most clients remembered.
    pub max_entries: usize,
}

/// One remembered client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stuck {
    backend: BackendId,
    last_seen: Instant,
}

/// Counters of a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityStats {
    pub entries: u64,
    /// Connections sent to the backend their client had.
    pub hits: u64,
    /// Connections whose client had no live entry (new, expired, or its backend down).
    pub misses: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
}

/// One client in `ringlb ctl show affinity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StuckView {
    pub client: IpAddr,
    pub backend: BackendId,
    pub last_seen: Instant,
}

/// What [`Affinity::stick`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stick {
    /// The client's remembered backend, still usable.
    Kept(BackendId),
    /// No live entry: the balancer's pick, now remembered.
    Recorded(BackendId),
}

/// SipHash keyed by a seed the engine draws at start: the core has no randomness of its own,
/// and a key nobody outside knows keeps clients from choosing addresses that collide (in a
/// shard's map, or on one shard).
#[derive(Clone, Copy, Debug)]
struct Seeded(u64);

impl BuildHasher for Seeded {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, !self.0)
    }
}

/// One pool's table.
#[derive(Debug)]
pub struct Affinity {
    shards: Vec<Mutex<LruCache<IpAddr, Stuck, Seeded>>>,
    ttl: Mutex<Duration>,
    shard_hasher: Seeded,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl Affinity {
    /// A table for `policy`, hashing with `seed` (see [`Seeded`]).
    pub fn new(policy: AffinityPolicy, seed: u64) -> Self {
        let per_shard = NonZeroUsize::new(policy.max_entries.div_ceil(SHARDS).max(1))
            .unwrap_or(NonZeroUsize::MIN);
        let hasher = Seeded(seed);
        // Another key for choosing the shard, so that the keys within one shard do not all
        // share the bits of the hash that chose it (hashbrown's buckets use them too).
        let shard_hasher = Seeded(seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15);
        Affinity {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::with_hasher(per_shard, hasher)))
                .collect(),
            ttl: Mutex::new(policy.ttl),
            shard_hasher,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Apply a reload's settings: the TTL at once; the size (rounded up to a multiple of
    /// [`SHARDS`]), evicting the least recently used entries beyond it.
    pub fn configure(&self, policy: AffinityPolicy) {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner()) = policy.ttl;
        let per_shard = NonZeroUsize::new(policy.max_entries.div_ceil(SHARDS).max(1))
            .unwrap_or(NonZeroUsize::MIN);
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = shard.len();
            shard.resize(per_shard);
            self.evictions
                .fetch_add((before - shard.len()) as u64, Ordering::Relaxed);
        }
    }

    fn ttl(&self) -> Duration {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shard(&self, client: IpAddr) -> &Mutex<LruCache<IpAddr, Stuck, Seeded>> {
        &self.shards[(self.shard_hasher.hash_one(client) as usize) % SHARDS]
    }

    /// The backend for `client` at `now`: the one it had within the TTL if `snapshot` still
    /// lets it take the client (up, or draining), else `pick()` (the balancer's choice, `None`
    /// when no backend is up), which is then remembered.
    pub fn stick(
        &self,
        client: IpAddr,
        now: Instant,
        snapshot: &PoolSnapshot,
        pick: impl FnOnce() -> Option<BackendId>,
    ) -> Option<Stick> {
        let ttl = self.ttl();
        let mut shard = self.shard(client).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stuck) = shard.get_mut(&client) {
            let live = now.saturating_duration_since(stuck.last_seen) <= ttl;
            let usable = matches!(
                snapshot.state(stuck.backend),
                BackendState::Up | BackendState::Draining
            );
            if live && usable {
                stuck.last_seen = now;
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Some(Stick::Kept(stuck.backend));
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let chosen = pick();
        match chosen {
            Some(backend) => {
                let stuck = Stuck {
                    backend,
                    last_seen: now,
                };
                if let Some((evicted, _)) = shard.push(client, stuck)
                    && evicted != client
                {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                shard.pop(&client);
            }
        }
        chosen.map(Stick::Recorded)
    }

    /// Counters now; expired entries still count until they are replaced or evicted.
    pub fn stats(&self) -> AffinityStats {
        let entries = self
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len() as u64)
            .sum();
        AffinityStats {
            entries,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// The clients remembered and alive at `now` (within the TTL), at most `limit`.
    pub fn entries(&self, now: Instant, limit: usize) -> Vec<StuckView> {
        let ttl = self.ttl();
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (client, stuck) in shard.iter() {
                if out.len() >= limit {
                    return out;
                }
                if now.saturating_duration_since(stuck.last_seen) <= ttl {
                    out.push(StuckView {
                        client: *client,
                        backend: stuck.backend,
                        last_seen: stuck.last_seen,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
