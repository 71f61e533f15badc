//! The targets: the issue's, for ringlb's default row against the best peer, and the older
//! ones for every uring row; each met, missed, or not measured (its workload did not run).

use std::fmt::Write as _;

use super::report::{EPOLL, Get, HAPROXY_RR, Results};
use super::svg::num;

/// The peers ringlb is measured against; the best of them in the same run sets each target.
pub const PEERS: [&str; 3] = ["haproxy", "haproxy-splice", "nginx"];
/// ringlb's default row: the io_uring engine in auto mode (what `ringlb run` does unless
/// told otherwise), the row the issue's targets are for.
pub const RINGLB_DEFAULT: &str = "uring-auto";

/// One row's figure for a target: measured, failed, or not run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Figure {
    /// Measured.
    Value(f64),
    /// The row ran the workload and failed it (did not forward, crashed, hung).
    Failed,
    /// The workload (or a row the figure needs, such as `direct`) did not run.
    NotRun,
}

impl Figure {
    fn value(self) -> Option<f64> {
        match self {
            Figure::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// How a target came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Met, with the value that met it.
    Met(String),
    /// Missed, with the value and by how much (or that the row failed the workload).
    Missed(String),
    /// Not measured, and why (a workload that did not run).
    NotMeasured(String),
}

/// What one of the issue's targets compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The machine CPU per unit ringlb adds over `direct` is at most `factor` × the lowest a
    /// peer adds.
    Overhead {
        /// The factor.
        factor: f64,
    },
    /// Requests per second at least `factor` × the highest a peer reaches, at a machine CPU
    /// per request no higher than the lowest a peer needs.
    RateAtCpu {
        /// The factor.
        factor: f64,
    },
}

/// One of the issue's targets: a goal on a workload.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// What the table says.
    pub what: &'static str,
    /// The workload it is measured on.
    pub workload: &'static str,
    /// What is compared.
    pub goal: Goal,
}

/// The issue's targets, for [`RINGLB_DEFAULT`] against the best of [`PEERS`]. "Four
/// streams" is `stream-4`.
pub const TARGETS: [Target; 5] = [
    Target {
        what: "machine CPU/GB over direct, 1 stream ≤ 0.8× best peer",
        workload: "stream-1",
        goal: Goal::Overhead { factor: 0.8 },
    },
    Target {
        what: "machine CPU/GB over direct, 4 streams ≤ 0.8× best peer",
        workload: "stream-4",
        goal: Goal::Overhead { factor: 0.8 },
    },
    Target {
        what: "machine CPU/request over direct, keep-alive rr@64 ≤ 0.8× best peer",
        workload: "rr-64",
        goal: Goal::Overhead { factor: 0.8 },
    },
    Target {
        what: "machine CPU/connection over direct, new connections ≤ 0.9× best peer",
        workload: "connect",
        goal: Goal::Overhead { factor: 0.9 },
    },
    Target {
        what: "wrk keep-alive req/s ≥ 1.1× best peer at ≤ its machine CPU/request",
        workload: "wrk-keepalive",
        goal: Goal::RateAtCpu { factor: 1.1 },
    },
];

