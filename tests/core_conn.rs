//! Focused scenarios and property tests for the per-connection state machine ([`Conn`]).
//!
//! The scenarios walk one connection through a script of engine results on a virtual clock and
//! check the exact actions that come out. The property tests drive a `Conn` with generated
//! scripts: a contract-respecting model engine (every event is one the engine contract in
//! `conn.rs` allows) whose every action is checked against that contract, and an adversarial one
//! that feeds arbitrary events and only asks that the machine neither panics nor speaks after
//! `Close`.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringlb::config::Mode;
use ringlb::core::backend::BackendId;
use ringlb::core::conn::{
    AUTO_SPLICE_FULL_RECEIPTS, Action, CloseReason, Conn, ConnParams, Dir, Event, Side, Via,
};

const FULL: u64 = 1024;
const HIGH_WATER: u64 = 4 * FULL;
const PIPE: u64 = 8 * FULL;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_secs(1);

fn params(mode: Mode) -> ConnParams {
    ConnParams {
        connect_timeout: Some(CONNECT_TIMEOUT),
        idle_timeout: IDLE,
        mode,
        copy_high_water: HIGH_WATER,
        splice_capacity: PIPE,
        full_receipt: FULL,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ids(list: &[u32]) -> Vec<BackendId> {
    list.iter().copied().map(BackendId).collect()
}

fn drain(conn: &mut Conn) -> Vec<Action> {
    let mut out = Vec::new();
    while let Some(action) = conn.poll_action() {
        out.push(action);
        assert!(out.len() < 64, "poll_action never returns None: {out:?}");
    }
    out
}

fn recv(dir: Dir, via: Via) -> Action {
    Action::Recv { dir, via }
}

fn send(dir: Dir, via: Via, queued: u64) -> Action {
    Action::Send { dir, via, queued }
}

fn got(dir: Dir, bytes: u64, armed: bool) -> Event {
    Event::Received { dir, bytes, armed }
}

/// A connection in `mode`, connected at `t0 + 1ms`, with both receives armed.
fn established(t0: Instant, mode: Mode) -> Conn {
    let mut conn = Conn::new(t0, params(mode), &ids(&[0, 1]));
    assert_eq!(
        drain(&mut conn),
        [Action::Connect {
            backend: BackendId(0),
            attempt: 0
        }]
    );
    conn.handle_event(t0 + ms(1), Event::Connected);
    let via = if mode == Mode::Splice {
        Via::Splice
    } else {
        Via::Copy
    };
    assert_eq!(
        drain(&mut conn),
        [recv(Dir::Upstream, via), recv(Dir::Downstream, via)]
    );
    assert!(conn.is_established());
    conn
}

#[test]
fn copy_round_trip_with_partial_sends_and_half_close_ends_done() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Copy);
    let t = t0 + ms(2);
    conn.handle_event(t, got(Dir::Upstream, 500, true));
    assert_eq!(drain(&mut conn), [send(Dir::Upstream, Via::Copy, 500)]);
    // A second receipt while the send is out: no second send.
    conn.handle_event(t, got(Dir::Upstream, 300, true));
    assert_eq!(drain(&mut conn), []);
    // Partial send: the rest (200 unsent + 300 new) goes out next, in one send.
    conn.handle_event(
        t,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: 300,
        },
    );
    assert_eq!(drain(&mut conn), [send(Dir::Upstream, Via::Copy, 500)]);
    // The client half-closes while bytes are still in flight: no shutdown yet.
    conn.handle_event(t, Event::Eof { dir: Dir::Upstream });
    assert_eq!(drain(&mut conn), []);
    conn.handle_event(
        t,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: 499,
        },
    );
    assert_eq!(drain(&mut conn), [send(Dir::Upstream, Via::Copy, 1)]);
    conn.handle_event(
        t,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: 1,
        },
    );
    assert_eq!(
        drain(&mut conn),
        [Action::ShutdownWrite {
            side: Side::Backend
        }]
    );
    // Downstream: a single-shot receipt is re-armed after the send is issued.
    conn.handle_event(t, got(Dir::Downstream, 10, false));
    assert_eq!(
        drain(&mut conn),
        [
            send(Dir::Downstream, Via::Copy, 10),
            recv(Dir::Downstream, Via::Copy)
        ]
    );
    conn.handle_event(
        t,
        Event::Sent {
            dir: Dir::Downstream,
            bytes: 10,
        },
    );
    conn.handle_event(
        t,
        Event::Eof {
            dir: Dir::Downstream,
        },
    );
    assert_eq!(
        drain(&mut conn),
        [
            Action::ShutdownWrite { side: Side::Client },
            Action::Close {
                reset: false,
                reason: CloseReason::Done
            }
        ]
    );
    assert_eq!(conn.closed(), Some(CloseReason::Done));
    assert_eq!(conn.forwarded(Dir::Upstream), 800);
    assert_eq!(conn.forwarded(Dir::Downstream), 10);
    assert_eq!(conn.poll_timeout(), None);
    // Late completions after Close are ignored.
    conn.handle_event(t, got(Dir::Upstream, 5, false));
    conn.handle_event(t, Event::Failed { side: Side::Client });
    conn.handle_timeout(t + IDLE * 2);
    assert_eq!(drain(&mut conn), []);
    assert_eq!(conn.closed(), Some(CloseReason::Done));
}

