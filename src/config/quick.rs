//! The command line's share of the configuration: the quick form (`--listen` and `--backend`
//! with no file) and the flags that override a file.
//!
//! Both only build or amend a [`RawConfig`]; validation is the same as for a file. Values from
//! flags carry [`CLI_SPAN`], so their errors say `command line` and name the flag.

use super::raw::*;

/// Names given to the single listener and pool of the quick form.
pub const QUICK_LISTENER_NAME: &str = "listen";
/// See [`QUICK_LISTENER_NAME`].
pub const QUICK_POOL_NAME: &str = "backends";

/// A parsed `--backend` value: `ADDR[,weight=N][,name=NAME][,max_connections=N]`.
///
/// The address is kept as text and checked during validation, like one from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// `IP:port` as written.
    pub address: String,
    /// `weight=N`, range-checked during validation.
    pub weight: Option<i64>,
    /// `name=NAME`.
    pub name: Option<String>,
    /// `max_connections=N`, range-checked during validation.
    pub max_connections: Option<i64>,
}

/// Why a `--backend` value could not be split into its parts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Nothing before the first comma.
    #[error(
        "missing address; expected ADDR[,weight=N][,name=NAME][,max_connections=N] such as \
         127.0.0.1:9001,weight=3"
    )]
    MissingAddress,
    /// A part after the address that is not `key=value`.
    #[error("{0:?} is not key=value; expected weight=N, name=NAME or max_connections=N")]
    NotKeyValue(String),
    /// A key other than `weight`, `name` and `max_connections`.
    #[error("unknown key {0:?}; expected weight, name or max_connections")]
    UnknownKey(String),
    /// The same key twice.
    #[error("{0} is given twice")]
    Repeated(&'static str),
    /// `weight=` not followed by an integer.
    #[error("weight {0:?} is not an integer")]
    BadWeight(String),
    /// `max_connections=` not followed by an integer.
    #[error("max_connections {0:?} is not an integer")]
    BadMaxConnections(String),
    /// `name=` with nothing after it.
    #[error("name must not be empty")]
    EmptyName,
}

impl std::str::FromStr for BackendSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let mut parts = spec.split(',');
        let address = parts.next().unwrap_or_default().trim();
        if address.is_empty() {
            return Err(SpecError::MissingAddress);
        }
        let mut out = BackendSpec {
            address: address.to_owned(),
            weight: None,
            name: None,
            max_connections: None,
        };
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| SpecError::NotKeyValue(part.to_owned()))?;
            let value = value.trim();
            match key.trim() {
                "weight" => {
                    if out.weight.is_some() {
                        return Err(SpecError::Repeated("weight"));
                    }
                    let weight = value
                        .parse()
                        .map_err(|_| SpecError::BadWeight(value.to_owned()))?;
                    out.weight = Some(weight);
                }
                "max_connections" => {
                    if out.max_connections.is_some() {
                        return Err(SpecError::Repeated("max_connections"));
                    }
                    let max = value
                        .parse()
                        .map_err(|_| SpecError::BadMaxConnections(value.to_owned()))?;
                    out.max_connections = Some(max);
                }
                "name" => {
                    if out.name.is_some() {
                        return Err(SpecError::Repeated("name"));
                    }
                    if value.is_empty() {
                        return Err(SpecError::EmptyName);
                    }
                    out.name = Some(value.to_owned());
                }
                other => return Err(SpecError::UnknownKey(other.to_owned())),
            }
        }
        Ok(out)
    }
}

/// A parsed `--health-check` value: `tcp`, `http` (path `/`) or `http:/PATH`.
///
/// The path is kept as written and checked during validation, like one from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthCheckSpec {
    /// `tcp`: the connect alone.
    Tcp,
    /// `http` or `http:/PATH`: `GET PATH`, expecting the file's `expect` (default `2xx`).
    Http {
        /// The path after `http:`, or `/`.
        path: String,
    },
}

