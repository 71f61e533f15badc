//! A worker's inbox: what the control side sends a running worker, and how it wakes it.
//!
//! The control side (admin API, reload, health checks) holds one [`WorkerLink`] per worker; each
//! worker holds the matching [`Inbox`]. Sending is a lock-free queue push (`std::sync::mpsc`)
//! plus one `eventfd` write; the worker waits on the eventfd as one more source of readiness (a
//! poll in its ring, an epoll registration, or a blocking wait), and at the start of each loop
//! turn takes every message with [`Inbox::drain`], which costs one atomic load when the queue
//! is empty. Nothing here is touched per byte or per request.
//!
//! # Call order (worker side)
//! 1. Register [`Inbox::wake_fd`] for readability with the engine's wait.
//! 2. Each loop turn, before handling completions: [`Inbox::drain`], apply every message.
//! 3. When the wake fd was reported readable: [`Inbox::rearm`] (reads the eventfd's count so that
//!    it reads as not ready again; a level-triggered wait would otherwise spin), then re-arm its
//!    wait if the engine's poll is single-shot. Messages sent after `rearm` write the eventfd
//!    again, so none is missed: the drain in step 2 runs after every wake-up.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use rustix::event::{EventfdFlags, eventfd};
use socket2::Socket;

use crate::config::Config;
use crate::core::balance::PoolSnapshot;
use crate::core::capacity::{Capacity, Grant, Post};
use crate::core::stats::{BackendCounters, ListenerCounters, ShardStats};

/// What the control side can ask of a worker.
#[derive(Debug)]
pub enum Message {
    /// Replace pool `pool`'s snapshot (a backend added, removed, re-weighted, or changed state),
    /// between two loop turns. Established connections are kept whatever changed.
    Pool {
        pool: usize,
        snapshot: Arc<PoolSnapshot>,
    },
    /// Start (`true`) or stop (`false`) accepting on listener `listener` (config order).
    /// Connections already accepted are kept.
    Accepting { listener: usize, on: bool },
    /// Send this worker's [`WorkerReport`] on the channel, at the next loop turn.
    Report(Sender<WorkerReport>),
    /// The configuration a reload left, its pools and listeners in the control side's order
    /// (which only ever grows): new listener policies (pool, retries, mode, timeouts) for
    /// connections accepted from now on, and the names the access log gives. Sent after the
    /// snapshots of any pool it adds.
    Reconfigure(Arc<Config>),
    /// A listener a reload added: this worker's own socket for it (bound, listening, with
    /// `SO_REUSEPORT`), at index `listener`, one past the worker's last. Sent after the
    /// [`Message::Reconfigure`] that gives its policy.
    AddListener { listener: usize, socket: Socket },
    /// A listener a reload removed: stop accepting on it for good and close the socket.
    /// Connections accepted from it go on.
    CloseListener { listener: usize },
    /// Send duplicates of this worker's open listening sockets, by listener index, for a
    /// binary upgrade to take over (none once stopping: they are about to close).
    Sockets(Sender<Vec<(usize, Socket)>>),
    /// A client of this worker may leave its pool's waiting queue: another worker freed the
    /// slot (see `core::capacity`).
    Admit(Grant),
}

/// What a worker reports when asked: its own counters, summed by the control side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// The worker's index.
    pub worker: usize,
    /// Its shard's counters.
    pub stats: ShardStats,
    /// By pool (config order), then by backend id (`BackendId::index`).
    pub backends: Vec<Vec<BackendCounters>>,
    /// By listener (config order).
    pub listeners: Vec<ListenerCounters>,
    /// Connections open now.
    pub connections: u64,
    /// Loop turns so far.
    pub loop_turns: u64,
    /// Copy buffers held by connections now (the io_uring engine's ring and spill buffers;
    /// other engines' per-connection buffers).
    pub buffers_in_use: u64,
    /// Pipes in use now (splice).
    pub pipes_in_use: u64,
    /// Access-log lines dropped so far because the writer was behind.
    pub access_log_dropped: u64,
    /// By UDP listener (config order).
    pub udp: Vec<crate::engine::udp::UdpReport>,
}

/// The control side's end of one worker's inbox. Cloneable; sending never blocks.
#[derive(Clone, Debug)]
pub struct WorkerLink {
    worker: usize,
    sender: Sender<Message>,
    wake: Arc<OwnedFd>,
    /// What every worker of the process shares (see [`pairs`]).
    capacity: Arc<Capacity>,
}

/// The worker's end of its inbox.
#[derive(Debug)]
pub struct Inbox {
    receiver: Receiver<Message>,
    wake: Arc<OwnedFd>,
    capacity: Arc<Capacity>,
}

/// Posts the queue's grants to the workers they are for, as [`Message::Admit`].
#[derive(Debug)]
struct Poster {
    /// By worker: its sender and eventfd.
    workers: Vec<(Sender<Message>, Arc<OwnedFd>)>,
}