#[test]
fn refused_candidates_are_tried_in_order_then_no_backend() {
    let t0 = Instant::now();
    let mut conn = Conn::new(t0, params(Mode::Copy), &ids(&[3, 1, 2]));
    for (attempt, backend) in [3, 1, 2].into_iter().enumerate() {
        assert_eq!(
            drain(&mut conn),
            [Action::Connect {
                backend: BackendId(backend),
                attempt: attempt as u32
            }]
        );
        assert_eq!(conn.backend(), Some(BackendId(backend)));
        let at = t0 + ms(10 * attempt as u64 + 5);
        conn.handle_event(at, Event::ConnectFailed { timed_out: false });
    }
    assert_eq!(
        drain(&mut conn),
        [Action::Close {
            reset: false,
            reason: CloseReason::NoBackend
        }]
    );
    assert_eq!(conn.backend(), None);
    assert_eq!(conn.closed(), Some(CloseReason::NoBackend));
}

#[test]
fn no_candidates_closes_at_once() {
    let t0 = Instant::now();
    let mut conn = Conn::new(t0, params(Mode::Auto), &[]);
    assert_eq!(conn.poll_timeout(), None);
    assert_eq!(
        drain(&mut conn),
        [Action::Close {
            reset: false,
            reason: CloseReason::NoBackend
        }]
    );
}

#[test]
fn more_candidates_than_the_maximum_are_cut() {
    let t0 = Instant::now();
    let list: Vec<u32> = (0..12).collect();
    let mut conn = Conn::new(t0, params(Mode::Copy), &ids(&list));
    let mut tried = Vec::new();
    loop {
        match drain(&mut conn)[..] {
            [Action::Connect { backend, .. }] => tried.push(backend),
            [Action::Close { reason, .. }] => {
                assert_eq!(reason, CloseReason::NoBackend);
                break;
            }
            ref other => panic!("unexpected {other:?}"),
        }
        conn.handle_event(t0, Event::ConnectFailed { timed_out: false });
    }
    assert_eq!(tried, ids(&[0, 1, 2, 3, 4, 5, 6, 7]));
}

#[test]
fn connect_timeout_fires_at_deadline_and_next_attempt_counts_from_expiry() {
    let t0 = Instant::now();
    let mut conn = Conn::new(t0, params(Mode::Copy), &ids(&[0, 1]));
    drain(&mut conn);
    assert_eq!(conn.poll_timeout(), Some(t0 + CONNECT_TIMEOUT));
    conn.handle_timeout(t0 + CONNECT_TIMEOUT - Duration::from_nanos(1));
    assert_eq!(drain(&mut conn), []);
    // The timer fires 3 ms late (a wheel tick); the next attempt gets a full timeout from then.
    let fired = t0 + CONNECT_TIMEOUT + ms(3);
    conn.handle_timeout(fired);
    assert_eq!(
        drain(&mut conn),
        [Action::Connect {
            backend: BackendId(1),
            attempt: 1
        }]
    );
    assert_eq!(conn.poll_timeout(), Some(fired + CONNECT_TIMEOUT));
    conn.handle_timeout(fired + CONNECT_TIMEOUT);
    assert_eq!(
        drain(&mut conn),
        [Action::Close {
            reset: false,
            reason: CloseReason::NoBackend
        }]
    );
}

