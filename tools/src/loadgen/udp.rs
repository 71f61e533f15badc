//! The UDP modes: `udp-rr` (flows sending a request and waiting for its exact echo) and
//! `udp-stream` (a few sockets sending datagrams as fast as allowed).
//!
//! Every flow is one UDP socket, bound to a source address of the range (if any) and connected
//! to the target, so the kernel delivers only the target's datagrams to it and the target sees
//! one client address and port per flow.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::report::Tally;
use super::{Common, Mode};
use crate::pattern;

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Bytes of a `udp-rr` request that carry its sequence number (little endian).
pub const SEQ_BYTES: usize = 8;

/// A non-blocking UDP socket connected to `target`, bound to `src` if given.
fn open(target: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<UdpSocket> {
    let sock = Socket::new(
        Domain::for_address(target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    sock.set_nonblocking(true)?;
    if let Some(ip) = src {
        sock.bind(&SocketAddr::new(ip.into(), 0).into())?;
    }
    sock.connect(&target.into())?;
    Ok(UdpSocket::from_std(sock.into()))
}

/// Opens this thread's `share` sockets; failures are counted as connect errors.
fn open_flows(common: &Common, index: u32, threads: u32, tally: &mut Tally) -> Vec<UdpSocket> {
    let total = common.config.connections;
    let share = total / threads + u32::from(index < total % threads);
    let mut socks = Vec::with_capacity(share as usize);
    for k in 0..u64::from(share) {
        let src = common
            .config
            .sources
            .map(|r| r.get(k * u64::from(threads) + u64::from(index)));
        match open(common.config.target, src) {
            Ok(s) => {
                tally.connections_opened += 1;
                if let Some(ip) = src {
                    *tally.per_source.entry(ip).or_default() += 1;
                }
                socks.push(s);
            }
            Err(_) => tally.connect_errors += 1,
        }
    }
    tally.open_peak = socks.len() as u64;
    tally.open_at_end = socks.len() as u64;
    socks
}

/// One `udp-rr` flow.
#[derive(Debug)]
struct Flow {
    sock: UdpSocket,
    /// Sequence number of the request in flight (or last sent).
    seq: u64,
    /// When it was sent.
    sent_at: Instant,
    /// A request is owed an answer.
    waiting: bool,
    /// The last send failed: retry at the next scan (not counted as sent or lost).
    unsent: bool,
}

/// The request with sequence number `seq`: [`SEQ_BYTES`] of sequence, then the pattern.
fn fill(buf: &mut [u8], seq: u64) {
    let n = buf.len().min(SEQ_BYTES);
    buf[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// Runs `udp-rr` thread `index` of `threads`.
pub(crate) fn run_rr(common: &Common, index: u32, threads: u32) -> io::Result<Tally> {
    let Mode::UdpRr { size, timeout } = common.config.mode else {
        return Ok(Tally::new());
    };
    let mut tally = Tally::new();
    let mut poll = Poll::new()?;
    let mut flows: Vec<Flow> = Vec::new();
    let now = Instant::now();
    for (i, mut sock) in open_flows(common, index, threads, &mut tally)
        .into_iter()
        .enumerate()
    {
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE)?;
        flows.push(Flow {
            sock,
            seq: 0,
            sent_at: now,
            waiting: false,
            unsent: false,
        });
    }
    let mut req = pattern::slice_at(0, size).to_vec();
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    let send = |f: &mut Flow, req: &mut [u8], tally: &mut Tally| {
        f.seq += 1;
        fill(req, f.seq);
        f.sent_at = Instant::now();
        f.waiting = true;
        match f.sock.send(req) {
            Ok(n) => {
                f.unsent = false;
                tally.datagrams_sent += 1;
                tally.bytes_sent += n as u64;
            }
            Err(_) => {
                f.unsent = true;
                tally.io_errors += 1;
            }
        }
    };
    for f in &mut flows {
        if common.reserve_request() {
            send(f, &mut req, &mut tally);
        }
    }
    // Requests stop at the deadline; answers still owed are awaited up to `timeout` more.
    let drain_end = common.deadline + timeout;
    let scan_every = (timeout / 4).max(Duration::from_millis(1));
    let mut next_scan = Instant::now() + scan_every;
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        let sending = now < common.deadline;
        if !sending && (now >= drain_end || flows.iter().all(|f| !f.waiting || f.unsent)) {
            break;
        }
        if now >= next_scan {
            next_scan = now + scan_every;
            for f in &mut flows {
                if !f.waiting {
                    continue;
                }
                if f.unsent {
                    if sending {
                        f.seq -= 1;
                        send(f, &mut req, &mut tally);
                    }
                } else if now.duration_since(f.sent_at) >= timeout {
                    // Lost (request or answer); a late answer is recognised by its sequence.
                    tally.lost += 1;
                    f.waiting = false;
                    if sending && common.reserve_request() {
                        send(f, &mut req, &mut tally);
                    }
                }
            }
        }
        let end = if sending { common.deadline } else { drain_end };
        let wait = end.min(next_scan).saturating_duration_since(now);
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            let Some(f) = flows.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                let n = match f.sock.recv(&mut scratch) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // ICMP port unreachable from an earlier send: the request is lost and
                    // the timeout resends it.
                    Err(_) => {
                        tally.io_errors += 1;
                        continue;
                    }
                };
                tally.datagrams_received += 1;
                tally.bytes_received += n as u64;
                let got = &scratch[..n];
                let mut seq = [0u8; 8];
                let k = n.min(SEQ_BYTES);
                seq[..k].copy_from_slice(&got[..k]);
                let seq = u64::from_le_bytes(seq);
                let body_ok = n == size && got[k..] == req[k..];
                if !body_ok || seq > f.seq {
                    tally.verify_errors += 1;
                } else if seq < f.seq || !f.waiting {
                    // The answer to a request already counted as lost.
                    tally.late += 1;
                } else {
                    tally.requests += 1;
                    tally.record(f.sent_at.elapsed());
                    f.waiting = false;
                    if Instant::now() < common.deadline && common.reserve_request() {
                        send(f, &mut req, &mut tally);
                    }
                }
            }
        }
    }
    tally.abandoned = flows.iter().filter(|f| f.waiting && !f.unsent).count() as u64;
    Ok(tally)
}

