//! Validation: [`RawConfig`] (as written) into [`Config`] (what the engines read).
//!
//! Every check that can fail points at the value it rejects. Checks run in the order a reader
//! would fix them: pools (listeners refer to them), listeners, timeouts, tuning, workers and
//! CPUs. The first error is returned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use super::connection;
use super::defaults::*;
use super::error::{ConfigError, Source};
use super::fd_budget::{ConnectionLimit, FdLimit, Shape, connection_limit};
use super::limits::*;
use super::quick::BackendSpec;
use super::raw::*;
use super::{Config, EngineKind, Features, Host, Listener, Mode, Pool, UdpListener, Workers};
use crate::core::backend::BackendInfo;
use crate::core::balance::Algorithm;

mod health;
mod inspect;
mod operator;
mod queue;
mod sticky;
mod tuning;
mod udp;

use operator::{access_log, admin};
use tuning::tuning;

type Result<T> = std::result::Result<T, ConfigError>;

/// Validates `raw`, read from `src`, for `host` (its CPUs and its open file limit).
pub fn validate(raw: RawConfig, src: &Source<'_>, host: &Host<'_>) -> Result<Config> {
    let pools = pools(&raw.pools, src)?;
    let (listeners, udp_listeners) = listeners(&raw.listeners, &raw.pools, &pools, src)?;
    let timeouts = connection::timeouts(&raw.timeouts, src)?;
    let tcp = connection::tcp(&raw.tcp, src)?;
    let tuning = tuning(&raw.tuning, src)?;
    let admin = admin(&raw.admin, src)?;
    let access_log = access_log(&raw.access_log, src)?;
    let (workers, cpus) =
        workers_and_cpus(raw.workers.as_ref(), raw.cpus.as_ref(), src, host.cpus)?;
    let engine = raw
        .engine
        .map_or(EngineKind::default(), |e| engine_kind(*e.get_ref()));
    let count = super::worker_cpus(workers, cpus.as_deref(), host.cpus).len();
    let shape =
        Shape::of(engine, count, &listeners, &tuning).with_udp(count, &udp_listeners, &pools);
    let f = &raw.features;
    Ok(Config {
        connections: connections(raw.max_connections.as_ref(), &shape, host.fd_limit, src)?,
        engine,
        workers,
        cpus,
        listeners,
        udp_listeners,
        pools,
        timeouts,
        tcp,
        features: Features {
            multishot: f.multishot.unwrap_or(true),
            buffer_ring: f.buffer_ring.unwrap_or(true),
            send_bundle: f.send_bundle.unwrap_or(true),
            defer_taskrun: f.defer_taskrun.unwrap_or(true),
            inline_splice: f.inline_splice.unwrap_or(true),
            hot_buffers: f.hot_buffers.unwrap_or(true),
            loopback_copy: f.loopback_copy.unwrap_or(true),
            inline_shutdown: f.inline_shutdown.unwrap_or(true),
        },
        tuning,
        admin,
        access_log,
    })
}

/// The model's engine kind for a written name.
pub fn engine_kind(name: EngineName) -> EngineKind {
    match name {
        EngineName::Uring => EngineKind::Uring,
        EngineName::Epoll => EngineKind::Epoll,
        EngineName::Blocking => EngineKind::Blocking,
    }
}

/// The model's mode for a written name.
pub fn mode(name: ModeName) -> Mode {
    match name {
        ModeName::Copy => Mode::Copy,
        ModeName::Splice => Mode::Splice,
        ModeName::Auto => Mode::Auto,
    }
}

/// The balancing algorithm for a written name.
pub fn algorithm(name: AlgorithmName) -> Algorithm {
    match name {
        AlgorithmName::RoundRobin => Algorithm::RoundRobin,
        AlgorithmName::LeastConnections => Algorithm::LeastConnections,
        AlgorithmName::RandomTwo => Algorithm::RandomTwo,
        AlgorithmName::SourceHash => Algorithm::SourceHash,
    }
}

