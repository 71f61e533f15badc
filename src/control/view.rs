//! What `GET /api/show` answers: the truth and the summed counters, as JSON. `ringlb ctl`
//! reads the same structure back to print its tables, and `/metrics` is rendered from it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Accepting, Control, Reports};
use crate::config::algorithm_name;
use crate::core::health::Health;
use crate::core::stats::{CONNECT_TIME_BOUNDS_US, ConnectTimes};

/// The whole view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Show {
    /// ringlb's version.
    pub version: String,
    /// Workers running.
    pub workers_asked: usize,
    /// Workers that did not answer in time: their counters are missing from every sum.
    pub workers_missing: Vec<usize>,
    pub listeners: Vec<ListenerView>,
    /// UDP listeners (`protocol = "udp"`).
    #[serde(default)]
    pub udp_listeners: Vec<UdpListenerView>,
    pub pools: Vec<PoolView>,
    /// The workers that answered.
    pub workers: Vec<WorkerView>,
}

/// One listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerView {
    pub name: String,
    /// The bind address.
    pub bind: String,
    /// Its pool's name.
    pub pool: String,
    pub enabled: bool,
    /// Connections open now.
    pub active: u64,
    pub accepted: u64,
    /// Clients turned away after accept because their worker was full.
    pub refused: u64,
    /// Its clients in its pool's waiting queue, now and since the start.
    #[serde(default)]
    pub queue: ListenerQueueView,
    /// What its inspect phase did (`accept_proxy`, SNI routes).
    #[serde(default)]
    pub inspect: ListenerInspectView,
}

/// A listener's inspect phase, since the start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerInspectView {
    /// Closed for a missing or invalid PROXY header.
    pub bad_proxy_header: u64,
    /// Closed at `inspect_timeout`.
    pub timeout: u64,
    /// Closed for want of a server name (`sni_fallback = "close"`).
    pub no_server_name: u64,
    /// Sent to a pool by an SNI route.
    pub routed: u64,
    /// Sent to the listener's own pool (no route matched, or no name).
    pub unrouted: u64,
}

/// A listener's clients in the waiting queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerQueueView {
    /// Waiting now.
    pub waiting: u64,
    /// Clients that joined the queue.
    pub queued: u64,
    /// Clients let out of the queue to a backend.
    pub admitted: u64,
    /// Turned away: the queue was full (or there was none).
    pub full: u64,
    /// Turned away: waited `queue_timeout`.
    pub timeout: u64,
    /// How long admitted clients waited (same buckets as `connect_time`).
    pub wait: ConnectTimeView,
}

/// `GET /api/affinity`: every pool's sticky-session table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffinityView {
    pub pools: Vec<PoolAffinityView>,
}

/// One pool's table: its counters and the clients it remembers (at most [`AFFINITY_LISTED`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolAffinityView {
    pub pool: String,
    pub ttl_ms: u64,
    /// Entries held (expired ones included until replaced or evicted).
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Live entries: client address, its backend, and how long since its last connection.
    pub clients: Vec<StuckEntry>,
}

/// One remembered client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StuckEntry {
    pub client: String,
    pub backend: String,
    pub idle_ms: u64,
}

/// Most clients `GET /api/affinity` lists per pool.
pub const AFFINITY_LISTED: usize = 10_000;

