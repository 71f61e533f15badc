//! One epoll worker: its listeners, its shard and its event loop.
//!
//! Each turn: wait for readiness (no longer than the next timer, and at most
//! [`MAX_WAIT`] so that the shutdown flag is noticed), read the clock once, retry deferred
//! receives, handle every readiness event (accepting new clients, retrying parked operations),
//! fire due timers, then carry out every action the shard hands out.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{Timespec, epoll};
use socket2::Socket;

use super::conn_io::ConnIo;
use super::resources::{IoStats, Resources};
use super::{TAG_CLIENT, TAG_INBOX, TAG_LISTENER, TAG_UDP};
use crate::core::conn::{Action, Event, Failure, Side};
use crate::core::shard::Shard;
use crate::core::slot::{SlotKey, UserData};
use crate::engine::admission::Admission;
use crate::engine::inbox::Inbox;
use crate::engine::rate_limit::{self, RateLimit};
use crate::engine::runtime::{self, Drain, Logging, Step};
use crate::engine::signal::Shutdown;
use crate::engine::socket::{AcceptFailure, accept_failure};
use crate::engine::udp::UdpRelay;
use crate::engine::{EngineError, op};

/// Longest sleep in `epoll_wait`, so that a shutdown request is noticed promptly.
pub const MAX_WAIT: Duration = Duration::from_millis(100);
/// How long a listener stops accepting after running out of fds or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

/// Whether a listener is accepting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Accepting {
    /// Yes: readiness is acted on.
    Open,
    /// Stopped until then (fd or memory exhaustion).
    BackingOff(Instant),
    /// Stopped while the process (or this worker's table) is full: clients wait in the
    /// listen backlog; resumed at the end of a loop turn that finds room.
    Full,
    /// Stopped by the operator (admin API): clients wait in the listen backlog until the
    /// listener is enabled again.
    Disabled,
}

/// One listening socket of this worker.
#[derive(Debug)]
pub(super) struct ListenerSlot {
    /// `None` once closed for shutdown.
    socket: Option<Socket>,
    pub(super) accepting: Accepting,
    warn: RateLimit,
    refused_warn: RateLimit,
}

/// An epoll worker, set up and ready to run.
pub struct Worker {
    pub(super) index: usize,
    pub(super) shard: Shard<ConnIo>,
    pub(super) res: Resources,
    pub(super) listeners: Vec<ListenerSlot>,
    /// What the control side sends; its eventfd is registered with `TAG_INBOX`.
    pub(super) inbox: Option<std::rc::Rc<Inbox>>,
    /// The worker's UDP listeners and flows; its epoll fd is registered (level-triggered)
    /// with `TAG_UDP`.
    pub(super) udp: UdpRelay,
    /// The access log's lines, written once per loop turn.
    pub(super) logging: Logging,
    events: Vec<epoll::Event>,
    out: Vec<Event>,
    /// Where inspect reads land before the shard takes them (allocated on the first).
    scratch: Vec<u8>,
    pub(super) shutdown: Shutdown,
    grace: Duration,
    /// Debug lines about resets.
    resets_log: RateLimit,
    /// The process-wide connection count, shared with the other workers.
    admission: Arc<Admission>,
    /// `tuning.max_connections`: this worker's own table size.
    worker_max: usize,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("shard", &self.shard)
            .finish()
    }
}

impl Worker {
    /// A worker for `shard` (of `worker_max` connections), accepting on `listeners` (already
    /// bound and non-blocking) while `admission` has room.
    pub fn new(
        index: usize,
        (shard, worker_max): (Shard<ConnIo>, usize),
        res: Resources,
        (listeners, udp): (Vec<Socket>, UdpRelay),
        admission: Arc<Admission>,
        (shutdown, grace): (Shutdown, Duration),
    ) -> Result<Self, EngineError> {
        let mut slots = Vec::with_capacity(listeners.len());
        for (i, socket) in listeners.into_iter().enumerate() {
            slots.push(
                ListenerSlot::register(&res.epoll, i, socket)
                    .map_err(|e| EngineError::io("registering a listener with epoll", e))?,
            );
        }
        if !udp.is_empty() {
            let data = epoll::EventData::new_u64(UserData::internal(TAG_UDP).0);
            epoll::add(&res.epoll, udp.fd(), data, epoll::EventFlags::IN)
                .map_err(|e| EngineError::io("registering the UDP relay with epoll", e.into()))?;
        }
        Ok(Worker {
            index,
            shard,
            res,
            listeners: slots,
            inbox: None,
            udp,
            logging: Logging::off(),
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            out: Vec::new(),
            scratch: Vec::new(),
            resets_log: RateLimit::new(rate_limit::RESET_LINES_PER_SECOND),
            shutdown,
            grace,
            admission,
            worker_max,
        })
    }

