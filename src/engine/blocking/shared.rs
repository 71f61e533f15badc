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

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::conn::ConnHandle;
use crate::core::conn::{Action, Event};
use crate::core::shard::{Refused, Shard, ShardStats};
use crate::core::slot::SlotKey;

/// The shared shard and the settings every connection thread reads.
#[derive(Debug)]
pub struct Shared {
    shard: Mutex<Shard<Arc<ConnHandle>>>,
    /// Copy-mode buffer per direction.
    pub buffer_size: usize,
    /// Splice-mode pipe size per direction.
    pub pipe_size: usize,
    /// Limit of one blocking connect.
    pub connect_timeout: Duration,
}

impl Shared {
    /// Share `shard`.
    pub fn new(
        shard: Shard<Arc<ConnHandle>>,
        buffer_size: usize,
        pipe_size: usize,
        connect_timeout: Duration,
    ) -> Self {
        Shared {
            shard: Mutex::new(shard),
            buffer_size,
            pipe_size,
            connect_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shard<Arc<ConnHandle>>> {
        self.shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a new client; its `Connect` is posted before this returns.
    pub fn accept(
        &self,
        listener: usize,
        client: IpAddr,
        handle: Arc<ConnHandle>,
    ) -> Result<SlotKey, Refused> {
        let now = Instant::now();
        let mut shard = self.lock();
        let key = shard
            .accept(now, listener, client, handle)
            .map_err(|(reason, _)| reason)?;
        drive(&mut shard, now);
        Ok(key)
    }

    /// Feed one result and carry out what follows.
    pub fn report(&self, key: SlotKey, event: Event) {
        let now = Instant::now();
        let mut shard = self.lock();
        shard.handle_event(now, key, event);
        drive(&mut shard, now);
    }

    /// Free a connection whose threads have all left.
    pub fn release(&self, key: SlotKey) {
        self.lock().release(key);
    }

    /// Fire due timers (idle timeouts) and carry out what follows.
    pub fn tick(&self, now: Instant) {
        let mut shard = self.lock();
        shard.handle_timeouts(now);
        drive(&mut shard, now);
    }

    /// Close every connection now.
    pub fn abort_all(&self) {
        let mut shard = self.lock();
        shard.abort_all();
        drive(&mut shard, Instant::now());
    }

    /// Connections not yet released.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// The shard's counters.
    pub fn stats(&self) -> ShardStats {
        self.lock().stats()
    }
}

/// Drain every action, posting orders and carrying out the non-blocking ones; results of those
/// are fed back until nothing is left.
fn drive(shard: &mut Shard<Arc<ConnHandle>>, now: Instant) {
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
                        results.push((key, Event::Failed { side }));
                    }
                }
                Action::Close { reset, reason } => {
                    tracing::trace!(?key, ?reason, reset, "close");
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
