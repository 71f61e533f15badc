//! The contract-respecting model engine of the property tests: the steps it may take, their
//! strategies, and the checks on every action it is handed.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringlb::config::Mode;
use ringlb::core::backend::BackendId;
use ringlb::core::conn::{
    AUTO_SPLICE_FULL_RECEIPTS, Action, CloseReason, Conn, ConnParams, Dir, Event, Failure, Side,
    Via,
};

use crate::support::*;

/// One choice of a model engine; applied only when the contract allows it, skipped otherwise.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    /// Answer the outstanding connect: 0 accepted, 1 refused, 2 timed out (engine-enforced).
    Answer(u8),
    /// Advance the clock by this many milliseconds and fire timeouts.
    Advance(u16),
    Receive {
        up: bool,
        bytes: u16,
        armed: bool,
    },
    Eof {
        up: bool,
    },
    RecvEnded {
        up: bool,
    },
    /// Answer an outstanding splice receive with `SpliceUnavailable` (no pipe to be had).
    NoPipe {
        up: bool,
    },
    /// Complete the outstanding send with this share (percent, at least one byte).
    Sent {
        up: bool,
        percent: u8,
    },
    Fail {
        client: bool,
    },
    Abort,
}

pub(crate) fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..3).prop_map(Step::Answer),
        2 => (0u16..1500).prop_map(Step::Advance),
        8 => (any::<bool>(), 1u16..3000, any::<bool>())
            .prop_map(|(up, bytes, armed)| Step::Receive { up, bytes, armed }),
        2 => any::<bool>().prop_map(|up| Step::Eof { up }),
        1 => any::<bool>().prop_map(|up| Step::RecvEnded { up }),
        1 => any::<bool>().prop_map(|up| Step::NoPipe { up }),
        6 => (any::<bool>(), 1u8..=100).prop_map(|(up, percent)| Step::Sent { up, percent }),
        1 => any::<bool>().prop_map(|client| Step::Fail { client }),
        1 => Just(Step::Abort),
    ]
}

pub(crate) fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Copy), Just(Mode::Splice), Just(Mode::Auto)]
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecvOp {
    pub(crate) via: Option<Via>,
    pub(crate) cancelled: bool,
}

/// What a contract-respecting engine knows, and the checks on every action it is handed.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) conn: Conn,
    pub(crate) params: ConnParams,
    pub(crate) candidates: Vec<BackendId>,
    pub(crate) now: Instant,
    pub(crate) connect_out: bool,
    pub(crate) attempts: Vec<BackendId>,
    pub(crate) established: bool,
    pub(crate) recv: [Option<RecvOp>; 2],
    pub(crate) send: [Option<u64>; 2],
    pub(crate) queued: [u64; 2],
    pub(crate) received: [u64; 2],
    pub(crate) sent: [u64; 2],
    pub(crate) eof: [bool; 2],
    pub(crate) shut: [bool; 2],
    pub(crate) via: [Via; 2],
    /// Consecutive full copy receipts (auto mode), and whether a streak was completed.
    pub(crate) streak: [u32; 2],
    pub(crate) wants_splice: [bool; 2],
    /// Pipes refused per direction, and whether one was refused since the last splice receive
    /// (the direction may then go back to copy).
    pub(crate) refusals: [u32; 2],
    pub(crate) fell_back: [bool; 2],
    pub(crate) failed: bool,
    pub(crate) aborted: bool,
    pub(crate) closed: Option<(CloseReason, bool)>,
    pub(crate) last_activity: Instant,
}

impl Model {
    pub(crate) fn new(mode: Mode, engine_timeout: bool, candidates: usize) -> Self {
        let t0 = Instant::now();
        let mut params = params(mode);
        if engine_timeout {
            params.connect_timeout = None;
        }
        let candidates: Vec<BackendId> = (0..candidates as u32).map(|i| BackendId(i * 3)).collect();
        let via = if mode == Mode::Splice {
            Via::Splice
        } else {
            Via::Copy
        };
        let mut model = Model {
            conn: Conn::new(t0, params, &candidates),
            params,
            candidates,
            now: t0,
            connect_out: false,
            attempts: Vec::new(),
            established: false,
            recv: [None; 2],
            send: [None; 2],
            queued: [0; 2],
            received: [0; 2],
            sent: [0; 2],
            eof: [false; 2],
            shut: [false; 2],
            via: [via; 2],
            streak: [0; 2],
            wants_splice: [false; 2],
            refusals: [0; 2],
            fell_back: [false; 2],
            failed: false,
            aborted: false,
            closed: None,
            last_activity: t0,
        };
        model.drain();
        model
    }

