//! Scenarios of a direction that cannot get a pipe (`Event::SpliceUnavailable`): it forwards
//! by copy instead of failing. Run as `#[test]`s through `scenarios.rs`'s re-export.

use std::time::Instant;

use ringlb::config::Mode;
use ringlb::core::conn::{AUTO_SPLICE_FULL_RECEIPTS, Action, Conn, Dir, Event, Via};

use crate::support::*;

/// Receives `count` full copy buffers on `dir`, each sent on at once; the receive is re-armed
/// after each but the last, which (completing a streak) is followed by the splice receive.
fn stream_full_buffers(conn: &mut Conn, t0: Instant, dir: Dir, count: u32) -> Vec<Action> {
    let mut last = Vec::new();
    for i in 0..count {
        conn.handle_event(t0, got(dir, FULL, false));
        let actions = drain(conn);
        assert_eq!(actions[0], send(dir, Via::Copy, FULL), "receipt {i}");
        conn.handle_event(t0, Event::Sent { dir, bytes: FULL });
        last = [&actions[1..], &drain(conn)[..]].concat();
        if i + 1 < count {
            assert_eq!(last, [recv(dir, Via::Copy)], "receipt {i}");
        }
    }
    last
}

/// Splice mode, no pipe to be had: the direction copies instead of failing, and asks for a
/// pipe again after a streak of full receipts twice as long as `auto`'s for each refusal.
pub(crate) fn splice_without_a_pipe_copies_and_asks_again_after_bulk() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Splice);
    let up = Dir::Upstream;
    conn.handle_event(t0, Event::SpliceUnavailable { dir: up });
    assert_eq!(drain(&mut conn), [recv(up, Via::Copy)]);
    assert_eq!(conn.via(up), Via::Copy);
    assert_eq!(conn.via(Dir::Downstream), Via::Splice);
    assert!(conn.closed().is_none());
    // A streak of full receipts (single-shot receives here): a pipe is asked for again.
    let streak = 2 * u32::from(AUTO_SPLICE_FULL_RECEIPTS);
    let last = stream_full_buffers(&mut conn, t0, up, streak - 1);
    assert_eq!(last, [recv(up, Via::Copy)]);
    let last = stream_full_buffers(&mut conn, t0, up, 1);
    assert_eq!(last, [recv(up, Via::Splice)]);
    // Refused again: copy, and now it takes a streak twice as long.
    conn.handle_event(t0, Event::SpliceUnavailable { dir: up });
    assert_eq!(drain(&mut conn), [recv(up, Via::Copy)]);
    let last = stream_full_buffers(&mut conn, t0, up, 2 * streak - 1);
    assert_eq!(last, [recv(up, Via::Copy)]);
    let last = stream_full_buffers(&mut conn, t0, up, 1);
    assert_eq!(last, [recv(up, Via::Splice)]);
    // This time a pipe is had: splice from here on.
    conn.handle_event(t0, got(up, 3 * FULL, false));
    assert_eq!(
        drain(&mut conn),
        [send(up, Via::Splice, 3 * FULL), recv(up, Via::Splice)]
    );
    assert!(conn.closed().is_none());
}

/// An engine that hands its pipe back whenever it is empty (epoll) may be refused one while
/// the core still counts bytes in flight: they go out through the pipe first, then the
/// direction copies.
pub(crate) fn pipe_refused_while_bytes_wait_switches_to_copy_once_sent() {
    let t0 = Instant::now();
    let mut conn = established(t0, Mode::Splice);
    let down = Dir::Downstream;
    conn.handle_event(t0, got(down, 100, false));
    assert_eq!(
        drain(&mut conn),
        [send(down, Via::Splice, 100), recv(down, Via::Splice)]
    );
    conn.handle_event(t0, Event::SpliceUnavailable { dir: down });
    assert_eq!(drain(&mut conn), [], "no receive until the send reports");
    conn.handle_event(
        t0,
        Event::Sent {
            dir: down,
            bytes: 100,
        },
    );
    assert_eq!(drain(&mut conn), [recv(down, Via::Copy)]);
    assert_eq!(conn.via(down), Via::Copy);
}
