//! The io_uring engine: one ring per pinned worker, multishot accept, copy mode over a
//! provided-buffer ring with multishot receive, and splice mode through pooled pipes.
//!
//! Each worker is a loop of one `io_uring_enter` per turn that both submits everything the core
//! asked for and waits for completions (or the next timer). Files: `probe` (what the kernel
//! has), `ring` (set-up and the single `push`), `region` (memory shared with the kernel),
//! `buf_ring` (receive buffers) and `buf_window` (how many the kernel sees), `send_ring` and `send_bundle` (send bundles), `conn_io`
//! (per-connection I/O state), `control` (the inbox's wake-up, the runtime's commands), `worker` (the loop, shutdown), `accept` (arming and cancelling
//! accepts against the connection limit), `submit` (actions to submissions), `close`
//! (cancelling and freeing a closed connection), `complete` (completions to events), `token`
//! (op codes in `user_data`).

mod accept;
mod buf_ring;
mod buf_window;
mod close;
mod complete;
mod conn_io;
mod control;
pub mod probe;
mod region;
mod ring;
mod send_bundle;
mod send_ring;
mod spill;
mod submit;
mod token;
mod udp;
mod worker;

use std::sync::Arc;

use crate::config::Config;
use crate::engine::admission::Admission;
use crate::engine::signal::Shutdown;
use crate::engine::{EngineError, plan, worker as workers};

/// Run until `shutdown` is requested (by a signal or by the caller, as the demo does).
pub fn run_until(
    config: Config,
    shutdown: Shutdown,
    kits: Vec<crate::engine::runtime::WorkerKit>,
) -> Result<(), EngineError> {
    let kernel = probe::KernelFeatures::probe()?;
    let missing = kernel.missing_required();
    if !missing.is_empty() {
        return Err(EngineError::Unsupported(format!(
            "the kernel lacks {}; use --engine epoll",
            missing.join(", ")
        )));
    }
    let plan = kernel.plan(&config.features);
    tracing::info!(?plan, "io_uring features");
    let fd_limit = crate::sys::limits::raised_nofile();
    let admission = Arc::new(Admission::for_config(&config));
    tracing::info!(
        max_connections = config.connections.max_connections,
        %fd_limit,
        "connection limit"
    );
    let pools = plan::pool_snapshots(&config);
    let cpus = config.worker_cpus();
    let grace = config.timeouts.shutdown_grace;
    let config = Arc::new(config);
    let kits = workers::Handout::new(kits);
    let shared = Arc::clone(&admission);
    let stop_others = shutdown.clone();
    let up = shutdown.clone();
    let result = workers::run_pinned_notify(
        &cpus,
        "ringlb-uring",
        move |info, ready| {
            let admission = Arc::clone(&shared);
            let kit = kits.take(info.index)?;
            let mut worker =
                worker::Worker::new(info, &config, plan, pools.clone(), admission, kit)?;
            ready.ok();
            // A panic must not unwind past the worker's buffers while the kernel may still
            // write to them: catch it, end the ring and keep the buffers mapped (`finish`),
            // then let it go on to the spawner, which stops the other workers.
            let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                worker.run(&shutdown, grace)
            })) {
                Ok(result) => result,
                Err(panic) => {
                    worker.finish(false);
                    std::panic::resume_unwind(panic);
                }
            };
            if let Err(err) = &result {
                // Say so now: the other workers keep serving until they are stopped too.
                tracing::error!(worker = info.index, %err, "worker failed");
                shutdown.request();
            }
            worker.finish(result.is_ok());
            result
        },
        move || stop_others.request(),
        move || up.mark_up(),
    );
    tracing::info!(admission = ?admission.stats(), "io_uring engine stopped");
    result
}
