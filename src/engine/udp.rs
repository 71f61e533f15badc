//! UDP forwarding, shared by every engine: one [`UdpRelay`] per worker carries the worker's
//! UDP listeners and their flows (see [`crate::core::udp`]).
//!
//! Each worker binds its own `SO_REUSEPORT` socket per UDP listener, so the kernel hashes a
//! client address and port to one worker, whose flow table then holds it. A flow gets a
//! socket of its own connected to its backend: replies find their flow by the socket they
//! arrive on (the kernel demultiplexes), a refusing backend shows as `ECONNREFUSED` on it,
//! and nothing but that backend can answer on it. Replies go back to the client from the
//! listener's socket.
//!
//! The relay keeps its sockets in an epoll instance of its own, level-triggered, and is
//! driven through that one descriptor: an engine waits for it to be readable (io_uring: a
//! poll request; epoll: registered in the worker's own epoll; blocking: a thread of its own)
//! and then calls [`UdpRelay::run`], which handles a bounded batch and expires idle flows.
//! Readiness left over is reported again at the next wait. An engine that can read the
//! listeners' sockets better itself ([`ClientReads::Engine`]: io_uring's multishot
//! `recvmsg` into a provided-buffer ring) leaves them out of that epoll and hands each
//! datagram to [`UdpRelay::client_datagram`].
//!
//! A listener bound to a wildcard address learns the address each client wrote to
//! (`IP_PKTINFO`) and answers from it. Listeners ask for `UDP_GRO`: a client's datagrams
//! may arrive coalesced, and go on to the backend in one `UDP_SEGMENT` send that the kernel
//! cuts at the same boundaries.
//!
//! A backend with `send_proxy = "v2"` gets a PROXY protocol v2 header (DGRAM) ahead of every
//! datagram of the flow, in the same datagram; it is built once when the flow opens (see
//! [`crate::core::udp::Framing`]). Coalesced datagrams then go one by one, each behind its
//! header. Replies carry none.
//!
//! Every datagram is forwarded whole or dropped and counted; none is cut or merged. The
//! receive buffer holds the largest datagram UDP can carry, and `MSG_TRUNC` is checked all
//! the same; a datagram that no longer fits behind its PROXY header is dropped.
//!
//! System calls: clients' datagrams arrive in batches (`recvmmsg`), replies to clients leave
//! in batches (`sendmmsg`, at the end of each run); each flow's datagram to its backend is one
//! `send` on the flow's own socket (a `sendmsg` of header and datagram with a PROXY header),
//! and each backend datagram one `recv` per readiness event.

mod port;
mod replies;

pub use port::{UdpCounters, UdpReport};

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::epoll;

use self::port::Port;
use super::EngineError;
use crate::core::balance::PoolSnapshot;
use crate::core::slot::UserData;
use crate::core::udp::FlowPolicy;
use crate::sys::mmsg::{Datagram, RecvBatch};

/// Who reads clients' datagrams from the listeners' sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientReads {
    /// The relay, in [`UdpRelay::run`], with `recvmmsg`.
    Relay,
    /// The engine, which hands them to [`UdpRelay::client_datagram`].
    Engine,
}

/// One UDP listener as a worker runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpPlan {
    pub bind: SocketAddr,
    /// Receive buffer of the listener's socket, in bytes.
    pub rcvbuf: usize,
    /// `freebind`: bind although the address is not on this node.
    pub freebind: bool,
    /// Index into the configuration's pools.
    pub pool: usize,
    pub policy: FlowPolicy,
}

/// Most UDP listeners: a listener's flows are tagged with its index + 1 in 8 bits.
pub const MAX_UDP_LISTENERS: usize = 254;
/// Readiness events handled per [`UdpRelay::run`].
const EVENTS_PER_RUN: usize = 64;
/// Datagrams read from one socket per readiness event, so that one busy client or backend
/// cannot starve the others.
pub(crate) const DATAGRAMS_PER_EVENT: usize = 32;
/// The largest UDP payload (IPv6 without jumbograms; IPv4's is 65,507), plus one byte.
const BUFFER: usize = 65_536;
/// Datagrams one `recvmmsg` may bring. Each gets a [`BUFFER`]: 1 MiB of address space per
/// worker, of which pages are only touched as large datagrams arrive.
const RECV_BATCH: usize = 16;

/// A worker's UDP listeners and flows, behind one pollable descriptor.
pub struct UdpRelay {
    worker: usize,
    poller: OwnedFd,
    ports: Vec<Port>,
    /// For backends' datagrams, one at a time.
    buffer: Box<[u8]>,
    /// For clients' datagrams, in batches.
    batch: RecvBatch,
    events: Vec<epoll::Event>,
}