/// An integer field checked against `min..=max`, or `default` when absent.
pub(super) fn int<T: TryFrom<i64> + Copy>(
    value: Option<&Spanned<i64>>,
    default: T,
    min: i64,
    max: i64,
    field: &str,
    src: &Source<'_>,
) -> Result<T> {
    let Some(value) = value else {
        return Ok(default);
    };
    let v = *value.get_ref();
    let in_range = (min..=max).contains(&v);
    match T::try_from(v) {
        Ok(t) if in_range => Ok(t),
        _ => Err(src.invalid(value.span(), field, range_message(v, min, max))),
    }
}

fn range_message(v: impl std::fmt::Display, min: i64, max: i64) -> String {
    format!("must be between {min} and {max}, got {v}")
}

fn non_empty_name(name: &Spanned<String>, field: &str, src: &Source<'_>) -> Result<String> {
    let text = name.get_ref().trim();
    if text.is_empty() {
        return Err(src.invalid(name.span(), field, "must not be empty"));
    }
    Ok(text.to_owned())
}

/// Parses `IP:port`. Host names are not resolved: a load balancer's backends should not
/// change behind its back, and resolution would make validation depend on the network.
fn socket_addr(
    text: &Spanned<String>,
    field: &str,
    what: &str,
    src: &Source<'_>,
) -> Result<SocketAddr> {
    let addr: SocketAddr = text.get_ref().trim().parse().map_err(|_| {
        src.invalid(
            text.span(),
            field,
            format!(
                "bad address {:?}: expected IP:port such as \"127.0.0.1:9001\" or \
                 \"[::1]:9001\" (host names are not resolved)",
                text.get_ref()
            ),
        )
    })?;
    if addr.port() == 0 {
        return Err(src.invalid(text.span(), field, format!("port 0 is not allowed {what}")));
    }
    Ok(addr)
}

/// Remembers names already seen, with where they were first written.
struct Seen<'a> {
    first: HashMap<String, Range<usize>>,
    src: &'a Source<'a>,
}

impl<'a> Seen<'a> {
    fn new(src: &'a Source<'a>) -> Self {
        Self {
            first: HashMap::new(),
            src,
        }
    }

    /// Records `key`; on a repeat, an error at `span` saying where it was first written.
    fn insert(&mut self, key: String, span: Range<usize>, field: &str, what: &str) -> Result<()> {
        if let Some(first) = self.first.get(&key) {
            return Err(self.src.invalid(
                span,
                field,
                format!(
                    "duplicate {what} {key:?} (first defined at {})",
                    self.src.locate(first.clone())
                ),
            ));
        }
        self.first.insert(key, span);
        Ok(())
    }
}

