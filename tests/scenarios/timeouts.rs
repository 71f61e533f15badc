//! The idle timeout: a silent connection is closed after `--idle-timeout`, an active one is not.

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    Closed, Ctx, IDLE_TIMEOUT, Launch, Outcome, Proxy, connect, echo_backend, join, wait_closed,
};

/// A connection that sends nothing is closed after about 2 s: not before 1.9 s, and before
/// 4 s. Meanwhile a connection that exchanges a message every 400 ms outlives it.
pub fn idle_timeout(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let proxy = Proxy::start(ctx, &Launch::new(&[echo.local_addr()]))?;
    let addr = proxy.addr;
    let active = thread::spawn(move || {
        let mut s = connect(addr);
        let started = Instant::now();
        let mut rounds = 0;
        while started.elapsed() < IDLE_TIMEOUT + Duration::from_millis(800) {
            let mut buf = [0u8; 4];
            if let Err(e) = s.write_all(b"tick").and_then(|()| s.read_exact(&mut buf)) {
                panic!(
                    "active connection failed after {:?}, {rounds} round trips done: {e}",
                    started.elapsed()
                );
            }
            assert_eq!(&buf, b"tick");
            rounds += 1;
            thread::sleep(Duration::from_millis(400));
        }
        rounds
    });
    let idle = connect(addr);
    let started = Instant::now();
    let (how, at) = wait_closed(&idle, Duration::from_secs(6));
    let took = at.duration_since(started);
    eprintln!("idle connection closed by {how:?} after {took:?}");
    assert!(
        took >= IDLE_TIMEOUT - Duration::from_millis(100),
        "idle connection closed after {took:?}, before the idle timeout"
    );
    assert!(
        took < Duration::from_secs(4),
        "idle connection closed only after {took:?}"
    );
    assert_eq!(how, Closed::Eof, "an idle close is a clean close (FIN)");
    let rounds = join(active, "active connection");
    assert!(rounds >= 6, "active connection made only {rounds} rounds");
    proxy.finish();
    Ok(())
}

/// The proxy is frozen (SIGSTOP) for longer than the idle timeout while the client keeps
/// sending. When it resumes, the bytes that arrived during the freeze count as activity: the
/// connection must be forwarded, not closed as idle. (A loaded machine can deschedule a worker
/// for that long; an engine that checks its idle timers before looking at what arrived would
/// close busy connections; the bytes may even reach the socket only after the resume, which
/// is why the core holds its timers briefly after a stall.)
pub fn stalled_proxy_keeps_busy_connections(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let proxy = Proxy::start(ctx, &Launch::new(&[echo.local_addr()]))?;
    let mut s = connect(proxy.addr);
    let mut buf = [0u8; 4];
    s.write_all(b"warm").expect("write before the freeze");
    s.read_exact(&mut buf).expect("echo before the freeze");
    let pid = rustix::process::Pid::from_raw(proxy.pid() as i32).expect("a live pid");
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).expect("SIGSTOP");
    // Keep sending while the proxy is frozen; the kernel queues the bytes on its socket.
    let frozen = Instant::now();
    let mut sent = 0;
    while frozen.elapsed() < IDLE_TIMEOUT + Duration::from_millis(600) {
        s.write_all(b"tick")
            .expect("write while the proxy is frozen");
        sent += 1;
        thread::sleep(Duration::from_millis(300));
    }
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).expect("SIGCONT");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("read timeout");
    let mut echoed = vec![0u8; 4 * sent];
    s.read_exact(&mut echoed).expect(
        "the bytes sent during the freeze are echoed after it, not dropped by an idle close",
    );
    assert!(echoed.chunks(4).all(|c| c == b"tick"), "echo differs");
    s.write_all(b"more").expect("write after the freeze");
    s.read_exact(&mut buf).expect("echo after the freeze");
    proxy.finish();
    Ok(())
}
