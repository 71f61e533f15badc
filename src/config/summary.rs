//! A readable summary of a validated configuration, printed by `ringlb check`.

use std::fmt::Write as _;

use super::affinity::format_cpu_list;
use super::duration::format_duration;
use super::size::format_size;
use super::{
    AccessLog, Admin, AdminSocket, Affinity, Check, Config, EngineKind, Health, Keepalive,
    LimitOrigin, LogFormat, LogTarget, Mode, Queue, QueueClose, SniFallback, SocketOptions,
    StatusMatch, UdpFlows, Workers,
};
use crate::core::balance::Algorithm;

/// The spelling used in the configuration, so the summary reads like the file.
pub(crate) fn engine_name(engine: EngineKind) -> &'static str {
    match engine {
        EngineKind::Uring => "uring",
        EngineKind::Epoll => "epoll",
        EngineKind::Blocking => "blocking",
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Copy => "copy",
        Mode::Splice => "splice",
        Mode::Auto => "auto",
    }
}

pub(crate) fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RoundRobin => "round-robin",
        Algorithm::LeastConnections => "least-connections",
        Algorithm::RandomTwo => "random-two",
        Algorithm::SourceHash => "source-hash",
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// `keepalive 60s/10s x6, user_timeout kernel` for one side's sockets.
fn socket_options(options: &SocketOptions) -> String {
    let keepalive = match options.keepalive {
        Keepalive::Off => "keepalive off".to_owned(),
        Keepalive::On(p) => format!(
            "keepalive idle {} interval {} count {}",
            format_duration(p.idle),
            format_duration(p.interval),
            p.count
        ),
    };
    let user_timeout = options
        .user_timeout
        .map_or("kernel default".to_owned(), format_duration);
    format!("{keepalive}, user_timeout {user_timeout}")
}

