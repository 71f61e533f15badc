//! Copy-mode sends as send bundles (Linux 6.10), through the direction's send ring.
//!
//! The core asks for one `Send` at a time per direction. Here that becomes: lease a send ring
//! (see `send_ring`), publish the queued chunks into it, and submit one bundle send, which takes
//! every published entry. Its completion reports whole chunks sent (the bundle carries
//! `MSG_WAITALL`); they leave the queue and return to the receive ring, and once nothing is
//! pending the ring goes back to the pool. Chunks received while a bundle is in flight wait for
//! the next one: the kernel chose the entries it sends when it first issued the request.
//!
//! The kernel's head is private, so the engine keeps its own (`SendRing::head`) and checks it
//! against the first buffer id each completion names. Whenever a bundle's last completion
//! leaves entries pending (it sent nothing: `ECANCELED` when the kernel gave it up, `ENOBUFS`,
//! `EAGAIN`; or its bytes ended inside a chunk or short of the last entry), the kernel may
//! already have moved its head past them (6.18 commits a selection when it takes it), so the
//! ring is reset and the chunks are published again. A closing connection's ring is reset
//! whatever its count, when `finalize` gives it back.
//!
//! A single queued chunk goes out as a plain send, and when every ring is leased the send falls
//! back to `sendmsg` (`submit.rs`); a direction never mixes these with a bundle while either
//! is in flight, since each waits for the core's next `Send`.

use std::time::Instant;

use super::buf_ring::{Buffers, may_take_another};
use super::conn_io::{FlowIo, Parked};
use super::send_ring::SendRings;
use super::token::Op;
use super::worker::{COPY_BUFFERS, Worker};
use crate::core::conn::{Dir, Event};
use crate::core::slot::{SlotKey, UserData};
use crate::engine::op::{self, SendBundle};

/// Publish the direction's queued chunks that are not in its send ring yet, as far as the ring
/// has room.
fn top_up(flow: &FlowIo, rings: &mut SendRings, buffers: &Buffers) {
    let Some(id) = flow.send_ring else {
        return;
    };
    let send_ring = rings.get_mut(id);
    let mut added = false;
    for chunk in flow.chunks.iter().skip(usize::from(send_ring.pending())) {
        if !send_ring.push(buffers.bytes(chunk.bid, chunk.from, chunk.to)) {
            break;
        }
        added = true;
    }
    if added {
        send_ring.publish();
    }
}

/// How a bundle's reported bytes matched the pending chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Consumed {
    /// Whole chunks: the ring's accounting is exact.
    Whole,
    /// They ended inside a chunk (a final completion after a partial send, when the retry
    /// failed): the rest of that chunk stays queued, and the ring must be reset, since the
    /// kernel's head has passed the chunk's entry.
    InsideChunk,
    /// More bytes than the pending chunks hold: the accounting is broken.
    Beyond,
}

/// Account `bytes` reported sent by a bundle: whole pending chunks leave the queue and go back
/// to the receive buffers; a chunk the bytes end inside keeps its unsent rest.
fn consume(
    flow: &mut FlowIo,
    rings: &mut SendRings,
    buffers: &mut Buffers,
    bytes: u32,
) -> Consumed {
    let Some(id) = flow.send_ring else {
        return Consumed::Beyond;
    };
    let send_ring = rings.get_mut(id);
    let mut left = bytes;
    let mut count = 0u16;
    let mut outcome = Consumed::Whole;
    while left > 0 {
        let Some(head) = flow
            .chunks
            .front_mut()
            .filter(|_| count < send_ring.pending())
        else {
            outcome = Consumed::Beyond;
            break;
        };
        let len = head.to - head.from;
        if left < len {
            head.from += left;
            outcome = Consumed::InsideChunk;
            break;
        }
        left -= len;
        count += 1;
        let bid = head.bid;
        flow.chunks.pop_front();
        buffers.give_back(bid);
    }
    send_ring.consumed(count);
    outcome
}

