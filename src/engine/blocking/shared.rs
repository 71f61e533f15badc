//! The one shard every thread of the blocking engine shares, behind one mutex.
//!
//! Every event any thread reports takes the lock, feeds the event, and drains every action the
//! core then has, for any connection: an order for a direction thread is posted to that
//! connection's mailbox; `ShutdownWrite` and `Close` are carried out on the spot (neither
//! blocks). Holding one lock per event is deliberate: this is the classic design's cost, and
//! the contention on it at high connection counts is part of what this baseline shows.
//!
//! Lock order: the shard lock, then a connection's mailbox or backend lock. Threads never take
//! the shard lock while holding either.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::acceptor::Switch;
use super::conn::ConnHandle;
use crate::config::{Config, SocketOptions};
use crate::core::balance::PoolSnapshot;
use crate::core::conn::{Action, Event};
use crate::core::shard::{Refused, Shard, ShardStats};
use crate::core::slot::SlotKey;
use crate::engine::admission::{Admission, Admitted};
use crate::engine::inbox::WorkerReport;
use crate::engine::op::os_failure;
use crate::engine::plan::EngineTraits;
use crate::engine::rate_limit::{self, RateLimit};
use crate::engine::runtime::{self, Logging, Usage};
use crate::sys::pipe::{Pipe, PipePool, PipeStats};

/// The shared shard and the settings every connection thread reads.
#[derive(Debug)]
pub struct Shared {
    shard: Mutex<Locked>,
    /// Splice-mode pipes (`tuning.max_pipes` in total, as `max_connections`), and the
    /// warnings about directions that found none. Taken once per splicing direction, never
    /// with the shard lock held.
    pipes: Mutex<(PipePool, RateLimit)>,
    /// Copy-mode buffer per direction.
    pub buffer_size: usize,
    /// Limit of one blocking connect, in ns ([`Self::connect_timeout`]; a reload changes it).
    connect_timeout: AtomicU64,
    /// Keepalive and user timeout for backend sockets.
    pub server_options: SocketOptions,
    /// The process-wide connection count.
    pub admission: Admission,
    /// Copy buffers held by direction threads now.
    pub buffers_in_use: AtomicU64,
    /// By listener: whether its acceptor takes clients (the admin API's enable / disable, a
    /// reload's removal). Each acceptor holds its own; one relaxed load per accept.
    switches: Mutex<Vec<Arc<Switch>>>,
}

impl Shared {
    /// Share `shard`.
    pub fn new(
        shard: Shard<Arc<ConnHandle>>,
        buffer_size: usize,
        pipes: PipePool,
        connect_timeout: Duration,
        server_options: SocketOptions,
        admission: Admission,
        listeners: usize,
    ) -> Self {
        Shared {
            shard: Mutex::new(Locked {
                shard,
                resets_log: RateLimit::new(rate_limit::RESET_LINES_PER_SECOND),
            }),
            pipes: Mutex::new((pipes, RateLimit::default())),
            buffer_size,
            connect_timeout: AtomicU64::new(
                u64::try_from(connect_timeout.as_nanos()).unwrap_or(u64::MAX),
            ),
            server_options,
            admission,
            buffers_in_use: AtomicU64::new(0),
            switches: Mutex::new((0..listeners).map(|_| Arc::default()).collect()),
        }
    }

    /// Listener `listener`'s switch.
    pub fn switch(&self, listener: usize) -> Option<Arc<Switch>> {
        self.switches().get(listener).cloned()
    }

    /// A switch for a listener added after the last; its index.
    pub fn add_switch(&self) -> (usize, Arc<Switch>) {
        let mut switches = self.switches();
        switches.push(Arc::default());
        (
            switches.len() - 1,
            Arc::clone(&switches[switches.len() - 1]),
        )
    }

    /// How many listeners there are (closed ones included).
    pub fn listeners(&self) -> usize {
        self.switches().len()
    }

    fn switches(&self) -> MutexGuard<'_, Vec<Arc<Switch>>> {
        self.switches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace pool `pool`'s snapshot.
    pub fn update_pool(&self, pool: usize, snapshot: Arc<PoolSnapshot>) {
        self.lock().shard.update_pool(pool, snapshot);
    }

    /// Worker 0's report: the shard's counters, with `usage`.
    pub fn worker_report(
        &self,
        mut usage: Usage,
        udp: &crate::engine::udp::UdpRelay,
    ) -> WorkerReport {
        usage.buffers_in_use = self.buffers_in_use.load(Ordering::Relaxed);
        usage.pipes_in_use = self.pipe_stats().in_use as u64;
        runtime::report(0, &self.lock().shard, usage, udp)
    }

    /// A pipe for a direction that splices; `None` (warned about, within a rate limit) when
    /// none may be had: the direction then copies.
    pub fn take_pipe(&self) -> Option<Pipe> {
        let mut guard = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        let (pool, log) = &mut *guard;
        pool.get()
            .map_err(|why| rate_limit::log_no_pipe(log, Instant::now(), 0, &why))
            .ok()
    }

    /// Give back a pipe from [`Shared::take_pipe`]; `empty` as for `PipePool::put`.
    pub fn put_pipe(&self, pipe: Pipe, empty: bool) {
        let mut guard = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.put(pipe, empty);
    }

    /// The pipe pool's counters.
    pub fn pipe_stats(&self) -> PipeStats {
        self.pipes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .stats()
    }