impl AffinityView {
    /// The tables of `control`'s pools that have sticky sessions.
    pub fn build(control: &Control) -> AffinityView {
        let now = std::time::Instant::now();
        let tables = control.affinities();
        let pools = control
            .pools()
            .iter()
            .enumerate()
            .filter(|(_, pool)| !pool.retired)
            .filter_map(|(p, pool)| {
                let table = tables.get(p).cloned().flatten()?;
                let ttl = control
                    .config()
                    .pools
                    .iter()
                    .find(|c| c.name == pool.name)?
                    .affinity?
                    .ttl;
                let stats = table.stats();
                let snapshot = pool.snapshot();
                let clients = table
                    .entries(now, AFFINITY_LISTED)
                    .into_iter()
                    .map(|e| StuckEntry {
                        client: e.client.to_string(),
                        backend: snapshot
                            .backend(e.backend)
                            .map_or_else(|| format!("#{}", e.backend.0), |b| b.name.clone()),
                        idle_ms: millis(now.saturating_duration_since(e.last_seen)),
                    })
                    .collect();
                Some(PoolAffinityView {
                    pool: pool.name.clone(),
                    ttl_ms: millis(ttl),
                    entries: stats.entries,
                    hits: stats.hits,
                    misses: stats.misses,
                    evictions: stats.evictions,
                    clients,
                })
            })
            .collect();
        AffinityView { pools }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `GET /api/queue`: every client waiting in a queue, oldest first within each pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    pub waiting: Vec<WaiterEntry>,
}

/// One waiting client: its number in line and how long it has waited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterEntry {
    pub pool: String,
    /// 1 for the next client to go.
    pub position: usize,
    pub client: String,
    /// The listener's bind address.
    pub listener: String,
    pub worker: usize,
    pub waited_ms: u64,
}

impl QueueView {
    /// The waiting clients of `control`'s pools.
    pub fn build(control: &Control) -> QueueView {
        let now = std::time::Instant::now();
        let mut waiting = Vec::new();
        for room in control.rooms() {
            for w in room.waiters() {
                let pool = control.pools().get(w.pool).map(|p| p.name.clone());
                let listener = control
                    .listeners()
                    .get(w.listener)
                    .map(|l| l.bind.to_string());
                waiting.push(WaiterEntry {
                    pool: pool.unwrap_or_default(),
                    position: w.position,
                    client: w.client.to_string(),
                    listener: listener.unwrap_or_default(),
                    worker: w.worker,
                    waited_ms: u64::try_from(now.saturating_duration_since(w.since).as_millis())
                        .unwrap_or(u64::MAX),
                });
            }
        }
        QueueView { waiting }
    }
}

/// One UDP listener: its flows and datagrams, summed over the workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpListenerView {
    pub name: String,
    /// The bind address.
    pub bind: String,
    /// Its pool's name.
    pub pool: String,
    /// Flows open now.
    pub flows: u64,
    pub flows_opened: u64,
    /// Flows ended, by why: idle for `udp_idle_timeout`, `udp_responses` replies,
    /// evicted from a full table, refused by their backend, or their backend left Up.
    pub flows_expired: u64,
    pub flows_answered: u64,
    pub flows_evicted: u64,
    pub flows_refused: u64,
    pub flows_rebalanced: u64,
    /// Datagrams and bytes: from clients, on to backends, from backends, on to clients.
    pub client_datagrams: u64,
    pub client_bytes: u64,
    pub forwarded_datagrams: u64,
    pub forwarded_bytes: u64,
    pub backend_datagrams: u64,
    pub backend_bytes: u64,
    pub replied_datagrams: u64,
    pub replied_bytes: u64,
    /// Datagrams dropped, by reason.
    pub dropped_too_big: u64,
    pub dropped_no_backend: u64,
    pub dropped_send: u64,
    pub dropped_stale: u64,
}

