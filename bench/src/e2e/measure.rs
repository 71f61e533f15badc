//! One measured run: a backend process, loadgen against a target, and the proxy's costs
//! sampled from `/proc` and `perf stat` while it runs.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use super::backend::iperf3_path;
pub use super::backend::{Backend, BackendStats};
use super::child::{self, Output, Spec, StopFlag};
use super::error::{BenchError, Result};
use super::iperf3;
use super::opts::Plan;
use super::peers;
use super::procfs::{self, MachineCost, MachineCpu, Snapshot};
use super::proxy::{self, Proxy};
use super::workload::{Client, Workload};
use super::wrk;

/// Paths and CPUs every run needs.
#[derive(Debug)]
pub struct Env<'a> {
    /// The loadgen binary.
    pub loadgen: &'a Path,
    /// The backend binary.
    pub backend: &'a Path,
    /// iperf3 (client and server of the iperf3 workloads), when installed.
    pub iperf3: Option<&'a Path>,
    /// wrk (client of the wrk workloads), when installed.
    pub wrk: Option<&'a Path>,
    /// nginx (the wrk workloads' HTTP backend), when installed.
    pub nginx: Option<&'a Path>,
    /// perf, when it can count syscalls.
    pub perf: Option<&'a Path>,
    /// CPUs of the load side.
    pub load_cpus: &'a [usize],
    /// Directory for logs and loadgen output.
    pub logs: &'a Path,
    /// Timing.
    pub plan: &'a Plan,
    /// Interrupt flag.
    pub stop: &'a StopFlag,
}

/// Latency percentiles from loadgen's report.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
pub struct Latency {
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
}

/// The parts of loadgen's JSON report the harness uses.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct LoadReport {
    /// Wall time of the run.
    pub elapsed_secs: f64,
    /// Connections established.
    pub connections_opened: u64,
    /// Failed connection attempts.
    pub connect_errors: u64,
    /// Established connections that failed.
    pub io_errors: u64,
    /// Connections closed while a response was owed.
    pub short_reads: u64,
    /// Responses that differed from the request.
    pub verify_errors: u64,
    /// Completed requests.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Connections per second.
    pub connections_per_sec: f64,
    /// Payload bytes written.
    pub bytes_sent: u64,
    /// Payload bytes read.
    pub bytes_received: u64,
    /// Throughput, both directions, Gbit/s.
    pub gbit_per_sec: f64,
    /// Most connections open at once.
    pub open_peak: u64,
    /// Request latency.
    pub latency_us: Option<Latency>,
    /// UDP: datagrams sent (udp-rr: resends included).
    #[serde(default)]
    pub datagrams_sent: u64,
    /// UDP: datagrams received.
    #[serde(default)]
    pub datagrams_received: u64,
    /// UDP: datagrams sent per second.
    #[serde(default)]
    pub datagrams_per_sec: f64,
    /// udp-rr: requests unanswered within the timeout (resent).
    #[serde(default)]
    pub lost: u64,
    /// udp-rr: answers to requests already counted lost.
    #[serde(default)]
    pub late: u64,
    /// udp-rr: requests unanswered when the run ended.
    #[serde(default)]
    pub abandoned: u64,
    /// iperf3 over TCP: segments the client's sockets retransmitted.
    #[serde(default)]
    pub retransmits: u64,
}

/// What one run cost the proxy.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProxyCost {
    /// Counters before the run.
    pub before: Snapshot,
    /// Counters after the run.
    pub after: Snapshot,
    /// CPU seconds spent during the run.
    pub cpu_secs: f64,
    /// Voluntary context switches during the run (live threads only).
    pub voluntary_cs: u64,
    /// Involuntary context switches during the run (live threads only).
    pub involuntary_cs: u64,
    /// System calls counted by perf during the window, if perf works.
    pub syscalls: Option<u64>,
    /// Length of the perf window.
    pub syscall_window_secs: f64,
    /// Most threads seen at once.
    pub peak_threads: u64,
    /// Most `iou-wrk` threads seen at once.
    pub peak_iowq: u64,
    /// Highest RSS seen, KiB.
    pub peak_rss_kib: u64,
}