impl std::str::FromStr for HealthCheckSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        match spec.trim() {
            "tcp" => Ok(HealthCheckSpec::Tcp),
            "http" => Ok(HealthCheckSpec::Http {
                path: super::defaults::DEFAULT_HEALTH_PATH.to_owned(),
            }),
            other => match other.strip_prefix("http:") {
                Some(path) => Ok(HealthCheckSpec::Http {
                    path: path.to_owned(),
                }),
                None => Err(format!(
                    "{other:?} is not a check; expected tcp, http or http:/PATH such as \
                     http:/healthz (send-expect is configured in [pool.health])"
                )),
            },
        }
    }
}

/// Parses a `--workers` value: `auto` or an integer (range-checked during validation).
pub fn parse_workers(text: &str) -> Result<RawWorkers, String> {
    let text = text.trim();
    if text == "auto" {
        return Ok(RawWorkers::Auto);
    }
    text.parse()
        .map(RawWorkers::Count)
        .map_err(|_| format!("{text:?} is neither \"auto\" nor an integer"))
}

/// Settings given as flags. With `--config` they override the file; in the quick form they
/// complete the configuration. `None` (or `false`) leaves the file's value or the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--engine`.
    pub engine: Option<EngineName>,
    /// `--workers`.
    pub workers: Option<RawWorkers>,
    /// `--cpus`.
    pub cpus: Option<Vec<usize>>,
    /// `--protocol`, for every listener.
    pub protocol: Option<ProtocolName>,
    /// `--mode`, for every TCP listener.
    pub mode: Option<ModeName>,
    /// `--algorithm`, for every pool.
    pub algorithm: Option<AlgorithmName>,
    /// `--retries`, for every pool.
    pub retries: Option<i64>,
    /// `--health-check`, for every pool: replaces the check (see [`Overrides::apply`]).
    pub health_check: Option<HealthCheckSpec>,
    /// `--health-interval`, as written, for every pool.
    pub health_interval: Option<String>,
    /// `--rise`, for every pool.
    pub rise: Option<i64>,
    /// `--fall`, for every pool.
    pub fall: Option<i64>,
    /// `--affinity-ttl`, as written, for every pool: also turns on `affinity = "source"`.
    pub affinity_ttl: Option<String>,
    /// `--send-proxy`, for every pool no UDP listener uses (a backend's own `send_proxy`
    /// still wins).
    pub send_proxy: Option<ProxyName>,
    /// `--udp-idle-timeout`, as written, for every pool.
    pub udp_idle_timeout: Option<String>,
    /// `--udp-responses`, for every pool.
    pub udp_responses: Option<i64>,
    /// `--udp-max-flows`, for every pool.
    pub udp_max_flows: Option<i64>,
    /// `--queue-size`, for every pool.
    pub queue_size: Option<i64>,
    /// `--queue-timeout`, as written, for every pool.
    pub queue_timeout: Option<String>,
    /// `--admission-rate`, for every TCP listener.
    pub admission_rate: Option<i64>,
    /// `--admission-burst`, for every TCP listener.
    pub admission_burst: Option<i64>,
    /// `--accept-proxy`: `accept_proxy = true` on every TCP listener (`false` leaves the
    /// file's).
    pub accept_proxy: bool,
    /// `--inspect-timeout`, as written, for every TCP listener.
    pub inspect_timeout: Option<String>,
    /// `--connect-timeout`, as written.
    pub connect_timeout: Option<String>,
    /// `--idle-timeout`, as written.
    pub idle_timeout: Option<String>,
    /// `--shutdown-grace`, as written.
    pub shutdown_grace: Option<String>,
    /// `--client-fin`, as written.
    pub client_fin: Option<String>,
    /// `--server-fin`, as written.
    pub server_fin: Option<String>,
    /// `--no-keepalive`: keepalive off on both sides.
    pub no_keepalive: bool,
    /// `--keepalive-idle`, as written.
    pub keepalive_idle: Option<String>,
    /// `--keepalive-interval`, as written.
    pub keepalive_interval: Option<String>,
    /// `--keepalive-count`.
    pub keepalive_count: Option<i64>,
    /// `--client-user-timeout`, as written.
    pub client_user_timeout: Option<String>,
    /// `--server-user-timeout`, as written.
    pub server_user_timeout: Option<String>,
    /// `--no-multishot`.
    pub no_multishot: bool,
    /// `--no-buffer-ring`.
    pub no_buffer_ring: bool,
    /// `--no-send-bundle`.
    pub no_send_bundle: bool,
    /// `--no-defer-taskrun`.
    pub no_defer_taskrun: bool,
    /// `--no-inline-splice`.
    pub no_inline_splice: bool,
    /// `--no-hot-buffers`.
    pub no_hot_buffers: bool,
    /// `--no-loopback-copy`.
    pub no_loopback_copy: bool,
    /// `--no-inline-shutdown`.
    pub no_inline_shutdown: bool,
    /// `--pipe-size`, as written (bytes or `"256KiB"`).
    pub pipe_size: Option<String>,
    /// `--buffer-size`, as written.
    pub buffer_size: Option<String>,
    /// `--send-rings`.
    pub send_rings: Option<i64>,
    /// `--max-connections` (process-wide).
    pub max_connections: Option<i64>,
    /// `--worker-max-connections` (`tuning.max_connections`).
    pub worker_max_connections: Option<i64>,
    /// `--max-pipes`.
    pub max_pipes: Option<i64>,
    /// `--ring-entries`.
    pub ring_entries: Option<i64>,
    /// `--admin-socket`, as written (`""` turns the socket off).
    pub admin_socket: Option<String>,
    /// `--access-log`, as written (a file, `stderr`, or `""` for off).
    pub access_log: Option<String>,
    /// `--access-log-format`.
    pub access_log_format: Option<LogFormatName>,
}

