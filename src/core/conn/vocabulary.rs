//! What the connection state machine and an engine say to each other: the sides and
//! directions of a connection, the events an engine reports, the actions it carries out, why a
//! connection closed, and the limits it runs under.

use std::time::Duration;

use crate::core::backend::BackendId;
pub use crate::core::inspect::Refusal;
pub use crate::core::proxy_header::ProxyVersion;

/// One end of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The accepted socket.
    Client,
    /// The socket connected to the chosen backend.
    Backend,
}

/// A direction of data flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to backend.
    Upstream,
    /// Backend to client.
    Downstream,
}

impl Dir {
    /// Both directions, upstream first.
    pub const BOTH: [Dir; 2] = [Dir::Upstream, Dir::Downstream];

    /// The side bytes of this direction are read from.
    pub fn source(self) -> Side {
        match self {
            Dir::Upstream => Side::Client,
            Dir::Downstream => Side::Backend,
        }
    }

    /// The side bytes of this direction are written to.
    pub fn sink(self) -> Side {
        match self {
            Dir::Upstream => Side::Backend,
            Dir::Downstream => Side::Client,
        }
    }

    /// 0 for upstream, 1 for downstream: an index into per-direction arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a direction moves its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// Through user-space buffers.
    Copy,
    /// Through a pipe, with splice.
    Splice,
}

/// How a listener moves bytes between client and backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Receive into user-space buffers and send them on.
    Copy,
    /// Zero-copy socket → pipe → socket.
    Splice,
    /// Copy for small exchanges; switch a direction to splice once it streams bulk data.
    #[default]
    Auto,
}

/// What the engine reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The backend connection is established.
    Connected,
    /// The current connect attempt failed (refused, unreachable, or timed out).
    ConnectFailed {
        /// The attempt ran out of time rather than being refused.
        timed_out: bool,
    },
    /// `bytes` (> 0) more bytes of `dir` are held by the engine, ready to send.
    Received { dir: Dir, bytes: u64, armed: bool },
    /// The receive operation of `dir` ended without data (cancelled, or out of buffers).
    RecvEnded { dir: Dir },
    /// The engine could not get a pipe for `dir`'s `Recv { via: Splice }` (the worker's pipe
    /// limit, or the kernel refused or shrank one). That receive has ended without data; the
    /// direction forwards by copy from now on, and asks for a pipe again (in `splice` mode as
    /// in `auto`) once it has streamed bulk data for a while, as `auto` switches.
    SpliceUnavailable { dir: Dir },
    /// The source of `dir` reached end of stream; its receive operation has ended.
    Eof { dir: Dir },
    /// `bytes` of `dir`'s queue were written to its sink (possibly fewer than were queued).
    Sent { dir: Dir, bytes: u64 },
    /// A socket on `side` failed (reset, broken pipe, any other error), for `failure`.
    Failed { side: Side, failure: Failure },
    /// The whole preamble asked for by `SendPreamble` was written.
    PreambleSent,
}

/// Why a socket failed, as the engine saw it: the cause a reset is logged and counted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The operating system reported this error number on the socket.
    Os(i32),
    /// The socket took no more bytes (a send that wrote 0).
    ZeroWrite,
    /// The engine could not carry the connection on: a resource it could not get (a thread,
    /// a pipe, a registration) or its own accounting found inconsistent (logged as an error).
    Local,
}

impl Failure {
    /// `ECONNRESET` or `EPIPE`: the peer reset the connection (or is gone).
    pub fn peer_reset(self) -> bool {
        matches!(self, Failure::Os(errno) if errno == ECONNRESET || errno == EPIPE)
    }
}

/// Linux error numbers the core names (it makes no system calls, so it takes them as data).
const ECONNRESET: i32 = 104;
const EPIPE: i32 = 32;

