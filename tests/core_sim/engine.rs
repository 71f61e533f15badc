//! The simulated engine carrying out the core's actions, checking each against the model.

use ringlb::config::Mode;
use ringlb::core::backend::BackendId;
use ringlb::core::conn::{
    AUTO_SPLICE_FULL_RECEIPTS, Action, CloseReason, Dir, Event, Failure, Side, Via,
};
use ringlb::core::slot::SlotKey;
use ringlb::core::timer::TICK;

use crate::state::*;

impl Sim {
    pub(crate) fn drain(&mut self) {
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
                Action::Inspect | Action::SendPreamble => {
                    panic!("the simulation inspects nothing and sends no preamble")
                }
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
                    assert!(
                        !conn.flows[1 - dir.index()].shut,
                        "{action:?} of the last direction: the close sends its FIN"
                    );
                    let flow = &mut conn.flows[dir.index()];
                    check_shut(flow, &action);
                    flow.shut = true;
                }
                Action::Close { reset, reason } => self.on_close(c, key, reset, reason),
            }
        }
    }

    /// The attempt still outstanding when the core moved on must have run out its deadline,
    /// and the core must have noticed within a tick.
    pub(crate) fn expire_attempt(&mut self, c: usize) {
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

    pub(crate) fn on_connect(&mut self, c: usize, key: SlotKey, backend: BackendId, attempt: u32) {
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

    pub(crate) fn on_recv(&mut self, c: usize, dir: Dir, via: Via) {
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

    pub(crate) fn on_send(&mut self, c: usize, dir: Dir, via: Via, queued: u64) {
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

    pub(crate) fn on_close(&mut self, c: usize, key: SlotKey, reset: bool, reason: CloseReason) {
        let now = self.now;
        let params = self.setup.params;
        let mode = self.setup.mode;
        assert_eq!(self.shard.conn(key).and_then(|k| k.closed()), Some(reason));
        match reason {
            CloseReason::Done => {
                let conn = &self.conns[c];
                assert!(!reset, "Done with a reset");
                assert!(conn.failed.is_empty() && !conn.aborted);
                // The last direction to end is shut by the close itself.
                assert!(
                    conn.flows.iter().filter(|f| !f.shut).count() <= 1,
                    "Done before either direction shut"
                );
                let conn = &mut self.conns[c];
                for flow in conn.flows.iter_mut().filter(|f| !f.shut) {
                    check_shut(flow, &Action::Close { reset, reason });
                    flow.shut = true;
                }
                let conn = &self.conns[c];
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
            CloseReason::ClientFailed(_) => {
                assert!(reset);
                assert!(self.conns[c].failed.contains(&Side::Client));
            }
            CloseReason::BackendFailed(_) => {
                assert!(reset);
                assert!(self.conns[c].failed.contains(&Side::Backend));
            }
            CloseReason::Aborted => assert!(reset && self.conns[c].aborted),
            CloseReason::Local => panic!("closed as Local; this engine never fails locally"),
            CloseReason::QueueFull | CloseReason::QueueTimeout => {
                panic!("closed by a queue; the simulation sets no limits")
            }
            CloseReason::Inspect(_) => panic!("closed by an inspect phase; none is set"),
            CloseReason::IdleTimeout | CloseReason::FinTimeout(_) => {
                let conn = &self.conns[c];
                assert!(!reset);
                assert!(conn.established_at.is_some());
                let limit = match reason {
                    CloseReason::FinTimeout(Side::Client) => params.client_fin,
                    CloseReason::FinTimeout(Side::Backend) => params.server_fin,
                    _ => params.idle_timeout,
                };
                let deadline = conn.last_activity + limit;
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
        // Every failure the simulated peers cause is a reset by the peer; aborts are shutdown.
        match reason {
            CloseReason::ClientFailed(_) => self.expect_resets[0] += 1,
            CloseReason::BackendFailed(_) => self.expect_resets[1] += 1,
            CloseReason::Aborted => self.expect_resets[2] += 1,
            _ => {}
        }
        match reason {
            CloseReason::NoBackend => self.expect_closed[1] += 1,
            CloseReason::IdleTimeout => self.expect_closed[2] += 1,
            CloseReason::ClientFailed(_) | CloseReason::BackendFailed(_) => {
                self.expect_closed[3] += 1
            }
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
                failure: Failure::Os(libc::ECONNRESET),
            });
        }
        conn.release_at = Some(now + rng.micros(0, 10_000));
    }
}
