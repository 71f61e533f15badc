//! Receive bytes from a socket.

use std::io;
use std::os::fd::BorrowedFd;

use io_uring::{opcode, squeue};

use super::fixed;

/// Receive into a buffer the caller chose.
#[derive(Debug)]
pub struct Recv<'a> {
    pub socket: BorrowedFd<'a>,
    pub buf: &'a mut [u8],
}

impl Recv<'_> {
    /// `IORING_OP_RECV` into `buf`.
    pub fn sqe(&mut self) -> squeue::Entry {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        opcode::Recv::new(fixed(self.socket), self.buf.as_mut_ptr(), len).build()
    }

    /// `recv(2)`; 0 means end of stream.
    pub fn run(&mut self) -> io::Result<usize> {
        let (n, _) =
            rustix::net::recv(self.socket, &mut *self.buf, rustix::net::RecvFlags::empty())?;
        Ok(n)
    }

    /// `recv(2)` with `MSG_DONTWAIT`: on a blocking socket too, `WouldBlock` rather than a
    /// wait when nothing is there.
    pub fn run_nonblocking(&mut self) -> io::Result<usize> {
        let (n, _) = rustix::net::recv(
            self.socket,
            &mut *self.buf,
            rustix::net::RecvFlags::DONTWAIT,
        )?;
        Ok(n)
    }
}

/// Receive once into a buffer the kernel picks from provided-buffer group `group` (5.19 rings;
/// the completion's flags name the buffer).
#[derive(Clone, Copy, Debug)]
pub struct RecvSelect<'a> {
    pub socket: BorrowedFd<'a>,
    pub group: u16,
    /// Most bytes to take (the ring's buffer size).
    pub len: u32,
}

impl RecvSelect<'_> {
    /// `IORING_OP_RECV` with `IOSQE_BUFFER_SELECT`.
    pub fn sqe(&self) -> squeue::Entry {
        opcode::Recv::new(fixed(self.socket), std::ptr::null_mut(), self.len)
            .buf_group(self.group)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
    }
}

/// Receive repeatedly into buffers from group `group` until cancelled, out of buffers, at end of
/// stream or failed (6.0). Every completion but the last carries `IORING_CQE_F_MORE`.
#[derive(Clone, Copy, Debug)]
pub struct RecvMulti<'a> {
    pub socket: BorrowedFd<'a>,
    pub group: u16,
}

impl RecvMulti<'_> {
    /// `IORING_OP_RECV` with `IORING_RECV_MULTISHOT`.
    pub fn sqe(&self) -> squeue::Entry {
        opcode::RecvMulti::new(fixed(self.socket), self.group).build()
    }
}
