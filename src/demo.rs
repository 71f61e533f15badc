//! The self-contained demo (`ringlb demo`): three local backends, ringlb in front of them, and a
//! short, bounded request/response load from many 127.x.y.z client addresses. It prints each
//! backend's share, the throughput and the latency, then stops everything and exits.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use ringlb_tools::backend::{self, BackendKind};
use ringlb_tools::loadgen::{self, LoadConfig, Mode as LoadMode};
use ringlb_tools::source::SourceRange;

use crate::config::fd_budget::{self, Shape, connection_limit};
use crate::config::{
    Config, EngineKind, Features, Listener, Mode, Pool, Tcp, Timeouts, Tuning, Workers, affinity,
    defaults,
};
use crate::core::backend::BackendInfo;
use crate::core::balance::Algorithm;
use crate::engine::signal::Shutdown;

/// Bytes each demo request carries (and gets back).
const REQUEST_SIZE: usize = 64;
/// How long ringlb may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub engine: EngineKind,
    pub mode: Mode,
    /// How long the load runs.
    pub duration: Duration,
    /// Concurrent client connections.
    pub clients: u32,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("starting a demo backend: {0}")]
    Backend(std::io::Error),
    #[error("finding a free port: {0}")]
    Port(std::io::Error),
    #[error("ringlb did not start listening on {0} within {START_TIMEOUT:?}")]
    NotListening(SocketAddr),
    #[error("ringlb stopped with an error: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("the load generator failed: {0}")]
    Load(#[from] loadgen::LoadError),
    #[error("the load saw {0} errors (see above): forwarding is broken")]
    Errors(u64),
    #[error("{0}")]
    Fds(#[from] fd_budget::FdShortage),
}

fn free_port() -> Result<SocketAddr, DemoError> {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(DemoError::Port)?;
    probe.local_addr().map_err(DemoError::Port)
}

fn demo_config(
    options: &DemoOptions,
    listen: SocketAddr,
    backends: Vec<BackendInfo>,
) -> Result<Config, DemoError> {
    let listeners = vec![Listener {
        name: "demo".into(),
        bind: listen,
        pool: 0,
        mode: options.mode,
        backlog: defaults::DEFAULT_BACKLOG,
        admission: None,
        accept_proxy: false,
        inspect_timeout: defaults::DEFAULT_INSPECT_TIMEOUT,
        routes: Vec::new(),
        sni_fallback: Default::default(),
        freebind: false,
    }];
    let tuning = Tuning {
        ring_entries: defaults::DEFAULT_RING_ENTRIES,
        buffer_count: defaults::DEFAULT_BUFFER_COUNT,
        buffer_size: defaults::DEFAULT_BUFFER_SIZE,
        pipe_size: defaults::DEFAULT_PIPE_SIZE,
        pipe_pool: defaults::DEFAULT_PIPE_POOL,
        max_pipes: defaults::DEFAULT_MAX_PIPES,
        send_rings: defaults::DEFAULT_SEND_RINGS,
        iowq_max_workers: defaults::DEFAULT_IOWQ_MAX_WORKERS,
        max_connections: defaults::DEFAULT_WORKER_MAX_CONNECTIONS,
    };
    // As validation would: derived from the open file limit, raised to the hard limit.
    let workers = affinity::available_cpus().len();
    let shape = Shape::of(options.engine, workers, &listeners, &tuning);
    let connections = connection_limit(None, &shape, crate::sys::limits::raised_nofile())?;
    Ok(Config {
        engine: options.engine,
        workers: Workers::Auto,
        cpus: None,
        listeners,
        udp_listeners: Vec::new(),
        pools: vec![Pool {
            name: "demo".into(),
            algorithm: Algorithm::RoundRobin,
            backends,
            retries: defaults::DEFAULT_RETRIES,
            health: None,
            slow_start: defaults::DEFAULT_SLOW_START,
            max_fails: defaults::DEFAULT_MAX_FAILS,
            fail_timeout: defaults::DEFAULT_FAIL_TIMEOUT,
            queue: Default::default(),
            affinity: None,
            udp: Default::default(),
        }],
        timeouts: Timeouts {
            connect: defaults::DEFAULT_CONNECT_TIMEOUT,
            idle: defaults::DEFAULT_IDLE_TIMEOUT,
            client_fin: defaults::DEFAULT_IDLE_TIMEOUT,
            server_fin: defaults::DEFAULT_IDLE_TIMEOUT,
            shutdown_grace: Duration::from_secs(1),
        },
        tcp: Tcp::default(),
        features: Features {
            multishot: true,
            buffer_ring: true,
            send_bundle: true,
            defer_taskrun: true,
            inline_splice: true,
            hot_buffers: true,
            loopback_copy: true,
            inline_shutdown: true,
        },
        tuning,
        connections,
        admin: crate::config::Admin::off(),
        access_log: None,
    })
}

/// Wait until every worker is up, so that the kernel spreads clients over all their listeners.
fn wait_listening(addr: SocketAddr, shutdown: &Shutdown) -> Result<(), DemoError> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if shutdown.is_up() && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(DemoError::NotListening(addr))
}

