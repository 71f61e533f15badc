//! From runs to figures: per-run values and their medians (the check that a row really
//! forwarded what the load generator sent is in [`super::verify`]).

use serde::Serialize;

use super::measure::{BackendStats, RunRecord};
use super::workload::Workload;

/// The medians (over runs) of everything reported for one row and workload; `None` where a
/// figure does not apply or could not be measured.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Figures {
    /// Runs the medians are taken over.
    pub runs: usize,
    /// Throughput, Gbit/s.
    pub gbps: Option<f64>,
    /// Requests per second.
    pub rps: Option<f64>,
    /// Connections per second.
    pub cps: Option<f64>,
    /// 99th-percentile request latency, µs.
    pub p99_us: Option<f64>,
    /// iperf3 over TCP: segments the client retransmitted per run.
    pub retransmits: Option<f64>,
    /// Proxy CPU seconds per GB forwarded (stream).
    pub cpu_per_gb: Option<f64>,
    /// Proxy CPU seconds per million requests (rr).
    pub cpu_per_mreq: Option<f64>,
    /// Proxy CPU seconds per 1,000 connections (connect).
    pub cpu_per_kconn: Option<f64>,
    /// The whole machine's busy CPU seconds (all CPUs, `/proc/stat`: the window's length less
    /// idle and iowait, see [`super::procfs::MachineCost`]) per unit of the workload, in the unit of the proxy's CPU figure:
    /// per GB (stream), per million requests (rr, udp-rr), per 1,000 connections (connect),
    /// per million datagrams delivered (udp-stream, iperf3-udp).
    pub machine_cpu: Option<f64>,
    /// softirq's share of the whole machine's busy CPU time, %.
    pub softirq_pct: Option<f64>,
    /// Proxy system calls per MB forwarded (stream).
    pub syscalls_per_mb: Option<f64>,
    /// Proxy system calls per request (rr) or per connection (connect).
    pub syscalls_per_req: Option<f64>,
    /// Voluntary context switches per request (rr) or connection (connect).
    pub vol_cs_per_req: Option<f64>,
    /// Involuntary context switches per request (rr) or connection (connect).
    pub invol_cs_per_req: Option<f64>,
    /// Proxy threads (peak during a run).
    pub threads: Option<f64>,
    /// Most io-wq (`iou-wrk`) threads seen in any run.
    pub peak_iowq: Option<f64>,
    /// RSS growth per idle connection, bytes.
    pub rss_per_idle_conn: Option<f64>,
    /// Idle connections actually established (median of the runs' peaks).
    pub idle_open: Option<f64>,
    /// epoll engine: share of reads that returned EAGAIN.
    pub eagain_share: Option<f64>,
    /// Median request latency, µs (UDP rr).
    pub p50_us: Option<f64>,
    /// UDP: datagrams lost, % of those sent (rr: requests unanswered within the timeout;
    /// stream: sent but never counted by the backend).
    pub loss_pct: Option<f64>,
    /// udp-rr: requests counted lost per run.
    pub lost: Option<f64>,
    /// udp-stream, iperf3-udp: datagrams sent per second.
    pub pps_sent: Option<f64>,
    /// udp-stream, iperf3-udp: datagrams the backend received per second.
    pub pps_recv: Option<f64>,
    /// udp-stream, iperf3-udp: payload the backend received, Gbit/s.
    pub gbps_recv: Option<f64>,
    /// udp-stream, iperf3-udp: proxy CPU seconds per million datagrams delivered.
    pub cpu_per_mpkt: Option<f64>,
    /// udp-stream, iperf3-udp: proxy system calls per datagram delivered.
    pub syscalls_per_pkt: Option<f64>,
    /// UDP: datagrams dropped at the target's socket (proxy listener; backend for direct),
    /// % of those sent.
    pub listener_drop_pct: Option<f64>,
}

/// The median of the values present; `None` when there are none.
pub fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0 && num.is_finite()).then(|| num / den)
}

