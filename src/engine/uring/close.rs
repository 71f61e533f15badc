//! Closing a connection: half-close a direction that ended, cancel what a closing connection
//! has in flight, and once the last completion has arrived, give back its buffers, pipe and
//! send rings and close its sockets.

use std::os::fd::{AsFd, IntoRawFd};

use io_uring::{opcode, types};
use socket2::Socket;

use super::submit::tag;
use super::token::Op;
use super::worker::Worker;
use crate::core::conn::Side;
use crate::core::slot::{SlotKey, UserData};
use crate::engine::op::{Close, Shutdown, fixed};
use crate::engine::socket;

impl Worker {
    /// Begin closing: cancel everything in flight; the slot is finalized when the last
    /// completion arrives (or now, if nothing is in flight).
    pub(super) fn close(&mut self, key: SlotKey, reset: bool) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        io.closing = Some(reset);
        for flow in &mut io.flows {
            flow.parked = None;
        }
        if io.in_flight == 0 {
            self.finalize(key);
            return;
        }
        self.cancel_all(key);
    }

    /// Cancel everything a closing connection has in flight, by its sockets' fds. If the ring
    /// refuses a cancel, the connection owes it and `retry_cancels` queues them again: what it
    /// would cancel (a receive on an idle socket, say) might never complete otherwise, and the
    /// slot would never be freed. Cancelling twice is harmless.
    fn cancel_all(&mut self, key: SlotKey) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let fds = [Side::Client, Side::Backend].map(|side| io.socket(side).map(fixed));
        let mut refused = false;
        for fd in fds.into_iter().flatten() {
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::fd(fd).all())
                .build()
                .user_data(tag(Op::Cancel, key));
            // SAFETY: a cancel names its targets by fd number and points to no memory.
            match unsafe { self.ring.push(&cancel) } {
                Ok(()) => io.in_flight += 1,
                Err(_) => refused = true,
            }
        }
        io.cancel_sent = !refused;
        if refused {
            self.counters.queue_failures += 1;
            self.owed_cancels.push(key);
        }
    }

    /// Queue the cancels closing connections still owe (see `cancel_all`).
    pub(super) fn retry_cancels(&mut self) {
        for key in std::mem::take(&mut self.owed_cancels) {
            let owed = self
                .shard
                .io_mut(key)
                .is_some_and(|io| io.closing.is_some() && !io.cancel_sent);
            if owed {
                self.cancel_all(key);
            }
        }
    }

    /// Free a closed connection whose last completion has arrived: return its buffers and
    /// pipes, close its sockets (abortively for a reset), and release its slot.
    pub(super) fn finalize(&mut self, key: SlotKey) {
        let Some(io) = self.shard.release(key) else {
            return;
        };
        self.admission.release();
        for flow in io.flows {
            // A receive still marked armed never reached the kernel (the ring refused it),
            // or its last completion was not seen: either way it claims no buffers now.
            self.buffers.disarm(flow.armed);
            for chunk in flow.chunks {
                self.buffers.give_back(chunk.bid);
            }
            if let Some(bid) = flow.recv_buffer {
                self.buffers.give_back(bid);
            }
            if let Some(pipe) = flow.pipe {
                self.pipes.put(pipe, flow.pipe_bytes == 0);
            }
            if let Some(id) = flow.send_ring {
                self.send_rings.give_back_after_close(self.ring.raw(), id);
            }
        }
        let reset = io.closing == Some(true);
        for socket in std::iter::once(io.client).chain(io.backend) {
            if reset {
                let _ = socket::set_reset_on_close(&socket);
            }
            self.close_socket(socket);
        }
    }

    /// Close a socket nothing refers to any more, with the loop turn's next submit rather than
    /// a syscall of its own; if the entry cannot be queued, close it at once.
    fn close_socket(&mut self, socket: Socket) {
        let entry = Close {
            socket: socket.as_fd(),
        }
        .sqe()
        .user_data(UserData::internal_indexed(Op::Close.code(), 0).0);
        // SAFETY: the fd stays open until the kernel closes it: on success it is handed over
        // below and nothing in user space uses or closes it again.
        if unsafe { self.ring.push(&entry) }.is_ok() {
            let _handed_to_the_kernel = socket.into_raw_fd();
        }
        // On failure `socket` is dropped here, which closes it.
    }

    /// `ShutdownWrite { side }`: half-close, once everything queued for `side` has gone.
    pub(super) fn shutdown_write(&mut self, key: SlotKey, side: Side) {
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        let Some(socket) = io.socket(side) else {
            return;
        };
        if self.plan.inline_shutdown {
            // `IORING_OP_SHUTDOWN` never runs inline: the kernel hands every one to an io-wq
            // thread, a wakeup and a context switch for a call that does not block. As with
            // its completion, a failure is left to the sockets' next operations to report.
            if let Err(err) = (Shutdown { socket }).run() {
                tracing::debug!(?key, ?side, %err, "shutdown(SHUT_WR) failed");
            }
            return;
        }
        let entry = Shutdown { socket }.sqe().user_data(tag(Op::Shutdown, key));
        io.in_flight += 1;
        // SAFETY: the socket lives in the slot until the completion arrived.
        unsafe { self.queue(key, &[&entry]) }
    }
}
