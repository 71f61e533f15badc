//! The epoll engine: a baseline to compare io_uring against.
//!
//! The same thread-per-core shape as the io_uring engine: one pinned worker per configured CPU,
//! each with its own `SO_REUSEPORT` listeners, [`Shard`], epoll instance, buffer pool and pipe
//! pool, sharing nothing. Sockets are non-blocking and registered edge-triggered once for both
//! directions; an action is tried with a direct system call at once ([`crate::engine::op`]'s
//! `run` side), and only an `EAGAIN` makes it wait, remembered in the connection's payload, for
//! the readiness that will retry it (see `conn_io.rs`).
//!
//! The core enforces the connect timeout on its timer wheel (`EngineTraits::enforces_connect_timeout` is false).
//! Every worker counts how many reads returned `EAGAIN` (the cost that readiness-based I/O pays
//! and completion-based I/O does not) and logs it, with the engine-wide total, at shutdown.

mod conn_io;
mod control;
mod resources;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustix::event::epoll;

use self::conn_io::ConnIo;
use self::resources::{BufferPool, Resources};
use self::worker::Worker;
use super::admission::Admission;
use super::runtime::WorkerKit;
use super::signal::Shutdown;
use super::{EngineError, plan};
use crate::config::Config;
use crate::core::shard::Shard;
use crate::sys::pipe::PipePool;

pub use self::resources::IoStats;

/// epoll data tag of a listener (the slot index carries the listener's index).
const TAG_LISTENER: u8 = 0;
/// epoll data tag of a connection's client socket.
const TAG_CLIENT: u8 = 1;
/// epoll data tag of a backend socket; connect attempt `n` uses `TAG_BACKEND + n`.
const TAG_BACKEND: u8 = 2;
/// epoll data tag of the worker's inbox eventfd (above any backend attempt's tag).
const TAG_INBOX: u8 = 255;
/// epoll data tag of the worker's UDP relay (see [`crate::engine::udp`]).
const TAG_UDP: u8 = 254;

/// How the core drives this engine: it enforces the connect timeout on its wheel.
const TRAITS: plan::EngineTraits = plan::EngineTraits {
    enforces_connect_timeout: false,
    copy_buffers: 1,
};

/// Most free receive buffers a worker keeps.
const MAX_IDLE_BUFFERS: usize = 1024;

/// Run the epoll data plane until `shutdown` is requested (by a signal, or by the caller: the
/// demo, in-process tests), then drain for up to `shutdown_grace`.
pub fn run_until(
    config: Config,
    shutdown: Shutdown,
    kits: Vec<crate::engine::runtime::WorkerKit>,
) -> Result<(), EngineError> {
    let fd_limit = crate::sys::limits::raised_nofile();
    tracing::info!(
        max_connections = config.connections.max_connections,
        %fd_limit,
        "connection limit"
    );
    let admission = Arc::new(Admission::for_config(&config));
    let cpus = config.worker_cpus();
    let config = Arc::new(config);
    let snapshots = plan::pool_snapshots(&config);
    let totals = Arc::new(Mutex::new(IoStats::default()));
    let kits = super::worker::Handout::new(kits);
    let body = {
        let (config, shutdown, totals) =
            (Arc::clone(&config), shutdown.clone(), Arc::clone(&totals));
        let admission = Arc::clone(&admission);
        move |info: super::worker::WorkerInfo, ready: &super::worker::Ready| {
            let admission = Arc::clone(&admission);
            let WorkerKit {
                inbox,
                listeners,
                logging,
            } = kits.take(info.index)?;
            let shard = shard(&config, &snapshots, info.index).with_capacity(inbox.capacity());
            let udp = super::udp::UdpRelay::new(
                info.index,
                &plan::udp_plans(&config),
                &snapshots,
                super::udp::ClientReads::Relay,
            )?;
            let shard = logging.fit(shard);
            let worker = setup(
                &config,
                shard,
                (listeners, udp),
                info.index,
                admission,
                shutdown.clone(),
            )?
            .attach(inbox, logging)?;
            ready.ok();
            let stats = worker.run()?;
            totals.lock().unwrap_or_else(|p| p.into_inner()).add(&stats);
            Ok(())
        }
    };
    let (stopper, up) = (shutdown.clone(), shutdown.clone());
    super::worker::run_pinned_notify(
        &cpus,
        "ringlb-epoll",
        body,
        move || stopper.request(),
        move || up.mark_up(),
    )?;
    let total = *totals.lock().unwrap_or_else(|p| p.into_inner());
    tracing::info!(
        reads = total.reads,
        reads_eagain = total.reads_eagain,
        eagain_share = format_args!("{:.3}", total.eagain_share()),
        writes = total.writes,
        writes_eagain = total.writes_eagain,
        accepted = total.accepted,
        admission = ?admission.stats(),
        "epoll engine stopped"
    );
    Ok(())
}

/// Worker `index`'s shard.
fn shard(
    config: &Config,
    snapshots: &[Arc<crate::core::balance::PoolSnapshot>],
    index: usize,
) -> Shard<ConnIo> {
    Shard::new(
        Instant::now(),
        plan::listener_policies(config, &TRAITS),
        snapshots.to_vec(),
        config.tuning.max_connections as usize,
        index,
    )
    .guard_stalls()
}

/// Everything one worker needs, registered, around its `shard` and `listeners`.
fn setup(
    config: &Config,
    shard: Shard<ConnIo>,
    (listeners, udp): (Vec<socket2::Socket>, super::udp::UdpRelay),
    index: usize,
    admission: Arc<Admission>,
    shutdown: Shutdown,
) -> Result<Worker, EngineError> {
    for socket in &listeners {
        // Taken over from an engine that accepts blocking, it may not be yet.
        socket
            .set_nonblocking(true)
            .map_err(|e| EngineError::io("a listening socket", e))?;
    }
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| EngineError::io("epoll_create1", e.into()))?;
    let tuning = &config.tuning;
    let res = Resources {
        epoll,
        pipes: PipePool::new(
            tuning.pipe_size as usize,
            tuning.pipe_pool as usize,
            tuning.max_pipes as usize,
        ),
        pipes_log: crate::engine::rate_limit::RateLimit::default(),
        worker: index,
        buffers: BufferPool::new(tuning.buffer_size as usize, MAX_IDLE_BUFFERS),
        stats: IoStats::default(),
        turn: 0,
        deferred: Vec::new(),
        server_options: config.tcp.server,
    };
    Worker::new(
        index,
        (shard, tuning.max_connections as usize),
        res,
        (listeners, udp),
        admission,
        (shutdown, config.timeouts.shutdown_grace),
    )
}
