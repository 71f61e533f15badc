//! Reading the workers' counters: ask every worker, wait a bounded time, sum what came back.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::core::stats::{BackendCounters, ListenerCounters};
use crate::engine::inbox::{Message, WorkerLink, WorkerReport};

/// How long a read waits for the workers. A worker answers at its next loop turn (within
/// about 100 ms even when idle); one that has not answered by then is reported missing.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// The answers of one round of reports.
#[derive(Clone, Debug, Default)]
pub struct Reports {
    /// How many workers were asked.
    pub asked: usize,
    /// The answers, one per worker that answered, in worker order.
    pub answers: Vec<WorkerReport>,
    /// How many changes the control side had sent when these reports were asked for (see
    /// [`super::Control::changes`]). Each worker applies its inbox in order, so its answer
    /// reflects every one of them.
    pub after_changes: u64,
}

impl Reports {
    /// Ask every worker behind `links` for its report and wait up to `timeout` for all of
    /// them. Never blocks longer; a worker that has stopped, or did not answer in time, is
    /// left out (see [`Self::missing`]). `after_changes` is [`super::Control::changes`] read
    /// together with `links`.
    pub fn collect(links: &[WorkerLink], after_changes: u64, timeout: Duration) -> Reports {
        let deadline = Instant::now() + timeout;
        let (reply, answers) = mpsc::channel();
        let mut expected = 0;
        for link in links {
            if link.send(Message::Report(reply.clone())).is_ok() {
                expected += 1;
            }
        }
        // The workers hold the only senders now: a worker that drops its request unanswered
        // (or stops) cannot keep the loop below waiting past the deadline.
        drop(reply);
        let mut got: Vec<WorkerReport> = Vec::with_capacity(expected);
        while got.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            match answers.recv_timeout(left) {
                Ok(report) => {
                    if !got.iter().any(|r| r.worker == report.worker) {
                        got.push(report);
                    }
                }
                Err(_) => break,
            }
        }
        got.sort_by_key(|r| r.worker);
        Reports {
            asked: links.len(),
            answers: got,
            after_changes,
        }
    }

    /// Whether every worker asked has answered.
    pub fn complete(&self) -> bool {
        self.answers.len() == self.asked
    }

    /// The workers (by index, out of `0..asked`) that did not answer.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.asked)
            .filter(|w| !self.answers.iter().any(|r| r.worker == *w))
            .collect()
    }

    /// Backend `backend` of pool `pool`, summed over the workers that answered. A worker that
    /// does not know the backend yet (a snapshot still in its inbox) counts zero for it.
    pub fn backend(&self, pool: usize, backend: usize) -> BackendCounters {
        let mut sum = BackendCounters::default();
        for report in &self.answers {
            let Some(c) = report.backends.get(pool).and_then(|p| p.get(backend)) else {
                continue;
            };
            sum.add(c);
        }
        sum
    }

    /// Refusals of backend `backend` of pool `pool` seen by UDP flows, summed over the
    /// workers that answered and the UDP listeners of that pool.
    pub fn udp_refusals(&self, pool: usize, backend: usize) -> u64 {
        self.answers
            .iter()
            .flat_map(|r| r.udp.iter())
            .filter(|u| u.pool == pool)
            .filter_map(|u| u.refusals.get(backend))
            .sum()
    }

    /// UDP listener `listener`, summed over the workers that answered.
    pub fn udp(&self, listener: usize) -> crate::engine::udp::UdpReport {
        let mut sum = crate::engine::udp::UdpReport::default();
        for r in self.answers.iter().filter_map(|r| r.udp.get(listener)) {
            sum.add(r);
        }
        sum
    }

    /// Listener `listener`, summed over the workers that answered.
    pub fn listener(&self, listener: usize) -> ListenerCounters {
        let mut sum = ListenerCounters::default();
        for c in self
            .answers
            .iter()
            .filter_map(|r| r.listeners.get(listener))
        {
            sum.add(c);
        }
        sum
    }
}

/// Duplicates of every worker's open listening sockets, grouped by listener index (what a
/// binary upgrade takes over). Asked like reports: a worker that does not answer within
/// `timeout` is left out, and the new process binds its sockets afresh.
pub fn listening_sockets(
    links: &[WorkerLink],
    timeout: Duration,
) -> std::collections::BTreeMap<usize, Vec<socket2::Socket>> {
    let deadline = Instant::now() + timeout;
    let (reply, answers) = mpsc::channel();
    let expected = links
        .iter()
        .filter(|link| link.send(Message::Sockets(reply.clone())).is_ok())
        .count();
    drop(reply);
    let mut by_listener = std::collections::BTreeMap::<usize, Vec<socket2::Socket>>::new();
    for _ in 0..expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(sockets) = answers.recv_timeout(left) else {
            break;
        };
        for (listener, socket) in sockets {
            by_listener.entry(listener).or_default().push(socket);
        }
    }
    by_listener
}
