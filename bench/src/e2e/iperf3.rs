//! iperf3, a client and server nobody here wrote (`iperf3-udp`; over TCP `iperf3-1`,
//! `iperf3-4`, `iperf3-1-paced`): their arguments, and the client's JSON report read into
//! the figures loadgen and the backend would give.
//!
//! `iperf3 -u` opens a TCP control connection to the server's port and sends its datagrams
//! to the same port over UDP, so a proxy in front of the server needs a TCP and a UDP
//! listener on one port. At the end the server tells the client over the control connection
//! what it received, which the client's `--json` report holds (`end.sum_received`): that is
//! the backend's count.

use std::net::SocketAddr;

use serde::Deserialize;

use super::measure::{BackendStats, LoadReport};

/// The offered rate (`-b`): what `direct` sustains without loss on a 2-CPU machine with
/// client and server sharing the load CPU, so that every row is offered the same load.
pub const RATE: &str = "500M";
/// Payload bytes per datagram (`-l`): 1,400 fills a 1,500-byte MTU with room for tunnels.
pub const SIZE: u64 = 1_400;
/// Socket buffers of the client and the server (`-w`: SO_SNDBUF and SO_RCVBUF, capped by
/// `net.core.rmem_max`), as the UDP backends ask for 4 MiB, so that the ends are not where
/// datagrams drop; the proxies keep their defaults.
pub const WINDOW: &str = "4M";
/// The offered rate of `iperf3-1-paced` (`-b` on one TCP stream), so that every row is
/// compared at the same load and the figure that matters is the machine's CPU per GB.
/// Measured on the 2-CPU machine (proxy on CPU 1, iperf3 client and server sharing CPU 0;
/// shared with other work, load average 8-14): one unpaced stream ran 24.7-26.5 Gbit/s
/// direct and 7.6-8.4 through ringlb uring-auto, but only 1.9-4.1 Gbit/s through HAProxy and
/// nginx stream, which got about a third of CPU 1 (6-12 Gbit/s per proxy CPU-second), and
/// both missed 4 Gbit/s paced. 2 Gbit/s is under a twelfth of direct's rate and needs at
/// most a third of a CPU on the slowest row.
pub const TCP_PACED_RATE: &str = "2G";
/// [`TCP_PACED_RATE`] in bits per second (the figure a paced run must reach).
pub const TCP_PACED_BPS: f64 = 2e9;
/// How long the client waits for the control connection (`--connect-timeout`, ms).
const CONNECT_TIMEOUT_MS: &str = "3000";

