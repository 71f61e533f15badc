//! UDP flows: the second state machine of the core, beside the TCP connection one.
//!
//! A flow is one client address and port on one listener of one worker. Its first datagram
//! picks a backend (with the pool's balancer, so source hashing keeps a client address on one
//! backend across flows) and asks the engine to open a socket connected to it; later
//! datagrams go out on that socket, and what the backend sends back on it goes to the client.
//! A flow ends when nothing passed either way for the idle timeout, after its backend's
//! `responses`-th datagram, when its backend refused (ICMP port unreachable), or when the
//! table is full and it is the least recently used one.
//!
//! The table is bounded (`max_flows`): one slab, one map from client to flow, and one list
//! in order of last use, so that touching, expiring and evicting are O(1) each.
//!
//! Call order, for an engine:
//! 1. a datagram from a client: [`Flows::arrival`]; on [`Arrival::Open`] open a socket (then
//!    [`Flows::opened`], or [`Flows::open_failed`]); on [`Arrival::Forward`] send on the
//!    flow's socket ([`Flows::io`]); close what [`Arrival`] hands back as evicted.
//! 2. a datagram from a flow's backend: [`Flows::reply`]; send it to the client, and close
//!    the socket it hands back when the flow ended.
//! 3. a flow's socket failed with "connection refused": [`Flows::refused`].
//! 4. every loop turn, or at [`Flows::next_expiry`]: [`Flows::expire`].
//! 5. a new pool snapshot: [`Flows::update`]; close the sockets of flows it ends.
//!
//! What a new flow's datagrams carry to its backend (a PROXY protocol header, when the
//! backend's `send_proxy` asks for one) is its [`Framing`], which the engine keeps with the
//! flow's socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{BackendId, BackendState};
use super::balance::{Balancer, PoolSnapshot};
use super::slot::{Slab, SlotKey};

mod framing;

pub use framing::{Framing, MAX_PAYLOAD_V4, MAX_PAYLOAD_V6, max_payload};

/// How a listener's flows live (its pool's `udp_*` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowPolicy {
    /// A flow with no datagram either way for this long ends.
    pub idle_timeout: Duration,
    /// A flow ends after this many datagrams from its backend; `None`: no limit.
    pub responses: Option<u32>,
    /// Most flows at once; at least 1.
    pub max_flows: usize,
}

/// What the table did, for metrics. Each counts flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Flows opened (a backend picked for a client).
    pub opened: u64,
    /// Ended after `idle_timeout`.
    pub expired: u64,
    /// Ended after `responses` replies.
    pub answered: u64,
    /// Evicted, least recently used, to make room.
    pub evicted: u64,
    /// Ended because their backend refused (ICMP port unreachable).
    pub refused: u64,
    /// Ended because their backend left the Up state.
    pub rebalanced: u64,
    /// Datagrams dropped because no backend was Up, or a socket could not be opened.
    pub no_backend: u64,
}

impl FlowCounters {
    /// Add `other` (another worker's) to these.
    pub fn add(&mut self, other: &FlowCounters) {
        self.opened += other.opened;
        self.expired += other.expired;
        self.answered += other.answered;
        self.evicted += other.evicted;
        self.refused += other.refused;
        self.rebalanced += other.rebalanced;
        self.no_backend += other.no_backend;
    }
}

/// What to do with a client's datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<Io> {
    /// Send it on the flow's socket.
    Forward { flow: SlotKey },
    /// Open a socket to `backend` for the new flow `flow`, then send it there. `evicted` is
    /// the socket of the flow evicted to make room, to close.
    Open {
        flow: SlotKey,
        backend: BackendId,
        evicted: Option<Io>,
    },
    /// No backend is Up: drop it (counted).
    Drop,
}

/// What to do with a backend's datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<Io> {
    /// Send it to `client`; `ended` is the flow's socket to close when this was its last
    /// expected response.
    Send {
        client: SocketAddr,
        ended: Option<Io>,
    },
    /// The flow is gone (a stale key): drop it.
    Stale,
}

