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

/// One value per worker (its inbox), handed out by index to the worker body, which every
/// worker thread shares.
#[derive(Debug)]
pub struct Handout<T>(std::sync::Arc<std::sync::Mutex<Vec<Option<T>>>>);

impl<T> Clone for Handout<T> {
    fn clone(&self) -> Self {
        Handout(std::sync::Arc::clone(&self.0))
    }
}

impl<T> Handout<T> {
    pub fn new(values: Vec<T>) -> Self {
        Handout(std::sync::Arc::new(std::sync::Mutex::new(
            values.into_iter().map(Some).collect(),
        )))
    }

    /// Worker `index`'s value; an error if there is none or it was taken already.
    pub fn take(&self, index: usize) -> Result<T, EngineError> {
        let mut values = self.0.lock().unwrap_or_else(|p| p.into_inner());
        values
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| EngineError::Worker {
                worker: index,
                message: "no inbox for this worker".into(),
            })
    }
}

/// Tells the spawner that its worker panicked, as the panic unwinds past it.
struct ReportPanic<'a>(&'a Ready);

impl Drop for ReportPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.failed("panicked".into());
        }
    }
}

/// Start one thread per entry of `cpus`, pin it, and run `body` on it. Returns once every
/// worker has returned. If any worker fails, in its set-up or later (an error or a panic),
/// `on_setup_failure` is called (to stop the others) and the first failure is returned after
/// all have been joined.
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
        let spawned = thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    tracing::warn!(worker = index, cpu, "could not pin worker to its CPU");
                }
                // A panic is reported like an error, so that the others are stopped too.
                let _report = ReportPanic(&ready);
                let result = body(WorkerInfo { index, cpu }, &ready);
                if let Err(err) = &result {
                    ready.failed(err.to_string());
                }
                result
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                // Stop the workers already started, and wait for them: they hold what the
                // caller waits on at its exit (the access log's ends, say).
                on_setup_failure();
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(EngineError::io("spawning a worker thread", e));
            }
        }
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
        // Until every worker has ended: one that fails (or panics) while serving stops the
        // others, so that the process exits with its error instead of serving on short of a
        // worker.
        for message in &rx {
            if let Err(message) = message {
                tracing::error!(%message, "a worker failed; stopping the others");
                on_setup_failure();
                first_error.get_or_insert(message);
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// Issue 10, item 5: a worker that panicked while serving left the others running, so the
    /// process served on short of a worker. Now the others are stopped and the panic is the
    /// result.
    #[test]
    fn a_worker_that_panics_while_serving_stops_the_others() {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let watched = Arc::clone(&stop);
        let started = Instant::now();
        let result = run_pinned(
            &[0, 0],
            "test-worker",
            move |info, ready| {
                ready.ok();
                if info.index == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                    panic!("worker 0 fails while serving (expected by this test)");
                }
                // Worker 1 serves until it is told to stop (at most 5 s).
                while !watched.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            },
            move || stopping.store(true, Ordering::Relaxed),
        );
        let took = started.elapsed();
        assert!(
            stop.load(Ordering::Relaxed),
            "the other worker was not told to stop"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
        match result {
            Err(EngineError::Worker { message, .. }) => assert_eq!(message, "panicked"),
            other => panic!("expected the panic as the result, got {other:?}"),
        }
    }
}