    fn lock(&self) -> MutexGuard<'_, Locked> {
        self.shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a new client, counted against the process-wide limit (kept within the overshoot,
    /// see `engine::admission`); its `Connect` is posted before this returns.
    pub fn accept(
        &self,
        listener: usize,
        client: SocketAddr,
        handle: Arc<ConnHandle>,
    ) -> Result<SlotKey, Refused> {
        let now = Instant::now();
        if self.admission.admit() == Admitted::Refused {
            return Err(Refused::Full);
        }
        let mut locked = self.lock();
        let key = match locked.shard.accept(now, listener, client, handle) {
            Ok(key) => key,
            Err((reason, _)) => {
                self.admission.release();
                return Err(reason);
            }
        };
        locked.drive(now);
        Ok(key)
    }

    /// Feed one result and carry out what follows.
    pub fn report(&self, key: SlotKey, event: Event) {
        let now = Instant::now();
        let mut locked = self.lock();
        locked.shard.handle_event(now, key, event);
        locked.drive(now);
    }

    /// How many bytes connection `key`'s next inspect read may bring.
    pub fn inspect_room(&self, key: SlotKey) -> usize {
        self.lock().shard.inspect_room(key)
    }

    /// The bytes an inspect read of connection `key` brought (see `Shard::inspected`).
    pub fn inspected(&self, key: SlotKey, bytes: &[u8]) {
        let now = Instant::now();
        let mut locked = self.lock();
        locked.shard.inspected(now, key, bytes);
        locked.drive(now);
    }

    /// Free a connection whose threads have all left, and carry out what follows: a slot it
    /// gives back may let a waiting client out of the queue.
    pub fn release(&self, key: SlotKey) {
        let mut locked = self.lock();
        if locked.shard.release(key).is_some() {
            self.admission.release();
            locked.drive(Instant::now());
        }
    }

    /// A reload's configuration: see [`runtime::reconfigure`]; the connect timeout too.
    pub fn reconfigure(
        &self,
        (logging, udp): (&mut Logging, &mut crate::engine::udp::UdpRelay),
        config: &Config,
        traits: &EngineTraits,
    ) {
        runtime::reconfigure((&mut self.lock().shard, udp), logging, config, traits);
        let nanos = u64::try_from(config.timeouts.connect.as_nanos()).unwrap_or(u64::MAX);
        self.connect_timeout.store(nanos, Ordering::Relaxed);
    }

    /// The timeout of each backend connect.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_nanos(self.connect_timeout.load(Ordering::Relaxed))
    }

    /// Hand the connections finished since the last call to `logging`.
    pub fn write_log(&self, logging: &mut Logging, now: Instant) {
        logging.write(&mut self.lock().shard, now);
    }

    /// Let a waiting client out of the queue (see `Shard::admit`) and carry out what follows.
    pub fn admit(&self, grant: crate::core::capacity::Grant) {
        let now = Instant::now();
        let mut locked = self.lock();
        locked.shard.admit(now, grant);
        locked.drive(now);
    }

    /// Fire due timers (idle timeouts) and carry out what follows.
    pub fn tick(&self, now: Instant) {
        let mut locked = self.lock();
        locked.shard.handle_timeouts(now);
        locked.drive(now);
    }

    /// When the shard's next timer is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.lock().shard.next_timeout()
    }

    /// Close every connection now.
    pub fn abort_all(&self) {
        let mut locked = self.lock();
        locked.shard.abort_all();
        locked.drive(Instant::now());
    }

    /// Connections not yet released.
    pub fn len(&self) -> usize {
        self.lock().shard.len()
    }

    /// The shard's counters.
    pub fn stats(&self) -> ShardStats {
        self.lock().shard.stats()
    }
}

/// What the shard lock guards.
#[derive(Debug)]
struct Locked {
    shard: Shard<Arc<ConnHandle>>,
    /// Debug lines about resets.
    resets_log: RateLimit,
}

impl Locked {
    /// Drain every action, posting orders and carrying out the non-blocking ones; results of
    /// those are fed back until nothing is left.
    fn drive(&mut self, now: Instant) {
        let Locked { shard, resets_log } = self;
        drive(shard, resets_log, now);
    }
}

fn drive(shard: &mut Shard<Arc<ConnHandle>>, resets_log: &mut RateLimit, now: Instant) {
    let mut results: Vec<(SlotKey, Event)> = Vec::new();
    loop {
        while let Some((key, action)) = shard.poll_action() {
            let Some(handle) = shard.io(key).cloned() else {
                continue;
            };
            match action {
                Action::Connect { backend, .. } => {
                    handle.post_connect(shard.backend_addr(key, backend))
                }
                Action::Recv { dir, via } => handle.post_recv(dir, via),
                Action::Send { dir, via, queued } => handle.post_send(dir, via, queued),
                Action::CancelRecv { dir } => {
                    if handle.cancel_recv(dir) {
                        results.push((key, Event::RecvEnded { dir }));
                    }
                }
                Action::ShutdownWrite { side } => {
                    if let Err(err) = handle.shutdown_write(side) {
                        tracing::debug!(?side, %err, "shutdown(SHUT_WR) failed");
                        let failure = os_failure(&err);
                        results.push((key, Event::Failed { side, failure }));
                    }
                }
                Action::Inspect => handle.post_inspect(),
                Action::SendPreamble => {
                    let bytes = shard.take_preamble(key, |h| h.local_addr());
                    handle.post_preamble(bytes);
                }
                Action::Close { reset, reason } => {
                    tracing::trace!(?key, ?reason, reset, "close");
                    if reset {
                        // The blocking engine is one shard: worker 0.
                        rate_limit::log_reset(resets_log, now, 0, key, reason);
                    }
                    handle.close(reset);
                }
            }
        }
        if results.is_empty() {
            return;
        }
        for (key, event) in results.drain(..) {
            shard.handle_event(now, key, event);
        }
    }
}
