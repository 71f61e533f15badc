//! How a client enters the shard: accepted, inspected when its listener reads its first bytes
//! (see [`crate::core::inspect`]), and placed: given backends to try, a place in a queue, or
//! a close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::record::Trail;
use super::{Entry, ListenerPolicy, Refused, Shard};
use crate::core::affinity::AffinityPolicy;
use crate::core::balance::Balancer;
use crate::core::capacity::QueuePolicy;
use crate::core::conn::{CloseReason, Conn};
use crate::core::inspect::{InspectPolicy, Inspection, Refusal, Verdict};
use crate::core::proxy_header;
use crate::core::slot::SlotKey;

/// A listener's inspect phase: what it reads, and the pools its SNI routes lead to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspect {
    pub policy: InspectPolicy,
    /// By route target index (see [`crate::core::inspect::Routes`]).
    pub routes: Vec<RouteTarget>,
}

/// A connection in (or just out of) its inspect phase: what it read so far, and the inspect
/// policy its listener had when it was accepted. The connection keeps that policy to the end
/// of the phase, so a reload that changes or removes the listener's inspect keys mid-read
/// neither strands it nor feeds its bytes to a parser they were not meant for.
#[derive(Debug)]
pub(super) struct Inspecting {
    pub(super) inspection: Inspection,
    pub(super) policy: Arc<Inspect>,
}

/// The pool an SNI route leads to, with what a listener's policy says of its own pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    pub pool: usize,
    /// Backends tried per connection: 1 + the pool's retries.
    pub candidates: usize,
    pub queue: QueuePolicy,
    pub affinity: Option<AffinityPolicy>,
}

impl<Io> Shard<Io> {
    /// Take a new client from listener `listener`. On success the connection's first action
    /// (an inspect read, a connect, or a close when no backend is up) is ready in
    /// [`Shard::poll_action`]. On refusal the payload comes back so the engine can close the
    /// client.
    pub fn accept(
        &mut self,
        now: Instant,
        listener: usize,
        client: SocketAddr,
        io: Io,
    ) -> Result<SlotKey, (Refused, Io)> {
        self.clock = now;
        let Some(policy) = self.listeners.get(listener).cloned() else {
            return Err((Refused::UnknownListener, io));
        };
        if self.conns.len() >= self.max_connections {
            self.stats.refused += 1;
            self.counters.refused(listener);
            return Err((Refused::Full, io));
        }
        if let Some(inspect) = &policy.inspect {
            let deadline = now + inspect.policy.timeout;
            let conn = Conn::inspecting(now, policy.params, deadline);
            let key = self.insert(now, listener, &policy, client, io, conn);
            if let Some(entry) = self.conns.get_mut(key) {
                entry.inspect = Some(Box::new(Inspecting {
                    inspection: Inspection::new(&inspect.policy),
                    policy: Arc::clone(inspect),
                }));
            }
            return Ok(key);
        }
        if self.gated(listener, &policy) {
            let key = self.insert(
                now,
                listener,
                &policy,
                client,
                io,
                Conn::new(now, policy.params, &[]),
            );
            self.place_gated(now, key, listener, &policy, client);
            return Ok(key);
        }
        // A missing pool is a configuration bug caught by validation; treat it as "no backend".
        let pick = self.pick_for(now, &policy, client);
        let candidates = pick.as_ref().map_or(&[][..], |p| p.candidates());
        let conn = Conn::new(now, policy.params, candidates);
        Ok(self.insert(now, listener, &policy, client, io, conn))
    }

    /// Put a new connection in the table, ready for its first action.
    pub(super) fn insert(
        &mut self,
        now: Instant,
        listener: usize,
        policy: &ListenerPolicy,
        client: SocketAddr,
        io: Io,
        conn: Conn,
    ) -> SlotKey {
        let key = self.conns.insert(Entry {
            conn,
            listener,
            pool: policy.pool,
            counted: None,
            slot: None,
            ticket: None,
            inspect: None,
            timer: None,
            in_ready: true,
            trail: Trail::new(client, now),
            io,
        });
        self.ready.push(key);
        self.stats.accepted += 1;
        self.counters.accepted(listener);
        key
    }

