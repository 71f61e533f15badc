//! The fin timeouts: once one direction has been shut down, the inactivity limit is the fin
//! timeout of the side still awaited (`client_fin`, `server_fin`), not the idle timeout.

use std::time::{Duration, Instant};

use ringlb::config::Mode;
use ringlb::core::conn::{Action, CloseReason, Conn, Dir, Event, Side, Via};

use crate::support::*;

const CLIENT_FIN: Duration = Duration::from_millis(300);
const SERVER_FIN: Duration = Duration::from_millis(500);

/// An established copy connection with the fin timeouts above (idle: [`IDLE`], 1 s).
fn half_closable(t0: Instant, client_fin: Duration, server_fin: Duration) -> Conn {
    let mut conn = Conn::new(
        t0,
        ringlb::core::conn::ConnParams {
            client_fin,
            server_fin,
            ..params(Mode::Copy)
        },
        &ids(&[0]),
    );
    drain(&mut conn);
    conn.handle_event(t0, Event::Connected);
    assert_eq!(
        drain(&mut conn),
        [
            recv(Dir::Upstream, Via::Copy),
            recv(Dir::Downstream, Via::Copy)
        ]
    );
    conn
}

fn closes_with(conn: &mut Conn, at: Instant, reason: CloseReason) {
    conn.handle_timeout(at - Duration::from_nanos(1));
    assert_eq!(drain(conn), [], "closed before {at:?}");
    conn.handle_timeout(at);
    assert_eq!(
        drain(conn),
        [Action::Close {
            reset: false,
            reason
        }]
    );
}

#[test]
fn client_fin_counts_from_the_shutdown_toward_the_client_and_is_reset_by_its_traffic() {
    let t0 = Instant::now();
    let mut conn = half_closable(t0, CLIENT_FIN, SERVER_FIN);
    assert_eq!(conn.poll_timeout(), Some(t0 + IDLE));
    // The backend finishes: ringlb shuts down writing toward the client.
    let fin = t0 + ms(100);
    conn.handle_event(
        fin,
        Event::Eof {
            dir: Dir::Downstream,
        },
    );
    assert_eq!(
        drain(&mut conn),
        [Action::ShutdownWrite { side: Side::Client }]
    );
    assert_eq!(conn.poll_timeout(), Some(fin + CLIENT_FIN));
    // The client still sends: that is activity in the open direction.
    let more = fin + ms(250);
    conn.handle_event(more, got(Dir::Upstream, 10, true));
    assert_eq!(drain(&mut conn), [send(Dir::Upstream, Via::Copy, 10)]);
    let sent = more + ms(1);
    conn.handle_event(
        sent,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: 10,
        },
    );
    assert_eq!(drain(&mut conn), []);
    closes_with(
        &mut conn,
        sent + CLIENT_FIN,
        CloseReason::FinTimeout(Side::Client),
    );
}

#[test]
fn server_fin_applies_once_writing_toward_the_backend_is_shut_down() {
    let t0 = Instant::now();
    let mut conn = half_closable(t0, CLIENT_FIN, SERVER_FIN);
    let fin = t0 + ms(100);
    conn.handle_event(fin, Event::Eof { dir: Dir::Upstream });
    assert_eq!(
        drain(&mut conn),
        [Action::ShutdownWrite {
            side: Side::Backend
        }]
    );
    assert_eq!(conn.poll_timeout(), Some(fin + SERVER_FIN));
    closes_with(
        &mut conn,
        fin + SERVER_FIN,
        CloseReason::FinTimeout(Side::Backend),
    );
}

#[test]
fn a_fin_timeout_longer_than_idle_lets_a_half_closed_connection_outlive_idle() {
    let t0 = Instant::now();
    let long = IDLE * 3;
    let mut conn = half_closable(t0, long, long);
    conn.handle_event(t0, Event::Eof { dir: Dir::Upstream });
    drain(&mut conn);
    conn.handle_timeout(t0 + IDLE);
    assert_eq!(drain(&mut conn), [], "the idle timeout no longer applies");
    closes_with(&mut conn, t0 + long, CloseReason::FinTimeout(Side::Backend));
}

#[test]
fn bytes_still_queued_toward_the_client_keep_the_idle_timeout() {
    let t0 = Instant::now();
    let mut conn = half_closable(t0, CLIENT_FIN, SERVER_FIN);
    // The backend's last bytes wait for a slow client: nothing is shut down yet.
    conn.handle_event(t0, got(Dir::Downstream, 10, true));
    assert_eq!(drain(&mut conn), [send(Dir::Downstream, Via::Copy, 10)]);
    conn.handle_event(
        t0,
        Event::Eof {
            dir: Dir::Downstream,
        },
    );
    assert_eq!(drain(&mut conn), []);
    assert_eq!(conn.poll_timeout(), Some(t0 + IDLE));
    closes_with(&mut conn, t0 + IDLE, CloseReason::IdleTimeout);
}
