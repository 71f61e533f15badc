//! Send rings for send bundles (Linux 6.10): a small provided-buffer ring per sending direction.
//!
//! A bundle send (`IORING_OP_SEND` with `IORING_RECVSEND_BUNDLE`) sends, in one request, every
//! buffer published in its group's ring, in ring order, and advances the ring's head past them.
//! So a group is a send *queue*: two directions sharing one would interleave their bytes. Each
//! direction that is sending leases a ring of its own from the worker's pool and gives it back
//! as soon as everything it queued has been sent, so an idle connection holds no ring and the
//! pool is bounded by the number of directions sending at once, not by connections.
//!
//! A ring's entries name received bytes in place (an address inside the receive buffers and a
//! length), so bundling copies nothing. The rings live in one mapping of `tuning.send_rings`
//! pages, touched (and registered, one `io_uring_register` each) only when first leased.

use std::io;
use std::num::NonZeroU16;

use io_uring::IoUring;

use super::region::{Entries, PAGE, Region};
use crate::config::limits::MAX_SEND_RINGS;

/// Entries per send ring: above the 16 buffers a direction may hold before its receive pauses
/// (`COPY_BUFFERS`), with room for the few a multishot receive delivers before its cancel lands.
/// Chunks beyond this wait in the direction's queue and enter the ring as it drains.
pub const SEND_RING_ENTRIES: u16 = 32;

/// Buffer group of the first send ring; group 0 is the receive ring (`buf_ring::GROUP`).
const FIRST_GROUP: u16 = 1;

// Each ring's entries (16 bytes each) fit in the one page it is given.
const _: () = assert!(SEND_RING_ENTRIES as usize * 16 <= PAGE);

/// A leased send ring, as a direction holds it: two bytes naming the ring in its worker's
/// [`SendRings`], so that the per-connection state stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendRingId(NonZeroU16);

impl SendRingId {
    fn index(self) -> usize {
        usize::from(self.0.get() - 1)
    }
}

/// One send ring.
///
/// `pending` entries, ending at `tail`, are published and not yet reported sent: they name the
/// first `pending` chunks of the direction's queue, in order. The kernel's head is therefore
/// `tail - pending` ([`SendRing::head`]), as long as every completion is accounted with
/// [`SendRing::consumed`]. Each entry's buffer id is its ring index, and a bundle's completion
/// names the id of the first entry it took, so the engine can check that the kernel's head is
/// where it expects.
#[derive(Debug)]
pub struct SendRing {
    group: u16,
    entries: EntriesDebug,
    tail: u16,
    pending: u16,
}

/// `Entries` holds a raw pointer; this wrapper only gives it a `Debug` for `ConnIo`.
struct EntriesDebug(Entries);

impl std::fmt::Debug for EntriesDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entries({:#x})", self.0.addr())
    }
}

impl SendRing {
    /// The buffer group a bundle send names.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Entries published and not yet reported sent.
    pub fn pending(&self) -> u16 {
        self.pending
    }

    /// The ring index of the first pending entry: where the kernel's head should be.
    pub fn head(&self) -> u16 {
        self.tail.wrapping_sub(self.pending)
    }

    /// Whether another entry fits.
    pub fn has_room(&self) -> bool {
        self.pending < SEND_RING_ENTRIES
    }

    /// Queue `bytes` behind the pending entries, under buffer id = its ring index; visible to
    /// the kernel after [`SendRing::publish`]. The bytes must stay untouched until a completion
    /// reports them sent (the direction holds their buffer until then). False when full.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if !self.has_room() || bytes.is_empty() {
            return false;
        }
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.entries
            .0
            .set(self.tail, bytes.as_ptr() as u64, len, self.tail);
        self.tail = self.tail.wrapping_add(1);
        self.pending += 1;
        true
    }

    /// Publish every pushed entry (one release store).
    pub fn publish(&self) {
        self.entries.0.publish(self.tail);
    }

    /// A completion reported the first `count` pending entries sent (the kernel advanced its
    /// head past them).
    pub fn consumed(&mut self, count: u16) {
        self.pending = self.pending.saturating_sub(count);
    }
}

