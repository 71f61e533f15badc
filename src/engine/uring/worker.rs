//! One io_uring worker: its ring, listeners, buffers, pipes and shard, and the loop that drives
//! them. Submitting actions lives in `submit.rs`, handling completions in `complete.rs`.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types;

use super::accept::Listening;
use super::buf_ring::Buffers;
use super::conn_io::ConnIo;
use super::control::Wake;
use super::probe::Plan;
use super::ring::Ring;
use super::send_ring::SendRings;
use super::udp::UdpReceiver;
use crate::config::{Config, SocketOptions};
use crate::core::balance::PoolSnapshot;
use crate::core::conn::Dir;
use crate::core::shard::Shard;
use crate::core::slot::{SlotKey, UserData};
use crate::engine::admission::Admission;
use crate::engine::inbox::Inbox;
use crate::engine::rate_limit::{self, RateLimit};
use crate::engine::runtime::{Drain, Logging, Step, WorkerKit};
use crate::engine::signal::Shutdown;
use crate::engine::udp::{ClientReads, UdpRelay};
use crate::engine::worker::WorkerInfo;
use crate::engine::{EngineError, plan};
use crate::sys::pipe::PipePool;

/// The loop wakes at least this often, to notice a shutdown request, re-arm backed-off
/// accepts and see slots other workers freed.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Copy mode: buffers of one direction that may wait to be sent (sent together, see
/// `MAX_SEND_CHUNKS`) before its receive pauses: 16 × 16 KiB, the default pipe's size.
pub(super) const COPY_BUFFERS: u64 = 16;
/// How the core drives this engine.
pub(super) const TRAITS: plan::EngineTraits = plan::EngineTraits {
    enforces_connect_timeout: true,
    copy_buffers: COPY_BUFFERS,
};
/// After the grace period and this much more (or the grace period again, if longer), a worker
/// whose operations never all completed stops anyway.
const HARD_STOP_MIN: Duration = Duration::from_secs(2);

/// Counters for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub accept_errors: u64,
    pub backend_socket_errors: u64,
    pub parked_no_buffers: u64,
    pub parked_pipe_full: u64,
    pub parked_queue_full: u64,
    pub spurious_wakeups: u64,
    pub splice_eagain: u64,
    /// Copy mode: bundle sends submitted.
    pub bundle_sends: u64,
    /// Copy mode: multi-buffer `sendmsg`s submitted (no bundles, or no send ring free).
    pub sendmsg_sends: u64,
    /// Copy mode: bundle completions whose first entry was not the one expected (the
    /// connection is failed rather than sending out of order; never seen so far).
    pub bundle_out_of_step: u64,
    /// Copy mode: send rings reset because a bundle ended with entries pending.
    pub send_ring_resets: u64,
    /// Copy mode: bundles the kernel gave up with `ECANCELED` (moved to io-wq after 128 poll
    /// re-arms); their bytes are sent again by a fresh request.
    pub bundle_given_up: u64,
    /// Closes through the ring that failed.
    pub close_errors: u64,
    /// Submissions the ring refused for good (a chain longer than the queue, or an error
    /// that also stops the worker): each closed its connection, or delayed an accept or a
    /// closing connection's cancel. A kernel that says "later" refuses nothing: the ring
    /// holds the entries (see `Ring::push_chain`).
    pub queue_failures: u64,
}

