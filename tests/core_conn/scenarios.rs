//! The scenarios: one connection walked through a script of engine results on a virtual clock,
//! checking the exact actions that come out. Each is run as a `#[test]` of the same name by
//! `scenario_tests!` in `core_conn.rs`.

use std::time::{Duration, Instant};

use ringlb::config::Mode;
use ringlb::core::backend::BackendId;
use ringlb::core::conn::{
    AUTO_SPLICE_FULL_RECEIPTS, Action, CloseReason, Conn, Dir, Event, Failure, Side, Via,
};

/// What engines report for a peer that reset the connection.
const PEER_RESET: Failure = Failure::Os(libc::ECONNRESET);
use crate::support::*;

pub(crate) use crate::no_pipe::*;

pub(crate) fn copy_round_trip_with_partial_sends_and_half_close_ends_done() {
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
    // The last direction's FIN is the close's own: no half-close before it.
    assert_eq!(
        drain(&mut conn),
        [Action::Close {
            reset: false,
            reason: CloseReason::Done
        }]
    );
    assert_eq!(conn.closed(), Some(CloseReason::Done));
    assert_eq!(conn.forwarded(Dir::Upstream), 800);
    assert_eq!(conn.forwarded(Dir::Downstream), 10);
    assert_eq!(conn.poll_timeout(), None);
    // Late completions after Close are ignored.
    conn.handle_event(t, got(Dir::Upstream, 5, false));
    conn.handle_event(
        t,
        Event::Failed {
            side: Side::Client,
            failure: Failure::Os(libc::ECONNRESET),
        },
    );
    conn.handle_timeout(t + IDLE * 2);
    assert_eq!(drain(&mut conn), []);
    assert_eq!(conn.closed(), Some(CloseReason::Done));
}

