//! A per-worker hashed timer wheel on caller-supplied time.
//!
//! Connections re-arm their idle deadline on every byte; putting each of those into a sorted
//! structure (or a kernel timeout per connection) would cost on the hot path. Instead an entry is
//! inserted only when a connection's deadline moves *earlier* than the one already registered,
//! and an entry that fires early is simply checked against the connection's current deadline and
//! re-inserted. Activity therefore costs one store (`last_activity = now`), nothing more.
//!
//! Deadlines are rounded up to the next tick, so a timer never fires before its deadline.

use std::time::{Duration, Instant};

use super::slot::SlotKey;

/// Granularity of the wheel.
pub const TICK: Duration = Duration::from_millis(4);
/// Slots in the wheel; the horizon is `TICK * WHEEL_SLOTS` (about 4 s). Later deadlines wait in
/// their slot for as many turns as they need.
pub const WHEEL_SLOTS: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: SlotKey,
    tick: u64,
}

/// Timers keyed by connection.
#[derive(Debug)]
pub struct TimerWheel {
    origin: Instant,
    /// Every tick before this one has been expired.
    current: u64,
    slots: Vec<Vec<Entry>>,
    len: usize,
    /// The tick of the first non-empty slot at or after `current`, when known. Engines ask for
    /// the next expiry on every loop turn; scanning the wheel each time would cost more than
    /// the rest of a short turn, so the answer is kept until an insert or an expiry changes it.
    next_slot: Option<u64>,
}

impl TimerWheel {
    /// A wheel whose tick 0 starts at `origin`.
    pub fn new(origin: Instant) -> Self {
        TimerWheel {
            origin,
            current: 0,
            slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            len: 0,
            next_slot: None,
        }
    }

    /// Registered entries (including ones that will turn out stale).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn tick_of(&self, at: Instant) -> u64 {
        tick_at(self.origin, at)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        let nanos = u128::from(tick) * TICK.as_nanos();
        self.origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Register `key` to fire at or after `deadline`.
    pub fn insert(&mut self, key: SlotKey, deadline: Instant) {
        // A deadline in the past fires on the next expiry pass.
        let tick = self.tick_of(deadline).max(self.current);
        self.slots[(tick % WHEEL_SLOTS as u64) as usize].push(Entry { key, tick });
        self.len += 1;
        // The slot is next visited at this tick (this turn, or a later turn of the wheel).
        let visit = self.current + (tick - self.current) % WHEEL_SLOTS as u64;
        if self.len == 1 {
            self.next_slot = Some(visit);
        } else if let Some(next) = self.next_slot {
            self.next_slot = Some(next.min(visit));
        }
    }

    /// Keep only the entries still needed: `deadline(key)` is the deadline key's owner has
    /// registered (`None`: none, or the owner is gone). An entry is kept when it fires no later
    /// than that deadline, so a later duplicate (left when the deadline moved earlier) goes,
    /// and an entry clamped to the current tick stays. Gives back the memory of slots left
    /// mostly empty. O(slots + entries).
    pub fn retain(&mut self, mut deadline: impl FnMut(SlotKey) -> Option<Instant>) {
        let current = self.current;
        let origin = self.origin;
        for slot in &mut self.slots {
            slot.retain(|entry| {
                deadline(entry.key).is_some_and(|d| entry.tick <= tick_at(origin, d).max(current))
            });
            shrink_if_sparse(slot);
        }
        self.len = self.slots.iter().map(Vec::len).sum();
        self.next_slot = None;
    }

    /// Entries the wheel has room for without allocating (its memory, in entries).
    pub fn capacity(&self) -> usize {
        self.slots.iter().map(Vec::capacity).sum()
    }

