//! One connection's sockets, buffers and pipes, and the non-blocking calls that carry out the
//! core's actions on them.
//!
//! Nothing here decides what to do next: every method carries out one action (or retries one that
//! had to wait for readiness) and pushes the result as an [`Event`] for the caller to feed to the
//! shard. What the engine must remember, because epoll is edge-triggered, is *why* an operation is
//! waiting ([`Wait`]): for the socket to become readable or writable, for space in the buffer or
//! pipe (freed by the next send of that direction), or for the next loop turn (the per-turn read
//! budget that keeps one busy connection from starving the others).

use std::io;

use crate::sys::Peek;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::event::epoll;
use socket2::{SockAddr, Socket};

use super::resources::Resources;
use super::{TAG_BACKEND, TAG_CLIENT};
use crate::core::conn::{Dir, Event, Failure, Side, Via};
use crate::core::slot::{SlotKey, UserData};
use crate::engine::op::os_failure;
use crate::engine::{op, socket};
use crate::sys::pipe::Pipe;

/// Reads one direction may make per loop turn before it yields to other connections.
pub const READS_PER_TURN: u32 = 16;

/// Every connection socket is watched for both readiness kinds, edge-triggered, once.
fn interest() -> epoll::EventFlags {
    epoll::EventFlags::IN
        | epoll::EventFlags::OUT
        | epoll::EventFlags::RDHUP
        | epoll::EventFlags::ET
}

/// Why a pending receive is parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The socket had nothing (EAGAIN): retry when it reports readable.
    Socket,
    /// The buffer or pipe is full: retry after the next send of this direction.
    Space,
    /// The direction used its reads for this turn: retry next turn.
    Turn,
}

/// One direction's engine-side state.
#[derive(Debug, Default)]
struct FlowIo {
    /// A receive the core asked for and that has not reported yet.
    recv: Option<Via>,
    wait: Option<Wait>,
    /// A send the core asked for that waits for writability.
    send: Option<(Via, u64)>,
    /// Copy mode: bytes `head..tail` of `buf` are queued.
    buf: Option<Box<[u8]>>,
    head: usize,
    tail: usize,
    /// Splice mode: the pipe and the bytes in it.
    pipe: Option<Pipe>,
    in_pipe: usize,
    /// Read budget bookkeeping.
    turn: u64,
    reads: u32,
}

impl FlowIo {
    /// Hand back a buffer or pipe that holds nothing: idle connections hold neither.
    fn settle(&mut self, res: &mut Resources) {
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
            if let Some(buf) = self.buf.take() {
                res.buffers.put(buf);
            }
        }
        if self.in_pipe == 0
            && let Some(pipe) = self.pipe.take()
        {
            res.pipes.put(pipe, true);
        }
    }
}

/// A connection's I/O payload in the shard.
#[derive(Debug)]
pub struct ConnIo {
    key: Option<SlotKey>,
    client: Socket,
    backend: Option<Socket>,
    /// The epoll tag of the current backend socket (one per connect attempt), so readiness of a
    /// socket from an earlier attempt is never taken for the current one.
    backend_tag: u8,
    connecting: bool,
    flows: [FlowIo; 2],
}

fn side_socket<'a>(
    client: &'a Socket,
    backend: &'a Option<Socket>,
    side: Side,
) -> Option<BorrowedFd<'a>> {
    match side {
        Side::Client => Some(client.as_fd()),
        Side::Backend => backend.as_ref().map(AsFd::as_fd),
    }
}

fn is_would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

impl ConnIo {
    /// The payload for a freshly accepted client.
    pub fn new(client: Socket) -> Self {
        ConnIo {
            key: None,
            client,
            backend: None,
            backend_tag: TAG_BACKEND,
            connecting: false,
            flows: Default::default(),
        }
    }

    /// Learn the connection's key and register the client socket.
    pub fn attach(&mut self, key: SlotKey, res: &Resources) -> io::Result<()> {
        self.key = Some(key);
        let data = epoll::EventData::new_u64(UserData::new(TAG_CLIENT, key).0);
        epoll::add(&res.epoll, &self.client, data, interest())?;
        Ok(())
    }