pub(crate) fn refused_candidates_are_tried_in_order_then_no_backend() {
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

pub(crate) fn no_candidates_closes_at_once() {
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

pub(crate) fn more_candidates_than_the_maximum_are_cut() {
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

pub(crate) fn connect_timeout_fires_at_deadline_and_next_attempt_counts_from_expiry() {
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

pub(crate) fn engine_enforced_connect_timeout_leaves_no_core_deadline() {
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

pub(crate) fn outcome_before_the_connect_is_issued_is_ignored() {
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

pub(crate) fn idle_timeout_is_exact_and_pushed_back_by_activity() {
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

pub(crate) fn failure_on_either_side_resets() {
    let t0 = Instant::now();
    for (side, reason) in [
        (Side::Client, CloseReason::ClientFailed(PEER_RESET)),
        (Side::Backend, CloseReason::BackendFailed(PEER_RESET)),
    ] {
        // While connecting.
        let mut conn = Conn::new(t0, params(Mode::Copy), &ids(&[0, 1]));
        drain(&mut conn);
        conn.handle_event(
            t0,
            Event::Failed {
                side,
                failure: PEER_RESET,
            },
        );
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
        conn.handle_event(
            t0,
            Event::Failed {
                side,
                failure: PEER_RESET,
            },
        );
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

pub(crate) fn abort_resets_once() {
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

pub(crate) fn local_failure_resets_once_and_says_so() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Copy);
    conn.fail_locally();
    assert_eq!(
        drain(&mut conn),
        [Action::Close {
            reset: true,
            reason: CloseReason::Local
        }]
    );
    // A shutdown abort afterwards changes nothing: the connection is closed already.
    conn.abort();
    assert_eq!(drain(&mut conn), []);
    assert_eq!(conn.closed(), Some(CloseReason::Local));
    assert_eq!(CloseReason::Local.failure(), Some(Failure::Local));
    assert_eq!(
        CloseReason::BackendFailed(PEER_RESET).failure(),
        Some(PEER_RESET)
    );
    assert_eq!(CloseReason::Aborted.failure(), None);
}

pub(crate) fn copy_backpressure_cancels_multishot_and_resumes_below_high_water() {
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

pub(crate) fn single_shot_receive_is_not_rearmed_at_high_water() {
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

pub(crate) fn splice_mode_uses_the_pipe_capacity() {
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

pub(crate) fn auto_switches_to_splice_only_once_nothing_is_in_flight() {
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

pub(crate) fn auto_streak_is_broken_by_a_short_receipt() {
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
/// Feeds `dir` a long run of full receipts, each sent on at once, and says whether it ever
/// asked to leave copy mode (cancelling its copy receive to switch to splice).
fn switches_under_bulk(conn: &mut Conn, dir: Dir) -> bool {
    let t0 = Instant::now();
    for _ in 0..4 * AUTO_SPLICE_FULL_RECEIPTS {
        conn.handle_event(t0, got(dir, FULL, true));
        for action in drain(conn) {
            match action {
                Action::CancelRecv { .. } => return true,
                Action::Send { dir, queued, .. } => {
                    conn.handle_event(t0, Event::Sent { dir, bytes: queued })
                }
                _ => {}
            }
        }
    }
    false
}

/// `loopback_copy`: in auto mode the direction toward a peer on the loopback keeps copying
/// however long its bulk run, and the other still switches; without the switch, or in splice
/// mode, the peers' places change nothing.
pub(crate) fn auto_keeps_copying_toward_a_loopback_peer() {
    let t0 = Instant::now();
    for (client, backend) in [(true, false), (false, true), (true, true)] {
        let mut params = params(Mode::Auto);
        params.loopback_copy = true;
        let mut conn = Conn::new(t0, params, &ids(&[0]));
        drain(&mut conn);
        conn.handle_event(t0, Event::Connected);
        drain(&mut conn);
        conn.peers_on_loopback(client, backend);
        // Upstream goes to the backend, downstream to the client.
        assert_eq!(switches_under_bulk(&mut conn, Dir::Upstream), !backend);
        assert_eq!(switches_under_bulk(&mut conn, Dir::Downstream), !client);
    }
    let mut conn = established(t0, Mode::Auto);
    conn.peers_on_loopback(true, true);
    assert!(
        switches_under_bulk(&mut conn, Dir::Upstream),
        "off: splices anyway"
    );
}

pub(crate) fn preamble_goes_first_and_holds_everything_back_until_sent() {
    let t0 = Instant::now();
    let params = params(Mode::Copy);
    let mut conn = Conn::new(t0, params, &ids(&[0]));
    assert_eq!(
        drain(&mut conn),
        [Action::Connect {
            backend: BackendId(0),
            attempt: 0
        }]
    );
    // Asked for before the connect is reported (the shard does, for a backend that wants it).
    conn.send_preamble();
    conn.handle_event(t0 + ms(1), Event::Connected);
    assert_eq!(drain(&mut conn), [Action::SendPreamble]);
    // Nothing else until it is out: not even a receive from the client.
    assert_eq!(drain(&mut conn), []);
    conn.handle_event(t0 + ms(2), Event::PreambleSent);
    assert_eq!(
        drain(&mut conn),
        [
            recv(Dir::Upstream, Via::Copy),
            recv(Dir::Downstream, Via::Copy)
        ]
    );
    // A preamble that cannot be written fails the backend side.
    let mut conn = Conn::new(t0, params, &ids(&[0]));
    drain(&mut conn);
    conn.send_preamble();
    conn.handle_event(t0 + ms(1), Event::Connected);
    assert_eq!(drain(&mut conn), [Action::SendPreamble]);
    conn.handle_event(
        t0 + ms(2),
        Event::Failed {
            side: Side::Backend,
            failure: PEER_RESET,
        },
    );
    assert_eq!(
        drain(&mut conn),
        [Action::Close {
            reset: true,
            reason: CloseReason::BackendFailed(PEER_RESET)
        }]
    );
}

pub(crate) fn inspecting_reads_the_client_until_placed_then_forwards() {
    let t0 = Instant::now();
    let params = params(Mode::Copy);
    let mut conn = Conn::inspecting(t0, params, t0 + ms(500));
    assert_eq!(drain(&mut conn), [Action::Inspect]);
    assert_eq!(drain(&mut conn), [], "one read at a time");
    assert_eq!(conn.poll_timeout(), Some(t0 + ms(500)));
    conn.inspect_read(t0 + ms(1), true);
    assert_eq!(drain(&mut conn), [Action::Inspect]);
    // The shard decides while that read is out (its timeout): the connect goes, but the
    // client is not read by the flow until the inspect read has reported.
    conn.place(Conn::new(t0 + ms(2), params, &ids(&[0])));
    assert_eq!(conn.inspecting_until(), None);
    assert_eq!(
        drain(&mut conn),
        [Action::Connect {
            backend: BackendId(0),
            attempt: 0
        }]
    );
    conn.send_preamble();
    conn.handle_event(t0 + ms(3), Event::Connected);
    assert_eq!(drain(&mut conn), [], "the preamble waits for the read");
    conn.inspect_read(t0 + ms(4), true);
    assert_eq!(
        drain(&mut conn),
        [Action::SendPreamble],
        "no more reads once placed"
    );
    conn.handle_event(t0 + ms(5), Event::PreambleSent);
    assert_eq!(
        drain(&mut conn),
        [
            recv(Dir::Upstream, Via::Copy),
            recv(Dir::Downstream, Via::Copy)
        ]
    );
}

pub(crate) fn a_client_that_ends_while_inspected_is_not_read_again() {
    let t0 = Instant::now();
    let params = params(Mode::Copy);
    let mut conn = Conn::inspecting(t0, params, t0 + ms(500));
    assert_eq!(drain(&mut conn), [Action::Inspect]);
    conn.handle_event(t0 + ms(1), Event::Eof { dir: Dir::Upstream });
    conn.place(Conn::new(t0 + ms(1), params, &ids(&[0])));
    drain(&mut conn);
    conn.handle_event(t0 + ms(2), Event::Connected);
    // The client's end goes on to the backend once connected; only the backend is read.
    assert_eq!(
        drain(&mut conn),
        [
            Action::ShutdownWrite {
                side: Side::Backend
            },
            recv(Dir::Downstream, Via::Copy)
        ]
    );
    // A refusal closes.
    let mut conn = Conn::inspecting(t0, params, t0 + ms(500));
    drain(&mut conn);
    conn.refuse(
        CloseReason::Inspect(ringlb::core::conn::Refusal::ProxyHeader),
        true,
    );
    assert_eq!(
        drain(&mut conn),
        [Action::Close {
            reset: true,
            reason: CloseReason::Inspect(ringlb::core::conn::Refusal::ProxyHeader)
        }]
    );
}
