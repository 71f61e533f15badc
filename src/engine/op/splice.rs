//! Move bytes between a socket and a pipe without copying them through user space.

use std::io;
use std::os::fd::BorrowedFd;

use io_uring::{opcode, squeue};
use rustix::pipe::SpliceFlags;

use super::fixed;

/// Splice up to `len` bytes from `from` to `to` (one of them a pipe). Always non-blocking
/// (`SPLICE_F_NONBLOCK`): io_uring runs every splice on an io-wq thread, and a splice that
/// waited would park that thread for as long as the peer is silent. Readiness is awaited with a
/// poll instead, and `EAGAIN` sends the engine back to it.
#[derive(Clone, Copy, Debug)]
pub struct Splice<'a> {
    pub from: BorrowedFd<'a>,
    pub to: BorrowedFd<'a>,
    pub len: u32,
}

impl Splice<'_> {
    /// `IORING_OP_SPLICE` (5.7).
    pub fn sqe(&self) -> squeue::Entry {
        opcode::Splice::new(fixed(self.from), -1, fixed(self.to), -1, self.len)
            .flags(libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE)
            .build()
    }

    /// `splice(2)`; 0 from a socket means end of stream.
    pub fn run(&self) -> io::Result<usize> {
        Ok(rustix::pipe::splice(
            self.from,
            None,
            self.to,
            None,
            self.len as usize,
            SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
        )?)
    }
}
