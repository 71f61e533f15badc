//! `GET /metrics`: the summed counters in the Prometheus / OpenMetrics text format, rendered
//! with `prometheus-client` into a registry built afresh for each scrape from a [`Show`].
//!
//! Names follow Prometheus' conventions: base units (bytes), `_total` on counters (the
//! encoder appends it to the names registered below), and the labels `pool` and `backend`,
//! `listener` (its bind address) and `reason`, and `worker`. Removed backends are left out.
//! Counters are sums over the workers that answered (see [`Show::workers_missing`]).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

use super::view::{ConnectTimeView, Show};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type GaugeFamily = Family<Labels, Gauge<u64, AtomicU64>>;
type CounterFamily = Family<Labels, Counter<u64>>;

/// The metrics of `show` as text.
pub fn render(show: &Show) -> String {
    let mut registry = Registry::default();

    let up = GaugeFamily::default();
    let current = GaugeFamily::default();
    let sessions = CounterFamily::default();
    let bytes_in = CounterFamily::default();
    let bytes_out = CounterFamily::default();
    let failures = CounterFamily::default();
    let resets = CounterFamily::default();
    let mut connect_time = BucketFamily::default();
    let check_failures = CounterFamily::default();
    let check_downs = CounterFamily::default();
    for pool in &show.pools {
        for b in &pool.backends {
            let labels = vec![("pool", pool.name.clone()), ("backend", b.name.clone())];
            up.get_or_create(&labels).set(u64::from(b.state == "ready"));
            current.get_or_create(&labels).set(b.active);
            sessions.get_or_create(&labels).inc_by(b.connections);
            bytes_in.get_or_create(&labels).inc_by(b.bytes_in);
            bytes_out.get_or_create(&labels).inc_by(b.bytes_out);
            failures.get_or_create(&labels).inc_by(b.connect_failures);
            resets.get_or_create(&labels).inc_by(b.resets);
            connect_time
                .0
                .push((labels.clone(), Buckets::of(&b.connect_time)));
            if let Some(check) = &b.check {
                check_failures.get_or_create(&labels).inc_by(check.failures);
                check_downs.get_or_create(&labels).inc_by(check.downs);
            }
        }
    }
    registry.register(
        "ringlb_backend_up",
        "Whether the backend takes new connections (state ready)",
        up,
    );
    registry.register(
        "ringlb_backend_current_sessions",
        "Connections to the backend open now",
        current,
    );
    registry.register(
        "ringlb_backend_sessions",
        "Connections the backend was picked for",
        sessions,
    );
    registry.register(
        "ringlb_backend_bytes_in",
        "Bytes sent to the backend",
        bytes_in,
    );
    registry.register(
        "ringlb_backend_bytes_out",
        "Bytes received from the backend",
        bytes_out,
    );
    registry.register(
        "ringlb_backend_connect_failures",
        "Failed connect attempts to the backend",
        failures,
    );
    registry.register(
        "ringlb_backend_resets",
        "Connections the backend reset",
        resets,
    );
    registry.register(
        "ringlb_backend_check_failures",
        "Active health checks of the backend that failed",
        check_failures,
    );
    registry.register(
        "ringlb_backend_check_up_down",
        "Times the backend's active checks took it down",
        check_downs,
    );
    registry.register_with_unit(
        "ringlb_backend_connect_time",
        "Time to connect to the backend, of connects that completed",
        Unit::Seconds,
        connect_time,
    );

    let max = GaugeFamily::default();
    let waiting = GaugeFamily::default();
    let entries = GaugeFamily::default();
    let hits = CounterFamily::default();
    let misses = CounterFamily::default();
    let evictions = CounterFamily::default();
    for pool in &show.pools {
        let labels = vec![("pool", pool.name.clone())];
        waiting.get_or_create(&labels).set(pool.waiting);
        if let Some(a) = &pool.affinity {
            entries.get_or_create(&labels).set(a.entries);
            hits.get_or_create(&labels).inc_by(a.hits);
            misses.get_or_create(&labels).inc_by(a.misses);
            evictions.get_or_create(&labels).inc_by(a.evictions);
        }
        for b in &pool.backends {
            if let Some(limit) = b.max_connections {
                let labels = vec![("pool", pool.name.clone()), ("backend", b.name.clone())];
                max.get_or_create(&labels).set(u64::from(limit));
            }
        }
    }
    registry.register(
        "ringlb_backend_max_connections",
        "The backend's connection limit, process-wide (backends with one)",
        max,
    );
    registry.register(
        "ringlb_pool_queue_length",
        "Clients waiting in the pool's queue now",
        waiting,
    );
    registry.register(
        "ringlb_pool_affinity_entries",
        "Clients the pool's sticky-session table holds",
        entries,
    );
    registry.register(
        "ringlb_pool_affinity_hits",
        "Connections sent to the backend their client had",
        hits,
    );
    registry.register(
        "ringlb_pool_affinity_misses",
        "Connections whose client had no live entry (new, expired, or its backend down)",
        misses,
    );
    registry.register(
        "ringlb_pool_affinity_evictions",
        "Entries dropped from the pool's sticky-session table to make room",
        evictions,
    );

    udp(&mut registry, show);

    let current = GaugeFamily::default();
    let accepted = CounterFamily::default();
    let refused = CounterFamily::default();
    let queue_length = GaugeFamily::default();
    let queued = CounterFamily::default();
    let admitted = CounterFamily::default();
    let routed = CounterFamily::default();
    let mut queue_wait = BucketFamily::default();
    for l in &show.listeners {
        let labels = vec![("listener", l.bind.clone())];
        for (matched, count) in [("true", l.inspect.routed), ("false", l.inspect.unrouted)] {
            let labels = vec![("listener", l.bind.clone()), ("matched", matched.into())];
            routed.get_or_create(&labels).inc_by(count);
        }
        current.get_or_create(&labels).set(l.active);
        accepted.get_or_create(&labels).inc_by(l.accepted);
        queue_length.get_or_create(&labels).set(l.queue.waiting);
        queued.get_or_create(&labels).inc_by(l.queue.queued);
        admitted.get_or_create(&labels).inc_by(l.queue.admitted);
        queue_wait
            .0
            .push((labels.clone(), Buckets::of(&l.queue.wait)));
        for (reason, count) in [
            ("worker_full", l.refused),
            ("queue_full", l.queue.full),
            ("queue_timeout", l.queue.timeout),
            ("bad_proxy_header", l.inspect.bad_proxy_header),
            ("inspect_timeout", l.inspect.timeout),
            ("no_server_name", l.inspect.no_server_name),
        ] {
            let labels = vec![("listener", l.bind.clone()), ("reason", reason.into())];
            refused.get_or_create(&labels).inc_by(count);
        }
    }
    registry.register(
        "ringlb_listener_sni_routed",
        "The listener's clients sent to a pool by their TLS server name (matched=\"true\") or to its own pool",
        routed,
    );
    registry.register(
        "ringlb_listener_queue_length",
        "The listener's clients waiting in a queue now",
        queue_length,
    );
    registry.register(
        "ringlb_listener_queued",
        "The listener's clients that had to wait in a queue",
        queued,
    );
    registry.register(
        "ringlb_listener_queue_admitted",
        "The listener's clients let out of the queue to a backend",
        admitted,
    );
    registry.register_with_unit(
        "ringlb_listener_queue_wait",
        "How long clients let out of the queue had waited",
        Unit::Seconds,
        queue_wait,
    );
    registry.register(
        "ringlb_listener_current_sessions",
        "Connections of the listener open now",
        current,
    );
    registry.register(
        "ringlb_listener_accepted",
        "Clients the listener accepted",
        accepted,
    );
    registry.register(
        "ringlb_listener_refused",
        "Clients turned away after accept, by reason",
        refused,
    );

    let connections = GaugeFamily::default();
    let turns = CounterFamily::default();
    let buffers = GaugeFamily::default();
    let pipes = GaugeFamily::default();
    let dropped = CounterFamily::default();
    for w in &show.workers {
        let labels = vec![("worker", w.worker.to_string())];
        connections.get_or_create(&labels).set(w.connections);
        turns.get_or_create(&labels).inc_by(w.loop_turns);
        buffers.get_or_create(&labels).set(w.buffers_in_use);
        pipes.get_or_create(&labels).set(w.pipes_in_use);
        dropped.get_or_create(&labels).inc_by(w.access_log_dropped);
    }
    registry.register(
        "ringlb_worker_connections",
        "Connections the worker holds now",
        connections,
    );
    registry.register(
        "ringlb_worker_loop_turns",
        "Event loop turns of the worker",
        turns,
    );
    registry.register(
        "ringlb_worker_buffers_in_use",
        "Copy buffers held by the worker's connections now",
        buffers,
    );
    registry.register(
        "ringlb_worker_pipes_in_use",
        "Pipes in use by the worker now (splice)",
        pipes,
    );
    registry.register(
        "ringlb_worker_access_log_dropped",
        "Access-log lines dropped because the writer was behind",
        dropped,
    );

    registry.register(
        "ringlb_build",
        "ringlb's version",
        Info::new(vec![("version", show.version.clone())]),
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// A histogram whose buckets the workers counted already: encoded as it is (prometheus-client's
/// own `Histogram` can only observe values one by one).
#[derive(Clone, Debug, Default)]
struct Buckets {
    /// `(upper bound in seconds, count in that bucket alone)`; the last bound is +Inf.
    buckets: Vec<(f64, u64)>,
    sum_seconds: f64,
    count: u64,
}

impl Buckets {
    fn of(view: &ConnectTimeView) -> Self {
        let bounds = view
            .bounds_us
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY));
        Buckets {
            buckets: bounds.zip(view.buckets.iter().copied()).collect(),
            sum_seconds: view.sum_us as f64 / 1e6,
            count: view.buckets.iter().sum(),
        }
    }
}