#[derive(Debug)]
enum Stage<Io> {
    /// Waiting for the engine to open its socket.
    Opening,
    /// Forwarding on its socket.
    Open(Io),
    /// Its backend refused: the next datagram picks again, avoiding that backend.
    Refused,
}

#[derive(Debug)]
struct Flow<Io> {
    client: SocketAddr,
    backend: BackendId,
    stage: Stage<Io>,
    replies: u32,
    last: Instant,
    /// Neighbours in the use list, least recently used first.
    prev: Option<SlotKey>,
    next: Option<SlotKey>,
}

/// One listener's flows on one worker.
#[derive(Debug)]
pub struct Flows<Io> {
    policy: FlowPolicy,
    balancer: Balancer,
    slab: Slab<Flow<Io>>,
    by_client: HashMap<SocketAddr, SlotKey>,
    oldest: Option<SlotKey>,
    newest: Option<SlotKey>,
    counters: FlowCounters,
    /// Refusals by backend (index of its id in the current snapshot), for passive health
    /// checks (`max_fails`).
    refusals: Vec<u64>,
}

impl<Io> Flows<Io> {
    /// An empty table balancing with `balancer`.
    pub fn new(policy: FlowPolicy, balancer: Balancer) -> Self {
        Flows {
            policy: FlowPolicy {
                max_flows: policy.max_flows.max(1),
                ..policy
            },
            balancer,
            slab: Slab::new(),
            by_client: HashMap::new(),
            oldest: None,
            newest: None,
            counters: FlowCounters::default(),
            refusals: Vec::new(),
        }
    }

    /// Flows in the table now (refused ones waiting to pick again included).
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when no flow is open.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// What the table did so far.
    pub fn counters(&self) -> FlowCounters {
        self.counters
    }

    /// Refusals so far by backend (the index of its [`BackendId`] in the current snapshot;
    /// shorter than the backend list when the last ones never refused).
    pub fn refusals(&self) -> &[u64] {
        &self.refusals
    }

    /// The pool's snapshot this table balances with.
    pub fn snapshot(&self) -> &Arc<PoolSnapshot> {
        self.balancer.snapshot()
    }

    /// A datagram from `client` at `now`: where it goes.
    pub fn arrival(&mut self, now: Instant, client: SocketAddr) -> Arrival<Io> {
        if let Some(&key) = self.by_client.get(&client) {
            self.touch(key, now);
            let Some(flow) = self.slab.get_mut(key) else {
                return Arrival::Drop;
            };
            match flow.stage {
                Stage::Open(_) => return Arrival::Forward { flow: key },
                // A datagram while the socket is being opened: the engine opens one at a
                // time, so this only happens to an engine that queued it; send it after.
                Stage::Opening => return Arrival::Forward { flow: key },
                Stage::Refused => {
                    let refused = flow.backend;
                    let Some(backend) = self.pick(client, Some(refused)) else {
                        self.counters.no_backend += 1;
                        return Arrival::Drop;
                    };
                    if let Some(flow) = self.slab.get_mut(key) {
                        flow.backend = backend;
                        flow.stage = Stage::Opening;
                        flow.replies = 0;
                    }
                    self.balancer.connection_opened(backend);
                    self.counters.opened += 1;
                    return Arrival::Open {
                        flow: key,
                        backend,
                        evicted: None,
                    };
                }
            }
        }
        let Some(backend) = self.pick(client, None) else {
            self.counters.no_backend += 1;
            return Arrival::Drop;
        };
        let evicted = if self.slab.len() >= self.policy.max_flows {
            self.counters.evicted += 1;
            self.oldest.and_then(|key| self.remove(key))
        } else {
            None
        };
        let key = self.slab.insert(Flow {
            client,
            backend,
            stage: Stage::Opening,
            replies: 0,
            last: now,
            prev: None,
            next: None,
        });
        self.link_newest(key);
        self.by_client.insert(client, key);
        self.balancer.connection_opened(backend);
        self.counters.opened += 1;
        Arrival::Open {
            flow: key,
            backend,
            evicted,
        }
    }

