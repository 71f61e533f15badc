//! The per-connection state machine: which operation each side needs next.
//!
//! A [`Conn`] knows nothing of sockets, buffers or pipes. The engine tells it what happened
//! ([`Event`]) and asks it what to do next ([`Action`]); it carries out the action with whatever
//! mechanism it has (an SQE, a non-blocking syscall, a blocking syscall) and reports the result.
//!
//! # Call order
//! The order is fixed, as in quinn-proto:
//! 1. feed every new result with [`Conn::handle_event`], and call [`Conn::handle_timeout`] when
//!    the deadline from [`Conn::poll_timeout`] has passed;
//! 2. drain [`Conn::poll_action`] until it returns `None`, carrying out each action;
//! 3. read [`Conn::poll_timeout`] and arm a timer for it.
//!
//! # What the engine promises
//! - At most one `Recv` and one `Send` are outstanding per direction; the machine never asks for
//!   a second before the first has reported back. An engine may report one send in parts (a
//!   send bundle that posts several completions): each part is a `Sent`, the first one counts
//!   as the report, and a `Send` the machine asks for meanwhile waits in the engine behind the
//!   parts still in flight. `Sent` never reports more bytes than are queued.
//! - A `Recv { via: Splice }` the engine cannot carry out for want of a pipe (its per-worker
//!   limit, or the kernel refusing one) is answered with `SpliceUnavailable`, never with a
//!   failure: the direction then forwards by copy (see [`Event::SpliceUnavailable`]).
//! - `Received { armed: true }` means the receive operation is still armed (multishot) and will
//!   report again; `armed: false` means it has ended and another `Recv` is needed for more data.
//! - Bytes reported received for a direction stay queued, in order, until reported `Sent`.
//! - After `Close`, the engine cancels what is outstanding, closes both sockets and frees the
//!   connection once the last completion has arrived. Events after `Close` are ignored.

use std::time::{Duration, Instant};

use crate::core::backend::BackendId;

mod flow;
mod vocabulary;

use flow::Flow;
pub use vocabulary::*;

/// Most backends one connection tries (the first pick and its fallbacks).
pub const MAX_CANDIDATES: usize = 8;

/// In `auto` mode, this many consecutive full-size receipts mark a direction as bulk, and it
/// switches to splice (HAProxy's splice-auto switches when its buffer fills up).
pub const AUTO_SPLICE_FULL_RECEIPTS: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the client's first bytes (a PROXY header, a ClientHello) before a backend is
    /// picked; the shard decides from them (see [`crate::core::inspect`]) and moves the
    /// connection on with [`Conn::place`] or [`Conn::refuse`], at the latest at `deadline`.
    Inspecting {
        deadline: Instant,
    },
    /// In the waiting queue (every eligible backend was full): nothing is read from the client
    /// until [`Conn::admit`]; at `deadline` the connection closes, with a reset if `reset`.
    Waiting {
        deadline: Instant,
        reset: bool,
    },
    Connecting {
        issued: bool,
        deadline: Option<Instant>,
    },
    Established,
    Closing {
        reset: bool,
        reason: CloseReason,
    },
    Closed(CloseReason),
}

/// One proxied connection's state.
#[derive(Clone, Debug)]
pub struct Conn {
    params: ConnParams,
    candidates: [BackendId; MAX_CANDIDATES],
    candidate_count: u8,
    attempt: u8,
    phase: Phase,
    flows: [Flow; 2],
    last_activity: Instant,
    preamble: Preamble,
    intake: Intake,
}

/// Where the preamble to the backend stands: what goes before the forwarded bytes (the PROXY
/// header of `send_proxy`, the bytes the inspect phase read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preamble {
    /// None is sent, or it is out already.
    Done,
    /// To send once connected.
    Due,
    /// Asked for: nothing else goes to the backend until it is written.
    Sending,
}

/// How the client's bytes are read: by the inspect phase's reads or by the upstream flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intake {
    /// By the upstream flow (no inspect read is outstanding).
    Flows,
    /// An inspect read is to be asked for.
    Wanted,
    /// An inspect read is outstanding: the upstream flow waits for its report.
    Reading,
}