impl Worker {
    /// Carry out the core's `Send` (or its retry after `POLLOUT`) as a bundle. `false` when
    /// it should go out another way: a single chunk, or no send ring free.
    pub(super) fn bundle_send(&mut self, key: SlotKey, dir: Dir) -> bool {
        let Some(io) = self.shard.io_mut(key) else {
            return true;
        };
        let flow = &mut io.flows[dir.index()];
        if flow.send_ring.is_none() && flow.chunks.len() < 2 {
            // One buffer goes out as a plain send: a bundle of one would only add the ring's
            // bookkeeping (measured: more CPU per request; see kernel-notes.md).
            flow.bundle_owes_sent = false;
            return false;
        }
        flow.bundle_owes_sent = true;
        if flow.bundle_in_flight {
            // Only after a completion with IORING_CQE_F_MORE: the next one answers.
            return true;
        }
        if flow.send_ring.is_none() {
            match self.send_rings.lease(self.ring.raw()) {
                Some(send_ring) => flow.send_ring = Some(send_ring),
                None => {
                    flow.bundle_owes_sent = false;
                    return false;
                }
            }
        }
        top_up(flow, &mut self.send_rings, &self.buffers);
        let group = flow.send_ring.map(|id| {
            let r = self.send_rings.get(id);
            (r.group(), r.pending())
        });
        let (Some((group, pending)), Some(sink)) = (group, io.socket(dir.sink())) else {
            // An established connection has both sockets: a bug, never a panic or a stall.
            tracing::error!(?dir, "send requested without a sink socket; closing");
            self.shard.abort(key);
            return true;
        };
        if pending == 0 {
            // The core asked to send bytes this engine does not hold: a bug, never a panic.
            tracing::error!(?dir, "send requested with nothing queued; closing");
            self.shard.abort(key);
            return true;
        }
        let entry = SendBundle {
            socket: sink,
            group,
        }
        .sqe()
        .user_data(UserData::new(Op::SendBundle(dir).code(), key).0);
        io.flows[dir.index()].bundle_in_flight = true;
        io.in_flight += 1;
        self.counters.bundle_sends += 1;
        // SAFETY: the entries name bytes of buffers the direction holds until reported sent;
        // the ring's page lives in the worker, the socket in the slot, past the completion.
        unsafe { self.queue(key, &[&entry]) };
        true
    }