    /// Move every entry whose deadline is at or before `now` into `fired`.
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<SlotKey>) {
        // Entry ticks are rounded up, so tick t is due once now >= t * TICK.
        let elapsed = now.saturating_duration_since(self.origin).as_nanos() / TICK.as_nanos();
        let due = u64::try_from(elapsed).unwrap_or(u64::MAX - 1);
        if due < self.current {
            return;
        }
        if self.len > 0 {
            // Every entry's tick is >= `current` (insert clamps), so visiting the slots of ticks
            // current..=due finds all due entries; one full turn visits every slot.
            let last = due.min(self.current + WHEEL_SLOTS as u64 - 1);
            for tick in self.current..=last {
                let slot = &mut self.slots[(tick % WHEEL_SLOTS as u64) as usize];
                let before = slot.len();
                slot.retain(|entry| {
                    let is_due = entry.tick <= due;
                    if is_due {
                        fired.push(entry.key);
                    }
                    !is_due
                });
                self.len -= before - slot.len();
                shrink_if_sparse(slot);
            }
        }
        self.current = due + 1;
        if self.next_slot.is_some_and(|next| next <= due) {
            self.next_slot = None;
        }
    }

    /// When the next entry may be due: the start of the nearest non-empty slot. A slot holding
    /// only entries for a later turn makes this early, never late: the caller wakes, expires
    /// nothing and asks again.
    pub fn next_expiry(&mut self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        if self.next_slot.is_none() {
            self.next_slot = (0..WHEEL_SLOTS as u64)
                .map(|offset| self.current + offset)
                .find(|tick| !self.slots[(tick % WHEEL_SLOTS as u64) as usize].is_empty());
        }
        self.next_slot.map(|tick| self.instant_of(tick))
    }
}

/// The tick at or after `at` of a wheel started at `origin`: rounded up, so that a timer never
/// fires before its deadline.
fn tick_at(origin: Instant, at: Instant) -> u64 {
    let nanos = at.saturating_duration_since(origin).as_nanos();
    u64::try_from(nanos.div_ceil(TICK.as_nanos())).unwrap_or(u64::MAX)
}