impl Post for Poster {
    fn post(&self, grant: Grant) {
        if let Some((sender, wake)) = self.workers.get(grant.worker) {
            // A worker that has stopped drops the grant: its slot dies with the process.
            if sender.send(Message::Admit(grant)).is_ok() {
                let _ = rustix::io::write(&**wake, &1u64.to_ne_bytes());
            }
        }
    }
}

/// The worker that a link names has stopped (its inbox is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("worker {0} has stopped")]
pub struct Stopped(pub usize);

/// A connected pair for worker `worker`, alone in its process.
pub fn pair(worker: usize) -> io::Result<(WorkerLink, Inbox)> {
    let (mut links, mut inboxes) = pairs(1)?;
    let (mut link, mut inbox) = (links.remove(0), inboxes.remove(0));
    link.worker = worker;
    // Grants are posted by worker index: this lone worker applies its own directly.
    let capacity = Capacity::local();
    link.capacity = Arc::clone(&capacity);
    inbox.capacity = capacity;
    Ok((link, inbox))
}

/// One link and one inbox per worker, in worker order, sharing one [`Capacity`] whose grants
/// travel through these inboxes.
pub fn pairs(workers: usize) -> io::Result<(Vec<WorkerLink>, Vec<Inbox>)> {
    let mut ends = Vec::with_capacity(workers);
    for _ in 0..workers {
        let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
        let (sender, receiver) = mpsc::channel();
        ends.push((sender, receiver, wake));
    }
    let poster = Poster {
        workers: ends
            .iter()
            .map(|(sender, _, wake)| (sender.clone(), Arc::clone(wake)))
            .collect(),
    };
    // A key for the affinity tables' hashing that clients cannot know.
    let seed = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let capacity = Arc::new(Capacity::new(Box::new(poster), seed));
    let mut links = Vec::with_capacity(workers);
    let mut inboxes = Vec::with_capacity(workers);
    for (worker, (sender, receiver, wake)) in ends.into_iter().enumerate() {
        links.push(WorkerLink {
            worker,
            sender,
            wake: Arc::clone(&wake),
            capacity: Arc::clone(&capacity),
        });
        inboxes.push(Inbox {
            receiver,
            wake,
            capacity: Arc::clone(&capacity),
        });
    }
    Ok((links, inboxes))
}

impl WorkerLink {
    /// The worker this link reaches.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The capacity (limits, queues, rates) the workers share.
    pub fn capacity(&self) -> &Arc<Capacity> {
        &self.capacity
    }

    /// Queue `message` and wake the worker.
    pub fn send(&self, message: Message) -> Result<(), Stopped> {
        self.sender
            .send(message)
            .map_err(|_| Stopped(self.worker))?;
        // A full counter (2⁶⁴ − 2 unread wake-ups) or any other error still leaves the
        // eventfd readable, which is all a wake-up needs.
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        Ok(())
    }
}

impl Inbox {
    /// The capacity (limits, queues, rates) this worker shares with the others.
    pub fn capacity(&self) -> Arc<Capacity> {
        Arc::clone(&self.capacity)
    }

    /// The eventfd to wait on for readability.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Every message queued so far, oldest first.
    pub fn drain(&self) -> impl Iterator<Item = Message> + '_ {
        // Empty or disconnected (every link dropped): no more messages for now.
        std::iter::from_fn(|| self.receiver.try_recv().ok())
    }

    /// Read the eventfd's count so that it is no longer readable (call after a wake-up).
    pub fn rearm(&self) {
        let mut count = [0u8; 8];
        // EAGAIN (nothing to read) is fine: the wake-up was consumed already.
        let _ = rustix::io::read(&*self.wake, &mut count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{PollFd, PollFlags, poll};

    fn readable(fd: BorrowedFd<'_>) -> bool {
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
        poll(&mut fds, Some(&rustix::event::Timespec::default())).expect("poll") == 1
    }

    #[test]
    fn a_message_wakes_the_worker_and_arrives_in_order() {
        let (link, inbox) = pair(3).expect("pair");
        assert!(!readable(inbox.wake_fd()));
        link.send(Message::Accepting {
            listener: 0,
            on: false,
        })
        .expect("send");
        link.send(Message::Accepting {
            listener: 1,
            on: true,
        })
        .expect("send");
        assert!(readable(inbox.wake_fd()), "the eventfd wakes the worker");
        inbox.rearm();
        assert!(!readable(inbox.wake_fd()), "re-armed");
        let got: Vec<(usize, bool)> = inbox
            .drain()
            .map(|m| match m {
                Message::Accepting { listener, on } => (listener, on),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(got, vec![(0, false), (1, true)]);
        assert_eq!(inbox.drain().count(), 0);
    }

    #[test]
    fn a_stopped_worker_is_reported() {
        let (link, inbox) = pair(1).expect("pair");
        drop(inbox);
        let (reply, _answers) = mpsc::channel();
        assert_eq!(link.send(Message::Report(reply)), Err(Stopped(1)));
    }
}