    /// A completion of a bundle send; `first` is the buffer id it names (the ring index of the
    /// first entry it took).
    pub(super) fn bundle_sent(
        &mut self,
        now: Instant,
        key: SlotKey,
        dir: Dir,
        result: i32,
        more: bool,
        first: Option<u16>,
    ) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let flow = io.flow(dir);
        if !more {
            flow.bundle_in_flight = false;
        }
        let head = flow.send_ring.map(|id| self.send_rings.get(id).head());
        if result > 0 {
            if first.is_none() || first != head {
                // The kernel took entries other than the ones this engine counts as next: bytes
                // went out of order. Never carry on silently; the ring is reset at close.
                self.counters.bundle_out_of_step += 1;
                tracing::error!(?dir, ?first, ?head, "send ring out of step with the kernel");
                self.shard.abort(key);
                return;
            }
            let consumed = consume(flow, &mut self.send_rings, &mut self.buffers, result as u32);
            if consumed == Consumed::Beyond {
                tracing::error!(?dir, result, "bundle reported more bytes than were queued");
                self.shard.abort(key);
                return;
            }
            flow.bundle_owes_sent = false;
            if !more {
                // Anything still pending after the last completion (the bytes ended inside a
                // chunk) has an unknown place in the kernel's ring: start clean.
                self.reset_send_ring_if_pending(key, dir);
            }
            self.release_idle_send_ring(key, dir);
            return self.report_sent(now, key, dir, result as u32);
        }
        if more {
            return;
        }
        let owed = flow.bundle_owes_sent && !flow.chunks.is_empty();
        match -result {
            libc::EAGAIN => {
                // Not seen on 6.18, where io-wq never runs a bundle and ringlb sets no
                // MSG_DONTWAIT; kept for kernels that differ. Sent nothing, but the kernel may
                // have committed its selection: the retry starts from a clean ring, after
                // POLLOUT, if the core still waits for it.
                self.reset_send_ring_if_pending(key, dir);
                self.release_idle_send_ring(key, dir);
                if owed {
                    if let Some(io) = self.shard.io_mut(key) {
                        io.flow(dir).send_waits_writable = true;
                    }
                    self.submit_poll(key, dir, Op::PollOut(dir));
                }
            }
            libc::ECANCELED => {
                // Not ours (completions of a closing connection never get here, see
                // `complete`): the kernel gave the bundle up. A request that
                // re-arms its poll 128 times (APOLL_MAX_RETRY: a long MSG_WAITALL bundle behind
                // a slowly reading peer) moves to io-wq, and io-wq runs no request marked
                // multishot, which bundle sends are: it arms poll once more and fails the
                // request with ECANCELED when the socket is already writable. Nothing was sent
                // (bytes sent before that are reported as a positive result), but the kernel
                // may have committed its selection: resend the queue from a clean ring.
                self.counters.bundle_given_up += 1;
                self.reset_send_ring_if_pending(key, dir);
                self.release_idle_send_ring(key, dir);
                if owed {
                    self.submit_copy_send(now, key, dir);
                }
            }
            0 | libc::ENOBUFS => {
                // The kernel found nothing to send. With entries pending its head is past
                // them: publish them again in a clean ring.
                self.reset_send_ring_if_pending(key, dir);
                self.release_idle_send_ring(key, dir);
                if owed {
                    self.submit_copy_send(now, key, dir);
                }
            }
            _ => {
                tracing::debug!(?dir, result, "bundle send failed");
                self.fail(now, key, dir.sink(), op::cqe_failure(result));
            }
        }
    }

    /// Give the direction's send ring back to the pool if entries are still pending in it (the
    /// pool resets it); the next bundle leases one and publishes the queue from its first
    /// chunk. Only after a final completion: nothing in flight may name the ring.
    fn reset_send_ring_if_pending(&mut self, key: SlotKey, dir: Dir) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let flow = io.flow(dir);
        let pending = flow
            .send_ring
            .is_some_and(|id| self.send_rings.get(id).pending() > 0);
        if pending && let Some(id) = flow.send_ring.take() {
            self.counters.send_ring_resets += 1;
            self.send_rings.give_back(self.ring.raw(), id);
        }
    }

    /// Give a direction's send ring back to the pool once no bundle is in flight and nothing
    /// is pending in it.
    fn release_idle_send_ring(&mut self, key: SlotKey, dir: Dir) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let flow = io.flow(dir);
        let idle = !flow.bundle_in_flight
            && flow
                .send_ring
                .is_some_and(|id| self.send_rings.get(id).pending() == 0);
        if idle && let Some(id) = flow.send_ring.take() {
            self.send_rings.give_back(self.ring.raw(), id);
        }
    }

    /// Bytes of `dir` have left through its sink (any copy-mode send): tell the core, and
    /// resume a receive that paused because the direction held too many buffers.
    pub(super) fn report_sent(&mut self, now: Instant, key: SlotKey, dir: Dir, bytes: u32) {
        let share = self.buffers.share(COPY_BUFFERS as usize);
        let resume = self.shard.io_mut(key).is_some_and(|io| {
            let flow = io.flow(dir);
            flow.parked == Some(Parked::QueueFull) && may_take_another(flow.chunks.len(), share)
        });
        self.shard.handle_event(
            now,
            key,
            Event::Sent {
                dir,
                bytes: u64::from(bytes),
            },
        );
        let still_parked = self
            .shard
            .io_mut(key)
            .is_some_and(|io| io.flow(dir).parked == Some(Parked::QueueFull));
        if resume && still_parked {
            self.submit_copy_recv(key, dir);
        }
    }
}
