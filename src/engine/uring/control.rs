//! The io_uring worker's side of the control path: a poll on the inbox's eventfd that wakes
//! the ring's wait when a message arrives, and [`Controlled`] for the shared runtime.

use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, types};

use super::accept::{Listening, Operator};
use super::token::Op;
use super::worker::{TRAITS, Worker};
use crate::config::Config;
use crate::core::balance::PoolSnapshot;
use crate::core::slot::UserData;
use crate::engine::inbox::WorkerReport;
use crate::engine::op::fixed;
use crate::engine::runtime::{self, Controlled, Usage};

/// Whether the poll on the inbox's eventfd is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// Not in flight: armed at the start of the next loop turn.
    Idle,
    Armed,
}

impl Worker {
    /// Once per loop turn, after its wait: take what the inbox holds, then make sure the next
    /// wait ends when more arrives. The poll is single-shot and armed after the drain, so a
    /// message sent at any moment is either drained now or completes the poll (the eventfd
    /// is readable from its write until `Inbox::rearm`).
    pub(super) fn serve_inbox(&mut self) {
        let inbox = Rc::clone(&self.inbox);
        runtime::apply_inbox(&inbox, self);
        if self.wake == Wake::Idle {
            self.arm_wake();
        }
    }

    fn arm_wake(&mut self) {
        let poll = opcode::PollAdd::new(fixed(self.inbox.wake_fd()), libc::POLLIN as u32)
            .build()
            .user_data(UserData::internal_indexed(Op::Wake.code(), 0).0);
        // SAFETY: a poll names its fd by number and points to no memory; the eventfd lives in
        // `self.inbox` (shared with the control side), open for the worker's whole life.
        match unsafe { self.ring.push(&poll) } {
            Ok(()) => self.wake = Wake::Armed,
            // Tried again next turn; meanwhile messages wait at most `MAX_WAIT`.
            Err(_) => self.counters.queue_failures += 1,
        }
    }

    /// Once per loop turn: run the UDP relay if a flow is due to expire, and make sure the
    /// next wait ends when one of its sockets becomes readable. Like the wake poll, the poll
    /// is single-shot and armed after the run: the relay's epoll is level-triggered, so
    /// what the run left unread completes the next poll at once.
    pub(super) fn serve_udp(&mut self, now: Instant) {
        if self.udp.is_empty() {
            return;
        }
        if self.udp.next_timeout().is_some_and(|at| at <= now) {
            self.udp.run(now);
        }
        self.arm_udp_receives();
        if self.udp_poll == Wake::Idle {
            let poll = opcode::PollAdd::new(fixed(self.udp.fd()), libc::POLLIN as u32)
                .build()
                .user_data(UserData::internal_indexed(Op::Udp.code(), 0).0);
            // SAFETY: a poll names its fd by number and points to no memory; the relay's
            // epoll fd lives in `self.udp` for the worker's whole life (its sockets close
            // at shutdown, the epoll fd only when the worker is dropped, after the ring).
            match unsafe { self.ring.push(&poll) } {
                Ok(()) => self.udp_poll = Wake::Armed,
                Err(_) => self.counters.queue_failures += 1,
            }
        }
    }

    /// The UDP relay's poll completed: something is readable (or the poll failed; re-armed
    /// all the same).
    pub(super) fn udp_ready(&mut self, now: Instant) {
        self.udp_poll = Wake::Idle;
        self.udp.run(now);
    }

    /// The wake poll completed: a message arrived (drained at the next turn's start), or the
    /// poll failed (re-armed all the same).
    pub(super) fn woken(&mut self) {
        self.inbox.rearm();
        self.wake = Wake::Idle;
    }
}

impl Controlled for Worker {
    fn update_pool(&mut self, pool: usize, snapshot: Arc<PoolSnapshot>) {
        self.udp.update_pool(pool, &snapshot);
        self.shard.update_pool(pool, snapshot);
    }

    fn admit(&mut self, grant: crate::core::capacity::Grant) {
        self.shard.admit(std::time::Instant::now(), grant);
    }

    fn set_accepting(&mut self, listener: usize, on: bool) {
        let Some(listening) = self.listeners.get_mut(listener) else {
            return;
        };
        let operator = if on {
            Operator::Enabled
        } else {
            Operator::Disabled
        };
        if listening.operator != operator && listening.operator != Operator::Closed {
            listening.operator = operator;
            runtime::log_accepting(self.index, listener, on);
        }
        // `steer_accepts` arms or cancels at this turn.
    }

    fn reconfigure(&mut self, config: &Config) {
        runtime::reconfigure(
            (&mut self.shard, &mut self.udp),
            &mut self.logging,
            config,
            &TRAITS,
        );
        // Read by the kernel with each connect's linked timeout, from the next connect on.
        self.connect_timeout = types::Timespec::from(config.timeouts.connect);
    }

    fn add_listener(&mut self, listener: usize, socket: socket2::Socket) {
        if listener != self.listeners.len() || self.stopping {
            runtime::log_listener_refused(self.index, listener, self.listeners.len());
            return;
        }
        self.listeners.push(Listening::new(socket));
        runtime::log_listener(self.index, listener, true);
        // `steer_accepts` arms its accept at this turn.
    }

    fn close_listener(&mut self, listener: usize) {
        if let Some(listening) = self.listeners.get_mut(listener) {
            // `steer_accepts` cancels its accept and closes the socket.
            listening.operator = Operator::Closed;
            runtime::log_listener(self.index, listener, false);
        }
    }

    fn listening(&self) -> Vec<(usize, std::os::fd::BorrowedFd<'_>)> {
        if self.stopping {
            return Vec::new();
        }
        self.listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.operator != Operator::Closed)
            .filter_map(|(i, l)| l.socket.as_ref().map(|s| (i, s.as_fd())))
            .collect()
    }

    fn report(&self) -> WorkerReport {
        let usage = Usage {
            loop_turns: self.turns,
            buffers_in_use: u64::from(self.buffers.held()) + u64::from(self.buffers.spilled().0),
            pipes_in_use: self.pipes.stats().in_use as u64,
            access_log_dropped: self.logging.dropped(),
        };
        runtime::report(self.index, &self.shard, usage, &self.udp)
    }
}