/// Computes the figures of `workload` from its runs; `eagain` is the epoll engine's
/// (reads, reads that returned EAGAIN), when it logged them; `backend` the backend's counters
/// over all runs (idle: the connections that reached it).
pub fn compute(
    workload: Workload,
    runs: &[RunRecord],
    eagain: Option<(u64, u64)>,
    backend: Option<&BackendStats>,
) -> Figures {
    let m = |f: &dyn Fn(&RunRecord) -> Option<f64>| median(runs.iter().map(f));
    let cost = |r: &RunRecord| r.proxy.clone();
    // Syscalls per second during perf's window.
    let sys_rate = |r: &RunRecord| {
        let c = cost(r)?;
        ratio(c.syscalls? as f64, c.syscall_window_secs)
    };
    let mut f = Figures {
        runs: runs.len(),
        threads: m(&|r| cost(r).map(|c| c.peak_threads as f64)),
        peak_iowq: runs
            .iter()
            .filter_map(|r| cost(r).map(|c| c.peak_iowq as f64))
            .reduce(f64::max),
        eagain_share: eagain.and_then(|(reads, again)| ratio(again as f64, reads as f64)),
        ..Figures::default()
    };
    if workload.is_udp() {
        f.listener_drop_pct = m(&|r| {
            ratio(
                r.listener_drops? as f64 * 100.0,
                r.load.datagrams_sent as f64,
            )
        });
    }
    match workload {
        Workload::Stream(_) | Workload::Iperf3Tcp { .. } => {
            let bytes = |r: &RunRecord| stream_bytes(workload, r);
            f.gbps = m(&|r| Some(r.load.gbit_per_sec));
            f.cpu_per_gb = m(&|r| ratio(cost(r)?.cpu_secs, bytes(r)? / 1e9));
            f.syscalls_per_mb = m(&|r| {
                let mb_per_sec = bytes(r)? / 1e6 / r.load.elapsed_secs.max(1e-9);
                ratio(sys_rate(r)?, mb_per_sec)
            });
            if let Workload::Iperf3Tcp { .. } = workload {
                f.retransmits = m(&|r| Some(r.load.retransmits as f64));
            }
        }
        Workload::Rr(_) | Workload::RrPaced(_) | Workload::Wrk { .. } | Workload::Connect => {
            let per = |r: &RunRecord| {
                if workload == Workload::Connect {
                    r.load.connections_opened as f64
                } else {
                    r.load.requests as f64
                }
            };
            let rate = |r: &RunRecord| {
                if workload == Workload::Connect {
                    r.load.connections_per_sec
                } else {
                    r.load.requests_per_sec
                }
            };
            f.rps = m(&|r| Some(r.load.requests_per_sec));
            f.p99_us = m(&|r| r.load.latency_us.map(|l| l.p99_us));
            if workload == Workload::Connect {
                f.cps = m(&|r| Some(r.load.connections_per_sec));
                f.cpu_per_kconn = m(&|r| ratio(cost(r)?.cpu_secs, per(r) / 1e3));
            } else {
                f.cpu_per_mreq = m(&|r| ratio(cost(r)?.cpu_secs, per(r) / 1e6));
            }
            f.syscalls_per_req = m(&|r| ratio(sys_rate(r)?, rate(r)));
            f.vol_cs_per_req = m(&|r| ratio(cost(r)?.voluntary_cs as f64, per(r)));
            f.invol_cs_per_req = m(&|r| ratio(cost(r)?.involuntary_cs as f64, per(r)));
        }
        Workload::UdpRr(_) => {
            let per = |r: &RunRecord| r.load.requests as f64;
            f.rps = m(&|r| Some(r.load.requests_per_sec));
            f.p50_us = m(&|r| r.load.latency_us.map(|l| l.p50_us));
            f.p99_us = m(&|r| r.load.latency_us.map(|l| l.p99_us));
            f.cpu_per_mreq = m(&|r| ratio(cost(r)?.cpu_secs, per(r) / 1e6));
            f.syscalls_per_req = m(&|r| ratio(sys_rate(r)?, r.load.requests_per_sec));
            f.vol_cs_per_req = m(&|r| ratio(cost(r)?.voluntary_cs as f64, per(r)));
            f.invol_cs_per_req = m(&|r| ratio(cost(r)?.involuntary_cs as f64, per(r)));
            f.lost = m(&|r| Some(r.load.lost as f64));
            f.loss_pct = m(&|r| ratio(r.load.lost as f64 * 100.0, r.load.datagrams_sent as f64));
        }
        Workload::UdpStream(_) | Workload::Iperf3Udp => {
            let secs = |r: &RunRecord| r.load.elapsed_secs.max(1e-9);
            let got = |r: &RunRecord| r.backend.map(|b| b.datagrams_in as f64);
            let pps = |r: &RunRecord| Some(got(r)? / secs(r));
            f.gbps = m(&|r| Some(r.load.gbit_per_sec));
            f.pps_sent = m(&|r| Some(r.load.datagrams_per_sec));
            f.pps_recv = m(&pps);
            f.gbps_recv = m(&|r| Some(r.backend?.bytes_in as f64 * 8.0 / secs(r) / 1e9));
            f.loss_pct = m(&|r| {
                let sent = r.load.datagrams_sent as f64;
                ratio((sent - got(r)?) * 100.0, sent)
            });
            f.cpu_per_mpkt = m(&|r| ratio(cost(r)?.cpu_secs, got(r)? / 1e6));
            f.syscalls_per_pkt = m(&|r| ratio(sys_rate(r)?, pps(r)?));
            f.vol_cs_per_req = m(&|r| ratio(cost(r)?.voluntary_cs as f64, got(r)?));
            f.invol_cs_per_req = m(&|r| ratio(cost(r)?.involuntary_cs as f64, got(r)?));
        }
        Workload::Idle => {
            // Connections that went through: loadgen's, or fewer if the backend saw fewer
            // (the proxy had not connected them all by the end of the hold).
            let per_run = backend.map(|b| b.connections / runs.len().max(1) as u64);
            let held =
                |r: &RunRecord| per_run.map_or(r.load.open_peak, |b| b.min(r.load.open_peak));
            f.idle_open = m(&|r| Some(held(r) as f64));
            f.rss_per_idle_conn = m(&|r| {
                let c = cost(r)?;
                let grown = c.peak_rss_kib.saturating_sub(c.before.rss_kib) as f64 * 1024.0;
                ratio(grown, held(r) as f64)
            });
        }
    }
    f.machine_cpu = m(&|r| machine_per_unit(workload, r));
    f.softirq_pct = m(&|r| {
        let c = r.machine.as_ref()?;
        ratio(c.softirq_secs * 100.0, c.busy_secs)
    });
    f
}

