//! A seeded simulation of one worker's [`Shard`] on a virtual clock.
//!
//! Modelled on quinn-proto's test harness: a simulated engine carries out the core's actions
//! against simulated peers and reports results back, in random batches, while the clock jumps to
//! the next thing that can happen (a peer writing, a send completing, a connect answer, the
//! shard's next timer) or, when results are waiting, advances by small random steps. It never
//! steps past [`Shard::next_timeout`], as a real engine sleeps no longer than that.
//!
//! Every connection gets a simulated client (an upstream payload delivered in random chunks, then
//! a half-close, a linger, or a reset) and a simulated backend per connect attempt (accepts,
//! refuses, or blackholes), which answers with a fixed payload, an echo, or a linger, and may
//! reset. Receives are multishot or single-shot at random; sends complete partially at random;
//! sinks stall for a while (backpressure). Bytes are carried as ranges of sequence numbers so that
//! the sink can check that it got every byte once and in order.
//!
//! The invariants checked on every turn and at the end of each seed are listed on
//! [`seeded_simulation`]. A failing seed is printed; rerun one with `RINGLB_SIM_SEED=<n>`, or
//! soak with more seeds with `RINGLB_SIM_SEEDS=<count>`.

#[path = "core_sim/driver.rs"]
mod driver;
#[path = "core_sim/engine.rs"]
mod engine;
#[path = "core_sim/invariants.rs"]
mod invariants;
#[path = "core_sim/peers.rs"]
mod peers;
#[path = "core_sim/rng.rs"]
mod rng;
#[path = "core_sim/state.rs"]
mod state;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlb::config::Mode;
use ringlb::core::backend::{BackendId, BackendInfo, BackendState};
use ringlb::core::balance::{Algorithm, PoolSnapshot};
use ringlb::core::conn::{Action, CloseReason, ConnParams, Failure};
use ringlb::core::shard::{ListenerPolicy, Shard};
use ringlb::core::slot::SlotKey;
use ringlb::core::timer::TICK;

use state::{Coverage, Sim};

const SEEDS: u64 = 200;
const CONNS: usize = 50;