/// A worker's send rings: every registered one, by index, and which are free.
pub struct SendRings {
    memory: Region,
    rings: Vec<SendRing>,
    free: Vec<SendRingId>,
    registered: u16,
    /// Most rings this worker will register (lowered if the kernel refuses one).
    cap: u16,
    /// Leases refused because every ring was in use.
    exhausted: u64,
    /// Rings that could not be reset after a close and are no longer used.
    retired: u16,
}

impl std::fmt::Debug for SendRings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRings")
            .field("registered", &self.registered)
            .field("free", &self.free.len())
            .field("exhausted", &self.exhausted)
            .finish()
    }
}

impl SendRings {
    /// Room for `cap` rings (`tuning.send_rings`, at most `limits::MAX_SEND_RINGS`); none
    /// registered yet. Directions sending at the same moment beyond `cap` fall back to
    /// `sendmsg` (counted, never an error).
    ///
    /// Every ring stays registered until the io_uring instance is dropped, so the worker drops
    /// `SendRings` only after its instance, as it does `Buffers`.
    pub fn new(cap: u16) -> io::Result<SendRings> {
        let cap = cap.min(u16::try_from(MAX_SEND_RINGS).unwrap_or(u16::MAX));
        Ok(SendRings {
            memory: Region::new(usize::from(cap.max(1)) * PAGE)?,
            rings: Vec::new(),
            free: Vec::new(),
            registered: 0,
            cap,
            exhausted: 0,
            retired: 0,
        })
    }

    /// Rings registered so far.
    pub fn registered(&self) -> u16 {
        self.registered
    }

