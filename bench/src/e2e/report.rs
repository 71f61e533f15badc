//! The markdown report, the target check and the chart set, from the collected results.

use std::fmt::Write as _;

use serde::Serialize;

use super::figures::Figures;
use super::opts::Plan;
use super::proxy::RowKind;
use super::runner::{RowResult, WorkloadResult};
use super::svg::num;
use super::workload::Client;

/// Everything one harness invocation produced (also the raw JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// UTC start time.
    pub started_utc: String,
    /// `--quick`.
    pub quick: bool,
    /// Timing.
    pub plan: Plan,
    /// Proxy CPUs.
    pub proxy_cpus: Vec<usize>,
    /// Load-side CPUs.
    pub load_cpus: Vec<usize>,
    /// `uname -r`.
    pub kernel: String,
    /// `/proc/loadavg` before the run.
    pub loadavg_before: String,
    /// `/proc/loadavg` after the run.
    pub loadavg_after: String,
    /// Why syscalls are n/a, if they are.
    pub perf_unavailable: Option<String>,
    /// `--interleave`: the rows ran in turns, run `i` of each in round `i`.
    pub interleaved: bool,
    /// The rows.
    pub rows: Vec<RowResult>,
    /// The io-wq bound check (uring splice with many streams), if it ran.
    pub iowq: Option<WorkloadResult>,
    /// Wall time of the whole harness.
    pub elapsed_secs: f64,
}

/// The HAProxy row streams are compared with.
pub(super) const HAPROXY_STREAM: &str = "haproxy-splice";
/// The HAProxy row request/response and connections are compared with.
pub(super) const HAPROXY_RR: &str = "haproxy";
/// The epoll row uring is compared with.
pub(super) const EPOLL: &str = "epoll-copy";
/// The row UDP figures are compared with (HAProxy has no UDP).
pub(super) const NGINX: &str = "nginx";
/// The UDP stream workload's name.
pub(super) const UDP_STREAM: &str = "udp-stream";
/// The iperf3 workload's name.
pub(super) const IPERF3: &str = "iperf3-udp";

/// Reads one figure.
pub(super) type Get = fn(&Figures) -> Option<f64>;

impl Results {
    pub(super) fn row(&self, name: &str) -> Option<&RowResult> {
        self.rows.iter().find(|r| r.row.name == name)
    }

    pub(super) fn value(&self, row: &str, workload: &str, get: Get) -> Option<f64> {
        get(self.row(row)?.figures(workload)?)
    }

    /// A cell: the figure, "FAIL" if the workload failed, "skip" if the row does not run it,
    /// "n/a" if absent.
    pub(super) fn cell(&self, row: &RowResult, workload: &str, get: Get) -> String {
        if row.failure(workload).is_some() {
            return "FAIL".into();
        }
        if row.skipped(workload).is_some() {
            return "skip".into();
        }
        row.figures(workload)
            .and_then(get)
            .map_or_else(|| "n/a".into(), num)
    }

    /// `row`'s figure divided by `reference`'s.
    pub(super) fn ratio(
        &self,
        row: &RowResult,
        reference: &str,
        workload: &str,
        get: Get,
    ) -> String {
        let v = row.figures(workload).and_then(get);
        let r = self.value(reference, workload, get);
        match (v, r) {
            (Some(v), Some(r)) if r > 0.0 => format!("{:.2}×", v / r),
            _ => "n/a".into(),
        }
    }

    /// The whole machine's CPU per unit of `row` minus `direct`'s, for `workload`: what the
    /// proxy added to the machine's CPU time.
    pub(super) fn overhead(&self, row: &str, workload: &str) -> Option<f64> {
        let get: Get = |f| f.machine_cpu;
        Some(self.value(row, workload, get)? - self.value("direct", workload, get)?)
    }

    /// Three cells of `workload`: the whole machine's CPU per unit, its overhead over
    /// `direct` (see [`Results::overhead`]), and softirq's share of it.
    pub(super) fn machine_cells(&self, row: &RowResult, workload: &str) -> [String; 3] {
        let over = match self.cell(row, workload, |f| f.machine_cpu) {
            c if c == "FAIL" || c == "skip" => c,
            _ => self
                .overhead(row.row.name, workload)
                .map_or_else(|| "n/a".into(), num),
        };
        [
            self.cell(row, workload, |f| f.machine_cpu),
            over,
            self.cell(row, workload, |f| f.softirq_pct),
        ]
    }

