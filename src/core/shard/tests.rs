//! Unit tests of the shard: timers, stalls and the wheel's memory.

use super::*;
use crate::core::backend::{BackendInfo, BackendState};
use crate::core::balance::Algorithm;
use crate::core::conn::Dir;
use crate::core::conn::Mode;

const IDLE: Duration = Duration::from_secs(2);

fn shard(now: Instant) -> Shard<()> {
    shard_with(now, Algorithm::RoundRobin)
}

fn shard_with(now: Instant, algorithm: Algorithm) -> Shard<()> {
    shard_idle(now, algorithm, IDLE)
}

fn shard_idle(now: Instant, algorithm: Algorithm, idle_timeout: Duration) -> Shard<()> {
    let pool = Arc::new(PoolSnapshot::new(
        algorithm,
        vec![BackendInfo {
            name: "a".into(),
            addr: "127.0.0.1:1".parse().expect("literal address"),
            weight: 1,
            max_connections: None,
            send_proxy: None,
        }],
        vec![BackendState::Up],
    ));
    let policy = ListenerPolicy {
        pool: 0,
        candidates: 1,
        queue: Default::default(),
        admission: None,
        affinity: None,
        inspect: None,
        params: ConnParams {
            connect_timeout: None,
            idle_timeout,
            client_fin: idle_timeout,
            server_fin: idle_timeout,
            mode: Mode::Copy,
            copy_high_water: 1 << 16,
            splice_capacity: 1 << 16,
            full_receipt: 1 << 14,
            loopback_copy: false,
        },
    };
    Shard::new(now, vec![policy], vec![pool], 16, 1).guard_stalls()
}

#[test]
fn only_source_hashing_needs_the_peer_address() {
    let now = Instant::now();
    assert!(shard_with(now, Algorithm::SourceHash).needs_peer(0));
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::LeastConnections,
        Algorithm::RandomTwo,
    ] {
        assert!(!shard_with(now, algorithm).needs_peer(0), "{algorithm:?}");
    }
    assert!(
        !shard_with(now, Algorithm::SourceHash).needs_peer(1),
        "no such listener"
    );
}

/// An established connection whose upstream receive is armed.
fn established(shard: &mut Shard<()>, now: Instant) -> SlotKey {
    let key = shard
        .accept(now, 0, "127.0.0.2:1".parse().expect("literal"), ())
        .expect("room");
    while shard.poll_action().is_some() {}
    shard.handle_event(now, key, Event::Connected);
    while shard.poll_action().is_some() {}
    key
}

fn closed(shard: &mut Shard<()>) -> Option<CloseReason> {
    let mut reason = None;
    while let Some((_, action)) = shard.poll_action() {
        if let Action::Close { reason: r, .. } = action {
            reason = Some(r);
        }
    }
    reason
}

/// Issue 10, item 3: each connection left its idle timer in the wheel until it fired
/// (minutes later), so memory grew with churn and stayed at its peak.
#[test]
fn timers_of_released_connections_do_not_accumulate() {
    const CHURN: usize = 500_000;
    let idle = Duration::from_secs(300);
    let t0 = Instant::now();
    let mut shard = shard_idle(t0, Algorithm::RoundRobin, idle);
    // One connection stays open throughout: its timer must survive every sweep.
    let kept = established(&mut shard, t0);
    let mut now = t0;
    let mut peak = (0, 0);
    for i in 0..CHURN {
        now += Duration::from_micros(20);
        if i % 1000 == 0 {
            // As an engine does every loop turn.
            shard.handle_timeouts(now);
        }
        let key = established(&mut shard, now);
        shard.abort(key);
        assert!(closed(&mut shard).is_some());
        shard.release(key).expect("current");
        let (len, cap) = shard.timers();
        peak = (peak.0.max(len), peak.1.max(cap));
    }
    let bound = 2 * shard.len() + TIMER_SWEEP_SLACK + 1;
    assert!(
        peak.0 <= bound,
        "wheel held {} entries for {} open connections",
        peak.0,
        shard.len()
    );
    // Each slot keeps at most 4x its entries plus 8.
    assert!(peak.1 <= 4 * bound + 8 * crate::core::timer::WHEEL_SLOTS);
    assert!(shard.stats().timer_sweeps >= (CHURN / (TIMER_SWEEP_SLACK + 1)) as u64 / 2);
    // The kept connection still idles out on time (timers checked every 100 ms).
    while now + Duration::from_millis(100) < t0 + idle {
        now += Duration::from_millis(100);
        shard.handle_timeouts(now);
        assert_eq!(
            closed(&mut shard),
            None,
            "closed {:?} early",
            t0 + idle - now
        );
    }
    shard.handle_timeouts(t0 + idle + Duration::from_millis(10));
    assert_eq!(closed(&mut shard), Some(CloseReason::IdleTimeout));
    assert!(shard.conn(kept).is_some_and(|c| c.closed().is_some()));
}

