//! Each operation the data plane performs, defined once and lowered per engine.
//!
//! An op is a small value naming its fd(s) and buffer. [`sqe`](Recv::sqe)-style methods build the
//! io_uring submission entry (safe: building an entry does nothing; the single place that pushes
//! entries, in the io_uring engine, carries the `unsafe` and the lifetime obligations), and
//! [`run`](Recv::run)-style methods perform the same operation as one direct system call, for the
//! epoll engine (on non-blocking sockets) and the blocking engine (on blocking sockets).
//!
//! Ownership: the fds and buffers an op names must stay alive and unmoved until its final
//! completion (for a multishot op, the completion without `IORING_CQE_F_MORE`). The engines
//! guarantee this by keeping them in the connection's slot, which is freed only after the last
//! completion for it has arrived.

mod accept;
mod close;
mod connect;
pub mod inspect;
pub mod preamble;
mod recv;
mod send;
mod shutdown;
mod splice;

pub use accept::Accept;
pub use close::Close;
pub use connect::Connect;
pub use preamble::Preamble;
pub use recv::{Recv, RecvMulti, RecvSelect};
pub use send::{Send, SendBundle, SendMsg};
pub use shutdown::Shutdown;
pub use splice::Splice;

use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::types::Fd;

use crate::core::conn::Failure;

/// The io_uring view of a borrowed fd.
pub(crate) fn fixed(fd: BorrowedFd<'_>) -> Fd {
    Fd(fd.as_raw_fd())
}

/// The failure an op's error means for its socket (a direct call's `io::Error`).
pub(crate) fn os_failure(err: &std::io::Error) -> Failure {
    Failure::Os(err.raw_os_error().unwrap_or(libc::EIO))
}

/// The failure a completion's result means for its socket: `-errno`, or 0 for a send that
/// wrote nothing.
pub(crate) fn cqe_failure(result: i32) -> Failure {
    match result {
        0 => Failure::ZeroWrite,
        r => Failure::Os(r.saturating_neg()),
    }
}
