//! Copy mode on the io_uring engine sends with send bundles where the kernel has them (6.10),
//! `--no-send-bundle` switches them off, and a pool of send rings too small for the directions
//! sending at once makes the others fall back to `sendmsg` without harm: checked through the
//! counters each worker logs as it stops, around streams whose bytes are checked exactly.
//! Whether the kernel has bundles is read from `ringlb doctor`, so on an older kernel the tests
//! check that none were used.

#[allow(dead_code)]
#[path = "scenarios/harness.rs"]
mod harness;

use std::process::Command;
use std::thread;

use harness::{Ctx, Launch, Outcome, Proxy, Setup};

/// Streams per run (twice as many with a pool of one ring), each this many bytes echoed back.
const STREAMS: usize = 4;
const STREAM_BYTES: usize = 2 * 1024 * 1024;

/// Whether `ringlb doctor` says the kernel has send bundles and ringlb uses them.
fn bundles_offered() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .arg("doctor")
        .output()
        .expect("run ringlb doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("send bundles"))
        .unwrap_or_else(|| panic!("doctor has no send bundles row:\n{text}"));
    // Columns: feature (two words and the kernel version), kernel, ringlb, fallback.
    let columns: Vec<&str> = row.split_whitespace().collect();
    columns.get(3) == Some(&"yes") && columns.get(4) == Some(&"yes")
}

/// The sum of counter `name` over every worker's "worker stopped" line (a log field
/// `name=N`, or `name: N` inside the counters).
fn counter(log: &str, name: &str) -> u64 {
    let keys = [format!(" {name}="), format!(" {name}: ")];
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("worker stopped"))
        .collect();
    assert!(!lines.is_empty(), "no worker reported stopping:\n{log}");
    lines
        .iter()
        .map(|line| {
            let (at, key) = keys
                .iter()
                .find_map(|key| line.find(key.as_str()).map(|at| (at, key)))
                .unwrap_or_else(|| panic!("no {name} counter in: {line}"));
            line[at + key.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("unreadable {name} counter in: {line}"))
        })
        .sum()
}

/// Echo `STREAMS` concurrent streams through the proxy, check every byte, stop it, and return
/// its log.
fn stream_through(ctx: &Ctx, streams: usize) -> Result<String, harness::Skip> {
    let backend = harness::echo_backend();
    let proxy = Proxy::start(ctx, &Launch::new(&[backend.local_addr()]))?;
    let addr = proxy.addr;
    let clients: Vec<_> = (0..streams)
        .map(|i| {
            thread::spawn(move || {
                let data = harness::payload(STREAM_BYTES, 0xb0b + i as u64);
                let got = harness::echo_exchange(addr, data.clone());
                assert!(
                    got == data,
                    "stream {i}: echo differs ({} bytes back)",
                    got.len()
                );
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    Ok(proxy.finish())
}

fn bundles_used_when_offered(ctx: &Ctx) -> Outcome {
    let offered = bundles_offered();
    let log = stream_through(ctx, STREAMS)?;
    let bundles = counter(&log, "bundle_sends");
    if offered {
        assert!(
            bundles > 0,
            "the kernel has send bundles, yet none were sent:\n{log}"
        );
        assert_eq!(
            counter(&log, "send_rings_leased"),
            0,
            "every send ring is back in its pool after the streams ended"
        );
    } else {
        assert_eq!(bundles, 0, "bundles sent on a kernel without them");
    }
    Ok(())
}

fn no_send_bundle_switch_uses_sendmsg(ctx: &Ctx) -> Outcome {
    let log = stream_through(ctx, STREAMS)?;
    assert_eq!(
        counter(&log, "bundle_sends"),
        0,
        "--no-send-bundle still sent bundles"
    );
    Ok(())
}

/// One send ring per worker for 16 directions streaming at once: whoever holds it sends
/// bundles, the others `sendmsg`, and every byte arrives in order either way.
fn a_small_ring_pool_mixes_bundles_and_sendmsg(ctx: &Ctx) -> Outcome {
    let offered = bundles_offered();
    let log = stream_through(ctx, 2 * STREAMS)?;
    assert_eq!(counter(&log, "bundle_out_of_step"), 0);
    assert_eq!(
        counter(&log, "send_rings_leased"),
        0,
        "every ring came back"
    );
    if offered {
        assert!(
            counter(&log, "bundle_sends") > 0,
            "the one ring was never used:\n{log}"
        );
    }
    Ok(())
}

/// No send rings at all: every multi-buffer send is a `sendmsg`, each after a refused lease.
fn no_send_rings_means_sendmsg(ctx: &Ctx) -> Outcome {
    let offered = bundles_offered();
    let log = stream_through(ctx, STREAMS)?;
    assert_eq!(counter(&log, "bundle_sends"), 0);
    assert_eq!(counter(&log, "send_rings"), 0);
    if offered {
        assert_eq!(
            counter(&log, "send_rings_exhausted"),
            counter(&log, "sendmsg_sends"),
            "each sendmsg follows a refused lease"
        );
    }
    Ok(())
}

#[test]
fn copy_mode_uses_send_bundles_when_the_kernel_has_them() {
    harness::run(
        &Setup::new("uring", "copy"),
        "uring_bundles",
        "default",
        bundles_used_when_offered,
    );
}

#[test]
fn no_send_bundle_switch_turns_them_off() {
    harness::run(
        &Setup::new("uring", "copy").flags(&["--no-send-bundle"]),
        "uring_bundles",
        "switched_off",
        no_send_bundle_switch_uses_sendmsg,
    );
}

#[test]
fn a_pool_of_one_send_ring_mixes_bundles_and_sendmsg() {
    harness::run(
        &Setup::new("uring", "copy").flags(&["--send-rings", "1"]),
        "uring_bundles",
        "one_ring",
        a_small_ring_pool_mixes_bundles_and_sendmsg,
    );
}

#[test]
fn zero_send_rings_send_with_sendmsg() {
    harness::run(
        &Setup::new("uring", "copy").flags(&["--send-rings", "0"]),
        "uring_bundles",
        "no_rings",
        no_send_rings_means_sendmsg,
    );
}
