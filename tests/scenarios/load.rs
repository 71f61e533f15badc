//! Load: many concurrent connections with verified bytes, and no descriptor leak after many
//! short connections.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use ringlb_tools::loadgen::{self, LoadConfig, Mode, Report};

use std::io::Write;
use std::net::{Shutdown, TcpStream};

use crate::connect::Blackhole;
use crate::harness::{
    Ctx, Launch, Outcome, PIPE_POOL, Proxy, WORKERS, echo_backend, echo_exchange, free_addr, join,
    payload, reset,
};

fn assert_clean(report: &Report, what: &str) {
    assert_eq!(
        report.connect_errors, 0,
        "{what}: connect errors: {report:?}"
    );
    assert_eq!(report.io_errors, 0, "{what}: I/O errors: {report:?}");
    assert_eq!(report.short_reads, 0, "{what}: short reads: {report:?}");
    assert_eq!(report.verify_errors, 0, "{what}: verify errors: {report:?}");
    assert_eq!(
        report.closed_by_peer, 0,
        "{what}: closed by the proxy: {report:?}"
    );
}

/// 1,000 concurrent request/response connections for about 1.5 s: every one opens, none
/// fails, and every echoed byte is verified.
pub fn many_concurrent(ctx: &Ctx) -> Outcome {
    const CONNECTIONS: u32 = 1000;
    let echo = echo_backend();
    let proxy = Proxy::start(ctx, &Launch::new(&[echo.local_addr()]))?;
    let mut config = LoadConfig::new(proxy.addr, Mode::Rr { size: 128 });
    config.connections = CONNECTIONS;
    config.threads = 2;
    config.duration = Duration::from_millis(1500);
    let report = loadgen::run(&config).expect("load run");
    eprintln!(
        "opened {} peak {} requests {}",
        report.connections_opened, report.open_peak, report.requests
    );
    assert_clean(&report, "1,000 connections");
    assert_eq!(
        report.connections_opened,
        u64::from(CONNECTIONS),
        "connections opened"
    );
    assert_eq!(
        report.open_peak,
        u64::from(CONNECTIONS),
        "connections open at once"
    );
    assert!(
        report.requests >= u64::from(CONNECTIONS),
        "only {} requests completed over {CONNECTIONS} connections",
        report.requests
    );
    assert_eq!(
        echo.stats().connections,
        u64::from(CONNECTIONS),
        "connections the backend accepted"
    );
    proxy.finish();
    Ok(())
}

/// The smallest ring validation accepts (`--ring-entries 2`, one connect + timeout chain)
/// serves: 300 short connections (a connect chain each), then 64 persistent connections
/// echoing 16 KiB requests for a second (poll + splice chains in splice mode), every byte
/// verified, and the proxy stops cleanly. Other engines have no ring: nothing to check.
pub fn smallest_ring(ctx: &Ctx) -> Outcome {
    if ctx.setup.engine != "uring" {
        return Ok(());
    }
    let echo = echo_backend();
    let proxy = Proxy::start(
        ctx,
        &Launch::new(&[echo.local_addr()])
            .arg("--ring-entries")
            .arg("2"),
    )?;
    short_connections(&proxy, 300);
    let mut config = LoadConfig::new(proxy.addr, Mode::Rr { size: 16 << 10 });
    config.connections = 64;
    config.threads = 2;
    config.duration = Duration::from_secs(1);
    let report = loadgen::run(&config).expect("load run");
    assert_clean(&report, "64 connections through a 2-entry ring");
    assert!(report.requests >= 64, "requests: {report:?}");
    proxy.finish();
    Ok(())
}

/// Runs `count` short connect-send-receive-close cycles, 32 at a time.
fn short_connections(proxy: &Proxy, count: u64) {
    let mut config = LoadConfig::new(proxy.addr, Mode::Connect { size: 64 });
    config.connections = 32;
    config.threads = 2;
    config.max_requests = Some(count);
    config.duration = Duration::from_secs(60);
    let report = loadgen::run(&config).expect("load run");
    assert_clean(&report, "short connections");
    assert_eq!(report.requests, count, "completed cycles: {report:?}");
}

fn count(fds: &BTreeMap<String, usize>, kind: &str) -> usize {
    fds.get(kind).copied().unwrap_or(0)
}

