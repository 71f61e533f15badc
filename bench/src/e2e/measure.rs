//! One measured run: a backend process, loadgen against a target, and the proxy's costs
//! sampled from `/proc` and `perf stat` while it runs.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use super::child::{self, Guard, Output, Spec, StopFlag};
use super::error::{BenchError, Result};
use super::iperf3;
use super::opts::Plan;
use super::peers;
use super::procfs::{self, MachineCost, MachineCpu, Snapshot};
use super::proxy::{self, Proxy};
use super::workload::{BackendKind, Client, Workload};

/// Paths and CPUs every run needs.
#[derive(Debug)]
pub struct Env<'a> {
    /// The loadgen binary.
    pub loadgen: &'a Path,
    /// The backend binary.
    pub backend: &'a Path,
    /// iperf3 (client and server of `iperf3-udp`), when installed.
    pub iperf3: Option<&'a Path>,
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

/// The backend's counters, printed as JSON when it stops (and on SIGUSR1).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct BackendStats {
    /// Connections accepted (UDP: distinct senders).
    pub connections: u64,
    /// Requests served (echo: reads echoed).
    pub requests: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams received (UDP backends).
    #[serde(default)]
    pub datagrams_in: u64,
    /// Datagrams sent (UDP echo).
    #[serde(default)]
    pub datagrams_out: u64,
}

impl BackendStats {
    /// The counts of `all` added up.
    pub fn sum(all: impl IntoIterator<Item = BackendStats>) -> BackendStats {
        all.into_iter()
            .fold(BackendStats::default(), |a, b| BackendStats {
                connections: a.connections + b.connections,
                requests: a.requests + b.requests,
                bytes_in: a.bytes_in + b.bytes_in,
                bytes_out: a.bytes_out + b.bytes_out,
                datagrams_in: a.datagrams_in + b.datagrams_in,
                datagrams_out: a.datagrams_out + b.datagrams_out,
            })
    }

    /// What was counted since `before`.
    pub fn since(&self, before: &BackendStats) -> BackendStats {
        BackendStats {
            connections: self.connections.saturating_sub(before.connections),
            requests: self.requests.saturating_sub(before.requests),
            bytes_in: self.bytes_in.saturating_sub(before.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(before.bytes_out),
            datagrams_in: self.datagrams_in.saturating_sub(before.datagrams_in),
            datagrams_out: self.datagrams_out.saturating_sub(before.datagrams_out),
        }
    }
}

/// The JSON lines (counter reports) in the backend's stdout.
fn stats_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| l.trim_start().starts_with('{'))
}

/// A backend process.
#[derive(Debug)]
pub struct Backend {
    guard: Guard,
    /// Its address.
    pub addr: SocketAddr,
    stdout: PathBuf,
    /// What it is (an iperf3 server reports no counters of its own).
    kind: BackendKind,
}

/// The iperf3 binary, or why there is none.
fn iperf3_path<'a>(env: &Env<'a>) -> Result<&'a Path> {
    env.iperf3
        .ok_or_else(|| BenchError::Setup("iperf3 is not installed".into()))
}

