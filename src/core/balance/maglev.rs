//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size M in
//! which every backend owns about its weighted share of slots, so that a client lookup is one
//! hash and one index, and a change of the backend set moves few clients.
//!
//! Construction, and why each choice:
//! - The members are sorted by name (then address, then weight, for duplicate names that
//!   validation should already have refused) before filling, so two processes given the same
//!   backends in any order build the identical table.
//! - Each backend's permutation of the slots is `offset + j·skip (mod M)` with offset and skip
//!   from [`super::hash::permutation`], which depends on its name only.
//! - Weights use turns (the scheme Envoy uses for its weighted Maglev): the filling proceeds in
//!   iterations, and a backend of weight `w` takes a turn in iteration `k` when
//!   `k·w ≥ turns_taken·w_max`. The heaviest backends take one turn every iteration, a backend of
//!   half that weight every other iteration, and with equal weights every backend takes exactly
//!   one turn per iteration, which is the original algorithm: each owns ⌊M/N⌋ or ⌈M/N⌉ slots.
//!   Everyone takes a turn in the first iteration, so each member owns at least one slot
//!   whenever M ≥ N.
//! - M is prime so that every skip in `1..M` generates a full permutation and a free slot is
//!   always reached.
//!
//! Lookup is `table[client_hash(ip) % M]`. Building costs O(M log M) for equal weights (about a
//! millisecond for 1000 backends), very skewed weights up to O(M·N); it happens off the hot path,
//! only when the pool's backend list changes. The table covers every backend of the pool
//! whatever its state: a pick skips the slots of backends that are not Up (see
//! [`super::Balancer::pick`]), so a backend going down or draining moves only its own clients,
//! and coming back brings exactly those back.

use std::fmt;
use std::net::IpAddr;

use super::PoolSnapshot;
use super::hash::{client_hash, permutation};
use super::pick::Pick;
use crate::config::defaults::DEFAULT_MAGLEV_TABLE_SIZE;
use crate::core::backend::{BackendId, BackendInfo};

/// A pick walks at most this many slots looking for Up owners; whatever is still missing then
/// comes from the Up list. Bounds a pick's cost when nearly every backend is down, or when a
/// backend of tiny weight owns only a handful of slots.
const WALK_LIMIT: usize = 1024;

/// The largest prime below 2³², the cap on any table size so that the prime search cannot
/// overflow.
const LARGEST_U32_PRIME: u32 = 4_294_967_291;

/// Slots per backend that [`table_size_for`] provides at least. 100 would already give every
/// backend within 1% of its fair share (⌈M/N⌉ ≤ 1.01·M/N), but removing one backend and
/// rebuilding then measurably moves more than 1% of the other backends' slots (1.07% at N = 354,
/// M = 65 537; 0.996% at N = 326); with 256 or more, the worst case measured is 0.87%.
pub const SLOTS_PER_BACKEND: u64 = 256;

/// The table size for a pool of `backends` backends: the smallest prime ≥ 65 537·2ᵏ
/// ([`DEFAULT_MAGLEV_TABLE_SIZE`]·2ᵏ) that gives every backend at least [`SLOTS_PER_BACKEND`]
/// slots, so 65 537 up to 256 backends, 131 101 up to 512, 262 151 up to 1024, and so on.
///
/// It counts backends in every state, so a state change never changes M. And M grows in
/// doublings rather than with every backend added: a different M reshuffles every client, so it
/// should change only when the pool grows a lot, not on each reload.
pub fn table_size_for(backends: usize) -> u32 {
    let wanted = u64::try_from(backends)
        .unwrap_or(u64::MAX)
        .saturating_mul(SLOTS_PER_BACKEND);
    let mut size = u64::from(DEFAULT_MAGLEV_TABLE_SIZE);
    while size < wanted && size < u64::from(LARGEST_U32_PRIME) {
        size *= 2;
    }
    next_prime(u32::try_from(size).unwrap_or(LARGEST_U32_PRIME))
}

/// The smallest prime ≥ `n` (2 for `n` ≤ 2), capped at the largest `u32` prime.
pub fn next_prime(n: u32) -> u32 {
    if n >= LARGEST_U32_PRIME {
        return LARGEST_U32_PRIME;
    }
    let mut candidate = n.max(2);
    while !is_prime(candidate) {
        candidate += 1;
    }
    candidate
}

fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// A built Maglev lookup table. Immutable; shared by all workers inside a
/// [`super::PoolSnapshot`].
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// `entries[slot]` is the owner of the slot, as an id into the pool's backend vector.
    entries: Vec<BackendId>,
}