#[test]
fn engine_enforced_connect_timeout_leaves_no_core_deadline() {
    let t0 = Instant::now();
    let mut p = params(Mode::Copy);
    p.connect_timeout = None;
    let mut conn = Conn::new(t0, p, &ids(&[4, 5]));
    drain(&mut conn);
    assert_eq!(conn.poll_timeout(), None);
    conn.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(drain(&mut conn), []);
    conn.handle_event(t0 + ms(50), Event::ConnectFailed { timed_out: true });
    assert_eq!(
        drain(&mut conn),
        [Action::Connect {
            backend: BackendId(5),
            attempt: 1
        }]
    );
    conn.handle_event(t0 + ms(60), Event::Connected);
    assert_eq!(conn.poll_timeout(), Some(t0 + ms(60) + IDLE));
}

#[test]
fn outcome_before_the_connect_is_issued_is_ignored() {
    let t0 = Instant::now();
    let mut conn = Conn::new(t0, params(Mode::Copy), &ids(&[0]));
    conn.handle_event(t0, Event::Connected);
    assert!(!conn.is_established());
    conn.handle_event(t0, Event::ConnectFailed { timed_out: false });
    assert_eq!(
        drain(&mut conn),
        [Action::Connect {
            backend: BackendId(0),
            attempt: 0
        }]
    );
}

#[test]
fn idle_timeout_is_exact_and_pushed_back_by_activity() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Copy);
    let connected = t0 + ms(1);
    assert_eq!(conn.poll_timeout(), Some(connected + IDLE));
    let activity = connected + ms(700);
    conn.handle_event(activity, got(Dir::Downstream, 1, true));
    assert_eq!(drain(&mut conn), [send(Dir::Downstream, Via::Copy, 1)]);
    assert_eq!(conn.poll_timeout(), Some(activity + IDLE));
    // The old deadline passing does nothing.
    conn.handle_timeout(connected + IDLE);
    assert_eq!(drain(&mut conn), []);
    conn.handle_timeout(activity + IDLE - Duration::from_nanos(1));
    assert_eq!(drain(&mut conn), []);
    conn.handle_timeout(activity + IDLE);
    assert_eq!(
        drain(&mut conn),
        [Action::Close {
            reset: false,
            reason: CloseReason::IdleTimeout
        }]
    );
}

#[test]
fn failure_on_either_side_resets() {
    let t0 = Instant::now();
    for (side, reason) in [
        (Side::Client, CloseReason::ClientFailed),
        (Side::Backend, CloseReason::BackendFailed),
    ] {
        // While connecting.
        let mut conn = Conn::new(t0, params(Mode::Copy), &ids(&[0, 1]));
        drain(&mut conn);
        conn.handle_event(t0, Event::Failed { side });
        assert_eq!(
            drain(&mut conn),
            [Action::Close {
                reset: true,
                reason
            }]
        );
        // While established, with a send in flight.
        let mut conn = established(t0, Mode::Auto);
        conn.handle_event(t0, got(Dir::Upstream, 7, true));
        assert_eq!(drain(&mut conn), [send(Dir::Upstream, Via::Copy, 7)]);
        conn.handle_event(t0, Event::Failed { side });
        assert_eq!(
            drain(&mut conn),
            [Action::Close {
                reset: true,
                reason
            }]
        );
        assert_eq!(conn.closed(), Some(reason));
    }
}

#[test]
fn abort_resets_once() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Splice);
    conn.abort();
    assert_eq!(
        drain(&mut conn),
        [Action::Close {
            reset: true,
            reason: CloseReason::Aborted
        }]
    );
    conn.abort();
    assert_eq!(drain(&mut conn), []);
    assert_eq!(conn.closed(), Some(CloseReason::Aborted));
}