/// Run `r`'s units of `workload`, as the proxy's CPU figure counts them: GB (stream),
/// millions of requests (rr, wrk, udp-rr), thousands of connections (connect), millions of
/// datagrams delivered (udp-stream, iperf3-udp); idle has none (nothing moves).
pub fn units(workload: Workload, r: &RunRecord) -> Option<f64> {
    match workload {
        Workload::Stream(_) | Workload::Iperf3Tcp { .. } => Some(stream_bytes(workload, r)? / 1e9),
        Workload::Rr(_) | Workload::RrPaced(_) | Workload::Wrk { .. } | Workload::UdpRr(_) => {
            Some(r.load.requests as f64 / 1e6)
        }
        Workload::Connect => Some(r.load.connections_opened as f64 / 1e3),
        Workload::UdpStream(_) | Workload::Iperf3Udp => Some(r.backend?.datagrams_in as f64 / 1e6),
        Workload::Idle => None,
    }
}

/// Run `r`'s whole-machine busy CPU seconds per unit of `workload` ([`units`]).
pub fn machine_per_unit(workload: Workload, r: &RunRecord) -> Option<f64> {
    ratio(r.machine.as_ref()?.busy_secs, units(workload, r)?)
}

/// The bytes a stream run moved: what the iperf3 server received, or what loadgen sent and
/// received.
fn stream_bytes(workload: Workload, r: &RunRecord) -> Option<f64> {
    match workload {
        Workload::Iperf3Tcp { .. } => Some(r.backend?.bytes_in as f64),
        _ => Some((r.load.bytes_sent + r.load.bytes_received) as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::iperf3;
    use crate::e2e::measure::{LoadReport, ProxyCost};
    use crate::e2e::procfs::MachineCost;
    use crate::e2e::verify::{verify, verify_udp};
    use crate::e2e::workload::UDP_RR_SIZE;

    fn run(sent: u64, cpu: f64) -> RunRecord {
        RunRecord {
            load: LoadReport {
                elapsed_secs: 1.0,
                bytes_sent: sent,
                gbit_per_sec: sent as f64 * 8.0 / 1e9,
                ..LoadReport::default()
            },
            proxy: Some(ProxyCost {
                cpu_secs: cpu,
                syscalls: Some(1000),
                syscall_window_secs: 0.5,
                ..ProxyCost::default()
            }),
            backend: None,
            listener_drops: None,
            machine: Some(MachineCost {
                busy_secs: 2.0 * cpu,
                ticked_busy_secs: 2.0 * cpu,
                softirq_secs: cpu / 2.0,
                per_cpu_busy_secs: Vec::new(),
            }),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median([Some(3.0), None, Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(median([Some(1.0), Some(2.0)]), Some(1.5));
        assert_eq!(median([None]), None);
    }

    #[test]
    fn stream_figures_and_verification() {
        let runs = vec![run(2_000_000_000, 1.0), run(1_000_000_000, 1.0)];
        let f = compute(Workload::Stream(1), &runs, None, None);
        assert_eq!(f.cpu_per_gb, Some(0.75));
        // 2 busy s over 2 and 1 GB; softirq a quarter of it.
        assert_eq!(f.machine_cpu, Some(1.5));
        assert_eq!(f.softirq_pct, Some(25.0));
        // 2000 syscalls/s over 2000 and 1000 MB/s: 1 and 2 per MB.
        assert_eq!(f.syscalls_per_mb, Some(1.5));
        let ok = BackendStats {
            bytes_in: 3_000_000_000,
            ..BackendStats::default()
        };
        assert!(verify(Workload::Stream(1), &runs, &ok).is_ok());
        let short = BackendStats {
            bytes_in: 1,
            ..BackendStats::default()
        };
        assert!(verify(Workload::Stream(1), &runs, &short).is_err());
        assert!(verify(Workload::Rr(64), &runs, &ok).is_err());
    }

    fn udp_rr_run(sent: u64, lost: u64, backend_in: u64) -> RunRecord {
        RunRecord {
            load: LoadReport {
                elapsed_secs: 1.0,
                requests: sent - lost,
                requests_per_sec: (sent - lost) as f64,
                datagrams_sent: sent,
                datagrams_received: sent - lost,
                lost,
                ..LoadReport::default()
            },
            proxy: None,
            listener_drops: Some(lost),
            backend: Some(BackendStats {
                datagrams_in: backend_in,
                bytes_in: backend_in * UDP_RR_SIZE,
                datagrams_out: backend_in,
                bytes_out: backend_in * UDP_RR_SIZE,
                ..BackendStats::default()
            }),
            machine: None,
        }
    }

    #[test]
    fn udp_verification() {
        let w = Workload::UdpRr(64);
        assert!(verify_udp(w, &[udp_rr_run(10_000, 0, 10_000)]).is_ok());
        // Lost between the proxy and the backend: fewer arrive, within the tolerance.
        assert!(verify_udp(w, &[udp_rr_run(10_000, 5, 9_995)]).is_ok());
        // Missing without being counted lost, more than sent, too many lost.
        assert!(verify_udp(w, &[udp_rr_run(10_000, 0, 9_999)]).is_err());
        assert!(verify_udp(w, &[udp_rr_run(10_000, 0, 10_001)]).is_err());
        assert!(verify_udp(w, &[udp_rr_run(10_000, 6_000, 4_000)]).is_err());
        let mut odd = udp_rr_run(100, 0, 100);
        if let Some(b) = odd.backend.as_mut() {
            b.bytes_in += 1;
        }
        assert!(verify_udp(w, &[odd]).is_err());
        let f = compute(w, &[udp_rr_run(10_000, 5, 9_995)], None, None);
        assert_eq!(f.loss_pct, Some(0.05));
        assert_eq!(f.listener_drop_pct, Some(0.05));
    }

    #[test]
    fn iperf3_figures_and_verification() {
        let run = |sent: u64, got: u64, size: u64| RunRecord {
            load: LoadReport {
                elapsed_secs: 2.0,
                datagrams_sent: sent,
                datagrams_per_sec: sent as f64 / 2.0,
                ..LoadReport::default()
            },
            proxy: Some(ProxyCost {
                cpu_secs: 0.5,
                syscalls: Some(10_000),
                syscall_window_secs: 1.0,
                ..ProxyCost::default()
            }),
            backend: Some(BackendStats {
                datagrams_in: got,
                bytes_in: got * size,
                ..BackendStats::default()
            }),
            listener_drops: Some(sent - got),
            machine: None,
        };
        let w = Workload::Iperf3Udp;
        assert!(verify_udp(w, &[run(100_000, 99_000, iperf3::SIZE)]).is_ok());
        assert!(verify_udp(w, &[run(100_000, 0, iperf3::SIZE)]).is_err());
        assert!(verify_udp(w, &[run(100_000, 99_000, 1_472)]).is_err());
        let f = compute(w, &[run(100_000, 99_000, iperf3::SIZE)], None, None);
        assert_eq!(f.pps_recv, Some(49_500.0));
        assert_eq!(f.loss_pct, Some(1.0));
        // 0.5 CPU s over 0.099 M datagrams; 10,000 syscalls/s over 49,500 datagrams/s.
        assert!(
            f.cpu_per_mpkt
                .is_some_and(|c| (c - 0.5 / 0.099).abs() < 1e-9)
        );
        assert!(
            f.syscalls_per_pkt
                .is_some_and(|x| (x - 10_000.0 / 49_500.0).abs() < 1e-9)
        );
    }
}
