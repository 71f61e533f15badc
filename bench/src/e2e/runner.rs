//! Running rows through workloads: backends, proxies, runs, verification and progress.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::child::StopFlag;
use super::error::{BenchError, Result};
use super::figures::{self, Figures};
use super::measure::{self, Backend, BackendStats, Env, RunRecord};
use super::procfs;
use super::proxy::{Ctx, Proxy, Row};
use super::verify;
use super::workload::Workload;

/// One row's result for one workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    /// The workload.
    pub workload: Workload,
    /// Its name.
    pub name: String,
    /// Every completed run.
    pub runs: Vec<RunRecord>,
    /// The backend's counters over all runs.
    pub backend: Option<BackendStats>,
    /// epoll engine: (reads, reads that returned EAGAIN), from its shutdown log.
    pub eagain: Option<(u64, u64)>,
    /// Why the workload failed (did not forward, crashed, hung), if it did.
    pub failure: Option<String>,
    /// Why this row does not run the workload (HAProxy and UDP, say), if it does not.
    pub skipped: Option<String>,
    /// The medians.
    pub figures: Figures,
}

/// One row's results.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    /// The row.
    pub row: Row,
    /// Why the row was skipped (its program is not installed), if it was.
    pub skipped: Option<String>,
    /// Results per workload.
    pub workloads: Vec<WorkloadResult>,
}

impl RowResult {
    /// The figures of the workload named `name`, if it ran without failing.
    pub fn figures(&self, name: &str) -> Option<&Figures> {
        self.workloads
            .iter()
            .find(|w| w.name == name && w.failure.is_none() && w.skipped.is_none())
            .map(|w| &w.figures)
    }

    /// Why workload `name` was skipped on this row, if it was.
    pub fn skipped(&self, name: &str) -> Option<&str> {
        self.workloads
            .iter()
            .find(|w| w.name == name)
            .and_then(|w| w.skipped.as_deref())
    }

    /// The failure of workload `name`, if it failed.
    pub fn failure(&self, name: &str) -> Option<&str> {
        self.workloads
            .iter()
            .find(|w| w.name == name)
            .and_then(|w| w.failure.as_deref())
    }
}

/// Runs everything that one row needs.
#[derive(Debug)]
pub struct Runner<'a> {
    /// Paths, CPUs, timing.
    pub env: Env<'a>,
    /// How proxies start.
    pub ctx: Ctx<'a>,
}

