//! Accept a client on a listening socket.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use io_uring::{opcode, squeue};
use rustix::net::SocketFlags;

use super::fixed;

/// Accept one client (or, multishot, every client until cancelled or failed). New sockets are
/// non-blocking and close-on-exec.
#[derive(Clone, Copy, Debug)]
pub struct Accept<'a> {
    pub listener: BorrowedFd<'a>,
}

impl Accept<'_> {
    /// Multishot accept (5.19): one submission, one completion per client.
    pub fn sqe_multishot(&self) -> squeue::Entry {
        opcode::AcceptMulti::new(fixed(self.listener))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
    }

    /// Single-shot accept.
    pub fn sqe(&self) -> squeue::Entry {
        opcode::Accept::new(
            fixed(self.listener),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        .build()
    }

    /// `accept4(2)`; `nonblocking` chooses the new socket's mode.
    pub fn run(&self, nonblocking: bool) -> io::Result<OwnedFd> {
        let mut flags = SocketFlags::CLOEXEC;
        if nonblocking {
            flags |= SocketFlags::NONBLOCK;
        }
        Ok(rustix::net::accept_with(self.listener, flags)?)
    }
}