/// The server's arguments: one test at a time on `addr`, TCP and UDP.
pub fn server_args(addr: SocketAddr) -> Vec<String> {
    [
        "-s",
        "-B",
        &addr.ip().to_string(),
        "-p",
        &addr.port().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// The client's arguments: one UDP stream to `target` for `secs` whole seconds (`-t` takes
/// no fraction), a JSON report on stdout.
pub fn client_args(target: SocketAddr, secs: u64) -> Vec<String> {
    [
        "-u",
        "-c",
        &target.ip().to_string(),
        "-p",
        &target.port().to_string(),
        "-b",
        RATE,
        "-l",
        &SIZE.to_string(),
        "-w",
        WINDOW,
        "-t",
        &secs.to_string(),
        "--connect-timeout",
        CONNECT_TIMEOUT_MS,
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

/// The client's arguments for TCP: `streams` parallel streams (`-P`) uploading to `target`
/// for `secs` whole seconds, at `rate` (`-b`, all streams together) when given, else as fast
/// as they go; a JSON report on stdout.
pub fn tcp_client_args(
    target: SocketAddr,
    secs: u64,
    streams: u32,
    rate: Option<&str>,
) -> Vec<String> {
    let mut a: Vec<String> = [
        "-c",
        &target.ip().to_string(),
        "-p",
        &target.port().to_string(),
        "-P",
        &streams.max(1).to_string(),
        "-t",
        &secs.to_string(),
        "--connect-timeout",
        CONNECT_TIMEOUT_MS,
    ]
    .map(String::from)
    .to_vec();
    if let Some(r) = rate {
        a.extend(["-b".to_string(), r.to_string()]);
    }
    a.push("--json".into());
    a
}

/// The TCP totals of the client's `--json` report (its `end` section).
#[derive(Debug, Deserialize)]
struct TcpEnd {
    /// What the client wrote, with the retransmits its sockets counted.
    sum_sent: TcpSum,
    /// What the server read, as it reported it to the client.
    sum_received: TcpSum,
}

/// One side's TCP totals.
#[derive(Debug, Deserialize)]
struct TcpSum {
    seconds: f64,
    bytes: u64,
    bits_per_second: f64,
    /// Sender side only.
    #[serde(default)]
    retransmits: u64,
}

/// The client's TCP report as loadgen's (bytes written, elapsed time, the server's receive
/// rate, retransmits) and the server's count as the backend's (bytes received): the server's
/// figures are what went through the proxy.
pub fn parse_tcp_report(text: &str) -> Result<(LoadReport, BackendStats), String> {
    let end = report_end(text)?;
    let TcpEnd {
        sum_sent: sent,
        sum_received: received,
    } = serde_json::from_value(end).map_err(|e| format!("the iperf3 report's totals: {e}"))?;
    let load = LoadReport {
        elapsed_secs: received.seconds.max(sent.seconds),
        bytes_sent: sent.bytes,
        gbit_per_sec: received.bits_per_second / 1e9,
        retransmits: sent.retransmits,
        ..LoadReport::default()
    };
    let backend = BackendStats {
        bytes_in: received.bytes,
        ..BackendStats::default()
    };
    Ok((load, backend))
}

/// The `end` section of a report, or the error iperf3 reported instead.
fn report_end(text: &str) -> Result<serde_json::Value, String> {
    let report: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("not an iperf3 report: {e}"))?;
    if let Some(error) = report.get("error").and_then(serde_json::Value::as_str) {
        return Err(format!("iperf3: {error}"));
    }
    Ok(report.get("end").cloned().unwrap_or_default())
}

/// The totals of the client's `--json` report (its `end` section).
#[derive(Debug, Deserialize)]
struct End {
    /// What the client sent.
    sum_sent: Sum,
    /// What the server received, as it reported it to the client.
    sum_received: Sum,
}

/// One side's totals. For the receiver, `packets` is the highest sequence number seen and
/// `lost_packets` the gaps below it, so what arrived is their difference.
#[derive(Debug, Deserialize)]
struct Sum {
    seconds: f64,
    bytes: u64,
    bits_per_second: f64,
    packets: u64,
    lost_packets: u64,
}

/// The client's report as loadgen's (datagrams and bytes sent, rate, elapsed time) and the
/// server's counts as the backend's (datagrams and bytes received).
pub fn parse_report(text: &str) -> Result<(LoadReport, BackendStats), String> {
    let end = report_end(text)?;
    let End {
        sum_sent: sent,
        sum_received: received,
    } = serde_json::from_value(end).map_err(|e| format!("the iperf3 report's totals: {e}"))?;
    let secs = sent.seconds.max(1e-9);
    let load = LoadReport {
        elapsed_secs: sent.seconds,
        bytes_sent: sent.bytes,
        gbit_per_sec: sent.bits_per_second / 1e9,
        datagrams_sent: sent.packets,
        datagrams_per_sec: sent.packets as f64 / secs,
        ..LoadReport::default()
    };
    let arrived = received.packets.saturating_sub(received.lost_packets);
    let backend = BackendStats {
        bytes_in: received.bytes,
        datagrams_in: arrived,
        ..BackendStats::default()
    };
    Ok((load, backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `iperf3 -u ... --json` report (iperf 3.12).
    const REPORT: &str = r#"{
        "start": {"test_start": {"protocol": "UDP", "blksize": 1400}},
        "intervals": [],
        "end": {
            "sum": {"seconds": 2.011475, "bytes": 200576600, "packets": 143269,
                    "lost_packets": 101349, "lost_percent": 70.74, "sender": true},
            "sum_sent": {"start": 0, "end": 2.009723, "seconds": 2.009723,
                         "bytes": 200576600, "bits_per_second": 798424857.55,
                         "jitter_ms": 0, "lost_packets": 0, "packets": 143269,
                         "lost_percent": 0, "sender": true},
            "sum_received": {"start": 0, "end": 2.011475, "seconds": 2.011475,
                             "bytes": 57572200, "bits_per_second": 228975055.61,
                             "jitter_ms": 0.003, "lost_packets": 101349,
                             "packets": 142472, "lost_percent": 70.74, "sender": false}
        }
    }"#;

    #[test]
    fn reads_the_report() {
        let (load, backend) = parse_report(REPORT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load.datagrams_sent, 143_269);
        assert_eq!(load.bytes_sent, 200_576_600);
        assert_eq!(backend.datagrams_in, 41_123);
        assert_eq!(backend.bytes_in, 41_123 * SIZE);
        assert!((load.datagrams_per_sec - 143_269.0 / 2.009723).abs() < 1e-6);
        let failed = r#"{"start": {}, "intervals": [], "end": {},
                         "error": "unable to connect to server: Connection refused"}"#;
        let e = parse_report(failed).err().unwrap_or_default();
        assert!(e.contains("Connection refused"), "{e}");
        assert!(parse_report("").is_err());
    }

    /// Trimmed from a real `iperf3 -c ... -P 2 -t 1 --json` report over TCP (iperf 3.12).
    const TCP_REPORT: &str = r#"{
        "start": {"test_start": {"protocol": "TCP", "num_streams": 2}},
        "intervals": [],
        "end": {
            "streams": [],
            "sum_sent": {"start": 0, "end": 1.000123, "seconds": 1.000123,
                         "bytes": 1761607680, "bits_per_second": 14091128231.227558,
                         "retransmits": 11, "sender": true},
            "sum_received": {"start": 0, "end": 1.000168, "seconds": 1.000168,
                             "bytes": 1748500480, "bits_per_second": 13985654250.085987,
                             "sender": true},
            "cpu_utilization_percent": {}
        }
    }"#;

    #[test]
    fn reads_the_tcp_report() {
        let (load, backend) = parse_tcp_report(TCP_REPORT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load.bytes_sent, 1_761_607_680);
        assert_eq!(backend.bytes_in, 1_748_500_480);
        assert_eq!(load.retransmits, 11);
        assert!((load.gbit_per_sec - 13.985_654_250_085_987).abs() < 1e-9);
        assert!((load.elapsed_secs - 1.000168).abs() < 1e-9);
        let failed = r#"{"start": {}, "end": {}, "error": "unable to send control message"}"#;
        assert!(
            parse_tcp_report(failed)
                .unwrap_err()
                .contains("control message")
        );
        // A UDP report has no retransmits, a TCP one no packet counts: each parser wants its own.
        assert!(parse_report(TCP_REPORT).is_err());
    }

    #[test]
    fn tcp_arguments() {
        let a: SocketAddr = "127.0.0.1:5201".parse().unwrap_or_else(|e| panic!("{e}"));
        let c = tcp_client_args(a, 2, 4, None).join(" ");
        assert_eq!(
            c,
            "-c 127.0.0.1 -p 5201 -P 4 -t 2 --connect-timeout 3000 --json"
        );
        let c = tcp_client_args(a, 2, 1, Some(TCP_PACED_RATE)).join(" ");
        assert!(c.contains(" -P 1 ") && c.ends_with("-b 2G --json"), "{c}");
        assert!(!c.contains("-u"));
    }

    #[test]
    fn arguments() {
        let a: SocketAddr = "127.0.0.1:5201".parse().unwrap_or_else(|e| panic!("{e}"));
        let c = client_args(a, 3).join(" ");
        assert!(c.starts_with("-u -c 127.0.0.1 -p 5201 -b "), "{c}");
        assert!(c.contains(" -t 3 ") && c.ends_with("--json"), "{c}");
        assert_eq!(server_args(a).join(" "), "-s -B 127.0.0.1 -p 5201");
    }
}