    pub(crate) fn limit(&self, via: Via) -> u64 {
        match via {
            Via::Copy => self.params.copy_high_water,
            Via::Splice => self.params.splice_capacity,
        }
    }

    pub(crate) fn feed(&mut self, event: Event) {
        if self.closed.is_none() && !self.failed && !self.aborted {
            match event {
                Event::Connected
                | Event::ConnectFailed { .. }
                | Event::Received { .. }
                | Event::Eof { .. }
                | Event::Sent { .. }
                | Event::PreambleSent => self.last_activity = self.now,
                Event::RecvEnded { .. }
                | Event::SpliceUnavailable { .. }
                | Event::Failed { .. } => {}
            }
        }
        self.conn.handle_event(self.now, event);
    }

    pub(crate) fn apply(&mut self, step: Step) {
        let dir = |up: bool| if up { Dir::Upstream } else { Dir::Downstream };
        if self.closed.is_some() {
            // Late completions after Close: the machine must ignore them all.
            let event = match step {
                Step::Answer(_) => Event::Connected,
                Step::Advance(ms) => {
                    self.now += Duration::from_millis(u64::from(ms));
                    self.conn.handle_timeout(self.now);
                    Event::ConnectFailed { timed_out: true }
                }
                Step::Receive { up, bytes, armed } => Event::Received {
                    dir: dir(up),
                    bytes: u64::from(bytes),
                    armed,
                },
                Step::Eof { up } => Event::Eof { dir: dir(up) },
                Step::RecvEnded { up } => Event::RecvEnded { dir: dir(up) },
                Step::NoPipe { up } => Event::SpliceUnavailable { dir: dir(up) },
                Step::Sent { up, percent } => Event::Sent {
                    dir: dir(up),
                    bytes: u64::from(percent),
                },
                Step::Fail { client } => Event::Failed {
                    side: if client { Side::Client } else { Side::Backend },
                    failure: Failure::Os(libc::ECONNRESET),
                },
                Step::Abort => {
                    self.conn.abort();
                    Event::RecvEnded { dir: Dir::Upstream }
                }
            };
            self.conn.handle_event(self.now, event);
            self.drain();
            return;
        }
        match step {
            Step::Answer(outcome) => {
                if !self.connect_out {
                    return;
                }
                self.connect_out = false;
                match outcome {
                    0 => {
                        self.established = true;
                        self.feed(Event::Connected);
                    }
                    1 => self.feed(Event::ConnectFailed { timed_out: false }),
                    _ => self.feed(Event::ConnectFailed { timed_out: true }),
                }
            }
            Step::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.conn.handle_timeout(self.now);
            }
            Step::Receive { up, bytes, armed } => {
                let d = dir(up);
                let i = d.index();
                let Some(op) = self.recv[i] else { return };
                let via = op.via.expect("recv has a via");
                let cap = match via {
                    Via::Copy => self.params.full_receipt,
                    // A pipe never holds more than its capacity.
                    Via::Splice => self.params.splice_capacity.saturating_sub(self.queued[i]),
                };
                let bytes = u64::from(bytes).min(cap);
                if bytes == 0 {
                    return;
                }
                let armed = armed && !op.cancelled;
                if !armed {
                    self.recv[i] = None;
                }
                self.queued[i] += bytes;
                self.received[i] += bytes;
                if self.params.mode != Mode::Copy && via == Via::Copy && !self.wants_splice[i] {
                    self.streak[i] = if bytes >= self.params.full_receipt {
                        self.streak[i] + 1
                    } else {
                        0
                    };
                    let needed = u32::from(AUTO_SPLICE_FULL_RECEIPTS) << self.refusals[i].min(5);
                    self.wants_splice[i] = self.streak[i] >= needed;
                }
                self.feed(Event::Received {
                    dir: d,
                    bytes,
                    armed,
                });
            }
            Step::Eof { up } => {
                let d = dir(up);
                if self.recv[d.index()].take().is_some() {
                    self.eof[d.index()] = true;
                    self.feed(Event::Eof { dir: d });
                }
            }
            Step::RecvEnded { up } => {
                let d = dir(up);
                if self.recv[d.index()].take().is_some() {
                    self.feed(Event::RecvEnded { dir: d });
                }
            }
            Step::NoPipe { up } => {
                let d = dir(up);
                let i = d.index();
                let splicing = matches!(
                    self.recv[i],
                    Some(RecvOp {
                        via: Some(Via::Splice),
                        cancelled: false
                    })
                );
                if splicing {
                    self.recv[i] = None;
                    self.streak[i] = 0;
                    self.refusals[i] += 1;
                    self.fell_back[i] = true;
                    self.feed(Event::SpliceUnavailable { dir: d });
                }
            }
            Step::Sent { up, percent } => {
                let d = dir(up);
                let i = d.index();
                let Some(queued) = self.send[i].take() else {
                    return;
                };
                let bytes = (queued * u64::from(percent) / 100).clamp(1, queued);
                self.queued[i] -= bytes;
                self.sent[i] += bytes;
                self.feed(Event::Sent { dir: d, bytes });
            }
            Step::Fail { client } => {
                let side = if client { Side::Client } else { Side::Backend };
                if self.closed.is_none() {
                    self.failed = true;
                }
                self.feed(Event::Failed {
                    side,
                    failure: Failure::Os(libc::ECONNRESET),
                });
            }
            Step::Abort => {
                if self.closed.is_none() {
                    self.aborted = true;
                }
                self.conn.abort();
            }
        }
        self.drain();
    }

    pub(crate) fn drain(&mut self) {
        let mut n = 0;
        while let Some(action) = self.conn.poll_action() {
            n += 1;
            assert!(n < 64, "poll_action never returns None");
            self.check(action);
        }
        self.check_settled();
    }

    /// Direction `i` may be shut (by `ShutdownWrite`, or the last one by `Close`).
    fn check_shut(&self, i: usize) {
        assert!(self.eof[i], "shut before Eof");
        assert_eq!(self.queued[i], 0, "shut with bytes queued");
        assert!(self.send[i].is_none(), "shut with a send out");
        assert!(!self.shut[i], "shut twice");
        assert_eq!(self.sent[i], self.received[i]);
    }

    pub(crate) fn check(&mut self, action: Action) {
        assert!(
            self.closed.is_none(),
            "{action:?} after Close {:?}",
            self.closed
        );
        match action {
            Action::Inspect | Action::SendPreamble => {
                panic!("the model inspects and prepends nothing")
            }
            Action::Connect { backend, attempt } => {
                self.check_connect_expired();
                assert!(!self.established, "{action:?}");
                assert_eq!(attempt as usize, self.attempts.len());
                assert_eq!(Some(&backend), self.candidates.get(attempt as usize));
                assert!(!self.attempts.contains(&backend), "backend tried twice");
                self.attempts.push(backend);
                self.connect_out = true;
                self.last_activity = self.now;
            }
            Action::Recv { dir, via } => {
                let i = dir.index();
                assert!(self.established, "{action:?} before connected");
                assert!(self.recv[i].is_none(), "second Recv for {dir:?}");
                assert!(!self.eof[i], "Recv after Eof for {dir:?}");
                assert!(!self.shut[i], "Recv after ShutdownWrite for {dir:?}");
                if self.params.mode == Mode::Copy {
                    assert_eq!(via, Via::Copy);
                } else {
                    if via != self.via[i] {
                        assert_eq!(self.queued[i], 0, "switched with bytes queued");
                        assert!(self.send[i].is_none(), "switched with a send out");
                    }
                    if via == Via::Splice && self.via[i] == Via::Copy {
                        assert!(self.wants_splice[i], "switched without a full streak");
                    }
                    if via == Via::Splice {
                        self.wants_splice[i] = false;
                        self.fell_back[i] = false;
                    }
                    assert!(
                        !(via == Via::Copy && self.wants_splice[i]),
                        "copy receive after a full streak"
                    );
                    assert!(
                        !(via == Via::Copy && self.via[i] == Via::Splice && !self.fell_back[i]),
                        "switched back to copy with a pipe"
                    );
                    self.via[i] = via;
                }
                assert!(
                    self.queued[i] < self.limit(via),
                    "Recv with {} queued",
                    self.queued[i]
                );
                self.recv[i] = Some(RecvOp {
                    via: Some(via),
                    cancelled: false,
                });
            }
            Action::CancelRecv { dir } => {
                let op = self.recv[dir.index()]
                    .as_mut()
                    .expect("CancelRecv without a receive");
                assert!(!op.cancelled, "CancelRecv twice");
                op.cancelled = true;
            }
            Action::Send { dir, via, queued } => {
                let i = dir.index();
                assert!(self.send[i].is_none(), "second Send for {dir:?}");
                assert!(!self.shut[i], "Send after ShutdownWrite");
                assert!(queued > 0, "empty Send");
                assert_eq!(queued, self.queued[i], "Send names the wrong queue size");
                assert_eq!(via, self.via[i], "Send by other means than the receipts");
                self.send[i] = Some(queued);
            }
            Action::ShutdownWrite { side } => {
                let dir = if side == Side::Backend {
                    Dir::Upstream
                } else {
                    Dir::Downstream
                };
                self.check_shut(dir.index());
                assert!(
                    !self.shut[1 - dir.index()],
                    "ShutdownWrite of the last direction: the close sends its FIN"
                );
                self.shut[dir.index()] = true;
            }
            Action::Close { reset, reason } => {
                match reason {
                    CloseReason::Done => {
                        assert!(!reset);
                        // The last direction to end is shut by the close itself.
                        let open: Vec<usize> = (0..2).filter(|i| !self.shut[*i]).collect();
                        assert!(open.len() <= 1, "Done before either direction shut");
                        for i in open {
                            self.check_shut(i);
                            self.shut[i] = true;
                        }
                        assert!(self.recv.iter().all(Option::is_none));
                        assert!(self.send.iter().all(Option::is_none));
                    }
                    CloseReason::NoBackend => {
                        assert!(!reset);
                        assert!(!self.established);
                        self.check_connect_expired();
                        assert_eq!(self.attempts.len(), self.candidates.len());
                    }
                    CloseReason::ClientFailed(_) | CloseReason::BackendFailed(_) => {
                        assert!(reset && self.failed)
                    }
                    CloseReason::Aborted => assert!(reset && self.aborted),
                    CloseReason::Local => panic!("closed as Local; the model never fails locally"),
                    CloseReason::Inspect(_) => panic!("refused by an inspect phase; none runs"),
                    CloseReason::QueueFull | CloseReason::QueueTimeout => {
                        panic!("closed by a queue; the model never queues")
                    }
                    CloseReason::IdleTimeout => {
                        assert!(!reset && self.established);
                        assert!(self.now >= self.last_activity + self.params.idle_timeout);
                        assert_eq!(self.shut[0], self.shut[1], "half-closed: a fin timeout");
                    }
                    CloseReason::FinTimeout(side) => {
                        assert!(!reset && self.established);
                        // Exactly one direction shut, and the one still open comes from `side`.
                        let (open, limit) = match side {
                            Side::Client => (Dir::Upstream, self.params.client_fin),
                            Side::Backend => (Dir::Downstream, self.params.server_fin),
                        };
                        assert!(!self.shut[open.index()] && self.shut[1 - open.index()]);
                        assert!(self.now >= self.last_activity + limit);
                    }
                }
                if self.failed || self.aborted {
                    assert!(reset, "a failure or abort closed gracefully: {reason:?}");
                }
                self.closed = Some((reason, reset));
                assert_eq!(self.conn.closed(), Some(reason));
            }
        }
    }

    /// A connect still outstanding when the machine moves on must have run out its deadline.
    pub(crate) fn check_connect_expired(&mut self) {
        if self.connect_out {
            let timeout = self
                .params
                .connect_timeout
                .expect("moved on from an outstanding engine-timed connect");
            assert!(
                self.now >= self.last_activity + timeout,
                "connect timed out early"
            );
            self.connect_out = false;
        }
    }

    /// After a drain: bounded memory, and no direction left waiting for nothing.
    pub(crate) fn check_settled(&self) {
        for dir in Dir::BOTH {
            let i = dir.index();
            assert_eq!(self.conn.forwarded(dir), self.received[i]);
            if let Some(RecvOp {
                via: Some(via),
                cancelled: false,
            }) = self.recv[i]
            {
                assert!(
                    self.queued[i] < self.limit(via),
                    "{dir:?}: receive left armed with {} queued",
                    self.queued[i]
                );
            }
            if self.closed.is_none() && self.established && !self.shut[i] {
                assert!(
                    self.recv[i].is_some() || self.send[i].is_some(),
                    "{dir:?} stalled: nothing outstanding and not shut ({self:?})"
                );
            }
        }
        if self.closed.is_none() {
            if !self.established {
                assert!(self.connect_out, "connecting with no connect outstanding");
            }
            assert!(!self.failed && !self.aborted, "failure did not close");
        }
    }

    /// Complete everything without failures until the connection closes.
    pub(crate) fn finish(&mut self) {
        for _ in 0..200 {
            if self.closed.is_some() {
                return;
            }
            if self.connect_out {
                self.apply(Step::Answer(0));
                continue;
            }
            for up in [true, false] {
                let i = usize::from(!up);
                if self.send[i].is_some() {
                    self.apply(Step::Sent { up, percent: 100 });
                } else if self.recv[i].is_some() {
                    self.apply(Step::Eof { up });
                }
            }
        }
        panic!("connection never finished: {self:?}");
    }
}
