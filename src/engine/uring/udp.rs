//! The io_uring worker's side of UDP: clients' datagrams arrive through one multishot
//! `recvmsg` per listener (6.0) into a provided-buffer ring of their own, and go to the
//! shared relay ([`crate::engine::udp`]), which forwards them; backends' datagrams and flow
//! expiry stay with the relay, behind one poll (see `control.rs`).
//!
//! One request per listener stays armed and posts a completion per datagram (or per batch
//! the kernel coalesced, `UDP_GRO`), instead of a readiness event and then `recvmmsg`.
//! Buffers are given back as soon as the relay has forwarded what they held, so a handful
//! serve any rate; a burst that finds none ends the request (`ENOBUFS`), the datagrams wait
//! in the socket, and the request is armed again at the next loop turn.
//!
//! Why the flows' sockets are not read this way too: there may be thousands, each would need
//! its own armed request (and a cancel before its socket can really close), and most carry
//! a reply or two. Their readiness through the relay's epoll costs one poll completion per
//! loop turn for all of them.

use std::io;
use std::time::Instant;

use io_uring::types::{BufRingEntry, RecvMsgOut};
use io_uring::{IoUring, cqueue, opcode};

use super::region::{Entries, Region};
use super::token::Op;
use super::worker::Worker;
use crate::core::slot::UserData;
use crate::engine::op::fixed;
use crate::sys::cmsg;
use crate::sys::mmsg::Datagram;

/// Buffer group id of the UDP receive ring (TCP's is `buf_ring::GROUP`).
const GROUP: u16 = 1;
/// The slot field of a cancel's own completion.
const CANCEL: u32 = u32::MAX;
/// Buffers in the ring: completions are handled, and buffers given back, once per loop turn.
const COUNT: u16 = 64;
/// Room for `io_uring_recvmsg_out`, the name, and the control messages, before the payload.
const HEAD: usize = 16 + NAME + cmsg::RECV_SPACE;
const NAME: usize = std::mem::size_of::<libc::sockaddr_storage>();
/// A buffer: the head, then room for the largest UDP payload and more (a coalesced batch is
/// never larger than 64 KiB either), so `MSG_TRUNC` cannot happen on IPv4 or IPv6 without
/// jumbograms, and is checked all the same. Pages are touched only as far as datagrams reach.
const SIZE: usize = (HEAD + 65_536).div_ceil(4096) * 4096;

/// The listeners' receive requests and their buffers.
pub(super) struct UdpReceiver {
    /// The buffers; the kernel writes into them while a request is armed.
    data: Region,
    /// Keeps the ring's entries mapped.
    _memory: Region,
    entries: Entries,
    tail: u16,
    /// The template every request reads its name and control lengths from; boxed so that its
    /// address stays put while requests are armed.
    header: Box<libc::msghdr>,
    /// Whether listener `i`'s request is armed.
    armed: Vec<bool>,
    /// Requests that ended (no buffer free, or an error) and were armed again.
    pub rearms: u64,
}

impl std::fmt::Debug for UdpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpReceiver")
            .field("armed", &self.armed)
            .field("rearms", &self.rearms)
            .finish_non_exhaustive()
    }
}

impl UdpReceiver {
    /// Register the ring with `ring` for `listeners` UDP listeners.
    ///
    /// Like `buf_ring::Buffers`, the value must outlive every request that may select from
    /// it: the worker drops it only after its io_uring instance.
    pub fn new(ring: &IoUring, listeners: usize) -> io::Result<UdpReceiver> {
        let memory = Region::new(usize::from(COUNT) * std::mem::size_of::<BufRingEntry>())?;
        let data = Region::new(usize::from(COUNT) * SIZE)?;
        // SAFETY: the region is page-aligned, sized for `COUNT` entries, and only `entries`
        // writes to it.
        let entries = unsafe { Entries::new(memory.as_ptr(), COUNT) };
        // SAFETY: the entries and buffers outlive their registration (see above).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.addr(), COUNT, GROUP, 0)?;
        }
        // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
        let mut header: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        header.msg_namelen = NAME as libc::socklen_t;
        header.msg_controllen = cmsg::RECV_SPACE;
        let mut receiver = UdpReceiver {
            data,
            _memory: memory,
            entries,
            tail: 0,
            header,
            armed: vec![false; listeners],
            rearms: 0,
        };
        for bid in 0..COUNT {
            receiver.give_back(bid);
        }
        Ok(receiver)
    }

    fn give_back(&mut self, bid: u16) {
        let addr = self.data.as_ptr() as u64 + u64::from(bid) * SIZE as u64;
        self.entries.set(self.tail, addr, SIZE as u32, bid);
        self.tail = self.tail.wrapping_add(1);
        self.entries.publish(self.tail);
    }

    /// Buffer `bid`'s first `len` bytes, as the kernel left them.
    fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(SIZE);
        let start = self
            .data
            .as_ptr()
            .wrapping_add(usize::from(bid % COUNT) * SIZE);
        // SAFETY: buffer `bid % COUNT` lies inside `data` (`COUNT` buffers of `SIZE` bytes),
        // and `len <= SIZE`; the kernel finished writing it (its completion is being handled)
        // and selects it again only after `give_back`.
        unsafe { std::slice::from_raw_parts(start, len) }
    }
}

