//! Carrying out the core's actions as io_uring submissions.
//!
//! Every `push` here names memory that the connection's slot owns (its sockets, its connect
//! address, buffers it holds, its pipe) or that the worker owns for its whole life (the buffer
//! region, the connect timeout). A slot is freed only once its `in_flight` count is back to zero,
//! that is after the final completion of everything it submitted; that is the invariant each
//! `SAFETY` comment below relies on.

use std::os::fd::AsFd;
use std::time::Instant;

use io_uring::{opcode, squeue};
use socket2::SockAddr;

use super::buf_ring::may_take_another;
use super::conn_io::{Armed, Filling};
use super::conn_io::{MAX_SEND_CHUNKS, Parked, SendVec};
use super::token::Op;
use super::worker::COPY_BUFFERS;
use super::worker::Worker;
use crate::core::backend::BackendId;
use crate::core::conn::{Action, Dir, Event, Side, Via};
use crate::core::slot::{SlotKey, UserData};
use crate::engine::op::{
    self, Connect, Preamble, Recv, RecvMulti, RecvSelect, Send, SendMsg, Splice, fixed,
};
use crate::engine::{rate_limit, socket};

/// Whether the source of a copy receive is known to be readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Readiness {
    /// Not known: a pooled receive may wait for readability first.
    Unknown,
    /// A POLLIN just reported it.
    Readable,
}

pub(super) fn tag(op: Op, key: SlotKey) -> u64 {
    UserData::new(op.code(), key).0
}

impl Worker {
    /// Queue `entries` (one operation, or a chain) of connection `key`, already counted in its
    /// `in_flight`. If the ring refuses them (then none is queued, see `Ring::push_chain`),
    /// they are counted out again and the connection is closed (`CloseReason::Local`): one
    /// connection's trouble never stops the worker. Whatever the caller marked as in flight
    /// besides the count is moot then: a closing connection's state is only released.
    ///
    /// # Safety
    /// As for `Ring::push_chain`.
    pub(super) unsafe fn queue(&mut self, key: SlotKey, entries: &[&squeue::Entry]) {
        // SAFETY: the caller upholds `push_chain`'s contract for these entries.
        let Err(err) = (unsafe { self.ring.push_chain(entries) }) else {
            return;
        };
        if let Some(io) = self.shard.io_mut(key) {
            io.in_flight = io.in_flight.saturating_sub(entries.len() as u32);
        }
        self.counters.queue_failures += 1;
        if self.counters.queue_failures.is_power_of_two() {
            tracing::warn!(
                worker = self.index,
                %err,
                count = self.counters.queue_failures,
                "cannot queue a connection's operation; closing the connection"
            );
        }
        self.shard.abort(key);
    }

    /// Drain the shard's actions into submissions.
    pub(super) fn carry_out_actions(&mut self, now: Instant) {
        while let Some((key, action)) = self.shard.poll_action() {
            match action {
                Action::Connect { backend, .. } => self.connect(now, key, backend),
                Action::Recv { dir, via } => {
                    if let Some(io) = self.shard.io_mut(key) {
                        io.flow(dir).cancel_requested = false;
                    }
                    match via {
                        Via::Copy => self.submit_copy_recv(key, dir),
                        Via::Splice => self.submit_splice_in(now, key, dir),
                    }
                }
                Action::CancelRecv { dir } => self.cancel_recv(now, key, dir),
                Action::Send { dir, via, queued } => match via {
                    Via::Copy => self.submit_copy_send(now, key, dir),
                    Via::Splice => {
                        let len = u32::try_from(queued).unwrap_or(u32::MAX);
                        self.submit_splice_out(now, key, dir, len, false);
                    }
                },
                Action::ShutdownWrite { side } => self.shutdown_write(key, side),
                Action::Inspect => self.submit_inspect(key),
                Action::SendPreamble => {
                    let bytes = self
                        .shard
                        .take_preamble(key, |io| op::preamble::local_addr(io.client.as_fd()));
                    if let Some(io) = self.shard.io_mut(key) {
                        io.preamble = Some(Box::new(Preamble::new(bytes)));
                    }
                    self.submit_preamble(key);
                }
                Action::Close { reset, reason } => {
                    tracing::trace!(?key, ?reason, reset, "close");
                    if reset {
                        rate_limit::log_reset(&mut self.resets_log, now, self.index, key, reason);
                    }
                    self.close(key, reset);
                }
            }
        }
    }

