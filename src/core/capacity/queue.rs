//! One pool's waiting queue, ordered by ticket, and the walk that grants it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{Arrival, Bucket, Eligible, Grant, Room, Slot};
use crate::core::backend::BackendId;
use crate::core::balance::PoolSnapshot;
use crate::core::slot::SlotKey;

/// A client in the queue.
#[derive(Debug)]
struct Waiter {
    ticket: u64,
    worker: usize,
    key: SlotKey,
    listener: usize,
    client: SocketAddr,
    since: Instant,
    eligible: Eligible,
    bucket: Option<Arc<Bucket>>,
}

/// One waiting client as `ringlb ctl show queue` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterView {
    pub pool: usize,
    /// 1 for the head of the queue.
    pub position: usize,
    pub ticket: u64,
    pub worker: usize,
    pub listener: usize,
    pub client: SocketAddr,
    /// When it joined the queue.
    pub since: Instant,
}

/// The queue behind a room's lock.
#[derive(Debug, Default)]
pub(super) struct Queue {
    /// Oldest first; tickets ascending.
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
    /// Where the next walk over the Up backends starts, so that grants spread over them.
    rotation: usize,
    /// Waiters that may use only some backends, and waiters that need a token: while there
    /// are none, a walk stops at the first client that cannot go.
    listed: usize,
    rated: usize,
    /// When the earliest token a waiter was refused comes (set by each walk).
    retry: Option<Instant>,
}

impl Queue {
    pub(super) fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Append `arrival`; its ticket.
    pub(super) fn push(&mut self, arrival: Arrival) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let waiter = Waiter {
            ticket,
            worker: arrival.worker,
            key: arrival.key,
            listener: arrival.listener,
            client: arrival.client,
            since: arrival.since,
            eligible: arrival.eligible,
            bucket: arrival.bucket,
        };
        self.count(&waiter, true);
        self.waiters.push_back(waiter);
        ticket
    }

    fn count(&mut self, waiter: &Waiter, joined: bool) {
        let step = |n: &mut usize| {
            *n = if joined { *n + 1 } else { n.saturating_sub(1) };
        };
        if matches!(waiter.eligible, Eligible::Listed { .. }) {
            step(&mut self.listed);
        }
        if waiter.bucket.is_some() {
            step(&mut self.rated);
        }
    }

    /// Take `ticket` out; false when it is not in the queue.
    pub(super) fn remove(&mut self, ticket: u64) -> bool {
        let Ok(index) = self.waiters.binary_search_by_key(&ticket, |w| w.ticket) else {
            return false;
        };
        if let Some(waiter) = self.waiters.remove(index) {
            self.count(&waiter, false);
        }
        true
    }

    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry
    }

    pub(super) fn views(&self, pool: usize) -> Vec<WaiterView> {
        self.waiters
            .iter()
            .enumerate()
            .map(|(i, w)| WaiterView {
                pool,
                position: i + 1,
                ticket: w.ticket,
                worker: w.worker,
                listener: w.listener,
                client: w.client,
                since: w.since,
            })
            .collect()
    }

    /// Walk the queue from its head and grant every client that can go at `now`: one whose
    /// eligible backends have a free slot (any slot at all when the pool has no limits) and,
    /// when its listener has a rate, a token. A client that cannot go holds back the clients
    /// behind it that need the same thing (any slot; its listener's token), so that each
    /// kind is served in order.
    pub(super) fn dispatch(
        &mut self,
        room: &Room,
        snapshot: &PoolSnapshot,
        now: Instant,
        grants: &mut Vec<Grant>,
    ) {
        self.retry = None;
        let strict = self.listed == 0 && self.rated == 0;
        let mut no_slot_for_any = false;
        let mut blocked_listeners: Vec<usize> = Vec::new();
        let mut i = 0;
        while i < self.waiters.len() {
            let waiter = &self.waiters[i];
            let any = waiter.eligible == Eligible::Any;
            if (any && no_slot_for_any) || blocked_listeners.contains(&waiter.listener) {
                i += 1;
                continue;
            }
            let choice = if snapshot.limited() {
                find_slot(room, snapshot, waiter.eligible, &mut self.rotation)
            } else {
                Some((None, false))
            };
            let Some((backend, counted)) = choice else {
                no_slot_for_any |= any;
                if strict {
                    break;
                }
                i += 1;
                continue;
            };
            if let Some(bucket) = &waiter.bucket
                && !bucket.try_take(now)
            {
                if let (Some(id), true) = (backend, counted) {
                    room.give_back(id);
                }
                blocked_listeners.push(waiter.listener);
                let at = bucket.next_at(now);
                self.retry = Some(self.retry.map_or(at, |r| r.min(at)));
                i += 1;
                continue;
            }
            let Some(waiter) = self.waiters.remove(i) else {
                break;
            };
            self.count(&waiter, false);
            grants.push(Grant {
                worker: waiter.worker,
                pool: room.pool,
                key: waiter.key,
                ticket: waiter.ticket,
                backend,
                counted,
            });
        }
    }
}

/// A backend among `eligible` with a free slot, taken: `(backend, counted)`; counted is false
/// for a backend without a limit. `None` when every eligible backend is full (or none is Up).
fn find_slot(
    room: &Room,
    snapshot: &PoolSnapshot,
    eligible: Eligible,
    rotation: &mut usize,
) -> Option<(Option<BackendId>, bool)> {
    let try_one = |id: BackendId| match room.try_take(snapshot, id) {
        Slot::Unlimited => Some((Some(id), false)),
        Slot::Taken => Some((Some(id), true)),
        Slot::Full => None,
    };
    match eligible {
        Eligible::Any => {
            let up = snapshot.up();
            let n = up.len();
            (0..n).find_map(|k| {
                let at = (*rotation + k) % n;
                let found = try_one(up[at]);
                if found.is_some() {
                    *rotation = (at + 1) % n;
                }
                found
            })
        }
        Eligible::Listed { ids, len } => ids[..usize::from(len)]
            .iter()
            .filter(|&&id| snapshot.state(id).takes_new_connections())
            .find_map(|&id| try_one(id)),
    }
}
