//! Receive buffers: a provided-buffer ring (5.19) or, as the fallback, a plain buffer pool.
//!
//! Either way a worker owns `count` buffers of `size` bytes in one allocation, and a buffer is
//! named by its id (`bid`). A connection holds a buffer only while received bytes wait to be
//! sent, so an idle connection holds none.
//!
//! With the ring, the kernel picks a free buffer when data arrives (`IOSQE_BUFFER_SELECT`) and
//! names it in the completion; giving a buffer back means writing its entry at the ring's tail
//! and publishing the tail with a release store. The kernel reads no entry past its head until
//! that store, so writing entries races with nothing. With the pool, the engine picks the
//! buffer before submitting a plain receive into it.

use std::io;

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

use super::buf_window::Window;
use super::conn_io::Armed;
use super::region::{Entries, PAGE, Region};
use super::spill::{SPILL_SIZE, Spill};

/// Buffer group id of every worker's ring (each worker has its own io_uring instance).
pub const GROUP: u16 = 0;

/// Try registering a tiny ring, to learn whether the kernel has provided-buffer rings.
pub fn probe(ring: &IoUring) -> bool {
    let Ok(region) = Region::new(PAGE) else {
        return false;
    };
    // SAFETY: the region is page-aligned and holds 8 entries of 16 bytes; it is unregistered
    // below, before the region is freed at the end of this function.
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(region.as_ptr() as u64, 8, 7, 0)
            .is_ok()
    };
    if registered {
        let _ = ring.submitter().unregister_buf_ring(7);
    }
    registered
}

/// A worker's receive buffers.
pub struct Buffers {
    data: Region,
    size: u32,
    count: u16,
    kind: Kind,
    /// Buffers currently held by connections (for leak checks and metrics).
    held: u32,
    /// Receives in the kernel that may take ring buffers the engine has not seen yet.
    claims: Claims,
    /// A direction's own buffers, for when the shared ones run short.
    spill: Spill,
    /// Receives that found the ring empty (`ENOBUFS`).
    dry: u64,
}

/// Ring receives armed, by kind (see [`Buffers::arm`]).
#[derive(Clone, Copy, Debug, Default)]
struct Claims {
    /// Single receives of directions that hold buffers already: each takes one more when its
    /// data arrives.
    select: usize,
    /// Multishot receives: each may take a batch (see [`MULTISHOT_CLAIM`]).
    multishot: usize,
}

enum Kind {
    /// The kernel picks; `tail` is our copy of the ring's tail, ahead of the published one
    /// while `unpublished`.
    Ring {
        /// Keeps the entries' memory mapped.
        _memory: Region,
        entries: Entries,
        tail: u16,
        unpublished: bool,
        /// `hot_buffers`: how many free buffers the ring holds (see `buf_window`); `None`:
        /// every free buffer is in the ring.
        window: Option<Window>,
        /// Free buffers outside the window, the most recently given back last.
        spare: Vec<u16>,
    },
    /// We pick from a free list.
    Pool { free: Vec<u16> },
}

impl std::fmt::Debug for Buffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffers")
            .field("size", &self.size)
            .field("count", &self.count)
            .field("ring", &matches!(self.kind, Kind::Ring { .. }))
            .field("held", &self.held)
            .field("claims", &self.claims)
            .field("spill", &self.spill)
            .finish()
    }
}

