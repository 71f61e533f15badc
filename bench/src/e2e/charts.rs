//! The SVG charts of a run, from the collected results.

use super::report::{Get, IPERF3, Results};
use super::svg::{self, Bar};

impl Results {
    /// The charts: (file name, SVG).
    pub fn charts(&self) -> Vec<(String, String)> {
        let specs: [(&str, &str, &str, &str, bool, Get); 8] = [
            (
                "stream-1-gbps",
                "stream-1",
                "1 stream",
                "Gbit/s",
                false,
                |f| f.gbps,
            ),
            (
                "stream-8-gbps",
                "stream-8",
                "8 streams",
                "Gbit/s",
                false,
                |f| f.gbps,
            ),
            (
                "stream-1-cpu-per-gb",
                "stream-1",
                "Proxy CPU, 1 stream",
                "CPU s per GB",
                true,
                |f| f.cpu_per_gb,
            ),
            (
                "rr-64-rps",
                "rr-64",
                "rr, 64 connections",
                "requests/s",
                false,
                |f| f.rps,
            ),
            (
                "rr-1024-rps",
                "rr-1024",
                "rr, 1,024 connections",
                "requests/s",
                false,
                |f| f.rps,
            ),
            (
                "rr-64-syscalls",
                "rr-64",
                "Syscalls per request, 64 connections",
                "syscalls/request",
                true,
                |f| f.syscalls_per_req,
            ),
            (
                "connect-cps",
                "connect",
                "Connection rate",
                "connections/s",
                false,
                |f| f.cps,
            ),
            (
                "idle-rss",
                "idle",
                "Memory per idle connection",
                "RSS bytes per connection",
                true,
                |f| f.rss_per_idle_conn,
            ),
        ];
        let udp: [(&str, &str, &str, &str, bool, Get); 6] = [
            (
                "udp-rr-64-rps",
                "udp-rr-64",
                "UDP rr, 64 flows",
                "requests/s",
                false,
                |f| f.rps,
            ),
            (
                "udp-rr-1024-rps",
                "udp-rr-1024",
                "UDP rr, 1,024 flows",
                "requests/s",
                false,
                |f| f.rps,
            ),
            (
                "udp-rr-64-cpu",
                "udp-rr-64",
                "Proxy CPU per million UDP requests, 64 flows",
                "CPU s per million requests",
                true,
                |f| f.cpu_per_mreq,
            ),
            (
                "udp-stream-received",
                "udp-stream",
                "UDP stream, received by the sink",
                "Gbit/s",
                false,
                |f| f.gbps_recv,
            ),
            (
                "iperf3-udp-received",
                IPERF3,
                "iperf3 -u, datagrams/s received by the server",
                "datagrams/s",
                false,
                |f| f.pps_recv,
            ),
            (
                "iperf3-udp-cpu",
                IPERF3,
                "Proxy CPU per million datagrams, iperf3 -u",
                "CPU s per million datagrams",
                true,
                |f| f.cpu_per_mpkt,
            ),
        ];
        // UDP charts only when UDP ran (they are opt-in); the TCP set as always.
        let udp = udp.into_iter().filter(|spec| self.has_named(spec.1));
        specs
            .into_iter()
            .chain(udp)
            .map(|(file, w, title, unit, lower, get)| {
                let bars: Vec<Bar> = self
                    .ran()
                    .filter(|r| r.skipped(w).is_none())
                    .map(|r| Bar {
                        label: r.row.name.to_string(),
                        value: r.figures(w).and_then(get),
                        color: color(r.row.name),
                    })
                    .collect();
                (
                    format!("{file}.svg"),
                    svg::bar_chart(title, unit, lower, &bars),
                )
            })
            .chain(self.overhead_chart())
            .collect()
    }

    /// The whole machine's CPU per GB that each proxy row added over `direct` (1 stream),
    /// when streams ran.
    fn overhead_chart(&self) -> Option<(String, String)> {
        let w = "stream-1";
        if !self.has_named(w) {
            return None;
        }
        let bars: Vec<Bar> = self
            .ran()
            .filter(|r| r.row.name != "direct" && r.skipped(w).is_none())
            .map(|r| Bar {
                label: r.row.name.to_string(),
                value: self.overhead(r.row.name, w),
                color: color(r.row.name),
            })
            .collect();
        Some((
            "stream-1-machine-overhead.svg".into(),
            svg::bar_chart(
                "Machine CPU added over direct, 1 stream",
                "CPU s per GB",
                true,
                &bars,
            ),
        ))
    }
}

fn color(row: &str) -> &'static str {
    if row == "direct" {
        "#264653"
    } else if row.starts_with("uring") {
        "#2a9d8f"
    } else if row.starts_with("epoll") || row == "blocking" {
        "#8ab17d"
    } else {
        "#b0b0b0"
    }
}
