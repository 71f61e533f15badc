//! From runs to figures: per-run values, their medians, and the check that a row really
//! forwarded what the load generator sent.

use serde::Serialize;

use super::iperf3;
use super::measure::{BackendStats, RunRecord};
use super::workload::{Client, UDP_RR_SIZE, UDP_STREAM_SIZE, Workload};

/// udp-rr: the share of requests that may go unanswered (counted lost by loadgen) before the
/// row fails. Loopback drops a datagram only when a socket's receive buffer is full: with
/// 1,024 flows each owing an answer, a proxy's listener socket (default 208 KiB buffer) holds
/// only a few hundred and drops the rest while the proxy is the bottleneck (measured: 8-12% on
/// every proxy row, exactly its listener's drop count in `/proc/net/udp`). That loss is a
/// figure (lost %, listener drops %), not a failure; losing more than half is a proxy that
/// does not forward.
pub const UDP_RR_MAX_LOSS: f64 = 0.5;

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
    /// Proxy CPU seconds per GB forwarded (stream).
    pub cpu_per_gb: Option<f64>,
    /// Proxy CPU seconds per million requests (rr).
    pub cpu_per_mreq: Option<f64>,
    /// Proxy CPU seconds per 1,000 connections (connect).
    pub cpu_per_kconn: Option<f64>,
    /// The whole machine's busy CPU seconds (all CPUs, `/proc/stat`: user, nice, system,
    /// irq, softirq, steal) per unit of the workload, in the unit of the proxy's CPU figure:
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
        Workload::Stream(_) => {
            let bytes = |r: &RunRecord| (r.load.bytes_sent + r.load.bytes_received) as f64;
            f.gbps = m(&|r| Some(r.load.gbit_per_sec));
            f.cpu_per_gb = m(&|r| ratio(cost(r)?.cpu_secs, bytes(r) / 1e9));
            f.syscalls_per_mb = m(&|r| {
                let mb_per_sec = bytes(r) / 1e6 / r.load.elapsed_secs.max(1e-9);
                ratio(sys_rate(r)?, mb_per_sec)
            });
        }
        Workload::Rr(_) | Workload::Connect => {
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
    // The workload's unit, as the proxy's CPU figure counts it (idle: none, nothing moves).
    let unit = |r: &RunRecord| -> Option<f64> {
        match workload {
            Workload::Stream(_) => Some((r.load.bytes_sent + r.load.bytes_received) as f64 / 1e9),
            Workload::Rr(_) | Workload::UdpRr(_) => Some(r.load.requests as f64 / 1e6),
            Workload::Connect => Some(r.load.connections_opened as f64 / 1e3),
            Workload::UdpStream(_) | Workload::Iperf3Udp => {
                Some(r.backend?.datagrams_in as f64 / 1e6)
            }
            Workload::Idle => None,
        }
    };
    f.machine_cpu = m(&|r| ratio(r.machine.as_ref()?.busy_secs, unit(r)?));
    f.softirq_pct = m(&|r| {
        let c = r.machine.as_ref()?;
        ratio(c.softirq_secs * 100.0, c.busy_secs)
    });
    f
}