    /// Serve until shutdown has been requested and every connection has ended (or the grace
    /// period ran out). Returns the worker's I/O counters.
    pub fn run(mut self) -> Result<IoStats, EngineError> {
        let mut drain = Drain::new(self.grace);
        let mut now = Instant::now();
        loop {
            let mut step = drain.step(&self.shutdown, now, self.shard.is_empty());
            if step == Step::StartDraining {
                self.close_listeners();
                // UDP has no connections to drain: its sockets close now.
                self.udp.close();
                tracing::info!(
                    worker = self.index,
                    connections = self.shard.len(),
                    "draining"
                );
                step = drain.step(&self.shutdown, now, self.shard.is_empty());
            }
            match step {
                Step::Done => break,
                Step::Abort => {
                    tracing::info!(
                        worker = self.index,
                        connections = self.shard.len(),
                        "grace period over; aborting"
                    );
                    // Closes are carried out at once: nothing is left after this.
                    self.shard.abort_all();
                    self.run_actions(now);
                    break;
                }
                Step::Serve | Step::StartDraining | Step::Draining => {}
            }
            let timeout = self.wait_timeout(now, drain.deadline());
            self.wait(timeout)?;
            now = Instant::now();
            self.res.turn += 1;
            self.serve_inbox();
            self.turn(now);
            self.logging.write(&mut self.shard, now);
        }
        self.logging.write(&mut self.shard, Instant::now());
        let stats = self.res.stats;
        tracing::info!(
            worker = self.index,
            reads = stats.reads,
            reads_eagain = stats.reads_eagain,
            eagain_share = format_args!("{:.3}", stats.eagain_share()),
            writes = stats.writes,
            writes_eagain = stats.writes_eagain,
            waits = stats.waits,
            shard = ?self.shard.stats(),
            pipes = ?self.res.pipes.stats(),
            "epoll worker stopped"
        );
        Ok(stats)
    }

