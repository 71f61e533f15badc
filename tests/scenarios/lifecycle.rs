//! Process life: graceful shutdown on SIGTERM, and worker threads pinned to CPUs.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    Ctx, Launch, Outcome, Proxy, SHUTDOWN_GRACE, Skip, WORKERS, connect, echo_backend, wait_closed,
};

fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).expect("read the echo");
    assert_eq!(buf, msg, "echo");
}

/// With an open, active connection, SIGTERM: new connections are refused within a second, the
/// existing connection keeps working for a moment, and the process exits with status 0 within
/// the shutdown grace plus slack (closing the connection it still had).
pub fn graceful_shutdown(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let mut proxy = Proxy::start(ctx, &Launch::new(&[echo.local_addr()]))?;
    let mut existing = connect(proxy.addr);
    round_trip(&mut existing, b"before SIGTERM");
    proxy.terminate();
    let signalled = Instant::now();
    thread::sleep(Duration::from_millis(100));
    round_trip(&mut existing, b"just after SIGTERM");
    // New connections are refused (the listeners are closed) soon after.
    let mut refused_after = None;
    while signalled.elapsed() < Duration::from_secs(1) {
        match TcpStream::connect_timeout(&proxy.addr, Duration::from_millis(200)) {
            Err(_) => {
                refused_after = Some(signalled.elapsed());
                break;
            }
            Ok(s) => drop(s),
        }
        thread::sleep(Duration::from_millis(20));
    }
    let refused_after = refused_after.unwrap_or_else(|| {
        panic!(
            "new connections still accepted 1 s after SIGTERM; log:\n{}",
            proxy.log_tail()
        )
    });
    if signalled.elapsed() < SHUTDOWN_GRACE - Duration::from_millis(200) {
        round_trip(&mut existing, b"while draining");
    }
    let limit = SHUTDOWN_GRACE + Duration::from_millis(1500);
    let status = proxy.wait_exit(limit);
    let exited_after = signalled.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "ringlb still running {limit:?} after SIGTERM; log:\n{}",
            proxy.log_tail()
        )
    });
    eprintln!("refused after {refused_after:?}, exited after {exited_after:?} with {status}");
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; log:\n{}",
        proxy.log_tail()
    );
    proxy.check_log();
    // The connection it still held is closed now (end of stream or reset).
    wait_closed(&existing, Duration::from_secs(1));
    Ok(())
}

/// The CPUs in a `Cpus_allowed_list` such as `0-1,3`.
fn parse_cpu_list(list: &str) -> BTreeSet<usize> {
    let mut cpus = BTreeSet::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
                cpus.extend(a..=b);
            }
            None => {
                cpus.insert(part.parse().expect("cpu"));
            }
        }
    }
    cpus
}

/// Each of the two worker threads (`ringlb-<engine>-N`) is pinned to exactly one CPU, and the
/// two to different CPUs. Only for the thread-per-core engines, on a machine with 2+ CPUs.
pub fn worker_pinning(ctx: &Ctx) -> Outcome {
    let engine = ctx.setup.engine;
    if !matches!(engine, "uring" | "epoll") {
        return Err(Skip(format!(
            "worker pinning does not apply to the {engine} engine (thread per connection)"
        )));
    }
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < WORKERS {
        return Err(Skip(format!(
            "worker pinning needs {WORKERS} CPUs, this machine has {cpus}"
        )));
    }
    let echo = echo_backend();
    let proxy = Proxy::start(ctx, &Launch::new(&[echo.local_addr()]))?;
    let prefix = format!("ringlb-{engine}-");
    let mut pinned = Vec::new();
    let tasks = format!("/proc/{}/task", proxy.pid());
    for task in std::fs::read_dir(&tasks)
        .expect("read /proc/<pid>/task")
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !comm.starts_with(&prefix) {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).expect("task status");
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list in status");
        pinned.push((comm.to_owned(), parse_cpu_list(list)));
    }
    pinned.sort();
    eprintln!("workers: {pinned:?}");
    assert_eq!(
        pinned.len(),
        WORKERS,
        "worker threads named {prefix}N: {pinned:?}"
    );
    for (name, set) in &pinned {
        assert_eq!(set.len(), 1, "{name} is allowed on CPUs {set:?}, not one");
    }
    let distinct: BTreeSet<_> = pinned.iter().flat_map(|(_, s)| s.iter()).collect();
    assert_eq!(distinct.len(), WORKERS, "workers share a CPU: {pinned:?}");
    proxy.finish();
    Ok(())
}