impl Overrides {
    /// Writes every given flag into `raw`, replacing what the file said.
    ///
    /// The health flags write into every pool's `[pool.health]`, creating it where a pool has
    /// none (its check then defaults to tcp, as in a file). `--health-check` replaces the
    /// check: the file's `send`, `expect` and `path` are kept only when its check is of the
    /// same kind (so `--health-check http:/x` over a file's http check keeps its `expect`).
    /// `--affinity-ttl` turns on `affinity = "source"` in every pool as well as setting its
    /// TTL; a file's `affinity_max_entries` stays.
    ///
    /// `--protocol` sets every listener's protocol first. The flags of TCP listeners
    /// (`--mode`, `--admission-rate`, `--admission-burst`, `--accept-proxy`,
    /// `--inspect-timeout`) then set every TCP listener, and `--send-proxy` every pool no UDP
    /// listener uses; where there is no such listener or pool (the quick form with `--protocol
    /// udp`), they set every one, so that validation refuses them rather than let them go
    /// unread (`--send-proxy v2` is then valid: UDP flows carry v2 headers).
    pub fn apply(&self, raw: &mut RawConfig) {
        if let Some(engine) = self.engine {
            raw.engine = Some(from_cli(engine));
        }
        if let Some(workers) = self.workers {
            raw.workers = Some(from_cli(workers));
        }
        if let Some(cpus) = &self.cpus {
            let list = cpus
                .iter()
                .map(|&c| from_cli(i64::try_from(c).unwrap_or(i64::MAX)))
                .collect();
            raw.cpus = Some(from_cli(list));
        }
        if let Some(protocol) = self.protocol {
            for listener in &mut raw.listeners {
                listener.get_mut().protocol = Some(from_cli(protocol));
            }
        }
        let is_udp = |l: &RawListener| {
            l.protocol
                .as_ref()
                .is_some_and(|p| *p.get_ref() == ProtocolName::Udp)
        };
        let any_tcp = raw.listeners.iter().any(|l| !is_udp(l.get_ref()));
        let udp_pools: Vec<String> = raw
            .listeners
            .iter()
            .map(Spanned::get_ref)
            .filter(|l| is_udp(l))
            .map(|l| l.pool.get_ref().trim().to_owned())
            .collect();
        let tcp_only_pool = |p: &RawPool| !udp_pools.iter().any(|u| u == p.name.get_ref().trim());
        let any_tcp_pool = raw.pools.iter().any(|p| tcp_only_pool(p.get_ref()));
        for listener in &mut raw.listeners {
            let listener = listener.get_mut();
            if any_tcp && is_udp(listener) {
                continue;
            }
            if let Some(mode) = self.mode {
                listener.mode = Some(from_cli(mode));
            }
            if let Some(rate) = self.admission_rate {
                listener.admission_rate = Some(from_cli(rate));
            }
            if let Some(burst) = self.admission_burst {
                listener.admission_burst = Some(from_cli(burst));
            }
            if self.accept_proxy {
                listener.accept_proxy = Some(from_cli(true));
            }
            set_text(&mut listener.inspect_timeout, &self.inspect_timeout);
        }
        for pool in &mut raw.pools {
            let pool = pool.get_mut();
            if let Some(algorithm) = self.algorithm {
                pool.algorithm = Some(from_cli(algorithm));
            }
            if let Some(retries) = self.retries {
                pool.retries = Some(from_cli(retries));
            }
            if let Some(ttl) = &self.affinity_ttl {
                pool.affinity = Some(from_cli(AffinityName::Source));
                pool.affinity_ttl = Some(from_cli(ttl.clone()));
            }
            if let Some(size) = self.queue_size {
                pool.queue_size = Some(from_cli(size));
            }
            if let Some(version) = self.send_proxy {
                if !any_tcp_pool || tcp_only_pool(pool) {
                    pool.send_proxy = Some(from_cli(version));
                }
            }
            set_text(&mut pool.queue_timeout, &self.queue_timeout);
            set_text(&mut pool.udp_idle_timeout, &self.udp_idle_timeout);
            if let Some(responses) = self.udp_responses {
                pool.udp_responses = Some(from_cli(responses));
            }
            if let Some(max) = self.udp_max_flows {
                pool.udp_max_flows = Some(from_cli(max));
            }
            self.apply_health(&mut pool.health);
        }
        if let Some(max) = self.max_connections {
            raw.max_connections = Some(from_cli(max));
        }
        let t = &mut raw.timeouts;
        set_text(&mut t.connect, &self.connect_timeout);
        set_text(&mut t.idle, &self.idle_timeout);
        set_text(&mut t.shutdown_grace, &self.shutdown_grace);
        set_text(&mut t.client_fin, &self.client_fin);
        set_text(&mut t.server_fin, &self.server_fin);
        let tcp = &mut raw.tcp;
        if self.no_keepalive {
            tcp.client_keepalive = Some(false);
            tcp.server_keepalive = Some(false);
        }
        set_text(&mut tcp.keepalive_idle, &self.keepalive_idle);
        set_text(&mut tcp.keepalive_interval, &self.keepalive_interval);
        if let Some(count) = self.keepalive_count {
            tcp.keepalive_count = Some(from_cli(count));
        }
        set_text(&mut tcp.client_user_timeout, &self.client_user_timeout);
        set_text(&mut tcp.server_user_timeout, &self.server_user_timeout);
        let f = &mut raw.features;
        for (switch, off) in [
            (&mut f.multishot, self.no_multishot),
            (&mut f.buffer_ring, self.no_buffer_ring),
            (&mut f.send_bundle, self.no_send_bundle),
            (&mut f.defer_taskrun, self.no_defer_taskrun),
            (&mut f.inline_splice, self.no_inline_splice),
            (&mut f.hot_buffers, self.no_hot_buffers),
            (&mut f.inline_shutdown, self.no_inline_shutdown),
            (&mut f.loopback_copy, self.no_loopback_copy),
        ] {
            if off {
                *switch = Some(false);
            }
        }
        let tuning = &mut raw.tuning;
        if let Some(size) = &self.pipe_size {
            tuning.pipe_size = Some(from_cli(RawSize::Text(size.clone())));
        }
        if let Some(size) = &self.buffer_size {
            tuning.buffer_size = Some(from_cli(RawSize::Text(size.clone())));
        }
        if let Some(rings) = self.send_rings {
            tuning.send_rings = Some(from_cli(rings));
        }
        if let Some(max) = self.worker_max_connections {
            tuning.max_connections = Some(from_cli(max));
        }
        if let Some(max) = self.max_pipes {
            tuning.max_pipes = Some(from_cli(max));
        }
        if let Some(entries) = self.ring_entries {
            tuning.ring_entries = Some(from_cli(entries));
        }
        set_text(&mut raw.admin.socket, &self.admin_socket);
        set_text(&mut raw.access_log.path, &self.access_log);
        if let Some(format) = self.access_log_format {
            raw.access_log.format = Some(from_cli(format));
        }
    }
}