fn pools(raw: &[Spanned<RawPool>], src: &Source<'_>) -> Result<Vec<Pool>> {
    let mut names = Seen::new(src);
    let mut pools = Vec::with_capacity(raw.len());
    for (i, spanned) in raw.iter().enumerate() {
        let p = spanned.get_ref();
        let at = |leaf: &str| format!("pool[{i}].{leaf}");
        let name = non_empty_name(&p.name, &at("name"), src)?;
        names.insert(name.clone(), p.name.span(), &at("name"), "pool name")?;
        let retries = int(
            p.retries.as_ref(),
            DEFAULT_RETRIES,
            0,
            MAX_RETRIES.into(),
            &at("retries"),
            src,
        )
        .map_err(|e| with_hint(e, "a pick carries at most 8 candidates"))?;
        if p.backends.is_empty() {
            return Err(src.invalid(
                spanned.span(),
                at("backend"),
                format!("pool {name:?} has no backends; add at least one [[pool.backend]]"),
            ));
        }
        if p.backends.len() > MAX_BACKENDS_PER_POOL {
            return Err(src.invalid(
                spanned.span(),
                at("backend"),
                format!(
                    "pool {name:?} has {} backends; at most {MAX_BACKENDS_PER_POOL}",
                    p.backends.len()
                ),
            ));
        }
        let pool_proxy = p.send_proxy.as_ref().map(|v| proxy_version(*v.get_ref()));
        let mut backend_names = Seen::new(src);
        let mut backends = Vec::with_capacity(p.backends.len());
        for (j, b) in p.backends.iter().enumerate() {
            let at = |leaf: &str| format!("pool[{i}].backend[{j}].{leaf}");
            let (mut backend, name_span) = backend(b.get_ref(), &at, src)?;
            backend.send_proxy = backend.send_proxy.or(pool_proxy);
            backend_names.insert(backend.name.clone(), name_span, &at("name"), "backend name")?;
            backends.push(backend);
        }
        let health = p
            .health
            .as_ref()
            .map(|h| health::health(h, &|leaf| format!("pool[{i}].health.{leaf}"), src))
            .transpose()?;
        let recovery = health::recovery(p, &|leaf| at(leaf), src)?;
        let queue = queue::queue(p, &|leaf| at(leaf), src)?;
        let affinity = sticky::affinity(p, &|leaf| at(leaf), src)?;
        let udp = udp::flows(p, &|leaf| at(leaf), src)?;
        pools.push(Pool {
            name,
            algorithm: p
                .algorithm
                .as_ref()
                .map_or(Algorithm::default(), |a| algorithm(*a.get_ref())),
            backends,
            retries,
            health,
            slow_start: recovery.slow_start,
            max_fails: recovery.max_fails,
            fail_timeout: recovery.fail_timeout,
            queue,
            affinity,
            udp,
        });
    }
    Ok(pools)
}