/// Everything one worker owns. Field order matters: `ring` is dropped before `buffers` and
/// `send_rings`, so the kernel never holds a registered buffer ring whose memory is gone.
pub(super) struct Worker {
    pub ring: Ring,
    pub buffers: Buffers,
    /// UDP listeners' receive buffers, when the kernel has multishot receives (6.0).
    pub udp_rx: Option<UdpReceiver>,
    pub send_rings: SendRings,
    pub shard: Shard<ConnIo>,
    pub listeners: Vec<Listening>,
    pub pipes: PipePool,
    pub plan: Plan,
    /// The connect timeout, read by the kernel when the linked timeout is submitted.
    pub connect_timeout: types::Timespec,
    /// Keepalive and user timeout for backend sockets.
    pub server_options: SocketOptions,
    /// Accept and accept-cancel operations in flight (they belong to no connection).
    pub internal_in_flight: u32,
    /// Receives waiting for buffers to come back.
    pub starved: Vec<(SlotKey, Dir)>,
    /// Closing connections whose cancels the ring refused: queued again every loop turn.
    pub owed_cancels: Vec<SlotKey>,
    pub counters: Counters,
    /// Debug lines about resets.
    pub resets_log: RateLimit,
    /// Warnings about directions that found no pipe.
    pub pipes_log: RateLimit,
    pub completions: Vec<(u64, i32, u32)>,
    pub index: usize,
    /// Shutdown has begun: no new clients.
    pub stopping: bool,
    /// The process-wide connection count, shared with the other workers.
    pub admission: Arc<Admission>,
    /// `tuning.max_connections`: this worker's own table size.
    pub worker_max: usize,
    /// What the control side sends; its eventfd is polled in the ring (`wake`).
    pub inbox: Rc<Inbox>,
    /// The access log's lines, written once per loop turn.
    pub logging: Logging,
    pub wake: Wake,
    /// The worker's UDP listeners and flows, polled in the ring (`udp_poll`).
    pub udp: UdpRelay,
    pub udp_poll: Wake,
    /// Loop turns so far.
    pub turns: u64,
}

impl Worker {
    pub fn new(
        info: WorkerInfo,
        config: &Config,
        plan: Plan,
        pools: Vec<Arc<PoolSnapshot>>,
        admission: Arc<Admission>,
        kit: WorkerKit,
    ) -> Result<Worker, EngineError> {
        let tuning = &config.tuning;
        let ring = Ring::new(tuning.ring_entries, &plan, tuning.iowq_max_workers)
            .map_err(|e| EngineError::io("creating the io_uring instance", e))?;
        let count = u16::try_from(tuning.buffer_count).unwrap_or(32768);
        let buffers = if plan.buffer_ring {
            Buffers::ring(ring.raw(), count, tuning.buffer_size, plan.hot_buffers)
        } else {
            Buffers::pool(count, tuning.buffer_size)
        }
        .map_err(|e| EngineError::io("setting up receive buffers", e))?;
        let rings = u16::try_from(tuning.send_rings).unwrap_or(u16::MAX);
        let send_rings = SendRings::new(if plan.send_bundle { rings } else { 0 })
            .map_err(|e| EngineError::io("reserving send rings", e))?;
        let mut listeners = Vec::with_capacity(kit.listeners.len());
        for socket in kit.listeners {
            // Taken over from an engine that accepts blocking, it may not be yet.
            socket
                .set_nonblocking(true)
                .map_err(|e| EngineError::io("a listening socket", e))?;
            listeners.push(Listening::new(socket));
        }
        let now = Instant::now();
        let pools_for_udp = pools.clone();
        let shard = Shard::new(
            now,
            plan::listener_policies(config, &TRAITS),
            pools,
            tuning.max_connections as usize,
            info.index,
        )
        .guard_stalls()
        .with_capacity(kit.inbox.capacity());
        let shard = kit.logging.fit(shard);
        let udp_plans = plan::udp_plans(config);
        // Multishot `recvmsg` came with multishot `recv` (6.0); both want a buffer ring.
        let udp_rx = if plan.multishot_recv && !udp_plans.is_empty() {
            Some(
                UdpReceiver::new(ring.raw(), udp_plans.len())
                    .map_err(|e| EngineError::io("setting up UDP receive buffers", e))?,
            )
        } else {
            None
        };
        let reads = if udp_rx.is_some() {
            ClientReads::Engine
        } else {
            ClientReads::Relay
        };
        let udp = UdpRelay::new(info.index, &udp_plans, &pools_for_udp, reads)?;
        Ok(Worker {
            ring,
            buffers,
            udp_rx,
            send_rings,
            shard,
            listeners,
            pipes: PipePool::new(
                tuning.pipe_size as usize,
                tuning.pipe_pool as usize,
                tuning.max_pipes as usize,
            ),
            plan,
            connect_timeout: types::Timespec::from(config.timeouts.connect),
            server_options: config.tcp.server,
            internal_in_flight: 0,
            starved: Vec::new(),
            owed_cancels: Vec::new(),
            counters: Counters::default(),
            resets_log: RateLimit::new(rate_limit::RESET_LINES_PER_SECOND),
            pipes_log: RateLimit::default(),
            completions: Vec::with_capacity(1024),
            index: info.index,
            stopping: false,
            admission,
            worker_max: tuning.max_connections as usize,
            inbox: Rc::new(kit.inbox),
            logging: kit.logging,
            wake: Wake::Idle,
            udp,
            udp_poll: Wake::Idle,
            turns: 0,
        })
    }