#[test]
fn after_a_stall_bytes_that_arrived_meanwhile_keep_a_connection_open() {
    let t0 = Instant::now();
    let mut shard = shard(t0);
    let key = established(&mut shard, t0);
    // The worker stalls for 3 s (longer than the idle timeout), then checks timers.
    let resumed = t0 + Duration::from_secs(3);
    shard.handle_timeouts(resumed);
    assert_eq!(
        closed(&mut shard),
        None,
        "no idle close at the instant of resuming"
    );
    assert_eq!(shard.stats().stalls, 1);
    // What the client sent during the stall shows up a moment later.
    let seen = resumed + Duration::from_millis(20);
    let event = Event::Received {
        dir: Dir::Upstream,
        bytes: 36,
        armed: true,
    };
    assert!(shard.handle_event(seen, key, event));
    shard.handle_timeouts(resumed + RESUME_GRACE);
    assert_eq!(
        closed(&mut shard),
        None,
        "activity during the grace keeps it open"
    );
}

#[test]
fn after_a_stall_a_really_idle_connection_closes_once_the_grace_is_over() {
    let t0 = Instant::now();
    let mut shard = shard(t0);
    established(&mut shard, t0);
    let resumed = t0 + Duration::from_secs(3);
    shard.handle_timeouts(resumed);
    assert_eq!(closed(&mut shard), None);
    let wake = shard.next_timeout().expect("a timer is armed");
    assert!(
        wake >= resumed + RESUME_GRACE,
        "the engine sleeps until the grace is over"
    );
    shard.handle_timeouts(resumed + RESUME_GRACE);
    assert_eq!(closed(&mut shard), Some(CloseReason::IdleTimeout));
}

#[test]
fn without_a_stall_idle_connections_close_on_time() {
    let t0 = Instant::now();
    let mut shard = shard(t0);
    established(&mut shard, t0);
    let mut now = t0;
    // Checked every 100 ms, as engines do: no stall, no hold.
    while now < t0 + IDLE {
        now += Duration::from_millis(100);
        shard.handle_timeouts(now);
    }
    now += crate::core::timer::TICK;
    shard.handle_timeouts(now);
    assert_eq!(closed(&mut shard), Some(CloseReason::IdleTimeout));
    assert_eq!(shard.stats().stalls, 0);
}

/// Issue 11: per-backend and per-listener counters, per worker, for the admin API and
/// `/metrics` (summed over workers by the control side).
#[test]
fn backend_and_listener_counters_follow_connections_and_bytes() {
    let t0 = Instant::now();
    let mut shard = shard(t0);
    let key = established(&mut shard, t0);
    let sent = |dir, bytes| Event::Sent { dir, bytes };
    shard.handle_event(t0, key, sent(Dir::Upstream, 100));
    shard.handle_event(t0, key, sent(Dir::Downstream, 7));
    let backend = shard.backend_counters(0)[0];
    assert_eq!(
        (
            backend.active,
            backend.connections,
            backend.connect_failures
        ),
        (1, 1, 0)
    );
    assert_eq!((backend.bytes_in, backend.bytes_out), (100, 7));
    assert_eq!(backend.connect_time.count(), 1, "one connect timed");
    assert_eq!(shard.listener_counters()[0].active, 1);
    // A second client whose connect fails: counted once as a connection, once as a failure.
    let failing = shard
        .accept(t0, 0, "127.0.0.3:1".parse().expect("literal"), ())
        .expect("room");
    while shard.poll_action().is_some() {}
    shard.handle_event(t0, failing, Event::ConnectFailed { timed_out: false });
    assert!(closed(&mut shard).is_some());
    shard.release(failing).expect("current");
    shard.abort(key);
    assert!(closed(&mut shard).is_some());
    shard.release(key).expect("current");
    let backend = shard.backend_counters(0)[0];
    assert_eq!((backend.active, backend.connections), (0, 2));
    assert_eq!(backend.connect_failures, 1);
    assert_eq!((backend.bytes_in, backend.bytes_out), (100, 7));
    let listener = shard.listener_counters()[0];
    assert_eq!(
        listener,
        ListenerCounters {
            active: 0,
            accepted: 2,
            refused: 0,
            ..Default::default()
        }
    );
}