impl std::fmt::Debug for UdpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpRelay")
            .field("worker", &self.worker)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl UdpRelay {
    /// Worker `worker`'s relay for `plans`, balancing over `snapshots` (by pool index). Binds
    /// one socket per listener.
    pub fn new(
        worker: usize,
        plans: &[UdpPlan],
        snapshots: &[Arc<PoolSnapshot>],
        reads: ClientReads,
    ) -> Result<Self, EngineError> {
        if plans.len() > MAX_UDP_LISTENERS {
            return Err(EngineError::io(
                "UDP listeners",
                std::io::Error::other(format!("at most {MAX_UDP_LISTENERS}")),
            ));
        }
        let poller = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| EngineError::io("epoll_create1 (UDP)", e.into()))?;
        let mut ports = Vec::with_capacity(plans.len());
        for (index, plan) in plans.iter().enumerate() {
            let snapshot = snapshots.get(plan.pool).cloned().ok_or_else(|| {
                EngineError::io(
                    format!("UDP listener {}", plan.bind),
                    std::io::Error::other("no such pool"),
                )
            })?;
            let port = Port::bind(worker, index, plan, snapshot)
                .map_err(|e| EngineError::io(format!("binding UDP {}", plan.bind), e))?;
            if reads == ClientReads::Relay {
                register(
                    &poller,
                    port.socket.as_fd(),
                    UserData::internal_indexed(0, index as u32),
                )
                .map_err(|e| EngineError::io("registering a UDP listener", e))?;
            }
            ports.push(port);
        }
        Ok(UdpRelay {
            worker,
            poller,
            ports,
            buffer: vec![0; BUFFER].into_boxed_slice(),
            batch: RecvBatch::new(if plans.is_empty() { 1 } else { RECV_BATCH }, BUFFER),
            events: Vec::with_capacity(EVENTS_PER_RUN),
        })
    }

    /// Whether there is anything to run (no UDP listener: engines skip the relay).
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The descriptor to wait on: readable when a socket of the relay is.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }

    /// The listeners' sockets, by UDP listener index, for an engine that reads them
    /// ([`ClientReads::Engine`]).
    pub fn listener_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.ports.iter().map(|p| p.socket.as_fd())
    }

    /// A client's datagram the engine received on listener `listener`'s socket
    /// ([`ClientReads::Engine`]).
    pub fn client_datagram(&mut self, now: Instant, listener: usize, datagram: &Datagram<'_>) {
        if let Some(port) = self.ports.get_mut(listener) {
            port.receive(now, &self.poller, datagram);
        }
    }

    /// When [`Self::run`] must be called even if nothing becomes readable (a flow expires).
    pub fn next_timeout(&self) -> Option<Instant> {
        self.ports.iter().filter_map(Port::next_expiry).min()
    }

    /// Handle what is readable now (a bounded batch) and expire idle flows at `now`.
    pub fn run(&mut self, now: Instant) {
        self.events.clear();
        let zero = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if let Err(err) = epoll::wait(
            &self.poller,
            rustix::buffer::spare_capacity(&mut self.events),
            Some(&zero),
        ) && err != rustix::io::Errno::INTR
        {
            tracing::warn!(worker = self.worker, %err, "epoll_wait (UDP)");
        }
        for i in 0..self.events.len() {
            let data = UserData(self.events[i].data.u64());
            match data.op() {
                0 => {
                    let index = data.key().index() as usize;
                    if let Some(port) = self.ports.get_mut(index) {
                        port.serve_clients(now, &self.poller, &mut self.batch);
                    }
                }
                tag => {
                    if let Some(port) = self.ports.get_mut(usize::from(tag) - 1) {
                        port.serve_backend(now, data.key(), &mut self.buffer);
                    }
                }
            }
        }
        for port in &mut self.ports {
            port.flush(now);
            port.expire(now);
        }
    }

    /// Balance pool `pool` with `snapshot` from now on; flows whose backend left Up end.
    pub fn update_pool(&mut self, pool: usize, snapshot: &Arc<PoolSnapshot>) {
        for port in self.ports.iter_mut().filter(|p| p.pool == pool) {
            port.update(Arc::clone(snapshot));
        }
    }

    /// A reload's plans: each listener's flows live by its new policy. (The listeners
    /// themselves cannot change in a reload: the control side refuses a file that would.)
    pub fn reconfigure(&mut self, plans: &[UdpPlan]) {
        for (port, plan) in self.ports.iter_mut().zip(plans) {
            port.set_policy(plan.policy);
        }
    }

    /// What each listener did, by UDP listener index.
    pub fn report(&self) -> Vec<UdpReport> {
        self.ports.iter().map(Port::report).collect()
    }

    /// End every flow and close every socket (the worker stops).
    pub fn close(&mut self) {
        for port in &mut self.ports {
            port.clear();
        }
        self.ports.clear();
    }

    /// How long an engine may wait before [`Self::run`] is due, capped at `cap`.
    pub fn wait_cap(&self, now: Instant, cap: Duration) -> Duration {
        self.next_timeout()
            .map_or(cap, |at| cap.min(at.saturating_duration_since(now)))
    }
}

/// Add `fd` to `poller`, level-triggered, for reading, tagged `data`.
fn register(poller: &OwnedFd, fd: BorrowedFd<'_>, data: UserData) -> std::io::Result<()> {
    epoll::add(
        poller,
        fd,
        epoll::EventData::new_u64(data.0),
        epoll::EventFlags::IN,
    )
    .map_err(Into::into)
}
