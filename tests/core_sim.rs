//! A seeded simulation of one worker's [`Shard`] on a virtual clock.
//!
//! Modelled on quinn-proto's test harness: a simulated engine carries out the core's actions
//! against simulated peers and reports results back, in random batches, while the clock jumps to
//! the next thing that can happen (a peer writing, a send completing, a connect answer, the
//! shard's next timer) or, when results are waiting, advances by small random steps. It never
//! steps past [`Shard::next_timeout`], as a real engine sleeps no longer than that.
//!
//! Every connection gets a simulated client (an upstream payload delivered in random chunks, then
//! a half-close, a linger, or a reset) and a simulated backend per connect attempt (accepts,
//! refuses, or blackholes), which answers with a fixed payload, an echo, or a linger, and may
//! reset. Receives are multishot or single-shot at random; sends complete partially at random;
//! sinks stall for a while (backpressure). Bytes are carried as ranges of sequence numbers so that
//! the sink can check that it got every byte once and in order.
//!
//! The invariants checked on every turn and at the end of each seed are listed on
//! [`seeded_simulation`]. A failing seed is printed; rerun one with `RINGLB_SIM_SEED=<n>`, or
//! soak with more seeds with `RINGLB_SIM_SEEDS=<count>`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlb::config::Mode;
use ringlb::core::backend::{BackendId, BackendInfo, BackendState};
use ringlb::core::balance::{Algorithm, PoolSnapshot};
use ringlb::core::conn::{
    AUTO_SPLICE_FULL_RECEIPTS, Action, CloseReason, ConnParams, Dir, Event, Side, Via,
};
use ringlb::core::shard::{ListenerPolicy, Refused, Shard};
use ringlb::core::slot::SlotKey;
use ringlb::core::timer::TICK;

const SEEDS: u64 = 200;
const CONNS: usize = 50;

/// splitmix64: small, seedable, good enough to drive a simulation.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn micros(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_micros(self.range(lo, hi))
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// How a client ends its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientEnd {
    /// Half-closes once its payload is written.
    AfterPayload,
    /// Half-closes once it has read the whole response (the backend's EOF).
    AfterResponse,
    /// Never closes: the connection must idle out (or fail).
    Linger,
}

