//! Command-line options of the `e2e` binary and the timing plan derived from them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// End-to-end benchmark of ringlb against direct connections, HAProxy and nginx.
///
/// Runs every row (a proxy configuration) through the same workloads on loopback, with the load
/// side (loadgen + backend) and the proxy pinned to separate CPUs, and writes a markdown table,
/// SVG charts and the raw JSON into `results/<timestamp>/`.
#[derive(Debug, Clone, Parser)]
#[command(name = "e2e", version)]
pub struct Options {
    /// Fewer and shorter runs (one run per measurement); finishes in about three minutes.
    #[arg(long)]
    pub quick: bool,
    /// Install the peers and clients first: apt-get install haproxy nginx libnginx-mod-stream
    /// linux-perf iperf3 wrk.
    #[arg(long)]
    pub install_peers: bool,
    /// Output directory (default: `results/<UTC timestamp>` in the workspace).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Only these rows, comma-separated (such as uring-copy,direct); see --list-rows.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub rows: Option<Vec<String>>,
    /// Print the row names and exit.
    #[arg(long)]
    pub list_rows: bool,
    /// Only these workloads, comma-separated (stream-1, stream-4, stream-8, rr-64, rr-64-paced,
    /// rr-1024, connect, idle; and, only when named, udp-rr-64, udp-rr-1024, udp-stream,
    /// iperf3-udp, or udp for all four; iperf3-1, iperf3-4, iperf3-1-paced, wrk-keepalive,
    /// wrk-close, or clients for all five).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub workloads: Option<Vec<String>>,
    /// CPUs for the proxy; the worker count of every row is the number of CPUs listed.
    #[arg(long, value_name = "LIST", default_value = "1", value_parser = parse_cpus)]
    pub proxy_cpus: CpuList,
    /// CPUs for the load side (loadgen and backends, one thread per CPU).
    #[arg(long, value_name = "LIST", default_value = "0", value_parser = parse_cpus)]
    pub load_cpus: CpuList,
    /// Runs per measurement (the median is reported) [default: 3, quick: 1].
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// Seconds per timed run [default: 3, quick: 0.6].
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,
    /// Connections of the idle workload [default: 10000, quick: 5000].
    #[arg(long, value_name = "N")]
    pub idle_connections: Option<u32>,
    /// Streaming connections of the io-wq bound check (uring splice); 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub iowq_connections: u32,
    /// Directory holding the ringlb, loadgen and backend binaries [default: next to e2e].
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Take the rows in turns: for each workload every row's proxy starts, and each round
    /// runs every row once, so that the targets can be judged round by round (paired
    /// ratios) on a machine whose load drifts.
    #[arg(long)]
    pub interleave: bool,
    /// Do not run `cargo build` for ringlb, loadgen and backend first.
    #[arg(long)]
    pub no_build: bool,
}

/// A list of CPU numbers such as `0`, `0,2` or `0-3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl CpuList {
    /// The list as ringlb and taskset write it: `0,1,2`.
    pub fn joined(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        parts.join(",")
    }
}

/// Parses `0`, `0,2`, `0-3` or a mix (`0-1,4`).
pub fn parse_cpus(s: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|e| format!("bad CPU number {t:?}: {e}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 1024 {
                    return Err(format!("bad CPU range {part:?}"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    if cpus.is_empty() {
        return Err("empty CPU list".into());
    }
    if cpus.iter().any(|&c| c >= 1024) {
        return Err("CPU numbers must be below 1024".into());
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(CpuList(cpus))
}

/// How long and how often each workload runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// Runs per measurement.
    pub runs: usize,
    /// Length of one timed run.
    pub run: Duration,
    /// Idle workload: connections to open.
    pub idle_connections: u32,
    /// Idle workload: limit of the opening phase.
    pub idle_open_limit: Duration,
    /// Idle workload: how long the connections stay open once opened.
    pub idle_hold: Duration,
    /// Streaming connections of the io-wq bound check (0: skipped).
    pub iowq_connections: u32,
    /// The open-files limit every child gets (set once the harness raised it).
    pub fd_limit: u64,
}

impl Plan {
    /// The plan for these options.
    pub fn from_options(o: &Options) -> Result<Plan, String> {
        let runs = o.runs.unwrap_or(if o.quick { 1 } else { 3 });
        if runs == 0 || runs > 50 {
            return Err(format!("--runs must be 1..=50, not {runs}"));
        }
        let secs = o.seconds.unwrap_or(if o.quick { 0.6 } else { 3.0 });
        let run = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| *d >= Duration::from_millis(200) && *d <= Duration::from_secs(120))
            .ok_or_else(|| format!("--seconds must be 0.2..=120, not {secs}"))?;
        let idle_connections = o
            .idle_connections
            .unwrap_or(if o.quick { 5_000 } else { 10_000 });
        if idle_connections == 0 || idle_connections > 60_000 {
            return Err("--idle-connections must be 1..=60000".into());
        }
        if o.iowq_connections > 20_000 {
            return Err("--iowq-connections must be at most 20000".into());
        }
        Ok(Plan {
            runs,
            run,
            idle_connections,
            idle_open_limit: Duration::from_secs(if o.quick { 4 } else { 10 }),
            idle_hold: Duration::from_millis(if o.quick { 500 } else { 1000 }),
            iowq_connections: o.iowq_connections,
            fd_limit: 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("1"), Ok(CpuList(vec![1])));
        assert_eq!(parse_cpus("2,0-1"), Ok(CpuList(vec![0, 1, 2])));
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
        assert_eq!(CpuList(vec![0, 3]).joined(), "0,3");
    }
}
