//! What the simulation tracks: the plan of each connection, its peers and flows as the
//! simulated engine sees them, and the [`Sim`] itself.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ringlb::config::Mode;
use ringlb::core::backend::BackendId;
use ringlb::core::conn::{CloseReason, ConnParams, Dir, Event, Side, Via};
use ringlb::core::shard::Shard;
use ringlb::core::slot::SlotKey;

use crate::rng::Rng;

/// How a client ends its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientEnd {
    /// Half-closes once its payload is written.
    AfterPayload,
    /// Half-closes once it has read the whole response (the backend's EOF).
    AfterResponse,
    /// Never closes: the connection must idle out (or fail).
    Linger,
}

/// What an accepting backend sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `total` bytes, then EOF (right away, or only once the request's EOF arrived).
    Fixed { total: u64, after_request: bool },
    /// Everything the client sends, then EOF once the client's EOF arrived.
    Echo,
    /// `total` bytes and never an EOF.
    Linger { total: u64 },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) arrive: Duration,
    pub(crate) client: IpAddr,
    pub(crate) up_total: u64,
    pub(crate) client_end: ClientEnd,
    /// After accept.
    pub(crate) client_reset: Option<Duration>,
    pub(crate) reply: Reply,
    /// After the backend connection is established.
    pub(crate) backend_reset: Option<Duration>,
    /// Largest chunk a peer writes at once, and the longest pause between chunks (µs).
    pub(crate) chunk: [u64; 2],
    pub(crate) gap: [u64; 2],
    /// A window (offset from accept, length) in which a direction's sink accepts nothing.
    pub(crate) stall: [Option<(Duration, Duration)>; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Pending,
    Never,
    Refused,
    Live,
    Released,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttemptState {
    Pending,
    Connected,
    Failed,
    TimedOut,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt {
    pub(crate) backend: BackendId,
    pub(crate) start: Instant,
    /// When and how the engine will answer; `None`: blackholed, only the core's deadline ends it.
    pub(crate) answer: Option<(Instant, Event)>,
    pub(crate) state: AttemptState,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct RecvOp {
    pub(crate) via: Via,
    pub(crate) multishot: bool,
    pub(crate) cancel: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct SendOp {
    pub(crate) via: Via,
    pub(crate) queued: u64,
    pub(crate) due: Instant,
}

/// One direction as the simulated engine and peers see it.
#[derive(Debug)]
pub(crate) struct Flow {
    /// Bytes the source has written into its socket, and when it writes next.
    pub(crate) produced: u64,
    pub(crate) next_produce: Instant,
    /// The source closed its write side (after `produced`).
    pub(crate) src_closed: bool,
    /// Bytes taken from the source by receives.
    pub(crate) read: u64,
    /// Received, unsent bytes as ranges of stream offsets: in user-space buffers, in the pipe.
    pub(crate) copy_q: VecDeque<(u64, u64)>,
    pub(crate) copy_len: u64,
    pub(crate) pipe: VecDeque<(u64, u64)>,
    pub(crate) pipe_len: u64,
    /// Bytes the sink has accepted, in order.
    pub(crate) written: u64,
    pub(crate) recv: Option<RecvOp>,
    pub(crate) send: Option<SendOp>,
    pub(crate) eof_reported: bool,
    pub(crate) shut: bool,
    pub(crate) via: Via,
    pub(crate) streak: u32,
    pub(crate) streak_done: bool,
}

impl Flow {
    pub(crate) fn new(via: Via, at: Instant) -> Self {
        Flow {
            produced: 0,
            next_produce: at,
            src_closed: false,
            read: 0,
            copy_q: VecDeque::new(),
            copy_len: 0,
            pipe: VecDeque::new(),
            pipe_len: 0,
            written: 0,
            recv: None,
            send: None,
            eof_reported: false,
            shut: false,
            via,
            streak: 0,
            streak_done: false,
        }
    }

    pub(crate) fn held(&self) -> u64 {
        self.copy_len + self.pipe_len
    }

    pub(crate) fn store_len(&self, via: Via) -> u64 {
        match via {
            Via::Copy => self.copy_len,
            Via::Splice => self.pipe_len,
        }
    }
}

#[derive(Debug)]
pub(crate) struct SimConn {
    pub(crate) plan: Plan,
    pub(crate) stage: Stage,
    pub(crate) key: Option<SlotKey>,
    pub(crate) accepted_at: Instant,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) established_at: Option<Instant>,
    pub(crate) flows: [Flow; 2],
    /// Time of the last event the core counts as activity (or of the last connect start).
    pub(crate) last_activity: Instant,
    pub(crate) client_failed: bool,
    pub(crate) backend_failed: bool,
    /// Sides whose failure was reported while the connection was open.
    pub(crate) failed: Vec<Side>,
    /// The last candidate's failure was reported: the connection is closing with NoBackend, and
    /// a failure reported after it (in the same batch) no longer changes that.
    pub(crate) gave_up: bool,
    pub(crate) aborted: bool,
    pub(crate) close: Option<(Instant, CloseReason, bool)>,
    pub(crate) release_at: Option<Instant>,
    /// Completions of operations still outstanding at Close, delivered late.
    pub(crate) late: Vec<Event>,
}

impl SimConn {
    pub(crate) fn open(&self) -> bool {
        self.stage == Stage::Live && self.close.is_none()
    }

    /// Open and not yet told of a failure or abort: events still count as activity.
    pub(crate) fn active(&self) -> bool {
        self.open() && self.failed.is_empty() && !self.aborted
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Cand {
    Answer,
    ClientReset,
    BackendReset,
    Recv(Dir),
    Send(Dir),
    Late,
}

#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) mode: Mode,
    pub(crate) params: ConnParams,
    /// The connect timeout, whoever enforces it.
    pub(crate) connect_timeout: Duration,
    /// The engine enforces the connect timeout (`params.connect_timeout` is `None`).
    pub(crate) engine_timeout: bool,
    pub(crate) candidates: usize,
    pub(crate) backends: usize,
    /// Per backend: percent of attempts accepted, refused (the rest are blackholed).
    pub(crate) profiles: Vec<(u64, u64)>,
    pub(crate) max_connections: usize,
    pub(crate) abort_at: Option<Duration>,
}

/// What happened over all seeds, to show that the simulation reaches what it claims to test.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    pub(crate) closes: HashMap<CloseReason, u64>,
    pub(crate) auto_switches: u64,
    pub(crate) backpressure_cancels: u64,
    pub(crate) partial_sends: u64,
    pub(crate) core_connect_timeouts: u64,
    pub(crate) retries: u64,
    pub(crate) stale_events: u64,
    pub(crate) late_events: u64,
    pub(crate) refused_full: u64,
    pub(crate) aborts: u64,
    pub(crate) bytes: u64,
}

pub(crate) struct Sim {
    pub(crate) rng: Rng,
    pub(crate) setup: Setup,
    pub(crate) shard: Shard<usize>,
    pub(crate) conns: Vec<SimConn>,
    pub(crate) keys: HashMap<SlotKey, usize>,
    /// Connections in the slot table, and the others in order of arrival.
    pub(crate) live: Vec<usize>,
    pub(crate) arrivals: Vec<usize>,
    pub(crate) next_arrival: usize,
    pub(crate) t0: Instant,
    pub(crate) now: Instant,
    pub(crate) aborted: bool,
    /// Keys already released, and events for them still to deliver (all must be rejected).
    pub(crate) released: Vec<SlotKey>,
    pub(crate) stale: Vec<(SlotKey, Event)>,
    pub(crate) stale_delivered: u64,
    pub(crate) expect_closed: [u64; 4],
    /// Resets expected in the shard's counters: client reset, backend reset, shutdown.
    pub(crate) expect_resets: [u64; 3],
    pub(crate) expect_bytes: [u64; 2],
    pub(crate) refused_full: u64,
    pub(crate) cov: Coverage,
}

pub(crate) fn limit(params: &ConnParams, via: Via) -> u64 {
    match via {
        Via::Copy => params.copy_high_water,
        Via::Splice => params.splice_capacity,
    }
}

pub(crate) fn dir_of_sink(side: Side) -> Dir {
    match side {
        Side::Backend => Dir::Upstream,
        Side::Client => Dir::Downstream,
    }
}

/// `flow` may be shut (by `ShutdownWrite`, or the last one by `Close`) after `action`.
pub(crate) fn check_shut(flow: &Flow, action: &ringlb::core::conn::Action) {
    assert!(flow.eof_reported, "{action:?} before the source's EOF");
    assert!(!flow.shut, "{action:?} twice");
    assert!(flow.send.is_none(), "{action:?} with a send out");
    assert_eq!(flow.held(), 0, "{action:?} with bytes held");
    assert_eq!(flow.written, flow.produced, "{action:?} before every byte");
}