impl Overrides {
    fn any_health(&self) -> bool {
        self.health_check.is_some()
            || self.health_interval.is_some()
            || self.rise.is_some()
            || self.fall.is_some()
    }

    /// The health flags written into one pool's `[pool.health]` (see [`Overrides::apply`]).
    fn apply_health(&self, slot: &mut Option<Spanned<RawHealth>>) {
        if !self.any_health() {
            return;
        }
        let health = slot
            .get_or_insert_with(|| from_cli(RawHealth::default()))
            .get_mut();
        if let Some(spec) = &self.health_check {
            let (kind, path) = match spec {
                HealthCheckSpec::Tcp => (CheckName::Tcp, None),
                HealthCheckSpec::Http { path } => (CheckName::Http, Some(path.clone())),
            };
            let was = health
                .check
                .as_ref()
                .map_or(CheckName::Tcp, |c| *c.get_ref());
            if was != kind {
                health.send = None;
                health.expect = None;
                health.path = None;
            }
            health.check = Some(from_cli(kind));
            health.path = path.map(from_cli);
        }
        set_text(&mut health.interval, &self.health_interval);
        if let Some(rise) = self.rise {
            health.rise = Some(from_cli(rise));
        }
        if let Some(fall) = self.fall {
            health.fall = Some(from_cli(fall));
        }
    }
}

