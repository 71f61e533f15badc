//! Send rings for send bundles (Linux 6.10): a small provided-buffer ring per sending direction.
//!
//! A bundle send (`IORING_OP_SEND` with `IORING_RECVSEND_BUNDLE`) sends, in one request, every
//! buffer published in its group's ring, in ring order, and advances the ring's head past them.
//! So a group is a send *queue*: two directions sharing one would interleave their bytes. Each
//! direction that is sending leases a ring of its own from the worker's pool and gives it back
//! as soon as everything it queued has been sent, so an idle connection holds no ring and the
//! pool is bounded by the number of directions sending at once, not by connections.
//!
//! A ring's entries name received bytes in place (an address inside the receive buffers and a
//! length), so bundling copies nothing. The rings live in one mapping of `tuning.send_rings`
//! pages, touched (and registered, one `io_uring_register` each) only when first leased.

use std::io;
use std::num::NonZeroU16;

use io_uring::IoUring;

use super::region::{Entries, PAGE, Region};
use crate::config::limits::MAX_SEND_RINGS;

/// Entries per send ring: above the 16 buffers a direction may hold before its receive pauses
/// (`COPY_BUFFERS`), with room for the few a multishot receive delivers before its cancel lands.
/// Chunks beyond this wait in the direction's queue and enter the ring as it drains.
pub const SEND_RING_ENTRIES: u16 = 32;

/// Buffer group of the first send ring; group 0 is the receive ring (`buf_ring::GROUP`).
const FIRST_GROUP: u16 = 1;

// Each ring's entries (16 bytes each) fit in the one page it is given.
const _: () = assert!(SEND_RING_ENTRIES as usize * 16 <= PAGE);

/// A leased send ring, as a direction holds it: two bytes naming the ring in its worker's
/// [`SendRings`], so that the per-connection state stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendRingId(NonZeroU16);

impl SendRingId {
    fn index(self) -> usize {
        usize::from(self.0.get() - 1)
    }
}

/// One send ring.
///
/// `pending` entries, ending at `tail`, are published and not yet reported sent: they name the
/// first `pending` chunks of the direction's queue, in order. The kernel's head is therefore
/// `tail - pending` ([`SendRing::head`]), as long as every completion is accounted with
/// [`SendRing::consumed`]. Each entry's buffer id is its ring index, and a bundle's completion
/// names the id of the first entry it took, so the engine can check that the kernel's head is
/// where it expects.
#[derive(Debug)]
pub struct SendRing {
    group: u16,
    entries: EntriesDebug,
    tail: u16,
    pending: u16,
}

/// `Entries` holds a raw pointer; this wrapper only gives it a `Debug` for `ConnIo`.
struct EntriesDebug(Entries);

impl std::fmt::Debug for EntriesDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entries({:#x})", self.0.addr())
    }
}

impl SendRing {
    /// The buffer group a bundle send names.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Entries published and not yet reported sent.
    pub fn pending(&self) -> u16 {
        self.pending
    }

    /// The ring index of the first pending entry: where the kernel's head should be.
    pub fn head(&self) -> u16 {
        self.tail.wrapping_sub(self.pending)
    }

    /// Whether another entry fits.
    pub fn has_room(&self) -> bool {
        self.pending < SEND_RING_ENTRIES
    }

    /// Queue `bytes` behind the pending entries, under buffer id = its ring index; visible to
    /// the kernel after [`SendRing::publish`]. The bytes must stay untouched until a completion
    /// reports them sent (the direction holds their buffer until then). False when full.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if !self.has_room() || bytes.is_empty() {
            return false;
        }
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.entries
            .0
            .set(self.tail, bytes.as_ptr() as u64, len, self.tail);
        self.tail = self.tail.wrapping_add(1);
        self.pending += 1;
        true
    }

    /// Publish every pushed entry (one release store).
    pub fn publish(&self) {
        self.entries.0.publish(self.tail);
    }

    /// A completion reported the first `count` pending entries sent (the kernel advanced its
    /// head past them).
    pub fn consumed(&mut self, count: u16) {
        self.pending = self.pending.saturating_sub(count);
    }
}

/// A worker's send rings: every registered one, by index, and which are free.
pub struct SendRings {
    memory: Region,
    rings: Vec<SendRing>,
    free: Vec<SendRingId>,
    registered: u16,
    /// Most rings this worker will register (lowered if the kernel refuses one).
    cap: u16,
    /// Leases refused because every ring was in use.
    exhausted: u64,
    /// Rings that could not be reset after a close and are no longer used.
    retired: u16,
}

