//! Fixtures shared by the scenarios and the property tests: connection parameters and small
//! builders for actions and events.

use std::time::{Duration, Instant};

use ringlb::config::Mode;
use ringlb::core::backend::BackendId;
use ringlb::core::conn::{Action, Conn, ConnParams, Dir, Event, Via};

pub(crate) const FULL: u64 = 1024;
pub(crate) const HIGH_WATER: u64 = 4 * FULL;
pub(crate) const PIPE: u64 = 8 * FULL;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
pub(crate) const IDLE: Duration = Duration::from_secs(1);

pub(crate) fn params(mode: Mode) -> ConnParams {
    ConnParams {
        connect_timeout: Some(CONNECT_TIMEOUT),
        idle_timeout: IDLE,
        client_fin: IDLE,
        server_fin: IDLE,
        mode,
        copy_high_water: HIGH_WATER,
        splice_capacity: PIPE,
        full_receipt: FULL,
        loopback_copy: false,
    }
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn ids(list: &[u32]) -> Vec<BackendId> {
    list.iter().copied().map(BackendId).collect()
}

pub(crate) fn drain(conn: &mut Conn) -> Vec<Action> {
    let mut out = Vec::new();
    while let Some(action) = conn.poll_action() {
        out.push(action);
        assert!(out.len() < 64, "poll_action never returns None: {out:?}");
    }
    out
}

pub(crate) fn recv(dir: Dir, via: Via) -> Action {
    Action::Recv { dir, via }
}

pub(crate) fn send(dir: Dir, via: Via, queued: u64) -> Action {
    Action::Send { dir, via, queued }
}

pub(crate) fn got(dir: Dir, bytes: u64, armed: bool) -> Event {
    Event::Received { dir, bytes, armed }
}

/// A connection in `mode`, connected at `t0 + 1ms`, with both receives armed.
pub(crate) fn established(t0: Instant, mode: Mode) -> Conn {
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