    /// Tear down after [`Worker::run`]. After a clean run nothing is in flight and everything is
    /// freed. After an error, operations may still be in flight (io-wq work outlives the ring's
    /// fd by a moment), so the buffer memory the kernel could still write is deliberately left
    /// mapped: a leak on a path that ends the worker, instead of a use after free.
    pub fn finish(self, clean: bool) {
        let Worker {
            mut ring,
            buffers,
            send_rings,
            udp_rx,
            ..
        } = self;
        // Best effort after a failed run: closes still queued would otherwise wait for the
        // process's exit.
        let _ = ring.submit_and_wait(Duration::ZERO);
        drop(ring);
        if clean {
            drop(buffers);
            drop(send_rings);
            drop(udp_rx);
        } else {
            let _kept = std::mem::ManuallyDrop::new((buffers, send_rings, udp_rx));
        }
    }

    /// Serve until `shutdown` is requested, then drain for up to `grace`.
    pub fn run(&mut self, shutdown: &Shutdown, grace: Duration) -> Result<(), EngineError> {
        let mut drain = Drain::new(grace);
        loop {
            let now = Instant::now();
            self.turns += 1;
            self.serve_inbox();
            self.logging.write(&mut self.shard, now);
            let mut step = drain.step(shutdown, now, self.idle());
            if !self.stopping {
                self.serve_udp(now);
            }
            if step == Step::StartDraining {
                self.stopping = true;
                // UDP has no connections to drain: its sockets close now.
                self.cancel_udp_receives();
                self.udp.close();
                self.stop_accepting();
                tracing::info!(worker = self.index, open = self.shard.len(), "draining");
                step = drain.step(shutdown, now, self.idle());
            }
            match step {
                Step::Serve => self.steer_accepts(now),
                Step::Done => break,
                Step::Abort if !self.shard.is_empty() => {
                    tracing::info!(worker = self.index, open = self.shard.len(), "grace over");
                    self.shard.abort_all();
                }
                Step::Abort | Step::StartDraining | Step::Draining => {}
            }
            if drain.overdue(now, grace.max(HARD_STOP_MIN)) {
                // Something never completed (a kernel that ignores a cancel, say): stop
                // anyway rather than hang; the caller keeps the buffers mapped.
                tracing::error!(
                    worker = self.index,
                    open = self.shard.len(),
                    internal = self.internal_in_flight,
                    "operations still in flight long after the grace period; exiting"
                );
                return Err(EngineError::Worker {
                    worker: self.index,
                    message: "shutdown did not complete".into(),
                });
            }
            self.handle_timeouts(now)?;
            self.carry_out_actions(now);
            self.retry_starved();
            self.retry_cancels();

            // Buffers given back during this turn become visible to the kernel in one store.
            self.buffers.publish();
            let wait = self
                .shard
                .next_timeout()
                .map_or(MAX_WAIT, |t| t.saturating_duration_since(now).min(MAX_WAIT));
            let wait = self.udp.wait_cap(now, wait);
            self.ring
                .submit_and_wait(wait)
                .map_err(|e| EngineError::io("io_uring_enter", e))?;
            self.reap(Instant::now());
        }
        // Closes queued by the last completions go out now, not with the process's exit.
        if let Err(err) = self.ring.submit_and_wait(Duration::ZERO) {
            tracing::warn!(%err, "submitting the last closes");
        }
        self.logging.write(&mut self.shard, Instant::now());
        let stats = self.shard.stats();
        tracing::info!(
            worker = self.index,
            accepted = stats.accepted,
            closed = stats.closed,
            ?stats.resets,
            enters = self.ring.enters(),
            enters_refused = self.ring.refused(),
            copy_fallbacks = stats.copy_fallbacks,
            pipes = ?self.pipes.stats(),
            buffers_held = self.buffers.held(),
            spilled = ?self.buffers.spilled(),
            ring_dry = self.buffers.dry(),
            send_rings = self.send_rings.registered(),
            send_rings_leased = self.send_rings.leased(),
            send_rings_exhausted = self.send_rings.exhausted(),
            udp_rearms = self.udp_rx.as_ref().map_or(0, |r| r.rearms),
            ?self.counters,
            "worker stopped"
        );
        Ok(())
    }