    /// `row`'s whole-machine overhead divided by `reference`'s, for `workload`; n/a for
    /// `direct` (it adds nothing over itself).
    pub(super) fn overhead_ratio(
        &self,
        row: &RowResult,
        reference: &str,
        workload: &str,
    ) -> String {
        if row.row.kind == RowKind::Direct {
            return "n/a".into();
        }
        match (
            self.overhead(row.row.name, workload),
            self.overhead(reference, workload),
        ) {
            (Some(v), Some(r)) if r > 0.0 => format!("{:.2}×", v / r),
            _ => "n/a".into(),
        }
    }

    pub(super) fn ran(&self) -> impl Iterator<Item = &RowResult> {
        self.rows.iter().filter(|r| r.skipped.is_none())
    }

    /// Rows that ran (or tried to run) at least one UDP workload.
    fn ran_udp(&self) -> impl Iterator<Item = &RowResult> {
        self.ran().filter(|r| {
            r.workloads
                .iter()
                .any(|w| w.workload.is_udp() && w.skipped.is_none())
        })
    }

    /// Whether any row ran a workload that `pick` selects.
    pub(super) fn has(&self, pick: fn(&WorkloadResult) -> bool) -> bool {
        self.rows
            .iter()
            .flat_map(|r| &r.workloads)
            .any(|w| w.skipped.is_none() && pick(w))
    }

    /// Whether a workload named `name` ran on some row.
    pub(super) fn has_named(&self, name: &str) -> bool {
        self.rows
            .iter()
            .flat_map(|r| &r.workloads)
            .any(|w| w.skipped.is_none() && w.name == name)
    }