impl std::fmt::Debug for SendRings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRings")
            .field("registered", &self.registered)
            .field("free", &self.free.len())
            .field("exhausted", &self.exhausted)
            .finish()
    }
}

impl SendRings {
    /// Room for `cap` rings (`tuning.send_rings`, at most `limits::MAX_SEND_RINGS`); none
    /// registered yet. Directions sending at the same moment beyond `cap` fall back to
    /// `sendmsg` (counted, never an error).
    ///
    /// Every ring stays registered until the io_uring instance is dropped, so the worker drops
    /// `SendRings` only after its instance, as it does `Buffers`.
    pub fn new(cap: u16) -> io::Result<SendRings> {
        let cap = cap.min(u16::try_from(MAX_SEND_RINGS).unwrap_or(u16::MAX));
        Ok(SendRings {
            memory: Region::new(usize::from(cap.max(1)) * PAGE)?,
            rings: Vec::new(),
            free: Vec::new(),
            registered: 0,
            cap,
            exhausted: 0,
            retired: 0,
        })
    }

    /// Rings registered so far.
    pub fn registered(&self) -> u16 {
        self.registered
    }

    /// Leases refused because every ring was in use.
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }

    /// Rings currently leased to directions (for leak checks).
    pub fn leased(&self) -> usize {
        usize::from(self.registered - self.retired).saturating_sub(self.free.len())
    }

    /// The leased ring `id` names.
    pub fn get(&self, id: SendRingId) -> &SendRing {
        &self.rings[id.index()]
    }

    /// The leased ring `id` names, to queue entries or account a completion.
    pub fn get_mut(&mut self, id: SendRingId) -> &mut SendRing {
        &mut self.rings[id.index()]
    }

    /// A ring with nothing pending, or `None` when all `cap` are leased (the caller falls back
    /// to `sendmsg`).
    pub fn lease(&mut self, ring: &IoUring) -> Option<SendRingId> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        if self.registered >= self.cap {
            self.exhausted += 1;
            return None;
        }
        let index = self.registered;
        let base = self.memory.as_ptr().wrapping_add(usize::from(index) * PAGE);
        // SAFETY: page `index < cap` is page-aligned, holds the 32 entries (512 bytes), and goes
        // to this `Entries` alone (`registered` only grows).
        let entries = unsafe { Entries::new(base, SEND_RING_ENTRIES) };
        let group = FIRST_GROUP + index;
        // SAFETY: the page outlives its registration: `SendRings` is dropped after the io_uring
        // instance (see `new`).
        let result = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.addr(),
                SEND_RING_ENTRIES,
                group,
                0,
            )
        };
        if let Err(err) = result {
            tracing::warn!(%err, group, "cannot register a send ring; sending with sendmsg");
            self.cap = self.registered;
            return None;
        }
        self.registered += 1;
        self.rings.push(SendRing {
            group,
            entries: EntriesDebug(entries),
            tail: 0,
            pending: 0,
        });
        // `registered` is at most MAX_SEND_RINGS, so the id fits and is not zero.
        NonZeroU16::new(self.registered).map(SendRingId)
    }

    /// Take back a leased ring. One with entries still pending (its bundle ended early) is
    /// re-registered first, which resets the kernel's head to match an empty ring; one that
    /// cannot be is retired.
    pub fn give_back(&mut self, ring: &IoUring, id: SendRingId) {
        self.take_back(ring, id, false);
    }

    /// Take back the ring of a connection that closed while holding it, resetting it whatever
    /// its count says: completions of a closing connection are not checked against the ring
    /// (its bytes no longer matter), so the kernel's head is not known to match `tail`, and a
    /// stale entry must never reach the next lessee's socket.
    pub fn give_back_after_close(&mut self, ring: &IoUring, id: SendRingId) {
        self.take_back(ring, id, true);
    }

    fn take_back(&mut self, ring: &IoUring, id: SendRingId, force_reset: bool) {
        let send_ring = &mut self.rings[id.index()];
        if send_ring.pending > 0 || force_reset {
            let reset = ring
                .submitter()
                .unregister_buf_ring(send_ring.group)
                .and_then(|()| {
                    send_ring.tail = 0;
                    send_ring.pending = 0;
                    send_ring.publish();
                    // SAFETY: as in `lease`: the same page, outliving its registration.
                    unsafe {
                        ring.submitter().register_buf_ring_with_flags(
                            send_ring.entries.0.addr(),
                            SEND_RING_ENTRIES,
                            send_ring.group,
                            0,
                        )
                    }
                });
            if let Err(err) = reset {
                tracing::warn!(%err, group = send_ring.group, "cannot reset a send ring; retiring it");
                self.retired += 1;
                return;
            }
        }
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests;
