//! Unit tests of the flow table, on a virtual clock.

use super::*;
use crate::core::backend::BackendInfo;
use crate::core::balance::Algorithm;

const IDLE: Duration = Duration::from_secs(30);

fn snapshot(algorithm: Algorithm, states: &[BackendState]) -> Arc<PoolSnapshot> {
    let backends = (0..states.len())
        .map(|i| BackendInfo {
            name: format!("b{i}"),
            addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
            weight: 1,
            max_connections: None,
            send_proxy: None,
        })
        .collect();
    Arc::new(PoolSnapshot::new(algorithm, backends, states.to_vec()))
}

fn flows(max_flows: usize, responses: Option<u32>, backends: usize) -> Flows<u32> {
    let policy = FlowPolicy {
        idle_timeout: IDLE,
        responses,
        max_flows,
    };
    let states = vec![BackendState::Up; backends];
    Flows::new(
        policy,
        Balancer::new(snapshot(Algorithm::RoundRobin, &states), 1),
    )
}

fn client(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], 10_000 + n))
}

/// Open a flow for `client` with socket `io`; returns its key and backend.
fn open(flows: &mut Flows<u32>, now: Instant, c: SocketAddr, io: u32) -> (SlotKey, BackendId) {
    match flows.arrival(now, c) {
        Arrival::Open { flow, backend, .. } => {
            flows.opened(flow, io).expect("flow still there");
            (flow, backend)
        }
        other => panic!("expected a new flow, got {other:?}"),
    }
}

#[test]
fn a_client_keeps_its_flow_and_its_replies_find_it() {
    let t0 = Instant::now();
    let mut flows = flows(16, None, 3);
    let (key, _) = open(&mut flows, t0, client(1), 7);
    assert_eq!(flows.arrival(t0, client(1)), Arrival::Forward { flow: key });
    assert_eq!(flows.io(key), Some(&7));
    assert_eq!(
        flows.reply(t0, key),
        Reply::Send {
            client: client(1),
            ended: None
        }
    );
    let (other, _) = open(&mut flows, t0, client(2), 8);
    assert_ne!(key, other);
    assert_eq!(flows.len(), 2);
    assert_eq!(flows.counters().opened, 2);
}

#[test]
fn flows_expire_after_the_idle_timeout_and_use_restarts_it() {
    let t0 = Instant::now();
    let mut flows = flows(16, None, 1);
    let (a, _) = open(&mut flows, t0, client(1), 1);
    let (b, _) = open(&mut flows, t0 + Duration::from_secs(10), client(2), 2);
    // A reply keeps `a` alive too.
    let _ = flows.reply(t0 + Duration::from_secs(20), a);
    assert_eq!(
        flows.next_expiry(),
        Some(t0 + Duration::from_secs(10) + IDLE)
    );
    let mut closed = Vec::new();
    flows.expire(t0 + IDLE + Duration::from_secs(5), |io| closed.push(io));
    assert!(closed.is_empty(), "nothing idle for 30 s yet");
    flows.expire(t0 + Duration::from_secs(40), |io| closed.push(io));
    assert_eq!(closed, vec![2], "b idle since 10 s");
    assert!(flows.io(b).is_none());
    flows.expire(t0 + Duration::from_secs(50), |io| closed.push(io));
    assert_eq!(closed, vec![2, 1]);
    assert!(flows.is_empty());
    assert_eq!(flows.counters().expired, 2);
    assert_eq!(flows.next_expiry(), None);
}

#[test]
fn a_flow_ends_after_its_responses() {
    let t0 = Instant::now();
    let mut flows = flows(16, Some(2), 1);
    let (key, _) = open(&mut flows, t0, client(1), 9);
    assert!(matches!(
        flows.reply(t0, key),
        Reply::Send { ended: None, .. }
    ));
    assert_eq!(
        flows.reply(t0, key),
        Reply::Send {
            client: client(1),
            ended: Some(9)
        }
    );
    assert_eq!(flows.reply(t0, key), Reply::Stale, "the key went stale");
    assert!(flows.is_empty());
    assert_eq!(flows.counters().answered, 1);
    // The client's next datagram is a new flow.
    assert!(matches!(
        flows.arrival(t0, client(1)),
        Arrival::Open { evicted: None, .. }
    ));
}

