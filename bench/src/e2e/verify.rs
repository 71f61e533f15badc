//! The check that a row really forwarded what the load generator sent: loadgen's and the
//! backend's counts agree, the clients nobody here wrote saw no errors, and paced runs
//! reached their rate.

use super::iperf3;
use super::measure::{BackendStats, RunRecord};
use super::workload::{Client, PACED_MIN_SHARE, UDP_RR_SIZE, UDP_STREAM_SIZE, Workload};

/// wrk: the share of requests that may meet a socket error (connect, read, write, timeout)
/// before the row fails.
pub const WRK_MAX_ERRORS: f64 = 0.01;

/// udp-rr: the share of requests that may go unanswered (counted lost by loadgen) before the
/// row fails. Loopback drops a datagram only when a socket's receive buffer is full: with
/// 1,024 flows each owing an answer, a proxy's listener socket (default 208 KiB buffer) holds
/// only a few hundred and drops the rest while the proxy is the bottleneck (measured: 8-12% on
/// every proxy row, exactly its listener's drop count in `/proc/net/udp`). That loss is a
/// figure (lost %, listener drops %), not a failure; losing more than half is a proxy that
/// does not forward.
pub const UDP_RR_MAX_LOSS: f64 = 0.5;

/// Checks that the proxy forwarded the load: loadgen saw no corrupted response and the
/// backend received what loadgen sent (streams: exactly; echo: at least what came back);
/// for the other clients see [`verify_client_run`]; a paced run reached its rate.
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
        verify_paced(workload, r).map_err(|e| format!("run {}: {e}", i + 1))?;
        if workload.client() != Client::Loadgen {
            verify_client_run(workload, r).map_err(|e| format!("run {}: {e}", i + 1))?;
            continue;
        }
        if l.verify_errors > 0 {
            return Err(format!(
                "run {}: {} corrupted responses",
                i + 1,
                l.verify_errors
            ));
        }
        let moved = match workload {
            Workload::Stream(_) | Workload::Iperf3Tcp { .. } => l.bytes_sent > 0,
            Workload::Rr(_)
            | Workload::RrPaced(_)
            | Workload::Wrk { .. }
            | Workload::Connect
            | Workload::UdpRr(_) => l.requests > 0,
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
        Workload::Rr(_) | Workload::RrPaced(_) | Workload::Connect
            if backend.bytes_in < received =>
        {
            Err(format!(
                "loadgen got {received} echoed bytes but the backend only received {}",
                backend.bytes_in
            ))
        }
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

/// A paced run (see [`Workload::offered_rate`]) reached at least [`PACED_MIN_SHARE`] of its
/// offered rate: below that the row cannot carry the load and its CPU per unit is not
/// comparable with the others'.
fn verify_paced(workload: Workload, r: &RunRecord) -> Result<(), String> {
    let Some(offered) = workload.offered_rate() else {
        return Ok(());
    };
    let (got, offered, unit) = match workload {
        Workload::Iperf3Tcp { .. } => (r.load.gbit_per_sec, offered / 1e9, "Gbit/s"),
        _ => (r.load.requests_per_sec, offered, "req/s"),
    };
    if got < PACED_MIN_SHARE * offered {
        // A proxy far from a whole CPU was starved (a shared machine), not saturated.
        let busy = r.proxy.as_ref().map_or(String::new(), |c| {
            let share = c.cpu_secs / r.load.elapsed_secs.max(1e-9) * 100.0;
            format!("; the proxy used {share:.0}% of a CPU")
        });
        return Err(format!(
            "reached {got:.2} {unit} of the {offered:.2} offered (less than {:.0}%){busy}",
            PACED_MIN_SHARE * 100.0
        ));
    }
    Ok(())
}

/// One run of a client nobody here wrote. iperf3 over TCP: the server received something,
/// and no more than the client sent. wrk: something was answered, every answer was a 2xx or
/// 3xx, and at most [`WRK_MAX_ERRORS`] of the requests met a socket error.
fn verify_client_run(workload: Workload, r: &RunRecord) -> Result<(), String> {
    let l = &r.load;
    match workload {
        Workload::Iperf3Tcp { .. } => {
            let got = r.backend.map_or(0, |b| b.bytes_in);
            if got == 0 || got > l.bytes_sent {
                return Err(format!(
                    "iperf3 sent {} bytes and the server received {got}",
                    l.bytes_sent
                ));
            }
        }
        Workload::Wrk { .. } => {
            let errors = l.connect_errors + l.io_errors;
            if l.requests == 0 || l.verify_errors > 0 {
                return Err(format!(
                    "wrk: {} requests, {} answers not 2xx or 3xx",
                    l.requests, l.verify_errors
                ));
            }
            if errors as f64 > WRK_MAX_ERRORS * l.requests as f64 {
                return Err(format!(
                    "wrk: {errors} socket errors ({} connect) in {} requests",
                    l.connect_errors, l.requests
                ));
            }
        }
        _ => {}
    }
    Ok(())
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
        Client::Wrk => "wrk",
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

    fn run(load: LoadReport, backend: Option<BackendStats>) -> RunRecord {
        RunRecord {
            load,
            proxy: None,
            backend,
            listener_drops: None,
            machine: None,
        }
    }

    #[test]
    fn paced_runs_must_reach_their_rate() {
        let at = |rps: f64| {
            let load = LoadReport {
                requests: 1_000,
                requests_per_sec: rps,
                elapsed_secs: 2.0,
                ..LoadReport::default()
            };
            run(load, None)
        };
        let w = Workload::RrPaced(64);
        assert!(verify_paced(w, &at(7_990.0)).is_ok());
        assert!(verify_paced(w, &at(7_600.0)).is_ok());
        assert!(verify_paced(w, &at(7_500.0)).is_err_and(|e| e.contains("7500.00 req/s")));
        let mut starved = at(4_000.0);
        starved.proxy = Some(ProxyCost {
            cpu_secs: 0.5,
            ..ProxyCost::default()
        });
        assert!(verify_paced(w, &starved).is_err_and(|e| e.ends_with("used 25% of a CPU")));
        // Unpaced workloads have no rate to reach.
        assert!(verify_paced(Workload::Rr(64), &at(1.0)).is_ok());
    }

    #[test]
    fn iperf3_tcp_runs() {
        let w = Workload::Iperf3Tcp {
            streams: 1,
            paced: true,
        };
        let r = |gbps: f64, sent: u64, got: u64| {
            let load = LoadReport {
                bytes_sent: sent,
                gbit_per_sec: gbps,
                ..LoadReport::default()
            };
            let b = BackendStats {
                bytes_in: got,
                ..BackendStats::default()
            };
            vec![run(load, Some(b))]
        };
        let none = BackendStats::default();
        assert!(verify(w, &r(2.0, 1_000, 990), &none).is_ok());
        assert!(verify(w, &r(2.0, 1_000, 0), &none).is_err());
        assert!(verify(w, &r(2.0, 1_000, 1_001), &none).is_err());
        assert!(
            verify(w, &r(1.8, 1_000, 990), &none)
                .is_err_and(|e| e.contains("1.80 Gbit/s of the 2.00"))
        );
    }

    #[test]
    fn wrk_runs() {
        let w = Workload::Wrk { close: true };
        let r = |requests: u64, errors: u64, non_2xx: u64| {
            let load = LoadReport {
                requests,
                io_errors: errors,
                verify_errors: non_2xx,
                ..LoadReport::default()
            };
            vec![run(load, None)]
        };
        let none = BackendStats::default();
        assert!(verify(w, &r(10_000, 100, 0), &none).is_ok());
        assert!(verify(w, &r(10_000, 101, 0), &none).is_err());
        assert!(verify(w, &r(10_000, 0, 1), &none).is_err_and(|e| e.contains("not 2xx")));
        assert!(verify(w, &r(0, 0, 0), &none).is_err());
    }
}
