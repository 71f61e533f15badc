//! wrk, an HTTP load generator nobody here wrote (`wrk-keepalive`, `wrk-close`), against an
//! nginx HTTP backend the harness starts itself: wrk's arguments, its text report read into
//! the figures loadgen would give, and the backend's configuration.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use super::measure::{Latency, LoadReport};

/// Connections wrk keeps open (`-c`), as many as rr-64's.
pub const CONNECTIONS: u32 = 64;
/// The body nginx answers every request with (`return 200`): small, so that requests, not
/// bytes, are what is measured.
pub const BODY: &str = "ringlb e2e\n";
/// Requests one keep-alive connection may carry (`keepalive_requests`): more than a run
/// sends, so that nginx never closes one mid-run.
const KEEPALIVE_REQUESTS: u32 = 10_000_000;

/// wrk's arguments: `threads` threads, [`CONNECTIONS`] connections for `secs` whole seconds
/// (`-d` takes no fraction) with a latency distribution; `close` adds `Connection: close`, so
/// that every request opens a new connection.
pub fn args(target: SocketAddr, secs: u64, threads: usize, close: bool) -> Vec<String> {
    let mut a: Vec<String> = vec![
        format!("-t{}", threads.max(1)),
        format!("-c{CONNECTIONS}"),
        format!("-d{secs}s"),
        "--latency".into(),
    ];
    if close {
        a.extend(["-H".into(), "Connection: close".into()]);
    }
    a.push(format!("http://{target}/"));
    a
}

/// A value with a unit as wrk prints it (`501.23us`, `1.20ms`, `6.16MB`, `40.86k`) in the
/// base unit (µs for times, bytes for sizes, ones for counts).
fn scaled(token: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 11] = [
        ("us", 1.0),
        ("ms", 1e3),
        ("m", 60e6),
        ("s", 1e6),
        ("KB", 1024.0),
        ("MB", 1024.0 * 1024.0),
        ("GB", 1024.0 * 1024.0 * 1024.0),
        ("B", 1.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    let token = token.trim();
    for (unit, factor) in UNITS {
        if let Some(n) = token.strip_suffix(unit) {
            if let Ok(v) = n.parse::<f64>() {
                return Some(v * factor);
            }
        }
    }
    token.parse().ok()
}

/// The number after `key` in `line` (such as `connect 3,` for `connect`).
fn count_after(line: &str, key: &str) -> u64 {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            let n = words.next().unwrap_or("").trim_end_matches(',');
            return n.parse().unwrap_or(0);
        }
    }
    0
}

/// wrk's report as loadgen's: requests, their rate and elapsed time (`N requests in Xs, Y
/// read`), bytes read, latency percentiles (`--latency`); socket errors (connect as connect
/// errors; read, write and timeout as I/O errors) and non-2xx/3xx answers (as verify errors).
pub fn parse(text: &str) -> Result<LoadReport, String> {
    let mut r = LoadReport::default();
    let mut seen = (false, false);
    let mut latency = Latency::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", secs, read, "read"] => {
                r.requests = n
                    .parse()
                    .map_err(|e| format!("bad request count {n:?}: {e}"))?;
                r.elapsed_secs = scaled(secs.trim_end_matches(',')).unwrap_or(0.0) / 1e6;
                r.bytes_received = scaled(read).unwrap_or(0.0) as u64;
                seen.0 = true;
            }
            ["Requests/sec:", v] => {
                r.requests_per_sec = v.parse().map_err(|e| format!("bad req/s {v:?}: {e}"))?;
                seen.1 = true;
            }
            ["50%", v] => latency.p50_us = scaled(v).unwrap_or(0.0),
            ["99%", v] => latency.p99_us = scaled(v).unwrap_or(0.0),
            ["Socket", "errors:", ..] => {
                r.connect_errors = count_after(line, "connect");
                r.io_errors = ["read", "write", "timeout"]
                    .iter()
                    .map(|k| count_after(line, k))
                    .sum();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.verify_errors = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    if !(seen.0 && seen.1) {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("not a wrk report: {first:?}"));
    }
    r.gbit_per_sec = r.bytes_received as f64 * 8.0 / r.elapsed_secs.max(1e-9) / 1e9;
    r.latency_us = (latency.p99_us > 0.0).then_some(latency);
    Ok(r)
}

