//! What a load run measured: per-thread tallies and the merged, serialisable [`Report`].

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies above this (in ns) are clamped; no loopback request should take a minute.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Counters and latencies gathered by one load thread.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) connections_opened: u64,
    pub(crate) connect_errors: u64,
    pub(crate) io_errors: u64,
    pub(crate) short_reads: u64,
    pub(crate) verify_errors: u64,
    pub(crate) closed_by_peer: u64,
    pub(crate) requests: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) open_peak: u64,
    pub(crate) open_at_end: u64,
    pub(crate) datagrams_sent: u64,
    pub(crate) datagrams_received: u64,
    pub(crate) lost: u64,
    pub(crate) late: u64,
    pub(crate) abandoned: u64,
    pub(crate) per_source: BTreeMap<Ipv4Addr, u64>,
    pub(crate) latency: Histogram<u64>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            connections_opened: 0,
            connect_errors: 0,
            io_errors: 0,
            short_reads: 0,
            verify_errors: 0,
            closed_by_peer: 0,
            requests: 0,
            bytes_sent: 0,
            bytes_received: 0,
            open_peak: 0,
            open_at_end: 0,
            datagrams_sent: 0,
            datagrams_received: 0,
            lost: 0,
            late: 0,
            abandoned: 0,
            per_source: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("constant histogram bounds are valid (1 < 60e9, 3 sigfigs)"),
        }
    }

    /// Records one latency sample.
    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
    }

    /// Adds another thread's tally into this one.
    pub(crate) fn merge(&mut self, o: Tally) {
        self.connections_opened += o.connections_opened;
        self.connect_errors += o.connect_errors;
        self.io_errors += o.io_errors;
        self.short_reads += o.short_reads;
        self.verify_errors += o.verify_errors;
        self.closed_by_peer += o.closed_by_peer;
        self.requests += o.requests;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.open_peak += o.open_peak;
        self.open_at_end += o.open_at_end;
        self.datagrams_sent += o.datagrams_sent;
        self.datagrams_received += o.datagrams_received;
        self.lost += o.lost;
        self.late += o.late;
        self.abandoned += o.abandoned;
        for (ip, n) in o.per_source {
            *self.per_source.entry(ip).or_default() += n;
        }
        // Both histograms share the same bounds, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyReport {
    /// Number of samples.
    pub samples: u64,
    /// Smallest sample.
    pub min_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl LatencyReport {
    fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Some(Self {
            samples: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1_000.0,
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// The result of [`super::run`], serialised as one JSON object by the `loadgen` binary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// `stream-upload`, `stream-download`, `rr`, `connect`, `idle`, `udp-rr` or `udp-stream`.
    pub mode: &'static str,
    /// Address the load was sent to.
    pub target: SocketAddr,
    /// Configured connection count (concurrent slots for connect mode).
    pub connections: u32,
    /// Threads used.
    pub threads: u32,
    /// Request / payload size in bytes (rr and connect modes).
    pub size: Option<usize>,
    /// Source address range, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<String>,
    /// Wall time from start until the last thread stopped.
    pub elapsed_secs: f64,
    /// Connections successfully established.
    pub connections_opened: u64,
    /// Connection attempts that failed (refused, unreachable, no ports...).
    pub connect_errors: u64,
    /// Established connections that failed with an error (reset, broken pipe...).
    pub io_errors: u64,
    /// Connections the peer closed while a response was still owed.
    pub short_reads: u64,
    /// Responses whose bytes differed from what was sent (or from the source pattern).
    pub verify_errors: u64,
    /// Connections the peer closed (cleanly) before the load generator was done with them.
    pub closed_by_peer: u64,
    /// Completed requests (rr), or completed connect-send-receive-close cycles (connect).
    pub requests: u64,
    /// `requests / elapsed_secs`.
    pub requests_per_sec: f64,
    /// `connections_opened / elapsed_secs`.
    pub connections_per_sec: f64,
    /// Payload bytes written.
    pub bytes_sent: u64,
    /// Payload bytes read.
    pub bytes_received: u64,
    /// Payload throughput, both directions added, in Gbit/s.
    pub gbit_per_sec: f64,
    /// Most connections established at once (sum of per-thread peaks).
    pub open_peak: u64,
    /// Connections still established when the run ended (idle mode: after the hold).
    pub open_at_end: u64,
    /// UDP: datagrams sent (udp-rr: resends included).
    pub datagrams_sent: u64,
    /// UDP: datagrams received (udp-rr: late answers included).
    pub datagrams_received: u64,
    /// UDP: `datagrams_sent / elapsed_secs`.
    pub datagrams_per_sec: f64,
    /// udp-rr: requests with no answer within the timeout (each was sent again).
    pub lost: u64,
    /// udp-rr: answers that came after their request was counted lost.
    pub late: u64,
    /// udp-rr: requests still unanswered when the run ended (sent before the deadline, no
    /// answer within the timeout after it, not counted as lost).
    pub abandoned: u64,
    /// Request latency (rr: send to last echoed byte; connect: connect start to close).
    pub latency_us: Option<LatencyReport>,
    /// Connections opened per source address, when a source range was used.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_source: BTreeMap<Ipv4Addr, u64>,
}

/// The fixed, descriptive part of a report.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) mode: &'static str,
    pub(crate) target: SocketAddr,
    pub(crate) connections: u32,
    pub(crate) threads: u32,
    pub(crate) size: Option<usize>,
    pub(crate) sources: Option<String>,
}

impl Report {
    pub(crate) fn build(h: Header, t: Tally, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            mode: h.mode,
            target: h.target,
            connections: h.connections,
            threads: h.threads,
            size: h.size,
            sources: h.sources,
            elapsed_secs: elapsed.as_secs_f64(),
            connections_opened: t.connections_opened,
            connect_errors: t.connect_errors,
            io_errors: t.io_errors,
            short_reads: t.short_reads,
            verify_errors: t.verify_errors,
            closed_by_peer: t.closed_by_peer,
            requests: t.requests,
            requests_per_sec: t.requests as f64 / secs,
            connections_per_sec: t.connections_opened as f64 / secs,
            bytes_sent: t.bytes_sent,
            bytes_received: t.bytes_received,
            gbit_per_sec: (t.bytes_sent + t.bytes_received) as f64 * 8.0 / secs / 1e9,
            open_peak: t.open_peak,
            open_at_end: t.open_at_end,
            datagrams_sent: t.datagrams_sent,
            datagrams_received: t.datagrams_received,
            datagrams_per_sec: t.datagrams_sent as f64 / secs,
            lost: t.lost,
            late: t.late,
            abandoned: t.abandoned,
            latency_us: LatencyReport::from_histogram(&t.latency),
            per_source: t.per_source,
        }
    }
}
