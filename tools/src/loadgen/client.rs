//! One client connection of a load run and the per-mode logic that drives it.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use super::report::Tally;
use super::{Common, Direction, Mode};
use crate::pattern;

/// Opens a non-blocking connection to `target`, bound to `src` if given.
pub(crate) fn connect(target: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_nonblocking(true)?;
    // Request/response latency, not packet count, is what we measure.
    sock.set_tcp_nodelay(true)?;
    if let Some(ip) = src {
        // Defer port choice to connect() so each source IP can reuse ports across targets.
        sock.set_reuse_address(true)?;
        crate::sys::set_bind_address_no_port(&sock)?;
        sock.bind(&SocketAddr::new(ip.into(), 0).into())?;
    }
    match sock.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

/// What the thread should do with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Keep it registered.
    Continue,
    /// Close it; its slot is done.
    Finished,
    /// Close it and open a new one in its slot (connect mode).
    Reopen,
    /// Keep it registered: it is ready for its next request, which waits for the thread's
    /// pacer (paced rr; the thread calls [`Client::resume`] when a token is due).
    Idle,
}

/// Connection lifecycle.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum State {
    Connecting,
    Open,
}

/// A client connection.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) stream: TcpStream,
    state: State,
    src: Option<Ipv4Addr>,
    started: Instant,
    /// Request payload (rr/connect); its first 8 bytes carry a sequence number.
    payload: Vec<u8>,
    seq: u64,
    in_request: bool,
    sent: usize,
    recvd: usize,
    req_start: Instant,
    mismatch: bool,
    /// Stream bytes moved so far on this connection.
    moved: u64,
    write_shut: bool,
    /// The last write hit `WouldBlock` or was short; wait for a writable edge.
    write_blocked: bool,
    /// The socket may hold unread data; cleared by `WouldBlock`, short reads and completed
    /// echoes, after which any new data raises a fresh edge. Saves a failing `read` per
    /// request.
    read_ready: bool,
    /// The peer hung up or errored (seen in an event). A short read then no longer proves
    /// the socket drained: the EOF or error behind the data raises no new edge.
    peer_closed: bool,
}

impl Client {
    /// Wraps a connecting stream.
    pub(crate) fn new(stream: TcpStream, src: Option<Ipv4Addr>, mode: &Mode, now: Instant) -> Self {
        let payload = match mode {
            Mode::Rr { size } | Mode::Connect { size } => pattern::slice_at(0, *size).to_vec(),
            _ => Vec::new(),
        };
        // `slice_at` caps at one chunk; extend larger payloads with the same pattern.
        let mut payload = payload;
        if let Mode::Rr { size } | Mode::Connect { size } = mode {
            while payload.len() < *size {
                let off = payload.len() as u64;
                payload.extend_from_slice(pattern::slice_at(off, *size - payload.len()));
            }
        }
        Self {
            stream,
            state: State::Connecting,
            src,
            started: now,
            payload,
            seq: 0,
            in_request: false,
            sent: 0,
            recvd: 0,
            req_start: now,
            mismatch: false,
            moved: 0,
            write_shut: false,
            write_blocked: false,
            read_ready: true,
            peer_closed: false,
        }
    }

