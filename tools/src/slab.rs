//! A minimal slab: connections live at stable indices that double as mio tokens.

/// Stable-index storage with a free list, so tokens stay valid until their entry is removed.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// The index the next [`Slab::insert`] will use, so a caller can register a token first.
    pub(crate) fn vacant_key(&self) -> usize {
        self.free.last().copied().unwrap_or(self.entries.len())
    }

    /// Stores `value` and returns its index.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            self.entries[i] = Some(value);
            i
        } else {
            self.entries.push(Some(value));
            self.entries.len() - 1
        }
    }

    /// Removes and returns the entry at `i`, if any.
    pub(crate) fn remove(&mut self, i: usize) -> Option<T> {
        let v = self.entries.get_mut(i)?.take()?;
        self.free.push(i);
        self.len -= 1;
        Some(v)
    }

    /// The entry at `i`, if any.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.entries.get_mut(i)?.as_mut()
    }

    /// Number of occupied entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Indices of all occupied entries.
    pub(crate) fn keys(&self) -> Vec<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|_| i))
            .collect()
    }
}
