//! The blocking engine: the classic thread-per-connection design, as a baseline.
//!
//! One acceptor thread per listener (a 100 ms `poll`, then a non-blocking `accept`, so that it
//! notices shutdown), and per connection two threads with blocking sockets: the connection
//! thread connects and then forwards upstream, a helper forwards downstream. All of them share
//! one [`Shard`] behind one mutex (see `shared.rs`), locked once per event: connection-state
//! decisions still come only from the core, and the lock contention is part of what this
//! baseline measures. Copy, splice (a `poll` before each non-blocking splice) and auto modes all
//! work.
//!
//! Timeouts: the connect timeout is a blocking connect with a timeout (so the core leaves it to
//! the engine: `EngineTraits::enforces_connect_timeout`); the idle timeout is the core's, driven by the
//! supervising thread (the caller of [`run_until`]) calling `handle_timeouts` every [`TICK`]; a close
//! shuts the connection's sockets down, which wakes its blocked threads.
//!
//! UDP listeners are served by the same relay as in the other engines
//! ([`crate::engine::udp`]), run on the supervising thread: it waits on the relay's descriptor
//! beside the inbox's. (A blocking reader thread per flow would not stay bounded at tens of
//! thousands of flows.)
//!
//! `max_connections` bounds connections in total (and so threads, two per connection), and so
//! does `tuning.max_connections` and what the machine allows threads (`thread_budget`): while
//! they are all taken, acceptors do not call `accept`, and clients wait in the listen backlog.

mod acceptor;
mod conn;
mod shared;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use self::shared::Shared;
use super::admission::Admission;
use super::inbox::{Inbox, WorkerReport};
use super::runtime::{self, Controlled, Drain, Logging, Step, Usage};
use super::signal::Shutdown;
use super::{EngineError, plan};
use crate::config::Config;
use crate::core::balance::PoolSnapshot;
use crate::core::shard::Shard;

/// How the core drives this engine: connects block with the timeout themselves.
const TRAITS: plan::EngineTraits = plan::EngineTraits {
    enforces_connect_timeout: true,
    copy_buffers: 1,
};

/// How often the supervisor fires timers and looks at the shutdown flag.
pub const TICK: Duration = Duration::from_millis(50);

/// Run the blocking data plane until `shutdown` is requested (by a signal, or by the caller: the
/// demo, in-process tests), then drain for up to `shutdown_grace`.
pub fn run_until(
    config: Config,
    shutdown: Shutdown,
    kits: Vec<runtime::WorkerKit>,
) -> Result<(), EngineError> {
    // One shard, so one kit (see `engine::worker_count`).
    let Some(kit) = kits.into_iter().next() else {
        return Err(EngineError::Worker {
            worker: 0,
            message: "no inbox for the blocking engine".into(),
        });
    };
    let fd_limit = crate::sys::limits::raised_nofile();
    let listeners = kit
        .listeners
        .into_iter()
        .map(acceptor::prepare)
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| EngineError::io("a listening socket", e))?;
    let tuning = &config.tuning;
    let max_connections = thread_budget(tuning.max_connections as usize);
    let limit = max_connections.min(config.connections.max_connections as usize);
    tracing::info!(max_connections = limit, %fd_limit, "connection limit");
    let admission = Admission::new(limit, config.connections.budget.overshoot as usize);
    let shard = Shard::new(
        Instant::now(),
        plan::listener_policies(&config, &TRAITS),
        plan::pool_snapshots(&config),
        max_connections,
        // One shard for the whole engine: worker 0.
        0,
    )
    .guard_stalls()
    .with_capacity(kit.inbox.capacity());
    let shard = kit.logging.fit(shard);
    let shared = Arc::new(Shared::new(
        shard,
        tuning.buffer_size as usize,
        crate::sys::pipe::PipePool::new(
            tuning.pipe_size as usize,
            tuning.pipe_pool as usize,
            tuning.max_pipes as usize,
        ),
        config.timeouts.connect,
        config.tcp.server,
        admission,
        config.listeners.len(),
    ));
    let udp = super::udp::UdpRelay::new(
        0,
        &plan::udp_plans(&config),
        &plan::pool_snapshots(&config),
        super::udp::ClientReads::Relay,
    )?;
    let mut supervisor = Supervisor {
        udp,
        shared: &shared,
        turns: 0,
        logging: kit.logging,
        acceptors: Vec::with_capacity(listeners.len()),
        listening: Vec::with_capacity(listeners.len()),
        shutdown: shutdown.clone(),
    };
    for (index, listener) in listeners.into_iter().enumerate() {
        if let Err(err) = supervisor.spawn_acceptor(index, listener) {
            shutdown.request();
            supervisor.join_acceptors();
            return Err(EngineError::io("spawning an acceptor thread", err));
        }
    }
    shutdown.mark_up();
    tracing::info!(
        listeners = supervisor.acceptors.len(),
        "ringlb is up (blocking engine)"
    );
    supervisor.run(&shutdown, config.timeouts.shutdown_grace, &kit.inbox);
    supervisor.join_acceptors();
    tracing::info!(
        stats = ?shared.stats(),
        admission = ?shared.admission.stats(),
        pipes = ?shared.pipe_stats(),
        "blocking engine stopped"
    );
    Ok(())
}

