//! Send bytes to a socket.

use std::io;
use std::os::fd::BorrowedFd;

use io_uring::{opcode, squeue};

use super::fixed;

/// Send `buf`. Never raises SIGPIPE: a peer that vanished is an error result, not a signal.
#[derive(Clone, Copy, Debug)]
pub struct Send<'a> {
    pub socket: BorrowedFd<'a>,
    pub buf: &'a [u8],
}

impl Send<'_> {
    /// `IORING_OP_SEND` with `MSG_NOSIGNAL`.
    pub fn sqe(&self) -> squeue::Entry {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        opcode::Send::new(fixed(self.socket), self.buf.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }

    /// `send(2)` with `MSG_NOSIGNAL`; may write fewer bytes than asked.
    pub fn run(&self) -> io::Result<usize> {
        Ok(rustix::net::send(
            self.socket,
            self.buf,
            rustix::net::SendFlags::NOSIGNAL,
        )?)
    }
}

/// Send several buffers in one call (`sendmsg`), so a direction with many received buffers
/// queued drains them in one operation instead of one round trip each.
#[derive(Clone, Copy, Debug)]
pub struct SendMsg<'a> {
    pub socket: BorrowedFd<'a>,
    /// Names the buffers through its `msg_iov`; everything it points to must outlive the
    /// operation, as for any submission.
    pub msg: &'a libc::msghdr,
}

impl SendMsg<'_> {
    /// `IORING_OP_SENDMSG` with `MSG_NOSIGNAL`.
    pub fn sqe(&self) -> squeue::Entry {
        opcode::SendMsg::new(fixed(self.socket), std::ptr::from_ref(self.msg))
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }
}

/// Send everything queued in a send ring (buffer group `group`) in one request: a send bundle
/// (Linux 6.10). The kernel takes the ring's published entries in order, sends them as one
/// message, and advances the ring's head past those it sent; the completion's result is the
/// byte count. io_uring only: without bundles the engine lowers the same queue to [`SendMsg`].
#[derive(Clone, Copy, Debug)]
pub struct SendBundle<'a> {
    pub socket: BorrowedFd<'a>,
    pub group: u16,
}

impl SendBundle<'_> {
    /// `IORING_OP_SEND` with `IORING_RECVSEND_BUNDLE`, `MSG_NOSIGNAL` and `MSG_WAITALL`.
    ///
    /// `MSG_WAITALL` makes the kernel finish a short send itself (as newer kernels do for every
    /// bundle), so a completion covers whole entries unless the socket failed.
    pub fn sqe(&self) -> squeue::Entry {
        opcode::SendBundle::new(fixed(self.socket), self.group)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
    }
}