/// Renders `config`, with workers resolved against `available` CPUs.
pub(crate) fn summary(config: &Config, available: &[usize]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "engine: {}", engine_name(config.engine));
    let cpus = config.worker_cpus_in(available);
    let how = match config.workers {
        Workers::Auto => "auto",
        Workers::Count(_) => "fixed",
    };
    let _ = writeln!(
        out,
        "workers: {} ({how}), pinned to CPUs {}",
        cpus.len(),
        cpus.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(out, "affinity mask: {}", format_cpu_list(available));
    let t = &config.timeouts;
    let _ = writeln!(
        out,
        "timeouts: connect {}, idle {}, client_fin {}, server_fin {}, shutdown grace {}",
        format_duration(t.connect),
        format_duration(t.idle),
        format_duration(t.client_fin),
        format_duration(t.server_fin),
        format_duration(t.shutdown_grace)
    );
    let _ = writeln!(
        out,
        "tcp: client {}; server {}",
        socket_options(&config.tcp.client),
        socket_options(&config.tcp.server)
    );
    let f = &config.features;
    let _ = writeln!(
        out,
        "features: multishot {}, buffer_ring {}, send_bundle {}, defer_taskrun {}, \
         inline_splice {}, hot_buffers {}, loopback_copy {}, inline_shutdown {}",
        on_off(f.multishot),
        on_off(f.buffer_ring),
        on_off(f.send_bundle),
        on_off(f.defer_taskrun),
        on_off(f.inline_splice),
        on_off(f.hot_buffers),
        on_off(f.loopback_copy),
        on_off(f.inline_shutdown)
    );
    let u = &config.tuning;
    let _ = writeln!(
        out,
        "tuning: ring_entries {}, buffer_count {}, buffer_size {}, pipe_size {}, pipe_pool {}, \
         max_pipes {}, send_rings {}, iowq_max_workers {}, max_connections {} (per worker)",
        u.ring_entries,
        u.buffer_count,
        format_size(u.buffer_size.into()),
        format_size(u.pipe_size.into()),
        u.pipe_pool,
        u.max_pipes,
        u.send_rings,
        u.iowq_max_workers,
        u.max_connections
    );
    let c = &config.connections;
    let origin = match c.origin {
        LimitOrigin::Configured => "configured",
        LimitOrigin::FdLimit => "derived from RLIMIT_NOFILE",
        LimitOrigin::WorkerTables => "capped by workers × tuning.max_connections",
    };
    let _ = writeln!(
        out,
        "max_connections: {} in the whole process ({origin}), {} per worker",
        c.max_connections, u.max_connections
    );
    let _ = writeln!(
        out,
        "file descriptors: {} needed at the limit ({} per connection, {} reserved, {} \
         connections of race overshoot), RLIMIT_NOFILE {}",
        c.fds_needed(),
        c.budget.per_connection,
        c.budget.reserve,
        c.budget.overshoot,
        c.fd_limit
    );
    let _ = writeln!(out, "admin: {}", admin(&config.admin));
    let _ = writeln!(
        out,
        "access log: {}",
        access_log(config.access_log.as_ref())
    );
    let _ = writeln!(out, "listeners ({}):", config.listeners.len());
    for l in &config.listeners {
        let pool = config.pools.get(l.pool).map_or("?", |p| p.name.as_str());
        let mut extra = l.admission.map_or(String::new(), |a| {
            format!(", admission {}/s burst {}", a.rate, a.burst)
        });
        if l.accept_proxy {
            extra.push_str(", accept_proxy on");
        }
        if l.freebind {
            extra.push_str(", freebind");
        }
        if l.accept_proxy || !l.routes.is_empty() {
            let _ = write!(
                extra,
                ", inspect_timeout {}",
                format_duration(l.inspect_timeout)
            );
        }
        let _ = writeln!(
            out,
            "  {} on {} -> pool {pool} (mode {}, backlog {}{extra})",
            l.name,
            l.bind,
            mode_name(l.mode),
            l.backlog
        );
        for route in &l.routes {
            let to = config
                .pools
                .get(route.pool)
                .map_or("?", |p| p.name.as_str());
            let _ = writeln!(out, "    route {} -> {to}", route.sni);
        }
        if !l.routes.is_empty() {
            let fallback = match l.sni_fallback {
                SniFallback::Default => format!("default (to pool {pool})"),
                SniFallback::Close => "close".to_owned(),
            };
            let _ = writeln!(out, "    sni_fallback: {fallback}");
        }
    }
    if !config.udp_listeners.is_empty() {
        let _ = writeln!(out, "udp listeners ({}):", config.udp_listeners.len());
        for l in &config.udp_listeners {
            let pool = config.pools.get(l.pool).map_or("?", |p| p.name.as_str());
            let _ = writeln!(
                out,
                "  udp listener {} {} -> pool {pool}, rcvbuf {}{}",
                l.name,
                l.bind,
                super::size::format_size(u64::from(l.rcvbuf)),
                if l.freebind { ", freebind" } else { "" }
            );
        }
    }
    let _ = writeln!(out, "pools ({}):", config.pools.len());
    for (i, p) in config.pools.iter().enumerate() {
        let udp = config.udp_listeners.iter().any(|l| l.pool == i);
        // A pool only a route leads to is in use too.
        let used = udp
            || config
                .listeners
                .iter()
                .any(|l| l.pool == i || l.routes.iter().any(|r| r.pool == i));
        let unused = if used { "" } else { " (used by no listener)" };
        let _ = writeln!(
            out,
            "  {}: {}, retries {}, {} backend(s){unused}",
            p.name,
            algorithm_name(p.algorithm),
            p.retries,
            p.backends.len()
        );
        let _ = writeln!(out, "    health: {}", health(p.health.as_ref()));
        let _ = writeln!(out, "    recovery: {}", recovery(p));
        let _ = writeln!(out, "    queue: {}", queue(&p.queue));
        let _ = writeln!(out, "    affinity: {}", affinity(p.affinity.as_ref()));
        if udp {
            let _ = writeln!(out, "    udp: {}", udp_flows(&p.udp));
        }
        for b in &p.backends {
            let mut limit = b
                .max_connections
                .map_or(String::new(), |max| format!(", max_connections {max}"));
            if let Some(version) = b.send_proxy {
                limit.push_str(match version {
                    crate::core::proxy_header::ProxyVersion::V1 => ", send_proxy v1",
                    crate::core::proxy_header::ProxyVersion::V2 => ", send_proxy v2",
                });
            }
            if b.name == b.addr.to_string() {
                let _ = writeln!(out, "    {} weight {}{limit}", b.addr, b.weight);
            } else {
                let _ = writeln!(out, "    {}: {} weight {}{limit}", b.name, b.addr, b.weight);
            }
        }
    }
    out
}

