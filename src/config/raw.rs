//! The configuration as written: serde structs mirroring the TOML schema, before validation.
//!
//! Every value that validation may reject is wrapped in [`Spanned`], so that an error can point
//! at the byte range (and so the line and column) where the value was written. Values that come
//! from command-line flags carry [`CLI_SPAN`] instead. Unknown keys are rejected everywhere
//! (`deny_unknown_fields`): a misspelt key silently falling back to a default is worse than an
//! error.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
pub use toml::Spanned;

/// The span given to values that come from the command line rather than from a file.
///
/// It lies past the end of any text, so it can never be mistaken for a real position; errors
/// about such values say `command line` instead of `file:line:col`.
pub const CLI_SPAN: Range<usize> = usize::MAX..usize::MAX;

/// Wraps a value from the command line in a [`Spanned`] marked with [`CLI_SPAN`].
pub fn from_cli<T>(value: T) -> Spanned<T> {
    Spanned::new(CLI_SPAN, value)
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `engine = "uring" | "epoll" | "blocking"`.
    pub engine: Option<Spanned<EngineName>>,
    /// `workers = "auto"` or an integer.
    pub workers: Option<Spanned<RawWorkers>>,
    /// `cpus = [0, 1]`.
    pub cpus: Option<Spanned<Vec<Spanned<i64>>>>,
    /// `max_connections`: process-wide, documented in `examples/ringlb.toml`.
    pub max_connections: Option<Spanned<i64>>,
    /// `[timeouts]`.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// `[tcp]`.
    #[serde(default)]
    pub tcp: RawTcp,
    /// `[features]`.
    #[serde(default)]
    pub features: RawFeatures,
    /// `[tuning]`.
    #[serde(default)]
    pub tuning: RawTuning,
    /// `[admin]`.
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[access_log]`.
    #[serde(default)]
    pub access_log: RawAccessLog,
    /// `[[listener]]` tables, in order.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Spanned<RawListener>>,
    /// `[[pool]]` tables, in order.
    #[serde(default, rename = "pool")]
    pub pools: Vec<Spanned<RawPool>>,
}

/// `[timeouts]`: durations written as text such as `"500ms"` or `"2s"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// `connect`, documented in `examples/ringlb.toml`.
    pub connect: Option<Spanned<String>>,
    /// `idle`, documented in `examples/ringlb.toml`.
    pub idle: Option<Spanned<String>>,
    /// `shutdown_grace`, documented in `examples/ringlb.toml`.
    pub shutdown_grace: Option<Spanned<String>>,
    /// `client_fin`, documented in `examples/ringlb.toml`.
    pub client_fin: Option<Spanned<String>>,
    /// `server_fin`, documented in `examples/ringlb.toml`.
    pub server_fin: Option<Spanned<String>>,
}

/// `[tcp]`: socket options for client and backend sockets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    /// `client_keepalive`, documented in `examples/ringlb.toml`.
    pub client_keepalive: Option<bool>,
    /// `server_keepalive`, documented in `examples/ringlb.toml`.
    pub server_keepalive: Option<bool>,
    /// `keepalive_idle`, documented in `examples/ringlb.toml`.
    pub keepalive_idle: Option<Spanned<String>>,
    /// `keepalive_interval`, documented in `examples/ringlb.toml`.
    pub keepalive_interval: Option<Spanned<String>>,
    /// `keepalive_count`, documented in `examples/ringlb.toml`.
    pub keepalive_count: Option<Spanned<i64>>,
    /// `client_user_timeout`, documented in `examples/ringlb.toml`.
    pub client_user_timeout: Option<Spanned<String>>,
    /// `server_user_timeout`, documented in `examples/ringlb.toml`.
    pub server_user_timeout: Option<Spanned<String>>,
}

