//! The tables of the fixed-rate workload (`rr-64-paced`) and of the clients nobody here
//! wrote (iperf3 over TCP, wrk), each with the machine CPU the row adds over `direct` and
//! that overhead against the best peer's.

use std::fmt::Write as _;

use super::iperf3;
use super::report::{Get, Results};
use super::runner::RowResult;
use super::svg::num;
use super::workload::{PACED_MIN_SHARE, RR_PACED_RATE};
use super::wrk;

/// The fixed-rate request/response workload's name.
pub const RR_PACED: &str = "rr-64-paced";
/// The iperf3 TCP workloads' names, in table order.
const IPERF3_TCP: [&str; 3] = ["iperf3-1", "iperf3-4", "iperf3-1-paced"];
/// The wrk workloads' names, in table order.
const WRK: [&str; 2] = ["wrk-keepalive", "wrk-close"];

impl Results {
    /// `row`'s machine overhead over `direct` divided by the best peer's (the lowest), for
    /// `workload`; n/a for `direct`, when either is missing or the best is not positive.
    fn over_best_peer(&self, row: &RowResult, workload: &str) -> String {
        let ours = self.overhead(row.row.name, workload);
        match (row.row.name, ours, self.best_peer_overhead(workload)) {
            ("direct", ..) => "n/a".into(),
            (_, Some(v), Some((_, best))) if best > 0.0 => format!("{:.2}×", v / best),
            _ => "n/a".into(),
        }
    }

    /// Four cells of `workload`: machine CPU per unit, its overhead over direct, that
    /// overhead against the best peer's, softirq %.
    fn overhead_cells(&self, row: &RowResult, workload: &str) -> [String; 4] {
        let [m, o, q] = self.machine_cells(row, workload);
        [m, o, self.over_best_peer(row, workload), q]
    }

    /// Those of `names` that ran on some row, in order.
    fn ran_of(&self, names: &[&'static str]) -> Vec<&'static str> {
        names
            .iter()
            .copied()
            .filter(|w| self.has_named(w))
            .collect()
    }

    /// `rr-64-paced`: every row at the same request rate, so CPU per request compares.
    pub(super) fn rr_paced_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## Fixed request rate ({RR_PACED}: {RR_PACED_RATE} req/s in total over 64 \
             connections, 64-byte messages against echo)\n\n\
             loadgen paces its requests to the rate (a run that reaches less than {:.0}% of it \
             FAILs); machine CPU µs/req is the figure that compares rows at this equal load. \
             ×best peer: the row's overhead over direct divided by the lowest a peer adds.\n",
            PACED_MIN_SHARE * 100.0
        );
        let _ = writeln!(
            s,
            "| row | req/s | p99 µs | CPU s/M req | syscalls/req | vol. cs/req \
             | machine CPU µs/req | over direct | ×best peer | softirq % |"
        );
        let _ = writeln!(s, "|{}", "---|".repeat(10));
        let w = RR_PACED;
        for r in self.ran() {
            let [m, o, b, q] = self.overhead_cells(r, w);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {m} | {o} | {b} | {q} |",
                r.row.name,
                self.cell(r, w, |f| f.rps),
                self.cell(r, w, |f| f.p99_us),
                self.cell(r, w, |f| f.cpu_per_mreq),
                self.cell(r, w, |f| f.syscalls_per_req),
                self.cell(r, w, |f| f.vol_cs_per_req),
            );
        }
        s.push('\n');
    }

    /// The iperf3 TCP and wrk tables, for those of their workloads that ran.
    pub(super) fn client_tables(&self, s: &mut String) {
        if self.has_any(&IPERF3_TCP) {
            self.iperf3_tcp_table(s);
        }
        if self.has_any(&WRK) {
            self.wrk_table(s);
        }
    }

    fn iperf3_tcp_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## iperf3 over TCP (uploads into an iperf3 server)\n\n\
             `iperf3 -c -P 1` and `-P 4` (a client nobody here wrote) upload as fast as they go \
             for whole seconds; iperf3-1-paced offers one stream at `-b {rate}` on every row \
             (a run that reaches less than {share:.0}% of it FAILs), so that machine CPU/GB \
             compares rows at equal load. GB/s: what the server received; retransmits: the \
             client's. ×best peer: the row's machine overhead over direct divided by the \
             lowest a peer adds.\n",
            rate = iperf3::TCP_PACED_RATE,
            share = PACED_MIN_SHARE * 100.0
        );
        let ran = self.ran_of(&IPERF3_TCP);
        let mut head = String::from("| row |");
        for &w in &ran {
            let _ = write!(
                head,
                " {w} GB/s | ×direct | retransmits | machine CPU s/GB | over direct \
                 | ×best peer |"
            );
        }
        let _ = writeln!(s, "{head}\n|{}", "---|".repeat(1 + 6 * ran.len()));
        let gbps: Get = |f| f.gbps;
        for r in self.ran() {
            let mut line = format!("| {} |", r.row.name);
            for &w in &ran {
                let gb_per_sec = r
                    .figures(w)
                    .and_then(gbps)
                    .map_or_else(|| self.cell(r, w, gbps), |g| num(g / 8.0));
                let [m, o, b, _] = self.overhead_cells(r, w);
                let cells = [
                    gb_per_sec,
                    self.ratio(r, "direct", w, gbps),
                    self.cell(r, w, |f| f.retransmits),
                    m,
                    o,
                    b,
                ];
                for c in cells {
                    let _ = write!(line, " {c} |");
                }
            }
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }

    fn wrk_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## HTTP with wrk (into an nginx HTTP backend)\n\n\
             `wrk -c{conns} --latency` (a client nobody here wrote) against an nginx the \
             harness starts on the load CPU (`worker_processes 1`, no access log, `return 200` \
             of {len} bytes): wrk-keepalive keeps its connections (nginx allows any number of \
             requests on one), wrk-close sends `Connection: close`, a new connection per \
             request. A run FAILs on a non-2xx answer or more than 1% socket errors. Machine \
             CPU µs/req: the whole machine's busy time per request (wrk and nginx included); \
             over direct: what the row adds; ×best peer: that against the lowest a peer adds.\n",
            conns = wrk::CONNECTIONS,
            len = wrk::BODY.len(),
        );
        let ran = self.ran_of(&WRK);
        let mut head = String::from("| row |");
        for &w in &ran {
            let _ = write!(
                head,
                " {w} req/s | ×direct | p99 µs | CPU s/M req | machine CPU µs/req \
                 | over direct | ×best peer |"
            );
        }
        let _ = writeln!(s, "{head}\n|{}", "---|".repeat(1 + 7 * ran.len()));
        let rps: Get = |f| f.rps;
        for r in self.ran() {
            let mut line = format!("| {} |", r.row.name);
            for &w in &ran {
                let [m, o, b, _] = self.overhead_cells(r, w);
                let cells = [
                    self.cell(r, w, rps),
                    self.ratio(r, "direct", w, rps),
                    self.cell(r, w, |f| f.p99_us),
                    self.cell(r, w, |f| f.cpu_per_mreq),
                    m,
                    o,
                    b,
                ];
                for c in cells {
                    let _ = write!(line, " {c} |");
                }
            }
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }
}
