//! What operators see of a running ringlb: the access log (one line per finished connection,
//! rotated with SIGUSR1).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::harness::{Ctx, Launch, Outcome, Proxy, connect, echo_backend, payload, signal};

/// Connections before the rotation, and after it.
const BEFORE: usize = 6;
const AFTER: usize = 4;

/// One echo exchange of `len` bytes; returns the client's own address, which the line names.
fn exchange(proxy: SocketAddr, len: usize, seed: u64) -> SocketAddr {
    let mut s = connect(proxy);
    let data = payload(len, seed);
    s.write_all(&data).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut echoed = Vec::new();
    s.read_to_end(&mut echoed).expect("read the echo");
    assert!(echoed == data, "echo of {len} bytes");
    s.local_addr().expect("local address")
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits (up to 3 s) until `path` holds `n` lines.
fn wait_lines(proxy: &Proxy, path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let found = lines(path);
        if found.len() >= n || Instant::now() > deadline {
            assert_eq!(
                found.len(),
                n,
                "lines in {}; log:\n{}",
                path.display(),
                proxy.log_tail()
            );
            return found;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Each of `clients` (address → bytes sent) has exactly one line, with its byte counts both
/// ways, the quick form's listener and pool, the backend, and a normal end.
fn check(lines: &[serde_json::Value], clients: &BTreeMap<String, u64>, backend: &str) {
    let mut seen = BTreeMap::new();
    for line in lines {
        let client = line["client"].as_str().expect("client").to_owned();
        let Some(&len) = clients.get(&client) else {
            panic!("a line for a client that never connected: {line}");
        };
        assert_eq!(line["bytes_in"], len, "{line}");
        assert_eq!(line["bytes_out"], len, "{line}");
        assert_eq!(line["listener"], "listen", "{line}");
        assert_eq!(line["pool"], "backends", "{line}");
        assert_eq!(line["backend"], backend, "{line}");
        assert_eq!(line["termination"], "--", "{line}");
        assert_eq!(line["reason"], "done", "{line}");
        assert!(line["connect_ms"].as_u64().is_some(), "connected: {line}");
        *seen.entry(client).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), clients.len(), "one line per client");
    assert!(seen.values().all(|&n| n == 1), "no client twice: {seen:?}");
}

/// JSON access log: one line per connection with its exact byte counts; after logrotate's
/// rename and SIGUSR1 the next lines go to a new file at the old path, none is lost or
/// written twice.
pub fn access_log_lines_and_rotation(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("access-logs")
        .join(format!("{}-{}", ctx.config, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log directory");
    let path = dir.join("access.log");
    let launch = Launch::new(&[echo.local_addr()])
        .arg("--access-log")
        .arg(path.to_str().expect("UTF-8 path"))
        .arg("--access-log-format")
        .arg("json");
    let proxy = Proxy::start(ctx, &launch)?;
    let backend = echo.local_addr().to_string();

    let mut first = BTreeMap::new();
    for i in 0..BEFORE {
        let len = 1000 * (i + 1) + i;
        first.insert(exchange(proxy.addr, len, i as u64).to_string(), len as u64);
    }
    check(&wait_lines(&proxy, &path, BEFORE), &first, &backend);

    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).expect("rotate");
    signal(proxy.pid(), Signal::USR1);
    // The reopen is asked for by the signal watcher; wait for its word before going on.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !proxy.log_text().contains("reopening the access log") {
        assert!(
            Instant::now() < deadline,
            "no reopen; log:\n{}",
            proxy.log_tail()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let mut second = BTreeMap::new();
    for i in 0..AFTER {
        let len = 777 * (i + 1);
        second.insert(
            exchange(proxy.addr, len, 100 + i as u64).to_string(),
            len as u64,
        );
    }
    check(&wait_lines(&proxy, &path, AFTER), &second, &backend);
    proxy.finish();
    check(&lines(&rotated), &first, &backend);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