#[test]
fn copy_backpressure_cancels_multishot_and_resumes_below_high_water() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Copy);
    conn.handle_event(t0, got(Dir::Upstream, FULL, true));
    assert_eq!(drain(&mut conn), [send(Dir::Upstream, Via::Copy, FULL)]);
    for _ in 1..(HIGH_WATER / FULL) - 1 {
        conn.handle_event(t0, got(Dir::Upstream, FULL, true));
        assert_eq!(drain(&mut conn), []);
    }
    // The receipt that reaches the high-water mark stops the multishot receive.
    conn.handle_event(t0, got(Dir::Upstream, FULL, true));
    assert_eq!(
        drain(&mut conn),
        [Action::CancelRecv { dir: Dir::Upstream }]
    );
    // Receipts racing the cancel keep it cancelling; its final one ends it, with no re-arm.
    conn.handle_event(t0, got(Dir::Upstream, FULL, true));
    assert_eq!(drain(&mut conn), []);
    conn.handle_event(t0, got(Dir::Upstream, FULL, false));
    assert_eq!(drain(&mut conn), []);
    let queued = HIGH_WATER + 2 * FULL;
    // Send 1 byte short of getting under the mark: still no receive.
    conn.handle_event(
        t0,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: 2 * FULL,
        },
    );
    assert_eq!(
        drain(&mut conn),
        [send(Dir::Upstream, Via::Copy, queued - 2 * FULL)]
    );
    conn.handle_event(
        t0,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: 1,
        },
    );
    assert_eq!(
        drain(&mut conn),
        [
            send(Dir::Upstream, Via::Copy, HIGH_WATER - 1),
            recv(Dir::Upstream, Via::Copy)
        ]
    );
    // The other direction was never affected.
    conn.handle_event(t0, got(Dir::Downstream, 1, true));
    assert_eq!(drain(&mut conn), [send(Dir::Downstream, Via::Copy, 1)]);
}

#[test]
fn single_shot_receive_is_not_rearmed_at_high_water() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Copy);
    conn.handle_event(t0, got(Dir::Downstream, HIGH_WATER, false));
    assert_eq!(
        drain(&mut conn),
        [send(Dir::Downstream, Via::Copy, HIGH_WATER)]
    );
    conn.handle_event(
        t0,
        Event::Sent {
            dir: Dir::Downstream,
            bytes: 1,
        },
    );
    assert_eq!(
        drain(&mut conn),
        [
            send(Dir::Downstream, Via::Copy, HIGH_WATER - 1),
            recv(Dir::Downstream, Via::Copy)
        ]
    );
}

#[test]
fn splice_mode_uses_the_pipe_capacity() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Splice);
    conn.handle_event(t0, got(Dir::Upstream, PIPE - 1, false));
    assert_eq!(
        drain(&mut conn),
        [
            send(Dir::Upstream, Via::Splice, PIPE - 1),
            recv(Dir::Upstream, Via::Splice)
        ]
    );
    conn.handle_event(t0, got(Dir::Upstream, 1, false));
    // The pipe is full: no receive until it drains.
    assert_eq!(drain(&mut conn), []);
    conn.handle_event(
        t0,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: PIPE - 1,
        },
    );
    assert_eq!(
        drain(&mut conn),
        [
            send(Dir::Upstream, Via::Splice, 1),
            recv(Dir::Upstream, Via::Splice)
        ]
    );
}

