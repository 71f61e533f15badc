//! Worker threads: one per CPU, pinned, started together and joined together.

use std::sync::mpsc;
use std::thread;

use super::EngineError;

/// What one worker learns about itself at start.
#[derive(Clone, Copy, Debug)]
pub struct WorkerInfo {
    /// 0-based worker number.
    pub index: usize,
    /// The CPU it is pinned to.
    pub cpu: usize,
}

/// Tells the spawner that this worker finished its set-up (listeners bound, ring ready), or
/// why it could not.
#[derive(Debug)]
pub struct Ready(mpsc::Sender<Result<(), String>>);

impl Ready {
    /// Set-up succeeded; the spawner may report the server as up.
    pub fn ok(&self) {
        // The spawner waits for every worker's word; a closed channel means it already gave
        // up, and there is nobody left to tell.
        let _ = self.0.send(Ok(()));
    }

    /// Set-up failed with `message`.
    pub fn failed(&self, message: String) {
        let _ = self.0.send(Err(message));
    }
}

/// Start one thread per entry of `cpus`, pin it, and run `body` on it. Returns once every
/// worker has returned. If any worker fails its set-up, `on_setup_failure` is called (to stop
/// the others) and the first failure is returned after all have been joined.
pub fn run_pinned<F>(
    cpus: &[usize],
    name: &str,
    body: F,
    on_setup_failure: impl Fn(),
) -> Result<(), EngineError>
where
    F: Fn(WorkerInfo, &Ready) -> Result<(), EngineError> + Send + Sync + Clone + 'static,
{
    run_pinned_notify(cpus, name, body, on_setup_failure, || {})
}

/// [`run_pinned`], calling `on_up` once every worker has finished its set-up (all listeners
/// bound), so that a caller in the same process knows when connections spread over all workers.
pub fn run_pinned_notify<F>(
    cpus: &[usize],
    name: &str,
    body: F,
    on_setup_failure: impl Fn(),
    on_up: impl Fn(),
) -> Result<(), EngineError>
where
    F: Fn(WorkerInfo, &Ready) -> Result<(), EngineError> + Send + Sync + Clone + 'static,
{
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(cpus.len());
    for (index, &cpu) in cpus.iter().enumerate() {
        let body = body.clone();
        let ready = Ready(tx.clone());
        let handle = thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    tracing::warn!(worker = index, cpu, "could not pin worker to its CPU");
                }
                let result = body(WorkerInfo { index, cpu }, &ready);
                if let Err(err) = &result {
                    ready.failed(err.to_string());
                }
                result
            })
            .map_err(|e| EngineError::io("spawning a worker thread", e))?;
        handles.push(handle);
    }
    drop(tx);
    let mut first_error = None;
    for _ in 0..cpus.len() {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                on_setup_failure();
                first_error.get_or_insert(message);
                break;
            }
            // Every sender is gone: all workers have ended (their errors come from join).
            Err(_) => break,
        }
    }
    if first_error.is_none() {
        tracing::info!(workers = cpus.len(), "ringlb is up");
        on_up();
    }
    let mut result = Ok(());
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                if result.is_ok() {
                    result = Err(err);
                }
            }
            Err(_) => {
                if result.is_ok() {
                    result = Err(EngineError::Worker {
                        worker: index,
                        message: "panicked".into(),
                    });
                }
            }
        }
    }
    match (result, first_error) {
        (Err(err), _) => Err(err),
        (Ok(()), Some(message)) => Err(EngineError::Worker { worker: 0, message }),
        (Ok(()), None) => Ok(()),
    }
}