fn set_text(slot: &mut Option<Spanned<String>>, value: &Option<String>) {
    if let Some(value) = value {
        *slot = Some(from_cli(value.clone()));
    }
}

/// The raw configuration of the quick form: one listener on `listen` forwarding to one pool
/// of `backends`. Apply [`Overrides`] to it for the other flags.
pub fn quick_raw(listen: &str, backends: &[BackendSpec]) -> RawConfig {
    let backends = backends
        .iter()
        .map(|b| {
            from_cli(RawBackend {
                address: from_cli(b.address.clone()),
                weight: b.weight.map(from_cli),
                name: b.name.clone().map(from_cli),
                max_connections: b.max_connections.map(from_cli),
                send_proxy: None,
            })
        })
        .collect();
    RawConfig {
        listeners: vec![from_cli(RawListener {
            name: Some(from_cli(QUICK_LISTENER_NAME.to_owned())),
            bind: from_cli(listen.to_owned()),
            pool: from_cli(QUICK_POOL_NAME.to_owned()),
            protocol: None,
            mode: None,
            backlog: None,
            rcvbuf: None,
            freebind: None,
            admission_rate: None,
            admission_burst: None,
            accept_proxy: None,
            inspect_timeout: None,
            sni_fallback: None,
            routes: Vec::new(),
        })],
        pools: vec![from_cli(RawPool {
            name: from_cli(QUICK_POOL_NAME.to_owned()),
            algorithm: None,
            retries: None,
            backends,
            health: None,
            slow_start: None,
            max_fails: None,
            fail_timeout: None,
            queue_size: None,
            queue_timeout: None,
            queue_close: None,
            affinity: None,
            affinity_ttl: None,
            send_proxy: None,
            affinity_max_entries: None,
            udp_idle_timeout: None,
            udp_responses: None,
            udp_max_flows: None,
        })],
        ..RawConfig::default()
    }
}
