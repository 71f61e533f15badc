//! One acceptor thread per listener: blocking `accept`, one connection thread per client.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use socket2::Socket;

use super::conn::{self, ConnHandle, SEND_WAKE, STACK_SIZE};
use super::shared::Shared;
use crate::core::conn::{Event, Failure, Side};
use crate::engine::rate_limit::RateLimit;
use crate::engine::signal::Shutdown;
use crate::engine::socket::AcceptFailure;
use crate::engine::{op, socket};

/// Longest wait for a client: how often an idle acceptor looks at the shutdown flag.
pub const ACCEPT_WAKE: Duration = Duration::from_millis(100);
/// How long accepting stops after running out of fds, memory or threads.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// While the process is full, how often an acceptor looks for a free slot.
pub const ROOM_WAKE: Duration = Duration::from_millis(10);

/// What the operator and reloads want of one acceptor.
#[derive(Debug, Default)]
pub struct Switch(AtomicU8);

const ENABLED: u8 = 0;
const DISABLED: u8 = 1;
const CLOSED: u8 = 2;

impl Switch {
    /// Whether the acceptor takes clients now.
    pub fn enabled(&self) -> bool {
        self.0.load(Ordering::Relaxed) == ENABLED
    }

    /// Whether the listener was removed: its acceptor returns, closing the socket.
    pub fn closed(&self) -> bool {
        self.0.load(Ordering::Relaxed) == CLOSED
    }

    /// Enable or disable; whether that changed anything (never once closed).
    pub fn set(&self, on: bool) -> bool {
        let (from, to) = if on {
            (DISABLED, ENABLED)
        } else {
            (ENABLED, DISABLED)
        };
        self.0
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// For good.
    pub fn close(&self) {
        self.0.store(CLOSED, Ordering::Relaxed);
    }
}

/// `socket` as an acceptor wants it: non-blocking, as every engine keeps its listeners. The
/// flag belongs to the open file, which a binary upgrade shares with another process (and
/// another engine): the acceptor waits in `poll` instead of a blocking `accept`.
pub fn prepare(socket: Socket) -> io::Result<Socket> {
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Wait up to [`ACCEPT_WAKE`] for a client on `listener`.
fn wait_readable(listener: &Socket) {
    let mut fds = [PollFd::new(listener, PollFlags::IN)];
    let timeout = Timespec::try_from(ACCEPT_WAKE).unwrap_or_default();
    // EINTR or any other failure: the wait is only shorter.
    let _ = poll(&mut fds, Some(&timeout));
}

/// Start listener `index`'s acceptor thread on `listener` (see [`prepare`]).
pub fn spawn(
    listener: Socket,
    index: usize,
    switch: Arc<Switch>,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
) -> io::Result<std::thread::JoinHandle<()>> {
    let (shared, shutdown) = (Arc::clone(shared), shutdown.clone());
    std::thread::Builder::new()
        .name(format!("ringlb-accept-{index}"))
        .spawn(move || run(&listener, index, &switch, &shared, &shutdown))
}

/// Accept on `listener` (index `index`) until shutdown is requested or `switch` is closed; the
/// listener is closed when this returns.
fn run(
    listener: &Socket,
    index: usize,
    switch: &Switch,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
) {
    let mut exhausted = RateLimit::default();
    let mut refused = RateLimit::default();
    while !shutdown.requested() && !switch.closed() {
        // Full: leave clients in the listen backlog until a slot frees. An acceptor already
        // blocked in `accept` when others fill the process may still take one client (the
        // overshoot, see `engine::admission`).
        if !shared.admission.has_room() {
            std::thread::sleep(ROOM_WAKE);
            continue;
        }
        // Disabled by the operator: clients wait in the listen backlog.
        if !switch.enabled() {
            std::thread::sleep(ROOM_WAKE);
            continue;
        }
        wait_readable(listener);
        match (op::Accept {
            listener: listener.as_fd(),
        })
        .run(false)
        {
            Ok(fd) => {
                // Disabled while this thread was blocked in `accept`: the client waits here,
                // unserved, as it would have in the backlog. Removed, or stopping: it is
                // served, within the grace period (after a binary upgrade the socket lives on
                // in the new process; closing the client would reset it).
                while !switch.enabled() && !switch.closed() && !shutdown.requested() {
                    std::thread::sleep(ROOM_WAKE);
                }
                if let Err(err) = admit(Socket::from(fd), index, shared) {
                    if let Some(suppressed) = refused.allow(Instant::now()) {
                        tracing::warn!(listener = index, %err, suppressed, "client refused");
                    }
                }
            }
            // Nobody waiting (EAGAIN: another thread or process took the client), a signal,
            // or one client's own failure: go on.
            Err(err) => match socket::accept_failure(err.raw_os_error().unwrap_or(libc::EIO)) {
                AcceptFailure::Retry | AcceptFailure::Skip => {}
                AcceptFailure::BackOff => {
                    if let Some(suppressed) = exhausted.allow(Instant::now()) {
                        tracing::warn!(listener = index, %err, suppressed, "accept failed; pausing for {ACCEPT_BACKOFF:?}");
                    }
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            },
        }
    }
}

/// Register a client with the shard and start its connection thread. A client beyond
/// `max_connections` and the overshoot (or one that cannot get a thread) is closed at once.
fn admit(client: Socket, index: usize, shared: &Arc<Shared>) -> io::Result<()> {
    // TCP_NODELAY comes from the listener (see `socket::listener`).
    // Receives here block until data (a listener taken over from an older blocking engine may
    // still carry the receive timeout it once set, which accepted sockets inherit).
    client.set_read_timeout(None)?;
    client.set_write_timeout(Some(SEND_WAKE))?;
    // A client that is already gone has no address.
    let ip: SocketAddr = client
        .peer_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("client address is not IP"))?;
    let handle = Arc::new(ConnHandle::new(client));
    let key = shared
        .accept(index, ip, Arc::clone(&handle))
        .map_err(|reason| io::Error::other(format!("{reason:?}")))?;
    let (s, h) = (Arc::clone(shared), Arc::clone(&handle));
    let spawned = std::thread::Builder::new()
        .name("ringlb-conn".into())
        .stack_size(STACK_SIZE)
        .spawn(move || conn::connection(s, h, key));
    if let Err(err) = spawned {
        // No thread will ever leave this connection: close and release it here.
        shared.report(
            key,
            Event::Failed {
                side: Side::Client,
                failure: Failure::Local,
            },
        );
        shared.release(key);
        return Err(err);
    }
    Ok(())
}
