//! One UDP listener of one worker: its socket, its flows, its counters, and what happens to
//! each datagram.

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags};
use socket2::Socket;

use super::replies::Replies;
use super::{DATAGRAMS_PER_EVENT, UdpPlan, register};
use crate::core::balance::{Balancer, PoolSnapshot};
use crate::core::slot::{SlotKey, UserData};
use crate::core::udp::{Arrival, FlowCounters, Flows, Framing, Reply};
use crate::engine::rate_limit::RateLimit;
use crate::engine::socket;
use crate::sys::mmsg::{self, Datagram, Outgoing, RecvBatch, SendBatch};

/// What a UDP listener's datagrams did on one worker. Drops are by reason; every datagram
/// received is either sent on or counted in exactly one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// From clients, received.
    pub client_datagrams: u64,
    pub client_bytes: u64,
    /// From clients, sent on to backends.
    pub forwarded_datagrams: u64,
    pub forwarded_bytes: u64,
    /// From backends, received.
    pub backend_datagrams: u64,
    pub backend_bytes: u64,
    /// From backends, sent on to clients.
    pub replied_datagrams: u64,
    pub replied_bytes: u64,
    /// Dropped: larger than the receive buffer, or than a datagram to the backend can be
    /// once its PROXY header is in (never cut).
    pub dropped_too_big: u64,
    /// Dropped: no backend Up, or no socket could be opened for a new flow.
    pub dropped_no_backend: u64,
    /// Dropped: the send failed (a full socket buffer, a refusing backend, an error).
    pub dropped_send: u64,
    /// Dropped: a backend's datagram for a flow that had ended.
    pub dropped_stale: u64,
}

impl UdpCounters {
    /// Add `other` (another worker's) to these.
    pub fn add(&mut self, other: &UdpCounters) {
        self.client_datagrams += other.client_datagrams;
        self.client_bytes += other.client_bytes;
        self.forwarded_datagrams += other.forwarded_datagrams;
        self.forwarded_bytes += other.forwarded_bytes;
        self.backend_datagrams += other.backend_datagrams;
        self.backend_bytes += other.backend_bytes;
        self.replied_datagrams += other.replied_datagrams;
        self.replied_bytes += other.replied_bytes;
        self.dropped_too_big += other.dropped_too_big;
        self.dropped_no_backend += other.dropped_no_backend;
        self.dropped_send += other.dropped_send;
        self.dropped_stale += other.dropped_stale;
    }
}

/// One UDP listener's report from one worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpReport {
    /// Its pool (index into the configuration's pools).
    pub pool: usize,
    /// Flows open now.
    pub flows: u64,
    pub flow: FlowCounters,
    pub datagrams: UdpCounters,
    /// Refusals (ICMP port unreachable) by backend index in the pool's current snapshot:
    /// failures for the pool's passive checks (`max_fails`), as failed connects are.
    pub refusals: Vec<u64>,
}

impl UdpReport {
    /// Add `other` (another worker's) to this one.
    pub fn add(&mut self, other: &UdpReport) {
        self.pool = other.pool;
        self.flows += other.flows;
        self.datagrams.add(&other.datagrams);
        if self.refusals.len() < other.refusals.len() {
            self.refusals.resize(other.refusals.len(), 0);
        }
        for (sum, n) in self.refusals.iter_mut().zip(&other.refusals) {
            *sum += n;
        }
        self.flow.add(&other.flow);
    }
}

/// A flow's socket, the address its client wrote to when the listener's is a wildcard (its
/// replies leave from there), and what each of its datagrams carries to the backend.
#[derive(Debug)]
pub(super) struct FlowIo {
    socket: Socket,
    local: Option<IpAddr>,
    framing: Framing,
}

#[derive(Debug)]
pub(super) struct Port {
    worker: usize,
    index: usize,
    bind: SocketAddr,
    pub(super) pool: usize,
    pub(super) socket: Socket,
    flows: Flows<FlowIo>,
    /// For a client's coalesced datagrams, sent on in one `UDP_SEGMENT` send.
    segmented: SendBatch,
    counters: UdpCounters,
    /// Replies gathered during a run, sent at its end (or when the batch fills).
    replies: Replies,
    log: RateLimit,
}

