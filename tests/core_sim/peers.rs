//! The simulated peers and engine reporting back: writes on the peers' own schedules, and the
//! completions (receives, sends, connect answers, resets, stale and late events) fed to the shard.

use std::time::Duration;

use ringlb::config::Mode;
use ringlb::core::conn::{AUTO_SPLICE_FULL_RECEIPTS, Dir, Event, Failure, Side, Via};

use crate::state::*;

impl Sim {
    /// The peers write on their own schedule.
    pub(crate) fn produce(&mut self, c: usize) {
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
    pub(crate) fn candidates(&self, out: &mut Vec<(usize, Cand)>, any: bool) {
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

    pub(crate) fn feed(&mut self, c: usize, event: Event) {
        let key = self.conns[c].key.expect("a live connection");
        if self.conns[c].active() {
            match event {
                Event::Connected
                | Event::ConnectFailed { .. }
                | Event::Received { .. }
                | Event::Eof { .. }
                | Event::Sent { .. }
                | Event::PreambleSent => self.conns[c].last_activity = self.now,
                Event::RecvEnded { .. }
                | Event::SpliceUnavailable { .. }
                | Event::Failed { .. } => {}
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

    pub(crate) fn deliver(&mut self, c: usize, cand: Cand) {
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
                self.feed(
                    c,
                    Event::Failed {
                        side: Side::Client,
                        failure: Failure::Os(libc::ECONNRESET),
                    },
                );
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
                        failure: Failure::Os(libc::ECONNRESET),
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

    pub(crate) fn receive(&mut self, c: usize, dir: Dir) -> Event {
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

    pub(crate) fn complete_send(&mut self, c: usize, dir: Dir) -> Event {
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

    pub(crate) fn deliver_stale(&mut self) {
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
                Event::Failed {
                    side: Side::Client,
                    failure: Failure::Os(libc::ECONNRESET),
                },
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
}