    /// Whether the TCP handshake has completed.
    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Handles a readiness event; `hup` says the event reported a hang-up or error.
    pub(crate) fn on_event(
        &mut self,
        readable: bool,
        writable: bool,
        hup: bool,
        common: &Common,
        tally: &mut Tally,
        scratch: &mut [u8],
    ) -> Step {
        if writable {
            self.write_blocked = false;
        }
        self.peer_closed |= hup;
        if readable || hup {
            self.read_ready = true;
        }
        if self.state == State::Connecting {
            match self.check_connected() {
                Ok(false) => return Step::Continue,
                Ok(true) => {
                    self.state = State::Open;
                    tally.connections_opened += 1;
                    if let Some(ip) = self.src {
                        *tally.per_source.entry(ip).or_default() += 1;
                    }
                    if let Some(step) = self.on_connected(common, tally) {
                        return step;
                    }
                }
                Err(_) => {
                    tally.connect_errors += 1;
                    return self.after_failure(common);
                }
            }
        }
        let res = match common.config.mode {
            Mode::Rr { .. } | Mode::Connect { .. } => self.pump_requests(common, tally, scratch),
            Mode::Stream {
                direction: Direction::Upload,
                bytes_per_conn,
            } => self.pump_upload(bytes_per_conn, tally, scratch),
            Mode::Stream {
                direction: Direction::Download,
                bytes_per_conn,
            } => self.pump_download(bytes_per_conn, tally, scratch),
            // UDP modes run in `udp.rs` and never open TCP clients; idling is harmless.
            Mode::Idle { .. } | Mode::UdpRr { .. } | Mode::UdpStream { .. } => {
                self.pump_idle(tally, scratch)
            }
        };
        match res {
            Ok(step) => step,
            Err(_) => {
                tally.io_errors += 1;
                self.after_failure(common)
            }
        }
    }

    /// Paced rr: starts the next request (the thread's pacer let it) and drives it.
    pub(crate) fn resume(
        &mut self,
        common: &Common,
        tally: &mut Tally,
        scratch: &mut [u8],
    ) -> Step {
        if !self.start_request(common) {
            return Step::Finished;
        }
        self.pump_requests(common, tally, scratch)
            .unwrap_or_else(|_| {
                tally.io_errors += 1;
                self.after_failure(common)
            })
    }

    /// Connect mode keeps its slot busy after a failure; the other modes give the slot up.
    fn after_failure(&self, common: &Common) -> Step {
        match common.config.mode {
            Mode::Connect { .. } => Step::Reopen,
            _ => Step::Finished,
        }
    }

