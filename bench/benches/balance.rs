//! Micro-benchmarks of the balancing core: Maglev lookup and build, and picks.
//!
//! Targets: a lookup under 10 ns; a 1000-backend build at M = 65 537 under 2 ms (the Maglev
//! paper reports 1.8 ms).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringlb::core::backend::{BackendId, BackendInfo};
use ringlb::core::balance::{Algorithm, Balancer, MaglevTable, PoolSnapshot};

const TABLE_SIZE: u32 = 65_537;

fn pool(n: usize) -> Vec<BackendInfo> {
    (0..n)
        .map(|i| BackendInfo {
            name: format!("backend-{i}"),
            addr: (Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8), 8080).into(),
            weight: 1,
            max_connections: None,
            send_proxy: None,
        })
        .collect()
}

/// Distinct client addresses, so that lookups touch different slots as real traffic does.
fn clients() -> Vec<IpAddr> {
    (0u32..1024)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 ^ i.wrapping_mul(2_654_435_761))))
        .collect()
}

fn maglev_lookup(c: &mut Criterion) {
    let backends = pool(100);
    let ids: Vec<BackendId> = (0..100).map(BackendId).collect();
    let table = MaglevTable::build(&backends, &ids, TABLE_SIZE).expect("100 backends");
    let clients = clients();
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6));
    let mut group = c.benchmark_group("maglev_lookup");
    group.bench_function("v4", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(table.lookup(black_box(clients[i])))
        })
    });
    group.bench_function("v6", |b| b.iter(|| black_box(table.lookup(black_box(v6)))));
    group.finish();

    // The whole pick an engine makes: lookup plus two fallbacks, skipping non-Up owners.
    let snapshot = Arc::new(PoolSnapshot::with_table_size(
        Algorithm::SourceHash,
        backends,
        Vec::new(),
        TABLE_SIZE,
    ));
    let mut balancer = Balancer::new(snapshot, 1);
    c.bench_function("source_hash_pick_3_candidates", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(balancer.pick(black_box(clients[i]), 3))
        })
    });
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build_65537");
    group.sample_size(20);
    for n in [10usize, 100, 1000] {
        let backends = pool(n);
        let ids: Vec<BackendId> = (0..n as u32).map(BackendId).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| MaglevTable::build(black_box(&backends), &ids, TABLE_SIZE))
        });
    }
    group.finish();
}

fn picks(c: &mut Criterion) {
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    for (name, algorithm) in [
        ("least_conn_pick_100", Algorithm::LeastConnections),
        ("random_two_pick_100", Algorithm::RandomTwo),
        ("round_robin_pick_100", Algorithm::RoundRobin),
    ] {
        let snapshot = Arc::new(PoolSnapshot::new(algorithm, pool(100), Vec::new()));
        let mut balancer = Balancer::new(snapshot, 7);
        // Uneven, changing loads: every pick opens a connection, every other one closes one.
        let mut group = c.benchmark_group(name);
        for candidates in [1usize, 3] {
            group.bench_with_input(
                BenchmarkId::new("candidates", candidates),
                &candidates,
                |b, &k| {
                    let mut n = 0u32;
                    b.iter(|| {
                        let pick = balancer.pick(black_box(client), k);
                        if let Some(pick) = pick {
                            balancer.connection_opened(pick.chosen());
                            n = n.wrapping_add(1);
                            if n % 2 == 0 {
                                balancer.connection_closed(BackendId(n % 100));
                            }
                        }
                        black_box(pick)
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, maglev_lookup, maglev_build, picks);
criterion_main!(benches);