impl Conn {
    /// A connection accepted at `now` that will try `candidates` in order (at most
    /// [`MAX_CANDIDATES`] are used). With no candidates it closes at once.
    pub fn new(now: Instant, params: ConnParams, candidates: &[BackendId]) -> Self {
        let mut list = [BackendId(0); MAX_CANDIDATES];
        let count = candidates.len().min(MAX_CANDIDATES);
        list[..count].copy_from_slice(&candidates[..count]);
        let via = match params.mode {
            Mode::Splice => Via::Splice,
            Mode::Copy | Mode::Auto => Via::Copy,
        };
        let phase = if count == 0 {
            Phase::Closing {
                reset: false,
                reason: CloseReason::NoBackend,
            }
        } else {
            Phase::Connecting {
                issued: false,
                deadline: None,
            }
        };
        Conn {
            params,
            candidates: list,
            candidate_count: count as u8,
            attempt: 0,
            phase,
            flows: [Flow::new(via); 2],
            last_activity: now,
            preamble: Preamble::Done,
            intake: Intake::Flows,
        }
    }

    /// A connection accepted at `now` whose first bytes are inspected before a backend is
    /// picked: it asks for [`Action::Inspect`] reads until the shard places or refuses it,
    /// and the shard decides at `deadline` if it has not by then.
    pub fn inspecting(now: Instant, params: ConnParams, deadline: Instant) -> Self {
        let mut conn = Conn::new(now, params, &[]);
        conn.phase = Phase::Inspecting { deadline };
        conn.intake = Intake::Wanted;
        conn
    }