/// `slow_start 30s, passive checks: 3 failed connects within 10s take a backend down`.
fn recovery(p: &crate::config::Pool) -> String {
    let slow = if p.slow_start.is_zero() {
        "no slow start".to_owned()
    } else {
        format!("slow_start {}", format_duration(p.slow_start))
    };
    let passive = if p.max_fails == 0 {
        "no passive checks".to_owned()
    } else {
        format!(
            "passive checks: {} failed connects within {} take a backend down",
            p.max_fails,
            format_duration(p.fail_timeout)
        )
    };
    format!("{slow}, {passive}")
}

/// `1024 waiting, timeout 2s, close reset`, or `none (turned away at once, close fin)`.
fn queue(queue: &Queue) -> String {
    let close = match queue.close {
        QueueClose::Reset => "reset",
        QueueClose::Fin => "fin",
    };
    if queue.size == 0 {
        return format!("none (turned away at once, close {close})");
    }
    format!(
        "{} waiting, timeout {}, close {close}",
        queue.size,
        format_duration(queue.timeout)
    )
}

/// `udp_idle_timeout 30s, udp_responses unlimited, udp_max_flows 4096 (per worker and
/// listener)`.
fn udp_flows(flows: &UdpFlows) -> String {
    let responses = flows
        .responses
        .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    format!(
        "udp_idle_timeout {}, udp_responses {responses}, udp_max_flows {} (per worker and \
         listener)",
        format_duration(flows.idle_timeout),
        flows.max_flows
    )
}

/// `source, ttl 30m, at most 100000 clients`, or `none`.
fn affinity(affinity: Option<&Affinity>) -> String {
    let Some(a) = affinity else {
        return "none".to_owned();
    };
    format!(
        "source, ttl {}, at most {} clients",
        format_duration(a.ttl),
        a.max_entries
    )
}

/// `none`, or `http GET /healthz expect 2xx every 2s timeout 1s rise 2 fall 3 (port 8081)`.
fn health(health: Option<&Health>) -> String {
    let Some(h) = health else {
        return "none".to_owned();
    };
    let check = match &h.check {
        Check::Tcp => "tcp".to_owned(),
        Check::SendExpect { send, expect } => format!(
            "send-expect send {:?} expect {:?}",
            String::from_utf8_lossy(send),
            String::from_utf8_lossy(expect)
        ),
        Check::Http { path, expect } => {
            let expect = match *expect {
                StatusMatch::Class(class) => format!("{class}xx"),
                StatusMatch::Exact(code) => code.to_string(),
            };
            format!("http GET {path} expect {expect}")
        }
    };
    let port = h
        .port
        .map_or(String::new(), |port| format!(" (port {port})"));
    format!(
        "{check} every {} timeout {} rise {} fall {}{port}",
        format_duration(h.interval),
        format_duration(h.timeout),
        h.rise,
        h.fall
    )
}

/// `off`, `stderr (text)` or `/var/log/ringlb/access.log (json)`.
fn access_log(log: Option<&AccessLog>) -> String {
    let Some(log) = log else {
        return "off".to_owned();
    };
    let format = match log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    match &log.target {
        LogTarget::Stderr => format!("stderr ({format})"),
        LogTarget::File(path) => format!("{} ({format})", path.display()),
    }
}

/// `socket /run/ringlb/admin.sock (default), tcp 127.0.0.1:9900 (token set)`; the token itself
/// is never printed.
fn admin(admin: &Admin) -> String {
    let socket = match &admin.socket {
        AdminSocket::Off => "socket off".to_owned(),
        AdminSocket::Default(path) => format!("socket {} (default)", path.display()),
        AdminSocket::Given(path) => format!("socket {}", path.display()),
    };
    let tcp = match (admin.listen, &admin.token) {
        (None, _) => "no tcp".to_owned(),
        (Some(addr), Some(_)) => format!("tcp {addr} (token set)"),
        (Some(addr), None) => format!("tcp {addr} (no token)"),
    };
    format!("{socket}, {tcp}")
}
