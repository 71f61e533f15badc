//! The control half of the worker runtime that every engine shares: applying what the inbox
//! brings (pool snapshots, accept commands, report requests) between two loop turns, and
//! building the report a worker answers with.
//!
//! An engine implements [`Controlled`] for its worker (three short methods: each engine keeps
//! its listeners and its shard its own way) and calls [`apply_inbox`] once per loop turn, after
//! its wait and before it handles what the wait returned; it wakes from the wait when the
//! inbox's eventfd becomes readable (see [`crate::engine::inbox`]).
//!
//! The shutdown drain is here too ([`Drain`]): one state machine for when to stop accepting,
//! when the grace period is over and when a worker is done.

mod records;

pub use records::{Logging, Names};

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::access_log::AccessLog;
use super::inbox::{Inbox, Message, WorkerReport};
use super::plan::{EngineTraits, listener_policies};
use super::signal::Shutdown;
use crate::config::Config;
use crate::core::balance::PoolSnapshot;
use crate::core::shard::Shard;

/// What a worker is handed besides the configuration: its inbox, its listening sockets, and
/// its end of the access log.
#[derive(Debug)]
pub struct WorkerKit {
    pub inbox: Inbox,
    /// Its own socket of every listener, in configuration order (see `engine::listeners`).
    pub listeners: Vec<socket2::Socket>,
    pub logging: Logging,
}

/// One kit per inbox (in worker order) with that worker's `sockets`, each logging to `log`
/// when it is on.
pub fn kits(
    inboxes: Vec<Inbox>,
    sockets: Vec<Vec<socket2::Socket>>,
    log: Option<&AccessLog>,
    names: &Arc<Names>,
) -> Vec<WorkerKit> {
    inboxes
        .into_iter()
        .zip(sockets)
        .map(|(inbox, listeners)| WorkerKit {
            inbox,
            listeners,
            logging: log.map_or_else(Logging::off, |log| Logging::new(log, Arc::clone(names))),
        })
        .collect()
}

/// What an engine's worker does for the control side.
pub trait Controlled {
    /// Replace pool `pool`'s snapshot; established connections are kept.
    fn update_pool(&mut self, pool: usize, snapshot: Arc<PoolSnapshot>);
    /// Start (`on`) or stop taking clients on listener `listener`. Stopping leaves clients in
    /// the kernel's listen backlog; connections already accepted are kept.
    fn set_accepting(&mut self, listener: usize, on: bool);
    /// This worker's counters now.
    fn report(&self) -> WorkerReport;
    /// A reload's configuration (see [`Message::Reconfigure`]); most engines pass it on to
    /// [`reconfigure`].
    fn reconfigure(&mut self, config: &Config);
    /// See [`Message::AddListener`].
    fn add_listener(&mut self, listener: usize, socket: socket2::Socket);
    /// See [`Message::CloseListener`].
    fn close_listener(&mut self, listener: usize);
    /// The listening sockets this worker accepts on now, by listener index (borrowed; the
    /// runtime duplicates them for [`Message::Sockets`]).
    fn listening(&self) -> Vec<(usize, std::os::fd::BorrowedFd<'_>)>;
    /// See [`Message::Admit`]: most engines pass it to `Shard::admit`.
    fn admit(&mut self, grant: crate::core::capacity::Grant);
}

/// What a worker holds beyond its shard's counters, for its report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Loop turns so far.
    pub loop_turns: u64,
    /// Copy buffers held by connections now.
    pub buffers_in_use: u64,
    /// Pipes held by connections now.
    pub pipes_in_use: u64,
    /// Access-log lines dropped because the writer was behind.
    pub access_log_dropped: u64,
}