    /// The socket the engine opened for flow `flow`. Returns it back for a flow that is gone
    /// meanwhile (the engine closes it).
    pub fn opened(&mut self, flow: SlotKey, io: Io) -> Result<(), Io> {
        match self.slab.get_mut(flow) {
            Some(entry) if matches!(entry.stage, Stage::Opening) => {
                entry.stage = Stage::Open(io);
                Ok(())
            }
            _ => Err(io),
        }
    }

    /// The engine could not open a socket for flow `flow` (out of fds or ports): the flow
    /// ends and its datagram is dropped, counted.
    pub fn open_failed(&mut self, flow: SlotKey) {
        self.counters.no_backend += 1;
        let _ = self.remove(flow);
    }

    /// Flow `flow`'s socket, while it has one.
    pub fn io(&self, flow: SlotKey) -> Option<&Io> {
        match &self.slab.get(flow)?.stage {
            Stage::Open(io) => Some(io),
            Stage::Opening | Stage::Refused => None,
        }
    }

    /// The client and backend of flow `flow`.
    pub fn peers(&self, flow: SlotKey) -> Option<(SocketAddr, BackendId)> {
        let flow = self.slab.get(flow)?;
        Some((flow.client, flow.backend))
    }

    /// A datagram from flow `flow`'s backend at `now`.
    pub fn reply(&mut self, now: Instant, flow: SlotKey) -> Reply<Io> {
        let Some(entry) = self.slab.get_mut(flow) else {
            return Reply::Stale;
        };
        entry.replies = entry.replies.saturating_add(1);
        let client = entry.client;
        let done = self.policy.responses.is_some_and(|n| entry.replies >= n);
        if done {
            self.counters.answered += 1;
            return Reply::Send {
                client,
                ended: self.remove(flow),
            };
        }
        self.touch(flow, now);
        Reply::Send {
            client,
            ended: None,
        }
    }

    /// Flow `flow`'s backend refused a datagram (ICMP port unreachable, seen as
    /// `ECONNREFUSED` on its connected socket) at `now`. The flow stays, without a socket
    /// (returned, to close), so that the client's next datagram picks another backend.
    pub fn refused(&mut self, now: Instant, flow: SlotKey) -> Option<Io> {
        let entry = self.slab.get_mut(flow)?;
        let stage = std::mem::replace(&mut entry.stage, Stage::Refused);
        let backend = entry.backend;
        self.counters.refused += 1;
        if self.refusals.len() <= backend.index() {
            self.refusals.resize(backend.index() + 1, 0);
        }
        self.refusals[backend.index()] += 1;
        self.balancer.connection_closed(backend);
        self.touch(flow, now);
        match stage {
            Stage::Open(io) => Some(io),
            Stage::Opening | Stage::Refused => None,
        }
    }

    /// When the least recently used flow expires, if there is one.
    pub fn next_expiry(&self) -> Option<Instant> {
        let flow = self.slab.get(self.oldest?)?;
        Some(flow.last + self.policy.idle_timeout)
    }

    /// End every flow idle for the idle timeout at `now`; `close` gets each one's socket.
    pub fn expire(&mut self, now: Instant, mut close: impl FnMut(Io)) {
        while let Some(key) = self.oldest {
            let Some(flow) = self.slab.get(key) else {
                break;
            };
            if flow.last + self.policy.idle_timeout > now {
                break;
            }
            self.counters.expired += 1;
            if let Some(io) = self.remove(key) {
                close(io);
            }
        }
    }

