//! Accepting clients: at most one accept in flight per listener, armed while the process and
//! the worker have room, cancelled when either is full so that clients wait in the kernel's
//! listen backlog (see `engine::admission`).

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use socket2::Socket;

use super::conn_io::ConnIo;
use super::token::Op;
use super::worker::Worker;
use crate::core::slot::UserData;
use crate::engine::admission::{Admitted, MULTISHOT_ACCEPT_MIN_ROOM};
use crate::engine::op::{Accept, fixed};
use crate::engine::{runtime, socket};

/// After EMFILE and similar, accepting on a listener pauses this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Where a listener's accept stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AcceptState {
    /// None in flight: one is armed on the next loop turn with room.
    Idle,
    /// None in flight, and none before this time (a resource error such as EMFILE, or a
    /// submission the ring refused).
    BackingOff(Instant),
    /// One in flight (multishot: until its completion without `MORE`).
    Armed { multishot: bool },
    /// One in flight whose cancel is queued (the process or the worker is full, or shutdown
    /// began); its last completion is still to come.
    Cancelling,
}

/// Whether the operator lets a listener take clients (the admin API's enable / disable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operator {
    Enabled,
    /// No accept is armed; clients wait in the listen backlog until it is enabled again.
    Disabled,
    /// Removed by a reload: no accept is armed again, and the socket is closed once none is
    /// in flight.
    Closed,
}

/// One listening socket and its accept.
pub(super) struct Listening {
    /// Open while an accept is in flight: `stop_accepting` cancels, and the socket is closed
    /// only at the accept's last completion.
    pub socket: Option<Socket>,
    pub state: AcceptState,
    pub operator: Operator,
}

impl Listening {
    pub fn new(socket: Socket) -> Self {
        Listening {
            socket: Some(socket),
            state: AcceptState::Idle,
            operator: Operator::Enabled,
        }
    }

    fn in_flight(&self) -> bool {
        matches!(
            self.state,
            AcceptState::Armed { .. } | AcceptState::Cancelling
        )
    }
}

impl Worker {
    /// Clients this worker may take now: the process's free slots, and its own table's.
    fn accept_room(&self) -> usize {
        let table = self.worker_max.saturating_sub(self.shard.len());
        self.admission.room().min(table)
    }

    /// Every loop turn until shutdown: arm an accept on each enabled listener that has none
    /// while there is room; cancel armed ones when there is none (or the listener is disabled). A multishot accept is armed only while
    /// [`MULTISHOT_ACCEPT_MIN_ROOM`] slots are free, and cancelled (to be re-armed single-shot)
    /// below that, so that near the limit an accept hands over one client at most. Another
    /// worker's release is seen here, within one turn (the loop wakes at least every 100 ms).
    pub(super) fn steer_accepts(&mut self, now: Instant) {
        let room = self.accept_room();
        let multishot = self.plan.multishot_accept && room >= MULTISHOT_ACCEPT_MIN_ROOM;
        for index in 0..self.listeners.len() {
            let room = match self.listeners[index].operator {
                Operator::Enabled => room,
                Operator::Disabled | Operator::Closed => 0,
            };
            let listening = &mut self.listeners[index];
            if listening.operator == Operator::Closed && !listening.in_flight() {
                listening.socket = None;
            }
            match self.listeners[index].state {
                AcceptState::Armed { multishot: armed } if room == 0 || (armed && !multishot) => {
                    self.cancel_accept(index);
                }
                AcceptState::Idle if room > 0 => self.arm_accept(index, now, multishot),
                AcceptState::BackingOff(until) if room > 0 && now >= until => {
                    self.arm_accept(index, now, multishot);
                }
                _ => {}
            }
        }
    }