    fn wait_timeout(&mut self, now: Instant, drain_until: Option<Instant>) -> Duration {
        if !self.res.deferred.is_empty() {
            return Duration::ZERO;
        }
        let deadlines = self
            .shard
            .next_timeout()
            .into_iter()
            .chain(self.udp.next_timeout())
            .chain(drain_until)
            .chain(self.listeners.iter().filter_map(|l| match l.accepting {
                Accepting::BackingOff(until) => Some(until),
                Accepting::Open | Accepting::Full | Accepting::Disabled => None,
            }));
        deadlines.fold(MAX_WAIT, |timeout, at| {
            timeout.min(at.saturating_duration_since(now))
        })
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), EngineError> {
        self.events.clear();
        self.res.stats.waits += 1;
        // Round up to a whole millisecond so a sub-millisecond timeout does not spin.
        let timeout = Duration::from_millis(timeout.as_nanos().div_ceil(1_000_000) as u64);
        let spec = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        });
        match epoll::wait(
            &self.res.epoll,
            rustix::buffer::spare_capacity(&mut self.events),
            Some(&spec),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(err) => Err(EngineError::io("epoll_wait", err.into())),
        }
    }

    /// Everything after a wait: deferred receives, readiness, timers, actions.
    fn turn(&mut self, now: Instant) {
        for (key, dir) in std::mem::take(&mut self.res.deferred) {
            if let Some(io) = self.shard.io_mut(key)
                && io.deferred(dir)
            {
                io.try_recv(dir, &mut self.res, &mut self.out);
                self.feed(now, key);
            }
        }
        self.handle_readiness(now);
        if self.udp.next_timeout().is_some_and(|at| at <= now) {
            self.udp.run(now);
        }
        self.resume_accepts(now);
        // Timers fire only after everything that was ready has been seen: after a stop and
        // SIGCONT, epoll_wait returns EINTR with no events, and an idle timer checked then
        // would close connections whose bytes are already waiting. Timers are rarely due, so
        // the extra zero-timeout wait costs nothing per request.
        if self.shard.next_timeout().is_some_and(|due| due <= now)
            && self.wait(Duration::ZERO).is_ok()
        {
            self.handle_readiness(now);
        }
        self.shard.handle_timeouts(now);
        self.run_actions(now);
        // Slots those actions freed let a full listener go on now, not a turn later.
        if self.resume_accepts(now) {
            self.run_actions(now);
        }
    }

    /// Accept again on listeners whose back-off is over, or that stopped while full and now
    /// find room (freed by this worker or, seen within a turn, by another). Edge-triggered:
    /// clients that queued meanwhile raised no new edge, so accept at once. Returns whether
    /// any listener resumed.
    fn resume_accepts(&mut self, now: Instant) -> bool {
        let mut resumed = false;
        for i in 0..self.listeners.len() {
            let due = match self.listeners[i].accepting {
                Accepting::Open | Accepting::Disabled => false,
                Accepting::BackingOff(until) => now >= until,
                Accepting::Full => self.has_room(),
            };
            if due {
                self.listeners[i].accepting = Accepting::Open;
                self.accept_all(i, now);
                resumed = true;
            }
        }
        resumed
    }

    /// Whether this worker may take a client: its table and the process have room.
    fn has_room(&self) -> bool {
        self.shard.len() < self.worker_max && self.admission.has_room()
    }

    /// Act on the readiness events of the last wait.
    fn handle_readiness(&mut self, now: Instant) {
        for i in 0..self.events.len() {
            let event = self.events[i];
            let (flags, data) = (event.flags, UserData(event.data.u64()));
            match data.op() {
                TAG_LISTENER => self.accept_all(data.key().index() as usize, now),
                // Drained at the start of the next turn (`serve_inbox`).
                TAG_INBOX => {}
                TAG_UDP => self.udp.run(now),
                TAG_CLIENT => self.ready(data.key(), Side::Client, TAG_CLIENT, flags, now),
                tag => self.ready(data.key(), Side::Backend, tag, flags, now),
            }
        }
    }

    /// Feed the results collected in `out` for `key` to the shard.
    fn feed(&mut self, now: Instant, key: SlotKey) {
        for event in self.out.drain(..) {
            self.shard.handle_event(now, key, event);
        }
    }

    fn ready(&mut self, key: SlotKey, side: Side, tag: u8, flags: epoll::EventFlags, now: Instant) {
        // A stale key (the connection closed earlier in this batch) finds nothing.
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        if side == Side::Backend && io.backend_tag() != tag {
            return;
        }
        io.on_ready(side, flags, &mut self.res, &mut self.out);
        let inspect = side == Side::Client && io.inspect_waits();
        self.feed(now, key);
        if inspect {
            self.inspect(now, key);
        }
    }

    /// Carry out `Inspect` (or retry one that waited for the client): read into the scratch
    /// buffer and hand the bytes to the shard.
    fn inspect(&mut self, now: Instant, key: SlotKey) {
        let room = self.shard.inspect_room(key);
        let Some(io) = self.shard.io_mut(key) else {
            return;
        };
        if self.scratch.len() < room {
            self.scratch.resize(room, 0);
        }
        if let Some(n) = io.try_inspect(&mut self.scratch[..room], &mut self.out) {
            self.shard.inspected(now, key, &self.scratch[..n]);
        }
        self.feed(now, key);
    }

    pub(super) fn accept_all(&mut self, index: usize, now: Instant) {
        loop {
            let Some(slot) = self.listeners.get_mut(index) else {
                return;
            };
            if slot.accepting != Accepting::Open {
                return;
            }
            let Some(listener) = &slot.socket else { return };
            // The slot is taken before the call, so the process never passes its limit; a full
            // process leaves clients in the backlog.
            if self.shard.len() >= self.worker_max || !self.admission.try_reserve() {
                slot.accepting = Accepting::Full;
                return;
            }
            let accepted = (op::Accept {
                listener: listener.as_fd(),
            })
            .run(true);
            if accepted.is_err() {
                self.admission.release();
            }
            match accepted {
                Ok(fd) => {
                    self.res.stats.accepted += 1;
                    self.admit(index, Socket::from(fd), now);
                }
                Err(err) => match (
                    err.raw_os_error(),
                    accept_failure(err.raw_os_error().unwrap_or(libc::EIO)),
                ) {
                    (Some(libc::EAGAIN), _) => return,
                    (_, AcceptFailure::Retry | AcceptFailure::Skip) => {}
                    (errno, AcceptFailure::BackOff) => {
                        // EMFILE, ENFILE, ENOBUFS, ENOMEM, or something unexpected: back off
                        // rather than spin, and keep serving what is open.
                        self.res.stats.accept_exhausted += 1;
                        slot.accepting = Accepting::BackingOff(now + ACCEPT_BACKOFF);
                        if let Some(suppressed) = slot.warn.allow(now) {
                            tracing::warn!(
                                worker = self.index,
                                listener = index,
                                %err,
                                exhausted = matches!(errno, Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)),
                                suppressed,
                                "accept failed; pausing this listener for {ACCEPT_BACKOFF:?}"
                            );
                        }
                        return;
                    }
                },
            }
        }
    }

    /// Register a client whose slot in the process is already taken (and given back here if
    /// the client goes no further).
    fn admit(&mut self, listener: usize, client: Socket, now: Instant) {
        // TCP_NODELAY comes from the listener (see `socket::listener`). A client that is
        // already gone has no address; drop it.
        let Some(ip) = runtime::client_addr(&self.shard, listener, &client) else {
            self.admission.release();
            return;
        };
        match self.shard.accept(now, listener, ip, ConnIo::new(client)) {
            Ok(key) => {
                let attached = match self.shard.io_mut(key) {
                    Some(io) => io.attach(key, &self.res),
                    None => Err(io::Error::other("accepted connection vanished")),
                };
                if let Err(err) = attached {
                    tracing::warn!(%err, "cannot register a client with epoll");
                    self.shard.handle_event(
                        now,
                        key,
                        Event::Failed {
                            side: Side::Client,
                            failure: Failure::Local,
                        },
                    );
                }
            }
            // Dropping the payload closes the client at once.
            Err((reason, _io)) => {
                self.admission.release();
                if let Some(slot) = self.listeners.get_mut(listener)
                    && let Some(suppressed) = slot.refused_warn.allow(now)
                {
                    tracing::warn!(worker = self.index, ?reason, suppressed, "client refused");
                }
            }
        }
    }

    /// Drain the shard's actions, carrying out each and feeding back immediate results.
    fn run_actions(&mut self, now: Instant) {
        while let Some((key, action)) = self.shard.poll_action() {
            if let Action::Close { reset, reason } = action {
                tracing::trace!(?key, ?reason, reset, "close");
                if reset {
                    rate_limit::log_reset(&mut self.resets_log, now, self.index, key, reason);
                }
                if let Some(io) = self.shard.release(key) {
                    self.admission.release();
                    io.close(reset, &mut self.res);
                }
                continue;
            }
            let addr = match action {
                Action::Connect { backend, .. } => self.shard.backend_addr(key, backend),
                _ => None,
            };
            if action == Action::Inspect {
                self.inspect(now, key);
                continue;
            }
            let preamble = match action {
                Action::SendPreamble => Some(self.shard.take_preamble(key, |io| io.local_addr())),
                _ => None,
            };
            let Some(io) = self.shard.io_mut(key) else {
                continue;
            };
            let (res, out) = (&mut self.res, &mut self.out);
            match action {
                Action::Connect { attempt, .. } => io.connect(addr, attempt, res, out),
                Action::Recv { dir, via } => io.begin_recv(dir, via, res, out),
                Action::Send { dir, via, queued } => io.begin_send(dir, via, queued, res, out),
                Action::CancelRecv { dir } => io.cancel_recv(dir, out),
                Action::ShutdownWrite { side } => io.shutdown_write(side, out),
                Action::SendPreamble => io.begin_preamble(preamble.unwrap_or_default(), out),
                Action::Inspect | Action::Close { .. } => {}
            }
            self.feed(now, key);
        }
    }

    fn close_listeners(&mut self) {
        for slot in &mut self.listeners {
            slot.close(&self.res.epoll);
            slot.accepting = Accepting::Open;
        }
    }
}