impl UdpListenerView {
    fn build(control: &Control, reports: &Reports) -> Vec<UdpListenerView> {
        control
            .config()
            .udp_listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let r = reports.udp(i);
                let (f, d) = (r.flow, r.datagrams);
                UdpListenerView {
                    name: l.name.clone(),
                    bind: l.bind.to_string(),
                    pool: control
                        .pools()
                        .get(l.pool)
                        .map_or_else(String::new, |p| p.name.clone()),
                    flows: r.flows,
                    flows_opened: f.opened,
                    flows_expired: f.expired,
                    flows_answered: f.answered,
                    flows_evicted: f.evicted,
                    flows_refused: f.refused,
                    flows_rebalanced: f.rebalanced,
                    client_datagrams: d.client_datagrams,
                    client_bytes: d.client_bytes,
                    forwarded_datagrams: d.forwarded_datagrams,
                    forwarded_bytes: d.forwarded_bytes,
                    backend_datagrams: d.backend_datagrams,
                    backend_bytes: d.backend_bytes,
                    replied_datagrams: d.replied_datagrams,
                    replied_bytes: d.replied_bytes,
                    dropped_too_big: d.dropped_too_big,
                    dropped_no_backend: d.dropped_no_backend,
                    dropped_send: d.dropped_send,
                    dropped_stale: d.dropped_stale,
                }
            })
            .collect()
    }
}

/// One pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    pub name: String,
    pub algorithm: String,
    /// Its backends, removed ones left out.
    pub backends: Vec<BackendView>,
    /// Clients in its waiting queue now.
    #[serde(default)]
    pub waiting: u64,
    /// Its sticky-session table's counters, when it has `affinity = "source"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityCounters>,
}

/// A sticky-session table's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffinityCounters {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub name: String,
    pub address: String,
    /// `ready`, `drain`, `maint` or `removing`.
    pub state: String,
    pub weight: u32,
    /// The weight it balances with now: its weight when ready, else 0.
    pub effective_weight: u32,
    /// Most connections at once, process-wide; `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Connections open now.
    pub active: u64,
    /// Connections it was picked for since the start.
    pub connections: u64,
    /// Bytes sent to it (client → backend).
    pub bytes_in: u64,
    /// Bytes received from it (backend → client).
    pub bytes_out: u64,
    pub connect_failures: u64,
    /// Connections it reset.
    #[serde(default)]
    pub resets: u64,
    /// Connects that completed, by time taken: `connect_time.buckets[i]` counts those within
    /// `CONNECT_TIME_BOUNDS_US[i]` µs (and over the bound before); the last entry the rest.
    #[serde(default)]
    pub connect_time: ConnectTimeView,
    pub last_change: LastChange,
    /// Its active checks, when its pool has `[pool.health]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckView>,
}

/// What a backend's active checks found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckView {
    /// `up` or `down`, by rise and fall.
    pub status: String,
    pub checks: u64,
    pub failures: u64,
    /// Times it went down.
    pub downs: u64,
    /// Why the last check failed; `None` after a pass.
    pub last_failure: Option<String>,
}

/// A backend's connect-time histogram (per bucket, not cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectTimeView {
    /// Upper bounds (µs) of every bucket but the last, which is unbounded.
    pub bounds_us: Vec<u64>,
    pub buckets: Vec<u64>,
    pub sum_us: u64,
}

impl From<&ConnectTimes> for ConnectTimeView {
    fn from(times: &ConnectTimes) -> Self {
        ConnectTimeView {
            bounds_us: CONNECT_TIME_BOUNDS_US.to_vec(),
            buckets: times.buckets.to_vec(),
            sum_us: times.sum_us,
        }
    }
}

/// When and why a backend's state last changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastChange {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub seconds_ago: u64,
    pub reason: String,
}