    /// Arm listener `index`'s accept. One the ring refuses (see `Ring::push_chain`) is tried
    /// again after `ACCEPT_BACKOFF`, like a failed accept.
    fn arm_accept(&mut self, index: usize, now: Instant, multishot: bool) {
        let listening = &mut self.listeners[index];
        let Some(socket) = &listening.socket else {
            return;
        };
        let accept = Accept {
            listener: socket.as_fd(),
        };
        let entry = if multishot {
            accept.sqe_multishot()
        } else {
            accept.sqe()
        }
        .user_data(UserData::internal_indexed(Op::Accept.code(), index as u32).0);
        // SAFETY: the listener stays open while its accept is in flight (see
        // `Listening::socket`); accept writes no user memory (null address pointers).
        if let Err(err) = unsafe { self.ring.push(&entry) } {
            self.counters.queue_failures += 1;
            tracing::warn!(worker = self.index, %err, "cannot queue an accept; backing off");
            listening.state = AcceptState::BackingOff(now + ACCEPT_BACKOFF);
            return;
        }
        listening.state = AcceptState::Armed { multishot };
        self.internal_in_flight += 1;
    }

    /// Cancel listener `index`'s armed accept; one the ring refuses is tried again next turn
    /// (or, at shutdown, not at all: the process is about to exit).
    fn cancel_accept(&mut self, index: usize) {
        let listening = &mut self.listeners[index];
        let Some(socket) = &listening.socket else {
            return;
        };
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::fd(fixed(socket.as_fd())))
            .build()
            .user_data(UserData::internal_indexed(Op::Cancel.code(), u32::MAX).0);
        // SAFETY: a cancel names its target by fd number and points to no memory.
        if unsafe { self.ring.push(&cancel) }.is_ok() {
            listening.state = AcceptState::Cancelling;
            self.internal_in_flight += 1;
        } else {
            self.counters.queue_failures += 1;
        }
    }

    /// Stop taking clients: cancel armed accepts; close idle listeners now.
    pub(super) fn stop_accepting(&mut self) {
        for index in 0..self.listeners.len() {
            match self.listeners[index].state {
                AcceptState::Armed { .. } => self.cancel_accept(index),
                AcceptState::Cancelling => {}
                AcceptState::Idle | AcceptState::BackingOff(_) => {
                    self.listeners[index].socket = None;
                }
            }
        }
    }

    /// A completion of a listener's accept.
    pub(super) fn accepted(&mut self, now: Instant, index: usize, result: i32, more: bool) {
        let stopping = self.stopping;
        let Some(listening) = self.listeners.get_mut(index) else {
            return;
        };
        if !more {
            listening.state = AcceptState::Idle;
            self.internal_in_flight = self.internal_in_flight.saturating_sub(1);
        }
        if (stopping || listening.operator == Operator::Closed) && !listening.in_flight() {
            // Shutting down, or removed: the last completion closes the listener. A client
            // accepted in the race is served like the others, within the grace period: after
            // a binary upgrade the socket lives on in the new process, and closing the client
            // would reset a connection nobody else will serve.
            listening.socket = None;
        }
        if result < 0 {
            let errno = -result;
            // ECANCELED: our own cancel. EAGAIN (io_uring may surface it on a non-blocking
            // listener) and one client's own failure: re-arm at once.
            let back_off = errno != libc::ECANCELED
                && socket::accept_failure(errno) == socket::AcceptFailure::BackOff;
            if back_off {
                self.counters.accept_errors += 1;
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of resources. Pause this listener and
                // keep serving the connections we have; the kernel queues new clients.
                if self.counters.accept_errors.is_power_of_two() {
                    tracing::warn!(
                        worker = self.index,
                        error = %std::io::Error::from_raw_os_error(errno),
                        "accept failed; backing off"
                    );
                }
                if !listening.in_flight() {
                    listening.state = AcceptState::BackingOff(now + ACCEPT_BACKOFF);
                }
            }
            return;
        }
        // SAFETY: a successful accept completion's result is a new fd that nothing else owns.
        let client = Socket::from(unsafe { OwnedFd::from_raw_fd(result) });
        // An accept armed while there was room may complete after the process filled up:
        // kept within the overshoot, closed beyond it (see `engine::admission`).
        if self.admission.admit() == Admitted::Refused {
            tracing::debug!(worker = self.index, "client closed: the process is full");
            return;
        }
        let Some(peer) = runtime::client_addr(&self.shard, index, &client) else {
            // Gone already: nothing to forward.
            self.admission.release();
            return;
        };
        // TCP_NODELAY comes from the listener (see `socket::listener`).
        if let Err((refused, _io)) = self.shard.accept(now, index, peer, ConnIo::new(client)) {
            self.admission.release();
            tracing::debug!(?refused, "client refused");
        }
    }
}
