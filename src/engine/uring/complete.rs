//! Turning completions into core events (and into the engine's own follow-ups: re-polls,
//! parked receives, closing slots).

use std::time::Instant;

use io_uring::cqueue;

use super::buf_ring::may_take_another;
use super::conn_io::{Armed, Chunk, ConnIo, Filling, Parked};
use super::submit::Readiness;
use super::token::Op;
use super::worker::COPY_BUFFERS;
use super::worker::Worker;
use crate::core::conn::{Dir, Event, Failure, Side};
use crate::core::slot::{SlotKey, UserData};
use crate::engine::op;
use crate::engine::staged::{SpliceZero, after_zero_splice};

/// Spurious readiness reports tolerated before splice mode falls back to one plain receive.
const SPURIOUS_WAKEUPS_BEFORE_RECV: u8 = 2;

/// Past urgent data with one copying receive into `dir`'s empty pipe; the result as a
/// completion would carry it (bytes, 0 at end of stream, or `-errno`).
fn receive_into_pipe(io: &ConnIo, dir: Dir) -> i32 {
    let (Some(source), Some(pipe)) = (io.socket(dir.source()), io.flows[dir.index()].pipe.as_ref())
    else {
        return -libc::EBADF;
    };
    match crate::sys::pipe::recv_into_pipe(source, pipe) {
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(err) => -err.raw_os_error().unwrap_or(libc::EIO),
    }
}

impl Worker {
    /// The inspect receive of connection `key` completed with `result`.
    fn inspect_received(&mut self, now: Instant, key: SlotKey, result: i32) {
        let Some(buf) = self.shard.io_mut(key).and_then(|io| io.inspect_buf.take()) else {
            return;
        };
        match op::inspect::classify_cqe(result) {
            op::inspect::Inspected::Bytes(n) => {
                self.shard.inspected(now, key, &buf[..n.min(buf.len())]);
            }
            // io_uring waits for readability itself; a spurious empty result reads again.
            op::inspect::Inspected::Wait => {
                self.shard.inspected(now, key, &[]);
            }
            op::inspect::Inspected::Event(event) => {
                self.shard.handle_event(now, key, event);
            }
        }
    }

    /// The socket on `side` of connection `key` failed.
    pub(super) fn fail(&mut self, now: Instant, key: SlotKey, side: Side, failure: Failure) {
        self.shard
            .handle_event(now, key, Event::Failed { side, failure });
    }