/// One worker's own figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    pub worker: usize,
    pub connections: u64,
    pub loop_turns: u64,
    pub buffers_in_use: u64,
    pub pipes_in_use: u64,
    /// Access-log lines dropped because the writer was behind.
    #[serde(default)]
    pub access_log_dropped: u64,
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Show {
    /// The view of `control` with the counters of `reports`.
    pub fn build(control: &Control, reports: &Reports) -> Show {
        let now = SystemTime::now();
        let rooms = control.rooms();
        let tables = control.affinities();
        let mut waiting_by_listener = vec![0u64; control.listeners().len()];
        for room in &rooms {
            for w in room.waiters() {
                if let Some(n) = waiting_by_listener.get_mut(w.listener) {
                    *n += 1;
                }
            }
        }
        let listeners = control
            .listeners()
            .iter()
            .enumerate()
            .filter(|(_, l)| l.accepting != Accepting::Closed)
            .map(|(i, l)| {
                let c = reports.listener(i);
                ListenerView {
                    name: l.name.clone(),
                    bind: l.bind.to_string(),
                    pool: control
                        .pools()
                        .get(l.pool)
                        .map_or_else(String::new, |p| p.name.clone()),
                    enabled: l.accepting == Accepting::Enabled,
                    active: c.active,
                    accepted: c.accepted,
                    refused: c.refused,
                    queue: ListenerQueueView {
                        waiting: waiting_by_listener.get(i).copied().unwrap_or(0),
                        queued: c.queued,
                        admitted: c.admitted,
                        full: c.queue_full,
                        timeout: c.queue_timeout,
                        wait: ConnectTimeView::from(&c.queue_wait),
                    },
                    inspect: ListenerInspectView {
                        bad_proxy_header: c.inspect_refused.proxy_header,
                        timeout: c.inspect_refused.timeout,
                        no_server_name: c.inspect_refused.no_server_name,
                        routed: c.routed,
                        unrouted: c.unrouted,
                    },
                }
            })
            .collect();
        let pools = control
            .pools()
            .iter()
            .enumerate()
            .filter(|(_, pool)| !pool.retired)
            .map(|(p, pool)| PoolView {
                waiting: rooms.get(p).map_or(0, |r| r.len() as u64),
                affinity: tables.get(p).cloned().flatten().map(|t| {
                    let stats = t.stats();
                    AffinityCounters {
                        entries: stats.entries,
                        hits: stats.hits,
                        misses: stats.misses,
                        evictions: stats.evictions,
                    }
                }),
                name: pool.name.clone(),
                algorithm: algorithm_name(pool.algorithm).to_owned(),
                backends: pool
                    .backends
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.life.visible())
                    .map(|(i, b)| {
                        let c = reports.backend(p, i);
                        let takes = b.core_state().takes_new_connections();
                        BackendView {
                            name: b.name.clone(),
                            address: b.addr.to_string(),
                            state: b.label().to_owned(),
                            weight: b.weight,
                            effective_weight: if takes { b.balancing_weight() } else { 0 },
                            max_connections: b.max_connections,
                            active: c.active,
                            connections: c.connections,
                            bytes_in: c.bytes_in,
                            bytes_out: c.bytes_out,
                            connect_failures: c.connect_failures,
                            resets: c.resets,
                            connect_time: ConnectTimeView::from(&c.connect_time),
                            last_change: LastChange {
                                at: unix_seconds(b.changed.at),
                                seconds_ago: now
                                    .duration_since(b.changed.at)
                                    .map_or(0, |d| d.as_secs()),
                                reason: b.changed.reason.clone(),
                            },
                            check: control.checks(p).then(|| CheckView {
                                status: match b.checked.tracker.state() {
                                    Health::Up => "up".to_owned(),
                                    Health::Down => "down".to_owned(),
                                },
                                checks: b.checked.checks,
                                failures: b.checked.failures,
                                downs: b.checked.downs,
                                last_failure: b.checked.last_failure.clone(),
                            }),
                        }
                    })
                    .collect(),
            })
            .collect();
        let workers = reports
            .answers
            .iter()
            .map(|r| WorkerView {
                worker: r.worker,
                connections: r.connections,
                loop_turns: r.loop_turns,
                buffers_in_use: r.buffers_in_use,
                pipes_in_use: r.pipes_in_use,
                access_log_dropped: r.access_log_dropped,
            })
            .collect();
        Show {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            workers_asked: reports.asked,
            workers_missing: reports.missing(),
            listeners,
            udp_listeners: UdpListenerView::build(control, reports),
            pools,
            workers,
        }
    }
}
