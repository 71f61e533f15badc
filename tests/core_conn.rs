//! Focused scenarios and property tests for the per-connection state machine ([`Conn`]).
//!
//! The scenarios walk one connection through a script of engine results on a virtual clock and
//! check the exact actions that come out. The property tests drive a `Conn` with generated
//! scripts: a contract-respecting model engine (every event is one the engine contract in
//! `conn.rs` allows) whose every action is checked against that contract, and an adversarial one
//! that feeds arbitrary events and only asks that the machine neither panics nor speaks after
//! `Close`.

#[path = "core_conn/halfclosed.rs"]
mod halfclosed;
#[path = "core_conn/model.rs"]
mod model;
#[path = "core_conn/no_pipe.rs"]
mod no_pipe;
#[path = "core_conn/scenarios.rs"]
mod scenarios;
#[path = "core_conn/support.rs"]
mod support;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringlb::core::backend::BackendId;
use ringlb::core::conn::{Action, CloseReason, Conn, Dir, Event, Failure, Side};

use model::{Model, mode, step};
use support::params;

/// One `#[test]` per scenario in `core_conn/scenarios.rs`, under the scenario's own name.
macro_rules! scenario_tests {
    ($($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                scenarios::$name();
            }
        )*
    };
}

scenario_tests! {
    preamble_goes_first_and_holds_everything_back_until_sent,
    inspecting_reads_the_client_until_placed_then_forwards,
    a_client_that_ends_while_inspected_is_not_read_again,
    copy_round_trip_with_partial_sends_and_half_close_ends_done,
    refused_candidates_are_tried_in_order_then_no_backend,
    no_candidates_closes_at_once,
    more_candidates_than_the_maximum_are_cut,
    connect_timeout_fires_at_deadline_and_next_attempt_counts_from_expiry,
    engine_enforced_connect_timeout_leaves_no_core_deadline,
    outcome_before_the_connect_is_issued_is_ignored,
    idle_timeout_is_exact_and_pushed_back_by_activity,
    failure_on_either_side_resets,
    abort_resets_once,
    local_failure_resets_once_and_says_so,
    copy_backpressure_cancels_multishot_and_resumes_below_high_water,
    single_shot_receive_is_not_rearmed_at_high_water,
    splice_mode_uses_the_pipe_capacity,
    auto_switches_to_splice_only_once_nothing_is_in_flight,
    auto_streak_is_broken_by_a_short_receipt,
    auto_keeps_copying_toward_a_loopback_peer,
    splice_without_a_pipe_copies_and_asks_again_after_bulk,
    pipe_refused_while_bytes_wait_switches_to_copy_once_sent,
}

// ---------------------------------------------------------------------------------------------
// Property tests.

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
            (0u8..10, any::<bool>(), 0u64..u64::MAX, any::<bool>(), 0u16..2000), 0..100),
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
                6 => Event::Failed {
                    side,
                    failure: Failure::Os(libc::ECONNRESET),
                },
                7 => Event::SpliceUnavailable { dir },
                8 => {
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