/// One run: loadgen's report and the proxy's costs.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// loadgen's report.
    pub load: LoadReport,
    /// The proxy's costs (`None` for `direct`).
    pub proxy: Option<ProxyCost>,
    /// UDP: what the backend counted during this run (from before loadgen started until
    /// datagrams stopped arriving after it ended; iperf3: what the server reported).
    pub backend: Option<BackendStats>,
    /// UDP: datagrams the kernel dropped at the target's socket(s) during the run (the
    /// proxy's listener, or the backend's for `direct`): its receive buffer was full.
    pub listener_drops: Option<u64>,
    /// What the whole machine's CPUs spent over the same window as the proxy's CPU figure
    /// (every row, `direct` too); `None` if `/proc/stat` could not be read.
    pub machine: Option<MachineCost>,
}

/// Peaks found by the sampler.
#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    threads: u64,
    iowq: u64,
    rss_kib: u64,
}

/// Samples the proxy every 50 ms on a thread of its own.
struct Sampler {
    done: Arc<AtomicBool>,
    handle: JoinHandle<Peaks>,
}

impl Sampler {
    fn start(pids: Vec<i32>, iowq: bool) -> Result<Sampler> {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let handle = std::thread::Builder::new()
            .name("e2e-sampler".into())
            .spawn(move || {
                let mut p = Peaks::default();
                loop {
                    let (mut threads, mut wrk, mut rss) = (0, 0, 0);
                    for &pid in &pids {
                        threads += procfs::thread_count(pid);
                        rss += procfs::rss_kib(pid).unwrap_or(0);
                        if iowq {
                            wrk += procfs::iowq_workers(pid);
                        }
                    }
                    p.threads = p.threads.max(threads);
                    p.iowq = p.iowq.max(wrk);
                    p.rss_kib = p.rss_kib.max(rss);
                    if flag.load(Ordering::SeqCst) {
                        return p;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
            .map_err(super::error::io_err("starting the sampler thread"))?;
        Ok(Sampler { done, handle })
    }

    fn finish(self) -> Peaks {
        self.done.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_default()
    }
}

/// Runs `workload` once against `target` (the proxy's listener, or the backend for `direct`).
pub fn run_once(
    env: &Env<'_>,
    workload: Workload,
    (target, backend): (SocketAddr, &Backend),
    proxy: Option<&Proxy>,
    tag: &str,
) -> Result<RunRecord> {
    let plan = env.plan;
    let backend_before = if workload.is_udp() && backend.has_counters() {
        Some(backend.snapshot(env.stop)?)
    } else {
        None
    };
    let drops_before = procfs::udp_drops_on_port(target.port());
    let (client, program) = match workload.client() {
        Client::Loadgen => ("loadgen", env.loadgen),
        Client::Iperf3 => ("iperf3", iperf3_path(env)?),
        Client::Wrk => (
            "wrk",
            env.wrk
                .ok_or_else(|| BenchError::Setup("wrk is not installed".into()))?,
        ),
    };
    let out = env.logs.join(format!("{client}-{tag}.json"));
    let err = env.logs.join(format!("{client}-{tag}.stderr"));
    let pids = proxy.map(|p| p.pids.clone()).unwrap_or_default();
    let before = procfs::snapshot(&pids);
    let machine_before = MachineCpu::now();
    let sampler = Sampler::start(pids.clone(), proxy.is_some_and(|p| p.uring))?;
    let started = Instant::now();
    let mut lg = child::spawn(Spec {
        name: client.into(),
        program,
        args: workload.client_args(target, plan, env.load_cpus.len()),
        cpus: env.load_cpus,
        stdout: Output::File(out.clone()),
        stderr: Output::File(err.clone()),
        env: Vec::new(),
    })?;
    let mut syscalls = None;
    let mut window = 0.0;
    if let (Some(perf), true, false) = (env.perf, workload.counts_syscalls(), pids.is_empty()) {
        let length = workload.run_length(plan);
        let warm = (length / 4).min(Duration::from_millis(500));
        let w = length
            .saturating_sub(warm * 2)
            .max(Duration::from_millis(100));
        env.stop.sleep(warm)?;
        window = w.as_secs_f64();
        syscalls = count_syscalls(env, perf, &pids, w, tag)?;
    }
    let limit = workload.time_limit(plan).saturating_sub(started.elapsed());
    let status = lg.wait_for(limit, env.stop)?;
    let peaks = sampler.finish();
    let after = procfs::snapshot(&pids);
    let machine = MachineCpu::now()
        .zip(machine_before)
        .map(|(a, b)| a.since(&b));
    let Some(status) = status else {
        return Err(BenchError::Setup(format!(
            "{client} did not finish within {:.0} s",
            workload.time_limit(plan).as_secs_f64()
        )));
    };
    let text = fs::read_to_string(&out).unwrap_or_default();
    let (load, backend) = match workload.client() {
        Client::Loadgen => {
            let load: LoadReport = serde_json::from_str(text.trim()).map_err(|e| {
                BenchError::Setup(format!(
                    "loadgen ({status}) printed no report ({e}): {}",
                    proxy::tail(&err, 3)
                ))
            })?;
            let backend = match backend_before {
                Some(b) => Some(backend.settled(env.stop)?.since(&b)),
                None => None,
            };
            (load, backend)
        }
        Client::Iperf3 => {
            let parse = if workload.is_udp() {
                iperf3::parse_report
            } else {
                iperf3::parse_tcp_report
            };
            let (load, received) = parse(&text).map_err(|e| {
                BenchError::Setup(format!("iperf3 ({status}): {e}; {}", proxy::tail(&err, 3)))
            })?;
            (load, Some(received))
        }
        Client::Wrk => {
            let load = wrk::parse(&text).map_err(|e| {
                BenchError::Setup(format!("wrk ({status}): {e}; {}", proxy::tail(&err, 3)))
            })?;
            (load, None)
        }
    };
    let listener_drops = (backend.is_some() && workload.is_udp())
        .then(|| procfs::udp_drops_on_port(target.port()).saturating_sub(drops_before));
    let proxy = proxy.map(|_| ProxyCost {
        before,
        after,
        cpu_secs: (after.cpu_secs - before.cpu_secs).max(0.0),
        voluntary_cs: after.voluntary_cs.saturating_sub(before.voluntary_cs),
        involuntary_cs: after.involuntary_cs.saturating_sub(before.involuntary_cs),
        syscalls,
        syscall_window_secs: window,
        peak_threads: peaks.threads,
        peak_iowq: peaks.iowq,
        peak_rss_kib: peaks.rss_kib,
    });
    Ok(RunRecord {
        load,
        proxy,
        backend,
        listener_drops,
        machine,
    })
}

/// Counts the system calls of `pids` (and threads they start) for `window`.
fn count_syscalls(
    env: &Env<'_>,
    perf: &Path,
    pids: &[i32],
    window: Duration,
    tag: &str,
) -> Result<Option<u64>> {
    let out = env.logs.join(format!("perf-{tag}.csv"));
    let list: Vec<String> = pids.iter().map(ToString::to_string).collect();
    let args = [
        "stat",
        "-x",
        ",",
        "-e",
        "raw_syscalls:sys_enter",
        "-o",
        &out.display().to_string(),
        "-p",
        &list.join(","),
        "--",
        "sleep",
        &format!("{:.3}", window.as_secs_f64()),
    ];
    let mut p = child::spawn(Spec {
        name: "perf".into(),
        program: perf,
        args: args.iter().map(|s| s.to_string()).collect(),
        cpus: env.load_cpus,
        stdout: Output::Null,
        stderr: Output::Null,
        env: Vec::new(),
    })?;
    let done = p.wait_for(window + Duration::from_secs(10), env.stop)?;
    if done.is_none() {
        p.stop(Signal::INT, Duration::from_secs(2));
    }
    Ok(peers::parse_perf_count(
        &fs::read_to_string(&out).unwrap_or_default(),
    ))
}