impl Port {
    pub(super) fn bind(
        worker: usize,
        index: usize,
        plan: &UdpPlan,
        snapshot: Arc<PoolSnapshot>,
    ) -> std::io::Result<Self> {
        let socket = socket::udp_listener(plan.bind, plan.freebind)?;
        socket::udp_receive_buffer(&socket, plan.bind, plan.rcvbuf);
        if plan.bind.ip().is_unspecified() {
            // Without it a reply would leave from whatever address routing picks, which a
            // client that wrote to another address of this host drops.
            mmsg::set_recv_local(socket.as_fd(), plan.bind.is_ipv6())?;
        }
        // The kernel may then hand over a client's datagrams coalesced, which `receive` cuts
        // apart again. 5.0+; without it each comes alone, which is correct too.
        if let Err(err) = mmsg::set_gro(socket.as_fd()) {
            tracing::info!(listener = %plan.bind, %err, "UDP_GRO unavailable");
        }
        Ok(Port {
            worker,
            index,
            bind: plan.bind,
            pool: plan.pool,
            socket,
            segmented: SendBatch::default(),
            flows: Flows::new(
                plan.policy,
                Balancer::for_worker(snapshot, worker, plan.pool),
            ),
            counters: UdpCounters::default(),
            replies: Replies::default(),
            log: RateLimit::new(crate::engine::rate_limit::RESET_LINES_PER_SECOND),
        })
    }

    /// The epoll tag of this listener's flow `key`.
    fn tag(&self, key: SlotKey) -> UserData {
        // `index < MAX_UDP_LISTENERS`, checked when the relay was built.
        UserData::new(self.index as u8 + 1, key)
    }