/// One member's progress while the table fills.
struct Filler {
    id: BackendId,
    /// Next slot of this member's permutation.
    position: u32,
    skip: u32,
    weight: u64,
    /// `turns_taken · w_max`: the member takes a turn in iteration `k` once `k·w ≥ target`.
    target: u64,
}

impl MaglevTable {
    /// Builds the table of prime size ≥ `size` over `members`, ids into `backends`. Ids out of
    /// range are ignored; weights below 1 count as 1. Returns `None` when no member is left:
    /// there is nothing to send clients to.
    pub fn build(backends: &[BackendInfo], members: &[BackendId], size: u32) -> Option<Self> {
        let m = next_prime(size);
        let mut sorted: Vec<(&BackendInfo, BackendId)> = members
            .iter()
            .filter_map(|&id| backends.get(id.index()).map(|info| (info, id)))
            .collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(|(a, _), (b, _)| {
            (a.name.as_str(), a.addr, a.weight).cmp(&(b.name.as_str(), b.addr, b.weight))
        });
        let mut fillers: Vec<Filler> = sorted
            .iter()
            .map(|(info, id)| {
                let (offset, skip) = permutation(&info.name, m);
                Filler {
                    id: *id,
                    position: offset,
                    skip,
                    weight: u64::from(info.weight.max(1)),
                    target: 0,
                }
            })
            .collect();
        let max_weight = fillers.iter().map(|f| f.weight).max().unwrap_or(1);

        // Which slots are taken, one bit each: the probing reads this 8 KiB bitmap (for
        // M = 65 537), which stays in L1 cache, rather than the 256 KiB table.
        let mut taken = vec![0u64; (m as usize).div_ceil(64)];
        let mut entries = vec![BackendId(0); m as usize];
        let mut filled: usize = 0;
        let mut iteration: u64 = 0;
        'fill: loop {
            iteration += 1;
            for f in &mut fillers {
                if iteration * f.weight < f.target {
                    continue;
                }
                f.target += max_weight;
                // The table is not full, and the permutation visits every slot because M is
                // prime, so this finds a free slot within M steps.
                loop {
                    let slot = f.position as usize;
                    f.position += f.skip;
                    if f.position >= m {
                        f.position -= m;
                    }
                    let (word, bit) = (slot / 64, 1u64 << (slot % 64));
                    if taken[word] & bit == 0 {
                        taken[word] |= bit;
                        entries[slot] = f.id;
                        break;
                    }
                }
                filled += 1;
                if filled == entries.len() {
                    break 'fill;
                }
            }
        }
        Some(Self { entries })
    }

    /// The table size M (prime).
    pub fn size(&self) -> u32 {
        // Built from a `u32` size.
        self.entries.len() as u32
    }

    /// Every slot's owner, in slot order.
    pub fn entries(&self) -> &[BackendId] {
        &self.entries
    }

    /// The slot a client hashes to.
    #[inline]
    pub fn slot_of(&self, client: IpAddr) -> usize {
        self.slot_of_hash(client_hash(client))
    }

    /// The slot for a precomputed [`client_hash`].
    #[inline]
    pub fn slot_of_hash(&self, hash: u64) -> usize {
        // The remainder is below the table length, which is a `usize`.
        (hash % self.entries.len() as u64) as usize
    }

    /// The backend that owns a client: `table[client_hash(ip) % M]`.
    #[inline]
    pub fn lookup(&self, client: IpAddr) -> BackendId {
        self.entries[self.slot_of(client)]
    }
}

/// Source hashing: the first Up owner at or after the client's slot is chosen, and the next
/// distinct Up owners along the table are its fallbacks.
///
/// Skipping the slots of backends that are not Up, rather than rebuilding the table without
/// them, is what makes a state change move only the changed backend's clients: every other slot
/// keeps its owner. The clients of a down backend go to the owners of the slots that follow its
/// own, which are spread over the others in proportion to their weights; its first fallback is
/// exactly where the client goes if it does go down. If the walk limit passes without enough Up
/// owners (nearly everything down), the rest come from the Up list, starting at a position
/// taken from the client's hash so that all ringlb nodes still agree.
pub(crate) fn pick(snapshot: &PoolSnapshot, client: IpAddr, limit: usize) -> Option<Pick> {
    let table = snapshot.maglev()?;
    let up = snapshot.up();
    if up.is_empty() {
        return None;
    }
    let hash = client_hash(client);
    let slot = table.slot_of_hash(hash);
    let (before, after) = table.entries().split_at_checked(slot)?;
    let want = limit.min(up.len());
    let mut pick: Option<Pick> = None;
    for &id in after.iter().chain(before).take(WALK_LIMIT) {
        if !snapshot.state(id).takes_new_connections() {
            continue;
        }
        let p = pick.get_or_insert(Pick::new(id));
        p.push(id);
        if p.count() >= want {
            return pick;
        }
    }
    // The remainder is below `up.len()`, a `usize`.
    let start = (hash % up.len() as u64) as usize;
    for &id in up[start..].iter().chain(&up[..start]) {
        let p = pick.get_or_insert(Pick::new(id));
        p.push(id);
        if p.count() >= want {
            break;
        }
    }
    pick
}

