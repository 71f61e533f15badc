//! TCP keepalive: ringlb's sockets on both sides carry it, with the configured timings.

use std::io::{Read, Write};
use std::process::Command;

use crate::harness::{Ctx, Launch, Outcome, Proxy, connect, echo_backend};

/// `--keepalive-idle` for the scenario: far below the kernel's 2 h, so that seeing at most
/// this much left on a socket's keepalive timer shows the setting was applied.
const KEEPALIVE_IDLE_SECS: f64 = 25.0;

/// The keepalive timers `ss` shows on established TCP sockets matching `filter`, in seconds
/// left (`None` for a socket without one, or a value not in seconds).
fn keepalive_timers(filter: &str) -> Vec<Option<f64>> {
    let out = Command::new("ss")
        .args(["-tno", "state", "established", filter])
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss {filter}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (_, rest) = line.split_once("timer:(keepalive,")?;
            let left = rest.split(',').next()?;
            match left.strip_suffix("ms") {
                Some(ms) => ms.parse::<f64>().ok().map(|v| v / 1000.0),
                None => left.strip_suffix("sec")?.parse().ok(),
            }
        })
        .collect()
}

/// After a round trip through ringlb, its client-side socket (local port: the listener's) and
/// its backend-side socket (peer port: the backend's) both run a keepalive timer of at most
/// `--keepalive-idle`.
pub fn keepalive_on_both_sides(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let launch = Launch::new(&[echo.local_addr()])
        .arg("--keepalive-idle")
        .arg(&format!("{KEEPALIVE_IDLE_SECS}s"));
    let proxy = Proxy::start(ctx, &launch)?;
    let mut stream = connect(proxy.addr);
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").expect("write");
    stream.read_exact(&mut buf).expect("echo");
    for (side, filter) in [
        ("client", format!("( sport = :{} )", proxy.addr.port())),
        (
            "backend",
            format!("( dport = :{} )", echo.local_addr().port()),
        ),
    ] {
        let timers = keepalive_timers(&filter);
        assert_eq!(
            timers.len(),
            1,
            "{side} side: one socket expected: {timers:?}"
        );
        assert!(
            timers[0].is_some_and(|left| left <= KEEPALIVE_IDLE_SECS),
            "{side} side: no keepalive timer of at most {KEEPALIVE_IDLE_SECS}s: {timers:?}"
        );
    }
    drop(stream);
    proxy.finish();
    Ok(())
}