    /// When the inspect phase must decide, while it runs.
    pub fn inspecting_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Inspecting { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// An inspect read reported (its bytes went to the shard); with `more`, ask for another.
    pub fn inspect_read(&mut self, now: Instant, more: bool) {
        if self.intake == Intake::Reading {
            self.last_activity = now;
            self.intake = if more && self.inspecting_until().is_some() {
                Intake::Wanted
            } else {
                Intake::Flows
            };
        }
    }

    /// End the inspect phase by taking `next`'s phase and backends (a connection the shard
    /// built for the client as if it were new: connecting, waiting or refused), keeping what
    /// this one knows of the client's side (a read still outstanding, its end of stream).
    /// Ignored unless inspecting.
    pub fn place(&mut self, next: Conn) {
        if self.inspecting_until().is_none() {
            return;
        }
        let (intake, upstream) = (self.intake, self.flows[Dir::Upstream.index()]);
        *self = next;
        self.intake = match intake {
            Intake::Wanted => Intake::Flows,
            other => other,
        };
        self.flows[Dir::Upstream.index()].eof = upstream.eof;
    }

    /// End the inspect phase by closing for `reason`, with a reset if `reset`.
    pub fn refuse(&mut self, reason: CloseReason, reset: bool) {
        if self.inspecting_until().is_some() {
            self.phase = Phase::Closing { reset, reason };
        }
    }

    /// A connection accepted at `now` that waits in the queue until [`Conn::admit`], and
    /// closes for [`CloseReason::QueueTimeout`] (with a reset if `reset`) at `deadline`.
    pub fn waiting(now: Instant, params: ConnParams, deadline: Instant, reset: bool) -> Self {
        let mut conn = Conn::new(now, params, &[]);
        conn.phase = Phase::Waiting { deadline, reset };
        conn
    }

    /// A connection accepted at `now` and turned away at once for `reason` (the waiting queue
    /// is full, or there is none), with a reset if `reset`.
    pub fn refused(now: Instant, params: ConnParams, reason: CloseReason, reset: bool) -> Self {
        let mut conn = Conn::new(now, params, &[]);
        conn.phase = Phase::Closing { reset, reason };
        conn
    }

    /// Leave the waiting queue at `now` and try `candidates` in order (the first holds the slot
    /// the queue granted); with none (every backend went down meanwhile), close for
    /// [`CloseReason::NoBackend`]. False, and nothing changes, unless the connection is
    /// waiting.
    pub fn admit(&mut self, now: Instant, candidates: &[BackendId]) -> bool {
        if !self.is_waiting() {
            return false;
        }
        if candidates.is_empty() {
            self.phase = Phase::Closing {
                reset: false,
                reason: CloseReason::NoBackend,
            };
            return true;
        }
        let count = candidates.len().min(MAX_CANDIDATES);
        self.candidates[..count].copy_from_slice(&candidates[..count]);
        self.candidate_count = count as u8;
        self.attempt = 0;
        self.last_activity = now;
        self.phase = Phase::Connecting {
            issued: false,
            deadline: None,
        };
        true
    }

    /// Pass over the backend of the connect just handed out, before it is carried out (it
    /// turned out to be at its connection limit), to the next candidate; with none left, close
    /// for [`CloseReason::NoBackend`]. False, and nothing changes, unless a connect was the last
    /// action.
    pub fn skip_candidate(&mut self) -> bool {
        if !matches!(self.phase, Phase::Connecting { issued: true, .. }) {
            return false;
        }
        self.next_candidate();
        true
    }

    /// Send the backend of the connect in progress a preamble as soon as it is connected,
    /// before anything else (its `send_proxy` header, the bytes the inspect phase read). Call
    /// it before reporting `Connected`; ignored in any other phase.
    pub fn send_preamble(&mut self) {
        if matches!(self.phase, Phase::Connecting { issued: true, .. }) {
            self.preamble = Preamble::Due;
        }
    }

    /// Whether the connection waits in the queue.
    pub fn is_waiting(&self) -> bool {
        matches!(self.phase, Phase::Waiting { .. })
    }

    /// The backend of the current (or last) connect attempt; `None` once every candidate failed.
    pub fn backend(&self) -> Option<BackendId> {
        (self.attempt < self.candidate_count).then(|| self.candidates[self.attempt as usize])
    }

    /// True once the backend connection is up and until the connection closes.
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// `Some(reason)` once `Close` has been handed out.
    pub fn closed(&self) -> Option<CloseReason> {
        match self.phase {
            Phase::Closed(reason) => Some(reason),
            _ => None,
        }
    }

    /// Bytes forwarded in `dir` so far.
    pub fn forwarded(&self, dir: Dir) -> u64 {
        self.flows[dir.index()].forwarded
    }

    /// How `dir` currently moves its bytes.
    pub fn via(&self, dir: Dir) -> Via {
        self.flows[dir.index()].via
    }

    /// Auto mode with `loopback_copy`: the client (`client`) or the backend (`backend`) is on
    /// this host's loopback, so the direction toward it keeps copying. Splicing pays off when
    /// the pages go out through a NIC; toward a local socket its receiver pays more than the
    /// copies saved (kernel-notes.md, "Copy or splice toward the loopback").
    pub fn peers_on_loopback(&mut self, client: bool, backend: bool) {
        if self.params.mode != Mode::Auto || !self.params.loopback_copy {
            return;
        }
        for (dir, local) in [(Dir::Upstream, backend), (Dir::Downstream, client)] {
            self.flows[dir.index()].may_auto_splice &= !local;
        }
    }

    /// Feed one result from the engine.
    pub fn handle_event(&mut self, now: Instant, event: Event) {
        // A waiting connection has nothing outstanding but, after an inspect phase, the read
        // it may have left in flight.
        let reading = self.intake == Intake::Reading;
        if matches!(self.phase, Phase::Closing { .. } | Phase::Closed(_))
            || (matches!(self.phase, Phase::Waiting { .. }) && !reading)
        {
            return;
        }
        match event {
            Event::Connected => {
                if matches!(self.phase, Phase::Connecting { issued: true, .. }) {
                    self.phase = Phase::Established;
                    self.last_activity = now;
                }
            }
            Event::ConnectFailed { .. } => {
                if matches!(self.phase, Phase::Connecting { issued: true, .. }) {
                    self.last_activity = now;
                    self.next_candidate();
                }
            }
            Event::Received { dir, bytes, armed } => {
                self.last_activity = now;
                // `auto`, or `splice` with a direction that fell back to copy.
                let may_splice = self.params.mode != Mode::Copy;
                let full = bytes >= self.params.full_receipt;
                self.flows[dir.index()].received(bytes, armed, may_splice, full);
            }
            Event::SpliceUnavailable { dir } => self.flows[dir.index()].splice_refused(),
            Event::RecvEnded { dir } => self.flows[dir.index()].recv_ended(),
            Event::Eof { dir } => {
                self.last_activity = now;
                if dir == Dir::Upstream && reading {
                    // The end of the inspect read: the client's side is over.
                    self.intake = Intake::Flows;
                }
                self.flows[dir.index()].ended();
            }
            Event::Sent { dir, bytes } => {
                self.last_activity = now;
                self.flows[dir.index()].sent(bytes);
            }
            Event::PreambleSent => {
                if self.preamble == Preamble::Sending {
                    self.preamble = Preamble::Done;
                    self.last_activity = now;
                }
            }
            Event::Failed { side, failure } => {
                let reason = match side {
                    Side::Client => CloseReason::ClientFailed(failure),
                    Side::Backend => CloseReason::BackendFailed(failure),
                };
                self.phase = Phase::Closing {
                    reset: true,
                    reason,
                };
            }
        }
    }

    fn next_candidate(&mut self) {
        self.attempt += 1;
        self.phase = if self.attempt < self.candidate_count {
            Phase::Connecting {
                issued: false,
                deadline: None,
            }
        } else {
            Phase::Closing {
                reset: false,
                reason: CloseReason::NoBackend,
            }
        };
    }

    /// The inactivity limit that applies now, and the reason a close for it gives: the idle
    /// timeout, or a fin timeout while exactly one direction has been shut down.
    fn inactivity(&self) -> (Duration, CloseReason) {
        let [up, down] = &self.flows;
        match (up.shut, down.shut) {
            // ringlb sent its FIN to the client; waiting for the client's direction to end.
            (false, true) => (
                self.params.client_fin,
                CloseReason::FinTimeout(Side::Client),
            ),
            // ringlb sent its FIN to the backend; waiting for the backend's direction to end.
            (true, false) => (
                self.params.server_fin,
                CloseReason::FinTimeout(Side::Backend),
            ),
            _ => (self.params.idle_timeout, CloseReason::IdleTimeout),
        }
    }

    /// Act on the passing of time: queue, connect, idle and fin timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (limit, reason) = self.inactivity();
        match self.phase {
            Phase::Waiting { deadline, reset } if now >= deadline => {
                self.phase = Phase::Closing {
                    reset,
                    reason: CloseReason::QueueTimeout,
                };
            }
            Phase::Connecting {
                issued: true,
                deadline: Some(deadline),
            } if now >= deadline => {
                // The next attempt's deadline counts from now.
                self.last_activity = now;
                self.next_candidate();
            }
            Phase::Established if now >= self.last_activity + limit => {
                self.phase = Phase::Closing {
                    reset: false,
                    reason,
                };
            }
            _ => {}
        }
    }

