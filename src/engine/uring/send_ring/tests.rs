//! Send rings against the running kernel: the behaviour the engine's accounting relies on.

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
        hot_buffers: false,
        inline_shutdown: false,
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

/// A ring set up as the engine's (DEFER_TASKRUN), or `None` (said on stderr) where the kernel
/// lacks that or send bundles.
fn engine_ring() -> Option<Ring> {
    let plan = Plan {
        defer_taskrun: true,
        ..plan()
    };
    let Ok(ring) = Ring::new(8, &plan, 1) else {
        eprintln!("SKIP: no DEFER_TASKRUN here");
        return None;
    };
    if !ring.raw().params().is_feature_recvsend_bundle() {
        eprintln!("SKIP: this kernel has no send bundles (6.10)");
        return None;
    }
    Some(ring)
}

/// A loopback connection: a non-blocking sender with a 4 KiB send buffer, and a blocking
/// receiver with `recv_buffer` bytes of receive buffer.
fn small_buffered_pair(recv_buffer: usize) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let tx = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (rx, _) = listener.accept().expect("accept");
    socket2::SockRef::from(&tx)
        .set_send_buffer_size(4096)
        .expect("small send buffer");
    socket2::SockRef::from(&rx)
        .set_recv_buffer_size(recv_buffer)
        .expect("small receive buffer");
    tx.set_nonblocking(true).expect("non-blocking");
    (tx, rx)
}

/// Against the running kernel, as the engine runs it (DEFER_TASKRUN, non-blocking
/// sockets): a bundle larger than the socket's send buffer goes out in several partial
/// sends behind a slow reader, completes with every byte, and leaves the kernel's head
/// exactly past the entries it took, where the engine's accounting puts it, so the next
/// bundle from the same ring sends new entries and nothing twice.
#[test]
fn a_bundle_sent_in_parts_leaves_the_head_past_exactly_its_entries() {
    let Some(mut ring) = engine_ring() else {
        return;
    };
    const ENTRY: usize = 16 * 1024;
    const FIRST: usize = 12;
    const SECOND: usize = 3;
    let data: Vec<u8> = (0..ENTRY * (FIRST + SECOND))
        .map(|i| (i / ENTRY * 7 + i % 251) as u8)
        .collect();
    let (tx, rx) = small_buffered_pair(32 * 1024);
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

    let Some(mut ring) = engine_ring() else {
        return;
    };
    let (mut tx, rx) = small_buffered_pair(4096);
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