    /// Handle one completion.
    pub(super) fn complete(&mut self, now: Instant, user_data: UserData, result: i32, flags: u32) {
        let Some(op) = Op::from_code(user_data.op()) else {
            tracing::error!(
                user_data = user_data.0,
                "completion with an unknown op code"
            );
            return;
        };
        let more = cqueue::more(flags);
        let key = user_data.key();
        match op {
            Op::Accept => {
                self.accepted(now, key.index() as usize, result, more);
                return;
            }
            Op::Close => {
                // Only a failed close posts a completion. Once the close ran, the fd is
                // released whatever it returned; the probe rules out a kernel that would
                // reject the entry itself (no IOSQE_CQE_SKIP_SUCCESS).
                self.counters.close_errors += 1;
                tracing::debug!(result, "closing a socket failed");
                return;
            }
            Op::Wake => {
                self.woken();
                return;
            }
            Op::Udp => {
                self.udp_ready(now);
                return;
            }
            Op::UdpRecv => {
                self.udp_received(now, key.index() as usize, result, flags);
                return;
            }
            Op::Cancel if key.index() == u32::MAX => {
                // The cancel of a listener's accept (shutdown).
                self.internal_in_flight = self.internal_in_flight.saturating_sub(1);
                return;
            }
            _ => {}
        }
        let selected = cqueue::buffer_select(flags);
        let Some(io) = self.shard.io_mut(key) else {
            // Slots are freed only after their last completion, so this cannot name a live
            // operation; still, a buffer a receive selected must not leak.
            if let (Op::Recv(_), Some(bid)) = (op, selected) {
                self.buffers.selected(bid);
                self.buffers.give_back(bid);
            }
            return;
        };
        if !more {
            io.in_flight = io.in_flight.saturating_sub(1);
        }
        if io.closing.is_some() {
            // Only resources matter now: give back what the completion hands us.
            match op {
                Op::Recv(dir) => {
                    if !more {
                        let armed = std::mem::take(&mut io.flow(dir).armed);
                        self.buffers.disarm(armed);
                    }
                    let bid = selected.or_else(|| io.flow(dir).recv_buffer.take());
                    if let Some(bid) = bid {
                        if selected.is_some() {
                            self.buffers.selected(bid);
                        }
                        self.buffers.give_back(bid);
                    }
                }
                // Its ring is reset when `finalize` gives it back, and its chunks' buffers
                // are returned there.
                Op::SendBundle(dir) if !more => io.flow(dir).bundle_in_flight = false,
                Op::SpliceIn(dir) if result > 0 => io.flow(dir).pipe_bytes += result as u64,
                Op::SpliceOut(dir) if result > 0 => {
                    let flow = io.flow(dir);
                    flow.pipe_bytes = flow.pipe_bytes.saturating_sub(result as u64);
                }
                _ => {}
            }
            if io.in_flight == 0 {
                self.finalize(key);
            }
            return;
        }
        match op {
            Op::Connect => {
                // The kernel has read the address; an idle connection should not carry it.
                io.backend_addr = None;
                let event = match result {
                    0 => Event::Connected,
                    // The linked timeout fired and cancelled the connect.
                    r if r == -libc::ECANCELED => Event::ConnectFailed { timed_out: true },
                    _ => Event::ConnectFailed { timed_out: false },
                };
                self.shard.handle_event(now, key, event);
            }
            Op::Recv(dir) => self.copy_received(now, key, dir, result, more, selected),
            Op::Inspect => self.inspect_received(now, key, result),
            Op::Preamble => {
                let progress = match io.preamble.as_mut() {
                    Some(preamble) => preamble.wrote(op::preamble::result(result)),
                    None => return,
                };
                match op::preamble::finished(progress) {
                    Some(event) => {
                        io.preamble = None;
                        self.shard.handle_event(now, key, event);
                    }
                    // A short send: the rest goes in another.
                    None => self.submit_preamble(key),
                }
            }
            Op::Send(dir) => {
                if result == -libc::EAGAIN {
                    io.flow(dir).send_waits_writable = true;
                    return self.submit_poll(key, dir, Op::PollOut(dir));
                }
                if result <= 0 {
                    tracing::debug!(?dir, result, "send failed");
                    self.fail(now, key, dir.sink(), op::cqe_failure(result));
                    return;
                }
                let sent = result as u32;
                let flow = io.flow(dir);
                // A send may cover several buffers (sendmsg): consume them in order.
                let mut left = sent;
                while left > 0 {
                    let Some(head) = flow.chunks.front_mut() else {
                        break;
                    };
                    let take = left.min(head.to - head.from);
                    head.from += take;
                    left -= take;
                    if head.from == head.to {
                        let bid = head.bid;
                        flow.chunks.pop_front();
                        self.buffers.give_back(bid);
                    }
                }
                self.report_sent(now, key, dir, sent);
            }
            Op::SendBundle(dir) => self.bundle_sent(now, key, dir, result, more, selected),
            Op::SpliceIn(dir) => self.spliced_in(now, key, dir, result),
            Op::SpliceOut(dir) => self.spliced_out(now, key, dir, result),
            Op::PollIn(dir) if io.flow(dir).armed == Armed::Readable => {
                let flow = io.flow(dir);
                flow.armed = Armed::No;
                if flow.cancel_requested {
                    // The core asked to stop while we waited: the receive has ended.
                    self.shard.handle_event(now, key, Event::RecvEnded { dir });
                } else if result < 0 {
                    let event = if result == -libc::ECANCELED {
                        Event::RecvEnded { dir }
                    } else {
                        Event::Failed {
                            side: dir.source(),
                            failure: op::cqe_failure(result),
                        }
                    };
                    self.shard.handle_event(now, key, event);
                } else {
                    self.copy_recv(key, dir, Readiness::Readable);
                }
            }
            Op::PollOut(dir) if io.flow(dir).send_waits_writable => {
                io.flow(dir).send_waits_writable = false;
                if result < 0 {
                    self.fail(now, key, dir.sink(), op::cqe_failure(result));
                } else {
                    self.submit_copy_send(now, key, dir);
                }
            }
            Op::PollIn(dir) if self.plan.inline_splice => {
                self.inline_splice_in(now, key, dir, result);
            }
            Op::PollOut(dir) if self.plan.inline_splice => {
                if result < 0 {
                    self.fail(now, key, dir.sink(), op::cqe_failure(result));
                } else {
                    let len = io.flow(dir).splice_out_len;
                    self.submit_splice_out(now, key, dir, len, false);
                }
            }
            // Readiness and bookkeeping completions: their effect shows in the linked or
            // targeted operation's own completion.
            Op::PollIn(_)
            | Op::PollOut(_)
            | Op::ConnectTimeout
            | Op::Shutdown
            | Op::Cancel
            | Op::Close
            | Op::Accept
            | Op::Wake
            | Op::Udp
            | Op::UdpRecv => {}
        }
    }