/// Apply every message waiting in `inbox` to `worker`, oldest first. Returns how many there
/// were (0 costs one atomic load). A report request whose asker has gone is dropped.
pub fn apply_inbox(inbox: &Inbox, worker: &mut impl Controlled) -> usize {
    let mut applied = 0;
    for message in inbox.drain() {
        applied += 1;
        match message {
            Message::Pool { pool, snapshot } => worker.update_pool(pool, snapshot),
            Message::Accepting { listener, on } => worker.set_accepting(listener, on),
            // The asker may have given up waiting; nothing to do then.
            Message::Report(reply) => drop(reply.send(worker.report())),
            Message::Reconfigure(config) => worker.reconfigure(&config),
            Message::AddListener { listener, socket } => worker.add_listener(listener, socket),
            Message::CloseListener { listener } => worker.close_listener(listener),
            Message::Sockets(reply) => drop(reply.send(duplicates(&worker.listening()))),
            Message::Admit(grant) => worker.admit(grant),
        }
    }
    applied
}

/// Worker `worker`'s report from its shard, its UDP relay and `usage`.
pub fn report<Io>(
    worker: usize,
    shard: &Shard<Io>,
    usage: Usage,
    udp: &super::udp::UdpRelay,
) -> WorkerReport {
    WorkerReport {
        worker,
        stats: shard.stats(),
        backends: (0..shard.pools())
            .map(|pool| shard.backend_counters(pool))
            .collect(),
        listeners: shard.listener_counters(),
        connections: shard.len() as u64,
        loop_turns: usage.loop_turns,
        buffers_in_use: usage.buffers_in_use,
        pipes_in_use: usage.pipes_in_use,
        access_log_dropped: usage.access_log_dropped,
        udp: udp.report(),
    }
}

