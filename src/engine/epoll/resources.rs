//! What one epoll worker owns besides its shard: the epoll instance, buffer and pipe pools,
//! the list of receives deferred to the next turn, and counters.

use std::os::fd::OwnedFd;

use crate::config::SocketOptions;
use crate::core::conn::Dir;
use crate::core::slot::SlotKey;
use crate::engine::rate_limit::RateLimit;
use crate::sys::pipe::PipePool;

/// I/O counters of one worker (or, summed, of the engine).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// `recv`/`splice` calls made to read a socket.
    pub reads: u64,
    /// Of those, how many returned EAGAIN (readiness said "go", the socket had nothing).
    pub reads_eagain: u64,
    /// `send`/`splice` calls made to write a socket.
    pub writes: u64,
    /// Of those, how many returned EAGAIN (the socket buffer was full).
    pub writes_eagain: u64,
    /// `epoll_wait` calls.
    pub waits: u64,
    /// Clients accepted (including refused ones).
    pub accepted: u64,
    /// `accept` failures for lack of fds or memory (each starts a back-off).
    pub accept_exhausted: u64,
}

impl IoStats {
    /// The share of reads that returned EAGAIN, 0.0 ..= 1.0.
    pub fn eagain_share(&self) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            self.reads_eagain as f64 / self.reads as f64
        }
    }

    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &IoStats) {
        self.reads += other.reads;
        self.reads_eagain += other.reads_eagain;
        self.writes += other.writes;
        self.writes_eagain += other.writes_eagain;
        self.waits += other.waits;
        self.accepted += other.accepted;
        self.accept_exhausted += other.accept_exhausted;
    }
}

/// A bounded free list of equally sized receive buffers.
#[derive(Debug)]
pub struct BufferPool {
    free: Vec<Box<[u8]>>,
    size: usize,
    max_idle: usize,
    /// Buffers handed out and not put back.
    lent: usize,
}

impl BufferPool {
    /// A pool of `size`-byte buffers that keeps at most `max_idle` of them.
    pub fn new(size: usize, max_idle: usize) -> Self {
        BufferPool {
            free: Vec::new(),
            size: size.max(1),
            max_idle,
            lent: 0,
        }
    }

    /// A buffer (contents unspecified).
    pub fn get(&mut self) -> Box<[u8]> {
        self.lent += 1;
        self.free
            .pop()
            .unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    /// Buffers handed out and not put back (held by connections).
    pub fn lent(&self) -> usize {
        self.lent
    }

    /// Return a buffer; beyond `max_idle` it is freed.
    pub fn put(&mut self, buf: Box<[u8]>) {
        self.lent = self.lent.saturating_sub(1);
        if self.free.len() < self.max_idle && buf.len() == self.size {
            self.free.push(buf);
        }
    }
}

/// A worker's shared I/O resources.
#[derive(Debug)]
pub struct Resources {
    pub epoll: OwnedFd,
    pub pipes: PipePool,
    /// Warnings about directions that found no pipe.
    pub pipes_log: RateLimit,
    /// The worker's index, for log lines.
    pub worker: usize,
    pub buffers: BufferPool,
    pub stats: IoStats,
    /// Loop turn number, for per-turn read budgets.
    pub turn: u64,
    /// Receives that used up their turn's budget; retried next turn.
    pub deferred: Vec<(SlotKey, Dir)>,
    /// Keepalive and user timeout for backend sockets.
    pub server_options: SocketOptions,
}
