//! Spill buffers: one page of a direction's own, for when the shared receive buffers run
//! short.
//!
//! The worker's provided buffers are shared by all its connections, and a client that does not
//! read keeps what was received for it. However the share of each is bounded, enough such
//! clients arriving one after another can leave none free (each holds at least one). A direction
//! that holds no shared buffer then receives into a spill buffer instead of waiting for the
//! others to give some back: no connection waits on another's client. A direction has at most
//! one spill buffer at a time (it takes one only while it holds nothing), so spill memory is
//! bounded by the connections open, one page per direction, and is given back (unmapped) as soon
//! as its bytes are sent.
//!
//! Spill buffers are named by ids from [`SPILL_BASE`] up, above every shared buffer's id, so a
//! received chunk names its buffer the same way whichever kind it is.

use std::io;

use super::region::{PAGE, Region};

/// The first spill buffer id; shared buffer ids are below it (at most 32,768 of them).
pub const SPILL_BASE: u16 = 1 << 15;
/// Bytes in a spill buffer.
pub const SPILL_SIZE: u32 = PAGE as u32;
/// Spill buffers kept mapped for reuse once given back.
const SPARE: usize = 64;

/// A worker's spill buffers.
#[derive(Default)]
pub struct Spill {
    /// By id − [`SPILL_BASE`]; `None` where the id is free.
    slots: Vec<Option<Region>>,
    /// Ids free for reuse, below `slots.len()`.
    free: Vec<u16>,
    /// Mapped buffers not in use.
    spare: Vec<Region>,
    /// In use now.
    in_use: u32,
    /// Taken since the start (for the worker's counters).
    taken: u64,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("in_use", &self.in_use)
            .field("taken", &self.taken)
            .finish()
    }
}

impl Spill {
    /// Whether `bid` names a spill buffer.
    pub fn owns(bid: u16) -> bool {
        bid >= SPILL_BASE
    }

    /// A spill buffer for a receive, or the error that kept one from being mapped (out of
    /// memory, or every id in use).
    pub fn take(&mut self) -> io::Result<u16> {
        let region = match self.spare.pop() {
            Some(region) => region,
            None => Region::new(SPILL_SIZE as usize)?,
        };
        let index = match self.free.pop() {
            Some(index) => index,
            None if self.slots.len() < usize::from(u16::MAX - SPILL_BASE) => {
                self.slots.push(None);
                (self.slots.len() - 1) as u16
            }
            None => {
                self.spare.push(region);
                return Err(io::Error::other("every spill buffer id is in use"));
            }
        };
        self.slots[usize::from(index)] = Some(region);
        self.in_use += 1;
        self.taken += 1;
        Ok(SPILL_BASE + index)
    }

    /// The buffer's first byte, or `None` for an id not in use.
    pub fn start(&self, bid: u16) -> Option<*mut u8> {
        let index = usize::from(bid.checked_sub(SPILL_BASE)?);
        self.slots.get(index)?.as_ref().map(Region::as_ptr)
    }

    /// Give `bid` back: kept for reuse, or unmapped beyond [`SPARE`].
    pub fn give_back(&mut self, bid: u16) {
        let Some(index) = bid.checked_sub(SPILL_BASE) else {
            return;
        };
        let Some(region) = self
            .slots
            .get_mut(usize::from(index))
            .and_then(Option::take)
        else {
            return;
        };
        self.free.push(index);
        self.in_use -= 1;
        if self.spare.len() < SPARE {
            self.spare.push(region);
        }
    }

    /// In use now.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Taken since the start.
    pub fn taken(&self) -> u64 {
        self.taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reused_and_buffers_are_distinct() {
        let mut spill = Spill::default();
        let a = spill.take().expect("a");
        let b = spill.take().expect("b");
        assert!(Spill::owns(a) && Spill::owns(b) && !Spill::owns(SPILL_BASE - 1));
        assert_ne!(spill.start(a), spill.start(b));
        assert_eq!(spill.in_use(), 2);
        spill.give_back(a);
        assert_eq!(spill.start(a), None, "a given-back id names nothing");
        spill.give_back(a);
        assert_eq!(spill.in_use(), 1, "a second give-back is ignored");
        let c = spill.take().expect("c");
        assert_eq!(c, a, "the id is reused");
        assert_eq!(spill.taken(), 3);
    }
}
