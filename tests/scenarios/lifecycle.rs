//! Process life: the signal table (graceful stop on TERM, INT and QUIT, a second one stops at
//! once, HUP and USR1/USR2 never stop), and worker threads pinned to CPUs.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::harness::{
    Closed, Ctx, Launch, Outcome, Proxy, SHUTDOWN_GRACE, Skip, WORKERS, connect, echo_backend,
    echo_exchange, join, payload, signal, wait_closed,
};

fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).expect("read the echo");
    assert_eq!(buf, msg, "echo");
}

/// Connects until the proxy refuses (its listeners are closed), for at most 1 s after
/// `signalled`; returns when that happened.
fn refused_after(proxy: &Proxy, signalled: Instant, what: &str) -> Duration {
    while signalled.elapsed() < Duration::from_secs(1) {
        match TcpStream::connect_timeout(&proxy.addr, Duration::from_millis(200)) {
            Err(_) => return signalled.elapsed(),
            Ok(s) => drop(s),
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "new connections still accepted 1 s after {what}; log:\n{}",
        proxy.log_tail()
    )
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
    let refused_after = refused_after(&proxy, signalled, "SIGTERM");
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

/// SIGHUP, SIGUSR1 and SIGUSR2 while a transfer is half done: the process stays up, the
/// transfer completes byte for byte, a new connection is served. The quick form has no file
/// to reload: the log says the reload was asked for and refused, once (one SIGHUP), and names
/// both other signals.
pub fn sighup_and_usr_signals_do_not_stop(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let mut proxy = Proxy::start(ctx, &Launch::new(&[echo.local_addr()]))?;
    let data = payload(128 * 1024, 10);
    let mut existing = connect(proxy.addr);
    // Half the payload goes out; its echo waits in the client's receive buffer meanwhile.
    existing.write_all(&data[..data.len() / 2]).expect("write");
    for sig in [Signal::HUP, Signal::USR1, Signal::USR2] {
        signal(proxy.pid(), sig);
        thread::sleep(Duration::from_millis(50));
        proxy.assert_alive();
    }
    existing.write_all(&data[data.len() / 2..]).expect("write");
    let mut echoed = vec![0u8; data.len()];
    existing.read_exact(&mut echoed).expect("read the echo");
    assert!(
        echoed == data,
        "the transfer across the signals changed bytes"
    );
    round_trip(&mut existing, b"after the signals");
    let fresh = payload(64 * 1024, 11);
    assert!(
        echo_exchange(proxy.addr, fresh.clone()) == fresh,
        "a new connection after the signals"
    );
    proxy.assert_alive();
    // The log lines are written by another thread than the one that took the signal.
    let deadline = Instant::now() + Duration::from_secs(1);
    let log = loop {
        let log = proxy.log_text();
        if ["reload refused", "SIGUSR1", "SIGUSR2"]
            .iter()
            .all(|line| log.contains(line))
            || Instant::now() > deadline
        {
            break log;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let reloads = log.matches("reloading the configuration").count();
    assert_eq!(reloads, 1, "log lines for one SIGHUP; log:\n{log}");
    let refused = log.matches("ringlb was started without --config").count();
    assert_eq!(refused, 1, "the quick form has no file; log:\n{log}");
    for name in ["SIGUSR1", "SIGUSR2"] {
        assert!(log.contains(name), "no log line about {name}; log:\n{log}");
    }
    drop(existing);
    proxy.finish();
    Ok(())
}

/// SIGQUIT is a graceful stop: new connections are refused within a second, the established
/// one keeps working, and once it finishes (the client half-closes and reads to the end) the
/// process exits with status 0, without waiting out the (3 s) grace period.
pub fn sigquit_drains_gracefully(ctx: &Ctx) -> Outcome {
    let grace = Duration::from_secs(3);
    let echo = echo_backend();
    let launch = Launch::new(&[echo.local_addr()]).grace(grace);
    let mut proxy = Proxy::start(ctx, &launch)?;
    let mut existing = connect(proxy.addr);
    round_trip(&mut existing, b"before SIGQUIT");
    signal(proxy.pid(), Signal::QUIT);
    let signalled = Instant::now();
    thread::sleep(Duration::from_millis(100));
    proxy.assert_alive();
    round_trip(&mut existing, b"just after SIGQUIT");
    let refused_after = refused_after(&proxy, signalled, "SIGQUIT");
    round_trip(&mut existing, b"while draining");
    existing
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let (closed, _) = wait_closed(&existing, Duration::from_secs(1));
    assert_eq!(closed, Closed::Eof, "how the finished connection ended");
    let finished = Instant::now();
    let status = proxy.wait_exit(Duration::from_secs(1));
    let status = status.unwrap_or_else(|| {
        panic!(
            "ringlb still running 1 s after its last connection ended (SIGQUIT); log:\n{}",
            proxy.log_tail()
        )
    });
    eprintln!(
        "refused after {refused_after:?}, exited {:?} after the last connection, {:?} after \
         SIGQUIT, with {status}",
        finished.elapsed(),
        signalled.elapsed()
    );
    assert!(
        signalled.elapsed() < grace,
        "exit waited out the grace period"
    );
    assert!(
        status.success(),
        "exit status after SIGQUIT: {status}; log:\n{}",
        proxy.log_tail()
    );
    proxy.check_log();
    Ok(())
}

/// A second SIGTERM during the drain stops at once. A connection keeps echoing (a round trip
/// every 20 ms) through the first SIGTERM; 300 ms later a second one makes the process exit
/// with status 0 within 1.5 s, far inside its 10 s grace period, and the connection is closed.
pub fn second_term_stops_at_once(ctx: &Ctx) -> Outcome {
    let grace = Duration::from_secs(10);
    let echo = echo_backend();
    let launch = Launch::new(&[echo.local_addr()]).grace(grace);
    let mut proxy = Proxy::start(ctx, &launch)?;
    let mut held = connect(proxy.addr);
    round_trip(&mut held, b"before SIGTERM");
    held.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("read timeout");
    let rounds = Arc::new(AtomicUsize::new(0));
    let (mut pinger, counted) = (held.try_clone().expect("clone"), Arc::clone(&rounds));
    // Round trips until the proxy closes the connection (any error or end of stream).
    let busy = thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let msg = payload(buf.len(), 12);
        while pinger.write_all(&msg).is_ok() && pinger.read_exact(&mut buf).is_ok() {
            assert!(buf[..] == msg[..], "echo");
            counted.fetch_add(1, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(20));
        }
    });
    thread::sleep(Duration::from_millis(100));
    proxy.terminate();
    thread::sleep(Duration::from_millis(300));
    proxy.assert_alive();
    let before = rounds.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(100));
    assert!(
        rounds.load(Ordering::Relaxed) > before,
        "the connection stalled while draining; log:\n{}",
        proxy.log_tail()
    );
    proxy.terminate();
    let second = Instant::now();
    let limit = Duration::from_millis(1500);
    let status = proxy.wait_exit(limit).unwrap_or_else(|| {
        panic!(
            "ringlb still running {limit:?} after a second SIGTERM (grace {grace:?}); log:\n{}",
            proxy.log_tail()
        )
    });
    eprintln!(
        "exited {:?} after the second SIGTERM with {status}",
        second.elapsed()
    );
    assert!(
        status.success(),
        "exit status after two SIGTERMs: {status}; log:\n{}",
        proxy.log_tail()
    );
    proxy.check_log();
    join(busy, "the busy connection");
    wait_closed(&held, Duration::from_secs(1));
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