    /// Leases refused because every ring was in use.
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }

    /// Rings currently leased to directions (for leak checks).
    pub fn leased(&self) -> usize {
        usize::from(self.registered - self.retired).saturating_sub(self.free.len())
    }

    /// The leased ring `id` names.
    pub fn get(&self, id: SendRingId) -> &SendRing {
        &self.rings[id.index()]
    }

    /// The leased ring `id` names, to queue entries or account a completion.
    pub fn get_mut(&mut self, id: SendRingId) -> &mut SendRing {
        &mut self.rings[id.index()]
    }

    /// A ring with nothing pending, or `None` when all `cap` are leased (the caller falls back
    /// to `sendmsg`).
    pub fn lease(&mut self, ring: &IoUring) -> Option<SendRingId> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        if self.registered >= self.cap {
            self.exhausted += 1;
            return None;
        }
        let index = self.registered;
        let base = self.memory.as_ptr().wrapping_add(usize::from(index) * PAGE);
        // SAFETY: page `index < cap` is page-aligned, holds the 32 entries (512 bytes), and goes
        // to this `Entries` alone (`registered` only grows).
        let entries = unsafe { Entries::new(base, SEND_RING_ENTRIES) };
        let group = FIRST_GROUP + index;
        // SAFETY: the page outlives its registration: `SendRings` is dropped after the io_uring
        // instance (see `new`).
        let result = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.addr(),
                SEND_RING_ENTRIES,
                group,
                0,
            )
        };
        if let Err(err) = result {
            tracing::warn!(%err, group, "cannot register a send ring; sending with sendmsg");
            self.cap = self.registered;
            return None;
        }
        self.registered += 1;
        self.rings.push(SendRing {
            group,
            entries: EntriesDebug(entries),
            tail: 0,
            pending: 0,
        });
        // `registered` is at most MAX_SEND_RINGS, so the id fits and is not zero.
        NonZeroU16::new(self.registered).map(SendRingId)
    }

    /// Take back a leased ring. One with entries still pending (its connection closed with
    /// bytes unsent) is re-registered first, which resets the kernel's head to match an empty
    /// ring; one that cannot be is retired.
    pub fn give_back(&mut self, ring: &IoUring, id: SendRingId) {
        let send_ring = &mut self.rings[id.index()];
        if send_ring.pending > 0 {
            let reset = ring
                .submitter()
                .unregister_buf_ring(send_ring.group)
                .and_then(|()| {
                    send_ring.tail = 0;
                    send_ring.pending = 0;
                    send_ring.publish();
                    // SAFETY: as in `lease`: the same page, outliving its registration.
                    unsafe {
                        ring.submitter().register_buf_ring_with_flags(
                            send_ring.entries.0.addr(),
                            SEND_RING_ENTRIES,
                            send_ring.group,
                            0,
                        )
                    }
                });
            if let Err(err) = reset {
                tracing::warn!(%err, group = send_ring.group, "cannot reset a send ring; retiring it");
                self.retired += 1;
                return;
            }
        }
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, AsRawFd};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::engine::op::SendBundle;
    use crate::engine::uring::probe::Plan;
    use crate::engine::uring::ring::Ring;

    fn plan() -> Plan {
        Plan {
            multishot_accept: false,
            multishot_recv: false,
            buffer_ring: true,
            defer_taskrun: false,
            coop_taskrun: false,
            send_bundle: true,
            inline_splice: false,
        }
    }

    /// What a bundle send's completions said.
    struct Outcome {
        /// Bytes over all completions, or the first error.
        result: i32,
        /// The buffer id the first completion names.
        first: Option<u16>,
        /// How many completions it posted.
        completions: u32,
    }

    /// Submit a bundle send of `group` on `socket` and wait for its final completion's result.
    fn send_bundle(ring: &mut Ring, socket: &TcpStream, group: u16) -> i32 {
        send_bundle_from(ring, socket, group).result
    }

    /// As [`send_bundle`], with everything its completions said.
    fn send_bundle_from(ring: &mut Ring, socket: &TcpStream, group: u16) -> Outcome {
        let entry = SendBundle {
            socket: socket.as_fd(),
            group,
        }
        .sqe()
        .user_data(7);
        // SAFETY: the socket and the ring's entries (and the bytes they name) outlive the wait
        // below, which returns only after the final completion.
        unsafe { ring.push(&entry) }.expect("queue the send");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut done = Vec::new();
        let mut sent = 0;
        let mut first = None;
        let mut completions = 0;
        while Instant::now() < deadline {
            ring.submit_and_wait(Duration::from_millis(50))
                .expect("enter");
            ring.drain(&mut done);
            for (user_data, result, flags) in done.drain(..) {
                assert_eq!(user_data, 7);
                first = first.or(io_uring::cqueue::buffer_select(flags));
                completions += 1;
                if result < 0 {
                    return Outcome {
                        result,
                        first,
                        completions,
                    };
                }
                sent += result;
                if !io_uring::cqueue::more(flags) {
                    return Outcome {
                        result: sent,
                        first,
                        completions,
                    };
                }
            }
        }
        panic!("no final completion for the bundle send within 5 s");
    }

    fn read_exactly(socket: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        socket.read_exact(&mut got).expect("read what was sent");
        got
    }

    /// Against the running kernel: a bundle sends every published entry in order, the pool is
    /// bounded, and a ring given back with entries pending is reset, so that the next lessee's
    /// send carries its own bytes and not the stale ones.
    #[test]
    fn bundles_send_entries_in_order_and_reset_rings_forget_stale_entries() {
        let mut ring = Ring::new(8, &plan(), 1).expect("an io_uring instance");
        if !ring.raw().params().is_feature_recvsend_bundle() {
            eprintln!("SKIP: this kernel has no send bundles (6.10)");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let tx = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut rx, _) = listener.accept().expect("accept");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");

        let mut rings = SendRings::new(2).expect("send rings");
        let a_id = rings.lease(ring.raw()).expect("first ring");
        let b_id = rings.lease(ring.raw()).expect("second ring");
        assert!(rings.lease(ring.raw()).is_none(), "the pool is bounded");
        assert_eq!((rings.registered(), rings.exhausted()), (2, 1));
        assert_ne!(rings.get(a_id).group(), rings.get(b_id).group());
        let a = rings.get_mut(a_id);

        let parts: [&[u8]; 3] = [b"one ", b"bundled ", b"send"];
        for part in parts {
            assert!(a.push(part));
        }
        a.publish();
        assert_eq!(send_bundle(&mut ring, &tx, a.group()), 16);
        a.consumed(3);
        assert_eq!(read_exactly(&mut rx, 16), b"one bundled send");

        // Entries published but never sent, as when a connection closes mid-send.
        let b = rings.get_mut(b_id);
        assert!(b.push(b"stale"));
        b.publish();
        rings.give_back(ring.raw(), b_id);
        rings.give_back(ring.raw(), a_id);
        assert_eq!(rings.leased(), 0);
        let reused_id = loop {
            let id = rings.lease(ring.raw()).expect("a free ring");
            if id == b_id {
                break id;
            }
        };
        let reused = rings.get_mut(reused_id);
        assert_eq!(reused.pending(), 0);
        assert!(reused.push(b"fresh"));
        reused.publish();
        let group = reused.group();
        let sent = send_bundle_from(&mut ring, &tx, group);
        assert_eq!(
            (sent.result, sent.first),
            (5, Some(0)),
            "a reset ring starts at 0"
        );
        assert_eq!(read_exactly(&mut rx, 5), b"fresh");

        // The other way out of step: the kernel's head is past entries the engine still counts
        // as pending (as after a bundle whose selection was committed but which sent nothing).
        let reused = rings.get_mut(reused_id);
        assert!(reused.push(b"sent, "));
        reused.publish();
        assert_eq!(send_bundle(&mut ring, &tx, group), 6);
        assert_eq!(read_exactly(&mut rx, 6), b"sent, ");
        assert_eq!(
            rings.get(reused_id).pending(),
            2,
            "not accounted, on purpose"
        );
        rings.give_back(ring.raw(), reused_id);
        assert_eq!(rings.lease(ring.raw()), Some(reused_id));
        let reused = rings.get_mut(reused_id);
        assert_eq!(reused.pending(), 0);
        assert!(reused.push(b"then this"));
        reused.publish();
        let sent = send_bundle_from(&mut ring, &tx, group);
        assert_eq!((sent.result, sent.first), (9, Some(0)));
        assert_eq!(read_exactly(&mut rx, 9), b"then this");
    }

    /// The kernel's head as `IORING_REGISTER_PBUF_STATUS` (6.8) reports it; `None` where the
    /// kernel lacks it.
    fn kernel_head(ring: &Ring, group: u16) -> Option<u16> {
        #[repr(C)]
        struct Status {
            buf_group: u32,
            head: u32,
            resv: [u32; 8],
        }
        let mut status = Status {
            buf_group: u32::from(group),
            head: 0,
            resv: [0; 8],
        };
        const IORING_REGISTER_PBUF_STATUS: libc::c_long = 26;
        // SAFETY: the register call reads `buf_group` and writes `head` of the struct, which
        // has the kernel's `io_uring_buf_status` layout and outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring.raw().as_raw_fd(),
                IORING_REGISTER_PBUF_STATUS,
                std::ptr::from_mut(&mut status),
                1,
            )
        };
        (rc == 0).then_some(status.head as u16)
    }

    /// Against the running kernel, as the engine runs it (DEFER_TASKRUN, non-blocking
    /// sockets): a bundle larger than the socket's send buffer goes out in several partial
    /// sends behind a slow reader, completes with every byte, and leaves the kernel's head
    /// exactly past the entries it took, where the engine's accounting puts it, so the next
    /// bundle from the same ring sends new entries and nothing twice.
    #[test]
    fn a_bundle_sent_in_parts_leaves_the_head_past_exactly_its_entries() {
        let plan = Plan {
            defer_taskrun: true,
            ..plan()
        };
        let Ok(mut ring) = Ring::new(8, &plan, 1) else {
            eprintln!("SKIP: no DEFER_TASKRUN here");
            return;
        };
        if !ring.raw().params().is_feature_recvsend_bundle() {
            eprintln!("SKIP: this kernel has no send bundles (6.10)");
            return;
        }
        const ENTRY: usize = 16 * 1024;
        const FIRST: usize = 12;
        const SECOND: usize = 3;
        let data: Vec<u8> = (0..ENTRY * (FIRST + SECOND))
            .map(|i| (i / ENTRY * 7 + i % 251) as u8)
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let tx = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (rx, _) = listener.accept().expect("accept");
        socket2::SockRef::from(&tx)
            .set_send_buffer_size(4096)
            .expect("small send buffer");
        socket2::SockRef::from(&rx)
            .set_recv_buffer_size(32 * 1024)
            .expect("small receive buffer");
        tx.set_nonblocking(true).expect("non-blocking");
        // The reader waits 50 ms before reading, so the first bundle cannot go out in one send:
        // it is larger than everything the two sockets can hold.
        let held = socket2::SockRef::from(&tx)
            .send_buffer_size()
            .expect("sndbuf")
            + socket2::SockRef::from(&rx)
                .recv_buffer_size()
                .expect("rcvbuf");
        assert!(ENTRY * FIRST > 2 * held, "{held} bytes of socket buffers");
        let total = data.len();
        let reader = std::thread::spawn(move || {
            let mut rx = rx;
            rx.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            std::thread::sleep(Duration::from_millis(50));
            let mut got = Vec::with_capacity(total);
            let mut chunk = [0u8; 4096];
            while got.len() < total {
                let n = rx.read(&mut chunk).expect("read");
                assert!(n > 0, "early end of stream");
                got.extend_from_slice(&chunk[..n]);
                std::thread::sleep(Duration::from_micros(200));
            }
            got
        });

        let mut rings = SendRings::new(1).expect("send rings");
        let id = rings.lease(ring.raw()).expect("a ring");
        let r = rings.get_mut(id);
        for part in data[..ENTRY * FIRST].chunks(ENTRY) {
            assert!(r.push(part));
        }
        r.publish();
        let sent = send_bundle_from(&mut ring, &tx, r.group());
        assert_eq!(
            (sent.result, sent.completions),
            ((ENTRY * FIRST) as i32, 1),
            "one completion for every byte"
        );
        r.consumed(FIRST as u16);
        let head = kernel_head(&ring, r.group()).expect("PBUF_STATUS (6.8) where bundles are");
        assert_eq!(
            head,
            r.head(),
            "the kernel's head is where the engine counts it"
        );
        for part in data[ENTRY * FIRST..].chunks(ENTRY) {
            assert!(r.push(part));
        }
        r.publish();
        let sent = send_bundle_from(&mut ring, &tx, r.group());
        assert_eq!(sent.result, (ENTRY * SECOND) as i32);
        assert_eq!(
            sent.first,
            Some(FIRST as u16),
            "the completion names the first entry it took"
        );
        r.consumed(SECOND as u16);
        let head = kernel_head(&ring, r.group()).expect("PBUF_STATUS");
        assert_eq!(head, r.head());
        let got = reader.join().expect("reader");
        assert!(got == data, "bytes arrived in order, none twice");
    }

    /// Against the running kernel: a bundle that finds the socket full and may not wait
    /// (`MSG_DONTWAIT`, as a request io-wq runs on a non-blocking socket can end) fails with
    /// `EAGAIN`, and the kernel's head may or may not have passed its entries. Whichever it
    /// did, the engine's answer (reset the ring, publish the queue again) sends every byte
    /// once, in order.
    #[test]
    fn after_eagain_a_reset_ring_sends_every_byte_once() {
        use std::io::Write;

        let plan = Plan {
            defer_taskrun: true,
            ..plan()
        };
        let Ok(mut ring) = Ring::new(8, &plan, 1) else {
            eprintln!("SKIP: no DEFER_TASKRUN here");
            return;
        };
        if !ring.raw().params().is_feature_recvsend_bundle() {
            eprintln!("SKIP: this kernel has no send bundles (6.10)");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut tx = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (rx, _) = listener.accept().expect("accept");
        socket2::SockRef::from(&tx)
            .set_send_buffer_size(4096)
            .expect("small send buffer");
        socket2::SockRef::from(&rx)
            .set_recv_buffer_size(4096)
            .expect("small receive buffer");
        tx.set_nonblocking(true).expect("non-blocking");
        // Fill both buffers, so that the socket takes nothing more until the reader reads.
        let mut filled = 0;
        let block = [0xaau8; 1024];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match tx.write(&block) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the socket: {e}"),
            }
        }
        let parts: [&[u8]; 3] = [b"first ", b"second ", b"third"];
        let mut rings = SendRings::new(1).expect("send rings");
        let id = rings.lease(ring.raw()).expect("a ring");
        let r = rings.get_mut(id);
        for part in parts {
            assert!(r.push(part));
        }
        r.publish();
        let group = r.group();
        let entry = io_uring::opcode::SendBundle::new(crate::engine::op::fixed(tx.as_fd()), group)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL | libc::MSG_DONTWAIT)
            .build()
            .user_data(7);
        // SAFETY: the socket and the entries' bytes (static) outlive the wait below, which
        // returns after the final completion.
        unsafe { ring.push(&entry) }.expect("queue the send");
        let mut done = Vec::new();
        while done.is_empty() && Instant::now() < deadline {
            ring.submit_and_wait(Duration::from_millis(50))
                .expect("enter");
            ring.drain(&mut done);
        }
        assert_eq!(done.first().map(|c| c.1), Some(-libc::EAGAIN), "{done:?}");
        let head = kernel_head(&ring, group).expect("PBUF_STATUS where bundles are");
        assert!(
            head == 0 || head == 3,
            "the head is before or after the selection: {head}"
        );

        rings.give_back(ring.raw(), id);
        assert_eq!(rings.lease(ring.raw()), Some(id));
        let r = rings.get_mut(id);
        assert_eq!(r.head(), 0);
        for part in parts {
            assert!(r.push(part));
        }
        r.publish();
        let total = filled + parts.iter().map(|p| p.len()).sum::<usize>();
        let reader = std::thread::spawn(move || {
            let mut rx = rx;
            rx.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut got = vec![0; total];
            rx.read_exact(&mut got).expect("read everything");
            got
        });
        let sent = send_bundle_from(&mut ring, &tx, group);
        assert_eq!((sent.result, sent.first), (18, Some(0)));
        let got = reader.join().expect("reader");
        assert!(got[..filled].iter().all(|&b| b == 0xaa));
        assert_eq!(&got[filled..], b"first second third");
    }

    #[test]
    fn a_full_ring_refuses_more_entries() {
        let ring = Ring::new(8, &plan(), 1).expect("an io_uring instance");
        let mut rings = SendRings::new(1).expect("send rings");
        let Some(id) = rings.lease(ring.raw()) else {
            eprintln!("SKIP: this kernel has no provided-buffer rings");
            return;
        };
        let r = rings.get_mut(id);
        let byte = [0u8; 1];
        for _ in 0..SEND_RING_ENTRIES {
            assert!(r.push(&byte));
        }
        assert!(!r.has_room());
        assert!(!r.push(&byte));
        r.consumed(1);
        assert_eq!(r.head(), 1);
        assert!(r.push(&byte));
        assert!(!r.push(&[]), "empty entries are never queued");
    }
}