impl Buffers {
    /// `count` buffers of `size` bytes registered as a provided-buffer ring with `ring`.
    /// `count` must be a power of two no larger than 32768.
    ///
    /// The ring and its buffers must outlive every operation that may select from them, and the
    /// region stays registered until the io_uring instance is dropped: the worker drops
    /// `Buffers` only after its io_uring instance (field order in the worker), and only once no
    /// receive is in flight, so the kernel never sees freed memory.
    ///
    /// With `hot`, the ring holds only a window of the free buffers, the most recently used
    /// first (see `buf_window`); without, all of them.
    pub fn ring(ring: &IoUring, count: u16, size: u32, hot: bool) -> io::Result<Buffers> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two up to 32768",
            ));
        }
        let memory = Region::new(usize::from(count) * std::mem::size_of::<BufRingEntry>())?;
        let data = Region::new(usize::from(count) * size as usize)?;
        // SAFETY: the region is page-aligned, sized for `count` entries, and only `entries`
        // writes to it.
        let entries = unsafe { Entries::new(memory.as_ptr(), count) };
        // SAFETY: the entries outlive their registration (`Buffers` is dropped after the
        // instance; see the doc above).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.addr(), count, GROUP, 0)?;
        }
        let mut buffers = Buffers {
            data,
            size,
            count,
            kind: Kind::Ring {
                _memory: memory,
                entries,
                tail: 0,
                unpublished: false,
                window: hot.then(|| Window::new(count)),
                spare: Vec::new(),
            },
            held: u32::from(count),
            claims: Claims::default(),
            spill: Spill::default(),
            dry: 0,
        };
        // Highest first, so that the stack hands out the lowest (the fewest pages touched).
        for bid in (0..count).rev() {
            buffers.give_back(bid);
        }
        buffers.publish();
        Ok(buffers)
    }

    /// `count` buffers of `size` bytes handed out by the engine itself.
    pub fn pool(count: u16, size: u32) -> io::Result<Buffers> {
        Ok(Buffers {
            data: Region::new(usize::from(count) * size as usize)?,
            size,
            count,
            kind: Kind::Pool {
                free: (0..count).rev().collect(),
            },
            held: 0,
            claims: Claims::default(),
            spill: Spill::default(),
            dry: 0,
        })
    }

    /// Bytes per buffer.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// True when the kernel selects buffers (a ring), false for the engine's own pool.
    pub fn is_ring(&self) -> bool {
        matches!(self.kind, Kind::Ring { .. })
    }

    /// Buffers currently held by connections.
    pub fn held(&self) -> u32 {
        self.held
    }

    /// Pool only: take a free buffer for a receive. `None` when all are held (back off).
    pub fn take(&mut self) -> Option<u16> {
        match &mut self.kind {
            Kind::Pool { free } => {
                let bid = free.pop()?;
                self.held += 1;
                Some(bid)
            }
            Kind::Ring { .. } => None,
        }
    }

    /// Ring only: the kernel handed `bid` to a completion; it is ours until given back.
    pub fn selected(&mut self, bid: u16) {
        if bid < self.count {
            self.held += 1;
            if let Kind::Ring {
                window: Some(window),
                ..
            } = &mut self.kind
            {
                window.taken();
            }
        }
    }

    /// Ring only: a receive found the ring empty (`ENOBUFS`). With a window, it grows, and
    /// the next [`Buffers::publish`] fills it from the buffers held back.
    pub fn ran_dry(&mut self) {
        self.dry += 1;
        if let Kind::Ring {
            window: Some(window),
            ..
        } = &mut self.kind
        {
            window.ran_dry();
        }
    }

    fn start(&self, bid: u16) -> *mut u8 {
        // `bid < count` is checked by every caller; the offset stays inside the region.
        self.data
            .as_ptr()
            .wrapping_add(usize::from(bid) * self.size as usize)
    }

    /// The whole of buffer `bid`, for submitting a receive into it (pool and spill buffers).
    ///
    /// The pointer stays valid until the worker drops `Buffers` (a spill buffer: until it is
    /// given back); the engine writes to it only through the kernel, between `take` (or
    /// `take_spill`) and `give_back`.
    pub fn recv_target(&self, bid: u16) -> (*mut u8, u32) {
        if Spill::owns(bid) {
            if let Some(start) = self.spill.start(bid) {
                return (start, SPILL_SIZE);
            }
        }
        debug_assert!(bid < self.count);
        (self.start(bid.min(self.count - 1)), self.size)
    }

    /// Bytes `from..to` of buffer `bid`, which the caller holds (it came from a completion or
    /// from `take`, and has not been given back). So the kernel is not writing to it: a buffer
    /// is only written by a receive that selected it (ring) or that was submitted with it
    /// (pool), and that receive has completed.
    pub fn bytes(&self, bid: u16, from: u32, to: u32) -> &[u8] {
        let (start, size) = match self.spill.start(bid) {
            Some(start) => (start, SPILL_SIZE),
            None => (self.start(bid.min(self.count - 1)), self.size),
        };
        let to = to.min(size);
        let from = from.min(to);
        let start = start.wrapping_add(from as usize);
        // SAFETY: the range lies in buffer `bid` (clamped above; a spill page stays mapped until
        // given back), which the caller holds, so no receive writes to it (see the doc above).
        unsafe { std::slice::from_raw_parts(start, (to - from) as usize) }
    }

    /// Make every buffer given back since the last call visible to the kernel: one release
    /// store of the ring's tail per loop turn instead of one per buffer. The worker calls this
    /// before it enters the kernel.
    ///
    /// With a window, it is first topped up from the buffers held back, the most recently
    /// given back first.
    pub fn publish(&mut self) {
        let (base, size) = (self.data.as_ptr(), self.size);
        if let Kind::Ring {
            entries,
            tail,
            unpublished,
            window,
            spare,
            ..
        } = &mut self.kind
        {
            if let Some(window) = window {
                for _ in 0..window.end_turn() {
                    let Some(bid) = spare.pop() else {
                        break;
                    };
                    let addr = base.wrapping_add(usize::from(bid) * size as usize) as u64;
                    provide(entries, tail, unpublished, (addr, size, bid));
                    window.provided();
                }
            }
            if *unpublished {
                entries.publish(*tail);
                *unpublished = false;
            }
        }
    }

    /// Free buffers, as far as the engine knows (ring: not held by any connection).
    pub fn free(&self) -> u32 {
        u32::from(self.count).saturating_sub(self.held)
    }

    /// A receive of kind `armed` went to the kernel: a ring receive claims buffers it may take
    /// before the engine sees them. Every [`Buffers::arm`] is matched by one
    /// [`Buffers::disarm`] when the receive's final completion arrives (or its connection is
    /// freed without it).
    pub fn arm(&mut self, armed: Armed) {
        match armed {
            Armed::SelectAnother => self.claims.select += 1,
            Armed::Multishot => self.claims.multishot += 1,
            Armed::No | Armed::Pooled | Armed::Select | Armed::Readable | Armed::Splice => {}
        }
    }

    /// The receive of kind `armed` has ended (see [`Buffers::arm`]).
    pub fn disarm(&mut self, armed: Armed) {
        match armed {
            Armed::SelectAnother => self.claims.select = self.claims.select.saturating_sub(1),
            Armed::Multishot => self.claims.multishot = self.claims.multishot.saturating_sub(1),
            Armed::No | Armed::Pooled | Armed::Select | Armed::Readable | Armed::Splice => {}
        }
    }

    /// A spill buffer for a direction that holds no shared one while they are short (see
    /// `spill`); given back with [`Buffers::give_back`] like any other.
    pub fn take_spill(&mut self) -> io::Result<u16> {
        self.spill.take()
    }

    /// Receives that found the ring empty since the start.
    pub fn dry(&self) -> u64 {
        self.dry
    }

    /// Spill buffers in use now, and taken since the start.
    pub fn spilled(&self) -> (u32, u64) {
        (self.spill.in_use(), self.spill.taken())
    }

    /// Multishot receives armed.
    pub fn multishot_armed(&self) -> usize {
        self.claims.multishot
    }

    /// Whether one more multishot receive may be armed while `armed` are: a multishot receive
    /// can take a batch of buffers before the engine sees any, so only while at least half
    /// the buffers are free, and each armed one counts as [`MULTISHOT_CLAIM`] buffers of the
    /// free half. Receives beyond that take one buffer per submission.
    pub fn multishot_room(&self, armed: usize) -> bool {
        let half = usize::from(self.count) / 2;
        let free = self.free() as usize;
        free >= half && (armed + 1) * MULTISHOT_CLAIM <= free - half
    }

    /// The one rule for whether a direction's receive may be (or stay) multishot, with
    /// `others` multishot receives armed besides its own: only at a full share (`most`), and
    /// for a direction that may be streaming only within [`Buffers::multishot_room`]; one
    /// that receives messages takes a buffer at a time anyway.
    pub fn may_multishot(&self, most: usize, streaming: bool, others: usize) -> bool {
        self.share(most) >= most && (!streaming || self.multishot_room(others))
    }

    /// How many buffers one direction may hold now before its receive pauses: `most` while
    /// at least half of them are free, then in proportion to what is free (`most × free /
    /// (count / 2)`, down to 0). Free here is what no single receive in the kernel has claimed
    /// (see [`Buffers::arm`]): each armed receive was allowed by the share of its moment, and
    /// without the claims a thousand of them arming together would each take a buffer the
    /// share had counted as free, and run the ring dry. Directions whose sink stopped draining (a client that does
    /// not read) keep what they hold, so as they pile up each gets less, and the buffers left
    /// free stay with the connections that move bytes: with `n` such directions each ends up
    /// near `2·most / (1 + 2·most·n / count)` and about `count / (1 + 2·most·n / count)`
    /// stay free (4,096 buffers, most 16: 400 stalled directions leave 1,023 free, 1,500
    /// leave 383; test `stalled_directions_leave_buffers_free`).
    /// See [`may_take_another`] for the direction that holds none.
    pub fn share(&self, most: usize) -> usize {
        let half = (usize::from(self.count) / 2).max(1);
        let free = (self.free() as usize).saturating_sub(self.claims.select);
        if free >= half {
            most
        } else {
            most * free / half
        }
    }

    /// Give buffer `bid` back for new receives (visible to the kernel after [`Buffers::publish`]).
    pub fn give_back(&mut self, bid: u16) {
        if Spill::owns(bid) {
            return self.spill.give_back(bid);
        }
        if bid >= self.count {
            return;
        }
        self.held = self.held.saturating_sub(1);
        let addr = self.start(bid) as u64;
        let size = self.size;
        match &mut self.kind {
            Kind::Pool { free } => free.push(bid),
            Kind::Ring {
                window: Some(window),
                spare,
                ..
            } if !window.has_room() => spare.push(bid),
            Kind::Ring {
                entries,
                tail,
                unpublished,
                window,
                ..
            } => {
                provide(entries, tail, unpublished, (addr, size, bid));
                if let Some(window) = window {
                    window.provided();
                }
            }
        }
    }
}