    /// The usual mio dance: an error is reported via SO_ERROR; otherwise a peer address
    /// means connected, and `NotConnected` means the event was spurious.
    fn check_connected(&self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts the mode's work; returns a step if the connection is already done.
    fn on_connected(&mut self, common: &Common, tally: &mut Tally) -> Option<Step> {
        match common.config.mode {
            Mode::Rr { .. } if common.paced() => return Some(Step::Idle),
            Mode::Rr { .. } if !self.start_request(common) => return Some(Step::Finished),
            Mode::Connect { size } => {
                // The request budget was reserved when this connection was opened.
                if size == 0 {
                    tally.requests += 1;
                    tally.record(self.started.elapsed());
                    return Some(Step::Reopen);
                }
                self.begin(Instant::now());
            }
            _ => {}
        }
        None
    }

    /// Claims a request from the budget and starts it; false if time or budget is up.
    fn start_request(&mut self, common: &Common) -> bool {
        let now = Instant::now();
        if now >= common.deadline || !common.reserve_request() {
            return false;
        }
        self.begin(now);
        true
    }

    fn begin(&mut self, now: Instant) {
        self.seq += 1;
        if self.payload.len() >= 8 {
            self.payload[..8].copy_from_slice(&self.seq.to_le_bytes());
        }
        self.in_request = true;
        self.sent = 0;
        self.recvd = 0;
        self.mismatch = false;
        self.req_start = now;
    }

    /// Rr and connect: write the request and read (and verify) the echo, both until they
    /// would block, so large requests cannot deadlock against the server's buffers.
    fn pump_requests(
        &mut self,
        common: &Common,
        tally: &mut Tally,
        scratch: &mut [u8],
    ) -> io::Result<Step> {
        loop {
            let mut progress = false;
            if self.in_request && self.sent < self.payload.len() && !self.write_blocked {
                match self.stream.write(&self.payload[self.sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.sent += n;
                        tally.bytes_sent += n as u64;
                        // Short write: the send buffer is full, a writable edge will follow.
                        self.write_blocked = self.sent < self.payload.len();
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.write_blocked = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(e) => return Err(e),
                }
            }
            if self.in_request && self.recvd < self.payload.len() && self.read_ready {
                let want = (self.payload.len() - self.recvd).min(scratch.len());
                match self.stream.read(&mut scratch[..want]) {
                    Ok(0) => {
                        tally.short_reads += 1;
                        return Ok(Step::Finished);
                    }
                    Ok(n) => {
                        self.read_ready = n == want || self.peer_closed;
                        let expected = &self.payload[self.recvd..self.recvd + n];
                        self.mismatch |= scratch[..n] != *expected;
                        self.recvd += n;
                        tally.bytes_received += n as u64;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_ready = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(e) => return Err(e),
                }
            }
            if self.in_request && self.recvd == self.payload.len() {
                self.in_request = false;
                // An echo server sends nothing unasked, so the socket is drained now.
                self.read_ready = self.peer_closed;
                tally.requests += 1;
                tally.verify_errors += u64::from(self.mismatch);
                match common.config.mode {
                    Mode::Connect { .. } => {
                        tally.record(self.started.elapsed());
                        return Ok(Step::Reopen);
                    }
                    _ => {
                        tally.record(self.req_start.elapsed());
                        if common.paced() {
                            return Ok(Step::Idle);
                        }
                        if !self.start_request(common) {
                            return Ok(Step::Finished);
                        }
                        progress = true;
                    }
                }
            }
            if !progress {
                return Ok(Step::Continue);
            }
        }
    }

    /// Upload: write the pattern until blocked or the per-connection limit; then half-close
    /// and wait for the server's EOF so every byte is known to have arrived.
    fn pump_upload(
        &mut self,
        limit: Option<u64>,
        tally: &mut Tally,
        scratch: &mut [u8],
    ) -> io::Result<Step> {
        while !self.write_shut && !self.write_blocked {
            let want = limit.map_or(pattern::CHUNK, |l| {
                usize::try_from(l.saturating_sub(self.moved))
                    .unwrap_or(usize::MAX)
                    .min(pattern::CHUNK)
            });
            if want == 0 {
                self.stream.shutdown(Shutdown::Write)?;
                self.write_shut = true;
                break;
            }
            match self.stream.write(pattern::slice_at(self.moved, want)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.write_blocked = n < want;
                    self.moved += n as u64;
                    tally.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.write_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while self.read_ready {
            match self.stream.read(scratch) {
                Ok(0) => {
                    if !self.write_shut {
                        tally.closed_by_peer += 1;
                    }
                    return Ok(Step::Finished);
                }
                Ok(n) => {
                    self.read_ready = n == scratch.len() || self.peer_closed;
                    tally.bytes_received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Step::Continue)
    }

    /// Download: read until blocked, EOF or the limit, checking bytes against the pattern.
    fn pump_download(
        &mut self,
        limit: Option<u64>,
        tally: &mut Tally,
        scratch: &mut [u8],
    ) -> io::Result<Step> {
        while self.read_ready {
            let want = limit.map_or(scratch.len(), |l| {
                usize::try_from(l.saturating_sub(self.moved))
                    .unwrap_or(usize::MAX)
                    .min(scratch.len())
            });
            if want == 0 {
                return Ok(Step::Finished);
            }
            let want = want.min(pattern::CHUNK);
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => {
                    if limit.is_some() {
                        tally.short_reads += 1;
                    }
                    return Ok(Step::Finished);
                }
                Ok(n) => {
                    self.read_ready = n == want || self.peer_closed;
                    if !self.mismatch && scratch[..n] != *pattern::slice_at(self.moved, n) {
                        // Count each connection once: after a mismatch every byte differs.
                        self.mismatch = true;
                        tally.verify_errors += 1;
                    }
                    self.moved += n as u64;
                    tally.bytes_received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Step::Continue)
    }

    /// Idle: nothing to send; notice the server closing on us.
    fn pump_idle(&mut self, tally: &mut Tally, scratch: &mut [u8]) -> io::Result<Step> {
        while self.read_ready {
            match self.stream.read(scratch) {
                Ok(0) => {
                    tally.closed_by_peer += 1;
                    return Ok(Step::Finished);
                }
                Ok(n) => {
                    self.read_ready = n == scratch.len() || self.peer_closed;
                    tally.bytes_received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Step::Continue)
    }
}