impl ListenerSlot {
    /// Listener `index` on `socket`, registered with `epoll` edge-triggered.
    pub(super) fn register(
        epoll: &impl std::os::fd::AsFd,
        index: usize,
        socket: Socket,
    ) -> std::io::Result<Self> {
        let data = epoll::EventData::new_u64(listener_data(index));
        epoll::add(
            epoll,
            &socket,
            data,
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        Ok(ListenerSlot {
            socket: Some(socket),
            accepting: Accepting::Open,
            warn: RateLimit::default(),
            refused_warn: RateLimit::default(),
        })
    }

    /// A listener this worker does not accept on (its registration failed): it keeps the
    /// index, so that later listeners' indices stay in step with the control side's.
    pub(super) fn closed() -> Self {
        ListenerSlot {
            socket: None,
            accepting: Accepting::Disabled,
            warn: RateLimit::default(),
            refused_warn: RateLimit::default(),
        }
    }

    /// The socket, while open.
    pub(super) fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.socket.as_ref().map(AsFd::as_fd)
    }

    /// Close the socket for good (shutdown, or a reload removed the listener).
    pub(super) fn close(&mut self, epoll: &impl std::os::fd::AsFd) {
        if let Some(socket) = self.socket.take() {
            let _ = epoll::delete(epoll, &socket);
        }
    }
}

/// The epoll data of listener `index`.
fn listener_data(index: usize) -> u64 {
    UserData::internal_indexed(TAG_LISTENER, u32::try_from(index).unwrap_or(u32::MAX)).0
}