/// The best of the peers' figures that were measured: the lowest, or (`higher`) the highest.
pub fn best_peer(peers: &[(&'static str, Figure)], higher: bool) -> Option<(&'static str, f64)> {
    peers
        .iter()
        .filter_map(|&(name, f)| Some((name, f.value()?)))
        .reduce(|a, b| {
            let better = if higher { b.1 > a.1 } else { b.1 < a.1 };
            if better { b } else { a }
        })
}

/// The issue's overhead goal: ringlb's overhead `ours` against the peers' (lowest is best).
pub fn judge_overhead(ours: Figure, peers: &[(&'static str, Figure)], factor: f64) -> Outcome {
    let v = match ours {
        Figure::Value(v) => v,
        Figure::Failed => return Outcome::Missed(format!("{RINGLB_DEFAULT} failed it")),
        Figure::NotRun => return Outcome::NotMeasured(format!("{RINGLB_DEFAULT} did not run")),
    };
    let Some((peer, best)) = best_peer(peers, false) else {
        return Outcome::NotMeasured("no peer measured".into());
    };
    if best <= 0.0 {
        return Outcome::NotMeasured(format!("{peer} added nothing measurable over direct"));
    }
    let shown = format!("{}× {peer} ({} vs {})", num(v / best), num(v), num(best));
    if v <= factor * best {
        Outcome::Met(shown)
    } else {
        Outcome::Missed(shown)
    }
}

/// The issue's rate goal: ringlb's (req/s, machine CPU per request) against the peers' (the
/// highest req/s and the lowest CPU per request are the best).
pub fn judge_rate_at_cpu(
    ours: (Figure, Figure),
    peers: &[(&'static str, Figure, Figure)],
    factor: f64,
) -> Outcome {
    let (rate, cpu) = match ours {
        (Figure::Value(r), Figure::Value(c)) => (r, c),
        (Figure::Failed, _) | (_, Figure::Failed) => {
            return Outcome::Missed(format!("{RINGLB_DEFAULT} failed it"));
        }
        _ => return Outcome::NotMeasured(format!("{RINGLB_DEFAULT} did not run")),
    };
    let rates: Vec<_> = peers.iter().map(|&(n, r, _)| (n, r)).collect();
    let cpus: Vec<_> = peers.iter().map(|&(n, _, c)| (n, c)).collect();
    let (Some((rp, best_rate)), Some((cp, best_cpu))) =
        (best_peer(&rates, true), best_peer(&cpus, false))
    else {
        return Outcome::NotMeasured("no peer measured".into());
    };
    let shown = format!(
        "{}× {rp} req/s; {} vs {cp}'s {} µs/req",
        num(rate / best_rate.max(1e-9)),
        num(cpu),
        num(best_cpu)
    );
    if rate >= factor * best_rate && cpu <= best_cpu {
        Outcome::Met(shown)
    } else {
        Outcome::Missed(shown)
    }
}

impl Results {
    /// `row`'s figure `get` of `workload` as a [`Figure`].
    pub(super) fn figure(&self, row: &str, workload: &str, get: Get) -> Figure {
        let Some(r) = self.row(row) else {
            return Figure::NotRun;
        };
        if r.failure(workload).is_some() {
            return Figure::Failed;
        }
        r.figures(workload)
            .and_then(get)
            .map_or(Figure::NotRun, Figure::Value)
    }

    /// `row`'s machine overhead over `direct` for `workload` as a [`Figure`].
    pub(super) fn overhead_figure(&self, row: &str, workload: &str) -> Figure {
        match self.figure(row, workload, |f| f.machine_cpu) {
            Figure::Value(_) => self
                .overhead(row, workload)
                .map_or(Figure::NotRun, Figure::Value),
            other => other,
        }
    }

    /// The peers' machine overheads over `direct` for `workload`.
    fn peer_overheads(&self, workload: &str) -> Vec<(&'static str, Figure)> {
        PEERS
            .iter()
            .map(|&p| (p, self.overhead_figure(p, workload)))
            .collect()
    }

    /// The lowest machine overhead a peer adds for `workload`, as (peer, overhead).
    pub(super) fn best_peer_overhead(&self, workload: &str) -> Option<(&'static str, f64)> {
        best_peer(&self.peer_overheads(workload), false)
    }

    /// How the issue's `target` came out.
    fn judge(&self, t: &Target) -> Outcome {
        let w = t.workload;
        if !self.has_named(w) {
            return Outcome::NotMeasured(format!("{w} did not run"));
        }
        if let Some(o) = self.interleaved.then(|| self.judge_paired(t)).flatten() {
            return o;
        }
        match t.goal {
            Goal::Overhead { factor } => judge_overhead(
                self.overhead_figure(RINGLB_DEFAULT, w),
                &self.peer_overheads(w),
                factor,
            ),
            Goal::RateAtCpu { factor } => {
                let rps: Get = |f| f.rps;
                let cpu: Get = |f| f.machine_cpu;
                let peers: Vec<_> = PEERS
                    .iter()
                    .map(|&p| (p, self.figure(p, w, rps), self.figure(p, w, cpu)))
                    .collect();
                let ours = (
                    self.figure(RINGLB_DEFAULT, w, rps),
                    self.figure(RINGLB_DEFAULT, w, cpu),
                );
                judge_rate_at_cpu(ours, &peers, factor)
            }
        }
    }

    /// The targets section: the issue's for [`RINGLB_DEFAULT`], then the older ones for each
    /// uring row.
    pub(super) fn targets(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## Targets\n\nThe issue's targets are for `{RINGLB_DEFAULT}` against the best peer \
             of {} in this run (the lowest machine CPU added over direct; for wrk the highest \
             req/s and the lowest machine CPU per request). A target whose workload did not run \
             is not measured.\n",
            PEERS.map(|p| format!("`{p}`")).join(", ")
        );
        if self.interleaved {
            let _ = writeln!(
                s,
                "The rows ran in turns (`--interleave`), so each target is judged round by \
                 round: ringlb's figure over the best peer's of the same round, and the median \
                 of those ratios.\n"
            );
        }
        let _ = writeln!(s, "| target | row | value | result |");
        let _ = writeln!(s, "|---|---|---|---|");
        for t in &TARGETS {
            let (value, result) = match self.judge(t) {
                Outcome::Met(v) => (v, "met".to_string()),
                Outcome::Missed(v) => (v, "missed".to_string()),
                Outcome::NotMeasured(why) => ("n/a".to_string(), format!("not measured: {why}")),
            };
            let _ = writeln!(s, "| {} | {RINGLB_DEFAULT} | {value} | {result} |", t.what);
        }
        self.uring_targets(s);
        s.push('\n');
    }

    /// The older targets, one line each per uring row.
    fn uring_targets(&self, s: &mut String) {
        let gbps: Get = |f| f.gbps;
        let rps: Get = |f| f.rps;
        for r in self.ran().filter(|r| r.row.name.starts_with("uring")) {
            let n = r.row.name;
            let rel = |w: &str, reference: &str, get: Get| {
                let v = self.value(n, w, get)?;
                let d = self.value(reference, w, get)?;
                (d > 0.0).then(|| v / d)
            };
            let line = |what, workload, value, goal, higher, unit| Older {
                what,
                workload,
                value,
                goal,
                higher,
                unit,
            };
            let rows = [
                line(
                    "1 stream ≥ 0.85× direct",
                    "stream-1",
                    rel("stream-1", "direct", gbps),
                    0.85,
                    true,
                    "×",
                ),
                line(
                    "rr@64 ≥ 1.25× HAProxy",
                    "rr-64",
                    rel("rr-64", HAPROXY_RR, rps),
                    1.25,
                    true,
                    "×",
                ),
                line(
                    "rr@64 ≥ 1.5× epoll",
                    "rr-64",
                    rel("rr-64", EPOLL, rps),
                    1.5,
                    true,
                    "×",
                ),
                line(
                    "syscalls/rr request ≤ 0.3",
                    "rr-64",
                    self.value(n, "rr-64", |f| f.syscalls_per_req),
                    0.3,
                    false,
                    "",
                ),
                line(
                    "memory/idle conn ≤ 1 KiB",
                    "idle",
                    self.value(n, "idle", |f| f.rss_per_idle_conn),
                    1024.0,
                    false,
                    " B",
                ),
            ];
            for Older {
                what,
                workload: w,
                value,
                goal,
                higher,
                unit,
            } in rows
            {
                let (val, verdict) = match value {
                    Some(v) => (format!("{}{unit}", num(v)), verdict(v, goal, higher)),
                    None if r.failure(w).is_some() => ("FAIL".into(), "missed: failed".into()),
                    None => ("n/a".into(), "not measured".into()),
                };
                let _ = writeln!(s, "| {what} | {n} | {val} | {verdict} |");
            }
        }
    }
}

/// One of the older targets for a uring row, measured.
struct Older {
    /// What the table says.
    what: &'static str,
    /// The workload it is measured on.
    workload: &'static str,
    /// The row's value, if measured.
    value: Option<f64>,
    /// The goal.
    goal: f64,
    /// Whether higher values are better.
    higher: bool,
    /// The value's unit in the table.
    unit: &'static str,
}

/// "met" or "missed by N%".
fn verdict(v: f64, goal: f64, higher_is_better: bool) -> String {
    let met = if higher_is_better {
        v >= goal
    } else {
        v <= goal
    };
    if met {
        "met".into()
    } else if higher_is_better {
        format!("missed: {:.0}% below", (1.0 - v / goal) * 100.0)
    } else {
        format!("missed: {:.0}% above", (v / goal - 1.0) * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Figure::{Failed, NotRun, Value};

    #[test]
    fn verdicts() {
        assert_eq!(verdict(0.9, 0.85, true), "met");
        assert_eq!(verdict(0.425, 0.85, true), "missed: 50% below");
        assert_eq!(verdict(0.6, 0.3, false), "missed: 100% above");
        assert_eq!(verdict(0.2, 0.3, false), "met");
    }

    #[test]
    fn the_best_peer_is_the_best_measured_one() {
        let peers = [
            ("haproxy", Value(3.0)),
            ("haproxy-splice", Value(2.0)),
            ("nginx", Failed),
        ];
        assert_eq!(best_peer(&peers, false), Some(("haproxy-splice", 2.0)));
        assert_eq!(best_peer(&peers, true), Some(("haproxy", 3.0)));
        assert_eq!(
            best_peer(&[("haproxy", NotRun), ("nginx", Failed)], false),
            None
        );
    }

    #[test]
    fn overhead_against_the_best_peer() {
        let peers = [
            ("haproxy", Value(2.0)),
            ("nginx", Value(1.0)),
            ("haproxy-splice", NotRun),
        ];
        // 0.8 ≤ 0.8 × 1.0 (nginx, the best): met; 0.9 is not, though it beats HAProxy.
        assert!(
            matches!(judge_overhead(Value(0.8), &peers, 0.8), Outcome::Met(v) if v.contains("nginx"))
        );
        assert!(matches!(
            judge_overhead(Value(0.9), &peers, 0.8),
            Outcome::Missed(_)
        ));
        assert!(matches!(
            judge_overhead(Value(0.9), &peers, 0.9),
            Outcome::Met(_)
        ));
        // Not run is not measured; failed is missed; no peer (or none above noise): not measured.
        assert!(matches!(
            judge_overhead(NotRun, &peers, 0.8),
            Outcome::NotMeasured(_)
        ));
        assert!(matches!(
            judge_overhead(Failed, &peers, 0.8),
            Outcome::Missed(_)
        ));
        let none = [("haproxy", NotRun), ("nginx", Failed)];
        assert!(matches!(
            judge_overhead(Value(0.1), &none, 0.8),
            Outcome::NotMeasured(_)
        ));
        let noise = [("haproxy", Value(-0.1))];
        assert!(matches!(
            judge_overhead(Value(0.1), &noise, 0.8),
            Outcome::NotMeasured(_)
        ));
    }

    #[test]
    fn rate_at_equal_or_lower_cpu() {
        let peers = [
            ("haproxy", Value(100.0), Value(20.0)),
            ("nginx", Value(90.0), Value(15.0)),
            ("haproxy-splice", NotRun, NotRun),
        ];
        // 1.1× the fastest peer (haproxy) at no more CPU than the thriftiest (nginx).
        assert!(matches!(
            judge_rate_at_cpu((Value(111.0), Value(15.0)), &peers, 1.1),
            Outcome::Met(_)
        ));
        assert!(matches!(
            judge_rate_at_cpu((Value(109.0), Value(10.0)), &peers, 1.1),
            Outcome::Missed(_)
        ));
        assert!(matches!(
            judge_rate_at_cpu((Value(200.0), Value(16.0)), &peers, 1.1),
            Outcome::Missed(_)
        ));
        assert!(matches!(
            judge_rate_at_cpu((NotRun, NotRun), &peers, 1.1),
            Outcome::NotMeasured(_)
        ));
        assert!(matches!(
            judge_rate_at_cpu((Failed, NotRun), &peers, 1.1),
            Outcome::Missed(_)
        ));
        let none = [("nginx", NotRun, NotRun)];
        assert!(matches!(
            judge_rate_at_cpu((Value(1.0), Value(1.0)), &none, 1.1),
            Outcome::NotMeasured(_)
        ));
    }

    #[test]
    fn the_issue_targets_are_for_the_default_row() {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.workload).collect();
        assert_eq!(
            names,
            ["stream-1", "stream-4", "rr-64", "connect", "wrk-keepalive"]
        );
        assert!(
            crate::e2e::proxy::ROWS
                .iter()
                .any(|r| r.name == RINGLB_DEFAULT)
        );
        for p in PEERS {
            assert!(crate::e2e::proxy::ROWS.iter().any(|r| r.name == p));
        }
    }
}