/// Why a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Both directions finished normally.
    Done,
    /// Every candidate backend failed to connect.
    NoBackend,
    /// The client side failed or reset.
    ClientFailed(Failure),
    /// The backend side failed or reset.
    BackendFailed(Failure),
    /// No traffic for the idle timeout.
    IdleTimeout,
    /// One direction had ended and nothing came from the other for the fin timeout of the
    /// side it waited on (`client_fin` for [`Side::Client`], `server_fin` for
    /// [`Side::Backend`]; see [`ConnParams::client_fin`]).
    FinTimeout(Side),
    /// The worker is shutting down and the grace period has ended.
    Aborted,
    /// The engine could not carry the connection on (see [`Failure::Local`]).
    Local,
    /// Every eligible backend was full and the waiting queue was full too (or there is none).
    QueueFull,
    /// The connection waited in the queue for its pool's `queue_timeout`.
    QueueTimeout,
    /// The inspect phase refused the client (see [`crate::core::inspect`]).
    Inspect(Refusal),
}

impl CloseReason {
    /// The failure behind a close for a failed socket.
    pub fn failure(self) -> Option<Failure> {
        match self {
            CloseReason::ClientFailed(f) | CloseReason::BackendFailed(f) => Some(f),
            CloseReason::Local => Some(Failure::Local),
            _ => None,
        }
    }
}

/// What the engine should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a socket to `backend` and connect it (closing any earlier backend socket first).
    Connect { backend: BackendId, attempt: u32 },
    /// Receive from the source of `dir` by `via`.
    Recv { dir: Dir, via: Via },
    /// Stop a still-armed (multishot) receive of `dir`; it reports `Received{armed: false}` or
    /// `RecvEnded` when it has stopped.
    CancelRecv { dir: Dir },
    /// Write `dir`'s queued bytes (`queued` of them) to its sink by `via`.
    Send { dir: Dir, via: Via, queued: u64 },
    /// The source of the opposite direction ended and everything was flushed: shut down
    /// writing toward `side`.
    ShutdownWrite { side: Side },
    /// Read what the client has sent (waiting until it has sent something), at most
    /// `Shard::inspect_room` bytes, and hand it to `Shard::inspected`; or report `Eof` or
    /// `Failed` for the upstream direction. Asked for only before a backend is picked.
    Inspect,
    /// Write the bytes `Shard::take_preamble` gives (a PROXY protocol header, the bytes the
    /// inspect phase read) to the backend, all of them and before anything else; report
    /// `PreambleSent` or `Failed`.
    SendPreamble,
    /// Close both sockets; with `reset`, abortively (SO_LINGER 0, so the peer sees RST).
    Close { reset: bool, reason: CloseReason },
}

/// Per-connection limits, fixed for its lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnParams {
    /// `Some`: the machine enforces it on its deadline. `None`: the engine enforces it itself
    /// (io_uring's linked timeout, a blocking connect timeout) and reports
    /// `ConnectFailed { timed_out: true }`.
    pub connect_timeout: Option<Duration>,
    pub idle_timeout: Duration,
    /// Half-closed toward the client: once ringlb has shut down writing toward the client (the
    /// backend's direction ended and all of it was sent on) while the client's direction is
    /// still open, this inactivity limit replaces `idle_timeout` (HAProxy's
    /// `timeout client-fin`). Traffic in the open direction resets it, as it does the idle
    /// timeout.
    pub client_fin: Duration,
    /// The same toward the backend: once writing toward the backend is shut down while the
    /// backend's direction is still open (HAProxy's `timeout server-fin`).
    pub server_fin: Duration,
    pub mode: Mode,
    /// Copy mode: receives pause while this many bytes of a direction wait to be sent.
    pub copy_high_water: u64,
    /// Splice mode: receives pause while this many bytes wait in the pipe (its capacity).
    pub splice_capacity: u64,
    /// Auto mode: a receipt at least this big counts as "full" (one provided buffer).
    pub full_receipt: u64,
    /// Auto mode: a direction whose receiving peer is on the loopback keeps copying (see
    /// [`crate::core::conn::Conn::peers_on_loopback`]).
    pub loopback_copy: bool,
}