    /// The tag readiness of the current backend socket carries.
    pub fn backend_tag(&self) -> u8 {
        self.backend_tag
    }

    /// True when `dir`'s receive waits for the next turn.
    pub fn deferred(&self, dir: Dir) -> bool {
        let flow = &self.flows[dir.index()];
        flow.recv.is_some() && flow.wait == Some(Wait::Turn)
    }

    fn drop_backend(&mut self, res: &Resources) {
        if let Some(old) = self.backend.take() {
            // Closing removes it from the interest list as well; deleting first keeps that true
            // even if the fd were ever duplicated.
            let _ = epoll::delete(&res.epoll, &old);
        }
        self.connecting = false;
    }

    /// Carry out `Connect`: close an earlier backend socket, open a new one and start a
    /// non-blocking connect. Pushes `Connected` at once if it completed synchronously, or
    /// `ConnectFailed` if it could not start.
    pub fn connect(
        &mut self,
        addr: Option<SocketAddr>,
        attempt: u32,
        res: &mut Resources,
        out: &mut Vec<Event>,
    ) {
        self.drop_backend(res);
        let failed = Event::ConnectFailed { timed_out: false };
        let (Some(addr), Some(key)) = (addr, self.key) else {
            out.push(failed);
            return;
        };
        let sock = match socket::backend(addr, true, &res.server_options) {
            Ok(sock) => sock,
            Err(err) => {
                tracing::debug!(%addr, %err, "cannot open a backend socket");
                out.push(failed);
                return;
            }
        };
        let target = SockAddr::from(addr);
        let immediate = match (op::Connect {
            socket: sock.as_fd(),
            addr: &target,
        })
        .run()
        {
            Ok(()) => true,
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => false,
            Err(err) => {
                tracing::debug!(%addr, %err, "connect failed");
                out.push(failed);
                return;
            }
        };
        let tag =
            TAG_BACKEND.saturating_add(u8::try_from(attempt).unwrap_or(u8::MAX - TAG_BACKEND));
        let data = epoll::EventData::new_u64(UserData::new(tag, key).0);
        if let Err(err) = epoll::add(&res.epoll, &sock, data, interest()) {
            tracing::warn!(%err, "cannot register a backend socket with epoll");
            out.push(failed);
            return;
        }
        self.backend = Some(sock);
        self.backend_tag = tag;
        self.connecting = !immediate;
        if immediate {
            out.push(Event::Connected);
        }
    }

    /// Readiness reported for `side`: finish a connect, or retry what waited for it.
    pub fn on_ready(
        &mut self,
        side: Side,
        flags: epoll::EventFlags,
        res: &mut Resources,
        out: &mut Vec<Event>,
    ) {
        use epoll::EventFlags as F;
        if side == Side::Backend && self.connecting {
            if flags.intersects(F::OUT | F::ERR | F::HUP) {
                self.connecting = false;
                let outcome = match &self.backend {
                    Some(sock) => sock.take_error().and_then(|e| e.map_or(Ok(()), Err)),
                    None => Err(io::ErrorKind::NotConnected.into()),
                };
                out.push(match outcome {
                    Ok(()) => Event::Connected,
                    Err(err) => {
                        tracing::debug!(%err, "backend connect failed");
                        Event::ConnectFailed { timed_out: false }
                    }
                });
            }
            return;
        }
        let (read_dir, write_dir) = match side {
            Side::Client => (Dir::Upstream, Dir::Downstream),
            Side::Backend => (Dir::Downstream, Dir::Upstream),
        };
        if flags.intersects(F::OUT | F::ERR | F::HUP)
            && self.flows[write_dir.index()].send.is_some()
        {
            self.try_send(write_dir, res, out);
        }
        let flow = &self.flows[read_dir.index()];
        tracing::trace!(?side, ?flags, recv = ?flow.recv, wait = ?flow.wait, in_pipe = flow.in_pipe, "readiness");
        // Any event on the socket retries a receive that waits for it, not only EPOLLIN: after
        // a stop (SIGSTOP, or a long deschedule) bytes can arrive without a readable edge being
        // reported (seen: a writable-only event, with the bytes there for the next read). A
        // read that finds nothing costs one EAGAIN and keeps waiting.
        if flow.recv.is_some() && flow.wait == Some(Wait::Socket) {
            self.try_recv(read_dir, res, out);
        }
    }