    /// Give connection `key` the state `conn` a new client would get (see
    /// [`Conn::place`]: an inspecting connection keeps its client side's state).
    pub(super) fn set_conn(&mut self, key: SlotKey, conn: Conn) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        if entry.conn.inspecting_until().is_some() {
            entry.conn.place(conn);
        } else {
            entry.conn = conn;
        }
        if !entry.in_ready {
            entry.in_ready = true;
            self.ready.push(key);
        }
    }

    /// How many bytes the next [`Action::Inspect`](crate::core::conn::Action::Inspect) read
    /// of connection `key` may bring (0 for a stale key).
    pub fn inspect_room(&self, key: SlotKey) -> usize {
        self.conns
            .get(key)
            .and_then(|e| e.inspect.as_ref())
            .map_or(0, |i| i.inspection.room())
    }

    /// The bytes one inspect read of connection `key` brought (at most
    /// [`Self::inspect_room`]; none, for a read that found nothing after all, asks for
    /// another). Returns false for a stale key.
    pub fn inspected(&mut self, now: Instant, key: SlotKey, bytes: &[u8]) -> bool {
        self.clock = now;
        let Some(entry) = self.conns.get_mut(key) else {
            self.stats.stale_events += 1;
            return false;
        };
        entry.trail.touched = now;
        let Some(inspecting) = entry.inspect.as_mut() else {
            return true;
        };
        let verdict = inspecting.inspection.feed(&inspecting.policy.policy, bytes);
        let deciding = entry.conn.inspecting_until().is_some();
        entry.conn.inspect_read(now, verdict == Verdict::More);
        if !entry.in_ready {
            entry.in_ready = true;
            self.ready.push(key);
        }
        // After a decision (a timeout while this read was out), the bytes are only kept.
        if deciding {
            self.decide(now, key, verdict);
        }
        true
    }

    /// The client of connection `key` ended its side (or its `inspect_timeout` passed) before
    /// the inspect phase decided.
    pub(super) fn cut_short(&mut self, now: Instant, key: SlotKey, timed_out: bool) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        let Some(inspecting) = entry.inspect.as_mut() else {
            return;
        };
        if entry.conn.inspecting_until().is_none() {
            return;
        }
        let verdict = inspecting
            .inspection
            .cut_short(&inspecting.policy.policy, timed_out);
        self.decide(now, key, verdict);
    }

    fn decide(&mut self, now: Instant, key: SlotKey, verdict: Verdict) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        let listener = entry.listener;
        let Some(mut policy) = self.listeners.get(listener).cloned() else {
            // Its listener went away in a reload while it was read: nothing to place it by.
            if verdict != Verdict::More {
                entry.conn.refuse(CloseReason::Local, false);
                self.ready_again(key);
            }
            return;
        };
        match verdict {
            Verdict::More => {}
            Verdict::Refuse(refusal) => {
                // A broken header is a protocol error: reset. A slow or nameless client gets
                // an orderly close.
                let reset = refusal == Refusal::ProxyHeader;
                entry.conn.refuse(CloseReason::Inspect(refusal), reset);
                self.ready_again(key);
            }
            Verdict::Proceed { route } => {
                let Some(inspecting) = entry.inspect.as_ref() else {
                    return;
                };
                if let Some((client, _)) = inspecting.inspection.addresses() {
                    entry.trail.client = client;
                }
                // Routes by the policy the connection was read with, as the parser was.
                let inspect = &inspecting.policy;
                let target = route.and_then(|r| inspect.routes.get(r).copied());
                if inspect.policy.sni.is_some() {
                    self.counters.routed(listener, target.is_some());
                }
                if let Some(target) = target {
                    policy.pool = target.pool;
                    policy.candidates = target.candidates;
                    policy.queue = target.queue;
                    policy.affinity = target.affinity;
                    entry.pool = target.pool;
                }
                self.place(now, key, listener, &policy);
            }
        }
    }

    fn ready_again(&mut self, key: SlotKey) {
        if let Some(entry) = self.conns.get_mut(key)
            && !entry.in_ready
        {
            entry.in_ready = true;
            self.ready.push(key);
        }
    }

    /// Give connection `key`, inspected, what a new client of `policy` gets: backends to
    /// try, a place in the queue, or a close.
    fn place(&mut self, now: Instant, key: SlotKey, listener: usize, policy: &ListenerPolicy) {
        let Some(client) = self.conns.get(key).map(|e| e.trail.client) else {
            return;
        };
        if self.gated(listener, policy) {
            self.place_gated(now, key, listener, policy, client);
            return;
        }
        let pick = self.pick_for(now, policy, client);
        let candidates = pick.as_ref().map_or(&[][..], |p| p.candidates());
        let conn = Conn::new(now, policy.params, candidates);
        self.set_conn(key, conn);
    }

    /// The preamble connection `key` sends its backend before anything else (see
    /// [`Action::SendPreamble`](crate::core::conn::Action::SendPreamble)): the PROXY header
    /// of its backend's `send_proxy`, then what the inspect phase read after any PROXY header
    /// it received. The header names the client and the address it connected to: those the
    /// received header gave, or the connection's own (`local` is asked for the address the
    /// client connected to only then, with the connection's payload). Empty for a stale key; the inspect buffer is freed.
    pub fn take_preamble(
        &mut self,
        key: SlotKey,
        local: impl FnOnce(&Io) -> Option<SocketAddr>,
    ) -> Vec<u8> {
        let Some(entry) = self.conns.get_mut(key) else {
            return Vec::new();
        };
        let inspection = entry.inspect.take().map(|i| i.inspection);
        let version = entry
            .conn
            .backend()
            .and_then(|b| self.balancers.get(entry.pool)?.snapshot().send_proxy(b));
        let mut preamble = Vec::new();
        if let Some(version) = version {
            let addresses = inspection.as_ref().and_then(|i| i.addresses());
            let addresses = addresses.or_else(|| Some((entry.trail.client, local(&entry.io)?)));
            match addresses {
                Some((client, destination)) => {
                    preamble = proxy_header::encode(version, client, destination);
                }
                // The engine could not name the local address: a LOCAL header (v2) or
                // UNKNOWN (v1) says "no address" rather than a made-up one.
                None => preamble = proxy_header::encode_unknown(version),
            }
        }
        if let Some(inspection) = &inspection {
            preamble.extend_from_slice(inspection.data());
        }
        preamble
    }
}

/// Whether `entry` has a preamble to send: a PROXY header for its backend, or bytes its
/// inspect phase read.
pub(super) fn has_preamble<Io>(entry: &Entry<Io>, balancers: &[Balancer]) -> bool {
    let header = entry
        .conn
        .backend()
        .and_then(|b| balancers.get(entry.pool)?.snapshot().send_proxy(b))
        .is_some();
    header
        || entry
            .inspect
            .as_ref()
            .is_some_and(|i| !i.inspection.data().is_empty())
}

#[cfg(test)]
mod tests;