/// Duplicates of `listening` (one that cannot be duplicated, out of fds, is left out: the new
/// process binds one afresh).
fn duplicates(listening: &[(usize, std::os::fd::BorrowedFd<'_>)]) -> Vec<(usize, socket2::Socket)> {
    listening
        .iter()
        .filter_map(|(index, fd)| {
            let owned = fd.try_clone_to_owned().ok()?;
            Some((*index, socket2::Socket::from(owned)))
        })
        .collect()
}

/// What every engine does with a reload's `config`: `shard`'s listener policies for an engine
/// of `traits`, the UDP flows' policies, and the names `logging` writes.
pub fn reconfigure<Io>(
    (shard, udp): (&mut Shard<Io>, &mut super::udp::UdpRelay),
    logging: &mut Logging,
    config: &Config,
    traits: &EngineTraits,
) {
    shard.set_listeners(listener_policies(config, traits));
    udp.reconfigure(&super::plan::udp_plans(config));
    logging.rename(Arc::new(Names::of(config)));
}

/// The address of a client just accepted, as the shard wants it: looked up (`getpeername`)
/// only when the pick or the access log needs it ([`Shard::needs_peer`]), otherwise the
/// unspecified address. `None`: it was needed, and the client is already gone.
pub fn client_addr<Io>(
    shard: &Shard<Io>,
    listener: usize,
    client: &socket2::Socket,
) -> Option<SocketAddr> {
    if !shard.needs_peer(listener) {
        return Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    }
    client.peer_addr().ok().and_then(|a| a.as_socket())
}

/// Log a listener's accept command once, the same way in every engine.
pub fn log_accepting(worker: usize, listener: usize, on: bool) {
    if on {
        tracing::info!(worker, listener, "listener enabled: accepting again");
    } else {
        tracing::info!(
            worker,
            listener,
            "listener disabled: clients wait in the backlog"
        );
    }
}

/// Log a listener a reload added (`true`) or removed on `worker`.
pub fn log_listener(worker: usize, listener: usize, added: bool) {
    if added {
        tracing::info!(worker, listener, "listener added by a reload: accepting");
    } else {
        tracing::info!(
            worker,
            listener,
            "listener removed by a reload: closed; its connections go on"
        );
    }
}

/// A new listener this worker cannot take: out of order (never expected), or stopping. Its
/// socket is closed; the other workers' sockets serve the address.
pub fn log_listener_refused(worker: usize, listener: usize, has: usize) {
    tracing::warn!(
        worker,
        listener,
        has,
        "new listener not taken: out of order or stopping"
    );
}

/// What a worker does at a loop turn, as far as stopping goes (see [`Drain::step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No stop requested: serve as usual.
    Serve,
    /// A stop was requested just now: stop accepting, then call [`Drain::step`] again.
    StartDraining,
    /// Draining: open connections go on; no new clients.
    Draining,
    /// The grace period is over (or a second stop signal came) with connections open:
    /// abort them now. Returned once.
    Abort,
    /// Nothing is left open: leave the loop.
    Done,
}

/// The shutdown drain every engine runs: serve until a stop is requested, then let open
/// connections finish for the grace period (cut short by a second stop signal), then abort
/// what is left. The engine says when it has nothing left (`idle`); only it knows what that
/// takes (connections released, operations completed, threads gone).
#[derive(Debug)]
pub struct Drain {
    grace: Duration,
    state: DrainState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DrainState {
    Serving,
    Draining { until: Instant },
    Aborted { at: Instant },
}

impl Drain {
    pub fn new(grace: Duration) -> Self {
        Drain {
            grace,
            state: DrainState::Serving,
        }
    }

    /// Once per loop turn, at `now`; `idle` when the worker holds nothing open any more.
    pub fn step(&mut self, shutdown: &Shutdown, now: Instant, idle: bool) -> Step {
        match self.state {
            DrainState::Serving if !shutdown.requested() => Step::Serve,
            DrainState::Serving => {
                self.state = DrainState::Draining {
                    until: now + self.grace,
                };
                Step::StartDraining
            }
            _ if idle => Step::Done,
            DrainState::Draining { until } => {
                // A second stop signal ends the grace period now.
                let until = shutdown.drain_until(until, now);
                if now >= until {
                    self.state = DrainState::Aborted { at: now };
                    Step::Abort
                } else {
                    self.state = DrainState::Draining { until };
                    Step::Draining
                }
            }
            DrainState::Aborted { .. } => Step::Draining,
        }
    }

    /// When the grace period ends, while draining (to bound the engine's waits).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            DrainState::Draining { until } => Some(until),
            DrainState::Serving | DrainState::Aborted { .. } => None,
        }
    }

    /// Whether connections were aborted at least `after` ago and the worker is still not idle:
    /// something never completed, and the engine should stop anyway rather than hang.
    pub fn overdue(&self, now: Instant, after: Duration) -> bool {
        matches!(self.state, DrainState::Aborted { at } if now >= at + after)
    }

    /// Whether a stop has begun.
    pub fn stopping(&self) -> bool {
        self.state != DrainState::Serving
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_serves_drains_aborts_once_and_ends_when_idle() {
        let shutdown = Shutdown::default();
        let grace = Duration::from_secs(1);
        let mut drain = Drain::new(grace);
        let t0 = Instant::now();
        assert_eq!(drain.step(&shutdown, t0, true), Step::Serve);
        shutdown.request();
        assert_eq!(drain.step(&shutdown, t0, false), Step::StartDraining);
        assert!(drain.stopping());
        assert_eq!(drain.deadline(), Some(t0 + grace));
        assert_eq!(drain.step(&shutdown, t0, false), Step::Draining);
        assert_eq!(drain.step(&shutdown, t0 + grace, false), Step::Abort);
        assert_eq!(drain.step(&shutdown, t0 + grace, false), Step::Draining);
        assert!(!drain.overdue(t0 + grace, grace));
        assert!(drain.overdue(t0 + 2 * grace, grace));
        assert_eq!(drain.step(&shutdown, t0 + grace, true), Step::Done);
    }

    #[test]
    fn a_second_signal_cuts_the_grace_short_and_idle_ends_at_once() {
        let shutdown = Shutdown::default();
        let mut drain = Drain::new(Duration::from_secs(30));
        let t0 = Instant::now();
        shutdown.request();
        assert_eq!(drain.step(&shutdown, t0, false), Step::StartDraining);
        shutdown.escalate();
        assert_eq!(drain.step(&shutdown, t0, false), Step::Abort);

        let calm = Shutdown::default();
        let mut drain = Drain::new(Duration::from_secs(30));
        calm.request();
        assert_eq!(drain.step(&calm, t0, true), Step::StartDraining);
        assert_eq!(drain.step(&calm, t0, true), Step::Done);
    }
}