    /// Balance with `snapshot` from now on (a health change, a reload). Flows whose backend
    /// is no longer Up in it end (`close` gets their sockets), so that their clients' next
    /// datagrams go to one that is.
    pub fn update(&mut self, snapshot: Arc<PoolSnapshot>, mut close: impl FnMut(Io)) {
        let old = Arc::clone(self.balancer.snapshot());
        let gone: Vec<SlotKey> = self
            .slab
            .keys()
            .filter(|&key| {
                let Some(flow) = self.slab.get(key) else {
                    return false;
                };
                let name = old.backend(flow.backend).map(|b| b.name.as_str());
                let id = name.and_then(|n| snapshot.id_of(n));
                id.is_none_or(|id| snapshot.state(id) != BackendState::Up)
            })
            .collect();
        for key in gone {
            self.counters.rebalanced += 1;
            if let Some(io) = self.remove(key) {
                close(io);
            }
        }
        // Refusal counts follow their backends by name (a backend removed takes its own).
        let mut refusals = vec![0; snapshot.len()];
        for (index, &count) in self.refusals.iter().enumerate() {
            let id = old
                .backends()
                .get(index)
                .and_then(|b| snapshot.id_of(&b.name));
            if let Some(id) = id {
                refusals[id.index()] += count;
            }
        }
        self.refusals = refusals;
        // Surviving flows keep their backend; follow it to its id in the new list.
        let keys: Vec<SlotKey> = self.slab.keys().collect();
        for key in keys {
            if let Some(flow) = self.slab.get_mut(key)
                && let Some(id) = old
                    .backend(flow.backend)
                    .and_then(|b| snapshot.id_of(&b.name))
            {
                flow.backend = id;
            }
        }
        self.balancer.update(snapshot);
    }

    /// Live by `policy` from now on (a reload). Open flows keep their backends; when the
    /// table is now too big, the least recently used flows end (`close` gets their sockets).
    pub fn set_policy(&mut self, policy: FlowPolicy, mut close: impl FnMut(Io)) {
        self.policy = FlowPolicy {
            max_flows: policy.max_flows.max(1),
            ..policy
        };
        while self.slab.len() > self.policy.max_flows {
            let Some(key) = self.oldest else {
                break;
            };
            self.counters.evicted += 1;
            if let Some(io) = self.remove(key) {
                close(io);
            }
        }
    }

    /// End every flow (the worker stops); `close` gets their sockets.
    pub fn clear(&mut self, mut close: impl FnMut(Io)) {
        while let Some(key) = self.oldest {
            if let Some(io) = self.remove(key) {
                close(io);
            }
        }
    }

    /// A backend for `client`, other than `avoid` when another is Up.
    fn pick(&mut self, client: SocketAddr, avoid: Option<BackendId>) -> Option<BackendId> {
        let pick = self.balancer.pick(client.ip(), 2)?;
        let candidates = pick.candidates();
        candidates
            .iter()
            .copied()
            .find(|&id| Some(id) != avoid)
            .or_else(|| candidates.first().copied())
    }

    /// Take flow `key` out of the table; its socket, if it had one.
    fn remove(&mut self, key: SlotKey) -> Option<Io> {
        self.unlink(key);
        let flow = self.slab.remove(key)?;
        if self.by_client.get(&flow.client) == Some(&key) {
            self.by_client.remove(&flow.client);
        }
        match flow.stage {
            Stage::Open(io) => {
                self.balancer.connection_closed(flow.backend);
                Some(io)
            }
            Stage::Opening => {
                self.balancer.connection_closed(flow.backend);
                None
            }
            Stage::Refused => None,
        }
    }

    /// Mark flow `key` used at `now`: it becomes the most recently used.
    fn touch(&mut self, key: SlotKey, now: Instant) {
        let Some(flow) = self.slab.get_mut(key) else {
            return;
        };
        flow.last = now;
        if self.newest == Some(key) {
            return;
        }
        self.unlink(key);
        self.link_newest(key);
    }

    fn link_newest(&mut self, key: SlotKey) {
        let previous = self.newest;
        if let Some(flow) = self.slab.get_mut(key) {
            flow.prev = previous;
            flow.next = None;
        }
        match previous.and_then(|p| self.slab.get_mut(p)) {
            Some(prev) => prev.next = Some(key),
            None => self.oldest = Some(key),
        }
        self.newest = Some(key);
    }

    fn unlink(&mut self, key: SlotKey) {
        let Some(flow) = self.slab.get_mut(key) else {
            return;
        };
        let (prev, next) = (flow.prev.take(), flow.next.take());
        match prev.and_then(|p| self.slab.get_mut(p)) {
            Some(p) => p.next = next,
            None if self.oldest == Some(key) => self.oldest = next,
            None => {}
        }
        match next.and_then(|n| self.slab.get_mut(n)) {
            Some(n) => n.prev = prev,
            None if self.newest == Some(key) => self.newest = prev,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests;