impl Runner<'_> {
    fn stop(&self) -> &StopFlag {
        self.env.stop
    }

    /// Runs `workloads` on `row` (`label` prefixes progress lines).
    pub fn run_row(&self, row: Row, workloads: &[Workload], label: &str) -> Result<RowResult> {
        if let Some(why) = row.unavailable(self.ctx.peers) {
            eprintln!("{label} skipped: {why}");
            return Ok(RowResult {
                row,
                skipped: Some(why),
                workloads: Vec::new(),
            });
        }
        let mut results: Vec<WorkloadResult> = Vec::new();
        let mut start_failure: Option<String> = None;
        for &w in workloads {
            if let Some(why) = w.unavailable(self.ctx.peers).or_else(|| row.skip_reason(w)) {
                eprintln!("{label} {} skipped: {why}", w.name());
                let mut r = failed(w, String::new());
                r.failure = None;
                r.skipped = Some(why);
                results.push(r);
                continue;
            }
            let t0 = Instant::now();
            let r = match &start_failure {
                // The proxy would not start: do not retry it for every workload.
                Some(why) => failed(w, format!("not run: {why}")),
                None => self.run_workload(row, w, self.env.plan.runs, label)?,
            };
            if let Some(f) = &r.failure {
                if start_failure.is_none() {
                    eprintln!("{label} {}: FAILED: {f}", r.name);
                }
                if r.runs.is_empty() && (f.contains("at start") || f.contains("did not listen")) {
                    start_failure.get_or_insert_with(|| f.clone());
                }
            }
            eprintln!(
                "{label} {} done in {:.1} s",
                r.name,
                t0.elapsed().as_secs_f64()
            );
            results.push(r);
        }
        Ok(RowResult {
            row,
            skipped: None,
            workloads: results,
        })
    }

    /// Runs `workload` `runs` times on `row` with one backend; fails only on interruption
    /// (other problems are recorded in the result).
    pub fn run_workload(
        &self,
        row: Row,
        workload: Workload,
        runs: usize,
        label: &str,
    ) -> Result<WorkloadResult> {
        let name = workload.name();
        let tag = format!("{}-{name}", row.name);
        let backend = match Backend::start(&self.env, workload.backend(), &tag) {
            Ok(b) => b,
            Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
            Err(e) => return Ok(failed(workload, e.to_string())),
        };
        let mut records = Vec::new();
        let mut eagain: Option<(u64, u64)> = None;
        let outcome = self.runs(
            row,
            workload,
            runs,
            &backend,
            label,
            &mut records,
            &mut eagain,
        );
        // Let the last bytes reach the backend before stopping it.
        self.drain(&backend)?;
        let stats = backend.stop();
        let mut failure = match outcome {
            Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
            Err(e) => Some(e.to_string()),
            Ok(()) => None,
        };
        let backend = match stats {
            Ok(Some(s)) => Some(s),
            // An iperf3 server keeps no counters: what it reported run by run adds up to them.
            Ok(None) => Some(BackendStats::sum(records.iter().filter_map(|r| r.backend))),
            Err(e) => {
                failure.get_or_insert(e.to_string());
                None
            }
        };
        if let (None, Some(b)) = (&failure, &backend) {
            failure = verify::verify(workload, &records, b).err();
        }
        if let (None, true) = (&failure, workload.is_udp()) {
            failure = verify::verify_udp(workload, &records).err();
        }
        if let (None, Some(b), Workload::Idle) = (&failure, &backend, workload) {
            warn_partial_idle(&records, self.env.plan.idle_connections, b, label);
        }
        let figures = figures::compute(workload, &records, eagain, backend.as_ref());
        Ok(WorkloadResult {
            workload,
            name,
            runs: records,
            backend,
            eagain,
            failure,
            skipped: None,
            figures,
        })
    }

    /// The runs of one workload, proxy started once (or per run for idle).
    #[allow(clippy::too_many_arguments)]
    fn runs(
        &self,
        row: Row,
        workload: Workload,
        runs: usize,
        backend: &Backend,
        label: &str,
        records: &mut Vec<RunRecord>,
        eagain: &mut Option<(u64, u64)>,
    ) -> Result<()> {
        let name = workload.name();
        let mut proxy: Option<Proxy> = None;
        let t = Instant::now();
        if !workload.fresh_proxy_per_run() {
            proxy = row.start(&self.ctx, backend.addr, workload, &name)?;
        }
        debug(label, "proxy started", t);
        for i in 0..runs {
            self.stop().check()?;
            let tag = format!("{}-{name}-{}", row.name, i + 1);
            if workload.fresh_proxy_per_run() {
                let tag = format!("{name}-{}", i + 1);
                proxy = row.start(&self.ctx, backend.addr, workload, &tag)?;
            }
            let target = proxy.as_ref().map_or(backend.addr, |p| p.listen);
            let t = Instant::now();
            let rec =
                measure::run_once(&self.env, workload, (target, backend), proxy.as_ref(), &tag)?;
            debug(label, "run done", t);
            eprintln!(
                "{label} {name} run {}/{runs}: {}",
                i + 1,
                describe(workload, &rec)
            );
            records.push(rec);
            if let Some(p) = proxy.as_mut() {
                if !p.running() {
                    let why = super::proxy::tail(&p.stderr, 3);
                    return Err(BenchError::Setup(format!(
                        "the proxy exited during run {}: {why}",
                        i + 1
                    )));
                }
            }
            if workload.fresh_proxy_per_run() {
                if let Some(p) = proxy.take() {
                    self.drain(backend)?;
                    add_eagain(eagain, &p.stop());
                }
            }
        }
        if let Some(p) = proxy.take() {
            let t = Instant::now();
            self.drain(backend)?;
            debug(label, "drained", t);
            add_eagain(eagain, &p.stop());
            debug(label, "proxy stopped", t);
        }
        Ok(())
    }

    /// Waits (up to 5 s) until no connection to the backend is left, so that the last bytes
    /// arrive and the proxy has closed its side before it is stopped.
    fn drain(&self, backend: &Backend) -> Result<()> {
        let end = Instant::now() + Duration::from_secs(5);
        while procfs::established_on_port(backend.addr.port()) > 0 && Instant::now() < end {
            self.stop().sleep(Duration::from_millis(20))?;
        }
        Ok(())
    }
}