/// Runs `udp-stream` thread `index` of `threads`: send until the deadline (or the request
/// budget), paced to `rate / threads` datagrams per second if a rate is set.
pub(crate) fn run_stream(common: &Common, index: u32, threads: u32) -> io::Result<Tally> {
    let Mode::UdpStream { size, rate } = common.config.mode else {
        return Ok(Tally::new());
    };
    let mut tally = Tally::new();
    let socks = open_flows(common, index, threads, &mut tally);
    if socks.is_empty() {
        return Ok(tally);
    }
    let payload = pattern::slice_at(0, size).to_vec();
    let per_thread = rate.map(|r| (r as f64 / f64::from(threads)).max(1.0));
    let start = Instant::now();
    'run: loop {
        let now = Instant::now();
        if now >= common.deadline {
            break;
        }
        if let Some(r) = per_thread {
            let due = (now.duration_since(start).as_secs_f64() * r) as u64 + 1;
            if tally.datagrams_sent + tally.io_errors >= due {
                let ahead = (tally.datagrams_sent + tally.io_errors + 1) as f64 / r
                    - now.duration_since(start).as_secs_f64();
                let nap = Duration::from_secs_f64(ahead.clamp(0.0, 0.001));
                std::thread::sleep(nap.min(common.deadline.saturating_duration_since(now)));
                continue;
            }
        }
        // A burst of one datagram per socket, 16 times, between clock reads.
        for _ in 0..16 {
            for s in &socks {
                if !common.reserve_request() {
                    break 'run;
                }
                match s.send(&payload) {
                    Ok(n) => {
                        tally.datagrams_sent += 1;
                        tally.bytes_sent += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::yield_now();
                    }
                    Err(_) => tally.io_errors += 1,
                }
            }
            if per_thread.is_some() {
                break;
            }
        }
    }
    Ok(tally)
}
