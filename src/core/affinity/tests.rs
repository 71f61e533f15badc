use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::core::backend::BackendInfo;
use crate::core::balance::Algorithm;

fn pool(n: usize) -> PoolSnapshot {
    let backends = (0..n)
        .map(|i| BackendInfo {
            name: format!("b{i}"),
            addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
            weight: 1,
            max_connections: None,
            send_proxy: None,
        })
        .collect();
    PoolSnapshot::new(Algorithm::RoundRobin, backends, Vec::new())
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

const TTL: Duration = Duration::from_secs(10);

fn table(max_entries: usize) -> Affinity {
    Affinity::new(
        AffinityPolicy {
            ttl: TTL,
            max_entries,
        },
        7,
    )
}

#[test]
fn a_client_keeps_its_backend_within_the_ttl_and_loses_it_after() {
    let t0 = Instant::now();
    let table = table(100);
    let snapshot = pool(3);
    let first = table.stick(ip(1), t0, &snapshot, || Some(BackendId(2)));
    assert_eq!(first, Some(Stick::Recorded(BackendId(2))));
    // The pool grew and the balancer would pick another: the client stays.
    let bigger = pool(4);
    let later = t0 + TTL;
    assert_eq!(
        table.stick(ip(1), later, &bigger, || Some(BackendId(3))),
        Some(Stick::Kept(BackendId(2)))
    );
    // Each connection refreshes it; a TTL of silence releases it.
    let expired = later + TTL + Duration::from_millis(1);
    assert_eq!(
        table.stick(ip(1), expired, &bigger, || Some(BackendId(3))),
        Some(Stick::Recorded(BackendId(3)))
    );
    let stats = table.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 2, 1));
}

#[test]
fn a_down_backend_releases_its_clients_and_a_draining_one_keeps_them() {
    let t0 = Instant::now();
    let table = table(100);
    let snapshot = pool(2);
    table.stick(ip(1), t0, &snapshot, || Some(BackendId(0)));
    let draining = snapshot.with_state(BackendId(0), BackendState::Draining);
    assert_eq!(
        table.stick(ip(1), t0, &draining, || Some(BackendId(1))),
        Some(Stick::Kept(BackendId(0)))
    );
    let down = snapshot.with_state(BackendId(0), BackendState::Down);
    assert_eq!(
        table.stick(ip(1), t0, &down, || Some(BackendId(1))),
        Some(Stick::Recorded(BackendId(1)))
    );
    assert_eq!(table.stick(ip(2), t0, &down, || None), None);
}

#[test]
fn the_table_is_bounded_and_evicts_the_least_recently_used() {
    let t0 = Instant::now();
    let table = table(64);
    let snapshot = pool(2);
    for i in 0..1000 {
        table.stick(ip(i), t0, &snapshot, || Some(BackendId(i % 2)));
    }
    let stats = table.stats();
    assert!(stats.entries <= 64, "{stats:?}");
    assert_eq!(stats.evictions, 1000 - stats.entries);
    // The latest clients are the ones kept.
    assert_eq!(
        table.stick(ip(999), t0, &snapshot, || Some(BackendId(0))),
        Some(Stick::Kept(BackendId(1)))
    );
    assert!(table.entries(t0, 10).len() <= 10);
    assert!(table.entries(t0 + TTL * 2, 1000).is_empty(), "all expired");
}