    /// Carry out `Recv { dir, via }`.
    pub fn begin_recv(&mut self, dir: Dir, via: Via, res: &mut Resources, out: &mut Vec<Event>) {
        let flow = &mut self.flows[dir.index()];
        flow.recv = Some(via);
        flow.wait = None;
        self.try_recv(dir, res, out);
    }

    /// Attempt the pending receive of `dir`; report its result or park it.
    pub fn try_recv(&mut self, dir: Dir, res: &mut Resources, out: &mut Vec<Event>) {
        let ConnIo {
            client,
            backend,
            flows,
            key,
            ..
        } = self;
        let flow = &mut flows[dir.index()];
        let Some(via) = flow.recv else { return };
        let side = dir.source();
        let Some(sock) = side_socket(client, backend, side) else {
            flow.recv = None;
            out.push(Event::Failed {
                side,
                failure: Failure::Local,
            });
            return;
        };
        if flow.turn != res.turn {
            flow.turn = res.turn;
            flow.reads = 0;
        }
        if flow.reads >= READS_PER_TURN {
            flow.wait = Some(Wait::Turn);
            if let Some(key) = *key {
                res.deferred.push((key, dir));
            }
            return;
        }
        if via == Via::Splice && flow.pipe.is_none() {
            match res.pipes.get() {
                Ok(pipe) => flow.pipe = Some(pipe),
                Err(why) => {
                    // No pipe (the worker's limit, or the kernel's): this direction copies
                    // from now on. Pipes are handed back whenever empty, so this can happen
                    // between two splices of one stream.
                    let now = std::time::Instant::now();
                    let worker = res.worker;
                    crate::engine::rate_limit::log_no_pipe(&mut res.pipes_log, now, worker, &why);
                    flow.recv = None;
                    flow.wait = None;
                    out.push(Event::SpliceUnavailable { dir });
                    return;
                }
            }
        }
        let result = match via {
            Via::Copy => recv_copy(flow, sock, res),
            Via::Splice => recv_splice(flow, sock, res),
        };
        match result {
            Ok(Some(0)) => {
                flow.recv = None;
                out.push(Event::Eof { dir });
            }
            Ok(Some(n)) => {
                flow.recv = None;
                out.push(Event::Received {
                    dir,
                    bytes: n as u64,
                    armed: false,
                });
            }
            // Parked; `wait` says on what.
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(?dir, %err, "receive failed");
                flow.recv = None;
                out.push(Event::Failed {
                    side,
                    failure: os_failure(&err),
                });
            }
        }
        flow.settle(res);
    }

    /// Carry out `Send { dir, via, queued }`.
    pub fn begin_send(
        &mut self,
        dir: Dir,
        via: Via,
        queued: u64,
        res: &mut Resources,
        out: &mut Vec<Event>,
    ) {
        self.flows[dir.index()].send = Some((via, queued));
        self.try_send(dir, res, out);
    }

    /// Attempt the pending send of `dir`; report its result or leave it waiting for
    /// writability. A send that frees space retries a receive parked for it.
    pub fn try_send(&mut self, dir: Dir, res: &mut Resources, out: &mut Vec<Event>) {
        let ConnIo {
            client,
            backend,
            flows,
            ..
        } = self;
        let flow = &mut flows[dir.index()];
        let Some((via, queued)) = flow.send else {
            return;
        };
        let side = dir.sink();
        let Some(sock) = side_socket(client, backend, side) else {
            flow.send = None;
            out.push(Event::Failed {
                side,
                failure: Failure::Local,
            });
            return;
        };
        let result = loop {
            res.stats.writes += 1;
            let attempt = match via {
                Via::Copy => {
                    let pending = flow
                        .buf
                        .as_deref()
                        .map_or(&[][..], |b| &b[flow.head..flow.tail]);
                    let len = pending
                        .len()
                        .min(usize::try_from(queued).unwrap_or(usize::MAX));
                    if len == 0 {
                        break Err(io::Error::other("send with nothing queued"));
                    }
                    (op::Send {
                        socket: sock,
                        buf: &pending[..len],
                    })
                    .run()
                }
                Via::Splice => {
                    let Some(pipe) = &flow.pipe else {
                        break Err(io::Error::other("splice send without a pipe"));
                    };
                    let len = flow
                        .in_pipe
                        .min(usize::try_from(queued).unwrap_or(usize::MAX));
                    let len = u32::try_from(len).unwrap_or(u32::MAX);
                    if len == 0 {
                        break Err(io::Error::other("splice send with an empty pipe"));
                    }
                    (op::Splice {
                        from: pipe.read_end(),
                        to: sock,
                        len,
                    })
                    .run()
                }
            };
            match attempt {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(0) => {
                flow.send = None;
                out.push(Event::Failed {
                    side,
                    failure: Failure::ZeroWrite,
                });
            }
            Ok(n) => {
                flow.send = None;
                match via {
                    Via::Copy => flow.head += n,
                    Via::Splice => flow.in_pipe -= n.min(flow.in_pipe),
                }
                out.push(Event::Sent {
                    dir,
                    bytes: n as u64,
                });
                flow.settle(res);
                if flow.recv.is_some() && flow.wait == Some(Wait::Space) {
                    self.try_recv(dir, res, out);
                }
            }
            Err(err) if is_would_block(&err) => {
                // Stays pending: EPOLLOUT on the sink retries it.
                res.stats.writes_eagain += 1;
            }
            Err(err) => {
                tracing::debug!(?dir, %err, "send failed");
                flow.send = None;
                out.push(Event::Failed {
                    side,
                    failure: os_failure(&err),
                });
            }
        }
    }

    /// Carry out `CancelRecv { dir }`: nothing is in flight, so the pending receive is dropped.
    pub fn cancel_recv(&mut self, dir: Dir, out: &mut Vec<Event>) {
        let flow = &mut self.flows[dir.index()];
        flow.recv = None;
        flow.wait = None;
        out.push(Event::RecvEnded { dir });
    }

    /// Carry out `ShutdownWrite { side }`.
    pub fn shutdown_write(&mut self, side: Side, out: &mut Vec<Event>) {
        let Some(sock) = side_socket(&self.client, &self.backend, side) else {
            out.push(Event::Failed {
                side,
                failure: Failure::Local,
            });
            return;
        };
        if let Err(err) = (op::Shutdown { socket: sock }).run() {
            tracing::debug!(?side, %err, "shutdown(SHUT_WR) failed");
            out.push(Event::Failed {
                side,
                failure: os_failure(&err),
            });
        }
    }

    /// Carry out `Close { reset }` after the shard released the connection: deregister and close
    /// both sockets, pool empty pipes, return buffers.
    pub fn close(mut self, reset: bool, res: &mut Resources) {
        if reset {
            for sock in std::iter::once(&self.client).chain(self.backend.as_ref()) {
                // A socket that cannot linger still closes; the peer then sees FIN, not RST.
                let _ = socket::set_reset_on_close(sock);
            }
        }
        let _ = epoll::delete(&res.epoll, &self.client);
        self.drop_backend(res);
        for flow in &mut self.flows {
            if let Some(pipe) = flow.pipe.take() {
                res.pipes.put(pipe, flow.in_pipe == 0);
            }
            if let Some(buf) = flow.buf.take() {
                res.buffers.put(buf);
            }
        }
    }
}

