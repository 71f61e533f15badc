//! One direction's bytes between its receive and its send, held by an engine that moves them
//! with direct system calls (epoll, blocking): a user-space buffer (copy) or a pipe (splice).
//!
//! The receive-result classification lives here once (bytes / end of stream / would block /
//! no room, with TCP urgent data moved past), as does the send step and the buffer's
//! compaction. The engines keep only what differs: *when* to retry (epoll parks on readiness,
//! the blocking engine waits in `poll`) and where buffers come from. The io_uring engine's
//! buffers belong to its rings (`uring::buf_ring`); it shares [`after_zero_splice`].

use std::io;
use std::os::fd::BorrowedFd;

use crate::core::conn::Via;
use crate::engine::op;
use crate::sys::Peek;
use crate::sys::pipe::{Pipe, recv_into_pipe};

/// What one receive attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// `n > 0` bytes, now queued.
    Bytes(usize),
    /// The peer closed its side.
    Eof,
    /// Nothing to take now (a non-blocking socket, or a receive timeout): wait for readability.
    WouldBlock,
    /// No room: the buffer holds only unsent bytes, or the pipe ran out of slots (`EAGAIN`
    /// with bytes in it). Wait for the send that drains this direction.
    Full,
    /// The splice stopped at TCP urgent data while the pipe still holds bytes: once the send
    /// has emptied the pipe, the next receive moves past the mark.
    UrgentBehindPipe,
}

/// What a socket → pipe splice that returned 0 means: TCP splice also stops with 0 at urgent
/// data, with normal bytes behind it, so only a peek tells the end of stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceZero {
    Eof,
    /// Move past the mark with one copying receive into the (empty) pipe.
    Urgent,
    UrgentBehindPipe,
}

/// Classify a zero-byte socket → pipe splice by a peek at the socket.
pub fn after_zero_splice(peek: Peek, pipe_has_bytes: bool) -> SpliceZero {
    match peek {
        Peek::Eof => SpliceZero::Eof,
        Peek::Data | Peek::Empty if pipe_has_bytes => SpliceZero::UrgentBehindPipe,
        Peek::Data | Peek::Empty => SpliceZero::Urgent,
    }
}

/// Bytes `head..tail` of `buf` (copy) and `in_pipe` bytes in `pipe` (splice) wait to be sent.
#[derive(Debug, Default)]
pub struct Staged {
    pub buf: Option<Box<[u8]>>,
    pub head: usize,
    pub tail: usize,
    pub pipe: Option<Pipe>,
    pub in_pipe: usize,
}

/// Retry `f` while it fails with `EINTR`.
fn restarting<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

impl Staged {
    /// Whether the copy buffer holds no unsent byte.
    pub fn copy_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Copy: receive once from `source` into the buffer (taken from `new_buf` if there is none),
    /// after making room at its end: an empty buffer starts over, unsent bytes move to the front.
    pub fn recv_copy(
        &mut self,
        source: BorrowedFd<'_>,
        new_buf: impl FnOnce() -> Box<[u8]>,
    ) -> io::Result<Received> {
        let buf = self.buf.get_or_insert_with(new_buf);
        if self.head == self.tail {
            (self.head, self.tail) = (0, 0);
        } else if self.tail == buf.len() {
            buf.copy_within(self.head..self.tail, 0);
            (self.head, self.tail) = (0, self.tail - self.head);
        }
        if self.tail == buf.len() {
            return Ok(Received::Full);
        }
        let result = restarting(|| {
            (op::Recv {
                socket: source,
                buf: &mut buf[self.tail..],
            })
            .run()
        });
        match result {
            Ok(0) => Ok(Received::Eof),
            Ok(n) => {
                self.tail += n;
                Ok(Received::Bytes(n))
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Received::WouldBlock),
            Err(err) => Err(err),
        }
    }

