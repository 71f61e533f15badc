//! Connect a backend socket.

use std::io;
use std::os::fd::BorrowedFd;

use io_uring::{opcode, squeue};
use socket2::SockAddr;

use super::fixed;

/// Connect `socket` to `addr`. The address must outlive the submission (the engine keeps it in
/// the connection's slot).
#[derive(Clone, Copy, Debug)]
pub struct Connect<'a> {
    pub socket: BorrowedFd<'a>,
    pub addr: &'a SockAddr,
}

impl Connect<'_> {
    /// `IORING_OP_CONNECT`.
    pub fn sqe(&self) -> squeue::Entry {
        opcode::Connect::new(
            fixed(self.socket),
            self.addr.as_ptr().cast(),
            self.addr.len(),
        )
        .build()
    }

    /// `connect(2)`. On a non-blocking socket `Err(EINPROGRESS)` means "wait for writability,
    /// then read the outcome with [`Connect::outcome`]".
    pub fn run(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.socket).connect(self.addr)
    }

    /// The outcome of a non-blocking connect once the socket is writable (`SO_ERROR`).
    pub fn outcome(&self) -> io::Result<()> {
        match socket2::SockRef::from(&self.socket).take_error()? {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