#[test]
fn auto_switches_to_splice_only_once_nothing_is_in_flight() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Auto);
    conn.handle_event(t0, got(Dir::Upstream, FULL, true));
    assert_eq!(drain(&mut conn), [send(Dir::Upstream, Via::Copy, FULL)]);
    for _ in 2..AUTO_SPLICE_FULL_RECEIPTS {
        conn.handle_event(t0, got(Dir::Upstream, FULL, true));
        assert_eq!(drain(&mut conn), []);
    }
    assert_eq!(conn.via(Dir::Upstream), Via::Copy);
    // The fourth full receipt in a row: stop the copy receive, but bytes are still queued.
    conn.handle_event(t0, got(Dir::Upstream, FULL, true));
    assert_eq!(
        drain(&mut conn),
        [Action::CancelRecv { dir: Dir::Upstream }]
    );
    conn.handle_event(t0, got(Dir::Upstream, 10, false));
    assert_eq!(drain(&mut conn), []);
    assert_eq!(conn.via(Dir::Upstream), Via::Copy);
    let queued = u64::from(AUTO_SPLICE_FULL_RECEIPTS) * FULL + 10;
    conn.handle_event(
        t0,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: FULL,
        },
    );
    // The rest still goes out by copy, and no receive of any kind meanwhile.
    assert_eq!(
        drain(&mut conn),
        [send(Dir::Upstream, Via::Copy, queued - FULL)]
    );
    assert_eq!(conn.via(Dir::Upstream), Via::Copy);
    conn.handle_event(
        t0,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: queued - FULL,
        },
    );
    assert_eq!(drain(&mut conn), [recv(Dir::Upstream, Via::Splice)]);
    assert_eq!(conn.via(Dir::Upstream), Via::Splice);
    assert_eq!(conn.via(Dir::Downstream), Via::Copy);
    conn.handle_event(t0, got(Dir::Upstream, 3 * FULL, false));
    assert_eq!(
        drain(&mut conn),
        [
            send(Dir::Upstream, Via::Splice, 3 * FULL),
            recv(Dir::Upstream, Via::Splice)
        ]
    );
}

#[test]
fn auto_streak_is_broken_by_a_short_receipt() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Auto);
    let mut sizes = vec![FULL; usize::from(AUTO_SPLICE_FULL_RECEIPTS) - 1];
    sizes.push(FULL - 1);
    sizes.extend(vec![FULL; usize::from(AUTO_SPLICE_FULL_RECEIPTS) - 1]);
    for bytes in sizes {
        conn.handle_event(t0, got(Dir::Downstream, bytes, false));
        let actions = drain(&mut conn);
        assert_eq!(
            actions,
            [
                send(Dir::Downstream, Via::Copy, bytes),
                recv(Dir::Downstream, Via::Copy)
            ]
        );
        conn.handle_event(
            t0,
            Event::Sent {
                dir: Dir::Downstream,
                bytes,
            },
        );
        assert_eq!(drain(&mut conn), []);
    }
    assert_eq!(conn.via(Dir::Downstream), Via::Copy);
    // One more full receipt completes a streak: the receive is not re-armed by copy.
    conn.handle_event(t0, got(Dir::Downstream, FULL, false));
    assert_eq!(drain(&mut conn), [send(Dir::Downstream, Via::Copy, FULL)]);
    conn.handle_event(
        t0,
        Event::Sent {
            dir: Dir::Downstream,
            bytes: FULL,
        },
    );
    assert_eq!(drain(&mut conn), [recv(Dir::Downstream, Via::Splice)]);
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// One choice of a model engine; applied only when the contract allows it, skipped otherwise.
#[derive(Clone, Copy, Debug)]
enum Step {
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

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..3).prop_map(Step::Answer),
        2 => (0u16..1500).prop_map(Step::Advance),
        8 => (any::<bool>(), 1u16..3000, any::<bool>())
            .prop_map(|(up, bytes, armed)| Step::Receive { up, bytes, armed }),
        2 => any::<bool>().prop_map(|up| Step::Eof { up }),
        1 => any::<bool>().prop_map(|up| Step::RecvEnded { up }),
        6 => (any::<bool>(), 1u8..=100).prop_map(|(up, percent)| Step::Sent { up, percent }),
        1 => any::<bool>().prop_map(|client| Step::Fail { client }),
        1 => Just(Step::Abort),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Copy), Just(Mode::Splice), Just(Mode::Auto)]
}

#[derive(Clone, Copy, Debug, Default)]
struct RecvOp {
    via: Option<Via>,
    cancelled: bool,
}

