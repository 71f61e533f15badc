//! Setting up a seed and running it: arrivals, releases, the virtual clock, one turn at a time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlb::config::Mode;
use ringlb::core::backend::{BackendInfo, BackendState};
use ringlb::core::balance::{Algorithm, PoolSnapshot};
use ringlb::core::conn::{ConnParams, Via};
use ringlb::core::shard::{ListenerPolicy, Refused, Shard};

use crate::CONNS;
use crate::rng::Rng;
use crate::state::*;

impl Sim {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xD1B5_4A32_D192_ED03);
        let mode = rng.pick(&[Mode::Copy, Mode::Splice, Mode::Auto]);
        let full = rng.pick(&[512u64, 1024, 4096]);
        let connect_timeout = rng.micros(8_000, 150_000);
        let engine_timeout = rng.pct(25);
        // Some idle timeouts beyond the wheel's horizon (about 4 s), so entries wait turns.
        let idle_timeout = if rng.pct(20) {
            rng.micros(4_000_000, 9_000_000)
        } else {
            rng.micros(80_000, 700_000)
        };
        // Half-closed limits: as the idle timeout (the default), or shorter or longer.
        let mut fin = || {
            if rng.pct(50) {
                idle_timeout
            } else {
                rng.micros(30_000, 900_000)
            }
        };
        let (client_fin, server_fin) = (fin(), fin());
        let params = ConnParams {
            connect_timeout: (!engine_timeout).then_some(connect_timeout),
            idle_timeout,
            client_fin,
            server_fin,
            mode,
            copy_high_water: full * rng.range(1, 4),
            splice_capacity: rng.pick(&[4096u64, 8192, 65536]),
            full_receipt: full,
            loopback_copy: false,
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
                max_connections: None,
                send_proxy: None,
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
            queue: Default::default(),
            admission: None,
            affinity: None,
            inspect: None,
        };
        let shard = Shard::new(
            t0,
            vec![listener],
            vec![pool],
            max_connections,
            seed as usize,
        );
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
            expect_resets: [0; 3],
            expect_bytes: [0; 2],
            refused_full: 0,
            cov: Coverage::default(),
        }
    }

    pub(crate) fn plan(rng: &mut Rng) -> Plan {
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

    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    // ------------------------------------------------------------------------------------------
    // One turn.

    pub(crate) fn run(&mut self) {
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

    pub(crate) fn advance(&mut self) {
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

    pub(crate) fn next_due(&self) -> Option<Instant> {
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
    pub(crate) fn source_total(&self, conn: &SimConn, i: usize) -> Option<u64> {
        if i == 0 {
            return Some(conn.plan.up_total);
        }
        conn.established_at?;
        match conn.plan.reply {
            Reply::Fixed { total, .. } | Reply::Linger { total } => Some(total),
            Reply::Echo => None,
        }
    }

    pub(crate) fn arrivals(&mut self) {
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
            match self
                .shard
                .accept(self.now, 0, (self.conns[c].plan.client, 1).into(), c)
            {
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

    pub(crate) fn releases(&mut self) {
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

    pub(crate) fn abort_all(&mut self) {
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
}