/// Run the demo and print what it saw.
pub fn run(options: DemoOptions) -> Result<(), DemoError> {
    let names = ["alpha", "bravo", "charlie"];
    let mut backends = Vec::new();
    for name in names {
        let handle = backend::spawn(
            BackendKind::Echo,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        )
        .map_err(DemoError::Backend)?;
        backends.push((name, handle));
    }
    let listen = free_port()?;
    let infos = backends
        .iter()
        .map(|(name, handle)| BackendInfo {
            name: (*name).into(),
            addr: handle.local_addr(),
            weight: 1,
            max_connections: None,
            send_proxy: None,
        })
        .collect();
    let config = demo_config(&options, listen, infos)?;
    let workers = config.worker_count();
    let sources: SourceRange = "127.0.1.1-127.0.1.254"
        .parse()
        .map_err(|_| DemoError::Port(std::io::Error::other("bad source range")))?;
    println!(
        "ringlb demo: {:?} engine, {:?} mode, {workers} worker(s), listening on {listen}",
        options.engine, options.mode
    );
    for (name, handle) in &backends {
        println!("  backend {name:<8} echo server on {}", handle.local_addr());
    }
    println!(
        "  load: {} persistent clients from 127.0.1.1-127.0.1.254, {REQUEST_SIZE}-byte \
         requests echoed back and verified, for {:?}\n",
        options.clients, options.duration
    );

    let shutdown = Shutdown::default();
    let engine_shutdown = shutdown.clone();
    let engine = thread::spawn(move || crate::engine::run_until(config, engine_shutdown));
    if let Err(err) = wait_listening(listen, &shutdown) {
        shutdown.request();
        return match engine.join() {
            Ok(Err(engine_err)) => Err(DemoError::Engine(engine_err)),
            _ => Err(err),
        };
    }

    let mut load = LoadConfig::new(listen, LoadMode::Rr { size: REQUEST_SIZE });
    load.connections = options.clients.max(1);
    load.duration = options.duration;
    load.sources = Some(sources);
    let report = loadgen::run(&load);
    shutdown.request();
    let engine_result = engine.join();
    let report = report?;
    match engine_result {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(DemoError::Engine(err)),
        Err(_) => {
            return Err(DemoError::Engine(crate::engine::EngineError::Worker {
                worker: 0,
                message: "the engine thread panicked".into(),
            }));
        }
    }

    let total: u64 = backends.iter().map(|(_, h)| h.stats().connections).sum();
    println!(
        "{:<10} {:>12} {:>8} {:>14}",
        "backend", "connections", "share", "bytes echoed"
    );
    for (name, handle) in &backends {
        let stats = handle.stats();
        let share = if total == 0 {
            0.0
        } else {
            100.0 * stats.connections as f64 / total as f64
        };
        println!(
            "{name:<10} {:>12} {:>7.1}% {:>14}",
            stats.connections, share, stats.bytes_out
        );
    }
    println!(
        "\nrequests    {} in {:.2} s = {:.0} req/s",
        report.requests, report.elapsed_secs, report.requests_per_sec
    );
    println!(
        "throughput  {:.3} Gbit/s (both directions)",
        report.gbit_per_sec
    );
    if let Some(lat) = &report.latency_us {
        println!(
            "latency     p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
            lat.p50_us, lat.p90_us, lat.p99_us, lat.p999_us
        );
    }
    println!(
        "clients     {} source addresses, {} connections opened",
        report.per_source.len(),
        report.connections_opened
    );
    let errors =
        report.connect_errors + report.io_errors + report.verify_errors + report.short_reads;
    println!("errors      {errors}");
    if errors > 0 || report.requests == 0 {
        return Err(DemoError::Errors(errors.max(1)));
    }
    Ok(())
}