    /// Nothing open: no connection, no accept or cancel in flight.
    fn idle(&self) -> bool {
        self.shard.is_empty() && self.internal_in_flight == 0
    }

    /// Handle every completion that has arrived.
    fn reap(&mut self, now: Instant) {
        let mut completions = std::mem::take(&mut self.completions);
        self.ring.drain(&mut completions);
        for &(user_data, result, flags) in &completions {
            self.complete(now, UserData(user_data), result, flags);
        }
        completions.clear();
        self.completions = completions;
    }

    /// Fire due timers, but only after everything that arrived before `now` has been seen.
    /// With DEFER_TASKRUN, data that arrived while this thread was busy (or descheduled, on
    /// a loaded machine) becomes a completion only when the thread next enters the kernel; an
    /// idle timer checked first would close a connection whose bytes are already waiting. So
    /// when a timer is due, one non-waiting enter runs the pending work first. Timers are
    /// rarely due, so this costs nothing per request.
    fn handle_timeouts(&mut self, now: Instant) -> Result<(), EngineError> {
        if self.shard.next_timeout().is_some_and(|due| due <= now) {
            self.ring
                .submit_and_wait(Duration::ZERO)
                .map_err(|e| EngineError::io("io_uring_enter", e))?;
            self.reap(now);
            self.carry_out_actions(now);
        }
        self.shard.handle_timeouts(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::net::{TcpListener, TcpStream};

    use socket2::Socket;

    use super::*;
    use crate::config::{BackendSpec, Overrides};
    use crate::engine::uring::probe::KernelFeatures;

    /// A connection whose operations the ring refuses is closed as a local failure, and the
    /// worker goes on. A 1-entry ring (below what validation allows, so set by hand) cannot
    /// take a connect and its linked timeout: that used to end the worker, and with it every
    /// other ("queueing a submission: submission queue full").
    #[test]
    fn a_refused_submission_closes_only_its_connection() {
        let kernel = match KernelFeatures::probe() {
            Ok(kernel) if kernel.missing_required().is_empty() => kernel,
            _ => {
                eprintln!("SKIP: io_uring cannot run here");
                return;
            }
        };
        let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
        let spec: BackendSpec = backend
            .local_addr()
            .expect("address")
            .to_string()
            .parse()
            .expect("spec");
        let mut config =
            Config::from_quick_with("127.0.0.1:1", &[spec], &Overrides::default(), &[0])
                .expect("valid");
        config.listeners[0].bind = "127.0.0.1:0".parse().expect("address");
        config.tuning.ring_entries = 1;
        config.tuning.buffer_count = 16;
        config.tuning.send_rings = 1;
        let plan = kernel.plan(&config.features);
        let info = WorkerInfo { index: 0, cpu: 0 };
        let admission = Arc::new(Admission::new(16, 0));
        let (_link, inbox) = crate::engine::inbox::pair(0).expect("inbox");
        let mut worker = Worker::new(
            info,
            &config,
            plan,
            plan::pool_snapshots(&config),
            admission,
            WorkerKit {
                inbox,
                listeners: vec![
                    crate::engine::socket::listener(
                        config.listeners[0].bind,
                        16,
                        true,
                        &config.tcp.client,
                        false,
                    )
                    .expect("listener"),
                ],
                logging: Logging::off(),
            },
        )
        .expect("worker");

        // A client, handed over as an accept completion would hand it.
        let front = TcpListener::bind("127.0.0.1:0").expect("front");
        let mut client = TcpStream::connect(front.local_addr().expect("address")).expect("connect");
        let (accepted, peer) = front.accept().expect("accept");
        let now = Instant::now();
        let key = worker
            .shard
            .accept(now, 0, peer, ConnIo::new(Socket::from(accepted)))
            .expect("room for a connection");
        // The connect chain is refused: the connection fails locally, and with nothing in
        // flight it is released at once.
        worker.carry_out_actions(now);
        assert!(
            worker.shard.io_mut(key).is_none(),
            "the connection is released"
        );
        assert_eq!(worker.shard.stats().resets.local, 1);
        assert_eq!(worker.counters.queue_failures, 1);
        // Its socket's close was queued; once submitted, the client sees the reset.
        worker.ring.submit_and_wait(Duration::ZERO).expect("submit");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let err = client
            .read(&mut [0u8; 1])
            .expect_err("reset, not data or end of stream");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
        worker.finish(true);
    }
}