/// `[features]`: each switch defaults to on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatures {
    /// `multishot`, documented in `examples/ringlb.toml`.
    pub multishot: Option<bool>,
    /// `buffer_ring`, documented in `examples/ringlb.toml`.
    pub buffer_ring: Option<bool>,
    /// `send_bundle`, documented in `examples/ringlb.toml`.
    pub send_bundle: Option<bool>,
    /// `defer_taskrun`, documented in `examples/ringlb.toml`.
    pub defer_taskrun: Option<bool>,
    /// `inline_splice`, documented in `examples/ringlb.toml`.
    pub inline_splice: Option<bool>,
    /// `hot_buffers`, documented in `examples/ringlb.toml`.
    pub hot_buffers: Option<bool>,
    /// `loopback_copy`, documented in `examples/ringlb.toml`.
    pub loopback_copy: Option<bool>,
    /// `inline_shutdown`, documented in `examples/ringlb.toml`.
    pub inline_shutdown: Option<bool>,
}

/// `[tuning]`: counts as integers, byte sizes as integers or text such as `"256KiB"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTuning {
    /// `ring_entries`, documented in `examples/ringlb.toml`.
    pub ring_entries: Option<Spanned<i64>>,
    /// `buffer_count`, documented in `examples/ringlb.toml`.
    pub buffer_count: Option<Spanned<i64>>,
    /// `buffer_size`, documented in `examples/ringlb.toml`.
    pub buffer_size: Option<Spanned<RawSize>>,
    /// `pipe_size`, documented in `examples/ringlb.toml`.
    pub pipe_size: Option<Spanned<RawSize>>,
    /// `pipe_pool`, documented in `examples/ringlb.toml`.
    pub pipe_pool: Option<Spanned<i64>>,
    /// `max_pipes`, documented in `examples/ringlb.toml`.
    pub max_pipes: Option<Spanned<i64>>,
    /// `send_rings`, documented in `examples/ringlb.toml`.
    pub send_rings: Option<Spanned<i64>>,
    /// `iowq_max_workers`, documented in `examples/ringlb.toml`.
    pub iowq_max_workers: Option<Spanned<i64>>,
    /// `max_connections` (per worker), documented in `examples/ringlb.toml`.
    pub max_connections: Option<Spanned<i64>>,
}

/// `[admin]`: the admin API's Unix socket and optional TCP address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `socket`, documented in `examples/ringlb.toml`; `""` turns it off.
    pub socket: Option<Spanned<String>>,
    /// `listen`, documented in `examples/ringlb.toml`.
    pub listen: Option<Spanned<String>>,
    /// `token`, documented in `examples/ringlb.toml`.
    pub token: Option<Spanned<String>>,
}

/// `[access_log]`: one line per finished connection; off unless `path` is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// `path`, documented in `examples/ringlb.toml`: a file, `"stderr"`, or `""` (off).
    pub path: Option<Spanned<String>>,
    /// `format`, documented in `examples/ringlb.toml`.
    pub format: Option<Spanned<LogFormatName>>,
}

/// Access-log formats as written in TOML and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormatName {
    /// Space-separated fields, as HAProxy's tcplog.
    Text,
    /// One JSON object per line.
    Json,
}

/// One `[[listener]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Defaults to the bind address as text.
    pub name: Option<Spanned<String>>,
    /// `bind`, documented in `examples/ringlb.toml`.
    pub bind: Spanned<String>,
    /// Name of a `[[pool]]`.
    pub pool: Spanned<String>,
    /// `protocol`, documented in `examples/ringlb.toml`; left out, `"tcp"`. The keys below
    /// are TCP's: validation refuses them on a UDP listener.
    pub protocol: Option<Spanned<ProtocolName>>,
    /// `mode`, documented in `examples/ringlb.toml`.
    pub mode: Option<Spanned<ModeName>>,
    /// `backlog`, documented in `examples/ringlb.toml`.
    pub backlog: Option<Spanned<i64>>,
    /// `rcvbuf`, documented in `examples/ringlb.toml`; UDP listeners only.
    pub rcvbuf: Option<Spanned<RawSize>>,
    /// `freebind`, documented in `examples/ringlb.toml`: bind even when the address is not
    /// (yet) on this node (`IP_FREEBIND`). TCP and UDP listeners.
    pub freebind: Option<Spanned<bool>>,
    /// `admission_rate`, documented in `examples/ringlb.toml`.
    pub admission_rate: Option<Spanned<i64>>,
    /// `admission_burst`, documented in `examples/ringlb.toml`; only with `admission_rate`.
    pub admission_burst: Option<Spanned<i64>>,
    /// `accept_proxy`, documented in `examples/ringlb.toml`.
    pub accept_proxy: Option<Spanned<bool>>,
    /// `inspect_timeout`, documented in `examples/ringlb.toml`.
    pub inspect_timeout: Option<Spanned<String>>,
    /// `sni_fallback`, documented in `examples/ringlb.toml`; only with `[[listener.route]]`.
    pub sni_fallback: Option<Spanned<SniFallbackName>>,
    /// `[[listener.route]]` tables, in order.
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RawRoute>>,
}

