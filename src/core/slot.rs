//! A slab of slots tagged with generations, and the packing of `user_data`.
//!
//! A slot's generation advances every time it is freed, so a [`SlotKey`] taken before the free
//! no longer matches afterwards: a late completion for a closed connection is recognised and
//! dropped instead of touching the connection that reused the slot.

/// Generations are 24 bits wide so that a key fits into `user_data` next to an op code.
pub const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

/// Names one occupant of one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotKey {
    index: u32,
    generation: u32,
}

impl SlotKey {
    /// The slot's position in the table.
    pub fn index(self) -> u32 {
        self.index
    }
    /// The occupancy this key names (24 bits).
    pub fn generation(self) -> u32 {
        self.generation
    }
}

enum Entry<T> {
    Occupied {
        generation: u32,
        value: T,
    },
    Vacant {
        generation: u32,
        next_free: Option<u32>,
    },
}

/// A slab whose keys go stale when their slot is freed.
pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    free_head: Option<u32>,
    len: usize,
}

impl<T> std::fmt::Debug for Slab<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slab")
            .field("len", &self.len)
            .field("capacity", &self.entries.len())
            .finish()
    }
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Slab<T> {
    /// An empty slab.
    pub fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free_head: None,
            len: 0,
        }
    }

    /// Occupied slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Store `value` and return its key. Freed slots are reused first (LIFO, cache-warm).
    pub fn insert(&mut self, value: T) -> SlotKey {
        self.len += 1;
        if let Some(index) = self.free_head {
            let entry = &mut self.entries[index as usize];
            let (generation, next_free) = match entry {
                Entry::Vacant {
                    generation,
                    next_free,
                } => (*generation, *next_free),
                // The free list only ever links vacant entries.
                Entry::Occupied { .. } => unreachable!("free list points at an occupied slot"),
            };
            *entry = Entry::Occupied { generation, value };
            self.free_head = next_free;
            return SlotKey { index, generation };
        }
        let index = u32::try_from(self.entries.len()).expect("more than 2^32 slots");
        self.entries.push(Entry::Occupied {
            generation: 0,
            value,
        });
        SlotKey {
            index,
            generation: 0,
        }
    }

    /// The value `key` names, unless its slot was freed since.
    pub fn get(&self, key: SlotKey) -> Option<&T> {
        match self.entries.get(key.index as usize)? {
            Entry::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// Mutable access to the value `key` names, unless its slot was freed since.
    pub fn get_mut(&mut self, key: SlotKey) -> Option<&mut T> {
        match self.entries.get_mut(key.index as usize)? {
            Entry::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// Free the slot and return its value; the key and every copy of it go stale.
    pub fn remove(&mut self, key: SlotKey) -> Option<T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        match entry {
            Entry::Occupied { generation, .. } if *generation == key.generation => {}
            _ => return None,
        }
        let next = Entry::Vacant {
            generation: (key.generation + 1) & GENERATION_MASK,
            next_free: self.free_head,
        };
        let Entry::Occupied { value, .. } = std::mem::replace(entry, next) else {
            unreachable!("checked occupied just above")
        };
        self.free_head = Some(key.index);
        self.len -= 1;
        Some(value)
    }

    /// Every occupied slot's key, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = SlotKey> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match entry {
                Entry::Occupied { generation, .. } => Some(SlotKey {
                    index: index as u32,
                    generation: *generation,
                }),
                Entry::Vacant { .. } => None,
            })
    }
}

/// `user_data` of a submission: operation (8 bits) · generation (24) · slot (32).
///
/// Decoding never fails: it yields whatever op code and key were packed, and the caller checks
/// the key against the slab, which rejects stale generations and out-of-range slots alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserData(pub u64);

impl UserData {
    /// Pack an op code and a connection key.
    pub fn new(op: u8, key: SlotKey) -> Self {
        UserData(
            (u64::from(op) << 56)
                | (u64::from(key.generation & GENERATION_MASK) << 32)
                | u64::from(key.index),
        )
    }

    /// A value with no connection, for ring-internal entries (wake-ups, timeouts, cancels).
    pub fn internal(op: u8) -> Self {
        Self::internal_indexed(op, u32::MAX)
    }

    /// A value with no connection but an index of the engine's own (a listener number, say).
    /// It carries the highest generation, which a slab slot reaches only after 2^24 reuses, so
    /// [`UserData::key`] of it names no live connection in practice; engines dispatch on
    /// [`UserData::op`] first and never look such a value up in the slab.
    pub fn internal_indexed(op: u8, index: u32) -> Self {
        UserData((u64::from(op) << 56) | (u64::from(GENERATION_MASK) << 32) | u64::from(index))
    }

    /// The op code.
    pub fn op(self) -> u8 {
        (self.0 >> 56) as u8
    }

    /// The connection key (may be stale or internal; check it against the slab).
    pub fn key(self) -> SlotKey {
        SlotKey {
            index: self.0 as u32,
            generation: ((self.0 >> 32) as u32) & GENERATION_MASK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_are_rejected_after_reuse() {
        let mut slab = Slab::new();
        let a = slab.insert("a");
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b");
        assert_eq!(a.index(), b.index(), "the freed slot is reused");
        assert_ne!(a.generation(), b.generation());
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.len(), 1);
    }

    #[test]
    fn generation_wraps_within_24_bits() {
        let mut slab = Slab::new();
        let mut key = slab.insert(0u32);
        for i in 0..(1u32 << GENERATION_BITS) + 3 {
            slab.remove(key).expect("key is current");
            key = slab.insert(i);
            assert!(key.generation() <= GENERATION_MASK);
        }
        assert_eq!(key.index(), 0);
    }

    #[test]
    fn user_data_round_trips() {
        let mut slab = Slab::new();
        for _ in 0..5 {
            let k = slab.insert(());
            slab.remove(k);
        }
        let key = slab.insert(());
        for op in [0u8, 1, 77, 255] {
            let ud = UserData::new(op, key);
            assert_eq!(ud.op(), op);
            assert_eq!(ud.key(), key);
        }
        let internal = UserData::internal(9);
        assert_eq!(internal.op(), 9);
        assert!(slab.get(internal.key()).is_none());
    }
}