/// The nginx HTTP backend's configuration: one worker (the load side has one CPU), no
/// access log, keep-alive for as many requests as a run sends, [`BODY`] for every request on
/// `listen`; pid file, error log and temporary files under `dir`.
pub fn nginx_http_config(dir: &Path, listen: SocketAddr, fd_limit: u64) -> String {
    let d = dir.display();
    let conns = fd_limit.saturating_sub(100).clamp(1024, 65_536);
    let mut c = String::new();
    let _ = writeln!(c, "daemon off;\nmaster_process on;\nworker_processes 1;");
    let _ = writeln!(c, "worker_rlimit_nofile {fd_limit};");
    let _ = writeln!(c, "pid {d}/nginx.pid;\nerror_log {d}/error.log warn;");
    let _ = writeln!(c, "events {{ worker_connections {conns}; }}");
    let _ = writeln!(c, "http {{");
    let _ = writeln!(c, "    access_log off;");
    let _ = writeln!(c, "    client_body_temp_path {d}/body;");
    let _ = writeln!(c, "    proxy_temp_path {d}/proxy;");
    let _ = writeln!(c, "    keepalive_requests {KEEPALIVE_REQUESTS};");
    let _ = writeln!(c, "    keepalive_timeout 5m;");
    let _ = writeln!(c, "    server {{");
    let _ = writeln!(c, "        listen {listen} backlog=4096;");
    let _ = writeln!(c, "        location / {{ return 200 {BODY:?}; }}");
    let _ = writeln!(c, "    }}\n}}");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of `wrk -t1 -c64 -d2s --latency` against the nginx backend (wrk 4.1.0).
    const KEEPALIVE: &str = "Running 2s test @ http://127.0.0.1:18080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.49ms    1.46ms   8.98ms   82.99%
    Req/Sec    40.86k     7.01k   51.25k    70.00%
  Latency Distribution
     50%  706.00us
     75%    2.14ms
     90%    3.89ms
     99%    6.06ms
  82143 requests in 2.02s, 12.46MB read
Requests/sec:  40633.69
Transfer/sec:      6.16MB
";

    /// Real output with every answer a 404 (wrk 4.1.0), plus the socket error line wrk
    /// prints when there are any (its format, `Socket errors: connect %d, read %d, ...`).
    const ERRORS: &str = "Running 1s test @ http://127.0.0.1:18080/x
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.98ms    1.99ms  13.67ms   87.83%
    Req/Sec    40.69k     5.26k   45.13k    90.00%
  Latency Distribution
     50%   94.00us
     75%  816.00us
     90%    3.45ms
     99%    9.56ms
  40692 requests in 1.01s, 11.95MB read
  Socket errors: connect 2, read 3, write 0, timeout 4
  Non-2xx or 3xx responses: 40692
Requests/sec:  40479.32
Transfer/sec:     11.89MB
";

    #[test]
    fn reads_a_report() {
        let r = parse(KEEPALIVE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.requests, 82_143);
        assert!((r.elapsed_secs - 2.02).abs() < 1e-9);
        assert!((r.requests_per_sec - 40_633.69).abs() < 1e-9);
        assert_eq!(r.bytes_received, (12.46 * 1024.0 * 1024.0) as u64);
        let l = r.latency_us.unwrap_or_default();
        assert!((l.p50_us - 706.0).abs() < 1e-9 && (l.p99_us - 6_060.0).abs() < 1e-6);
        assert_eq!(r.verify_errors + r.connect_errors + r.io_errors, 0);
    }

    #[test]
    fn reads_errors() {
        let r = parse(ERRORS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (r.connect_errors, r.io_errors, r.verify_errors),
            (2, 7, 40_692)
        );
        assert!(r.latency_us.is_some_and(|l| (l.p50_us - 94.0).abs() < 1e-9));
        let refused = "unable to connect to 127.0.0.1:18081 Connection refused\n";
        assert!(parse(refused).unwrap_err().contains("Connection refused"));
        assert!(parse("").is_err());
    }

    #[test]
    fn units() {
        assert_eq!(scaled("1.5ms"), Some(1_500.0));
        assert_eq!(scaled("2.00s"), Some(2e6));
        assert_eq!(scaled("1.00m"), Some(60e6));
        assert_eq!(scaled("2KB"), Some(2_048.0));
        assert_eq!(scaled("40.86k"), Some(40_860.0));
        assert_eq!(scaled("17"), Some(17.0));
    }

    #[test]
    fn arguments_and_config() {
        let t: SocketAddr = "127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            args(t, 3, 1, false).join(" "),
            "-t1 -c64 -d3s --latency http://127.0.0.1:8080/"
        );
        let close = args(t, 1, 0, true);
        assert_eq!(close[4..6], ["-H", "Connection: close"]);
        assert_eq!(close[0], "-t1");
        let c = nginx_http_config(Path::new("/tmp/n"), t, 20_000);
        assert!(c.contains("listen 127.0.0.1:8080 backlog=4096;"));
        assert!(c.contains("worker_processes 1;") && c.contains("access_log off;"));
        assert!(c.contains("return 200 \"ringlb e2e\\n\";"));
        assert!(c.contains("pid /tmp/n/nginx.pid;") && c.contains("keepalive_requests"));
    }
}
