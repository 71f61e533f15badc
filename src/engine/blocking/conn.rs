//! One connection of the blocking engine: its sockets, its mailbox, and its two threads.
//!
//! The connection thread connects to the backend (one blocking connect with a timeout per
//! `Connect` action), then spawns a helper thread for the downstream direction and serves
//! upstream itself. Each direction thread waits in the connection's mailbox for the next order
//! the core issued for its direction (a send is always taken before a receive), carries it out
//! with one blocking system call, and reports the result through [`Shared::report`].
//!
//! A closed connection's threads are woken by `shutdown(2)` on its sockets (a blocked `recv` or
//! `poll` returns) and by a 100 ms `SO_SNDTIMEO` (a blocked `send` returns `EAGAIN` and looks at
//! the mailbox). The last thread to leave releases the connection's slot, so the shard's count
//! bounds the number of threads.

use std::io;
use std::net::{Shutdown as How, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use socket2::{SockAddr, Socket};

use super::shared::Shared;
use crate::config::SocketOptions;
use crate::core::conn::{Dir, Event, Failure, Side, Via};
use crate::core::slot::SlotKey;
use crate::engine::op::os_failure;
use crate::engine::staged::{Received, Staged};
use crate::engine::{op, socket};

/// How often a thread blocked on a full socket (or waiting to splice into one) looks at the
/// mailbox.
pub const SEND_WAKE: Duration = Duration::from_millis(100);
/// Stack size of connection threads (their buffers live on the heap).
pub const STACK_SIZE: usize = 256 * 1024;

/// Orders the core issued that a direction thread has not taken yet.
#[derive(Debug, Default)]
struct Mail {
    /// `Some(addr)`: connect to `addr` (`None`: the backend has no address; fail at once).
    connect: Option<Option<SocketAddr>>,
    /// An inspect read (before the connect).
    inspect: bool,
    /// The preamble to write to the backend before any send upstream.
    preamble: Option<Vec<u8>>,
    recv: [Option<Via>; 2],
    send: [Option<(Via, u64)>; 2],
    closed: bool,
}

/// What the connection thread does before it forwards.
enum Setup {
    Inspect,
    Connect(Option<SocketAddr>),
}

/// What a direction thread does next.
enum Order {
    Preamble(Vec<u8>),
    Send(Via, u64),
    Recv(Via),
    Closed,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave this data half-updated in a way that matters more than
    // stopping would; keep serving.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's sockets and mailbox, shared by its threads and by whoever drains actions.
#[derive(Debug)]
pub struct ConnHandle {
    client: Socket,
    backend: Mutex<Option<Arc<Socket>>>,
    mail: Mutex<Mail>,
    wake: Condvar,
    /// Threads of this connection still running.
    threads: AtomicUsize,
}

impl ConnHandle {
    /// The handle of an accepted (blocking) client; its connection thread counts as running.
    pub fn new(client: Socket) -> Self {
        ConnHandle {
            client,
            backend: Mutex::new(None),
            mail: Mutex::new(Mail::default()),
            wake: Condvar::new(),
            threads: AtomicUsize::new(1),
        }
    }

    fn post(&self, f: impl FnOnce(&mut Mail)) {
        f(&mut lock(&self.mail));
        self.wake.notify_all();
    }

    /// `Connect`: the connection thread will connect to `addr`.
    pub fn post_connect(&self, addr: Option<SocketAddr>) {
        self.post(|m| m.connect = Some(addr));
    }

    /// `Inspect`: the connection thread will read the client's first bytes.
    pub fn post_inspect(&self) {
        self.post(|m| m.inspect = true);
    }

    /// `SendPreamble` with its bytes: the upstream thread writes them first.
    pub fn post_preamble(&self, bytes: Vec<u8>) {
        self.post(|m| m.preamble = Some(bytes));
    }

    /// The address the client connected to (for a PROXY header's destination).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        op::preamble::local_addr(self.client.as_fd())
    }

    /// `Recv { dir, via }`.
    pub fn post_recv(&self, dir: Dir, via: Via) {
        self.post(|m| m.recv[dir.index()] = Some(via));
    }

    /// `Send { dir, via, queued }`.
    pub fn post_send(&self, dir: Dir, via: Via, queued: u64) {
        self.post(|m| m.send[dir.index()] = Some((via, queued)));
    }

    /// `CancelRecv { dir }`: true if the receive had not started and is now dropped (report
    /// `RecvEnded`); false if it is running, and its own result will report.
    pub fn cancel_recv(&self, dir: Dir) -> bool {
        lock(&self.mail).recv[dir.index()].take().is_some()
    }

    /// `ShutdownWrite { side }`.
    pub fn shutdown_write(&self, side: Side) -> io::Result<()> {
        match side {
            Side::Client => (op::Shutdown {
                socket: self.client.as_fd(),
            })
            .run(),
            Side::Backend => match &*lock(&self.backend) {
                Some(sock) => (op::Shutdown {
                    socket: sock.as_fd(),
                })
                .run(),
                None => Err(io::ErrorKind::NotConnected.into()),
            },
        }
    }

    /// `Close { reset }`: wake every thread of the connection; they leave, and the last one
    /// releases the slot. The sockets are closed when the last reference goes.
    pub fn close(&self, reset: bool) {
        self.post(|m| m.closed = true);
        let backend = lock(&self.backend).clone();
        for sock in std::iter::once(&self.client).chain(backend.as_deref()) {
            if reset {
                // The final close then sends RST. Only the read side is shut down here, which
                // sends nothing: a FIN now would tell the peer "done" before the reset.
                let _ = socket::set_reset_on_close(sock);
                let _ = sock.shutdown(How::Read);
            } else {
                let _ = sock.shutdown(How::Both);
            }
        }
    }

    fn closed(&self) -> bool {
        lock(&self.mail).closed
    }

    /// Whether a `Connect` order waits (the inspect phase ended while a read was out).
    fn connect_posted(&self) -> bool {
        lock(&self.mail).connect.is_some()
    }

    /// Wait for the next `Connect` or `Inspect` order; `None` once the connection is closed.
    fn next_setup(&self) -> Option<Setup> {
        let mut mail = lock(&self.mail);
        loop {
            if mail.closed {
                return None;
            }
            if let Some(addr) = mail.connect.take() {
                return Some(Setup::Connect(addr));
            }
            if std::mem::take(&mut mail.inspect) {
                return Some(Setup::Inspect);
            }
            mail = self.wake.wait(mail).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wait for the next order for `dir`, sends first.
    fn next_order(&self, dir: Dir) -> Order {
        let mut mail = lock(&self.mail);
        loop {
            if mail.closed {
                return Order::Closed;
            }
            if dir == Dir::Upstream
                && let Some(bytes) = mail.preamble.take()
            {
                return Order::Preamble(bytes);
            }
            if let Some((via, queued)) = mail.send[dir.index()].take() {
                return Order::Send(via, queued);
            }
            if let Some(via) = mail.recv[dir.index()].take() {
                return Order::Recv(via);
            }
            mail = self.wake.wait(mail).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Body of a connection's first thread: connect, then serve upstream.
pub fn connection(shared: Arc<Shared>, handle: Arc<ConnHandle>, key: SlotKey) {
    if let Some(backend) = connect_phase(&shared, &handle, key) {
        handle.threads.fetch_add(1, Ordering::AcqRel);
        let (s, h, b) = (
            Arc::clone(&shared),
            Arc::clone(&handle),
            Arc::clone(&backend),
        );
        let spawned = std::thread::Builder::new()
            .name("ringlb-conn".into())
            .stack_size(STACK_SIZE)
            .spawn(move || {
                forward(&s, &h, key, Dir::Downstream, &b);
                leave(&s, &h, key);
            });
        if let Err(err) = spawned {
            handle.threads.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%err, "cannot spawn a connection thread");
            shared.report(
                key,
                Event::Failed {
                    side: Side::Client,
                    failure: Failure::Local,
                },
            );
        }
        forward(&shared, &handle, key, Dir::Upstream, &backend);
    }
    leave(&shared, &handle, key);
}

/// Leave the connection; the last thread out releases its slot.
fn leave(shared: &Shared, handle: &ConnHandle, key: SlotKey) {
    if handle.threads.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.release(key);
    }
}

/// Carry out `Connect` orders until one succeeds (`Some(socket)`) or the connection closes.
fn connect_phase(shared: &Shared, handle: &ConnHandle, key: SlotKey) -> Option<Arc<Socket>> {
    loop {
        let addr = match handle.next_setup()? {
            Setup::Inspect => {
                inspect(shared, handle, key);
                continue;
            }
            Setup::Connect(addr) => addr,
        };
        // A socket of an earlier attempt is closed first.
        lock(&handle.backend).take();
        match addr
            .ok_or_else(|| io::Error::other("backend has no address"))
            .and_then(|a| connect(a, shared.connect_timeout(), &shared.server_options))
        {
            Ok(sock) => {
                let sock = Arc::new(sock);
                *lock(&handle.backend) = Some(Arc::clone(&sock));
                shared.report(key, Event::Connected);
                return Some(sock);
            }
            Err(err) => {
                tracing::debug!(?addr, %err, "backend connect failed");
                let timed_out = err.kind() == io::ErrorKind::TimedOut;
                shared.report(key, Event::ConnectFailed { timed_out });
            }
        }
    }
}

/// Carry out `Inspect`: wait for the client's bytes and hand them to the shard. The wait
/// looks at the mailbox every [`SEND_WAKE`]: a connect posted meanwhile (the inspect phase
/// ended at its timeout) ends the read with nothing.
fn inspect(shared: &Shared, handle: &ConnHandle, key: SlotKey) {
    let mut buf = op::inspect::buffer(shared.inspect_room(key));
    let client = handle.client.as_fd();
    loop {
        if handle.closed() {
            return;
        }
        if handle.connect_posted() {
            shared.inspected(key, &[]);
            return;
        }
        if let Err(err) = wait_for(client, PollFlags::IN | PollFlags::RDHUP, Some(SEND_WAKE)) {
            let failure = os_failure(&err);
            shared.report(
                key,
                Event::Failed {
                    side: Side::Client,
                    failure,
                },
            );
            return;
        }
        let result = op::Recv {
            socket: client,
            buf: &mut buf,
        }
        .run_nonblocking();
        match op::inspect::classify(result) {
            op::inspect::Inspected::Bytes(n) => return shared.inspected(key, &buf[..n]),
            op::inspect::Inspected::Wait => {}
            op::inspect::Inspected::Event(event) => return shared.report(key, event),
        }
    }
}

fn connect(addr: SocketAddr, timeout: Duration, options: &SocketOptions) -> io::Result<Socket> {
    let sock = socket::backend(addr, false, options)?;
    sock.connect_timeout(&SockAddr::from(addr), timeout)?;
    sock.set_write_timeout(Some(SEND_WAKE))?;
    Ok(sock)
}

/// Serve `dir` until the connection closes, then give its pipe back.
fn forward(shared: &Shared, handle: &ConnHandle, key: SlotKey, dir: Dir, backend: &Socket) {
    let mut queue = Staged::default();
    forward_queue(shared, handle, key, dir, backend, &mut queue);
    if queue.buf.is_some() {
        shared.buffers_in_use.fetch_sub(1, Ordering::Relaxed);
    }
    if let Some(pipe) = queue.pipe.take() {
        shared.put_pipe(pipe, queue.in_pipe == 0);
    }
}

fn forward_queue(
    shared: &Shared,
    handle: &ConnHandle,
    key: SlotKey,
    dir: Dir,
    backend: &Socket,
    queue: &mut Staged,
) {
    let sockets = |side: Side| match side {
        Side::Client => handle.client.as_fd(),
        Side::Backend => backend.as_fd(),
    };
    let (source, sink) = (sockets(dir.source()), sockets(dir.sink()));
    loop {
        let event = match handle.next_order(dir) {
            Order::Closed => return,
            Order::Preamble(bytes) => {
                let mut preamble = op::Preamble::new(bytes);
                loop {
                    // A full socket returns at its send timeout: look at the mailbox.
                    if let Some(event) = op::preamble::finished(preamble.write(sink)) {
                        break event;
                    }
                    if handle.closed() {
                        return;
                    }
                }
            }
            Order::Recv(Via::Splice) if queue.pipe.is_none() => match shared.take_pipe() {
                Some(pipe) => {
                    queue.pipe = Some(pipe);
                    received(dir, receive(queue, source, Via::Splice, shared))
                }
                None => Event::SpliceUnavailable { dir },
            },
            Order::Recv(via) => received(dir, receive(queue, source, via, shared)),
            Order::Send(via, queued) => match send(queue, sink, via, queued, handle) {
                // The connection closed while the sink was full.
                Ok(0) => return,
                Ok(n) => Event::Sent {
                    dir,
                    bytes: n as u64,
                },
                Err(err) => {
                    tracing::debug!(?dir, %err, "send failed");
                    Event::Failed {
                        side: dir.sink(),
                        failure: os_failure(&err),
                    }
                }
            },
        };
        // Events after `Close` are ignored by the core; there is no need to report them.
        if handle.closed() {
            return;
        }
        shared.report(key, event);
    }
}

/// The event for a receive's result.
fn received(dir: Dir, result: io::Result<usize>) -> Event {
    match result {
        Ok(0) => Event::Eof { dir },
        Ok(n) => Event::Received {
            dir,
            bytes: n as u64,
            armed: false,
        },
        Err(err) => {
            tracing::debug!(?dir, %err, "receive failed");
            Event::Failed {
                side: dir.source(),
                failure: os_failure(&err),
            }
        }
    }
}

/// One blocking receive; 0 means end of stream. A splice receive has its pipe.
fn receive(
    queue: &mut Staged,
    source: BorrowedFd<'_>,
    via: Via,
    shared: &Shared,
) -> io::Result<usize> {
    let new_buf = || {
        shared.buffers_in_use.fetch_add(1, Ordering::Relaxed);
        vec![0; shared.buffer_size].into_boxed_slice()
    };
    loop {
        let received = match via {
            Via::Copy => queue.recv_copy(source, new_buf)?,
            Via::Splice => {
                let room = queue.pipe.as_ref().map_or(0, |p| p.capacity()) > queue.in_pipe;
                if !room {
                    return Err(io::Error::other("splice into a full pipe"));
                }
                // Splice never blocks (SPLICE_F_NONBLOCK): wait for the socket with poll.
                // A shutdown of the socket on close wakes it.
                wait_for(source, PollFlags::IN | PollFlags::RDHUP, None)?;
                queue.recv_splice(source)?
            }
        };
        match received {
            Received::Bytes(n) => return Ok(n),
            Received::Eof => return Ok(0),
            // Sends are taken before receives, so a full buffer cannot be asked for more.
            Received::Full if via == Via::Copy => {
                return Err(io::Error::other("receive into a full buffer"));
            }
            Received::UrgentBehindPipe => {
                return Err(io::Error::other("urgent data behind a non-empty pipe"));
            }
            // Readable yet nothing taken (or the pipe out of slots): wait again.
            Received::WouldBlock | Received::Full => {}
        }
    }
}

/// One blocking send of the queued bytes (possibly partial); `Ok(0)` if the connection closed
/// while the sink was full.
fn send(
    queue: &mut Staged,
    sink: BorrowedFd<'_>,
    via: Via,
    queued: u64,
    handle: &ConnHandle,
) -> io::Result<usize> {
    loop {
        match queue.send(via, sink, queued) {
            // SO_SNDTIMEO ran out (copy), or the socket is full (splice): look at the mailbox.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if handle.closed() {
                    return Ok(0);
                }
                if via == Via::Splice {
                    wait_for(sink, PollFlags::OUT, Some(SEND_WAKE))?;
                }
            }
            other => return other,
        }
    }
}

/// `poll(2)` one fd for `events`; returns when it is ready, failed, or `timeout` passed.
fn wait_for(fd: BorrowedFd<'_>, events: PollFlags, timeout: Option<Duration>) -> io::Result<()> {
    let spec = timeout.and_then(|t| Timespec::try_from(t).ok());
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    match rustix::event::poll(&mut fds, spec.as_ref()) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