    /// Close at once: the shutdown grace period is over.
    pub fn abort(&mut self) {
        self.reset_now(CloseReason::Aborted);
    }

    /// Close at once: the engine cannot carry the connection on.
    pub fn fail_locally(&mut self) {
        self.reset_now(CloseReason::Local);
    }

    fn reset_now(&mut self, reason: CloseReason) {
        if !matches!(self.phase, Phase::Closed(_)) {
            self.phase = Phase::Closing {
                reset: true,
                reason,
            };
        }
    }

    /// The next action to carry out, or `None` when nothing more is needed until an event.
    pub fn poll_action(&mut self) -> Option<Action> {
        match self.phase {
            Phase::Connecting { issued: false, .. } => {
                // `last_activity` is the time of the event that led here (accept or failure).
                let deadline = self.params.connect_timeout.map(|t| self.last_activity + t);
                self.phase = Phase::Connecting {
                    issued: true,
                    deadline,
                };
                Some(Action::Connect {
                    backend: self.candidates[self.attempt as usize],
                    attempt: u32::from(self.attempt),
                })
            }
            Phase::Inspecting { .. } if self.intake == Intake::Wanted => {
                self.intake = Intake::Reading;
                Some(Action::Inspect)
            }
            Phase::Inspecting { .. }
            | Phase::Waiting { .. }
            | Phase::Connecting { issued: true, .. }
            | Phase::Closed(_) => None,
            Phase::Closing { reset, reason } => {
                self.phase = Phase::Closed(reason);
                Some(Action::Close { reset, reason })
            }
            // The preamble waits for an inspect read still out: it may bring more of it.
            Phase::Established => match (self.preamble, self.intake) {
                (Preamble::Due, Intake::Flows) => {
                    self.preamble = Preamble::Sending;
                    Some(Action::SendPreamble)
                }
                (Preamble::Due | Preamble::Sending, _) => None,
                (Preamble::Done, _) => self.poll_established(),
            },
        }
    }

    fn poll_established(&mut self) -> Option<Action> {
        for dir in Dir::BOTH {
            if let Some(action) = self.poll_flow(dir) {
                return Some(action);
            }
        }
        if self.flows.iter().all(Flow::done) {
            self.phase = Phase::Closed(CloseReason::Done);
            return Some(Action::Close {
                reset: false,
                reason: CloseReason::Done,
            });
        }
        None
    }

    fn poll_flow(&mut self, dir: Dir) -> Option<Action> {
        // The client is read by the inspect read still out, not by the flow, until it reports.
        let intake_busy = dir == Dir::Upstream && self.intake != Intake::Flows;
        let other_done = self.flows[1 - dir.index()].done();
        self.flows[dir.index()].poll(dir, &self.params, intake_busy, other_done)
    }

    /// When [`Conn::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { deadline, .. } | Phase::Inspecting { deadline } => Some(deadline),
            Phase::Connecting { deadline, .. } => deadline,
            Phase::Established => Some(self.last_activity + self.inactivity().0),
            Phase::Closing { .. } | Phase::Closed(_) => None,
        }
    }
}
