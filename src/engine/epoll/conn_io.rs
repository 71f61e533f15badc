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

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::event::epoll;
use socket2::{SockAddr, Socket};

use super::resources::Resources;
use super::{TAG_BACKEND, TAG_CLIENT};
use crate::core::conn::{Dir, Event, Failure, Side, Via};
use crate::core::slot::{SlotKey, UserData};
use crate::engine::op::{Preamble, os_failure};
use crate::engine::staged::{Received, Staged};
use crate::engine::{op, socket};

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
    /// The bytes received and not yet sent (a buffer for copy, a pipe for splice).
    staged: Staged,
    /// Read budget bookkeeping.
    turn: u64,
    reads: u32,
}

impl FlowIo {
    /// Book one receive attempt: `Some(bytes)` to report (0 at end of stream), or `None`
    /// with `wait` saying what the parked receive waits for.
    fn received(&mut self, received: Received, res: &mut Resources) -> Option<usize> {
        res.stats.reads += 1;
        self.reads += 1;
        match received {
            Received::Bytes(n) => Some(n),
            Received::Eof => Some(0),
            Received::WouldBlock => {
                res.stats.reads_eagain += 1;
                self.wait = Some(Wait::Socket);
                None
            }
            Received::Full | Received::UrgentBehindPipe => {
                self.wait = Some(Wait::Space);
                None
            }
        }
    }

    /// Hand back a buffer or pipe that holds nothing: idle connections hold neither.
    fn settle(&mut self, res: &mut Resources) {
        let staged = &mut self.staged;
        if staged.copy_empty() {
            (staged.head, staged.tail) = (0, 0);
            if let Some(buf) = staged.buf.take() {
                res.buffers.put(buf);
            }
        }
        if staged.in_pipe == 0
            && let Some(pipe) = staged.pipe.take()
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
    /// An inspect read waits for the client to be readable.
    inspect_waits: bool,
    /// The preamble being written to the backend (it waits for writability when the socket
    /// is full).
    preamble: Option<Box<Preamble>>,
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
            inspect_waits: false,
            preamble: None,
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

    /// Close the backend socket, if any. No `EPOLL_CTL_DEL` first: closing a socket's last
    /// fd takes it off the interest list, and connection sockets are never duplicated (no
    /// `dup`, close-on-exec), so each close is the last.
    fn drop_backend(&mut self) {
        self.backend = None;
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
        self.drop_backend();
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
        if side == Side::Backend && self.preamble.is_some() {
            self.try_preamble(out);
        }
        if flags.intersects(F::OUT | F::ERR | F::HUP)
            && self.flows[write_dir.index()].send.is_some()
        {
            self.try_send(write_dir, res, out);
        }
        let flow = &self.flows[read_dir.index()];
        tracing::trace!(?side, ?flags, recv = ?flow.recv, wait = ?flow.wait, in_pipe = flow.staged.in_pipe, "readiness");
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
        if via == Via::Splice && flow.staged.pipe.is_none() {
            match res.pipes.get() {
                Ok(pipe) => flow.staged.pipe = Some(pipe),
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
        let received = match via {
            Via::Copy => flow.staged.recv_copy(sock, || res.buffers.get()),
            Via::Splice => flow.staged.recv_splice(sock),
        };
        let result = received.map(|r| flow.received(r, res));
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
        res.stats.writes += 1;
        let result = flow.staged.send(via, sock, queued);
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

    /// The address the client connected to (for a PROXY header's destination).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        op::preamble::local_addr(self.client.as_fd())
    }

    /// Whether an inspect read waits for the client to be readable.
    pub fn inspect_waits(&self) -> bool {
        self.inspect_waits
    }

    /// Attempt an inspect read into `buf`: the bytes read, or `None` when it waits for the
    /// client (or pushed the event that ends it).
    pub fn try_inspect(&mut self, buf: &mut [u8], out: &mut Vec<Event>) -> Option<usize> {
        self.inspect_waits = false;
        let result = op::Recv {
            socket: self.client.as_fd(),
            buf,
        }
        .run();
        match op::inspect::classify(result) {
            op::inspect::Inspected::Bytes(n) => Some(n),
            op::inspect::Inspected::Wait => {
                self.inspect_waits = true;
                None
            }
            op::inspect::Inspected::Event(event) => {
                out.push(event);
                None
            }
        }
    }

    /// Carry out `SendPreamble` with `bytes`.
    pub fn begin_preamble(&mut self, bytes: Vec<u8>, out: &mut Vec<Event>) {
        self.preamble = Some(Box::new(Preamble::new(bytes)));
        self.try_preamble(out);
    }

    /// Write what the backend takes of the preamble; report its end.
    fn try_preamble(&mut self, out: &mut Vec<Event>) {
        let (Some(preamble), Some(backend)) = (self.preamble.as_mut(), self.backend.as_ref())
        else {
            return;
        };
        if let Some(event) = op::preamble::finished(preamble.write(backend.as_fd())) {
            self.preamble = None;
            out.push(event);
        }
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

    /// Carry out `Close { reset }` after the shard released the connection: close both sockets,
    /// pool empty pipes, return buffers.
    pub fn close(mut self, reset: bool, res: &mut Resources) {
        if reset {
            for sock in std::iter::once(&self.client).chain(self.backend.as_ref()) {
                // A socket that cannot linger still closes; the peer then sees FIN, not RST.
                let _ = socket::set_reset_on_close(sock);
            }
        }
        // Dropping the sockets closes them, which takes them off the interest list as well
        // (see `drop_backend`).
        self.drop_backend();
        for flow in &mut self.flows {
            if let Some(pipe) = flow.staged.pipe.take() {
                res.pipes.put(pipe, flow.staged.in_pipe == 0);
            }
            if let Some(buf) = flow.staged.buf.take() {
                res.buffers.put(buf);
            }
        }
    }
}