    /// The inspect phase's next read: a receive from the client into a buffer the slot owns,
    /// as large as the shard has room for.
    fn submit_inspect(&mut self, key: SlotKey) {
        let room = self.shard.inspect_room(key);
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let buf = io.inspect_buf.insert(op::inspect::buffer(room));
        let entry = Recv {
            socket: io.client.as_fd(),
            buf,
        }
        .sqe()
        .user_data(tag(Op::Inspect, key));
        io.in_flight += 1;
        // SAFETY: the socket and the buffer live in the slot until the final completion.
        unsafe { self.queue(key, &[&entry]) }
    }

    /// Send what is left of the preamble to the backend.
    pub(super) fn submit_preamble(&mut self, key: SlotKey) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let (Some(backend), Some(preamble)) = (io.backend.as_ref(), io.preamble.as_ref()) else {
            return;
        };
        let entry = Send {
            socket: backend.as_fd(),
            buf: preamble.rest(),
        }
        .sqe()
        .user_data(tag(Op::Preamble, key));
        io.in_flight += 1;
        // SAFETY: the socket and the preamble (boxed) live in the slot until the final
        // completion, and nothing changes the preamble while its send is in flight.
        unsafe { self.queue(key, &[&entry]) }
    }

    fn connect(&mut self, now: Instant, key: SlotKey, backend: BackendId) {
        let options = self.server_options;
        let socket = self
            .shard
            .backend_addr(key, backend)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
            .and_then(|addr| Ok((socket::backend(addr, true, &options)?, SockAddr::from(addr))));
        let (socket, addr) = match socket {
            Ok(pair) => pair,
            Err(err) => {
                // Out of fds, typically: say so, but not once per connection of a storm.
                self.counters.backend_socket_errors += 1;
                if self.counters.backend_socket_errors.is_power_of_two() {
                    tracing::warn!(
                        %err,
                        count = self.counters.backend_socket_errors,
                        "cannot create a backend socket"
                    );
                }
                self.shard
                    .handle_event(now, key, Event::ConnectFailed { timed_out: false });
                return;
            }
        };
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        // Any earlier attempt's connect has completed (its failure is what led here), so its
        // socket can be closed now.
        io.backend = Some(socket);
        io.backend_addr = Some(Box::new(addr));
        let (Some(sock), Some(addr)) = (io.backend.as_ref(), io.backend_addr.as_ref()) else {
            return;
        };
        let connect = Connect {
            socket: sock.as_fd(),
            addr,
        }
        .sqe()
        .flags(squeue::Flags::IO_LINK)
        .user_data(tag(Op::Connect, key));
        let timeout = opcode::LinkTimeout::new(&self.connect_timeout)
            .build()
            .user_data(tag(Op::ConnectTimeout, key));
        io.in_flight += 2;
        // SAFETY: socket and address live in the slot, the timespec in the worker (module docs);
        // one chain, so that a full queue cannot separate the connect from its timeout.
        unsafe { self.queue(key, &[&connect, &timeout]) }
    }

    /// A copy-mode receive: from the ring (multishot or single) or into a pooled buffer.
    pub(super) fn submit_copy_recv(&mut self, key: SlotKey, dir: Dir) {
        self.copy_recv(key, dir, Readiness::Unknown);
    }

    /// Wait for `dir`'s source to be readable, then receive (`Armed::Readable`).
    pub(super) fn wait_readable(&mut self, key: SlotKey, dir: Dir) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let flow = io.flow(dir);
        flow.armed = Armed::Readable;
        flow.parked = None;
        self.submit_poll(key, dir, Op::PollIn(dir));
    }

    /// As [`Worker::submit_copy_recv`], knowing whether the source is readable.
    pub(super) fn copy_recv(&mut self, key: SlotKey, dir: Dir, readiness: Readiness) {
        let most = COPY_BUFFERS as usize;
        let share = self.buffers.share(most);
        let Some((held, filling)) = self
            .shard
            .io_mut(key)
            .map(|io| (io.flow(dir).chunks.len(), io.flow(dir).filling))
        else {
            return;
        };
        if !may_take_another(held, share) {
            self.park(key, dir, Parked::QueueFull);
            return;
        }
        // A direction that holds no shared buffer while they are short (its share is none)
        // does not wait for the others' to come back: it receives into a spill buffer of its
        // own (see `spill`), once its source is readable, so that an idle one holds none.
        let pooled = if held == 0 && share == 0 {
            if readiness == Readiness::Unknown {
                return self.wait_readable(key, dir);
            }
            match self.buffers.take_spill() {
                Ok(bid) => Some(bid),
                Err(err) => {
                    self.park(key, dir, Parked::NoBuffers);
                    if self.counters.parked_no_buffers.is_power_of_two() {
                        tracing::warn!(worker = self.index, %err, "no spill buffer; receives wait");
                    }
                    return;
                }
            }
        } else if self.buffers.is_ring() {
            None
        } else if readiness == Readiness::Unknown && share < most {
            // Pool mode while buffers are short: a buffer goes to a receive only once its
            // source is readable, so that idle directions hold none (a pooled receive holds
            // its buffer from submission on, unlike a ring's, which takes one when data
            // arrives).
            return self.wait_readable(key, dir);
        } else {
            match self.buffers.take() {
                Some(bid) => Some(bid),
                None => {
                    self.park(key, dir, Parked::NoBuffers);
                    return;
                }
            }
        };
        // A multishot receive could fill several buffers before the cancel that stops it
        // lands: see `Buffers::may_multishot`.
        let multishot = self.plan.multishot_recv
            && self.buffers.may_multishot(
                most,
                filling == Filling::Whole,
                self.buffers.multishot_armed(),
            );
        let size = self.buffers.size();
        let target = pooled.map(|bid| self.buffers.recv_target(bid));
        let Some(io) = self.shard.io_mut(key) else {
            if let Some(bid) = pooled {
                self.buffers.give_back(bid);
            }
            return;
        };
        let Some(source) = io.socket(dir.source()) else {
            self.shard.abort(key);
            return;
        };
        let entry = match target {
            Some((ptr, len)) => {
                // SAFETY: `ptr..ptr+len` is buffer `bid` in the region, taken from the free list
                // above: ours alone until the receive completes and it is queued or given back.
                let buf = unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) };
                Recv {
                    socket: source,
                    buf,
                }
                .sqe()
            }
            None if multishot => RecvMulti {
                socket: source,
                group: super::buf_ring::GROUP,
            }
            .sqe(),
            None => RecvSelect {
                socket: source,
                group: super::buf_ring::GROUP,
                len: size,
            }
            .sqe(),
        }
        .user_data(tag(Op::Recv(dir), key));
        let armed = match (target, multishot) {
            (Some(_), _) => Armed::Pooled,
            (None, true) => Armed::Multishot,
            (None, false) if held == 0 => Armed::Select,
            (None, false) => Armed::SelectAnother,
        };
        let flow = io.flow(dir);
        flow.armed = armed;
        self.buffers.arm(armed);
        flow.recv_buffer = pooled;
        flow.parked = None;
        io.in_flight += 1;
        // SAFETY: the socket lives in the slot; the kernel writes only into a buffer we hold (pool)
        // or select from the ring (ring), both in the worker's region, which outlives the ring.
        unsafe { self.queue(key, &[&entry]) }
    }

    /// A splice-mode receive: wait for the source to be readable, then splice into the pipe.
    /// The two are linked: the splice starts only when the poll has fired.
    /// A direction that finds no pipe (see `PipePool::get`) is told to copy instead
    /// (`SpliceUnavailable`): the receive ring exists in every mode, so copy needs nothing more.
    pub(super) fn submit_splice_in(&mut self, now: Instant, key: SlotKey, dir: Dir) {
        let needs_pipe = self
            .shard
            .io_mut(key)
            .is_some_and(|io| io.flow(dir).pipe.is_none());
        let fresh = if needs_pipe {
            match self.pipes.get() {
                Ok(pipe) => Some(pipe),
                Err(why) => {
                    rate_limit::log_no_pipe(&mut self.pipes_log, now, self.index, &why);
                    if let Some(io) = self.shard.io_mut(key) {
                        io.flow(dir).parked = None;
                    }
                    self.shard
                        .handle_event(now, key, Event::SpliceUnavailable { dir });
                    return;
                }
            }
        } else {
            None
        };
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        if let Some(pipe) = fresh {
            io.flow(dir).pipe = Some(pipe);
        }
        let Some(source) = io.socket(dir.source()) else {
            return;
        };
        let flow = &io.flows[dir.index()];
        let Some(pipe) = flow.pipe.as_ref() else {
            return;
        };
        let free = (pipe.capacity() as u64).saturating_sub(flow.pipe_bytes);
        if free == 0 {
            self.park(key, dir, Parked::PipeFull);
            return;
        }
        let poll =
            opcode::PollAdd::new(fixed(source), (libc::POLLIN | libc::POLLRDHUP) as u32).build();
        if self.plan.inline_splice {
            // Readiness from the ring, the splice itself as a direct call when the poll fires
            // (see `complete.rs`): no io-wq thread hop per chunk.
            let poll = poll.user_data(tag(Op::PollIn(dir), key));
            let flow = io.flow(dir);
            flow.armed = Armed::Splice;
            flow.parked = None;
            io.in_flight += 1;
            // SAFETY: a poll names its socket by fd, which lives in the slot until completion.
            return unsafe { self.queue(key, &[&poll]) };
        }
        let poll = poll
            .flags(squeue::Flags::IO_LINK)
            .user_data(tag(Op::PollIn(dir), key));
        let splice = Splice {
            from: source.as_fd(),
            to: pipe.write_end(),
            len: u32::try_from(free).unwrap_or(u32::MAX),
        }
        .sqe()
        .user_data(tag(Op::SpliceIn(dir), key));
        let flow = io.flow(dir);
        flow.armed = Armed::Splice;
        flow.parked = None;
        io.in_flight += 2;
        // SAFETY: the socket and the pipe live in the slot until both completions arrived.
        unsafe { self.queue(key, &[&poll, &splice]) }
    }

    /// Cancel the connection's operation `target` (by its `user_data`).
    pub(super) fn submit_cancel(&mut self, key: SlotKey, target: Op) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let cancel = opcode::AsyncCancel::new(tag(target, key))
            .build()
            .user_data(tag(Op::Cancel, key));
        io.in_flight += 1;
        // SAFETY: a cancel names its target by user_data and points to no memory.
        unsafe { self.queue(key, &[&cancel]) }
    }

    /// Arm a one-shot readiness poll (`Op::PollIn` on `dir`'s source or `Op::PollOut` on its
    /// sink) before retrying an operation that answered `EAGAIN`.
    pub(super) fn submit_poll(&mut self, key: SlotKey, dir: Dir, op: Op) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let (side, mask) = match op {
            Op::PollOut(_) => (dir.sink(), libc::POLLOUT),
            _ => (dir.source(), libc::POLLIN | libc::POLLRDHUP),
        };
        let Some(socket) = io.socket(side) else {
            return;
        };
        let poll = opcode::PollAdd::new(fixed(socket), mask as u32)
            .build()
            .user_data(tag(op, key));
        io.in_flight += 1;
        // SAFETY: a poll names its socket by fd, which lives in the slot until completion.
        unsafe { self.queue(key, &[&poll]) }
    }

    fn park(&mut self, key: SlotKey, dir: Dir, why: Parked) {
        if let Some(io) = self.shard.io_mut(key) {
            let flow = io.flow(dir);
            flow.armed = Armed::No;
            flow.parked = Some(why);
            match why {
                Parked::NoBuffers => {
                    self.counters.parked_no_buffers += 1;
                    self.starved.push((key, dir));
                }
                Parked::PipeFull => self.counters.parked_pipe_full += 1,
                Parked::QueueFull => self.counters.parked_queue_full += 1,
            }
        }
    }

    /// Receives parked for lack of buffers try again once some are free.
    pub(super) fn retry_starved(&mut self) {
        let free = self.buffers.free() as usize;
        if self.starved.is_empty() || free == 0 {
            return;
        }
        // Oldest first, and no more than there are free buffers: retrying every starved flow
        // for one returned buffer would cost an SQE and an ENOBUFS completion each.
        let retry = free.min(self.starved.len());
        let batch: Vec<(SlotKey, Dir)> = self.starved.drain(..retry).collect();
        for (key, dir) in batch {
            let parked = self
                .shard
                .io_mut(key)
                .filter(|io| io.closing.is_none())
                .is_some_and(|io| io.flow(dir).parked == Some(Parked::NoBuffers));
            if parked {
                self.submit_copy_recv(key, dir);
            }
        }
    }

    fn cancel_recv(&mut self, now: Instant, key: SlotKey, dir: Dir) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let flow = io.flow(dir);
        if !flow.armed.in_flight() {
            // Parked or already finished: nothing is in the kernel, so it has stopped.
            flow.parked = None;
            self.shard.handle_event(now, key, Event::RecvEnded { dir });
            return;
        }
        flow.cancel_requested = true;
        // A splice receive is cancelled through its poll; the linked splice then fails with
        // ECANCELED (or completes, if the poll had already fired).
        let target = if flow.armed.polls() {
            Op::PollIn(dir)
        } else {
            Op::Recv(dir)
        };
        let cancel = opcode::AsyncCancel::new(tag(target, key))
            .build()
            .user_data(tag(Op::Cancel, key));
        io.in_flight += 1;
        // SAFETY: a cancel names its target by user_data and points to no memory.
        unsafe { self.queue(key, &[&cancel]) }
    }

    pub(super) fn submit_copy_send(&mut self, now: Instant, key: SlotKey, dir: Dir) {
        if self.plan.send_bundle && self.bundle_send(key, dir) {
            return;
        }
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let sink = match dir.sink() {
            Side::Client => Some(&io.client),
            Side::Backend => io.backend.as_ref(),
        };
        let flow = &mut io.flows[dir.index()];
        let (Some(head), Some(sink)) = (flow.chunks.front().copied(), sink) else {
            // The core asked to send bytes this engine does not hold: a bug, but never a panic.
            tracing::error!(?dir, "send requested with nothing queued; closing");
            self.shard.abort(key);
            return;
        };
        let count = flow.chunks.len().min(MAX_SEND_CHUNKS);
        let entry = if count == 1 {
            Send {
                socket: sink.as_fd(),
                buf: self.buffers.bytes(head.bid, head.from, head.to),
            }
            .sqe()
        } else {
            let vec = flow.send_vec.get_or_insert_with(SendVec::new);
            for (slot, chunk) in vec.iov.iter_mut().zip(flow.chunks.iter().take(count)) {
                let bytes = self.buffers.bytes(chunk.bid, chunk.from, chunk.to);
                *slot = libc::iovec {
                    iov_base: bytes.as_ptr().cast_mut().cast(),
                    iov_len: bytes.len(),
                };
            }
            self.counters.sendmsg_sends += 1;
            vec.msg.msg_iov = vec.iov.as_mut_ptr();
            vec.msg.msg_iovlen = count;
            SendMsg {
                socket: sink.as_fd(),
                msg: &vec.msg,
            }
            .sqe()
        }
        .user_data(tag(Op::Send(dir), key));
        io.in_flight += 1;
        let _ = now;
        // SAFETY: the buffers stay held (queued in `chunks`) and the boxed msghdr and iovecs live
        // in the flow until the send completes; the socket lives in the slot.
        unsafe { self.queue(key, &[&entry]) }
    }

    /// Splice `len` bytes out of the pipe into the sink; after `EAGAIN`, first wait for the sink
    /// to become writable (`after_poll`).
    pub(super) fn submit_splice_out(
        &mut self,
        now: Instant,
        key: SlotKey,
        dir: Dir,
        len: u32,
        after_poll: bool,
    ) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let Some(sink) = io.socket(dir.sink()) else {
            return;
        };
        let Some(pipe) = io.flows[dir.index()].pipe.as_ref() else {
            return;
        };
        let splice = Splice {
            from: pipe.read_end(),
            to: sink.as_fd(),
            len,
        };
        if self.plan.inline_splice {
            if after_poll {
                let poll = opcode::PollAdd::new(fixed(sink), libc::POLLOUT as u32)
                    .build()
                    .user_data(tag(Op::PollOut(dir), key));
                io.flow(dir).splice_out_len = len;
                io.in_flight += 1;
                // SAFETY: a poll names its socket by fd, which lives in the slot until
                // completion.
                return unsafe { self.queue(key, &[&poll]) };
            }
            // The pipe holds the bytes, so this never waits for the source; a full sink socket
            // answers EAGAIN and the retry waits behind a POLLOUT.
            let result = match splice.run() {
                Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
                Err(err) => -err.raw_os_error().unwrap_or(libc::EIO),
            };
            io.flow(dir).splice_out_len = len;
            return self.spliced_out(now, key, dir, result);
        }
        let splice = splice.sqe().user_data(tag(Op::SpliceOut(dir), key));
        let poll = after_poll.then(|| {
            opcode::PollAdd::new(fixed(sink), libc::POLLOUT as u32)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(tag(Op::PollOut(dir), key))
        });
        io.flow(dir).splice_out_len = len;
        io.in_flight += 1 + u32::from(poll.is_some());
        match &poll {
            // SAFETY: the socket and the pipe live in the slot until both completions arrived.
            Some(poll) => unsafe { self.queue(key, &[poll, &splice]) },
            // SAFETY: the socket and the pipe live in the slot until the splice's completion.
            None => unsafe { self.queue(key, &[&splice]) },
        }
    }
}