#[test]
fn a_full_table_evicts_the_least_recently_used_flow() {
    let t0 = Instant::now();
    let mut flows = flows(3, None, 1);
    for n in 0..3 {
        open(
            &mut flows,
            t0 + Duration::from_secs(u64::from(n)),
            client(n),
            u32::from(n),
        );
    }
    // Client 0 speaks again: client 1 is now the least recently used.
    assert!(matches!(
        flows.arrival(t0 + Duration::from_secs(5), client(0)),
        Arrival::Forward { .. }
    ));
    match flows.arrival(t0 + Duration::from_secs(6), client(9)) {
        Arrival::Open { evicted, .. } => assert_eq!(evicted, Some(1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(flows.len(), 3);
    assert_eq!(flows.counters().evicted, 1);
}

#[test]
fn a_flood_of_new_clients_keeps_the_table_bounded() {
    let t0 = Instant::now();
    let mut flows = flows(100, None, 4);
    let mut open_sockets = 0i64;
    for n in 0..50_000u32 {
        let c = SocketAddr::from(([127, 1, (n >> 8) as u8, n as u8], 5000));
        if let Arrival::Open { flow, evicted, .. } = flows.arrival(t0, c) {
            flows.opened(flow, n).expect("just opened");
            open_sockets += 1;
            if evicted.is_some() {
                open_sockets -= 1;
            }
        }
        assert!(flows.len() <= 100);
    }
    assert_eq!(open_sockets, 100, "every evicted socket was handed back");
    assert_eq!(flows.counters().evicted, 50_000 - 100);
    assert!(flows.by_client.len() <= 100);
}

#[test]
fn a_refused_flow_picks_another_backend_next_time() {
    let t0 = Instant::now();
    let policy = FlowPolicy {
        idle_timeout: IDLE,
        responses: None,
        max_flows: 16,
    };
    let states = [BackendState::Up; 3];
    let mut flows: Flows<u32> = Flows::new(
        policy,
        Balancer::new(snapshot(Algorithm::SourceHash, &states), 1),
    );
    let (key, first) = open(&mut flows, t0, client(1), 4);
    assert_eq!(flows.refused(t0, key), Some(4));
    assert!(flows.io(key).is_none());
    match flows.arrival(t0, client(1)) {
        Arrival::Open { flow, backend, .. } => {
            assert_eq!(flow, key, "the same flow, picking again");
            assert_ne!(backend, first, "not the backend that refused");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(flows.counters().refused, 1);
    assert_eq!(flows.refusals().get(first.index()), Some(&1));
}

#[test]
fn source_hashing_keeps_a_client_address_on_one_backend_across_flows() {
    let t0 = Instant::now();
    let states = [BackendState::Up; 5];
    let mut flows: Flows<u32> = Flows::new(
        FlowPolicy {
            idle_timeout: IDLE,
            responses: Some(1),
            max_flows: 64,
        },
        Balancer::new(snapshot(Algorithm::SourceHash, &states), 1),
    );
    for host in 1..20u8 {
        let mut seen = None;
        for port in 0..5u16 {
            let c = SocketAddr::from(([127, 3, 0, host], 2000 + port));
            let (key, backend) = open(&mut flows, t0, c, 0);
            let _ = flows.reply(t0, key);
            assert!(seen.is_none_or(|b| b == backend), "host {host} moved");
            seen = Some(backend);
        }
    }
}

#[test]
fn a_backend_going_down_ends_its_flows_and_no_new_flow_goes_there() {
    let t0 = Instant::now();
    let mut flows = flows(16, None, 2);
    let (a, ba) = open(&mut flows, t0, client(1), 1);
    let (b, bb) = open(&mut flows, t0, client(2), 2);
    assert_ne!(ba, bb, "round robin spreads the two");
    let down = flows.snapshot().with_state(ba, BackendState::Down);
    let mut closed = Vec::new();
    flows.update(Arc::new(down), |io| closed.push(io));
    assert_eq!(closed, vec![1]);
    assert!(flows.io(a).is_none());
    assert_eq!(flows.io(b), Some(&2));
    for n in 10..20 {
        let (_, backend) = open(&mut flows, t0, client(n), 0);
        assert_eq!(backend, bb);
    }
    assert_eq!(flows.counters().rebalanced, 1);
}

#[test]
fn no_backend_up_drops_and_counts() {
    let t0 = Instant::now();
    let states = [BackendState::Down];
    let mut flows: Flows<u32> = Flows::new(
        FlowPolicy {
            idle_timeout: IDLE,
            responses: None,
            max_flows: 4,
        },
        Balancer::new(snapshot(Algorithm::RoundRobin, &states), 1),
    );
    assert_eq!(flows.arrival(t0, client(1)), Arrival::Drop);
    assert_eq!(flows.counters().no_backend, 1);
    assert!(flows.is_empty());
}

#[test]
fn a_socket_that_could_not_be_opened_ends_the_flow() {
    let t0 = Instant::now();
    let mut flows = flows(4, None, 1);
    let Arrival::Open { flow, .. } = flows.arrival(t0, client(1)) else {
        panic!("a new flow");
    };
    flows.open_failed(flow);
    assert!(flows.is_empty());
    assert_eq!(flows.opened(flow, 3), Err(3), "a late socket comes back");
    assert!(matches!(flows.arrival(t0, client(1)), Arrival::Open { .. }));
}

#[test]
fn a_smaller_table_after_a_reload_evicts_the_least_recently_used() {
    let t0 = Instant::now();
    let mut flows = flows(8, None, 1);
    for n in 0..6 {
        open(
            &mut flows,
            t0 + Duration::from_secs(u64::from(n)),
            client(n),
            u32::from(n),
        );
    }
    let mut closed = Vec::new();
    let policy = FlowPolicy {
        idle_timeout: Duration::from_secs(1),
        responses: Some(1),
        max_flows: 4,
    };
    flows.set_policy(policy, |io| closed.push(io));
    assert_eq!(closed, vec![0, 1], "the two least recently used");
    assert_eq!(flows.len(), 4);
    // The new idle timeout and responses apply at once.
    assert_eq!(flows.next_expiry(), Some(t0 + Duration::from_secs(3)));
    let key = flows.by_client[&client(5)];
    assert!(matches!(
        flows.reply(t0, key),
        Reply::Send { ended: Some(5), .. }
    ));
}