/// A listener's transport protocol (`protocol`), as written in TOML and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolName {
    /// Connections, accepted and forwarded.
    Tcp,
    /// Datagrams, forwarded by flow (client address and port).
    Udp,
}

/// One `[[listener.route]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// `sni`, documented in `examples/ringlb.toml`: a server name or `*.` and a domain.
    pub sni: Spanned<String>,
    /// `pool`: the name of a `[[pool]]`.
    pub pool: Spanned<String>,
}

/// What `sni_fallback` does with a client whose server name cannot be read, as written in
/// TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SniFallbackName {
    /// To the listener's own pool.
    Default,
    /// Closed.
    Close,
}

/// One `[[pool]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// `name`, documented in `examples/ringlb.toml`.
    pub name: Spanned<String>,
    /// `algorithm`, documented in `examples/ringlb.toml`.
    pub algorithm: Option<Spanned<AlgorithmName>>,
    /// `retries`, documented in `examples/ringlb.toml`.
    pub retries: Option<Spanned<i64>>,
    /// `[[pool.backend]]` tables, in order.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Spanned<RawBackend>>,
    /// `[pool.health]`: active checks; left out, none.
    pub health: Option<Spanned<RawHealth>>,
    /// `slow_start`, documented in `examples/ringlb.toml`.
    pub slow_start: Option<Spanned<String>>,
    /// `max_fails`, documented in `examples/ringlb.toml`.
    pub max_fails: Option<Spanned<i64>>,
    /// `fail_timeout`, documented in `examples/ringlb.toml`.
    pub fail_timeout: Option<Spanned<String>>,
    /// `queue_size`, documented in `examples/ringlb.toml`.
    pub queue_size: Option<Spanned<i64>>,
    /// `queue_timeout`, documented in `examples/ringlb.toml`.
    pub queue_timeout: Option<Spanned<String>>,
    /// `queue_close`, documented in `examples/ringlb.toml`.
    pub queue_close: Option<Spanned<QueueCloseName>>,
    /// `affinity`, documented in `examples/ringlb.toml`.
    pub affinity: Option<Spanned<AffinityName>>,
    /// `affinity_ttl`, documented in `examples/ringlb.toml`; only with `affinity = "source"`.
    pub affinity_ttl: Option<Spanned<String>>,
    /// `affinity_max_entries`, documented in `examples/ringlb.toml`; only with
    /// `affinity = "source"`.
    pub affinity_max_entries: Option<Spanned<i64>>,
    /// `send_proxy` for every backend of the pool that does not say otherwise.
    pub send_proxy: Option<Spanned<ProxyName>>,
    /// `udp_idle_timeout`, documented in `examples/ringlb.toml`; read by UDP listeners.
    pub udp_idle_timeout: Option<Spanned<String>>,
    /// `udp_responses`, documented in `examples/ringlb.toml`; left out, no limit.
    pub udp_responses: Option<Spanned<i64>>,
    /// `udp_max_flows`, documented in `examples/ringlb.toml`.
    pub udp_max_flows: Option<Spanned<i64>>,
}