/// Write buffer `bid` (at `addr`, `size` bytes) at the ring's `tail` and move the tail on; the
/// kernel sees it after the next publish.
fn provide(entries: &mut Entries, tail: &mut u16, unpublished: &mut bool, buffer: (u64, u32, u16)) {
    let (addr, size, bid) = buffer;
    entries.set(*tail, addr, size, bid);
    *tail = tail.wrapping_add(1);
    *unpublished = true;
}

/// Buffers an armed multishot receive is assumed to take before the engine can stop it.
pub const MULTISHOT_CLAIM: usize = 16;

/// Whether a direction holding `held` buffers may receive into another, given the current
/// [`Buffers::share`]: below its share, or holding none at all (a direction that holds nothing
/// is never starved by the others' share).
pub fn may_take_another(held: usize, share: usize) -> bool {
    held == 0 || held < share
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOST: usize = 16;

    #[test]
    fn a_full_share_until_half_are_held_then_in_proportion_to_what_is_free() {
        let mut buffers = Buffers::pool(1024, 64).expect("a pool");
        assert_eq!(buffers.share(MOST), MOST);
        let mut taken = Vec::new();
        for _ in 0..512 {
            taken.push(buffers.take().expect("free buffers"));
        }
        assert_eq!(buffers.share(MOST), MOST, "exactly half free");
        for _ in 0..256 {
            taken.push(buffers.take().expect("free buffers"));
        }
        assert_eq!(buffers.share(MOST), MOST / 2, "a quarter free");
        while buffers.take().is_some() {}
        assert_eq!(buffers.share(MOST), 0, "none free");
        // Whatever the share, a direction holding nothing may take one.
        assert!(may_take_another(0, 0));
        assert!(!may_take_another(1, 1));
        assert!(may_take_another(1, 2));
    }

    #[test]
    fn multishot_receives_are_armed_only_within_the_free_half() {
        let mut buffers = Buffers::pool(1024, 64).expect("a pool");
        // 512 free above the half: room for 512 / 16 = 32 armed.
        assert!(buffers.multishot_room(31));
        assert!(!buffers.multishot_room(32));
        for _ in 0..256 {
            buffers.take().expect("free buffers");
        }
        assert!(buffers.multishot_room(15));
        assert!(!buffers.multishot_room(16));
        for _ in 0..256 {
            buffers.take().expect("free buffers");
        }
        assert!(!buffers.multishot_room(0), "none once half are held");
    }

    /// Issue 10, item 2 with 1,500 non-reading clients on one worker: every stalled
    /// direction armed a receive while its share allowed one more buffer, the data for all of
    /// them arrived together, and each took a buffer the share had counted as free: the ring
    /// ran dry and a well-behaved client never got its answer. With armed receives counted as
    /// claims the ring keeps buffers free, however the arming and the data interleave.
    #[test]
    fn receives_armed_together_never_run_the_ring_dry() {
        for stalled in [400usize, 1500, 3000] {
            let mut buffers = Buffers::pool(4096, 64).expect("a pool");
            let mut held = vec![0usize; stalled];
            let mut armed: Vec<Option<Armed>> = vec![None; stalled];
            for round in 0..64 {
                // Every direction without a receive arms one if its share allows, as
                // `copy_recv` does ...
                for (h, a) in held.iter().zip(armed.iter_mut()) {
                    if a.is_none() && may_take_another(*h, buffers.share(MOST)) {
                        let kind = if *h == 0 {
                            Armed::Select
                        } else {
                            Armed::SelectAnother
                        };
                        buffers.arm(kind);
                        *a = Some(kind);
                    }
                }
                // ... then data arrives for all of them at once.
                for (h, a) in held.iter_mut().zip(armed.iter_mut()) {
                    if let Some(kind) = a.take() {
                        buffers.disarm(kind);
                        assert!(
                            buffers.take().is_some(),
                            "{stalled} stalled directions ran the ring dry in round {round}"
                        );
                        *h += 1;
                    }
                }
            }
            let free = buffers.free();
            let least = if stalled <= 1500 { 256 } else { 1 };
            assert!(
                free >= least,
                "{stalled} stalled directions left {free} free"
            );
        }
    }

    /// The equilibrium stated in `share`'s documentation: stalled directions that keep what
    /// they hold and take more while below their share leave buffers free for the others.
    #[test]
    fn stalled_directions_leave_buffers_free() {
        for stalled in [100usize, 400, 1500] {
            let mut buffers = Buffers::pool(4096, 64).expect("a pool");
            let mut held = vec![0usize; stalled];
            loop {
                let mut took = false;
                for h in &mut held {
                    if may_take_another(*h, buffers.share(MOST)) && buffers.take().is_some() {
                        *h += 1;
                        took = true;
                    }
                }
                if !took {
                    break;
                }
            }
            let free = buffers.free();
            assert!(free >= 300, "{stalled} stalled directions left {free} free");
        }
    }
}