    /// Splice: move once from `source` into the pipe (which the caller has provided), up to its
    /// free capacity. Urgent data that stops the splice is moved past with one copying receive.
    pub fn recv_splice(&mut self, source: BorrowedFd<'_>) -> io::Result<Received> {
        let Some(pipe) = &self.pipe else {
            return Err(io::Error::other("splice receive without a pipe"));
        };
        let room = pipe.capacity().saturating_sub(self.in_pipe);
        if room == 0 {
            return Ok(Received::Full);
        }
        let len = u32::try_from(room).unwrap_or(u32::MAX);
        let result = restarting(|| {
            (op::Splice {
                from: source,
                to: pipe.write_end(),
                len,
            })
            .run()
        });
        let outcome = match result {
            Ok(0) => match after_zero_splice(crate::sys::peek(source)?, self.in_pipe > 0) {
                SpliceZero::Eof => return Ok(Received::Eof),
                SpliceZero::UrgentBehindPipe => return Ok(Received::UrgentBehindPipe),
                SpliceZero::Urgent => past_urgent(source, pipe)?,
            },
            Ok(n) => Received::Bytes(n),
            // EAGAIN is ambiguous: the socket may be empty, or the pipe out of slots (pages,
            // not bytes). With bytes in the pipe, wait for the send that drains it.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock && self.in_pipe > 0 => {
                return Ok(Received::Full);
            }
            // Readable bytes behind urgent data raise no new readiness: move past them now.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                match crate::sys::peek(source)? {
                    Peek::Data => past_urgent(source, pipe)?,
                    Peek::Eof | Peek::Empty => Received::WouldBlock,
                }
            }
            Err(err) => return Err(err),
        };
        if let Received::Bytes(n) = outcome {
            self.in_pipe += n;
        }
        Ok(outcome)
    }

    /// Send once (partially, possibly) up to `queued` bytes of what is staged for `via`, and
    /// take what was sent off the queue. `WouldBlock` comes back as an error for the caller
    /// to wait on.
    pub fn send(&mut self, via: Via, sink: BorrowedFd<'_>, queued: u64) -> io::Result<usize> {
        let want = usize::try_from(queued).unwrap_or(usize::MAX);
        let sent = match via {
            Via::Copy => {
                let pending = self
                    .buf
                    .as_deref()
                    .map_or(&[][..], |b| &b[self.head..self.tail]);
                let len = pending.len().min(want);
                if len == 0 {
                    return Err(io::Error::other("send with nothing queued"));
                }
                restarting(|| {
                    (op::Send {
                        socket: sink,
                        buf: &pending[..len],
                    })
                    .run()
                })?
            }
            Via::Splice => {
                let Some(pipe) = &self.pipe else {
                    return Err(io::Error::other("splice send without a pipe"));
                };
                let len = u32::try_from(want.min(self.in_pipe)).unwrap_or(u32::MAX);
                if len == 0 {
                    return Err(io::Error::other("splice send with an empty pipe"));
                }
                restarting(|| {
                    (op::Splice {
                        from: pipe.read_end(),
                        to: sink,
                        len,
                    })
                    .run()
                })?
            }
        };
        match via {
            Via::Copy => self.head += sent,
            Via::Splice => self.in_pipe -= sent.min(self.in_pipe),
        }
        Ok(sent)
    }
}

/// One copying receive into the empty pipe, past urgent data.
fn past_urgent(source: BorrowedFd<'_>, pipe: &Pipe) -> io::Result<Received> {
    match recv_into_pipe(source, pipe) {
        Ok(0) => Ok(Received::Eof),
        Ok(n) => Ok(Received::Bytes(n)),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Received::WouldBlock),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (b, _) = listener.accept().expect("accept");
        b.set_nonblocking(true).expect("non-blocking");
        (a, b)
    }

    #[test]
    fn a_zero_splice_is_the_end_only_when_a_peek_says_so() {
        assert_eq!(after_zero_splice(Peek::Eof, false), SpliceZero::Eof);
        assert_eq!(after_zero_splice(Peek::Eof, true), SpliceZero::Eof);
        for peek in [Peek::Data, Peek::Empty] {
            assert_eq!(after_zero_splice(peek, false), SpliceZero::Urgent);
            assert_eq!(after_zero_splice(peek, true), SpliceZero::UrgentBehindPipe);
        }
    }

    #[test]
    fn copy_moves_unsent_bytes_to_the_front_and_says_full_when_it_must() {
        let (mut writer, reader) = pair();
        let (_sink_peer, sink) = pair();
        let mut staged = Staged::default();
        writer.write_all(b"abcdefgh").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let new_buf = || vec![0u8; 8].into_boxed_slice();
        assert_eq!(
            staged.recv_copy(reader.as_fd(), new_buf).expect("recv"),
            Received::Bytes(8)
        );
        assert_eq!(
            staged.recv_copy(reader.as_fd(), new_buf).expect("recv"),
            Received::Full,
            "8 unsent bytes fill the buffer"
        );
        assert_eq!(staged.send(Via::Copy, sink.as_fd(), 3).expect("send"), 3);
        writer.write_all(b"ij").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            staged.recv_copy(reader.as_fd(), new_buf).expect("recv"),
            Received::Bytes(2)
        );
        let buf = staged.buf.as_deref().expect("buffer");
        assert_eq!(&buf[staged.head..staged.tail], b"defghij");
        assert_eq!(
            staged.recv_copy(reader.as_fd(), new_buf).expect("recv"),
            Received::WouldBlock
        );
        drop(writer);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            staged.recv_copy(reader.as_fd(), new_buf).expect("recv"),
            Received::Eof
        );
    }
}
