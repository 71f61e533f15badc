//! Shut down the write side of a socket (half-close).

use std::io;
use std::os::fd::BorrowedFd;

use io_uring::{opcode, squeue};

use super::fixed;

/// `shutdown(SHUT_WR)`: the peer reads end of stream once everything sent has arrived.
#[derive(Clone, Copy, Debug)]
pub struct Shutdown<'a> {
    pub socket: BorrowedFd<'a>,
}

impl Shutdown<'_> {
    /// `IORING_OP_SHUTDOWN` (5.11).
    pub fn sqe(&self) -> squeue::Entry {
        opcode::Shutdown::new(fixed(self.socket), libc::SHUT_WR).build()
    }

    /// `shutdown(2)`.
    pub fn run(&self) -> io::Result<()> {
        Ok(rustix::net::shutdown(
            self.socket,
            rustix::net::Shutdown::Write,
        )?)
    }
}