    /// Whether any of the workloads `names` ran on some row.
    pub(super) fn has_any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.has_named(n))
    }

    /// The whole report as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let p = &self.plan;
        let _ = writeln!(s, "# ringlb end-to-end benchmark\n");
        let _ = writeln!(
            s,
            "{} UTC · {} run · {} run(s) per figure (median) · {:.1} s per run · proxy CPUs {:?} \
             (workers = {}) · load CPUs {:?} · kernel {} · load average before {} / after {} · \
             measuring took {:.0} s\n",
            self.started_utc,
            if self.quick { "quick" } else { "full" },
            p.runs,
            p.run.as_secs_f64(),
            self.proxy_cpus,
            self.proxy_cpus.len(),
            self.load_cpus,
            self.kernel,
            self.loadavg_before,
            self.loadavg_after,
            self.elapsed_secs
        );
        // TCP workloads of loadgen's (the clients' tables describe themselves).
        let tcp = self.has(|w| !w.workload.is_udp() && w.workload.client() == Client::Loadgen);
        let udp = self.has(|w| w.workload.is_udp());
        if tcp {
            let _ = writeln!(
                s,
                "Idle workload: {} connections (open-files limit {}). Streams upload into a sink; \
                 rr and connect use 64-byte messages against an echo backend.\n",
                p.idle_connections, p.fd_limit
            );
        }
        if udp {
            let _ = writeln!(
                s,
                "UDP: udp-rr flows (one socket and 127.4.x source address each) send a 64-byte \
                 datagram and wait for its exact echo from a UDP echo backend (200 ms without it: \
                 lost, sent again); the proxies end a flow after its one answer (ringlb \
                 `--udp-responses 1`, nginx `proxy_responses 1`) and after {idle} idle \
                 (`--udp-idle-timeout`, `proxy_timeout`). udp-stream: {socks} sockets send \
                 {size}-byte datagrams as fast as loadgen can into a UDP sink; flows last until \
                 idle; loss is what the sink never counted. ringlb runs UDP once per engine, on \
                 its copy rows (the forwarding mode does not apply); HAProxy has no UDP. A run \
                 FAILs if the backend's counts disagree with loadgen's (a datagram missing that \
                 loadgen did not count lost, one too many, a wrong size, a corrupted echo), or \
                 (udp-rr) more than {max}% of requests were lost. Lost %: requests unanswered \
                 within 200 ms (rr), datagrams the sink never counted (stream); listener drops \
                 %: datagrams the kernel dropped at the proxy's listener socket (the backend's \
                 for direct) because its receive buffer was full (`/proc/net/udp`). The UDP \
                 backend asks for 4 MiB receive buffers; the proxies keep their defaults.\n",
                idle = super::workload::UDP_IDLE_TIMEOUT,
                socks = super::workload::UDP_STREAM_SOCKETS,
                size = super::workload::UDP_STREAM_SIZE,
                max = super::verify::UDP_RR_MAX_LOSS * 100.0,
            );
        }
        if self.has_named(IPERF3) {
            let _ = writeln!(
                s,
                "iperf3-udp: `iperf3 -u -b {rate} -l {size} -w {window}` (a client nobody here \
                 wrote) sends one stream of {size}-byte datagrams, offered at {rate}bit/s on \
                 every row, to an `iperf3 -s` backend, for whole seconds (`-t`: the run length \
                 rounded up). Its control connection goes over TCP to the same port, so each \
                 proxy has a TCP and a UDP listener there (ringlb: a file with both; nginx: two \
                 servers). Received: what the server reported to the client; loss %: sent but \
                 not received. CPU per datagram: the proxy's over the whole run; syscalls per \
                 datagram: during perf's window. The server's socket closes at the end of each \
                 test, so `direct` shows no listener drops.\n",
                rate = super::iperf3::RATE,
                size = super::iperf3::SIZE,
                window = super::iperf3::WINDOW,
            );
        }
        let _ = writeln!(
            s,
            "CPU: the proxy's utime+stime (all threads and processes; io_uring's io-wq \
             workers, `iou-wrk-*`, are threads of the proxy's process, so their time is in it). \
             Machine CPU: the whole machine's busy time over the same window (`/proc/stat`, all \
             CPUs: the window's length less idle and iowait, which a tickless kernel measures \
             exactly, unlike the tick-sampled user and system counters), per unit like \
             the proxy's CPU; it includes loadgen, the backend, softirq work on any CPU and \
             kernel threads (kworkers, which cannot be charged to a process). Over direct: the \
             row's machine CPU minus `direct`'s, what the proxy added to the machine; the \
             targets use it. softirq %: softirq's share of the machine's busy time. Syscalls: `perf stat -e \
             raw_syscalls:sys_enter` on the proxy during the middle of each run{}. Context \
             switches: summed over live threads. ×HAProxy compares with `{HAPROXY_STREAM}` for \
             streams and `{HAPROXY_RR}` otherwise; ×epoll with `{EPOLL}`. FAIL: the row did not \
             forward correctly (see Problems).\n",
            self.perf_unavailable
                .as_ref()
                .map_or(String::new(), |w| format!(" (n/a here: {w})"))
        );
        if self.has_any(&["stream-1", "stream-4", "stream-8"]) {
            self.stream_table(&mut s);
        }
        if self.has_any(&["rr-64", "rr-1024"]) {
            self.rr_table(&mut s);
        }
        if self.has_named(super::client_tables::RR_PACED) {
            self.rr_paced_table(&mut s);
        }
        if self.has_any(&["connect", "idle"]) {
            self.conn_table(&mut s);
        }
        self.client_tables(&mut s);
        if self.has_named("udp-rr-64") || self.has_named("udp-rr-1024") {
            self.udp_rr_table(&mut s);
        }
        if self.has_named(UDP_STREAM) {
            let heading = format!(
                "UDP stream ({}-byte datagrams, {} sockets, into a UDP sink)",
                super::workload::UDP_STREAM_SIZE,
                super::workload::UDP_STREAM_SOCKETS
            );
            self.udp_stream_table(&mut s, UDP_STREAM, &heading);
        }
        if self.has_named(IPERF3) {
            let heading = format!(
                "iperf3 -u ({}-byte datagrams offered at {}bit/s, into an iperf3 server)",
                super::iperf3::SIZE,
                super::iperf3::RATE
            );
            self.udp_stream_table(&mut s, IPERF3, &heading);
        }
        self.iowq_section(&mut s);
        if self.has(|w| !w.workload.is_udp()) {
            self.targets(&mut s);
        }
        if self.interleaved {
            self.paired_section(&mut s);
        }
        self.skipped_section(&mut s);
        self.problems(&mut s);
        s
    }

    fn udp_rr_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## UDP request/response (64-byte datagrams against a UDP echo)\n"
        );
        let _ = writeln!(
            s,
            "| row | 64 flows req/s | p50 µs | p99 µs | ×direct | ×nginx | lost % \
             | listener drops % | CPU s/M req | syscalls/req | machine CPU s/M req \
             | over direct | softirq % | 1,024 flows req/s | p50 µs | p99 µs | ×direct | ×nginx \
             | lost % | listener drops % | CPU s/M req | syscalls/req | machine CPU s/M req \
             | over direct | softirq % |"
        );
        let _ = writeln!(s, "|{}", "---|".repeat(25));
        let rps: Get = |f| f.rps;
        for r in self.ran_udp() {
            let mut line = format!("| {} |", r.row.name);
            for w in ["udp-rr-64", "udp-rr-1024"] {
                let cells = [
                    self.cell(r, w, rps),
                    self.cell(r, w, |f| f.p50_us),
                    self.cell(r, w, |f| f.p99_us),
                    self.ratio(r, "direct", w, rps),
                    self.ratio(r, NGINX, w, rps),
                    self.cell(r, w, |f| f.loss_pct),
                    self.cell(r, w, |f| f.listener_drop_pct),
                    self.cell(r, w, |f| f.cpu_per_mreq),
                    self.cell(r, w, |f| f.syscalls_per_req),
                ];
                for c in cells.into_iter().chain(self.machine_cells(r, w)) {
                    let _ = write!(line, " {c} |");
                }
            }
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }

    /// A table of datagrams sent and received (`udp-stream`, `iperf3-udp`).
    fn udp_stream_table(&self, s: &mut String, w: &str, heading: &str) {
        let _ = writeln!(s, "## {heading}\n");
        let _ = writeln!(
            s,
            "| row | sent datagrams/s | received datagrams/s | received Gbit/s | loss % \
             | listener drops % | ×direct | ×nginx | CPU s/M datagrams | syscalls/datagram \
             | vol. cs/datagram | threads | machine CPU s/M datagrams | over direct | softirq % |"
        );
        let _ = writeln!(s, "|{}", "---|".repeat(15));
        let recv: Get = |f| f.pps_recv;
        for r in self.ran_udp() {
            let [mu, ou, qu] = self.machine_cells(r, w);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {mu} | {ou} | {qu} |",
                r.row.name,
                self.cell(r, w, |f| f.pps_sent),
                self.cell(r, w, recv),
                self.cell(r, w, |f| f.gbps_recv),
                self.cell(r, w, |f| f.loss_pct),
                self.cell(r, w, |f| f.listener_drop_pct),
                self.ratio(r, "direct", w, recv),
                self.ratio(r, NGINX, w, recv),
                self.cell(r, w, |f| f.cpu_per_mpkt),
                self.cell(r, w, |f| f.syscalls_per_pkt),
                self.cell(r, w, |f| f.vol_cs_per_req),
                self.cell(r, w, |f| f.threads),
            );
        }
        s.push('\n');
    }

    /// Rows that did not run some workloads, and why (one line per row and reason).
    fn skipped_section(&self, s: &mut String) {
        let mut lines = Vec::new();
        for r in &self.rows {
            let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
            for w in &r.workloads {
                if let Some(why) = &w.skipped {
                    match by_reason.iter_mut().find(|(y, _)| y == why) {
                        Some((_, names)) => names.push(&w.name),
                        None => by_reason.push((why, vec![&w.name])),
                    }
                }
            }
            for (why, names) in by_reason {
                lines.push(format!("- `{}` {}: {why}", r.row.name, names.join(", ")));
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(s, "## Skipped\n\n{}\n", lines.join("\n"));
        }
    }

    fn stream_table(&self, s: &mut String) {
        let _ = writeln!(s, "## Streaming (upload into a sink)\n");
        let _ = writeln!(
            s,
            "| row | 1 stream Gbit/s | ×direct | ×HAProxy | 8 streams Gbit/s | ×direct | ×HAProxy \
             | CPU s/GB (1) | ×HAProxy | CPU s/GB (8) | syscalls/MB (1) | syscalls/MB (8) \
             | peak iou-wrk | threads | EAGAIN reads (1) | machine CPU s/GB (1) | over direct (1) \
             | ×HAProxy | softirq % (1) | machine CPU s/GB (8) | over direct (8) | softirq % (8) \
             | 4 streams Gbit/s | ×direct | machine CPU s/GB (4) | over direct (4) |"
        );
        let _ = writeln!(s, "|{}", "---|".repeat(26));
        let gbps: Get = |f| f.gbps;
        let cpu: Get = |f| f.cpu_per_gb;
        let sys: Get = |f| f.syscalls_per_mb;
        for r in self.ran() {
            let iowq = ["stream-1", "stream-8"]
                .iter()
                .filter_map(|w| r.figures(w)?.peak_iowq)
                .reduce(f64::max)
                .map_or("n/a".into(), num);
            let eagain = r
                .figures("stream-1")
                .and_then(|f| f.eagain_share)
                .map_or("n/a".into(), |x| format!("{:.1}%", x * 100.0));
            let [m1, o1, q1] = self.machine_cells(r, "stream-1");
            let [m8, o8, q8] = self.machine_cells(r, "stream-8");
            let [m4, o4, _] = self.machine_cells(r, "stream-4");
            let g4 = self.cell(r, "stream-4", gbps);
            let d4 = self.ratio(r, "direct", "stream-4", gbps);
            let x1 = self.overhead_ratio(r, HAPROXY_STREAM, "stream-1");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {iowq} | {} | {eagain} \
                 | {m1} | {o1} | {x1} | {q1} | {m8} | {o8} | {q8} | {g4} | {d4} | {m4} | {o4} |",
                r.row.name,
                self.cell(r, "stream-1", gbps),
                self.ratio(r, "direct", "stream-1", gbps),
                self.ratio(r, HAPROXY_STREAM, "stream-1", gbps),
                self.cell(r, "stream-8", gbps),
                self.ratio(r, "direct", "stream-8", gbps),
                self.ratio(r, HAPROXY_STREAM, "stream-8", gbps),
                self.cell(r, "stream-1", cpu),
                self.ratio(r, HAPROXY_STREAM, "stream-1", cpu),
                self.cell(r, "stream-8", cpu),
                self.cell(r, "stream-1", sys),
                self.cell(r, "stream-8", sys),
                self.cell(r, "stream-8", |f| f.threads),
            );
        }
        s.push('\n');
    }

    fn rr_table(&self, s: &mut String) {
        let _ = writeln!(s, "## Request/response (64-byte messages against echo)\n");
        let _ = writeln!(
            s,
            "| row | 64 conns req/s | p99 µs | ×direct | ×HAProxy | ×epoll | 1,024 conns req/s \
             | p99 µs | ×HAProxy | CPU s/M req (64) | syscalls/req (64) | syscalls/req (1,024) \
             | vol. cs/req (64) | invol. cs/req (64) | threads (1,024) | EAGAIN reads (64) \
             | machine CPU s/M req (64) | over direct (64) | softirq % (64) \
             | machine CPU s/M req (1,024) | over direct (1,024) | softirq % (1,024) |"
        );
        let _ = writeln!(s, "|{}", "---|".repeat(22));
        let rps: Get = |f| f.rps;
        let p99: Get = |f| f.p99_us;
        let sys: Get = |f| f.syscalls_per_req;
        for r in self.ran() {
            let eagain = r
                .figures("rr-64")
                .and_then(|f| f.eagain_share)
                .map_or("n/a".into(), |x| format!("{:.1}%", x * 100.0));
            let [m64, o64, q64] = self.machine_cells(r, "rr-64");
            let [mk, ok, qk] = self.machine_cells(r, "rr-1024");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {eagain} \
                 | {m64} | {o64} | {q64} | {mk} | {ok} | {qk} |",
                r.row.name,
                self.cell(r, "rr-64", rps),
                self.cell(r, "rr-64", p99),
                self.ratio(r, "direct", "rr-64", rps),
                self.ratio(r, HAPROXY_RR, "rr-64", rps),
                self.ratio(r, EPOLL, "rr-64", rps),
                self.cell(r, "rr-1024", rps),
                self.cell(r, "rr-1024", p99),
                self.ratio(r, HAPROXY_RR, "rr-1024", rps),
                self.cell(r, "rr-64", |f| f.cpu_per_mreq),
                self.cell(r, "rr-64", sys),
                self.cell(r, "rr-1024", sys),
                self.cell(r, "rr-64", |f| f.vol_cs_per_req),
                self.cell(r, "rr-64", |f| f.invol_cs_per_req),
                self.cell(r, "rr-1024", |f| f.threads),
            );
        }
        s.push('\n');
    }

    fn conn_table(&self, s: &mut String) {
        let _ = writeln!(s, "## Connections (connection rate; idle connections)\n");
        let _ = writeln!(
            s,
            "| row | conn/s | p99 µs | ×direct | ×HAProxy | CPU s/1k conns | syscalls/conn \
             | vol. cs/conn | invol. cs/conn | idle conns held | RSS B/idle conn | threads (idle) \
             | machine CPU s/1k conns | over direct | softirq % |"
        );
        let _ = writeln!(s, "|{}", "---|".repeat(15));
        let cps: Get = |f| f.cps;
        for r in self.ran() {
            let [mc, oc, qc] = self.machine_cells(r, "connect");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {mc} | {oc} | {qc} |",
                r.row.name,
                self.cell(r, "connect", cps),
                self.cell(r, "connect", |f| f.p99_us),
                self.ratio(r, "direct", "connect", cps),
                self.ratio(r, HAPROXY_RR, "connect", cps),
                self.cell(r, "connect", |f| f.cpu_per_kconn),
                self.cell(r, "connect", |f| f.syscalls_per_req),
                self.cell(r, "connect", |f| f.vol_cs_per_req),
                self.cell(r, "connect", |f| f.invol_cs_per_req),
                self.cell(r, "idle", |f| f.idle_open),
                self.cell(r, "idle", |f| f.rss_per_idle_conn),
                self.cell(r, "idle", |f| f.threads),
            );
        }
        s.push('\n');
    }

    fn iowq_section(&self, s: &mut String) {
        let Some(w) = &self.iowq else {
            return;
        };
        let _ = writeln!(s, "## io-wq bound (uring-splice, {})\n", w.name);
        match &w.failure {
            Some(f) => {
                let _ = writeln!(s, "FAILED: {f}\n");
            }
            None => {
                let f = &w.figures;
                let o = |v: Option<f64>| v.map_or("n/a".into(), num);
                let _ = writeln!(
                    s,
                    "Peak `iou-wrk` threads: **{}** (threads in total: {}), {} Gbit/s, CPU {} s/GB.\n",
                    o(f.peak_iowq),
                    o(f.threads),
                    o(f.gbps),
                    o(f.cpu_per_gb)
                );
            }
        }
    }

    fn problems(&self, s: &mut String) {
        let mut lines = Vec::new();
        for r in &self.rows {
            if let Some(why) = &r.skipped {
                lines.push(format!("- `{}` skipped: {why}", r.row.name));
            }
            for w in &r.workloads {
                match &w.failure {
                    Some(f) if f.starts_with("not run:") => lines.push(format!(
                        "- `{}` {}: not run (the proxy did not start, above)",
                        r.row.name, w.name
                    )),
                    Some(f) => lines.push(format!("- `{}` {} FAILED: {f}", r.row.name, w.name)),
                    None => {}
                }
            }
        }
        if let Some(w) = &self.iowq {
            if let Some(f) = &w.failure {
                lines.push(format!("- io-wq check FAILED: {f}"));
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(s, "## Problems\n\n{}\n", lines.join("\n"));
        }
    }

    /// Every failure, for the exit status.
    pub fn failures(&self) -> usize {
        let rows: usize = self
            .rows
            .iter()
            .flat_map(|r| &r.workloads)
            .filter(|w| w.failure.is_some())
            .count();
        rows + usize::from(self.iowq.as_ref().is_some_and(|w| w.failure.is_some()))
    }
}