/// One [`Buckets`] per label set, as they came.
#[derive(Debug, Default)]
struct BucketFamily(Vec<(Labels, Buckets)>);

impl EncodeMetric for BucketFamily {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (labels, b) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(b.sum_seconds, b.count, &b.buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The UDP listeners' flows and datagrams.
fn udp(registry: &mut Registry, show: &Show) {
    let flows = GaugeFamily::default();
    let opened = CounterFamily::default();
    let ended = CounterFamily::default();
    let datagrams = CounterFamily::default();
    let bytes = CounterFamily::default();
    let dropped = CounterFamily::default();
    for l in &show.udp_listeners {
        let labels = vec![("listener", l.bind.clone())];
        let with = |name: &'static str, value: &str| {
            vec![("listener", l.bind.clone()), (name, value.to_owned())]
        };
        flows.get_or_create(&labels).set(l.flows);
        opened.get_or_create(&labels).inc_by(l.flows_opened);
        for (reason, count) in [
            ("idle", l.flows_expired),
            ("responses", l.flows_answered),
            ("evicted", l.flows_evicted),
            ("refused", l.flows_refused),
            ("backend_down", l.flows_rebalanced),
        ] {
            ended.get_or_create(&with("reason", reason)).inc_by(count);
        }
        for (direction, count, size) in [
            ("from_client", l.client_datagrams, l.client_bytes),
            ("to_backend", l.forwarded_datagrams, l.forwarded_bytes),
            ("from_backend", l.backend_datagrams, l.backend_bytes),
            ("to_client", l.replied_datagrams, l.replied_bytes),
        ] {
            datagrams
                .get_or_create(&with("direction", direction))
                .inc_by(count);
            bytes
                .get_or_create(&with("direction", direction))
                .inc_by(size);
        }
        for (reason, count) in [
            ("too_big", l.dropped_too_big),
            ("no_backend", l.dropped_no_backend),
            ("send_failed", l.dropped_send),
            ("flow_ended", l.dropped_stale),
        ] {
            dropped.get_or_create(&with("reason", reason)).inc_by(count);
        }
    }
    registry.register("ringlb_udp_flows", "UDP flows open now", flows);
    registry.register("ringlb_udp_flows_opened", "UDP flows opened", opened);
    registry.register(
        "ringlb_udp_flows_ended",
        "UDP flows ended, by reason",
        ended,
    );
    registry.register(
        "ringlb_udp_datagrams",
        "UDP datagrams by direction: from clients, on to backends, from backends, on to clients",
        datagrams,
    );
    registry.register_with_unit(
        "ringlb_udp",
        "UDP payload bytes by direction",
        Unit::Bytes,
        bytes,
    );
    registry.register(
        "ringlb_udp_dropped",
        "UDP datagrams dropped, by reason (never cut or merged)",
        dropped,
    );
}