/// One `recv(2)` into the free end of the direction's buffer. `Ok(None)`: parked.
fn recv_copy(
    flow: &mut FlowIo,
    sock: BorrowedFd<'_>,
    res: &mut Resources,
) -> io::Result<Option<usize>> {
    let buf = flow.buf.get_or_insert_with(|| res.buffers.get());
    if flow.tail == buf.len() {
        if flow.head == 0 {
            // Full of bytes still to send: the send that drains it retries this receive.
            flow.wait = Some(Wait::Space);
            return Ok(None);
        }
        buf.copy_within(flow.head..flow.tail, 0);
        flow.tail -= flow.head;
        flow.head = 0;
    }
    loop {
        res.stats.reads += 1;
        flow.reads += 1;
        match (op::Recv {
            socket: sock,
            buf: &mut buf[flow.tail..],
        })
        .run()
        {
            Ok(n) => {
                flow.tail += n;
                return Ok(Some(n));
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if is_would_block(&err) => {
                res.stats.reads_eagain += 1;
                flow.wait = Some(Wait::Socket);
                return Ok(None);
            }
            Err(err) => return Err(err),
        }
    }
}

/// Move past urgent data with one copying receive into the (empty) pipe. `Ok(None)`: nothing
/// there after all.
fn past_urgent(sock: BorrowedFd<'_>, pipe: &crate::sys::pipe::Pipe) -> io::Result<Option<usize>> {
    match crate::sys::pipe::recv_into_pipe(sock, pipe) {
        Ok(n) => Ok(Some(n)),
        Err(err) if is_would_block(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Book the result of [`past_urgent`] on the flow.
fn book_past_urgent(flow: &mut FlowIo, moved: Option<usize>) -> Option<usize> {
    match moved {
        Some(n) => flow.in_pipe += n,
        None => flow.wait = Some(Wait::Socket),
    }
    moved
}

/// One `splice(2)` from the socket into the direction's pipe. `Ok(None)`: parked.
fn recv_splice(
    flow: &mut FlowIo,
    sock: BorrowedFd<'_>,
    res: &mut Resources,
) -> io::Result<Option<usize>> {
    // `try_recv` got the pipe.
    let Some(pipe) = &flow.pipe else {
        return Err(io::Error::other("no pipe"));
    };
    let room = pipe.capacity().saturating_sub(flow.in_pipe);
    if room == 0 {
        flow.wait = Some(Wait::Space);
        return Ok(None);
    }
    loop {
        res.stats.reads += 1;
        flow.reads += 1;
        let len = u32::try_from(room).unwrap_or(u32::MAX);
        match (op::Splice {
            from: sock,
            to: pipe.write_end(),
            len,
        })
        .run()
        {
            Ok(0) => {
                // Splice also answers 0 (or EAGAIN, below) when it stops at TCP urgent data
                // with normal bytes behind it: only a peek tells the real end of stream.
                return match crate::sys::peek(sock)? {
                    Peek::Eof => Ok(Some(0)),
                    Peek::Data | Peek::Empty if flow.in_pipe == 0 => {
                        let moved = past_urgent(sock, pipe)?;
                        Ok(book_past_urgent(flow, moved))
                    }
                    Peek::Data | Peek::Empty => {
                        flow.wait = Some(Wait::Space);
                        Ok(None)
                    }
                };
            }
            Ok(n) => {
                flow.in_pipe += n;
                return Ok(Some(n));
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if is_would_block(&err) && flow.in_pipe == 0 => {
                res.stats.reads_eagain += 1;
                // Edge-triggered: if bytes wait behind urgent data, no new edge will come.
                if crate::sys::peek(sock)? == Peek::Data {
                    let moved = past_urgent(sock, pipe)?;
                    return Ok(book_past_urgent(flow, moved));
                }
                flow.wait = Some(Wait::Socket);
                return Ok(None);
            }
            Err(err) if is_would_block(&err) => {
                res.stats.reads_eagain += 1;
                // EAGAIN from splice is ambiguous: the socket may be empty, or the pipe may be
                // out of slots (pages, not bytes). With bytes in the pipe, wait for the send that
                // drains it rather than for readiness, which may never come again.
                flow.wait = Some(if flow.in_pipe > 0 {
                    Wait::Space
                } else {
                    Wait::Socket
                });
                return Ok(None);
            }
            Err(err) => return Err(err),
        }
    }
}