/// `[pool.health]`: which keys belong to which check is decided during validation, so that
/// a key written for another check gets an error naming it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// `check`, documented in `examples/ringlb.toml`; left out, `"tcp"`.
    pub check: Option<Spanned<CheckName>>,
    /// `interval`, documented in `examples/ringlb.toml`.
    pub interval: Option<Spanned<String>>,
    /// `timeout`, documented in `examples/ringlb.toml`.
    pub timeout: Option<Spanned<String>>,
    /// `rise`, documented in `examples/ringlb.toml`.
    pub rise: Option<Spanned<i64>>,
    /// `fall`, documented in `examples/ringlb.toml`.
    pub fall: Option<Spanned<i64>>,
    /// `port`, documented in `examples/ringlb.toml`.
    pub port: Option<Spanned<i64>>,
    /// `send` (send-expect only).
    pub send: Option<Spanned<String>>,
    /// `expect` (send-expect: a prefix; http: a status class or code).
    pub expect: Option<Spanned<String>>,
    /// `path` (http only).
    pub path: Option<Spanned<String>>,
}

/// Health check kinds as written in TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckName {
    /// The connect alone.
    Tcp,
    /// Send bytes, expect a prefix of the answer.
    SendExpect,
    /// `GET path`, expect a status.
    Http,
}

/// How the queue turns a client away (`queue_close`), as written in TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueCloseName {
    /// An RST, at once.
    Reset,
    /// An orderly close.
    Fin,
}

/// Sticky sessions (`affinity`), as written in TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AffinityName {
    /// None: every connection is balanced afresh.
    None,
    /// By client address.
    Source,
}

/// One `[[pool.backend]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// `address`, documented in `examples/ringlb.toml`.
    pub address: Spanned<String>,
    /// `weight`, documented in `examples/ringlb.toml`.
    pub weight: Option<Spanned<i64>>,
    /// Defaults to the address as text.
    pub name: Option<Spanned<String>>,
    /// `max_connections`, documented in `examples/ringlb.toml`.
    pub max_connections: Option<Spanned<i64>>,
    /// `send_proxy`, documented in `examples/ringlb.toml`; the pool's when left out.
    pub send_proxy: Option<Spanned<ProxyName>>,
}

/// PROXY protocol versions (`send_proxy`), as written in TOML and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyName {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

/// Engine names as written in TOML and on the command line.
///
/// The same type serves both so the spellings can never drift apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EngineName {
    /// io_uring, thread per core.
    Uring,
    /// Edge-triggered epoll, thread per core.
    Epoll,
    /// One thread per connection.
    Blocking,
}

/// Forwarding mode names as written in TOML and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModeName {
    /// User-space buffers.
    Copy,
    /// socket → pipe → socket.
    Splice,
    /// Copy, switching to splice for bulk transfers.
    Auto,
}

/// Balancing algorithm names as written in TOML and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmName {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Weighted least connections.
    LeastConnections,
    /// Power of two random choices.
    RandomTwo,
    /// Consistent source-IP hashing (Maglev).
    SourceHash,
}

/// `workers`: `"auto"` or a count, kept signed so that `workers = -1` reaches validation and
/// gets a message about workers rather than about integer types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawWorkers {
    /// `"auto"`.
    Auto,
    /// An integer, not yet range-checked.
    Count(i64),
}

impl<'de> Deserialize<'de> for RawWorkers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WorkersVisitor;
        impl Visitor<'_> for WorkersVisitor {
            type Value = RawWorkers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or an integer ≥ 1")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Count(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawWorkers, E> {
                if v == "auto" {
                    Ok(RawWorkers::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_any(WorkersVisitor)
    }
}

/// A byte size: an integer, or text with a binary unit such as `"256KiB"` (parsed during
/// validation by [`super::size::parse_size`], so its errors carry the field name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawSize {
    /// An integer number of bytes, not yet range-checked.
    Bytes(i64),
    /// Text such as `"256KiB"`.
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count such as 262144 or \"256KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}
