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

/// One row's workload between its first and its last run: the backend, the proxy (when it
/// lasts the runs), the runs so far and the first failure, which ends its runs.
#[derive(Debug)]
pub struct OpenWorkload {
    row: Row,
    workload: Workload,
    label: String,
    backend: Backend,
    proxy: Option<Proxy>,
    records: Vec<RunRecord>,
    eagain: Option<(u64, u64)>,
    error: Option<BenchError>,
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
            if let Some(r) = self.not_run(row, w, start_failure.as_deref(), label) {
                results.push(r);
                continue;
            }
            let t0 = Instant::now();
            let r = self.run_workload(row, w, self.env.plan.runs, label)?;
            note_failure(&r, &mut start_failure, label);
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

    /// The result of `workload` on `row` when it does not run: skipped (the row or the
    /// workload cannot), or failed because the proxy would not start for an earlier one.
    pub fn not_run(
        &self,
        row: Row,
        workload: Workload,
        start_failure: Option<&str>,
        label: &str,
    ) -> Option<WorkloadResult> {
        if let Some(why) = workload
            .unavailable(self.ctx.peers)
            .or_else(|| row.skip_reason(workload))
        {
            eprintln!("{label} {} skipped: {why}", workload.name());
            let mut r = failed(workload, String::new());
            r.failure = None;
            r.skipped = Some(why);
            return Some(r);
        }
        // The proxy would not start: do not retry it for every workload.
        start_failure.map(|why| failed(workload, format!("not run: {why}")))
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
        let mut open = match self.open(row, workload, label)? {
            Ok(open) => open,
            Err(failed) => return Ok(failed),
        };
        for i in 0..runs {
            self.run_next(&mut open, i, runs)?;
        }
        self.close(open)
    }

    /// Starts `workload`'s backend for `row`, and its proxy unless each run starts its own;
    /// a backend that would not start is a failed result (`Ok(Err(..))`), a proxy that would
    /// not start a failure recorded in the [`OpenWorkload`].
    pub fn open(
        &self,
        row: Row,
        workload: Workload,
        label: &str,
    ) -> Result<std::result::Result<OpenWorkload, WorkloadResult>> {
        let name = workload.name();
        let tag = format!("{}-{name}", row.name);
        let backend = match Backend::start(&self.env, workload.backend(), &tag) {
            Ok(b) => b,
            Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
            Err(e) => return Ok(Err(failed(workload, e.to_string()))),
        };
        let mut open = OpenWorkload {
            row,
            workload,
            label: label.to_string(),
            backend,
            proxy: None,
            records: Vec::new(),
            eagain: None,
            error: None,
        };
        if !workload.fresh_proxy_per_run() {
            let t = Instant::now();
            match row.start(&self.ctx, open.backend.addr, workload, &name) {
                Ok(p) => open.proxy = p,
                Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                Err(e) => open.error = Some(e),
            }
            debug(label, "proxy started", t);
        }
        Ok(Ok(open))
    }

    /// Run `i` (of `runs`) of an open workload; a failure ends its runs and is recorded in
    /// it. Fails only on interruption.
    pub fn run_next(&self, open: &mut OpenWorkload, i: usize, runs: usize) -> Result<()> {
        if open.error.is_some() {
            return Ok(());
        }
        match self.one_run(open, i, runs) {
            Err(BenchError::Interrupted) => Err(BenchError::Interrupted),
            Err(e) => {
                open.error = Some(e);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    fn one_run(&self, open: &mut OpenWorkload, i: usize, runs: usize) -> Result<()> {
        self.stop().check()?;
        let (row, workload) = (open.row, open.workload);
        let name = workload.name();
        let label = open.label.as_str();
        let tag = format!("{}-{name}-{}", row.name, i + 1);
        if workload.fresh_proxy_per_run() {
            let tag = format!("{name}-{}", i + 1);
            open.proxy = row.start(&self.ctx, open.backend.addr, workload, &tag)?;
        }
        let target = open.proxy.as_ref().map_or(open.backend.addr, |p| p.listen);
        let t = Instant::now();
        let rec = measure::run_once(
            &self.env,
            workload,
            (target, &open.backend),
            open.proxy.as_ref(),
            &tag,
        )?;
        debug(label, "run done", t);
        eprintln!(
            "{label} {name} run {}/{runs}: {}",
            i + 1,
            describe(workload, &rec)
        );
        open.records.push(rec);
        if let Some(p) = open.proxy.as_mut() {
            if !p.running() {
                let why = super::proxy::tail(&p.stderr, 3);
                return Err(BenchError::Setup(format!(
                    "the proxy exited during run {}: {why}",
                    i + 1
                )));
            }
        }
        if workload.fresh_proxy_per_run() {
            if let Some(p) = open.proxy.take() {
                self.drain(&open.backend)?;
                add_eagain(&mut open.eagain, &p.stop());
            }
        }
        Ok(())
    }

    /// Stops an open workload's proxy and backend, checks what the backend received and
    /// computes the figures. Fails only on interruption.
    pub fn close(&self, open: OpenWorkload) -> Result<WorkloadResult> {
        let OpenWorkload {
            workload,
            label,
            backend,
            proxy,
            records,
            mut eagain,
            error,
            ..
        } = open;
        let mut outcome = error.map_or(Ok(()), Err);
        if let Some(p) = proxy {
            let t = Instant::now();
            let drained = self.drain(&backend);
            debug(&label, "drained", t);
            add_eagain(&mut eagain, &p.stop());
            debug(&label, "proxy stopped", t);
            if let (Ok(()), Err(e)) = (&outcome, drained) {
                outcome = Err(e);
            }
        }
        if let Err(BenchError::Interrupted) = outcome {
            return Err(BenchError::Interrupted);
        }
        // Let the last bytes reach the backend before stopping it.
        self.drain(&backend)?;
        let stats = backend.stop();
        let mut failure = outcome.err().map(|e| e.to_string());
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
            warn_partial_idle(&records, self.env.plan.idle_connections, b, &label);
        }
        let figures = figures::compute(workload, &records, eagain, backend.as_ref());
        Ok(WorkloadResult {
            workload,
            name: workload.name(),
            runs: records,
            backend,
            eagain,
            failure,
            skipped: None,
            figures,
        })
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

/// Prints a result's failure, and remembers it in `start_failure` when the proxy did not
/// start (the row's later workloads are then not run).
pub fn note_failure(r: &WorkloadResult, start_failure: &mut Option<String>, label: &str) {
    let Some(f) = &r.failure else {
        return;
    };
    if start_failure.is_none() {
        eprintln!("{label} {}: FAILED: {f}", r.name);
    }
    if r.runs.is_empty() && (f.contains("at start") || f.contains("did not listen")) {
        start_failure.get_or_insert_with(|| f.clone());
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