/// The supervisor as the control side sees it: the engine's one worker.
struct Supervisor<'a> {
    /// The UDP listeners and flows, run on this thread.
    udp: super::udp::UdpRelay,
    shared: &'a Arc<Shared>,
    turns: u64,
    /// The access log's lines, written at every tick.
    logging: Logging,
    /// One acceptor thread per listener (removed ones return early).
    acceptors: Vec<thread::JoinHandle<()>>,
    /// Duplicates of the acceptors' sockets, by listener (what a binary upgrade takes over);
    /// dropped when a listener is removed and when draining begins, so that the sockets close
    /// with their acceptors.
    listening: Vec<Option<socket2::Socket>>,
    shutdown: Shutdown,
}

impl Supervisor<'_> {
    /// Start listener `index`'s acceptor on `listener` (prepared: see `acceptor::prepare`).
    fn spawn_acceptor(&mut self, index: usize, listener: socket2::Socket) -> std::io::Result<()> {
        let switch = self
            .shared
            .switch(index)
            .ok_or_else(|| std::io::Error::other("no switch for the listener"))?;
        let copy = listener.try_clone()?;
        let handle = acceptor::spawn(listener, index, switch, self.shared, &self.shutdown)?;
        self.acceptors.push(handle);
        self.listening.resize_with(index, || None);
        self.listening.push(Some(copy));
        Ok(())
    }

    fn join_acceptors(&mut self) {
        for handle in self.acceptors.drain(..) {
            // An acceptor that panicked has stopped accepting; nothing else to do.
            let _ = handle.join();
        }
    }
}

impl Controlled for Supervisor<'_> {
    fn update_pool(&mut self, pool: usize, snapshot: Arc<PoolSnapshot>) {
        self.udp.update_pool(pool, &snapshot);
        self.shared.update_pool(pool, snapshot);
    }

    fn set_accepting(&mut self, listener: usize, on: bool) {
        if self.shared.switch(listener).is_some_and(|s| s.set(on)) {
            runtime::log_accepting(0, listener, on);
        }
    }

    fn add_listener(&mut self, listener: usize, socket: socket2::Socket) {
        if listener != self.shared.listeners() || self.shutdown.requested() {
            runtime::log_listener_refused(0, listener, self.shared.listeners());
            return;
        }
        let (index, _) = self.shared.add_switch();
        let started = acceptor::prepare(socket).and_then(|s| self.spawn_acceptor(index, s));
        match started {
            Ok(()) => runtime::log_listener(0, listener, true),
            Err(err) => {
                tracing::warn!(listener, %err, "new listener: no acceptor thread");
                if let Some(switch) = self.shared.switch(index) {
                    switch.close();
                }
            }
        }
    }

    fn listening(&self) -> Vec<(usize, std::os::fd::BorrowedFd<'_>)> {
        use std::os::fd::AsFd;
        self.listening
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.as_fd())))
            .collect()
    }

    fn close_listener(&mut self, listener: usize) {
        if let Some(copy) = self.listening.get_mut(listener) {
            *copy = None;
        }
        if let Some(switch) = self.shared.switch(listener) {
            // Its acceptor sees it within ACCEPT_WAKE and returns, closing the socket.
            switch.close();
            runtime::log_listener(0, listener, false);
        }
    }

    fn reconfigure(&mut self, config: &Config) {
        self.shared
            .reconfigure((&mut self.logging, &mut self.udp), config, &TRAITS);
    }

    fn admit(&mut self, grant: crate::core::capacity::Grant) {
        self.shared.admit(grant);
    }

    fn report(&self) -> WorkerReport {
        self.shared.worker_report(
            Usage {
                loop_turns: self.turns,
                access_log_dropped: self.logging.dropped(),
                ..Usage::default()
            },
            &self.udp,
        )
    }
}