/// A slot keeps at most four times the room its entries need (and a few entries' worth), so
/// that the wheel's memory follows the timers pending, not the most it ever held.
fn shrink_if_sparse(slot: &mut Vec<Entry>) {
    if slot.capacity() > 4 * slot.len() + 8 {
        slot.shrink_to(2 * slot.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::slot::Slab;

    fn keys(n: usize) -> Vec<SlotKey> {
        let mut slab = Slab::new();
        (0..n).map(|i| slab.insert(i)).collect()
    }

    #[test]
    fn fires_at_or_after_deadline_never_before() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let k = keys(3);
        wheel.insert(k[0], t0 + Duration::from_millis(10));
        wheel.insert(k[1], t0 + Duration::from_millis(10_000));
        wheel.insert(k[2], t0 + Duration::from_millis(3));
        let mut fired = Vec::new();
        wheel.expire(t0 + Duration::from_millis(2), &mut fired);
        assert!(fired.is_empty());
        wheel.expire(t0 + Duration::from_millis(9), &mut fired);
        assert_eq!(fired, vec![k[2]]);
        fired.clear();
        wheel.expire(t0 + Duration::from_millis(12), &mut fired);
        assert_eq!(fired, vec![k[0]]);
        fired.clear();
        // Far beyond one turn of the wheel: the long timer must wait its turns.
        wheel.expire(t0 + Duration::from_millis(9_999), &mut fired);
        assert!(fired.is_empty());
        wheel.expire(t0 + Duration::from_millis(10_004), &mut fired);
        assert_eq!(fired, vec![k[1]]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn retain_drops_gone_keys_and_later_duplicates_and_gives_memory_back() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let k = keys(3000);
        let ms = |n| t0 + Duration::from_millis(n);
        for key in &k {
            wheel.insert(*key, ms(100));
        }
        // k[1]'s deadline moved earlier: its later entry is a duplicate.
        wheel.insert(k[1], ms(50));
        // An entry for a deadline already past is clamped to the current tick.
        let mut fired = Vec::new();
        wheel.expire(ms(60), &mut fired);
        assert_eq!(fired, vec![k[1]]);
        wheel.insert(k[2], ms(10));
        wheel.insert(k[1], ms(100));
        let big = wheel.capacity();
        // Only k[0], k[1] (deadline 100 ms) and k[2] (deadline 10 ms, clamped) remain needed.
        wheel.retain(|key| match key {
            key if key == k[0] || key == k[1] => Some(ms(100)),
            key if key == k[2] => Some(ms(10)),
            _ => None,
        });
        // k[2]'s entry at 100 ms is a later duplicate of its 10 ms one: dropped.
        assert_eq!(wheel.len(), 4, "k0, k1 twice at 100 ms, k2 clamped");
        assert!(wheel.capacity() < big / 4, "{} of {big}", wheel.capacity());
        fired.clear();
        // Clamped to the tick after the last expiry (60 ms): due at 64 ms.
        wheel.expire(ms(65), &mut fired);
        assert_eq!(
            fired,
            vec![k[2]],
            "the clamped entry fires on the next pass"
        );
        fired.clear();
        wheel.expire(ms(101), &mut fired);
        fired.sort_by_key(|key| key.index());
        assert_eq!(fired, vec![k[0], k[1], k[1]]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn next_expiry_is_never_after_the_earliest_deadline() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let k = keys(2);
        assert_eq!(wheel.next_expiry(), None);
        assert!(wheel.is_empty());
        let d = t0 + Duration::from_millis(5_000);
        wheel.insert(k[0], d);
        let next = wheel.next_expiry().expect("one entry");
        assert!(next <= d + TICK);
        wheel.insert(k[1], t0 + Duration::from_millis(7));
        let next = wheel.next_expiry().expect("two entries");
        assert!(next <= t0 + Duration::from_millis(8));
    }

    #[test]
    fn seeded_random_deadlines_all_fire_once_and_in_time() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let k = keys(500);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut deadlines = Vec::new();
        for key in &k {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let d = t0 + Duration::from_millis(state % 20_000);
            deadlines.push((*key, d));
            wheel.insert(*key, d);
        }
        let mut now = t0;
        let mut seen = std::collections::HashMap::new();
        while !wheel.is_empty() {
            // Jump to the next possible expiry, as a virtual-clock driver does.
            now = wheel.next_expiry().expect("not empty").max(now);
            let mut fired = Vec::new();
            wheel.expire(now, &mut fired);
            for key in fired {
                assert!(seen.insert(key, now).is_none(), "fired twice");
            }
        }
        for (key, deadline) in deadlines {
            let at = seen[&key];
            assert!(at >= deadline, "fired early");
            assert!(at <= deadline + TICK, "fired late: {:?}", at - deadline);
        }
    }

    #[test]
    fn interleaved_inserts_and_expiries_never_fire_late_or_early() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let k = keys(300);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut pending: std::collections::HashMap<SlotKey, Instant> = Default::default();
        let mut now = t0;
        let mut inserted = 0;
        while inserted < k.len() || !pending.is_empty() {
            if inserted < k.len() && next() % 3 == 0 {
                // Deadlines from "already due" to beyond several turns of the wheel.
                let deadline = now + Duration::from_millis(next() % 12_000);
                wheel.insert(k[inserted], deadline);
                pending.insert(k[inserted], deadline);
                inserted += 1;
                continue;
            }
            let expiry = wheel.next_expiry();
            assert_eq!(expiry.is_none(), pending.is_empty());
            if let Some(earliest) = pending.values().min() {
                let expiry = expiry.expect("entries pending");
                assert!(expiry <= *earliest + TICK, "the wheel would wake too late");
            }
            now = match expiry {
                Some(at) => at.max(now) + Duration::from_micros(next() % 3_000),
                None => now + Duration::from_millis(1),
            };
            let mut fired = Vec::new();
            wheel.expire(now, &mut fired);
            for key in fired {
                let deadline = pending.remove(&key).expect("fired once");
                assert!(now >= deadline, "fired early");
            }
            for deadline in pending.values() {
                assert!(*deadline + TICK > now, "missed a due entry");
            }
        }
    }
}
