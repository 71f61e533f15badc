//! How many free receive buffers the kernel sees at once, so that it receives into buffers
//! that are still in the CPU's caches.
//!
//! A provided-buffer ring is first in, first out: the kernel takes buffers from its head and
//! the engine gives them back at its tail. With every free buffer in the ring (4,096 × 16 KiB,
//! 64 MiB by default) a buffer given back is received into again only after all the others,
//! so every receive writes to memory that left the caches (and the TLB) long ago: with 64-byte
//! requests, the kernel's copy into the buffer took 3.5–7% of the worker's CPU where the copy
//! out of it, into the backend's socket, took under 1%.
//!
//! So the ring holds only a *window* of the free buffers, sized to what the kernel takes
//! between two turns of the worker's loop, and the rest wait on a stack, the most recently
//! given back on top. Once a turn, the window is topped up from the top of the stack: the
//! buffers the kernel gets next are the ones that were in use a moment ago. The window follows
//! the load: twice the most taken in a recent turn, at least [`MIN_WINDOW`], doubled at once
//! when a receive found the ring empty (`ENOBUFS`), and shrinking by a sixteenth a turn.
//!
//! This module only counts; `buf_ring` moves the buffers.

/// The smallest window: more than a turn of one busy stream takes (a 16 KiB buffer each
/// 8 µs at 2 GB/s), and 1 MiB of 16 KiB buffers, a core's L2 cache here.
pub const MIN_WINDOW: u16 = 64;

/// How fast a busy turn is forgotten: each turn, the memory of it and the window lose 1/16
/// (about half in 11 turns).
const DECAY_SHIFT: u32 = 4;

/// The window's accounting for one ring of `count` buffers.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Buffers in the ring now, not yet taken by the kernel.
    provided: u16,
    /// How many the ring should hold after the next top-up.
    target: u16,
    /// The most taken in one turn lately (decaying).
    recent: u16,
    /// Taken since the last top-up.
    this_turn: u16,
    count: u16,
}

impl Window {
    /// A window over `count` buffers, none provided yet.
    pub fn new(count: u16) -> Window {
        Window {
            provided: 0,
            target: MIN_WINDOW.min(count),
            recent: 0,
            this_turn: 0,
            count,
        }
    }

    /// Whether a buffer given back now goes straight into the ring (it is below its target)
    /// rather than onto the stack.
    pub fn has_room(&self) -> bool {
        self.provided < self.target
    }

    /// One buffer went into the ring.
    pub fn provided(&mut self) {
        self.provided = self.provided.saturating_add(1).min(self.count);
    }

    /// The kernel took one buffer from the ring (a completion named it).
    pub fn taken(&mut self) {
        self.provided = self.provided.saturating_sub(1);
        self.this_turn = self.this_turn.saturating_add(1);
    }

    /// A receive found the ring empty: double the window now.
    pub fn ran_dry(&mut self) {
        self.target = self.target.saturating_mul(2).min(self.count);
        self.recent = self.recent.max(self.target / 2);
    }

    /// The end of a turn: learn from it and return how many buffers to move from the stack
    /// into the ring now.
    pub fn end_turn(&mut self) -> u16 {
        let faded = self.recent - (self.recent >> DECAY_SHIFT);
        self.recent = faded.max(self.this_turn);
        self.this_turn = 0;
        let wanted = self.recent.saturating_mul(2).max(MIN_WINDOW);
        // Grow at once, shrink by 1/16 a turn; the ring itself shrinks only as the kernel
        // drains it (nothing is taken back).
        let shrunk = self.target - (self.target >> DECAY_SHIFT);
        self.target = wanted.max(shrunk).min(self.count);
        self.target.saturating_sub(self.provided)
    }

    /// Buffers in the ring now, by this count.
    #[cfg(test)]
    pub fn in_ring(&self) -> u16 {
        self.provided
    }

    /// The window's current target.
    #[cfg(test)]
    pub fn target(&self) -> u16 {
        self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Provide up to the target, as `buf_ring` does from its stack.
    fn top_up(window: &mut Window, stack: &mut u16) {
        let n = window.end_turn().min(*stack);
        for _ in 0..n {
            window.provided();
        }
        *stack -= n;
    }

    #[test]
    fn starts_small_and_fills_from_the_stack() {
        let mut w = Window::new(4096);
        let mut stack = 4096;
        top_up(&mut w, &mut stack);
        assert_eq!(w.in_ring(), MIN_WINDOW);
        assert_eq!(stack, 4096 - MIN_WINDOW);
        assert!(
            !w.has_room(),
            "a full window sends buffers given back to the stack"
        );
    }

    #[test]
    fn follows_a_busy_turn_at_once_and_forgets_it_slowly() {
        let mut w = Window::new(4096);
        let mut stack = 4096;
        top_up(&mut w, &mut stack);
        // A turn in which the kernel took the whole window and more came back.
        for _ in 0..MIN_WINDOW {
            w.taken();
        }
        top_up(&mut w, &mut stack);
        assert_eq!(w.target(), 2 * MIN_WINDOW);
        assert_eq!(w.in_ring(), 2 * MIN_WINDOW);
        // Quiet turns: the target falls, by a sixteenth a turn at most, never below the minimum.
        let mut last = w.target();
        for _ in 0..200 {
            top_up(&mut w, &mut stack);
            assert!(w.target() <= last && w.target() >= last - last / 16);
            last = w.target();
        }
        assert_eq!(w.target(), MIN_WINDOW);
        // Nothing is taken back from the ring: it holds what it held until the kernel takes it.
        assert_eq!(w.in_ring(), 2 * MIN_WINDOW);
    }

    #[test]
    fn an_empty_ring_doubles_the_window_up_to_every_buffer() {
        let mut w = Window::new(256);
        for expected in [128, 256, 256] {
            w.ran_dry();
            assert_eq!(w.target(), expected);
        }
        // The turn after, the window shrinks by a sixteenth at most, and the ring is filled to it.
        let mut stack = 256;
        top_up(&mut w, &mut stack);
        assert_eq!(w.target(), 240);
        assert_eq!(w.in_ring(), 240);
        assert_eq!(stack, 16);
    }

    #[test]
    fn a_small_ring_is_all_window() {
        let mut w = Window::new(16);
        let mut stack = 16;
        top_up(&mut w, &mut stack);
        assert_eq!(w.in_ring(), 16);
        for _ in 0..100 {
            w.taken();
        }
        assert_eq!(w.in_ring(), 0, "never below zero");
        for _ in 0..100 {
            w.provided();
        }
        assert_eq!(w.in_ring(), 16, "never above the ring");
    }
}
