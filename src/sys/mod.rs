//! Thin wrappers over the system calls the engines share and no higher-level crate covers.
//!
//! Everything here goes through `rustix`, whose wrappers are safe, so this module needs no
//! `unsafe` of its own; the io_uring engine is the only place with `unsafe` (its rings and the
//! memory it shares with the kernel).
#![forbid(unsafe_code)]

pub mod pipe;

use std::io;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit: a proxy holds two sockets per connection
/// (and two pipe ends per splicing direction). Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        limit.current = Some(hard);
        setrlimit(Resource::Nofile, limit).map_err(io::Error::from)?;
    }
    Ok(limit.current.unwrap_or(u64::MAX))
}

/// Map an `io::Error` from a socket call onto "the peer reset or vanished" or not.
pub fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED | libc::ETIMEDOUT)
    )
}

/// After a splice from a TCP socket returned 0: is this really the end of the stream? Splice
/// also returns 0 when it stops at urgent (out-of-band) data with more data behind it. A peek
/// tells: `Some(true)` at end of stream, `Some(false)` when bytes (or nothing yet) are there,
/// `None` when the socket failed or is missing.
pub fn peek_eof(socket: Option<std::os::fd::BorrowedFd<'_>>) -> Option<bool> {
    use rustix::net::{RecvFlags, recv};
    let mut byte = [0u8; 1];
    match recv(socket?, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((0, _)) => Some(true),
        Ok(_) => Some(false),
        Err(rustix::io::Errno::AGAIN) => Some(false),
        Err(_) => None,
    }
}
