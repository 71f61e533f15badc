//! Thin wrappers over the system calls the engines share and no higher-level crate covers.
//!
//! Everything here goes through `rustix`, whose wrappers are safe, except `recvmmsg`, which
//! `rustix` lacks: [`mmsg`] is the one module outside the io_uring engine with `unsafe` (one
//! call, a `SAFETY:` line on every block); the rest of `sys` denies it.
#![deny(unsafe_code)]

pub mod cmsg;
pub mod limits;
#[allow(unsafe_code)]
pub mod mmsg;
pub mod pipe;

use std::io;

/// Map an `io::Error` from a socket call onto "the peer reset or vanished" or not.
pub fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED | libc::ETIMEDOUT)
    )
}

/// What a non-destructive look at a socket's receive queue shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// The peer closed its side: end of stream.
    Eof,
    /// Bytes are waiting.
    Data,
    /// Nothing yet.
    Empty,
}

/// Peek at a socket without consuming anything. Splice from TCP stops at urgent (out-of-band)
/// data: it returns 0, as at end of stream, or `EAGAIN`, while normal bytes wait behind the
/// mark. A peek tells those apart from the real end of stream and the really empty socket.
pub fn peek(socket: std::os::fd::BorrowedFd<'_>) -> io::Result<Peek> {
    use rustix::net::{RecvFlags, recv};
    let mut byte = [0u8; 1];
    match recv(socket, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((0, _)) => Ok(Peek::Eof),
        Ok(_) => Ok(Peek::Data),
        Err(rustix::io::Errno::AGAIN) => Ok(Peek::Empty),
        Err(err) => Err(err.into()),
    }
}
