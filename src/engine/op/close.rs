//! Close a socket.

use std::os::fd::BorrowedFd;

use io_uring::{opcode, squeue};

use super::fixed;

/// `close(2)` of a socket nothing refers to any more. Only the io_uring engine lowers it, to
/// `IORING_OP_CLOSE` (5.6) submitted with the loop turn's other entries instead of a syscall of
/// its own; the other engines close by dropping the socket.
#[derive(Clone, Copy, Debug)]
pub struct Close<'a> {
    pub socket: BorrowedFd<'a>,
}

impl Close<'_> {
    /// `IORING_OP_CLOSE` with `IOSQE_CQE_SKIP_SUCCESS` (5.17): only a failure posts a
    /// completion. The caller must give up the fd once the entry is queued.
    pub fn sqe(&self) -> squeue::Entry {
        opcode::Close::new(fixed(self.socket))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
    }
}