fn others(fds: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    fds.iter()
        .filter(|(k, _)| *k != "socket" && *k != "pipe")
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// 2,000 short connections (10,000 in the heavy configuration), then every socket the proxy
/// opened for them is closed again: the socket count returns exactly to the baseline taken
/// after a warm-up round, and nothing else but pooled pipes remains. Pipes may stay: each
/// worker keeps up to `pipe_pool` (256) idle pipes (2 descriptors each), and no flag shrinks
/// the pool in the quick form; so pipes are only bounded by that pool.
pub fn no_fd_leak(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let proxy = Proxy::start(ctx, &Launch::new(&[echo.local_addr()]))?;
    short_connections(&proxy, 200);
    let baseline = settle(&proxy, None);
    let n = if ctx.setup.heavy { 10_000 } else { 2_000 };
    short_connections(&proxy, n);
    let after = settle(&proxy, Some(count(&baseline, "socket")));
    eprintln!("fds after warm-up: {baseline:?}; after {n} connections: {after:?}");
    assert_eq!(
        count(&after, "socket"),
        count(&baseline, "socket"),
        "sockets after {n} connections (baseline {baseline:?}, now {after:?})"
    );
    assert_eq!(
        others(&after),
        others(&baseline),
        "non-socket, non-pipe descriptors after {n} connections"
    );
    let pipes = count(&after, "pipe");
    let bound = count(&baseline, "pipe") + WORKERS * PIPE_POOL * 2;
    assert!(
        pipes <= bound,
        "{pipes} pipe descriptors after {n} connections, more than the pool allows ({bound})"
    );
    proxy.finish();
    Ok(())
}

/// The proxy's descriptors once closes have settled: waits (up to 5 s) until the socket count
/// reaches `target`, or, without a target, stops changing for 300 ms.
fn settle(proxy: &Proxy, target: Option<usize>) -> BTreeMap<String, usize> {
    let started = Instant::now();
    let mut last = proxy.fds();
    let mut stable_since = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(50));
        let now = proxy.fds();
        if target == Some(count(&now, "socket")) {
            return now;
        }
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if target.is_none() && stable_since.elapsed() > Duration::from_millis(300) {
            return now;
        }
    }
    last
}

/// Failure paths close what they open: with a refused port, a blackholed backend and a live
/// echo backend (round robin, 2 retries), 30 echo exchanges (some after a refused or timed-out
/// attempt), 30 clients that reset right after connecting and 30 that close right after
/// sending a little (both often while the proxy is still connecting). Afterwards the proxy's
/// socket count returns exactly to its value before the first connection.
pub fn no_fd_leak_failure_paths(ctx: &Ctx) -> Outcome {
    const EACH: usize = 30;
    let echo = echo_backend();
    let hole = Blackhole::new();
    let launch = Launch::new(&[free_addr(), hole.addr, echo.local_addr()])
        .arg("--algorithm")
        .arg("round-robin");
    let proxy = Proxy::start(ctx, &launch)?;
    let baseline = settle(&proxy, None);
    let addr = proxy.addr;
    let exchanges: Vec<_> = (0..EACH)
        .map(|i| {
            thread::spawn(move || {
                let data = payload(100 + i, i as u64);
                let got = echo_exchange(addr, data.clone());
                assert!(got == data, "exchange {i}: echo differs");
            })
        })
        .collect();
    let abrupt = thread::spawn(move || {
        for i in 0..2 * EACH {
            let mut s = TcpStream::connect(addr).expect("connect");
            if i % 2 == 0 {
                reset(s);
            } else {
                s.write_all(b"bye").expect("write");
                s.shutdown(Shutdown::Both).expect("shutdown");
            }
        }
    });
    for (i, e) in exchanges.into_iter().enumerate() {
        join(e, &format!("exchange {i}"));
    }
    join(abrupt, "abrupt clients");
    let after = settle(&proxy, Some(count(&baseline, "socket")));
    eprintln!("fds before: {baseline:?}; after: {after:?}");
    assert_eq!(
        count(&after, "socket"),
        count(&baseline, "socket"),
        "sockets after the failure paths (before {baseline:?}, now {after:?})"
    );
    assert_eq!(
        others(&after),
        others(&baseline),
        "non-socket, non-pipe descriptors after the failure paths"
    );
    let pipes = count(&after, "pipe");
    let bound = count(&baseline, "pipe") + WORKERS * PIPE_POOL * 2;
    assert!(
        pipes <= bound,
        "{pipes} pipe descriptors after the failure paths, more than the pool allows ({bound})"
    );
    proxy.finish();
    Ok(())
}
