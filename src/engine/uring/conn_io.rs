//! What the io_uring engine keeps per connection: sockets, queued buffers, pipes, and the count
//! of operations still in flight (the slot is freed only when it reaches zero).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};

use socket2::{SockAddr, Socket};

use super::send_ring::SendRingId;
use crate::core::conn::{Dir, Side};
use crate::engine::op::Preamble;
use crate::sys::pipe::Pipe;

/// Received bytes `from..to` of buffer `bid`, waiting to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub bid: u16,
    pub from: u32,
    pub to: u32,
}

/// Most queued buffers one send takes.
pub const MAX_SEND_CHUNKS: usize = 16;

/// The `msghdr` and iovecs of a multi-buffer send. Boxed, so its address is stable while the
/// send is in flight, and allocated only for directions that ever queue several buffers.
pub struct SendVec {
    pub iov: [libc::iovec; MAX_SEND_CHUNKS],
    pub msg: libc::msghdr,
}

impl std::fmt::Debug for SendVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendVec")
            .field("iovlen", &self.msg.msg_iovlen)
            .finish()
    }
}

impl SendVec {
    /// Empty.
    pub fn new() -> Box<SendVec> {
        Box::new(SendVec {
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_SEND_CHUNKS],
            // SAFETY-free zero value: msghdr is plain data and all-zero is "no name, no
            // iovecs, no control data".
            msg: libc::msghdr {
                msg_name: std::ptr::null_mut(),
                msg_namelen: 0,
                msg_iov: std::ptr::null_mut(),
                msg_iovlen: 0,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            },
        })
    }
}

/// Why a receive the core asked for is not in flight yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parked {
    /// Every receive buffer is held: retried when buffers come back.
    NoBuffers,
    /// The pipe has no free slot (it is full of small segments): retried after a splice out.
    PipeFull,
    /// Copy mode: this direction already holds `COPY_BUFFERS` buffers (small segments behind
    /// a slow sink can do that far below the byte limit): retried after a send.
    QueueFull,
}

/// What a direction's receives have been filling, in copy mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Filling {
    /// No receive has completed yet, or the last one filled its buffer: bulk data, or maybe.
    #[default]
    Whole,
    /// The last receive left room in its buffer: messages, which take a buffer at a time.
    Part,
}

/// The receive of a direction that is in the kernel, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Armed {
    /// None: idle, parked, or finished.
    #[default]
    No,
    /// Pool mode: a receive into the direction's own buffer (`recv_buffer`).
    Pooled,
    /// A single receive that takes a ring buffer when data arrives, for a direction that
    /// holds none (which may always take one, so it claims none: an idle connection's
    /// receive does not shrink the others' share).
    Select,
    /// As `Select`, for a direction that holds some already: one claim on the ring (see
    /// `Buffers::arm`).
    SelectAnother,
    /// A multishot receive from the ring.
    Multishot,
    /// Copy mode: a POLLIN, then a receive. After `EAGAIN` (io_uring can surface it on
    /// non-blocking sockets when a request was punted to io-wq), and in pool mode while
    /// buffers are short, so that an idle direction holds none.
    Readable,
    /// Splice mode: a POLLIN and the splice into the pipe (linked, or made inline when the
    /// poll fires).
    Splice,
}

impl Armed {
    /// A receive is in the kernel.
    pub fn in_flight(self) -> bool {
        self != Armed::No
    }

    /// Its cancel targets the poll (`Op::PollIn`) rather than the receive (`Op::Recv`).
    pub fn polls(self) -> bool {
        matches!(self, Armed::Readable | Armed::Splice)
    }
}

/// One direction's I/O state.
#[derive(Debug, Default)]
pub struct FlowIo {
    /// Copy mode: received buffers in order, the head possibly partly sent.
    pub chunks: VecDeque<Chunk>,
    /// Splice mode: the pipe, taken from the worker's pool on first use.
    pub pipe: Option<Pipe>,
    /// Bytes spliced into the pipe and not yet out of it.
    pub pipe_bytes: u64,
    /// What receive of this direction is in the kernel.
    pub armed: Armed,
    /// Copy mode: the last receive filled its buffer, or none has completed yet (what a
    /// direction sends is unknown until then). Such a direction is armed multishot only within
    /// the worker's budget (`Buffers::multishot_room`): a multishot receive on a streaming
    /// source can take a batch of buffers before the engine sees any.
    pub filling: Filling,
    /// Pool mode: the buffer the receive in flight writes into.
    pub recv_buffer: Option<u16>,
    /// The receive was asked for but waits for a resource.
    pub parked: Option<Parked>,
    /// The core asked to stop the receive in flight.
    pub cancel_requested: bool,
    /// Splice out: bytes asked for, kept for a retry after `EAGAIN`.
    pub splice_out_len: u32,
    /// Copy mode: the multi-buffer send's header, once needed.
    pub send_vec: Option<Box<SendVec>>,
    /// Copy mode with send bundles: the send ring leased while this direction sends; its
    /// pending entries are the first chunks of `chunks`.
    pub send_ring: Option<SendRingId>,
    /// A bundle send is in flight (until its completion without `IORING_CQE_F_MORE`).
    pub bundle_in_flight: bool,
    /// The core's `Send` is outstanding and the bundle in flight (or its retry) answers it.
    pub bundle_owes_sent: bool,
    /// Copy mode: likewise for a send, behind a POLLOUT.
    pub send_waits_writable: bool,
    /// Copy mode: the engine itself cancelled a multishot receive because the direction holds
    /// too many buffers; its final completion parks the receive instead of ending it.
    pub self_cancelled: bool,
    /// Splice mode: readiness reported, yet splice answered `EAGAIN` on an empty pipe, this
    /// many times in a row (TCP urgent data does that: poll says readable, splice cannot move
    /// past the mark).
    pub spurious_wakeups: u8,
}

/// Per-connection state of the io_uring engine.
#[derive(Debug)]
pub struct ConnIo {
    pub client: Socket,
    pub backend: Option<Socket>,
    /// The connect's address: the kernel reads it during the connect, so it lives here (boxed,
    /// and dropped once connected, to keep idle connections small).
    pub backend_addr: Option<Box<SockAddr>>,
    /// Submissions whose final completion has not arrived.
    pub in_flight: u32,
    /// `Some(reset)` once the core said Close.
    pub closing: Option<bool>,
    /// The cancel-everything for closing has been submitted.
    pub cancel_sent: bool,
    pub flows: [FlowIo; 2],
    /// The buffer of the inspect receive in flight.
    pub inspect_buf: Option<Box<[u8]>>,
    /// The preamble being sent to the backend.
    pub preamble: Option<Box<Preamble>>,
}

impl ConnIo {
    /// State for a freshly accepted client.
    pub fn new(client: Socket) -> Self {
        ConnIo {
            client,
            backend: None,
            backend_addr: None,
            in_flight: 0,
            closing: None,
            cancel_sent: false,
            flows: [FlowIo::default(), FlowIo::default()],
            inspect_buf: None,
            preamble: None,
        }
    }

    /// The socket on `side`, if it exists.
    pub fn socket(&self, side: Side) -> Option<BorrowedFd<'_>> {
        match side {
            Side::Client => Some(self.client.as_fd()),
            Side::Backend => self.backend.as_ref().map(AsFd::as_fd),
        }
    }

    /// One direction's state.
    pub fn flow(&mut self, dir: Dir) -> &mut FlowIo {
        &mut self.flows[dir.index()]
    }
}