/// 200 seeds × 50 connections. Checked on every turn: at most one receive and one send out per
/// direction; sends name exactly the bytes held, by the path they were received on; the sink gets
/// every byte once and in order; ShutdownWrite only after the source's EOF and every byte, and no
/// Recv or Send after it; nothing after Close; a failure closes with a reset; connect attempts go
/// to distinct candidates, at most retries + 1, a timed-out one moved on from within a tick of its
/// deadline; idle closes within a tick after the deadline, never before; auto switches to splice
/// only after a full streak and with nothing in flight; receives stay armed only below the limit
/// and buffered bytes stay bounded; no direction stalls; the balancer's active counts match the
/// connections; `Shard::len` matches. At the end of each seed: every connection closed and was
/// released, counts back at zero, every stale completion rejected without touching the slot's
/// new occupant, and the shard's counters agree with what the engine saw.
#[test]
fn seeded_simulation() {
    let seeds: Vec<u64> = match (
        std::env::var("RINGLB_SIM_SEED"),
        std::env::var("RINGLB_SIM_SEEDS"),
    ) {
        (Ok(seed), _) => vec![seed.parse().expect("RINGLB_SIM_SEED is a number")],
        // A longer soak: `RINGLB_SIM_SEEDS=5000 cargo test --release --test core_sim`.
        (_, Ok(n)) => (0..n.parse().expect("RINGLB_SIM_SEEDS is a number")).collect(),
        _ => (0..SEEDS).collect(),
    };
    let mut total = Coverage::default();
    for seed in seeds.iter().copied() {
        let result = std::panic::catch_unwind(move || {
            let mut sim = Sim::new(seed);
            sim.run();
            sim.cov
        });
        match result {
            Ok(cov) => {
                for (reason, n) in cov.closes {
                    *total.closes.entry(reason).or_default() += n;
                }
                total.auto_switches += cov.auto_switches;
                total.backpressure_cancels += cov.backpressure_cancels;
                total.partial_sends += cov.partial_sends;
                total.core_connect_timeouts += cov.core_connect_timeouts;
                total.retries += cov.retries;
                total.stale_events += cov.stale_events;
                total.late_events += cov.late_events;
                total.refused_full += cov.refused_full;
                total.aborts += cov.aborts;
                total.bytes += cov.bytes;
            }
            Err(panic) => {
                eprintln!("simulation failed with seed {seed} (rerun: RINGLB_SIM_SEED={seed})");
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!("{total:#?}");
    if seeds.len() as u64 >= SEEDS {
        // The simulation reaches every outcome it claims to check.
        for reason in [
            CloseReason::Done,
            CloseReason::NoBackend,
            CloseReason::ClientFailed(Failure::Os(libc::ECONNRESET)),
            CloseReason::BackendFailed(Failure::Os(libc::ECONNRESET)),
            CloseReason::IdleTimeout,
            CloseReason::Aborted,
        ] {
            assert!(
                total.closes.get(&reason).copied().unwrap_or(0) > 0,
                "no {reason:?} closes"
            );
        }
        assert!(total.closes[&CloseReason::Done] > SEEDS * CONNS as u64 / 4);
        for (what, n) in [
            ("auto switches", total.auto_switches),
            ("backpressure cancels", total.backpressure_cancels),
            ("partial sends", total.partial_sends),
            ("core connect timeouts", total.core_connect_timeouts),
            ("retries", total.retries),
            ("stale events", total.stale_events),
            ("late events", total.late_events),
            ("full refusals", total.refused_full),
            ("aborts", total.aborts),
        ] {
            assert!(n > 0, "the simulation never produced {what}");
        }
    }
}

/// A pool with nothing Up: every client is closed at once with NoBackend, counts stay at zero.
#[test]
fn no_backend_up_closes_every_client_at_once() {
    let t0 = Instant::now();
    let infos = vec![BackendInfo {
        name: "down".into(),
        addr: (Ipv4Addr::LOCALHOST, 9).into(),
        weight: 1,
        max_connections: None,
        send_proxy: None,
    }];
    let pool = Arc::new(PoolSnapshot::new(
        Algorithm::RoundRobin,
        infos,
        vec![BackendState::Down],
    ));
    let params = ConnParams {
        connect_timeout: Some(Duration::from_millis(50)),
        idle_timeout: Duration::from_secs(1),
        client_fin: Duration::from_secs(1),
        server_fin: Duration::from_secs(1),
        mode: Mode::Auto,
        copy_high_water: 4096,
        splice_capacity: 8192,
        full_receipt: 1024,
        loopback_copy: false,
    };
    let listener = ListenerPolicy {
        pool: 0,
        params,
        candidates: 3,
        queue: Default::default(),
        admission: None,
        affinity: None,
        inspect: None,
    };
    let mut shard: Shard<u32> = Shard::new(t0, vec![listener], vec![pool], 16, 1);
    let keys: Vec<SlotKey> = (0..5)
        .map(|i| {
            shard
                .accept(t0, 0, (Ipv4Addr::LOCALHOST, 1).into(), i)
                .expect("room")
        })
        .collect();
    let mut closed = Vec::new();
    while let Some((key, action)) = shard.poll_action() {
        assert_eq!(
            action,
            Action::Close {
                reset: false,
                reason: CloseReason::NoBackend
            }
        );
        closed.push(key);
    }
    closed.sort_by_key(|k| k.index());
    assert_eq!(closed, keys);
    assert_eq!(shard.next_timeout(), None);
    for key in keys {
        assert!(shard.release(key).is_some());
    }
    assert!(shard.is_empty());
    assert_eq!(shard.balancer(0).expect("pool").active(BackendId(0)), 0);
    assert_eq!(shard.stats().closed_no_backend, 5);
}

/// Blackholed backends only: the connection gives up after exactly (retries + 1) connect
/// timeouts, plus at most one tick of rounding, on a clock that jumps from timer to timer.
#[test]
fn all_blackholed_gives_up_after_every_timeout() {
    for (timeout_ms, offset_us) in [(100u64, 0u64), (100, 1_234), (48, 3_999), (7, 10)] {
        let t0 = Instant::now();
        let infos = (0..4)
            .map(|i| BackendInfo {
                name: format!("b{i}"),
                addr: (Ipv4Addr::LOCALHOST, 9000 + i).into(),
                weight: 1,
                max_connections: None,
                send_proxy: None,
            })
            .collect();
        let pool = Arc::new(PoolSnapshot::new(
            Algorithm::RoundRobin,
            infos,
            vec![BackendState::Up; 4],
        ));
        let timeout = Duration::from_millis(timeout_ms);
        let params = ConnParams {
            connect_timeout: Some(timeout),
            idle_timeout: Duration::from_secs(1),
            client_fin: Duration::from_secs(1),
            server_fin: Duration::from_secs(1),
            mode: Mode::Copy,
            copy_high_water: 4096,
            splice_capacity: 8192,
            full_receipt: 1024,
            loopback_copy: false,
        };
        let listener = ListenerPolicy {
            pool: 0,
            params,
            candidates: 3,
            queue: Default::default(),
            admission: None,
            affinity: None,
            inspect: None,
        };
        let mut shard: Shard<()> = Shard::new(t0, vec![listener], vec![pool], 16, 7);
        let accepted = t0 + Duration::from_micros(offset_us);
        let key = shard
            .accept(accepted, 0, (Ipv4Addr::LOCALHOST, 1).into(), ())
            .expect("room");
        let mut now = accepted;
        let mut tried = Vec::new();
        let closed_at = loop {
            let mut closed = None;
            while let Some((k, action)) = shard.poll_action() {
                assert_eq!(k, key);
                match action {
                    Action::Connect { backend, .. } => {
                        let balancer = shard.balancer(0).expect("pool");
                        assert_eq!(balancer.active(backend), 1);
                        tried.push((backend, now));
                    }
                    Action::Close { reset, reason } => {
                        assert!(!reset);
                        assert_eq!(reason, CloseReason::NoBackend);
                        closed = Some(now);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if let Some(at) = closed {
                break at;
            }
            now = shard.next_timeout().expect("a deadline is armed");
            shard.handle_timeouts(now);
        };
        assert_eq!(tried.len(), 3);
        let mut distinct: Vec<BackendId> = tried.iter().map(|(b, _)| *b).collect();
        distinct.dedup();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        for pair in tried.windows(2) {
            let gap = pair[1].1 - pair[0].1;
            assert!(
                gap >= timeout && gap <= timeout + TICK,
                "attempt lasted {gap:?}"
            );
        }
        let total = closed_at - accepted;
        assert!(total >= timeout * 3, "gave up after {total:?}");
        // Once the first expiry lands on a tick, the later ones do too when the timeout is a
        // whole number of ticks; otherwise each attempt may round up by a tick.
        let slack = if timeout.as_nanos() % TICK.as_nanos() == 0 {
            TICK
        } else {
            TICK * 3
        };
        assert!(
            total <= timeout * 3 + slack,
            "gave up after {total:?} ({timeout_ms} ms timeout)"
        );
        let balancer = shard.balancer(0).expect("pool");
        for (backend, _) in tried {
            assert_eq!(balancer.active(backend), 0);
        }
        assert!(shard.release(key).is_some());
    }
}