/// Wait up to `timeout` for the inbox's eventfd or the UDP relay; re-arm the inbox when it
/// woke us. Returns whether the relay is readable.
fn wait_inbox(inbox: &Inbox, udp: &super::udp::UdpRelay, timeout: Duration) -> bool {
    let spec = Timespec::try_from(timeout).unwrap_or_default();
    let mut fds = [
        PollFd::from_borrowed_fd(inbox.wake_fd(), PollFlags::IN),
        PollFd::from_borrowed_fd(udp.fd(), PollFlags::IN),
    ];
    let count = if udp.is_empty() { 1 } else { 2 };
    // EINTR or any other failure: the tick is only shorter.
    if let Ok(1..) = poll(&mut fds[..count], Some(&spec)) {
        if !fds[0].revents().is_empty() {
            inbox.rearm();
        }
        return count == 2 && !fds[1].revents().is_empty();
    }
    false
}

impl Supervisor<'_> {
    /// Fire timers every [`TICK`] and when the shard's next one is due, write the access log
    /// every [`TICK`], and apply the inbox's messages as they come, until shutdown; then let connections finish for `grace`, abort the rest, and
    /// wait (bounded) for their threads to leave.
    fn run(&mut self, shutdown: &Shutdown, grace: Duration, inbox: &Inbox) {
        let mut drain = Drain::new(grace);
        let mut next_tick = Instant::now() + TICK;
        let shared = self.shared;
        loop {
            // Timers due before the tick (a queue's next token, a queue timeout) fire on time.
            let due = shared
                .next_timeout()
                .map_or(next_tick, |at| at.min(next_tick));
            let udp_due = self.udp.next_timeout();
            let wait = udp_due.map_or(due, |at| at.min(due));
            let readable = wait_inbox(
                inbox,
                &self.udp,
                wait.saturating_duration_since(Instant::now()),
            );
            self.turns += 1;
            runtime::apply_inbox(inbox, self);
            let now = Instant::now();
            if readable || udp_due.is_some_and(|at| at <= now) {
                self.udp.run(now);
            }
            if now < next_tick {
                if now >= due {
                    shared.tick(now);
                }
                continue;
            }
            next_tick = now + TICK;
            shared.tick(now);
            shared.write_log(&mut self.logging, now);
            let mut step = drain.step(shutdown, now, shared.len() == 0);
            if step == Step::StartDraining {
                // The acceptors see the same request and stop; the sockets close with them.
                self.listening.clear();
                // UDP has no connections to drain: its sockets close now.
                self.udp.close();
                tracing::info!(connections = shared.len(), "draining");
                step = drain.step(shutdown, now, shared.len() == 0);
            }
            match step {
                Step::Serve | Step::StartDraining | Step::Draining => {}
                Step::Done => break,
                Step::Abort => {
                    self.abort();
                    break;
                }
            }
        }
        shared.write_log(&mut self.logging, Instant::now());
    }

    /// The grace period is over: abort what is open and wait (bounded) for the threads.
    fn abort(&self) {
        let shared = self.shared;
        tracing::info!(connections = shared.len(), "grace period over; aborting");
        shared.abort_all();
        // Threads leave once woken; one still inside a connect leaves when it times out.
        let limit = Instant::now() + shared.connect_timeout() + Duration::from_secs(1);
        while shared.len() > 0 && Instant::now() < limit {
            thread::sleep(Duration::from_millis(10));
        }
        if shared.len() > 0 {
            tracing::warn!(
                connections = shared.len(),
                "connection threads still running at exit"
            );
        }
    }
}

/// Memory mappings one connection's two threads take: for each, its stack and guard page and
/// the signal stack and guard page that std sets up to report stack overflows, with margin.
const MAPS_PER_CONNECTION: usize = 10;
/// Mappings left for everything else in the process.
const MAPS_RESERVED: usize = 4096;

/// How many connections the machine can give two threads each. Past `vm.max_map_count`, a new
/// thread's start-up fails inside std (it cannot map its signal stack), which aborts the
/// process instead of returning an error; past `kernel.threads-max`, spawning fails. Refusing
/// connections beyond the budget keeps the engine alive: it is `max_connections` or less.
fn thread_budget(max_connections: usize) -> usize {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
    };
    let by_maps = read("/proc/sys/vm/max_map_count")
        .map(|maps| maps.saturating_sub(MAPS_RESERVED) / MAPS_PER_CONNECTION);
    let by_threads = read("/proc/sys/kernel/threads-max").map(|threads| threads / 4);
    let budget = [Some(max_connections), by_maps, by_threads]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(max_connections)
        .max(1);
    if budget < max_connections {
        tracing::info!(
            max_connections,
            budget,
            "blocking engine: connections capped by vm.max_map_count / kernel.threads-max"
        );
    }
    budget
}