#[test]
fn counters_keep_their_ids_when_the_control_side_appends_a_backend() {
    let t0 = Instant::now();
    let mut shard = shard(t0);
    let key = established(&mut shard, t0);
    shard.handle_event(
        t0,
        key,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: 5,
        },
    );
    let old = Arc::clone(shard.balancer(0).expect("pool 0").snapshot());
    let mut backends = old.backends().to_vec();
    backends.push(BackendInfo {
        name: "b".into(),
        addr: "127.0.0.1:2".parse().expect("literal"),
        weight: 1,
        max_connections: None,
        send_proxy: None,
    });
    shard.update_pool(
        0,
        Arc::new(PoolSnapshot::new(Algorithm::RoundRobin, backends, vec![])),
    );
    let counters = shard.backend_counters(0);
    assert_eq!(counters.len(), 2);
    assert_eq!((counters[0].active, counters[0].bytes_in), (1, 5));
    assert_eq!(counters[1], BackendCounters::default());
    // A list rewritten in another order (a reload): counters follow names.
    let mut reordered = shard
        .balancer(0)
        .expect("pool 0")
        .snapshot()
        .backends()
        .to_vec();
    reordered.reverse();
    shard.update_pool(
        0,
        Arc::new(PoolSnapshot::new(Algorithm::RoundRobin, reordered, vec![])),
    );
    let counters = shard.backend_counters(0);
    assert_eq!(counters[1].bytes_in, 5, "a's counters moved with its name");
    assert_eq!(counters[0].bytes_in, 0);
}

/// Issue 11: the access log's record of each connection, and the connect-time histogram.
#[test]
fn records_say_who_went_where_how_long_and_how_much() {
    let t0 = Instant::now();
    let mut shard = shard(t0).keep_records();
    assert!(shard.needs_peer(0), "records want every client's address");
    let client: std::net::SocketAddr = "127.0.0.9:4242".parse().expect("literal");
    let key = shard.accept(t0, 0, client, ()).expect("room");
    while shard.poll_action().is_some() {}
    let connected = t0 + Duration::from_millis(3);
    shard.handle_event(connected, key, Event::Connected);
    while shard.poll_action().is_some() {}
    shard.handle_event(
        connected,
        key,
        Event::Sent {
            dir: Dir::Upstream,
            bytes: 11,
        },
    );
    shard.handle_event(
        connected,
        key,
        Event::Sent {
            dir: Dir::Downstream,
            bytes: 22,
        },
    );
    let failed = t0 + Duration::from_millis(50);
    shard.handle_event(
        failed,
        key,
        Event::Failed {
            side: crate::core::conn::Side::Client,
            failure: crate::core::conn::Failure::Os(104),
        },
    );
    assert!(closed(&mut shard).is_some());
    let records: Vec<Finished> = shard.take_records().collect();
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!((r.client, r.listener, r.pool), (client, 0, 0));
    assert_eq!(r.backend, Some(BackendId(0)));
    assert_eq!(r.connect_time(), Some(Duration::from_millis(3)));
    assert_eq!(r.total(), Duration::from_millis(50));
    assert_eq!((r.bytes_in, r.bytes_out), (11, 22));
    assert!(matches!(r.reason, CloseReason::ClientFailed(_)));
    assert_eq!(shard.take_records().count(), 0, "taken once");
    let times = shard.backend_counters(0)[0].connect_time;
    // 3 ms: above the 2.5 ms bound, within 5 ms.
    assert_eq!(times.buckets[3], 1, "{times:?}");
    assert_eq!(times.sum_us, 3_000);
}

#[test]
fn a_backend_reset_is_counted_for_its_backend() {
    let now = Instant::now();
    let mut shard = shard(now);
    let key = established(&mut shard, now);
    let failure = crate::core::conn::Failure::Os(libc::ECONNRESET);
    shard.handle_event(
        now,
        key,
        Event::Failed {
            side: crate::core::conn::Side::Backend,
            failure,
        },
    );
    assert_eq!(
        closed(&mut shard),
        Some(CloseReason::BackendFailed(failure))
    );
    assert_eq!(shard.backend_counters(0)[0].resets, 1);
    // A client's reset is not the backend's.
    let key = established(&mut shard, now);
    shard.handle_event(
        now,
        key,
        Event::Failed {
            side: crate::core::conn::Side::Client,
            failure,
        },
    );
    closed(&mut shard);
    assert_eq!(shard.backend_counters(0)[0].resets, 1);
}