/// One backend, and the span of its name (or of its address, which names it by default).
fn backend(
    b: &RawBackend,
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<(BackendInfo, Range<usize>)> {
    let addr = socket_addr(&b.address, &at("address"), "for a backend", src)?;
    let weight = int(
        b.weight.as_ref(),
        1u32,
        1,
        MAX_WEIGHT.into(),
        &at("weight"),
        src,
    )?;
    let max_connections = b
        .max_connections
        .as_ref()
        .map(|m| {
            int(
                Some(m),
                0u32,
                1,
                MAX_PROCESS_CONNECTIONS.into(),
                &at("max_connections"),
                src,
            )
        })
        .transpose()?;
    let (name, name_span) = match &b.name {
        Some(n) => (non_empty_name(n, &at("name"), src)?, n.span()),
        // The canonical text, so two spellings of one address get one identity.
        None => (addr.to_string(), b.address.span()),
    };
    Ok((
        BackendInfo {
            name,
            addr,
            weight,
            max_connections,
            send_proxy: b.send_proxy.as_ref().map(|v| proxy_version(*v.get_ref())),
        },
        name_span,
    ))
}

/// A backend added while running (the admin API's `add POOL SPEC`): `spec` is a `--backend`
/// value, checked exactly as the quick form checks one. Uniqueness within the pool is the
/// caller's to check. The error is the reason alone, such as `weight: must be between …`.
pub fn backend_from_spec(spec: &BackendSpec) -> std::result::Result<BackendInfo, String> {
    // Spans inside the (empty) text rather than `CLI_SPAN`: the request has no flags, and a
    // command-line span would name one (`max_connections` is also the process-wide flag's).
    fn at_spec<T>(value: T) -> Spanned<T> {
        Spanned::new(0..0, value)
    }
    let raw = RawBackend {
        address: at_spec(spec.address.clone()),
        weight: spec.weight.map(at_spec),
        name: spec.name.clone().map(at_spec),
        max_connections: spec.max_connections.map(at_spec),
        send_proxy: None,
    };
    let src = Source {
        origin: "backend spec",
        text: "",
    };
    backend(&raw, &|leaf| leaf.to_owned(), &src)
        .map(|(backend, _)| backend)
        .map_err(|e| match e {
            ConfigError::Invalid { field, message, .. } => format!("{field}: {message}"),
            other => other.to_string(),
        })
}

pub(super) fn with_hint(error: ConfigError, hint: &str) -> ConfigError {
    match error {
        ConfigError::Invalid {
            location,
            field,
            message,
        } => ConfigError::Invalid {
            location,
            field,
            message: format!("{message} ({hint})"),
        },
        other => other,
    }
}

/// The `[[listener]]` tables, split by `protocol`: TCP listeners (in [`Config::listeners`])
/// and UDP listeners (in [`Config::udp_listeners`]), each in the order written. Names are
/// unique across both; bind addresses within each protocol (a TCP and a UDP listener may
/// share an address and port).
fn listeners(
    raw: &[Spanned<RawListener>],
    raw_pools: &[Spanned<RawPool>],
    pools: &[Pool],
    src: &Source<'_>,
) -> Result<(Vec<Listener>, Vec<UdpListener>)> {
    if raw.is_empty() {
        return Err(src.invalid_here(
            "listener",
            "no [[listener]] is defined; at least one is needed",
        ));
    }
    let mut names = Seen::new(src);
    let mut binds = Seen::new(src);
    let mut udp_binds = Seen::new(src);
    let mut listeners = Vec::with_capacity(raw.len());
    let mut udp_listeners = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let l = l.get_ref();
        let at = |leaf: &str| format!("listener[{i}].{leaf}");
        // Every worker binds its own SO_REUSEPORT socket; with port 0 each would get a
        // different ephemeral port.
        let bind = socket_addr(
            &l.bind,
            &at("bind"),
            "for a listener (each worker binds its own socket)",
            src,
        )?;
        let (name, name_span) = match &l.name {
            Some(n) => (non_empty_name(n, &at("name"), src)?, n.span()),
            None => (bind.to_string(), l.bind.span()),
        };
        names.insert(name.clone(), name_span, &at("name"), "listener name")?;
        let pool = pool_index(&l.pool, pools, &at("pool"), src)?;
        if udp::is_udp(l) {
            udp_binds.insert(
                bind.to_string(),
                l.bind.span(),
                &at("bind"),
                "UDP bind address",
            )?;
            let listener = udp::listener(l, name, bind, pool, &at, src)?;
            udp::no_send_proxy_v1(raw_pools[pool].get_ref(), pool, &listener.name, src)?;
            udp_listeners.push(listener);
            continue;
        }
        binds.insert(bind.to_string(), l.bind.span(), &at("bind"), "bind address")?;
        if let Some(rcvbuf) = &l.rcvbuf {
            return Err(src.invalid(
                rcvbuf.span(),
                at("rcvbuf"),
                "`rcvbuf` is for UDP listeners (protocol = \"udp\"); a TCP connection's \
                 buffers are sized by the kernel's autotuning (net.ipv4.tcp_rmem)",
            ));
        }
        let backlog = int(
            l.backlog.as_ref(),
            DEFAULT_BACKLOG,
            1,
            MAX_BACKLOG.into(),
            &at("backlog"),
            src,
        )?;
        let admission = queue::admission(l, &at, src)?;
        let inspect = inspect::inspect(l, pools, &at, src)?;
        listeners.push(Listener {
            name,
            bind,
            pool,
            mode: l
                .mode
                .as_ref()
                .map_or(Mode::default(), |m| mode(*m.get_ref())),
            backlog,
            admission,
            accept_proxy: inspect.accept_proxy,
            inspect_timeout: inspect.inspect_timeout,
            routes: inspect.routes,
            sni_fallback: inspect.sni_fallback,
            freebind: l.freebind.as_ref().is_some_and(|f| *f.get_ref()),
        });
    }
    Ok((listeners, udp_listeners))
}

