//! Receive buffers: a provided-buffer ring (5.19) or, as the fallback, a plain buffer pool.
//!
//! Either way a worker owns `count` buffers of `size` bytes in one allocation, and a buffer is
//! named by its id (`bid`). A connection holds a buffer only while received bytes wait to be
//! sent, so an idle connection holds none.
//!
//! With the ring, the kernel picks a free buffer when data arrives (`IOSQE_BUFFER_SELECT`) and
//! names it in the completion; giving a buffer back means writing its entry at the ring's tail
//! and publishing the tail with a release store. With the pool, the engine picks the buffer
//! before submitting a plain receive into it.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// Buffer group id of every worker's ring (each worker has its own io_uring instance).
pub const GROUP: u16 = 0;

const PAGE: usize = 4096;

/// One page-aligned allocation that frees itself.
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Region {
    /// Zeroed memory: for the ring entries, which the kernel reads.
    fn zeroed(len: usize) -> io::Result<Region> {
        Self::allocate(len, true)
    }

    /// Uninitialised memory: for buffer data, which only the kernel writes and user space
    /// reads only where a completion said the kernel wrote. Not zeroing it matters: a large
    /// allocation is mapped lazily, so a worker's RSS grows only with the buffers in use
    /// instead of by the whole region (64 MiB by default) at start.
    fn uninit(len: usize) -> io::Result<Region> {
        Self::allocate(len, false)
    }

    fn allocate(len: usize, zeroed: bool) -> io::Result<Region> {
        let layout = Layout::from_size_align(len.max(1), PAGE)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer size overflow"))?;
        let ptr = if zeroed {
            // SAFETY: the layout has a non-zero size (at least 1 byte, see above).
            unsafe { alloc_zeroed(layout) }
        } else {
            // SAFETY: as above.
            unsafe { alloc(layout) }
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Region { ptr, layout })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this exact layout and is freed only here.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Try registering a tiny ring, to learn whether the kernel has provided-buffer rings.
pub fn probe(ring: &IoUring) -> bool {
    let Ok(region) = Region::zeroed(PAGE) else {
        return false;
    };
    // SAFETY: the region is page-aligned and holds 8 entries of 16 bytes; it is unregistered
    // below, before the region is freed at the end of this function.
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(region.ptr.as_ptr() as u64, 8, 7, 0)
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
}

enum Kind {
    /// The kernel picks; `tail` is our copy of the ring's tail.
    Ring {
        entries: Region,
        tail: u16,
        mask: u16,
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
            .finish()
    }
}

impl Buffers {
    /// `count` buffers of `size` bytes registered as a provided-buffer ring with `ring`.
    /// `count` must be a power of two no larger than 32768.
    ///
    /// The ring and its buffers must outlive every operation that may select from them: the
    /// worker drops `Buffers` only after its io_uring instance, and only once no receive is
    /// in flight.
    pub fn ring(ring: &IoUring, count: u16, size: u32) -> io::Result<Buffers> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two up to 32768",
            ));
        }
        let entries = Region::zeroed(usize::from(count) * std::mem::size_of::<BufRingEntry>())?;
        let data = Region::uninit(usize::from(count) * size as usize)?;
        // SAFETY: `entries` is page-aligned and sized for `count` entries. It stays registered
        // until the io_uring instance is dropped; `Buffers` (which owns the region) is dropped
        // after the instance (field order in the worker), so the kernel never sees freed memory.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.ptr.as_ptr() as u64,
                count,
                GROUP,
                0,
            )?;
        }
        let mut buffers = Buffers {
            data,
            size,
            count,
            kind: Kind::Ring {
                entries,
                tail: 0,
                mask: count - 1,
            },
            held: u32::from(count),
        };
        for bid in 0..count {
            buffers.give_back(bid);
        }
        Ok(buffers)
    }

    /// `count` buffers of `size` bytes handed out by the engine itself.
    pub fn pool(count: u16, size: u32) -> io::Result<Buffers> {
        Ok(Buffers {
            data: Region::uninit(usize::from(count) * size as usize)?,
            size,
            count,
            kind: Kind::Pool {
                free: (0..count).rev().collect(),
            },
            held: 0,
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

    /// True when at least one buffer is free for a receive.
    pub fn any_free(&self) -> bool {
        self.held < u32::from(self.count)
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
        }
    }

    fn start(&self, bid: u16) -> *mut u8 {
        // `bid < count` is checked by every caller; the offset stays inside the region.
        self.data
            .ptr
            .as_ptr()
            .wrapping_add(usize::from(bid) * self.size as usize)
    }

    /// The whole of buffer `bid`, for submitting a receive into it (pool only).
    ///
    /// The pointer stays valid until the worker drops `Buffers`; the engine writes to it only
    /// through the kernel, between `take` and `give_back`.
    pub fn recv_target(&self, bid: u16) -> (*mut u8, u32) {
        debug_assert!(bid < self.count);
        (self.start(bid.min(self.count - 1)), self.size)
    }

    /// Bytes `from..to` of buffer `bid`, which the caller holds (it came from a completion or
    /// from `take`, and has not been given back).
    pub fn bytes(&self, bid: u16, from: u32, to: u32) -> &[u8] {
        let to = to.min(self.size);
        let from = from.min(to);
        let bid = bid.min(self.count - 1);
        let start = self.start(bid).wrapping_add(from as usize);
        // SAFETY: the range lies inside buffer `bid` (clamped above), which lies inside the
        // region. The caller holds `bid`, so the kernel is not writing to it: a buffer is only
        // written by a receive that selected it (ring) or that was submitted with it (pool), and
        // that receive has completed.
        unsafe { std::slice::from_raw_parts(start, (to - from) as usize) }
    }

    /// Give buffer `bid` back for new receives.
    pub fn give_back(&mut self, bid: u16) {
        if bid >= self.count {
            return;
        }
        self.held = self.held.saturating_sub(1);
        let addr = self.start(bid) as u64;
        let size = self.size;
        match &mut self.kind {
            Kind::Pool { free } => free.push(bid),
            Kind::Ring {
                entries,
                tail,
                mask,
            } => {
                let base = entries.ptr.as_ptr().cast::<BufRingEntry>();
                let slot = usize::from(*tail & *mask);
                // SAFETY: `slot < count`, so the entry lies inside the region. Entries between
                // the kernel's head and our tail are not read by the kernel until the tail store
                // below publishes them, so writing this one races with nothing.
                let entry = unsafe { &mut *base.wrapping_add(slot) };
                entry.set_addr(addr);
                entry.set_len(size);
                entry.set_bid(bid);
                *tail = tail.wrapping_add(1);
                // SAFETY: `BufRingEntry::tail` points at the tail field inside entry 0, which is
                // inside the region and 2-byte aligned; the kernel reads it with an acquire load.
                let tail_ptr = unsafe { BufRingEntry::tail(base) }.cast_mut();
                // SAFETY: the pointer is valid and aligned (above); AtomicU16 has the same layout
                // as u16, and all access to this field goes through atomics (ours and the
                // kernel's smp_load_acquire).
                let atomic = unsafe { AtomicU16::from_ptr(tail_ptr) };
                atomic.store(*tail, Ordering::Release);
            }
        }
    }
}
