//! The backend event loop: accept, drive connections, stop when asked.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::conn::{Conn, Status};
use super::http::Responses;
use super::{BackendKind, Shared};
use crate::slab::Slab;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

/// Upper bound on how long a stop request can go unnoticed if a wake-up is lost.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);

/// Read buffer size; one per worker, reused by every connection.
const SCRATCH: usize = 64 * 1024;

/// The per-backend, read-only part of a kind, prepared once (e.g. canned HTTP responses).
#[derive(Debug)]
pub(super) enum Protocol {
    Echo,
    Hello(Vec<u8>),
    Sink,
    Source { bytes: Option<u64> },
    Http(Responses),
}

impl Protocol {
    pub(super) fn new(kind: &BackendKind, name: Option<&str>) -> Self {
        match kind {
            // The UDP kinds never reach a TCP worker; map them to their TCP cousins.
            BackendKind::Echo | BackendKind::UdpEcho => Self::Echo,
            BackendKind::Hello(n) => Self::Hello(format!("{n}\n").into_bytes()),
            BackendKind::Sink | BackendKind::UdpSink => Self::Sink,
            BackendKind::Source { bytes } => Self::Source { bytes: *bytes },
            BackendKind::Http { body_size } => Self::Http(Responses::new(*body_size, name)),
        }
    }
}

/// One event-loop thread.
#[derive(Debug)]
pub(super) struct Worker {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    shared: Arc<Shared>,
    proto: Arc<Protocol>,
}

impl Worker {
    /// Registers the listener and returns the worker with the waker that stops it.
    pub(super) fn new(
        mut listener: TcpListener,
        shared: Arc<Shared>,
        proto: Arc<Protocol>,
    ) -> io::Result<(Self, Waker)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        Ok((
            Self {
                poll,
                listener,
                conns: Slab::default(),
                shared,
                proto,
            },
            waker,
        ))
    }

    /// Runs until the stop flag is set; then drops (closes) every connection.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; SCRATCH];
        while !self.shared.stop.load(Ordering::SeqCst) {
            if let Err(e) = self.poll.poll(&mut events, Some(POLL_TIMEOUT)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(&mut scratch),
                    Token(i) => {
                        // Errors and hang-ups count as both: the next read or write reports them.
                        let hup = ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
                        let readable = ev.is_readable();
                        let writable = ev.is_writable() || hup;
                        let status = match self.conns.get_mut(i) {
                            Some(c) => c.drive(
                                readable,
                                writable,
                                hup,
                                &self.proto,
                                &self.shared,
                                &mut scratch,
                            ),
                            None => continue,
                        };
                        if status == Status::Done {
                            self.close(i);
                        }
                    }
                }
            }
        }
        for i in self.conns.keys() {
            self.close(i);
        }
    }

    fn accept(&mut self, scratch: &mut [u8]) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                // E.g. EMFILE: leave the connection queued; the next accept event retries.
                Err(_) => return,
            };
            // Request/response latency matters more than packet count on loopback.
            let _ = stream.set_nodelay(true);
            let key = self.conns.vacant_key();
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            self.shared.connections.fetch_add(1, Ordering::Relaxed);
            self.shared.active.fetch_add(1, Ordering::Relaxed);
            {
                let mut peers = match self.shared.peers.lock() {
                    Ok(p) => p,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *peers.entry(peer.ip()).or_default() += 1;
            }
            let mut conn = Conn::new(stream, &self.proto);
            // Hello has a greeting to send before any event arrives; drive once now.
            let status = conn.drive(true, true, false, &self.proto, &self.shared, scratch);
            let i = self.conns.insert(conn);
            debug_assert_eq!(i, key, "slab hands out its vacant key");
            if status == Status::Done {
                self.close(i);
            }
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns.remove(i) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.shared.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