impl fmt::Debug for MaglevTable {
    // The entries are tens of thousands of ids: print the shape, not the content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.entries.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str]) -> Vec<BackendInfo> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| BackendInfo {
                name: (*name).to_owned(),
                addr: ([127, 0, 0, 1], 9000 + i as u16).into(),
                weight: 1,
            })
            .collect()
    }

    fn ids(n: usize) -> Vec<BackendId> {
        (0..n as u32).map(BackendId).collect()
    }

    /// Pins the table and some lookups. If this fails, the hash, its keys, the permutation or
    /// the fill order changed: every client would move to another backend on upgrade, and two
    /// nodes of different versions would disagree. Values checked against an independent
    /// SipHash-1-3 implementation.
    #[test]
    fn known_table_entries_and_lookups() {
        let names = ["a", "b", "c", "d", "e"];
        let table = MaglevTable::build(&named(&names), &ids(5), DEFAULT_MAGLEV_TABLE_SIZE)
            .expect("five backends");
        assert_eq!(table.size(), 65_537);
        let first: Vec<&str> = table.entries()[..8]
            .iter()
            .map(|id| names[id.index()])
            .collect();
        assert_eq!(first, ["e", "b", "c", "d", "b", "a", "a", "d"]);
        for (ip, slot, owner) in [
            ("192.0.2.1", 27_003, "e"),
            ("198.51.100.7", 52_795, "b"),
            ("203.0.113.255", 39_343, "a"),
            ("2001:db8::1", 56_386, "a"),
            ("::ffff:192.0.2.1", 27_003, "e"),
        ] {
            let ip: IpAddr = ip.parse().expect("literal address");
            assert_eq!(table.slot_of(ip), slot, "{ip}");
            assert_eq!(names[table.lookup(ip).index()], owner, "{ip}");
        }
    }

    #[test]
    fn listing_order_does_not_matter() {
        let forward = named(&["x", "y", "z", "w"]);
        let mut reversed = forward.clone();
        reversed.reverse();
        let a = MaglevTable::build(&forward, &ids(4), 1009).expect("four backends");
        let b = MaglevTable::build(&reversed, &ids(4), 1009).expect("four backends");
        let names = |t: &MaglevTable, pool: &[BackendInfo]| -> Vec<String> {
            t.entries()
                .iter()
                .map(|id| pool[id.index()].name.clone())
                .collect()
        };
        assert_eq!(names(&a, &forward), names(&b, &reversed));
    }

    #[test]
    fn tiny_and_empty_inputs() {
        let pool = named(&["a", "b", "c"]);
        assert!(MaglevTable::build(&pool, &[], 7).is_none());
        assert!(MaglevTable::build(&pool, &[BackendId(9)], 7).is_none());
        // A size below the member count still builds (some members own nothing).
        let t = MaglevTable::build(&pool, &ids(3), 0).expect("three backends");
        assert_eq!(t.size(), 2);
        assert_eq!(next_prime(0), 2);
        assert_eq!(next_prime(65_536), 65_537);
        assert_eq!(next_prime(u32::MAX), LARGEST_U32_PRIME);
        assert!(is_prime(LARGEST_U32_PRIME));
    }

    #[test]
    fn weights_take_proportional_turns() {
        let mut pool = named(&["a", "b", "c"]);
        pool[0].weight = 2;
        let t = MaglevTable::build(&pool, &ids(3), 10_007).expect("three backends");
        let a = t.entries().iter().filter(|id| id.0 == 0).count();
        // Weight 2 of 4: half the table, give or take the +1 of the first iteration.
        assert!(a.abs_diff(10_007 / 2) <= 2, "a owns {a}");
    }
}