/// With `E2E_DEBUG` set, prints how long a step took.
fn debug(label: &str, what: &str, since: Instant) {
    if std::env::var_os("E2E_DEBUG").is_some() {
        eprintln!(
            "{label} {what} after {:.3} s",
            since.elapsed().as_secs_f64()
        );
    }
}

fn add_eagain(acc: &mut Option<(u64, u64)>, stderr: &str) {
    if let Some((r, e)) = super::proxy::epoll_eagain(stderr) {
        let a = acc.get_or_insert((0, 0));
        a.0 += r;
        a.1 += e;
    }
}

fn failed(workload: Workload, why: String) -> WorkloadResult {
    WorkloadResult {
        workload,
        name: workload.name(),
        runs: Vec::new(),
        backend: None,
        eagain: None,
        failure: Some(why),
        skipped: None,
        figures: Figures::default(),
    }
}

fn warn_partial_idle(records: &[RunRecord], want: u32, backend: &BackendStats, label: &str) {
    for (i, r) in records.iter().enumerate() {
        if r.load.open_peak < u64::from(want) {
            eprintln!(
                "{label} idle run {}: only {} of {want} connections opened ({} connect errors)",
                i + 1,
                r.load.open_peak,
                r.load.connect_errors
            );
        }
    }
    let opened: u64 = records.iter().map(|r| r.load.open_peak).sum();
    if backend.connections < opened {
        eprintln!(
            "{label} idle: the backend saw {} of the {opened} connections loadgen held (the \
             proxy had not connected the rest when the hold ended); RSS is divided by the \
             smaller count",
            backend.connections
        );
    }
}

/// A one-line summary of a run for the progress log.
fn describe(workload: Workload, r: &RunRecord) -> String {
    let l = &r.load;
    let cpu = r.proxy.as_ref().map_or(String::new(), |c| {
        format!(", proxy cpu {:.2} s", c.cpu_secs)
    });
    let p99 = l.latency_us.map_or(0.0, |x| x.p99_us);
    match workload {
        Workload::Stream(_) => format!("{:.2} Gbit/s{cpu}", l.gbit_per_sec),
        Workload::Iperf3Tcp { .. } => format!(
            "{:.2} Gbit/s received, {} retransmits{cpu}",
            l.gbit_per_sec, l.retransmits
        ),
        Workload::Rr(_) | Workload::RrPaced(_) => {
            format!("{:.0} req/s, p99 {p99:.0} us{cpu}", l.requests_per_sec)
        }
        Workload::Wrk { .. } => format!(
            "{:.0} req/s, p99 {p99:.0} us, {} socket errors, {} non-2xx{cpu}",
            l.requests_per_sec,
            l.connect_errors + l.io_errors,
            l.verify_errors
        ),
        Workload::Connect => format!("{:.0} conn/s, p99 {p99:.0} us{cpu}", l.connections_per_sec),
        Workload::UdpRr(_) => format!(
            "{:.0} req/s, p99 {p99:.0} us, lost {} (listener drops {}){cpu}",
            l.requests_per_sec,
            l.lost,
            r.listener_drops.unwrap_or(0)
        ),
        Workload::UdpStream(_) | Workload::Iperf3Udp => {
            let got = r.backend.map_or(0, |b| b.datagrams_in);
            let loss = 100.0 * (1.0 - got as f64 / l.datagrams_sent.max(1) as f64);
            format!(
                "{:.0} datagrams/s sent, {:.0}/s received ({loss:.1}% lost, listener drops \
                 {}){cpu}",
                l.datagrams_per_sec,
                got as f64 / l.elapsed_secs.max(1e-9),
                r.listener_drops.unwrap_or(0)
            )
        }
        Workload::Idle => {
            let rss = r.proxy.as_ref().map_or(String::new(), |c| {
                format!(", proxy RSS {} -> {} KiB", c.before.rss_kib, c.peak_rss_kib)
            });
            format!("{} connections held{rss}", l.open_peak)
        }
    }
}