    /// Datagrams from clients, each to its flow's backend: batches of `recvmmsg`, up to
    /// [`DATAGRAMS_PER_EVENT`]. A batch that comes back short emptied the queue: no further
    /// call just to hear `EAGAIN`.
    pub(super) fn serve_clients(&mut self, now: Instant, poller: &OwnedFd, batch: &mut RecvBatch) {
        let mut taken = 0;
        while taken < DATAGRAMS_PER_EVENT {
            let count = match batch.recv(self.socket.as_fd()) {
                Ok(count) => count,
                Err(err) => match err.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::EINTR) => continue,
                    // A pending ICMP error for an earlier reply: nothing to do with this
                    // socket.
                    Some(libc::ECONNREFUSED) => continue,
                    _ => {
                        self.warn(now, "receiving from UDP clients", err);
                        return;
                    }
                },
            };
            for i in 0..count {
                let Some(datagram) = batch.get(i) else {
                    break;
                };
                self.receive(now, poller, &datagram);
            }
            taken += count;
            if count < batch.capacity() {
                return;
            }
        }
    }

    /// A client's datagram (or datagrams, coalesced by the kernel), however the engine
    /// received it.
    pub(super) fn receive(&mut self, now: Instant, poller: &OwnedFd, datagram: &Datagram<'_>) {
        let Some(client) = datagram.from else {
            return;
        };
        let bytes = datagram.bytes;
        let segment = datagram
            .ancillary
            .segment
            .filter(|&s| usize::from(s) < bytes.len());
        let count = segment.map_or(1, |s| bytes.len().div_ceil(usize::from(s)));
        self.counters.client_datagrams += count as u64;
        self.counters.client_bytes += bytes.len() as u64;
        if datagram.truncated {
            self.counters.dropped_too_big += count as u64;
            return;
        }
        let Some(flow) = self.flow_for(now, poller, client, datagram.ancillary.local) else {
            self.counters.dropped_no_backend += count as u64;
            return;
        };
        match segment {
            Some(size) => self.forward_segments(now, flow, size, bytes),
            None => self.forward(now, flow, bytes),
        }
    }

    /// Client `client`'s flow, opened (socket and all) if it is new; `None` drops the
    /// datagram.
    fn flow_for(
        &mut self,
        now: Instant,
        poller: &OwnedFd,
        client: SocketAddr,
        local: Option<IpAddr>,
    ) -> Option<SlotKey> {
        let flow = match self.flows.arrival(now, client) {
            Arrival::Drop => return None,
            Arrival::Forward { flow } => flow,
            Arrival::Open {
                flow,
                backend,
                evicted,
            } => {
                // Dropping a socket closes it, which takes it out of the poller too.
                drop(evicted);
                let Some(addr) = self.flows.snapshot().addr(backend) else {
                    self.flows.open_failed(flow);
                    return None;
                };
                // Built once here, sent ahead of each of the flow's datagrams.
                let framing = Framing::new(
                    self.flows.snapshot().send_proxy(backend),
                    addr,
                    client,
                    self.destination(local),
                );
                let opened = socket::udp_flow(addr).and_then(|s| {
                    register(poller, s.as_fd(), self.tag(flow))?;
                    Ok(s)
                });
                match opened {
                    Ok(socket) => {
                        let io = FlowIo {
                            socket,
                            local,
                            framing,
                        };
                        if let Err(io) = self.flows.opened(flow, io) {
                            drop(io);
                        }
                    }
                    Err(err) => {
                        // Out of descriptors or ephemeral ports: this datagram is lost, the
                        // next one tries again.
                        self.flows.open_failed(flow);
                        self.warn(now, "opening a UDP flow", err);
                        return None;
                    }
                }
                flow
            }
        };
        self.flows.io(flow).map(|_| flow)
    }

    /// The address a client of this listener wrote to, `local` as its datagram reported it
    /// (a wildcard listener's), else the listener's own; `None` when neither says.
    fn destination(&self, local: Option<IpAddr>) -> Option<SocketAddr> {
        match local {
            Some(ip) => Some(SocketAddr::new(ip, self.bind.port())),
            None if self.bind.ip().is_unspecified() => None,
            None => Some(self.bind),
        }
    }

    /// One client datagram to flow `flow`'s backend, behind the flow's prefix if it has one,
    /// in one datagram (`sendmsg` of two pieces); one that would not fit is dropped.
    fn forward(&mut self, now: Instant, flow: SlotKey, datagram: &[u8]) {
        let Some(io) = self.flows.io(flow) else {
            // Its backend refused an earlier datagram of the same coalesced batch.
            self.counters.dropped_send += 1;
            return;
        };
        if !io.framing.fits(datagram.len()) {
            self.counters.dropped_too_big += 1;
            return;
        }
        let prefix = io.framing.prefix();
        let sent = if prefix.is_empty() {
            rustix::net::send(&io.socket, datagram, SendFlags::DONTWAIT)
        } else {
            rustix::net::sendmsg(
                &io.socket,
                &[IoSlice::new(prefix), IoSlice::new(datagram)],
                &mut SendAncillaryBuffer::default(),
                SendFlags::DONTWAIT,
            )
        };
        match sent {
            Ok(_) => {
                self.counters.forwarded_datagrams += 1;
                self.counters.forwarded_bytes += datagram.len() as u64;
            }
            Err(Errno::CONNREFUSED) => {
                // An earlier datagram was refused: this flow's backend is not there.
                self.counters.dropped_send += 1;
                drop(self.flows.refused(now, flow));
            }
            Err(err) => {
                self.counters.dropped_send += 1;
                if err != Errno::AGAIN && err != Errno::NOBUFS {
                    self.warn(now, "sending to a UDP backend", err.into());
                }
            }
        }
    }

    /// A client's datagrams the kernel coalesced, each `size` bytes but maybe the last, to
    /// flow `flow`'s backend: cut again by the kernel in one send (`UDP_SEGMENT`), or one
    /// send each where it will not. A flow with a prefix sends one each too, every datagram
    /// behind its own copy of the prefix, which `UDP_SEGMENT` cannot repeat.
    fn forward_segments(&mut self, now: Instant, flow: SlotKey, size: u16, bytes: &[u8]) {
        let Some(io) = self.flows.io(flow) else {
            return;
        };
        if !io.framing.prefix().is_empty() || !io.framing.fits(usize::from(size)) {
            for datagram in bytes.chunks(usize::from(size)) {
                self.forward(now, flow, datagram);
            }
            return;
        }
        let count = bytes.len().div_ceil(usize::from(size)) as u64;
        let message = Outgoing {
            to: None,
            from: None,
            segment: Some(size),
            bytes,
        };
        match self.segmented.send(io.socket.as_fd(), [message]) {
            Ok(_) => {
                self.counters.forwarded_datagrams += count;
                self.counters.forwarded_bytes += bytes.len() as u64;
            }
            Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED) => {
                self.counters.dropped_send += count;
                drop(self.flows.refused(now, flow));
            }
            // A route whose device cannot segment (`EIO`) or a segment it will not take
            // (`EINVAL`): one at a time.
            Err(err) if matches!(err.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                for datagram in bytes.chunks(usize::from(size)) {
                    self.forward(now, flow, datagram);
                }
            }
            Err(err) => {
                self.counters.dropped_send += count;
                if !matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) {
                    self.warn(now, "sending to a UDP backend", err);
                }
            }
        }
    }

    /// A datagram from flow `key`'s backend, gathered for its client. One per readiness
    /// event: the relay's epoll is level-triggered and reports the socket again if more
    /// wait, and a second `recv` would mostly hear `EAGAIN`.
    pub(super) fn serve_backend(&mut self, now: Instant, key: SlotKey, buffer: &mut [u8]) {
        let Some(io) = self.flows.io(key) else {
            return;
        };
        let local = io.local;
        let len = match rustix::net::recv(
            &io.socket,
            &mut *buffer,
            RecvFlags::TRUNC | RecvFlags::DONTWAIT,
        ) {
            Ok((_, full)) => full,
            Err(Errno::AGAIN | Errno::INTR) => return,
            Err(Errno::CONNREFUSED) => {
                drop(self.flows.refused(now, key));
                return;
            }
            Err(err) => {
                self.warn(now, "receiving from a UDP backend", err.into());
                return;
            }
        };
        self.counters.backend_datagrams += 1;
        self.counters.backend_bytes += len as u64;
        if len > buffer.len() {
            self.counters.dropped_too_big += 1;
            return;
        }
        match self.flows.reply(now, key) {
            // The flow's socket closes as `ended` drops, if this was its last response.
            Reply::Send { client, ended: _ } => self.replies.push(client, local, &buffer[..len]),
            Reply::Stale => {
                self.counters.dropped_stale += 1;
                return;
            }
        }
        if self.replies.is_full() {
            self.flush(now);
        }
    }

    /// Send the replies gathered so far.
    pub(super) fn flush(&mut self, now: Instant) {
        let done = self.replies.flush(&self.socket);
        self.counters.replied_datagrams += done.datagrams;
        self.counters.replied_bytes += done.bytes;
        self.counters.dropped_send += done.dropped;
        if let Some(err) = done.error {
            self.warn(now, "sending to UDP clients", err.into());
        }
    }

    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.flows.next_expiry()
    }

    pub(super) fn expire(&mut self, now: Instant) {
        self.flows.expire(now, drop);
    }

    pub(super) fn update(&mut self, snapshot: Arc<PoolSnapshot>) {
        self.flows.update(snapshot, drop);
    }

    pub(super) fn set_policy(&mut self, policy: crate::core::udp::FlowPolicy) {
        self.flows.set_policy(policy, drop);
    }

    pub(super) fn clear(&mut self) {
        self.flows.clear(drop);
    }

    pub(super) fn report(&self) -> UdpReport {
        let flow = self.flows.counters();
        UdpReport {
            pool: self.pool,
            flows: self.flows.len() as u64,
            flow,
            datagrams: self.counters,
            refusals: self.flows.refusals().to_vec(),
        }
    }

    fn warn(&mut self, now: Instant, what: &str, err: std::io::Error) {
        if let Some(suppressed) = self.log.allow(now) {
            tracing::warn!(
                worker = self.worker,
                listener = %self.bind,
                %err,
                suppressed,
                "{what}"
            );
        }
    }
}