impl Worker {
    /// Arm the receive of every UDP listener whose request is not in flight.
    pub(super) fn arm_udp_receives(&mut self) {
        let Some(receiver) = self.udp_rx.as_mut() else {
            return;
        };
        for (index, fd) in self.udp.listener_fds().enumerate() {
            if receiver.armed.get(index) != Some(&false) {
                continue;
            }
            let entry =
                opcode::RecvMsgMulti::new(fixed(fd), std::ptr::from_ref(&*receiver.header), GROUP)
                    .build()
                    .user_data(UserData::internal_indexed(Op::UdpRecv.code(), index as u32).0);
            // SAFETY: the request reads the boxed `msghdr` template, which lives in
            // `self.udp_rx` for the worker's life, and writes only into ring buffers, which
            // outlive the ring (field order); the socket lives in `self.udp` until the worker
            // stops (closing it is safe: the request holds its own file reference and ends
            // with the ring).
            match unsafe { self.ring.push(&entry) } {
                Ok(()) => {
                    receiver.armed[index] = true;
                    // Counted until its last completion, so that the worker stops only after.
                    self.internal_in_flight += 1;
                }
                Err(_) => self.counters.queue_failures += 1,
            }
        }
    }

    /// The worker stops: cancel every armed receive (their sockets close with the relay).
    pub(super) fn cancel_udp_receives(&mut self) {
        let Some(receiver) = self.udp_rx.as_ref() else {
            return;
        };
        for (index, _) in receiver.armed.iter().enumerate().filter(|(_, a)| **a) {
            let target = UserData::internal_indexed(Op::UdpRecv.code(), index as u32).0;
            let cancel = opcode::AsyncCancel::new(target)
                .build()
                .user_data(UserData::internal_indexed(Op::UdpRecv.code(), CANCEL).0);
            // SAFETY: a cancel names its target by user data and points to no memory.
            match unsafe { self.ring.push(&cancel) } {
                Ok(()) => self.internal_in_flight += 1,
                Err(_) => self.counters.queue_failures += 1,
            }
        }
    }

    /// A completion of listener `listener`'s receive: one datagram (or a coalesced batch)
    /// in a ring buffer, or the request's end.
    pub(super) fn udp_received(&mut self, now: Instant, listener: usize, result: i32, flags: u32) {
        let Some(receiver) = self.udp_rx.as_mut() else {
            return;
        };
        if listener == CANCEL as usize {
            self.internal_in_flight = self.internal_in_flight.saturating_sub(1);
            return;
        }
        if !cqueue::more(flags) {
            if let Some(armed) = receiver.armed.get_mut(listener) {
                *armed = false;
            }
            receiver.rearms += 1;
            self.internal_in_flight = self.internal_in_flight.saturating_sub(1);
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            // No buffer (`ENOBUFS`, a cancel at shutdown, an error): armed again next turn.
            if result < 0 && result != -libc::ENOBUFS && result != -libc::ECANCELED {
                tracing::debug!(
                    worker = self.index,
                    err = %io::Error::from_raw_os_error(-result),
                    "UDP receive"
                );
            }
            return;
        };
        let len = usize::try_from(result).unwrap_or(0);
        let buffer = receiver.filled(bid, len);
        if let Ok(out) = RecvMsgOut::parse(buffer, &receiver.header) {
            let datagram = Datagram {
                from: cmsg::socket_address(out.name_data()),
                bytes: out.payload_data(),
                truncated: out.is_payload_truncated(),
                ancillary: cmsg::parse(out.control_data()),
            };
            self.udp.client_datagram(now, listener, &datagram);
        }
        receiver.give_back(bid);
    }
}

const _: () = assert!(SIZE >= HEAD + 65_536);