/// The index of the pool `name` names (a listener's `pool`, a route's `pool`); an error at
/// `name` listing the defined pools when none has that name.
fn pool_index(
    name: &Spanned<String>,
    pools: &[Pool],
    field: &str,
    src: &Source<'_>,
) -> Result<usize> {
    let pool_name = name.get_ref().trim();
    pools
        .iter()
        .position(|p| p.name == pool_name)
        .ok_or_else(|| {
            let defined: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
            let defined = if defined.is_empty() {
                "none".to_owned()
            } else {
                defined.join(", ")
            };
            src.invalid(
                name.span(),
                field,
                format!("unknown pool {pool_name:?} (defined pools: {defined})"),
            )
        })
}

/// The process-wide `max_connections`, as written or derived from the open file limit; an
/// error (at the value, if one was written) when it cannot fit that limit.
fn connections(
    raw: Option<&Spanned<i64>>,
    shape: &Shape,
    fd_limit: FdLimit,
    src: &Source<'_>,
) -> Result<ConnectionLimit> {
    let max = MAX_PROCESS_CONNECTIONS.into();
    let configured = raw
        .map(|_| int(raw, 0u32, 1, max, "max_connections", src))
        .transpose()?;
    connection_limit(configured, shape, fd_limit).map_err(|e| match raw {
        Some(value) => src.invalid(value.span(), "max_connections", e.0),
        None => src.invalid_here("max_connections", e.0),
    })
}

fn workers_and_cpus(
    workers: Option<&Spanned<RawWorkers>>,
    cpus: Option<&Spanned<Vec<Spanned<i64>>>>,
    src: &Source<'_>,
    available: &[usize],
) -> Result<(Workers, Option<Vec<usize>>)> {
    let max = i64::try_from(MAX_WORKERS).unwrap_or(i64::MAX);
    let workers = match workers {
        None => Workers::Auto,
        Some(w) => match *w.get_ref() {
            RawWorkers::Auto => Workers::Auto,
            RawWorkers::Count(n) => match usize::try_from(n) {
                Ok(count) if (1..=max).contains(&n) => Workers::Count(count),
                _ => {
                    return Err(src.invalid(
                        w.span(),
                        "workers",
                        format!("must be \"auto\" or between 1 and {max}, got {n}"),
                    ));
                }
            },
        },
    };
    let Some(list) = cpus else {
        return Ok((workers, None));
    };
    if list.get_ref().is_empty() {
        return Err(src.invalid(
            list.span(),
            "cpus",
            "must list at least one CPU (or be left out)",
        ));
    }
    let mut seen = Seen::new(src);
    let mut resolved = Vec::with_capacity(list.get_ref().len());
    for (i, cpu) in list.get_ref().iter().enumerate() {
        let field = format!("cpus[{i}]");
        let id = usize::try_from(*cpu.get_ref()).map_err(|_| {
            src.invalid(
                cpu.span(),
                field.as_str(),
                format!("must be a CPU number ≥ 0, got {}", cpu.get_ref()),
            )
        })?;
        if !available.contains(&id) {
            return Err(src.invalid(
                cpu.span(),
                field,
                format!(
                    "CPU {id} is not in this process's affinity mask (available: {})",
                    super::affinity::format_cpu_list(available)
                ),
            ));
        }
        seen.insert(id.to_string(), cpu.span(), &field, "CPU")?;
        resolved.push(id);
    }
    if let Workers::Count(n) = workers {
        if resolved.len() < n {
            return Err(src.invalid(
                list.span(),
                "cpus",
                format!(
                    "lists {} CPUs but workers = {n}; list one CPU per worker",
                    resolved.len()
                ),
            ));
        }
    }
    Ok((workers, Some(resolved)))
}

/// The model's PROXY protocol version for a written name.
fn proxy_version(name: ProxyName) -> crate::core::proxy_header::ProxyVersion {
    match name {
        ProxyName::V1 => crate::core::proxy_header::ProxyVersion::V1,
        ProxyName::V2 => crate::core::proxy_header::ProxyVersion::V2,
    }
}