/// What a contract-respecting engine knows, and the checks on every action it is handed.
#[derive(Debug)]
struct Model {
    conn: Conn,
    params: ConnParams,
    candidates: Vec<BackendId>,
    now: Instant,
    connect_out: bool,
    attempts: Vec<BackendId>,
    established: bool,
    recv: [Option<RecvOp>; 2],
    send: [Option<u64>; 2],
    queued: [u64; 2],
    received: [u64; 2],
    sent: [u64; 2],
    eof: [bool; 2],
    shut: [bool; 2],
    via: [Via; 2],
    /// Consecutive full copy receipts (auto mode), and whether a streak was completed.
    streak: [u32; 2],
    wants_splice: [bool; 2],
    failed: bool,
    aborted: bool,
    closed: Option<(CloseReason, bool)>,
    last_activity: Instant,
}

impl Model {
    fn new(mode: Mode, engine_timeout: bool, candidates: usize) -> Self {
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
            failed: false,
            aborted: false,
            closed: None,
            last_activity: t0,
        };
        model.drain();
        model
    }

    fn limit(&self, via: Via) -> u64 {
        match via {
            Via::Copy => self.params.copy_high_water,
            Via::Splice => self.params.splice_capacity,
        }
    }

    fn feed(&mut self, event: Event) {
        if self.closed.is_none() && !self.failed && !self.aborted {
            match event {
                Event::Connected
                | Event::ConnectFailed { .. }
                | Event::Received { .. }
                | Event::Eof { .. }
                | Event::Sent { .. } => self.last_activity = self.now,
                Event::RecvEnded { .. } | Event::Failed { .. } => {}
            }
        }
        self.conn.handle_event(self.now, event);
    }

    fn apply(&mut self, step: Step) {
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
                Step::Sent { up, percent } => Event::Sent {
                    dir: dir(up),
                    bytes: u64::from(percent),
                },
                Step::Fail { client } => Event::Failed {
                    side: if client { Side::Client } else { Side::Backend },
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
                if self.params.mode == Mode::Auto && via == Via::Copy && !self.wants_splice[i] {
                    self.streak[i] = if bytes >= self.params.full_receipt {
                        self.streak[i] + 1
                    } else {
                        0
                    };
                    self.wants_splice[i] = self.streak[i] >= u32::from(AUTO_SPLICE_FULL_RECEIPTS);
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
                self.feed(Event::Failed { side });
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

    fn drain(&mut self) {
        let mut n = 0;
        while let Some(action) = self.conn.poll_action() {
            n += 1;
            assert!(n < 64, "poll_action never returns None");
            self.check(action);
        }
        self.check_settled();
    }

    fn check(&mut self, action: Action) {
        assert!(
            self.closed.is_none(),
            "{action:?} after Close {:?}",
            self.closed
        );
        match action {
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
                match self.params.mode {
                    Mode::Copy => assert_eq!(via, Via::Copy),
                    Mode::Splice => assert_eq!(via, Via::Splice),
                    Mode::Auto => {
                        if via == Via::Splice && self.via[i] == Via::Copy {
                            assert!(self.wants_splice[i], "switched without a full streak");
                            assert_eq!(self.queued[i], 0, "switched with bytes queued");
                            assert!(self.send[i].is_none(), "switched with a send out");
                        }
                        assert!(
                            !(via == Via::Copy && self.wants_splice[i]),
                            "copy receive after a full streak"
                        );
                        assert!(
                            !(via == Via::Copy && self.via[i] == Via::Splice),
                            "switched back"
                        );
                        self.via[i] = via;
                    }
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
                let i = dir.index();
                assert!(self.eof[i], "ShutdownWrite before Eof");
                assert_eq!(self.queued[i], 0, "ShutdownWrite with bytes queued");
                assert!(self.send[i].is_none(), "ShutdownWrite with a send out");
                assert!(!self.shut[i], "ShutdownWrite twice");
                assert_eq!(self.sent[i], self.received[i]);
                self.shut[i] = true;
            }
            Action::Close { reset, reason } => {
                match reason {
                    CloseReason::Done => {
                        assert!(!reset);
                        assert!(self.shut.iter().all(|s| *s), "Done before both shut");
                        assert!(self.recv.iter().all(Option::is_none));
                        assert!(self.send.iter().all(Option::is_none));
                    }
                    CloseReason::NoBackend => {
                        assert!(!reset);
                        assert!(!self.established);
                        self.check_connect_expired();
                        assert_eq!(self.attempts.len(), self.candidates.len());
                    }
                    CloseReason::ClientFailed | CloseReason::BackendFailed => {
                        assert!(reset && self.failed)
                    }
                    CloseReason::Aborted => assert!(reset && self.aborted),
                    CloseReason::IdleTimeout => {
                        assert!(!reset && self.established);
                        assert!(self.now >= self.last_activity + self.params.idle_timeout);
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
    fn check_connect_expired(&mut self) {
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
    fn check_settled(&self) {
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
    fn finish(&mut self) {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// A contract-respecting engine never sees a contract-breaking action, the connection never
    /// stalls, and completing everything always ends it (Done unless it had already failed).
    #[test]
    fn contract_holds_for_any_valid_script(
        mode in mode(),
        engine_timeout in any::<bool>(),
        candidates in 0usize..4,
        script in prop::collection::vec(step(), 0..80),
    ) {
        let mut model = Model::new(mode, engine_timeout, candidates);
        for s in script {
            model.apply(s);
        }
        let was_closed = model.closed;
        model.finish();
        let (reason, _) = model.closed.expect("finished");
        if was_closed.is_none() {
            prop_assert_eq!(reason, CloseReason::Done);
            prop_assert_eq!(model.sent, model.received);
        }
    }

    /// Arbitrary events, valid or not, in any order: no panic, at most one Close, nothing after
    /// it, and a failure always resets.
    #[test]
    fn arbitrary_events_never_panic_or_speak_after_close(
        mode in mode(),
        candidates in 0usize..10,
        events in prop::collection::vec(
            (0u8..9, any::<bool>(), 0u64..u64::MAX, any::<bool>(), 0u16..2000), 0..100),
    ) {
        let t0 = Instant::now();
        let ids: Vec<BackendId> = (0..candidates as u32).map(BackendId).collect();
        let mut conn = Conn::new(t0, params(mode), &ids);
        let mut now = t0;
        let mut closes = 0;
        let mut failed = false;
        // The engine drains right after accepting.
        while let Some(action) = conn.poll_action() {
            if matches!(action, Action::Close { .. }) {
                closes += 1;
            }
        }
        for (kind, flag, n, armed, advance) in events {
            let dir = if flag { Dir::Upstream } else { Dir::Downstream };
            let side = if flag { Side::Client } else { Side::Backend };
            // Keep byte counts summable: the engine never holds more than memory.
            let bytes = n % (1 << 40);
            now += Duration::from_millis(u64::from(advance));
            let event = match kind {
                0 => Event::Connected,
                1 => Event::ConnectFailed { timed_out: armed },
                2 => Event::Received { dir, bytes: bytes.max(1), armed },
                3 => Event::RecvEnded { dir },
                4 => Event::Eof { dir },
                5 => Event::Sent { dir, bytes: n },
                6 => Event::Failed { side },
                7 => {
                    conn.handle_timeout(now);
                    Event::RecvEnded { dir }
                }
                _ => {
                    conn.abort();
                    Event::RecvEnded { dir }
                }
            };
            // A failure of an established connection (not one already closing) resets it.
            if kind == 6 && conn.is_established() {
                failed = true;
            }
            conn.handle_event(now, event);
            let mut n_actions = 0;
            while let Some(action) = conn.poll_action() {
                n_actions += 1;
                prop_assert!(n_actions < 64);
                prop_assert_eq!(closes, 0, "{:?} after Close", action);
                if let Action::Close { reset, reason } = action {
                    closes += 1;
                    prop_assert_eq!(conn.closed(), Some(reason));
                    if failed {
                        prop_assert!(reset);
                    }
                }
            }
            let _ = conn.poll_timeout();
        }
    }
}
