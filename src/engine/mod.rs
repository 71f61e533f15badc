//! Engines: thin shells that turn core actions into system calls.
//!
//! Every engine runs the same [`crate::core::shard::Shard`]; what differs is only how an action
//! becomes a system call: an io_uring submission ([`uring`]), a non-blocking call after epoll
//! readiness ([`epoll`]), or a blocking call on a thread of its own ([`blocking`]). What the
//! engines share (worker threads and pinning, listening sockets, signals, per-listener policy)
//! lives in this module's other files.

pub mod access_log;
pub mod admission;
pub mod blocking;
pub mod epoll;
pub mod inbox;
pub mod listeners;
pub mod notify;
pub mod op;
pub mod plan;
pub mod rate_limit;
pub mod runtime;
pub mod signal;
pub mod socket;
pub mod staged;
pub mod udp;
pub mod uring;
pub mod worker;

use crate::config::{Config, EngineKind};

/// Why an engine could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the {0} engine is not built yet")]
    NotBuilt(&'static str),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("io_uring is unavailable: {0}")]
    Unsupported(String),
    #[error("worker {worker} failed: {message}")]
    Worker { worker: usize, message: String },
}

impl EngineError {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Run the data plane described by `config` until SIGTERM, SIGINT or SIGQUIT, then drain for up
/// to `shutdown_grace` (or less, on a second such signal) and return. The signal table is in
/// [`signal`].
pub fn run(config: Config) -> Result<(), EngineError> {
    let shutdown = signal::Shutdown::from_signals()
        .map_err(|e| EngineError::io("installing signal handlers", e))?;
    run_until(config, shutdown)
}

/// Run until `shutdown` is requested, by a signal or by the caller (the demo, tests). Nothing
/// can reach the workers while they run: see [`run_with_inboxes`] for that.
pub fn run_until(config: Config, shutdown: signal::Shutdown) -> Result<(), EngineError> {
    let (_links, inboxes) = inbox::pairs(worker_count(&config))
        .map_err(|e| EngineError::io("creating the workers' inboxes", e))?;
    run_with_inboxes(config, shutdown, inboxes)
}

/// How many workers (and so inboxes) the engine `config` names runs: one per worker CPU for
/// io_uring and epoll; one for the blocking engine, whose threads share a single shard.
pub fn worker_count(config: &Config) -> usize {
    match config.engine {
        EngineKind::Uring | EngineKind::Epoll => config.worker_cpus().len(),
        EngineKind::Blocking => 1,
    }
}

/// [`run_until`], with one [`inbox::Inbox`] per worker (in worker order; see [`worker_count`])
/// through which the control side (admin API, reload) reaches the running workers.
pub fn run_with_inboxes(
    config: Config,
    shutdown: signal::Shutdown,
    inboxes: Vec<inbox::Inbox>,
) -> Result<(), EngineError> {
    let sockets = listeners::Sockets::bind(&config, worker_count(&config), Default::default())?;
    run_with(config, shutdown, inboxes, sockets)
}

/// [`run_with_inboxes`] on listening `sockets` bound already (see [`listeners::Sockets`]).
pub fn run_with(
    config: Config,
    shutdown: signal::Shutdown,
    inboxes: Vec<inbox::Inbox>,
    sockets: listeners::Sockets,
) -> Result<(), EngineError> {
    let expected = worker_count(&config);
    if inboxes.len() != expected {
        return Err(EngineError::Worker {
            worker: 0,
            message: format!("{} inboxes for {expected} workers", inboxes.len()),
        });
    }
    let log = match &config.access_log {
        Some(c) => Some(
            access_log::AccessLog::start(c.target.clone(), c.format, shutdown.log_reopen())
                .map_err(|e| EngineError::io("opening the access log", e))?,
        ),
        None => None,
    };
    let names = std::sync::Arc::new(runtime::Names::of(&config));
    let kits = runtime::kits(inboxes, sockets.by_worker(expected), log.as_ref(), &names);
    let result = match config.engine {
        EngineKind::Uring => uring::run_until(config, shutdown, kits),
        EngineKind::Epoll => epoll::run_until(config, shutdown, kits),
        EngineKind::Blocking => blocking::run_until(config, shutdown, kits),
    };
    // Every worker has returned and dropped its end, handing over its last lines.
    if let Some(log) = log {
        log.finish();
    }
    result
}

/// A human-readable report of the kernel features ringlb probes and what it will use, and of
/// the pipes splice mode would get.
pub fn doctor() -> Result<String, EngineError> {
    use crate::config::defaults::{DEFAULT_MAX_PIPES, DEFAULT_PIPE_SIZE};
    let mut out = uring::probe::report()?;
    out.push_str("\npipes (splice and auto modes):\n");
    out.push_str(&crate::sys::pipe::doctor_report(DEFAULT_PIPE_SIZE as usize));
    let worst = u64::from(DEFAULT_MAX_PIPES) * u64::from(DEFAULT_PIPE_SIZE);
    out.push_str(&format!(
        "max_pipes {DEFAULT_MAX_PIPES} (default): at most {} MiB of pipes per worker\n",
        worst >> 20
    ));
    Ok(out)
}