/// Checks that the proxy forwarded the load: loadgen saw no corrupted response and the
/// backend received what loadgen sent (streams: exactly; echo: at least what came back).
pub fn verify(
    workload: Workload,
    runs: &[RunRecord],
    backend: &BackendStats,
) -> Result<(), String> {
    if runs.is_empty() {
        return Err("no run completed".into());
    }
    for (i, r) in runs.iter().enumerate() {
        let l = &r.load;
        if l.verify_errors > 0 {
            return Err(format!(
                "run {}: {} corrupted responses",
                i + 1,
                l.verify_errors
            ));
        }
        let moved = match workload {
            Workload::Stream(_) => l.bytes_sent > 0,
            Workload::Rr(_) | Workload::Connect | Workload::UdpRr(_) => l.requests > 0,
            Workload::Idle => l.open_peak > 0,
            Workload::UdpStream(_) | Workload::Iperf3Udp => l.datagrams_sent > 0,
        };
        if !moved {
            return Err(format!(
                "run {}: nothing went through (requests {}, bytes sent {}, connections opened {}, \
                 connect errors {}, io errors {})",
                i + 1,
                l.requests,
                l.bytes_sent,
                l.connections_opened,
                l.connect_errors,
                l.io_errors
            ));
        }
    }
    let sent: u64 = runs.iter().map(|r| r.load.bytes_sent).sum();
    let received: u64 = runs.iter().map(|r| r.load.bytes_received).sum();
    match workload {
        Workload::Stream(_) if backend.bytes_in != sent => Err(format!(
            "loadgen sent {sent} bytes but the backend received {} ({} missing)",
            backend.bytes_in,
            sent as i128 - backend.bytes_in as i128
        )),
        Workload::Rr(_) | Workload::Connect if backend.bytes_in < received => Err(format!(
            "loadgen got {received} echoed bytes but the backend only received {}",
            backend.bytes_in
        )),
        Workload::Idle => {
            // loadgen counts a connection once the kernel completed the handshake, which may
            // be before the proxy accepted it: a slow proxy has not connected all of them to
            // the backend when the hold ends (reported, see `compute`). Less than half is a
            // proxy that does not forward.
            let opened: u64 = runs.iter().map(|r| r.load.open_peak).sum();
            if backend.connections * 2 < opened {
                Err(format!(
                    "loadgen held {opened} connections but the backend saw only {}",
                    backend.connections
                ))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// UDP: checks each run's datagrams against what the backend counted during it (iperf3: what
/// its server reported). Every datagram the backend got has the size the client sends, and it
/// got no more than the client sent.
/// udp-rr: every answer loadgen accepted came through the backend, every request not counted
/// lost (or left unanswered at the end) reached it, and at most [`UDP_RR_MAX_LOSS`] of the
/// requests were lost. udp-stream, iperf3-udp: loss is a figure (loadgen sends faster than
/// anything can forward; iperf3 at a rate a proxy may not keep up with), not a failure, but
/// something must arrive.
pub fn verify_udp(workload: Workload, runs: &[RunRecord]) -> Result<(), String> {
    let size = match workload {
        Workload::UdpRr(_) => UDP_RR_SIZE,
        Workload::UdpStream(_) => UDP_STREAM_SIZE,
        Workload::Iperf3Udp => iperf3::SIZE,
        _ => return Ok(()),
    };
    let client = match workload.client() {
        Client::Loadgen => "loadgen",
        Client::Iperf3 => "iperf3",
    };
    for (i, r) in runs.iter().enumerate() {
        let run = i + 1;
        let l = &r.load;
        let b = r
            .backend
            .ok_or_else(|| format!("run {run}: no backend counts"))?;
        if b.bytes_in != b.datagrams_in * size {
            return Err(format!(
                "run {run}: the backend got {} bytes in {} datagrams, not {size} bytes each",
                b.bytes_in, b.datagrams_in
            ));
        }
        if b.datagrams_in > l.datagrams_sent {
            return Err(format!(
                "run {run}: the backend got {} datagrams but {client} sent {}",
                b.datagrams_in, l.datagrams_sent
            ));
        }
        if let Workload::UdpStream(_) | Workload::Iperf3Udp = workload {
            if b.datagrams_in == 0 {
                return Err(format!(
                    "run {run}: {client} sent {} datagrams and none arrived",
                    l.datagrams_sent
                ));
            }
            continue;
        }
        let answered = l.requests + l.late;
        if b.datagrams_out < answered {
            return Err(format!(
                "run {run}: loadgen got {answered} answers but the backend sent only {}",
                b.datagrams_out
            ));
        }
        let reached = l.datagrams_sent.saturating_sub(l.lost + l.abandoned);
        if b.datagrams_in < reached {
            return Err(format!(
                "run {run}: loadgen sent {} requests ({} lost, {} unanswered at the end) but \
                 the backend got only {}",
                l.datagrams_sent, l.lost, l.abandoned, b.datagrams_in
            ));
        }
        if l.lost as f64 > UDP_RR_MAX_LOSS * l.datagrams_sent as f64 {
            return Err(format!(
                "run {run}: {} of {} requests lost ({:.2}%, more than {}%)",
                l.lost,
                l.datagrams_sent,
                100.0 * l.lost as f64 / l.datagrams_sent.max(1) as f64,
                UDP_RR_MAX_LOSS * 100.0
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::measure::{LoadReport, ProxyCost};
    use crate::e2e::procfs::MachineCost;

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
