//! Memory the kernel reads or writes on our behalf: anonymous mappings, and the entry array of a
//! provided-buffer ring (shared by the receive ring in `buf_ring` and the send rings in
//! `send_ring`).

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous, munmap};

/// The page size io_uring requires a buffer ring's entries to be aligned to.
pub const PAGE: usize = 4096;

/// One anonymous private mapping that unmaps itself.
///
/// `mmap` gives zero-filled pages that the kernel backs only when first touched, so a worker's
/// RSS grows with the buffers in use rather than by the whole region (64 MiB by default) at
/// start, and every byte is initialised memory as far as Rust is concerned.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    /// At least `len` bytes, rounded up to whole pages, page-aligned.
    pub fn new(len: usize) -> io::Result<Region> {
        let len = len.max(1).div_ceil(PAGE) * PAGE;
        // SAFETY: a fresh anonymous private mapping at an address the kernel chooses aliases
        // nothing; it is unmapped only in `drop`.
        let ptr = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Region { ptr, len })
    }

    /// The first byte (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is exactly the mapping made in `new`, unmapped only here.
        if let Err(err) = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) } {
            tracing::warn!(%err, "munmap of a buffer region failed");
        }
    }
}

/// The entry array of one provided-buffer ring: `entries` slots of 16 bytes at `base`, the
/// tail stored in the reserved field of entry 0 (the kernel's `io_uring_buf_ring` layout).
///
/// The kernel reads an entry only once a tail published with [`Entries::publish`] covers it,
/// and never writes entries, so writing ahead of the published tail races with nothing.
pub struct Entries {
    base: *mut BufRingEntry,
    mask: u16,
}

impl Entries {
    /// The entries at `base`, a power-of-two `count` of them.
    ///
    /// # Safety
    /// `base` must be page-aligned, valid for writes of `count` entries for as long as this
    /// value is used, and written by nothing else.
    pub unsafe fn new(base: *mut u8, count: u16) -> Entries {
        debug_assert!(count.is_power_of_two());
        Entries {
            base: base.cast(),
            mask: count - 1,
        }
    }

    /// The address to register with the kernel.
    pub fn addr(&self) -> u64 {
        self.base as u64
    }

    /// Fill the slot that ring index `index` maps to.
    pub fn set(&mut self, index: u16, addr: u64, len: u32, bid: u16) {
        let slot = usize::from(index & self.mask);
        // SAFETY: `slot <= mask < count`, so the entry lies inside the memory `new` was given;
        // the kernel reads it only once a published tail covers it (type docs), so no race.
        let entry = unsafe { &mut *self.base.wrapping_add(slot) };
        entry.set_addr(addr);
        entry.set_len(len);
        entry.set_bid(bid);
    }

    /// Make every entry before ring index `tail` visible to the kernel.
    pub fn publish(&self, tail: u16) {
        // SAFETY: `BufRingEntry::tail` points at entry 0's tail field: inside the memory `new`
        // was given, 2-byte aligned; the kernel reads it with an acquire load.
        let tail_ptr = unsafe { BufRingEntry::tail(self.base) }.cast_mut();
        // SAFETY: the pointer is valid and aligned (above), AtomicU16 has u16's layout, and all
        // access to the tail goes through atomics (ours, the kernel's smp_load_acquire).
        let atomic = unsafe { AtomicU16::from_ptr(tail_ptr) };
        atomic.store(tail, Ordering::Release);
    }
}