/// What an accepting backend sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// `total` bytes, then EOF (right away, or only once the request's EOF arrived).
    Fixed { total: u64, after_request: bool },
    /// Everything the client sends, then EOF once the client's EOF arrived.
    Echo,
    /// `total` bytes and never an EOF.
    Linger { total: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    arrive: Duration,
    client: IpAddr,
    up_total: u64,
    client_end: ClientEnd,
    /// After accept.
    client_reset: Option<Duration>,
    reply: Reply,
    /// After the backend connection is established.
    backend_reset: Option<Duration>,
    /// Largest chunk a peer writes at once, and the longest pause between chunks (µs).
    chunk: [u64; 2],
    gap: [u64; 2],
    /// A window (offset from accept, length) in which a direction's sink accepts nothing.
    stall: [Option<(Duration, Duration)>; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Pending,
    Never,
    Refused,
    Live,
    Released,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttemptState {
    Pending,
    Connected,
    Failed,
    TimedOut,
}

#[derive(Clone, Copy, Debug)]
struct Attempt {
    backend: BackendId,
    start: Instant,
    /// When and how the engine will answer; `None`: blackholed, only the core's deadline ends it.
    answer: Option<(Instant, Event)>,
    state: AttemptState,
}

#[derive(Clone, Copy, Debug)]
struct RecvOp {
    via: Via,
    multishot: bool,
    cancel: bool,
}

#[derive(Clone, Copy, Debug)]
struct SendOp {
    via: Via,
    queued: u64,
    due: Instant,
}

/// One direction as the simulated engine and peers see it.
#[derive(Debug)]
struct Flow {
    /// Bytes the source has written into its socket, and when it writes next.
    produced: u64,
    next_produce: Instant,
    /// The source closed its write side (after `produced`).
    src_closed: bool,
    /// Bytes taken from the source by receives.
    read: u64,
    /// Received, unsent bytes as ranges of stream offsets: in user-space buffers, in the pipe.
    copy_q: VecDeque<(u64, u64)>,
    copy_len: u64,
    pipe: VecDeque<(u64, u64)>,
    pipe_len: u64,
    /// Bytes the sink has accepted, in order.
    written: u64,
    recv: Option<RecvOp>,
    send: Option<SendOp>,
    eof_reported: bool,
    shut: bool,
    via: Via,
    streak: u32,
    streak_done: bool,
}

impl Flow {
    fn new(via: Via, at: Instant) -> Self {
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

    fn held(&self) -> u64 {
        self.copy_len + self.pipe_len
    }

    fn store_len(&self, via: Via) -> u64 {
        match via {
            Via::Copy => self.copy_len,
            Via::Splice => self.pipe_len,
        }
    }
}

#[derive(Debug)]
struct SimConn {
    plan: Plan,
    stage: Stage,
    key: Option<SlotKey>,
    accepted_at: Instant,
    attempts: Vec<Attempt>,
    established_at: Option<Instant>,
    flows: [Flow; 2],
    /// Time of the last event the core counts as activity (or of the last connect start).
    last_activity: Instant,
    client_failed: bool,
    backend_failed: bool,
    /// Sides whose failure was reported while the connection was open.
    failed: Vec<Side>,
    /// The last candidate's failure was reported: the connection is closing with NoBackend, and
    /// a failure reported after it (in the same batch) no longer changes that.
    gave_up: bool,
    aborted: bool,
    close: Option<(Instant, CloseReason, bool)>,
    release_at: Option<Instant>,
    /// Completions of operations still outstanding at Close, delivered late.
    late: Vec<Event>,
}

impl SimConn {
    fn open(&self) -> bool {
        self.stage == Stage::Live && self.close.is_none()
    }

    /// Open and not yet told of a failure or abort: events still count as activity.
    fn active(&self) -> bool {
        self.open() && self.failed.is_empty() && !self.aborted
    }
}

#[derive(Clone, Copy, Debug)]
enum Cand {
    Answer,
    ClientReset,
    BackendReset,
    Recv(Dir),
    Send(Dir),
    Late,
}

#[derive(Debug)]
struct Setup {
    mode: Mode,
    params: ConnParams,
    /// The connect timeout, whoever enforces it.
    connect_timeout: Duration,
    /// The engine enforces the connect timeout (`params.connect_timeout` is `None`).
    engine_timeout: bool,
    candidates: usize,
    backends: usize,
    /// Per backend: percent of attempts accepted, refused (the rest are blackholed).
    profiles: Vec<(u64, u64)>,
    max_connections: usize,
    abort_at: Option<Duration>,
}

/// What happened over all seeds, to show that the simulation reaches what it claims to test.
#[derive(Debug, Default)]
struct Coverage {
    closes: HashMap<CloseReason, u64>,
    auto_switches: u64,
    backpressure_cancels: u64,
    partial_sends: u64,
    core_connect_timeouts: u64,
    retries: u64,
    stale_events: u64,
    late_events: u64,
    refused_full: u64,
    aborts: u64,
    bytes: u64,
}

struct Sim {
    rng: Rng,
    setup: Setup,
    shard: Shard<usize>,
    conns: Vec<SimConn>,
    keys: HashMap<SlotKey, usize>,
    /// Connections in the slot table, and the others in order of arrival.
    live: Vec<usize>,
    arrivals: Vec<usize>,
    next_arrival: usize,
    t0: Instant,
    now: Instant,
    aborted: bool,
    /// Keys already released, and events for them still to deliver (all must be rejected).
    released: Vec<SlotKey>,
    stale: Vec<(SlotKey, Event)>,
    stale_delivered: u64,
    expect_closed: [u64; 4],
    expect_bytes: [u64; 2],
    refused_full: u64,
    cov: Coverage,
}

fn limit(params: &ConnParams, via: Via) -> u64 {
    match via {
        Via::Copy => params.copy_high_water,
        Via::Splice => params.splice_capacity,
    }
}

fn dir_of_sink(side: Side) -> Dir {
    match side {
        Side::Backend => Dir::Upstream,
        Side::Client => Dir::Downstream,
    }
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xD1B5_4A32_D192_ED03);
        let mode = rng.pick(&[Mode::Copy, Mode::Splice, Mode::Auto]);
        let full = rng.pick(&[512u64, 1024, 4096]);
        let connect_timeout = rng.micros(8_000, 150_000);
        let engine_timeout = rng.pct(25);
        let params = ConnParams {
            connect_timeout: (!engine_timeout).then_some(connect_timeout),
            // Some idle timeouts beyond the wheel's horizon (about 4 s), so entries wait turns.
            idle_timeout: if rng.pct(20) {
                rng.micros(4_000_000, 9_000_000)
            } else {
                rng.micros(80_000, 700_000)
            },
            mode,
            copy_high_water: full * rng.range(1, 4),
            splice_capacity: rng.pick(&[4096u64, 8192, 65536]),
            full_receipt: full,
        };
        let backends = rng.range(1, 6) as usize;
        let candidates = rng.range(1, backends.min(4) as u64) as usize;
        let profiles = (0..backends)
            .map(|_| match rng.below(20) {
                0 => (0, 100),
                1 => (0, 0),
                2 => (0, rng.range(0, 100)),
                _ => {
                    let accept = rng.range(60, 100);
                    (accept, rng.range(0, 100 - accept))
                }
            })
            .collect();
        let max_connections = if rng.pct(20) {
            rng.range(5, 40) as usize
        } else {
            10_000
        };
        let abort_at = rng.pct(15).then(|| rng.micros(20_000, 1_500_000));
        let algorithm = rng.pick(&[
            Algorithm::RoundRobin,
            Algorithm::LeastConnections,
            Algorithm::RandomTwo,
            Algorithm::SourceHash,
        ]);
        let setup = Setup {
            mode,
            params,
            connect_timeout,
            engine_timeout,
            candidates,
            backends,
            profiles,
            max_connections,
            abort_at,
        };
        let infos = (0..backends)
            .map(|i| BackendInfo {
                name: format!("b{i}"),
                addr: (Ipv4Addr::new(10, 0, 0, i as u8 + 1), 80).into(),
                weight: rng.range(1, 3) as u32,
            })
            .collect();
        let pool = Arc::new(PoolSnapshot::new(
            algorithm,
            infos,
            vec![BackendState::Up; backends],
        ));
        let t0 = Instant::now();
        let listener = ListenerPolicy {
            pool: 0,
            params,
            candidates,
        };
        let shard = Shard::new(t0, vec![listener], vec![pool], max_connections, seed);
        let mut conns = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            let plan = Self::plan(&mut rng);
            conns.push(SimConn {
                plan,
                stage: Stage::Pending,
                key: None,
                accepted_at: t0,
                attempts: Vec::new(),
                established_at: None,
                flows: [Flow::new(Via::Copy, t0), Flow::new(Via::Copy, t0)],
                last_activity: t0,
                client_failed: false,
                backend_failed: false,
                failed: Vec::new(),
                gave_up: false,
                aborted: false,
                close: None,
                release_at: None,
                late: Vec::new(),
            });
        }
        let mut arrivals: Vec<usize> = (0..conns.len()).collect();
        arrivals.sort_by_key(|&c| conns[c].plan.arrive);
        Sim {
            rng,
            setup,
            shard,
            conns,
            keys: HashMap::new(),
            live: Vec::new(),
            arrivals,
            next_arrival: 0,
            t0,
            now: t0,
            aborted: false,
            released: Vec::new(),
            stale: Vec::new(),
            stale_delivered: 0,
            expect_closed: [0; 4],
            expect_bytes: [0; 2],
            refused_full: 0,
            cov: Coverage::default(),
        }
    }

    fn plan(rng: &mut Rng) -> Plan {
        let payload = |rng: &mut Rng| match rng.below(20) {
            0..=2 => 0,
            3..=11 => rng.range(1, 2_000),
            _ => rng.range(2_000, 40_000),
        };
        let up_total = payload(rng);
        let reply = match rng.below(10) {
            0..=4 => Reply::Fixed {
                total: payload(rng),
                after_request: rng.pct(50),
            },
            5..=8 => Reply::Echo,
            _ => Reply::Linger {
                total: payload(rng),
            },
        };
        let client_end = match rng.below(10) {
            0..=5 => ClientEnd::AfterPayload,
            6..=8 => ClientEnd::AfterResponse,
            _ => ClientEnd::Linger,
        };
        let mut stall = || {
            rng.pct(15)
                .then(|| (rng.micros(0, 500_000), rng.micros(10_000, 600_000)))
        };
        let stall = [stall(), stall()];
        Plan {
            arrive: rng.micros(0, 400_000),
            client: IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
            up_total,
            client_end,
            client_reset: rng.pct(8).then(|| rng.micros(0, 300_000)),
            reply,
            backend_reset: rng.pct(8).then(|| rng.micros(0, 300_000)),
            chunk: [rng.range(64, 16_384), rng.range(64, 16_384)],
            gap: [rng.range(0, 5_000), rng.range(0, 5_000)],
            stall,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    // ------------------------------------------------------------------------------------------
    // One turn.

    fn run(&mut self) {
        let mut turns = 0u64;
        loop {
            turns += 1;
            assert!(
                self.elapsed() < Duration::from_secs(600) && turns < 2_000_000,
                "connections never ended: {:?}",
                self.conns
                    .iter()
                    .filter(|c| matches!(c.stage, Stage::Live))
                    .collect::<Vec<_>>()
            );
            self.arrivals();
            self.releases();
            if let Some(at) = self.setup.abort_at
                && !self.aborted
                && self.now >= self.t0 + at
            {
                self.abort_all();
            }
            for i in 0..self.live.len() {
                let c = self.live[i];
                if self.conns[c].open() {
                    self.produce(c);
                }
            }
            let mut cands = Vec::new();
            self.candidates(&mut cands, false);
            let mut chosen: Vec<(usize, Cand)> =
                cands.iter().copied().filter(|_| self.rng.pct(70)).collect();
            if chosen.is_empty() && !cands.is_empty() {
                chosen.push(self.rng.pick(&cands));
            }
            // Shuffle the batch.
            for i in (1..chosen.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                chosen.swap(i, j);
            }
            for (c, cand) in chosen {
                self.deliver(c, cand);
            }
            if self.rng.pct(5) {
                self.deliver_stale();
            }
            self.shard.handle_timeouts(self.now);
            self.drain();
            self.check_settled();
            if self.live.is_empty() && self.next_arrival == self.arrivals.len() {
                break;
            }
            self.advance();
        }
        while !self.stale.is_empty() {
            self.deliver_stale();
        }
        self.check_end();
    }

    fn advance(&mut self) {
        let mut pending = Vec::new();
        self.candidates(&mut pending, true);
        let mut target = if pending.is_empty() {
            self.next_due()
                .unwrap_or(self.now + Duration::from_secs(3600))
        } else {
            self.now + self.rng.micros(0, 400)
        };
        if let Some(timer) = self.shard.next_timeout() {
            assert!(timer > self.now, "next_timeout {timer:?} not after now");
            target = target.min(timer);
        }
        self.now = target.max(self.now);
    }

    fn next_due(&self) -> Option<Instant> {
        let mut due: Option<Instant> = None;
        let mut at = |t: Instant| due = Some(due.map_or(t, |d| d.min(t)));
        if let Some(abort) = self.setup.abort_at
            && !self.aborted
        {
            at(self.t0 + abort);
        }
        if let Some(&c) = self.arrivals.get(self.next_arrival) {
            at(self.t0 + self.conns[c].plan.arrive);
        }
        for &c in &self.live {
            let conn = &self.conns[c];
            match conn.stage {
                Stage::Live if conn.close.is_some() => at(conn
                    .release_at
                    .expect("closed connections get a release time")),
                Stage::Live => {
                    if let Some(attempt) = conn.attempts.last()
                        && attempt.state == AttemptState::Pending
                        && let Some((t, _)) = attempt.answer
                    {
                        at(t);
                    }
                    if let Some(r) = conn.plan.client_reset
                        && !conn.client_failed
                    {
                        at(conn.accepted_at + r);
                    }
                    if let (Some(r), Some(e)) = (conn.plan.backend_reset, conn.established_at)
                        && !conn.backend_failed
                    {
                        at(e + r);
                    }
                    for (i, flow) in conn.flows.iter().enumerate() {
                        if let Some(send) = flow.send {
                            at(send.due);
                        }
                        if self
                            .source_total(conn, i)
                            .is_some_and(|t| flow.produced < t)
                        {
                            at(flow.next_produce);
                        }
                    }
                }
                _ => {}
            }
        }
        due
    }

    /// How many bytes the source of flow `i` will write in all, when it writes on its own
    /// schedule (`None` for the echo, which follows upstream, and for a source not yet open).
    fn source_total(&self, conn: &SimConn, i: usize) -> Option<u64> {
        if i == 0 {
            return Some(conn.plan.up_total);
        }
        conn.established_at?;
        match conn.plan.reply {
            Reply::Fixed { total, .. } | Reply::Linger { total } => Some(total),
            Reply::Echo => None,
        }
    }

    fn arrivals(&mut self) {
        while let Some(&c) = self.arrivals.get(self.next_arrival) {
            if self.now < self.t0 + self.conns[c].plan.arrive {
                break;
            }
            self.next_arrival += 1;
            if self.aborted {
                self.conns[c].stage = Stage::Never;
                continue;
            }
            let before = self.shard.len();
            match self.shard.accept(self.now, 0, self.conns[c].plan.client, c) {
                Ok(key) => {
                    assert!(
                        before < self.setup.max_connections,
                        "accepted over the limit"
                    );
                    assert_eq!(self.shard.len(), before + 1);
                    assert!(self.keys.insert(key, c).is_none(), "key handed out twice");
                    self.live.push(c);
                    let conn = &mut self.conns[c];
                    conn.stage = Stage::Live;
                    conn.key = Some(key);
                    conn.accepted_at = self.now;
                    conn.last_activity = self.now;
                    conn.flows[0].next_produce = self.now;
                    let via = if self.setup.mode == Mode::Splice {
                        Via::Splice
                    } else {
                        Via::Copy
                    };
                    conn.flows[0].via = via;
                    conn.flows[1].via = via;
                }
                Err((Refused::Full, io)) => {
                    assert_eq!(io, c, "the refused payload comes back");
                    assert!(
                        before >= self.setup.max_connections,
                        "refused below the limit"
                    );
                    self.conns[c].stage = Stage::Refused;
                    self.refused_full += 1;
                }
                Err((other, _)) => panic!("accept refused: {other:?}"),
            }
        }
    }

    fn releases(&mut self) {
        let mut i = 0;
        while i < self.live.len() {
            let c = self.live[i];
            let conn = &self.conns[c];
            if conn.release_at.is_none_or(|t| self.now < t) {
                i += 1;
                continue;
            }
            self.live.remove(i);
            let key = conn.key.expect("live connections have keys");
            let before = self.shard.len();
            assert_eq!(
                self.shard.release(key),
                Some(c),
                "release hands back the payload"
            );
            assert_eq!(self.shard.len(), before - 1);
            assert!(self.shard.conn(key).is_none());
            assert_eq!(self.shard.release(key), None, "a second release of a key");
            self.keys.remove(&key);
            self.released.push(key);
            let conn = &mut self.conns[c];
            conn.stage = Stage::Released;
            for event in conn.late.drain(..) {
                self.stale.push((key, event));
            }
        }
    }

    fn abort_all(&mut self) {
        self.aborted = true;
        self.cov.aborts += 1;
        self.shard.abort_all();
        for &c in &self.live {
            let conn = &mut self.conns[c];
            if conn.open() {
                conn.aborted = true;
            }
        }
    }

    /// The peers write on their own schedule.
    fn produce(&mut self, c: usize) {
        let now = self.now;
        let totals = [
            self.source_total(&self.conns[c], 0),
            self.source_total(&self.conns[c], 1),
        ];
        let rng = &mut self.rng;
        let conn = &mut self.conns[c];
        for (i, total) in totals.into_iter().enumerate() {
            let Some(total) = total else { continue };
            let flow = &mut conn.flows[i];
            while !flow.src_closed && flow.produced < total && flow.next_produce <= now {
                flow.produced += rng.range(1, conn.plan.chunk[i]).min(total - flow.produced);
                flow.next_produce += Duration::from_micros(rng.range(0, conn.plan.gap[i]));
            }
        }
        let up_shut = conn.flows[0].shut;
        let up_written = conn.flows[0].written;
        let down_shut = conn.flows[1].shut;
        let up = &mut conn.flows[0];
        if up.produced == conn.plan.up_total
            && match conn.plan.client_end {
                ClientEnd::AfterPayload => true,
                ClientEnd::AfterResponse => down_shut,
                ClientEnd::Linger => false,
            }
        {
            up.src_closed = true;
        }
        if conn.established_at.is_some() {
            let down = &mut conn.flows[1];
            match conn.plan.reply {
                Reply::Fixed {
                    total,
                    after_request,
                } => {
                    if down.produced == total && (!after_request || up_shut) {
                        down.src_closed = true;
                    }
                }
                Reply::Echo => {
                    down.produced = up_written;
                    down.src_closed = up_shut;
                }
                Reply::Linger { .. } => {}
            }
        }
    }

    /// Everything the engine could report now (with `any`, stop at the first).
    fn candidates(&self, out: &mut Vec<(usize, Cand)>, any: bool) {
        let now = self.now;
        for &c in &self.live {
            if any && !out.is_empty() {
                return;
            }
            let conn = &self.conns[c];
            if conn.close.is_some() {
                if !conn.late.is_empty() {
                    out.push((c, Cand::Late));
                }
                continue;
            }
            if let Some(attempt) = conn.attempts.last()
                && attempt.state == AttemptState::Pending
                && attempt.answer.is_some_and(|(t, _)| t <= now)
            {
                out.push((c, Cand::Answer));
            }
            if let Some(r) = conn.plan.client_reset
                && !conn.client_failed
                && conn.accepted_at + r <= now
            {
                out.push((c, Cand::ClientReset));
            }
            if let (Some(r), Some(e)) = (conn.plan.backend_reset, conn.established_at)
                && !conn.backend_failed
                && e + r <= now
            {
                out.push((c, Cand::BackendReset));
            }
            for dir in Dir::BOTH {
                let flow = &conn.flows[dir.index()];
                if let Some(op) = flow.recv {
                    let avail = flow.produced - flow.read;
                    let room = match op.via {
                        Via::Copy => u64::MAX,
                        Via::Splice => self.setup.params.splice_capacity - flow.pipe_len,
                    };
                    if op.cancel || (avail > 0 && room > 0) || (avail == 0 && flow.src_closed) {
                        out.push((c, Cand::Recv(dir)));
                    }
                }
                if flow.send.is_some_and(|s| s.due <= now) {
                    out.push((c, Cand::Send(dir)));
                }
            }
        }
    }

    fn feed(&mut self, c: usize, event: Event) {
        let key = self.conns[c].key.expect("a live connection");
        if self.conns[c].active() {
            match event {
                Event::Connected
                | Event::ConnectFailed { .. }
                | Event::Received { .. }
                | Event::Eof { .. }
                | Event::Sent { .. } => self.conns[c].last_activity = self.now,
                Event::RecvEnded { .. } | Event::Failed { .. } => {}
            }
        }
        if let Event::Sent { dir, bytes } = event {
            self.expect_bytes[dir.index()] += bytes;
        }
        assert!(
            self.shard.handle_event(self.now, key, event),
            "a current key was rejected"
        );
    }

    fn deliver(&mut self, c: usize, cand: Cand) {
        let now = self.now;
        match cand {
            Cand::Answer => {
                let attempt = self.conns[c].attempts.last_mut().expect("an attempt");
                let (_, event) = attempt.answer.expect("an answer");
                if event == Event::Connected {
                    attempt.state = AttemptState::Connected;
                    let conn = &mut self.conns[c];
                    if conn.active() {
                        conn.established_at = Some(now);
                        conn.flows[1].next_produce = now;
                    }
                } else {
                    attempt.state = AttemptState::Failed;
                    let last = self.setup.candidates.min(self.setup.backends);
                    let conn = &mut self.conns[c];
                    if conn.active() && conn.attempts.len() == last {
                        conn.gave_up = true;
                    }
                }
                self.feed(c, event);
            }
            Cand::ClientReset => {
                let conn = &mut self.conns[c];
                conn.client_failed = true;
                if conn.failed.is_empty() && !conn.aborted && !conn.gave_up {
                    conn.failed.push(Side::Client);
                }
                self.feed(c, Event::Failed { side: Side::Client });
            }
            Cand::BackendReset => {
                let conn = &mut self.conns[c];
                conn.backend_failed = true;
                if conn.failed.is_empty() && !conn.aborted && !conn.gave_up {
                    conn.failed.push(Side::Backend);
                }
                self.feed(
                    c,
                    Event::Failed {
                        side: Side::Backend,
                    },
                );
            }
            Cand::Recv(dir) => {
                let event = self.receive(c, dir);
                self.feed(c, event);
            }
            Cand::Send(dir) => {
                let event = self.complete_send(c, dir);
                self.feed(c, event);
            }
            Cand::Late => {
                let late = &mut self.conns[c].late;
                let event = late.swap_remove(self.rng.below(late.len() as u64) as usize);
                self.cov.late_events += 1;
                self.feed(c, event);
            }
        }
    }

    fn receive(&mut self, c: usize, dir: Dir) -> Event {
        let params = self.setup.params;
        let auto = self.setup.mode == Mode::Auto;
        let rng = &mut self.rng;
        let flow = &mut self.conns[c].flows[dir.index()];
        let op = flow.recv.expect("a receive");
        let avail = flow.produced - flow.read;
        let room = match op.via {
            Via::Copy => u64::MAX,
            Via::Splice => params.splice_capacity - flow.pipe_len,
        };
        let can_read = avail > 0 && room > 0;
        let can_eof = avail == 0 && flow.src_closed;
        enum Then {
            Data { armed: bool },
            Eof,
            Ended,
        }
        let then = if op.cancel {
            // A cancelled receive stops with its last data, its EOF, or nothing.
            match rng.below(3) {
                0 if can_read => Then::Data { armed: false },
                1 if can_eof => Then::Eof,
                _ => Then::Ended,
            }
        } else if can_read {
            if op.via == Via::Copy && rng.pct(2) {
                // Out of provided buffers.
                Then::Ended
            } else {
                Then::Data {
                    armed: op.multishot && rng.pct(90),
                }
            }
        } else {
            Then::Eof
        };
        match then {
            Then::Data { armed } => {
                let most = avail.min(room).min(match op.via {
                    Via::Copy => params.full_receipt,
                    Via::Splice => params.splice_capacity,
                });
                let bytes = if rng.pct(70) {
                    most
                } else {
                    rng.range(1, most)
                };
                let range = (flow.read, bytes);
                flow.read += bytes;
                match op.via {
                    Via::Copy => {
                        flow.copy_q.push_back(range);
                        flow.copy_len += bytes;
                    }
                    Via::Splice => {
                        flow.pipe.push_back(range);
                        flow.pipe_len += bytes;
                    }
                }
                if auto && op.via == Via::Copy && !flow.streak_done {
                    flow.streak = if bytes >= params.full_receipt {
                        flow.streak + 1
                    } else {
                        0
                    };
                    flow.streak_done = flow.streak >= u32::from(AUTO_SPLICE_FULL_RECEIPTS);
                }
                if !armed {
                    flow.recv = None;
                }
                Event::Received { dir, bytes, armed }
            }
            Then::Eof => {
                flow.recv = None;
                flow.eof_reported = true;
                Event::Eof { dir }
            }
            Then::Ended => {
                flow.recv = None;
                Event::RecvEnded { dir }
            }
        }
    }

    fn complete_send(&mut self, c: usize, dir: Dir) -> Event {
        let rng = &mut self.rng;
        let flow = &mut self.conns[c].flows[dir.index()];
        let op = flow.send.take().expect("a send");
        let bytes = if rng.pct(50) {
            op.queued
        } else {
            self.cov.partial_sends += 1;
            rng.range(1, op.queued)
        };
        let (store, len) = match op.via {
            Via::Copy => (&mut flow.copy_q, &mut flow.copy_len),
            Via::Splice => (&mut flow.pipe, &mut flow.pipe_len),
        };
        // The sink checks every byte's sequence number: each arrives once and in order.
        let mut left = bytes;
        while left > 0 {
            let (start, n) = store.pop_front().expect("sent more than was held");
            assert_eq!(
                start, flow.written,
                "{dir:?}: the sink got byte {start} where it expected {}",
                flow.written
            );
            let take = n.min(left);
            flow.written += take;
            left -= take;
            if take < n {
                store.push_front((start + take, n - take));
            }
        }
        *len -= bytes;
        self.cov.bytes += bytes;
        Event::Sent { dir, bytes }
    }

    fn deliver_stale(&mut self) {
        let (key, event) = if let Some(stale) = self.stale.pop() {
            stale
        } else if !self.released.is_empty() {
            let key = self.rng.pick(&self.released);
            let event = self.rng.pick(&[
                Event::Connected,
                Event::ConnectFailed { timed_out: true },
                Event::Received {
                    dir: Dir::Upstream,
                    bytes: 9,
                    armed: true,
                },
                Event::Eof {
                    dir: Dir::Downstream,
                },
                Event::Sent {
                    dir: Dir::Upstream,
                    bytes: 1,
                },
                Event::Failed { side: Side::Client },
            ]);
            (key, event)
        } else {
            return;
        };
        // Whoever reuses the slot must not notice.
        let successor = self.keys.keys().copied().find(|k| k.index() == key.index());
        let before = successor.map(|k| format!("{:?}", self.shard.conn(k)));
        let stats = self.shard.stats();
        assert!(
            !self.shard.handle_event(self.now, key, event),
            "a stale key was accepted: {key:?} {event:?}"
        );
        assert_eq!(self.shard.stats().stale_events, stats.stale_events + 1);
        if let Some(k) = successor {
            assert_eq!(Some(format!("{:?}", self.shard.conn(k))), before);
        }
        self.stale_delivered += 1;
        self.cov.stale_events += 1;
    }

    // ------------------------------------------------------------------------------------------
    // Actions.

    fn drain(&mut self) {
        let mut n = 0u64;
        while let Some((key, action)) = self.shard.poll_action() {
            n += 1;
            assert!(n < 1_000_000, "poll_action never returns None");
            let c = *self
                .keys
                .get(&key)
                .unwrap_or_else(|| panic!("{action:?} for unknown key {key:?}"));
            let conn = &self.conns[c];
            assert!(
                conn.close.is_none(),
                "{action:?} after Close {:?} (conn {c})",
                conn.close
            );
            match action {
                Action::Connect { backend, attempt } => self.on_connect(c, key, backend, attempt),
                Action::Recv { dir, via } => self.on_recv(c, dir, via),
                Action::CancelRecv { dir } => {
                    let limit = limit(&self.setup.params, self.conns[c].flows[dir.index()].via);
                    let flow = &mut self.conns[c].flows[dir.index()];
                    let op = flow.recv.as_mut().expect("CancelRecv without a receive");
                    assert!(!op.cancel, "CancelRecv twice");
                    op.cancel = true;
                    if flow.held() >= limit {
                        self.cov.backpressure_cancels += 1;
                    }
                }
                Action::Send { dir, via, queued } => self.on_send(c, dir, via, queued),
                Action::ShutdownWrite { side } => {
                    let dir = dir_of_sink(side);
                    let conn = &mut self.conns[c];
                    assert!(conn.established_at.is_some());
                    let flow = &mut conn.flows[dir.index()];
                    assert!(flow.eof_reported, "{action:?} before the source's EOF");
                    assert!(!flow.shut, "{action:?} twice");
                    assert!(flow.send.is_none(), "{action:?} with a send out");
                    assert_eq!(flow.held(), 0, "{action:?} with bytes held");
                    assert_eq!(flow.written, flow.produced, "{action:?} before every byte");
                    flow.shut = true;
                }
                Action::Close { reset, reason } => self.on_close(c, key, reset, reason),
            }
        }
    }

    /// The attempt still outstanding when the core moved on must have run out its deadline,
    /// and the core must have noticed within a tick.
    fn expire_attempt(&mut self, c: usize) {
        let now = self.now;
        let Some(attempt) = self.conns[c].attempts.last_mut() else {
            return;
        };
        match attempt.state {
            AttemptState::Failed => {}
            AttemptState::Pending => {
                assert!(
                    !self.setup.engine_timeout,
                    "the core moved on from a connect the engine times"
                );
                let deadline = attempt.start + self.setup.connect_timeout;
                assert!(
                    now >= deadline,
                    "connect timed out {:?} early",
                    deadline - now
                );
                assert!(
                    now <= deadline + TICK,
                    "connect timed out {:?} late",
                    now - deadline
                );
                attempt.state = AttemptState::TimedOut;
                self.cov.core_connect_timeouts += 1;
            }
            other => panic!("moved on from a connect in state {other:?}"),
        }
    }

    fn on_connect(&mut self, c: usize, key: SlotKey, backend: BackendId, attempt: u32) {
        let conn = &self.conns[c];
        assert!(conn.established_at.is_none(), "Connect after Connected");
        assert_eq!(
            attempt as usize,
            conn.attempts.len(),
            "attempt numbers in order"
        );
        assert!(
            conn.attempts.len() < self.setup.candidates,
            "more than retries + 1 attempts"
        );
        assert!(
            conn.attempts.iter().all(|a| a.backend != backend),
            "{backend:?} tried twice"
        );
        assert!(backend.index() < self.setup.backends);
        assert!(self.shard.backend_addr(key, backend).is_some());
        if conn.attempts.is_empty() {
            assert_eq!(self.now, conn.accepted_at, "first connect at accept");
        } else {
            self.cov.retries += 1;
        }
        self.expire_attempt(c);
        let start = self.now;
        let (accept, refuse) = self.setup.profiles[backend.index()];
        let roll = self.rng.below(100);
        let delay = self
            .rng
            .micros(0, self.setup.connect_timeout.as_micros() as u64 * 5 / 4);
        let mut answer = if roll < accept {
            Some((start + delay, Event::Connected))
        } else if roll < accept + refuse {
            Some((start + delay, Event::ConnectFailed { timed_out: false }))
        } else {
            None
        };
        if self.setup.engine_timeout {
            let deadline = start + self.setup.connect_timeout;
            if answer.is_none_or(|(t, _)| t > deadline) {
                answer = Some((deadline, Event::ConnectFailed { timed_out: true }));
            }
        }
        let conn = &mut self.conns[c];
        conn.attempts.push(Attempt {
            backend,
            start,
            answer,
            state: AttemptState::Pending,
        });
        conn.last_activity = start;
    }

    fn on_recv(&mut self, c: usize, dir: Dir, via: Via) {
        let params = self.setup.params;
        let mode = self.setup.mode;
        let multishot = self.rng.pct(50);
        let conn = &mut self.conns[c];
        assert!(conn.established_at.is_some(), "Recv before Connected");
        let flow = &mut conn.flows[dir.index()];
        assert!(flow.recv.is_none(), "a second Recv for {dir:?}");
        assert!(!flow.eof_reported, "Recv for {dir:?} after its EOF");
        assert!(!flow.shut, "Recv for {dir:?} after ShutdownWrite");
        match mode {
            Mode::Copy => assert_eq!(via, Via::Copy),
            Mode::Splice => assert_eq!(via, Via::Splice),
            Mode::Auto => {
                assert!(
                    !(via == Via::Copy && flow.via == Via::Splice),
                    "switched back to copy"
                );
                assert!(
                    !(via == Via::Copy && flow.streak_done),
                    "copy receive after {AUTO_SPLICE_FULL_RECEIPTS} full receipts"
                );
                if via == Via::Splice && flow.via == Via::Copy {
                    assert!(flow.streak_done, "switched to splice without a full streak");
                    assert_eq!(flow.held(), 0, "switched to splice with bytes queued");
                    assert!(flow.send.is_none(), "switched to splice with a send out");
                    self.cov.auto_switches += 1;
                }
            }
        }
        flow.via = via;
        let other = match via {
            Via::Copy => Via::Splice,
            Via::Splice => Via::Copy,
        };
        assert_eq!(
            flow.store_len(other),
            0,
            "Recv by {via:?} with bytes held by {other:?}"
        );
        assert!(
            flow.held() < limit(&params, via),
            "Recv with {} bytes held (limit {})",
            flow.held(),
            limit(&params, via)
        );
        flow.recv = Some(RecvOp {
            via,
            multishot,
            cancel: false,
        });
    }

    fn on_send(&mut self, c: usize, dir: Dir, via: Via, queued: u64) {
        let now = self.now;
        let delay = self.rng.micros(0, 2_000);
        let conn = &mut self.conns[c];
        let stall = conn.plan.stall[dir.index()].map(|(at, len)| {
            let from = conn.accepted_at + at;
            (from, from + len)
        });
        let flow = &mut conn.flows[dir.index()];
        assert!(flow.send.is_none(), "a second Send for {dir:?}");
        assert!(!flow.shut, "Send for {dir:?} after ShutdownWrite");
        assert!(queued > 0, "an empty Send");
        assert_eq!(via, flow.via, "Send by other means than the receipts");
        assert_eq!(queued, flow.held(), "Send names the wrong amount");
        assert_eq!(
            flow.store_len(via),
            queued,
            "bytes held elsewhere than {via:?}"
        );
        let mut due = now + delay;
        if let Some((from, until)) = stall
            && due >= from
            && due < until
        {
            due = until;
        }
        flow.send = Some(SendOp { via, queued, due });
    }

    fn on_close(&mut self, c: usize, key: SlotKey, reset: bool, reason: CloseReason) {
        let now = self.now;
        let params = self.setup.params;
        let mode = self.setup.mode;
        assert_eq!(self.shard.conn(key).and_then(|k| k.closed()), Some(reason));
        match reason {
            CloseReason::Done => {
                let conn = &self.conns[c];
                assert!(!reset, "Done with a reset");
                assert!(conn.failed.is_empty() && !conn.aborted);
                assert!(conn.flows.iter().all(|f| f.shut), "Done before both shut");
                assert_ne!(conn.plan.client_end, ClientEnd::Linger);
                assert!(!matches!(conn.plan.reply, Reply::Linger { .. }));
                let [up, down] = &conn.flows;
                assert_eq!(up.written, conn.plan.up_total, "upstream bytes lost");
                let down_total = match conn.plan.reply {
                    Reply::Fixed { total, .. } => total,
                    _ => conn.plan.up_total,
                };
                assert_eq!(down.written, down_total, "downstream bytes lost");
                let core = self.shard.conn(key).expect("current");
                for dir in Dir::BOTH {
                    let flow = &conn.flows[dir.index()];
                    assert!(flow.recv.is_none() && flow.send.is_none());
                    assert_eq!(core.forwarded(dir), flow.written);
                    let via = match mode {
                        Mode::Copy => Via::Copy,
                        Mode::Splice => Via::Splice,
                        Mode::Auto if flow.streak_done => Via::Splice,
                        Mode::Auto => Via::Copy,
                    };
                    assert_eq!(core.via(dir), via, "{dir:?} ended on the wrong path");
                }
            }
            CloseReason::NoBackend => {
                assert!(!reset);
                self.expire_attempt(c);
                let conn = &self.conns[c];
                assert!(conn.established_at.is_none());
                assert_eq!(
                    conn.attempts.len(),
                    self.setup.candidates.min(self.setup.backends),
                    "gave up before trying every candidate"
                );
                let budget = (self.setup.connect_timeout + TICK) * conn.attempts.len() as u32;
                assert!(now - conn.accepted_at <= budget, "gave up late");
            }
            CloseReason::ClientFailed => {
                assert!(reset);
                assert!(self.conns[c].failed.contains(&Side::Client));
            }
            CloseReason::BackendFailed => {
                assert!(reset);
                assert!(self.conns[c].failed.contains(&Side::Backend));
            }
            CloseReason::Aborted => assert!(reset && self.conns[c].aborted),
            CloseReason::IdleTimeout => {
                let conn = &self.conns[c];
                assert!(!reset);
                assert!(conn.established_at.is_some());
                let deadline = conn.last_activity + params.idle_timeout;
                assert!(now >= deadline, "idled out {:?} early", deadline - now);
                assert!(
                    now <= deadline + TICK,
                    "idled out {:?} late",
                    now - deadline
                );
            }
        }
        let conn = &mut self.conns[c];
        if conn.aborted {
            assert_eq!(reason, CloseReason::Aborted);
        } else if !conn.failed.is_empty() {
            assert!(reset, "a failure closed gracefully ({reason:?})");
        }
        conn.close = Some((now, reason, reset));
        *self.cov.closes.entry(reason).or_default() += 1;
        self.expect_closed[0] += 1;
        match reason {
            CloseReason::NoBackend => self.expect_closed[1] += 1,
            CloseReason::IdleTimeout => self.expect_closed[2] += 1,
            CloseReason::ClientFailed | CloseReason::BackendFailed => self.expect_closed[3] += 1,
            _ => {}
        }
        // The engine cancels what is outstanding; some of it reports back late.
        let rng = &mut self.rng;
        for dir in Dir::BOTH {
            let flow = &mut conn.flows[dir.index()];
            if flow.recv.take().is_some() && rng.pct(60) {
                conn.late.push(if rng.pct(50) {
                    Event::RecvEnded { dir }
                } else {
                    Event::Received {
                        dir,
                        bytes: rng.range(1, 100),
                        armed: false,
                    }
                });
            }
            if let Some(send) = flow.send.take()
                && rng.pct(60)
            {
                conn.late.push(Event::Sent {
                    dir,
                    bytes: rng.range(1, send.queued),
                });
            }
        }
        if let Some(attempt) = conn.attempts.last()
            && attempt.state == AttemptState::Pending
            && rng.pct(60)
        {
            conn.late.push(if rng.pct(50) {
                Event::Connected
            } else {
                Event::ConnectFailed { timed_out: false }
            });
        }
        if rng.pct(10) {
            conn.late.push(Event::Failed {
                side: Side::Backend,
            });
        }
        conn.release_at = Some(now + rng.micros(0, 10_000));
    }

    // ------------------------------------------------------------------------------------------
    // Checks between turns and at the end.

    fn check_settled(&self) {
        let params = &self.setup.params;
        let mut active = vec![0u32; self.setup.backends];
        for &c in &self.live {
            let conn = &self.conns[c];
            assert_eq!(conn.stage, Stage::Live);
            if !conn.open() {
                continue;
            }
            assert!(
                conn.failed.is_empty() && !conn.aborted,
                "a failure or abort did not close the connection"
            );
            if let Some(attempt) = conn.attempts.last()
                && matches!(
                    attempt.state,
                    AttemptState::Pending | AttemptState::Connected
                )
            {
                active[attempt.backend.index()] += 1;
            }
            if conn.established_at.is_none() {
                assert!(
                    conn.attempts
                        .last()
                        .is_some_and(|a| a.state == AttemptState::Pending),
                    "connecting with no connect outstanding"
                );
                continue;
            }
            for dir in Dir::BOTH {
                let flow = &conn.flows[dir.index()];
                // Memory stays bounded: a receive stays armed only below the limit, so at most
                // the receipt that crossed it and one racing the cancel come on top.
                assert!(
                    flow.copy_len <= params.copy_high_water + 2 * params.full_receipt,
                    "{dir:?}: {} bytes in buffers",
                    flow.copy_len
                );
                assert!(flow.pipe_len <= params.splice_capacity);
                if let Some(op) = flow.recv
                    && !op.cancel
                {
                    assert!(
                        flow.held() < limit(params, op.via),
                        "{dir:?}: receive left armed with {} bytes held",
                        flow.held()
                    );
                }
                // Nothing stalls: an unfinished direction always has an operation out.
                assert!(
                    flow.shut || flow.recv.is_some() || flow.send.is_some(),
                    "{dir:?} stalled: {flow:?}"
                );
            }
        }
        assert_eq!(self.shard.len(), self.live.len(), "slot table out of step");
        let balancer = self.shard.balancer(0).expect("pool 0");
        for (i, expected) in active.iter().enumerate() {
            assert_eq!(
                balancer.active(BackendId(i as u32)),
                *expected,
                "active count of backend {i}"
            );
        }
    }

    fn check_end(&mut self) {
        assert_eq!(self.shard.len(), 0);
        assert!(self.shard.is_empty());
        assert!(self.shard.keys().is_empty());
        let balancer = self.shard.balancer(0).expect("pool 0");
        for i in 0..self.setup.backends {
            assert_eq!(
                balancer.active(BackendId(i as u32)),
                0,
                "backend {i} leaked"
            );
        }
        let stats = self.shard.stats();
        let accepted = self
            .conns
            .iter()
            .filter(|c| c.stage == Stage::Released)
            .count() as u64;
        assert_eq!(stats.accepted, accepted);
        assert_eq!(stats.refused, self.refused_full);
        assert_eq!(
            [
                stats.closed,
                stats.closed_no_backend,
                stats.closed_idle,
                stats.closed_failed
            ],
            self.expect_closed
        );
        assert_eq!(stats.closed, accepted, "every connection closed once");
        assert_eq!(stats.stale_events, self.stale_delivered);
        assert_eq!(
            [stats.bytes_upstream, stats.bytes_downstream],
            self.expect_bytes
        );
        // Leftover timers of freed connections fire into nothing.
        self.shard
            .handle_timeouts(self.now + Duration::from_secs(3600));
        assert_eq!(self.shard.poll_action(), None);
        assert!(
            self.shard
                .accept(self.now, 1, IpAddr::V4(Ipv4Addr::LOCALHOST), usize::MAX)
                .is_err_and(|(why, io)| why == Refused::UnknownListener && io == usize::MAX)
        );
        self.cov.refused_full += self.refused_full;
    }
}

/// 200 seeds × 50 connections. Checked on every turn: at most one receive and one send out per
/// direction; sends name exactly the bytes held, by the path they were received on; the sink gets
/// every byte once and in order; ShutdownWrite only after the source's EOF and every byte, and no
/// Recv or Send after it; nothing after Close; a failure closes with a reset; connect attempts go
/// to distinct candidates, at most retries + 1, a timed-out one moved on from within a tick of its
/// deadline; idle closes within a tick after the deadline, never before; auto switches to splice
/// only after a full streak and with nothing in flight; receives stay armed only below the limit
/// and buffered bytes stay bounded; no direction stalls; the balancer's active counts match the
/// connections; `Shard::len` matches. At the end of each seed: every connection closed and was
/// released, counts back at zero, every stale completion rejected without touching the slot's
/// new occupant, and the shard's counters agree with what the engine saw.
#[test]
fn seeded_simulation() {
    let seeds: Vec<u64> = match (
        std::env::var("RINGLB_SIM_SEED"),
        std::env::var("RINGLB_SIM_SEEDS"),
    ) {
        (Ok(seed), _) => vec![seed.parse().expect("RINGLB_SIM_SEED is a number")],
        // A longer soak: `RINGLB_SIM_SEEDS=5000 cargo test --release --test core_sim`.
        (_, Ok(n)) => (0..n.parse().expect("RINGLB_SIM_SEEDS is a number")).collect(),
        _ => (0..SEEDS).collect(),
    };
    let mut total = Coverage::default();
    for seed in seeds.iter().copied() {
        let result = std::panic::catch_unwind(move || {
            let mut sim = Sim::new(seed);
            sim.run();
            sim.cov
        });
        match result {
            Ok(cov) => {
                for (reason, n) in cov.closes {
                    *total.closes.entry(reason).or_default() += n;
                }
                total.auto_switches += cov.auto_switches;
                total.backpressure_cancels += cov.backpressure_cancels;
                total.partial_sends += cov.partial_sends;
                total.core_connect_timeouts += cov.core_connect_timeouts;
                total.retries += cov.retries;
                total.stale_events += cov.stale_events;
                total.late_events += cov.late_events;
                total.refused_full += cov.refused_full;
                total.aborts += cov.aborts;
                total.bytes += cov.bytes;
            }
            Err(panic) => {
                eprintln!("simulation failed with seed {seed} (rerun: RINGLB_SIM_SEED={seed})");
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!("{total:#?}");
    if seeds.len() as u64 >= SEEDS {
        // The simulation reaches every outcome it claims to check.
        for reason in [
            CloseReason::Done,
            CloseReason::NoBackend,
            CloseReason::ClientFailed,
            CloseReason::BackendFailed,
            CloseReason::IdleTimeout,
            CloseReason::Aborted,
        ] {
            assert!(
                total.closes.get(&reason).copied().unwrap_or(0) > 0,
                "no {reason:?} closes"
            );
        }
        assert!(total.closes[&CloseReason::Done] > SEEDS * CONNS as u64 / 4);
        for (what, n) in [
            ("auto switches", total.auto_switches),
            ("backpressure cancels", total.backpressure_cancels),
            ("partial sends", total.partial_sends),
            ("core connect timeouts", total.core_connect_timeouts),
            ("retries", total.retries),
            ("stale events", total.stale_events),
            ("late events", total.late_events),
            ("full refusals", total.refused_full),
            ("aborts", total.aborts),
        ] {
            assert!(n > 0, "the simulation never produced {what}");
        }
    }
}

/// A pool with nothing Up: every client is closed at once with NoBackend, counts stay at zero.
#[test]
fn no_backend_up_closes_every_client_at_once() {
    let t0 = Instant::now();
    let infos = vec![BackendInfo {
        name: "down".into(),
        addr: (Ipv4Addr::LOCALHOST, 9).into(),
        weight: 1,
    }];
    let pool = Arc::new(PoolSnapshot::new(
        Algorithm::RoundRobin,
        infos,
        vec![BackendState::Down],
    ));
    let params = ConnParams {
        connect_timeout: Some(Duration::from_millis(50)),
        idle_timeout: Duration::from_secs(1),
        mode: Mode::Auto,
        copy_high_water: 4096,
        splice_capacity: 8192,
        full_receipt: 1024,
    };
    let listener = ListenerPolicy {
        pool: 0,
        params,
        candidates: 3,
    };
    let mut shard: Shard<u32> = Shard::new(t0, vec![listener], vec![pool], 16, 1);
    let keys: Vec<SlotKey> = (0..5)
        .map(|i| {
            shard
                .accept(t0, 0, IpAddr::V4(Ipv4Addr::LOCALHOST), i)
                .expect("room")
        })
        .collect();
    let mut closed = Vec::new();
    while let Some((key, action)) = shard.poll_action() {
        assert_eq!(
            action,
            Action::Close {
                reset: false,
                reason: CloseReason::NoBackend
            }
        );
        closed.push(key);
    }
    closed.sort_by_key(|k| k.index());
    assert_eq!(closed, keys);
    assert_eq!(shard.next_timeout(), None);
    for key in keys {
        assert!(shard.release(key).is_some());
    }
    assert!(shard.is_empty());
    assert_eq!(shard.balancer(0).expect("pool").active(BackendId(0)), 0);
    assert_eq!(shard.stats().closed_no_backend, 5);
}

/// Blackholed backends only: the connection gives up after exactly (retries + 1) connect
/// timeouts, plus at most one tick of rounding, on a clock that jumps from timer to timer.
#[test]
fn all_blackholed_gives_up_after_every_timeout() {
    for (timeout_ms, offset_us) in [(100u64, 0u64), (100, 1_234), (48, 3_999), (7, 10)] {
        let t0 = Instant::now();
        let infos = (0..4)
            .map(|i| BackendInfo {
                name: format!("b{i}"),
                addr: (Ipv4Addr::LOCALHOST, 9000 + i).into(),
                weight: 1,
            })
            .collect();
        let pool = Arc::new(PoolSnapshot::new(
            Algorithm::RoundRobin,
            infos,
            vec![BackendState::Up; 4],
        ));
        let timeout = Duration::from_millis(timeout_ms);
        let params = ConnParams {
            connect_timeout: Some(timeout),
            idle_timeout: Duration::from_secs(1),
            mode: Mode::Copy,
            copy_high_water: 4096,
            splice_capacity: 8192,
            full_receipt: 1024,
        };
        let listener = ListenerPolicy {
            pool: 0,
            params,
            candidates: 3,
        };
        let mut shard: Shard<()> = Shard::new(t0, vec![listener], vec![pool], 16, 7);
        let accepted = t0 + Duration::from_micros(offset_us);
        let key = shard
            .accept(accepted, 0, IpAddr::V4(Ipv4Addr::LOCALHOST), ())
            .expect("room");
        let mut now = accepted;
        let mut tried = Vec::new();
        let closed_at = loop {
            let mut closed = None;
            while let Some((k, action)) = shard.poll_action() {
                assert_eq!(k, key);
                match action {
                    Action::Connect { backend, .. } => {
                        let balancer = shard.balancer(0).expect("pool");
                        assert_eq!(balancer.active(backend), 1);
                        tried.push((backend, now));
                    }
                    Action::Close { reset, reason } => {
                        assert!(!reset);
                        assert_eq!(reason, CloseReason::NoBackend);
                        closed = Some(now);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if let Some(at) = closed {
                break at;
            }
            now = shard.next_timeout().expect("a deadline is armed");
            shard.handle_timeouts(now);
        };
        assert_eq!(tried.len(), 3);
        let mut distinct: Vec<BackendId> = tried.iter().map(|(b, _)| *b).collect();
        distinct.dedup();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        for pair in tried.windows(2) {
            let gap = pair[1].1 - pair[0].1;
            assert!(
                gap >= timeout && gap <= timeout + TICK,
                "attempt lasted {gap:?}"
            );
        }
        let total = closed_at - accepted;
        assert!(total >= timeout * 3, "gave up after {total:?}");
        // Once the first expiry lands on a tick, the later ones do too when the timeout is a
        // whole number of ticks; otherwise each attempt may round up by a tick.
        let slack = if timeout.as_nanos() % TICK.as_nanos() == 0 {
            TICK
        } else {
            TICK * 3
        };
        assert!(
            total <= timeout * 3 + slack,
            "gave up after {total:?} ({timeout_ms} ms timeout)"
        );
        let balancer = shard.balancer(0).expect("pool");
        for (backend, _) in tried {
            assert_eq!(balancer.active(backend), 0);
        }
        assert!(shard.release(key).is_some());
    }
}