impl Backend {
    /// Starts a `kind` backend on a free loopback port, pinned to the load CPUs.
    pub fn start(env: &Env<'_>, kind: BackendKind, tag: &str) -> Result<Backend> {
        if kind == BackendKind::Iperf3 {
            return Self::start_iperf3(env, tag);
        }
        let stdout = env.logs.join(format!("backend-{tag}.stdout"));
        let mut guard = child::spawn(Spec {
            name: format!("backend ({})", kind.arg()),
            program: env.backend,
            args: [
                "--kind",
                kind.arg(),
                "--listen",
                "127.0.0.1:0",
                "--threads",
                &env.load_cpus.len().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            cpus: env.load_cpus,
            stdout: Output::File(stdout.clone()),
            stderr: Output::File(env.logs.join(format!("backend-{tag}.stderr"))),
            env: Vec::new(),
        })?;
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let text = fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
                let addr = line.trim().parse().map_err(|e| {
                    BenchError::Setup(format!("backend printed {line:?}, not an address: {e}"))
                })?;
                return Ok(Backend {
                    guard,
                    addr,
                    stdout,
                    kind,
                });
            }
            if guard.try_exited().is_some() || Instant::now() >= end {
                return Err(BenchError::Setup(format!(
                    "the {} backend did not start",
                    kind.arg()
                )));
            }
            env.stop.sleep(Duration::from_millis(10))?;
        }
    }

    /// An iperf3 server on a loopback port free for TCP and UDP, ready once its control
    /// socket listens (seen in `/proc`: a probe connection would be taken for a test).
    fn start_iperf3(env: &Env<'_>, tag: &str) -> Result<Backend> {
        let program = iperf3_path(env)?;
        let addr = proxy::free_tcp_and_udp_port()?;
        let stdout = env.logs.join(format!("backend-{tag}.stdout"));
        let mut guard = child::spawn(Spec {
            name: "backend (iperf3 -s)".into(),
            program,
            args: iperf3::server_args(addr),
            cpus: env.load_cpus,
            stdout: Output::File(stdout.clone()),
            stderr: Output::File(env.logs.join(format!("backend-{tag}.stderr"))),
            env: Vec::new(),
        })?;
        let end = Instant::now() + Duration::from_secs(5);
        while procfs::tcp_listening_on_port(addr.port()) == 0 {
            if guard.try_exited().is_some() || Instant::now() >= end {
                return Err(BenchError::Setup(format!(
                    "the iperf3 server did not listen on {addr}: {}",
                    proxy::tail(&env.logs.join(format!("backend-{tag}.stderr")), 3)
                )));
            }
            env.stop.sleep(Duration::from_millis(10))?;
        }
        Ok(Backend {
            guard,
            addr,
            stdout,
            kind: BackendKind::Iperf3,
        })
    }

    /// Whether it reports counters of its own (SIGUSR1 and at its end): the harness's
    /// backends do; for iperf3 the client's report says what the server received.
    pub fn has_counters(&self) -> bool {
        self.kind != BackendKind::Iperf3
    }

    /// Its counters now: asks with SIGUSR1 and waits (up to 2 s) for the new line.
    pub fn snapshot(&self, stop: &StopFlag) -> Result<BackendStats> {
        let count = || stats_lines(&fs::read_to_string(&self.stdout).unwrap_or_default()).count();
        let before = count();
        if let Some(pid) = rustix::process::Pid::from_raw(self.guard.pid()) {
            let _ = rustix::process::kill_process(pid, Signal::USR1);
        }
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            let text = fs::read_to_string(&self.stdout).unwrap_or_default();
            if stats_lines(&text).count() > before {
                let line = stats_lines(&text).last().unwrap_or_default();
                return serde_json::from_str(line)
                    .map_err(|e| BenchError::Setup(format!("bad backend stats {line:?}: {e}")));
            }
            if Instant::now() >= end {
                return Err(BenchError::Setup(
                    "the backend did not report its counters on SIGUSR1".into(),
                ));
            }
            stop.sleep(Duration::from_millis(5))?;
        }
    }

    /// Its counters once datagrams stop arriving: snapshots 50 ms apart until two agree (at
    /// most 1 s), so that what the proxy still held when loadgen stopped is counted.
    pub fn settled(&self, stop: &StopFlag) -> Result<BackendStats> {
        let end = Instant::now() + Duration::from_secs(1);
        let mut last = self.snapshot(stop)?;
        loop {
            stop.sleep(Duration::from_millis(50))?;
            let now = self.snapshot(stop)?;
            if now.datagrams_in == last.datagrams_in || Instant::now() >= end {
                return Ok(now);
            }
            last = now;
        }
    }

    /// Stops it (SIGTERM) and returns its final counters (`None`: it keeps none, see
    /// [`Backend::has_counters`]).
    pub fn stop(mut self) -> Result<Option<BackendStats>> {
        self.guard.stop(Signal::TERM, Duration::from_secs(5));
        if !self.has_counters() {
            return Ok(None);
        }
        let text = fs::read_to_string(&self.stdout).unwrap_or_default();
        let json = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
        let json = json.ok_or_else(|| BenchError::Setup("the backend printed no stats".into()))?;
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| BenchError::Setup(format!("bad backend stats {json:?}: {e}")))
    }
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
            let (load, received) = iperf3::parse_report(&text).map_err(|e| {
                BenchError::Setup(format!("iperf3 ({status}): {e}; {}", proxy::tail(&err, 3)))
            })?;
            (load, Some(received))
        }
    };
    let listener_drops =
        backend.map(|_| procfs::udp_drops_on_port(target.port()).saturating_sub(drops_before));
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
