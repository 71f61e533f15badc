//! The preamble a backend is sent before the client's bytes: the PROXY protocol header of its
//! `send_proxy`, and what the inspect phase read (see `core::inspect`). The shard builds the
//! bytes (`Shard::take_preamble`); this is the one definition of writing them, whole and in
//! order, for every engine: a [`Preamble`] is sent from where it stopped until it is done.
//!
//! It goes out right after the connect, on a socket that has sent nothing: a PROXY header
//! (at most 232 bytes) and a ClientHello fit its empty send buffer, so the first write almost
//! always takes everything. A short write is carried on all the same: the engine waits for
//! the socket to be writable (epoll), resubmits the rest (io_uring), or blocks (blocking).

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use socket2::SockRef;

use super::Send;
use crate::core::conn::{Event, Failure, Side};

/// The address the client connected to: the destination a PROXY header names when no
/// received header gave one. `None` when the kernel will not say.
pub fn local_addr(client: BorrowedFd<'_>) -> Option<SocketAddr> {
    SockRef::from(&client).local_addr().ok()?.as_socket()
}

/// A preamble on its way to the backend.
#[derive(Debug, Default)]
pub struct Preamble {
    bytes: Vec<u8>,
    sent: usize,
}

/// Where a write of a preamble left it.
#[derive(Debug)]
pub enum Progress {
    /// All of it is written: report [`Event::PreambleSent`].
    Done,
    /// The socket is full: write again once it is writable.
    Wait,
    /// The backend side failed.
    Failed(Failure),
}

impl Preamble {
    pub fn new(bytes: Vec<u8>) -> Self {
        Preamble { bytes, sent: 0 }
    }

    /// What is left to write (the buffer a submission names must stay put until it
    /// completes: the preamble lives in the connection's slot).
    pub fn rest(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }

    /// Account for a write's result (bytes written, or `-errno` as a completion gives it).
    pub fn wrote(&mut self, result: io::Result<usize>) -> Progress {
        match result {
            Ok(0) if !self.rest().is_empty() => Progress::Failed(Failure::ZeroWrite),
            Ok(n) => {
                self.sent = (self.sent + n).min(self.bytes.len());
                if self.rest().is_empty() {
                    Progress::Done
                } else {
                    Progress::Wait
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Progress::Wait,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Progress::Wait,
            Err(err) => {
                tracing::debug!(%err, "preamble not sent");
                Progress::Failed(super::os_failure(&err))
            }
        }
    }

    /// Write as much as `backend` takes now (non-blocking sockets: until it is full; blocking
    /// ones: until its send timeout).
    pub fn write(&mut self, backend: BorrowedFd<'_>) -> Progress {
        loop {
            if self.rest().is_empty() {
                return Progress::Done;
            }
            let result = Send {
                socket: backend,
                buf: self.rest(),
            }
            .run();
            match result {
                Ok(n) if n > 0 => self.sent = (self.sent + n).min(self.bytes.len()),
                other => return self.wrote(other),
            }
        }
    }
}

/// A completion's result (bytes written, or `-errno`) as a write's.
pub fn result(result: i32) -> io::Result<usize> {
    if result >= 0 {
        Ok(result as usize)
    } else {
        Err(io::Error::from_raw_os_error(result.saturating_neg()))
    }
}

/// The event for a preamble's end: sent, or the backend failed.
pub fn finished(progress: Progress) -> Option<Event> {
    match progress {
        Progress::Done => Some(Event::PreambleSent),
        Progress::Wait => None,
        Progress::Failed(failure) => Some(Event::Failed {
            side: Side::Backend,
            failure,
        }),
    }
}
