//! One accepted connection and the per-kind logic that moves its bytes.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use super::Shared;
use super::http::HttpConn;
use super::worker::Protocol;
use crate::pattern;

/// Stop reading while this much output is queued: the client must drain first.
const HIGH_WATER: usize = 256 * 1024;

/// What the connection does with its bytes.
#[derive(Debug)]
enum Role {
    /// Echo and Hello: everything read is queued for writing.
    Echo,
    Sink,
    Source {
        remaining: Option<u64>,
        offset: u64,
    },
    Http(HttpConn),
}

/// Whether the connection should be kept after being driven.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Status {
    Open,
    Done,
}

/// An accepted connection.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    role: Role,
    out: Vec<u8>,
    out_pos: usize,
    read_eof: bool,
    write_shut: bool,
    /// Close after flushing `out` (HTTP `Connection: close` or a bad request).
    close_after_flush: bool,
    /// The last write hit `WouldBlock` or was short; retry only after a writable event.
    write_blocked: bool,
    /// The socket may hold unread data. Cleared by `WouldBlock` and by short reads: a short
    /// read drained the receive queue, and anything arriving later raises a new edge.
    /// This saves one failing `read` per request (the same rule tokio applies).
    read_ready: bool,
    /// The peer hung up or errored (seen in an event). A short read then no longer proves
    /// the socket drained: the EOF or error behind the data raises no new edge.
    peer_closed: bool,
}

impl Conn {
    /// Wraps a freshly accepted stream; Hello queues its greeting here.
    pub(super) fn new(stream: TcpStream, proto: &Protocol) -> Self {
        let (role, out) = match proto {
            Protocol::Echo => (Role::Echo, Vec::new()),
            Protocol::Hello(greeting) => (Role::Echo, greeting.clone()),
            Protocol::Sink => (Role::Sink, Vec::new()),
            Protocol::Source { bytes } => (
                Role::Source {
                    remaining: *bytes,
                    offset: 0,
                },
                Vec::new(),
            ),
            Protocol::Http(_) => (Role::Http(HttpConn::default()), Vec::new()),
        };
        Self {
            stream,
            role,
            out,
            out_pos: 0,
            read_eof: false,
            write_shut: false,
            close_after_flush: false,
            write_blocked: false,
            read_ready: true,
            peer_closed: false,
        }
    }

    /// Makes as much progress as the socket allows; `hup` says the event reported a hang-up
    /// or error. With edge-triggered readiness every
    /// direction is pushed until `WouldBlock` or until the other direction must move first.
    pub(super) fn drive(
        &mut self,
        readable: bool,
        writable: bool,
        hup: bool,
        proto: &Protocol,
        shared: &Shared,
        scratch: &mut [u8],
    ) -> Status {
        if writable {
            self.write_blocked = false;
        }
        self.peer_closed |= hup;
        if readable || hup {
            self.read_ready = true;
        }
        match self.drive_inner(proto, shared, scratch) {
            Ok(s) => s,
            // Resets and other socket errors just end the connection.
            Err(_) => Status::Done,
        }
    }

    fn drive_inner(
        &mut self,
        proto: &Protocol,
        shared: &Shared,
        scratch: &mut [u8],
    ) -> io::Result<Status> {
        if matches!(self.role, Role::Source { .. }) {
            return self.drive_source(shared, scratch);
        }
        loop {
            self.flush(shared)?;
            let flushed = self.out_pos == self.out.len();
            if flushed {
                self.out.clear();
                self.out_pos = 0;
                if self.read_eof || self.close_after_flush {
                    // Half-close aware: only after every echoed byte is written do we send FIN.
                    if !self.write_shut {
                        let _ = self.stream.shutdown(Shutdown::Write);
                        self.write_shut = true;
                    }
                    return Ok(Status::Done);
                }
            }
            if !self.read_ready
                || self.read_eof
                || self.close_after_flush
                || self.out.len() - self.out_pos >= HIGH_WATER
            {
                return Ok(Status::Open);
            }
            let n = match self.stream.read(scratch) {
                Ok(0) => {
                    self.read_eof = true;
                    continue;
                }
                Ok(n) => {
                    self.read_ready = n == scratch.len() || self.peer_closed;
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_ready = false;
                    return Ok(Status::Open);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            Shared::add(&shared.bytes_in, n);
            let data = &scratch[..n];
            match &mut self.role {
                Role::Echo => self.echo(data, shared)?,
                Role::Sink => {}
                Role::Http(h) => {
                    let Protocol::Http(responses) = proto else {
                        return Ok(Status::Done);
                    };
                    let fed = h.feed(data, responses, &mut self.out);
                    Shared::add(&shared.requests, usize::try_from(fed.requests).unwrap_or(0));
                    self.close_after_flush |= fed.close;
                }
                Role::Source { .. } => {}
            }
        }
    }

    /// Echo fast path: with nothing queued, write straight from the read buffer and queue
    /// only what the socket did not take.
    fn echo(&mut self, data: &[u8], shared: &Shared) -> io::Result<()> {
        let mut written = 0;
        if self.out.is_empty() && !self.write_blocked {
            written = self.write_some(data, shared)?;
        }
        self.out.extend_from_slice(&data[written..]);
        Ok(())
    }

    /// Writes queued output until done or `WouldBlock`.
    fn flush(&mut self, shared: &Shared) -> io::Result<()> {
        while self.out_pos < self.out.len() && !self.write_blocked {
            let mut out = std::mem::take(&mut self.out);
            let res = self.write_some(&out[self.out_pos..], shared);
            std::mem::swap(&mut self.out, &mut out);
            let n = res?;
            self.out_pos += n;
        }
        Ok(())
    }

    /// One `write` loop over `data`; returns bytes written, stopping at `WouldBlock`.
    fn write_some(&mut self, data: &[u8], shared: &Shared) -> io::Result<usize> {
        let mut done = 0;
        while done < data.len() {
            match self.stream.write(&data[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    Shared::add(&shared.bytes_out, n);
                    // A short write means the send buffer is full; the next write would
                    // only fail, and an edge comes when space frees up.
                    if done < data.len() {
                        self.write_blocked = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Source: drain (and discard) input to notice EOF, then write the pattern.
    fn drive_source(&mut self, shared: &Shared, scratch: &mut [u8]) -> io::Result<Status> {
        while !self.read_eof && self.read_ready {
            match self.stream.read(scratch) {
                Ok(0) => self.read_eof = true,
                Ok(n) => {
                    self.read_ready = n == scratch.len() || self.peer_closed;
                    Shared::add(&shared.bytes_in, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let Role::Source { remaining, offset } = &mut self.role else {
            return Ok(Status::Done);
        };
        while !self.write_shut && !self.write_blocked {
            let want = remaining.map_or(pattern::CHUNK, |r| {
                usize::try_from(r).unwrap_or(usize::MAX).min(pattern::CHUNK)
            });
            if want == 0 {
                let _ = self.stream.shutdown(Shutdown::Write);
                self.write_shut = true;
                break;
            }
            match self.stream.write(pattern::slice_at(*offset, want)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.write_blocked = n < want;
                    *offset += n as u64;
                    if let Some(r) = remaining {
                        *r -= n as u64;
                    }
                    Shared::add(&shared.bytes_out, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.write_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Done once both directions are finished; an unlimited source ends when writes fail.
        Ok(if self.write_shut && self.read_eof {
            Status::Done
        } else {
            Status::Open
        })
    }
}