    /// The result of a splice out of `dir`'s pipe (a completion, or an inline call's return).
    pub(super) fn spliced_out(
        &mut self,
        now: Instant,
        key: crate::core::slot::SlotKey,
        dir: Dir,
        result: i32,
    ) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        if result == -libc::EAGAIN {
            // The sink's send buffer is full: wait for room, then try again.
            self.counters.splice_eagain += 1;
            let len = io.flow(dir).splice_out_len;
            return self.submit_splice_out(now, key, dir, len, true);
        }
        if result <= 0 {
            self.fail(now, key, dir.sink(), op::cqe_failure(result));
            return;
        }
        let flow = io.flow(dir);
        flow.pipe_bytes = flow.pipe_bytes.saturating_sub(result as u64);
        let resume = flow.parked == Some(Parked::PipeFull);
        self.shard.handle_event(
            now,
            key,
            Event::Sent {
                dir,
                bytes: result as u64,
            },
        );
        if resume {
            self.submit_splice_in(now, key, dir);
        }
    }

    /// The source of `dir` became readable (or failed): splice into the pipe directly.
    fn inline_splice_in(
        &mut self,
        now: Instant,
        key: crate::core::slot::SlotKey,
        dir: Dir,
        poll_result: i32,
    ) {
        if poll_result < 0 {
            // Cancelled (the core asked) or failed: either way the receive has ended.
            return self.spliced_in(now, key, dir, poll_result);
        }
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let Some(source) = io.socket(dir.source()) else {
            return;
        };
        let flow = &io.flows[dir.index()];
        let Some(pipe) = flow.pipe.as_ref() else {
            return;
        };
        let free = (pipe.capacity() as u64).saturating_sub(flow.pipe_bytes);
        let splice = crate::engine::op::Splice {
            from: source,
            to: pipe.write_end(),
            len: u32::try_from(free).unwrap_or(u32::MAX),
        };
        let result = match splice.run() {
            Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
            Err(err) => -err.raw_os_error().unwrap_or(libc::EIO),
        };
        self.spliced_in(now, key, dir, result)
    }

    fn copy_received(
        &mut self,
        now: Instant,
        key: crate::core::slot::SlotKey,
        dir: Dir,
        result: i32,
        more: bool,
        selected: Option<u16>,
    ) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let flow = io.flow(dir);
        let bid = selected.or_else(|| flow.recv_buffer.take());
        if selected.is_some() {
            self.buffers.selected(selected.unwrap_or_default());
        }
        let self_cancelled = flow.self_cancelled && !more;
        if !more {
            let armed = std::mem::take(&mut flow.armed);
            self.buffers.disarm(armed);
            flow.self_cancelled = false;
        }
        if result > 0 {
            let Some(bid) = bid else {
                tracing::error!("a receive completed without a buffer; closing");
                self.shard.abort(key);
                return;
            };
            flow.chunks.push_back(Chunk {
                bid,
                from: 0,
                to: result as u32,
            });
            flow.filling = if result as u32 >= self.buffers.size() {
                Filling::Whole
            } else {
                Filling::Part
            };
            // The core limits bytes; buffers are this engine's to limit. Small segments behind
            // a stalled sink could otherwise pin the whole ring below the byte limit, and
            // directions that stall together could pin it all (see `Buffers::share`).
            // Under pressure (below a full share) a multishot receive stops at once and the
            // direction goes on one buffer per receive: a multishot one can take a whole batch
            // of buffers before the engine sees any of them.
            // A multishot receive the rule no longer allows (under pressure, or streaming
            // over the budget; its own entry is one of the armed) goes to one buffer per
            // receive.
            let most = COPY_BUFFERS as usize;
            let share = self.buffers.share(most);
            let keep_multishot = self.buffers.may_multishot(
                most,
                flow.filling == Filling::Whole,
                self.buffers.multishot_armed().saturating_sub(1),
            );
            let too_many = more
                && (!keep_multishot || !may_take_another(flow.chunks.len(), share))
                && !flow.cancel_requested
                && !flow.self_cancelled;
            if too_many {
                flow.self_cancelled = true;
                self.submit_cancel(key, Op::Recv(dir));
            }
            let event = Event::Received {
                dir,
                bytes: result as u64,
                armed: more,
            };
            self.shard.handle_event(now, key, event);
            return;
        }
        if let Some(bid) = bid {
            self.buffers.give_back(bid);
        }
        let cancelled = flow.cancel_requested;
        match -result {
            0 => {
                self.shard.handle_event(now, key, Event::Eof { dir });
            }
            libc::ENOBUFS => {
                // The ring ran dry: a direction that holds none receives into a spill buffer
                // once readable (see `Worker::copy_recv`); one that holds some waits for
                // buffers to come back (its own, as its sink drains), invisibly to the core.
                // With a window of hot buffers, the window grows this turn.
                self.buffers.ran_dry();
                if cancelled {
                    self.shard.handle_event(now, key, Event::RecvEnded { dir });
                } else if flow.chunks.is_empty() {
                    self.wait_readable(key, dir);
                } else {
                    flow.parked = Some(Parked::NoBuffers);
                    self.counters.parked_no_buffers += 1;
                    self.starved.push((key, dir));
                }
            }
            libc::ECANCELED if self_cancelled && !cancelled => {
                // Our own cancel (too many buffers held, or buffers short): from the core's view the receive is
                // still armed; resume it once sends have drained some buffers.
                flow.parked = Some(Parked::QueueFull);
                self.counters.parked_queue_full += 1;
                let share = self.buffers.share(COPY_BUFFERS as usize);
                if may_take_another(flow.chunks.len(), share) {
                    self.submit_copy_recv(key, dir);
                }
            }
            libc::ECANCELED => {
                self.shard.handle_event(now, key, Event::RecvEnded { dir });
            }
            libc::EAGAIN if !cancelled => {
                // Still armed from the core's view: wait for readability, then receive again.
                self.wait_readable(key, dir);
            }
            libc::EAGAIN => {
                self.shard.handle_event(now, key, Event::RecvEnded { dir });
            }
            _ => {
                tracing::debug!(?dir, result, "receive failed");
                self.fail(now, key, dir.source(), op::cqe_failure(result));
            }
        }
    }

    fn spliced_in(&mut self, now: Instant, key: crate::core::slot::SlotKey, dir: Dir, result: i32) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let flow = io.flow(dir);
        flow.armed = Armed::No;
        if result > 0 {
            flow.pipe_bytes += result as u64;
            flow.spurious_wakeups = 0;
            let event = Event::Received {
                dir,
                bytes: result as u64,
                armed: false,
            };
            self.shard.handle_event(now, key, event);
            return;
        }
        let cancelled = flow.cancel_requested;
        let pipe_has_bytes = flow.pipe_bytes > 0;
        let peek = match (result, io.socket(dir.source())) {
            (0, Some(socket)) => crate::sys::peek(socket).map_err(|e| op::os_failure(&e)),
            _ => Err(Failure::Local),
        };
        let flow = io.flow(dir);
        match -result {
            0 => match peek.map(|peek| after_zero_splice(peek, pipe_has_bytes)) {
                Ok(SpliceZero::Eof) => {
                    self.shard.handle_event(now, key, Event::Eof { dir });
                }
                // A plain receive moves past the urgent mark (into the pipe, which is empty:
                // the splice just moved nothing, and pipe_bytes counts what is still in it).
                Ok(SpliceZero::Urgent) => {
                    self.counters.spurious_wakeups += 1;
                    let result = receive_into_pipe(io, dir);
                    self.spliced_in(now, key, dir, result);
                }
                Ok(SpliceZero::UrgentBehindPipe) => {
                    flow.parked = Some(Parked::PipeFull);
                    self.counters.parked_pipe_full += 1;
                }
                Err(failure) => {
                    let side = dir.source();
                    self.shard
                        .handle_event(now, key, Event::Failed { side, failure });
                }
            },
            libc::EAGAIN if cancelled => {
                self.shard.handle_event(now, key, Event::RecvEnded { dir });
            }
            libc::EAGAIN => {
                self.counters.splice_eagain += 1;
                if pipe_has_bytes {
                    // The pipe ran out of slots before bytes: resume after a splice out.
                    flow.parked = Some(Parked::PipeFull);
                    self.counters.parked_pipe_full += 1;
                } else if flow.spurious_wakeups < SPURIOUS_WAKEUPS_BEFORE_RECV {
                    // Readable, yet nothing to splice: a spurious wake-up. Poll again.
                    flow.spurious_wakeups += 1;
                    self.submit_splice_in(now, key, dir);
                } else {
                    // Readable, yet splice cannot move: TCP urgent data stops splice at its
                    // mark while poll keeps saying readable. A plain receive gets past it.
                    flow.spurious_wakeups = 0;
                    self.counters.spurious_wakeups += 1;
                    let result = receive_into_pipe(io, dir);
                    self.spliced_in(now, key, dir, result);
                }
            }
            libc::ECANCELED => {
                self.shard.handle_event(now, key, Event::RecvEnded { dir });
            }
            _ => self.fail(now, key, dir.source(), op::cqe_failure(result)),
        }
    }
}
