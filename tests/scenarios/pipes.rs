//! Splice with few pipes: a worker's pipes are bounded (`--max-pipes`), and a direction that
//! finds none forwards by copy instead of being reset.

use std::thread;

use crate::harness::{Ctx, Launch, Outcome, Proxy, echo_backend, echo_exchange, join, payload};

/// Bulk echo streams at once.
const STREAMS: usize = 20;
/// Bytes each stream sends (and gets back).
const SIZE: usize = 2 << 20;

/// `--max-pipes 2` and 20 concurrent 2 MiB echo streams: every byte comes back exactly, no
/// connection is reset, and where the mode splices the workers refused pipes (the directions
/// beyond the limit copied). Before the bound, each splicing direction took a pipe of its own;
/// a refused pipe reset the connection. Copy-only configurations pass trivially.
pub fn pipes_bounded_directions_copy(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let proxy = Proxy::start(
        ctx,
        &Launch::new(&[echo.local_addr()])
            .arg("--max-pipes")
            .arg("2"),
    )?;
    let addr = proxy.addr;
    let clients: Vec<_> = (0..STREAMS)
        .map(|i| {
            thread::spawn(move || {
                let data = payload(SIZE, 100 + i as u64);
                let got = echo_exchange(addr, data.clone());
                assert_eq!(got.len(), SIZE, "stream {i}: echoed length");
                assert!(got == data, "stream {i}: echoed bytes differ");
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        join(c, &format!("stream {i}"));
    }
    let stats = echo.stats();
    let total = (STREAMS * SIZE) as u64;
    assert_eq!(stats.bytes_in, total, "bytes the backend received");
    assert_eq!(stats.bytes_out, total, "bytes the backend sent");
    let log = proxy.finish();
    let resets: u64 = ["local", "client_reset", "client_error", "backend_reset"]
        .iter()
        .map(|cause| counts(&log, cause))
        .sum();
    assert_eq!(resets, 0, "connections reset:\n{log}");
    let refused = counts(&log, "refused_limit");
    if ctx.setup.mode == "copy" {
        assert_eq!(refused, 0, "copy mode asked for pipes:\n{log}");
    } else {
        assert!(refused > 0, "no pipe was refused at --max-pipes 2:\n{log}");
        let fallbacks = counts(&log, "copy_fallbacks");
        assert!(fallbacks > 0, "no direction copied:\n{log}");
        assert!(
            log.contains("no pipe for splicing; the direction copies instead"),
            "no warning:\n{log}"
        );
    }
    Ok(())
}

/// The sum of the numbers after every `name: ` or `name=` in `log` (the counters each worker
/// logs as it stops, in a `Debug` struct or as a field of their own).
fn counts(log: &str, name: &str) -> u64 {
    [": ", "="]
        .iter()
        .flat_map(|sep| {
            let key = format!("{name}{sep}");
            log.match_indices(&key)
                .filter_map(|(at, _)| {
                    let rest = &log[at + key.len()..];
                    let end = rest
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(rest.len());
                    rest[..end].parse::<u64>().ok()
                })
                .collect::<Vec<_>>()
        })
        .sum()
}
