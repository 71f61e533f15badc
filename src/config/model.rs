//! The validated configuration: what the engines read. Every value here has passed validation,
//! so engines never re-check it. Defaults are the `DEFAULT_*` constants in [`super::defaults`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::backend::BackendInfo;
use crate::core::balance::Algorithm;

pub use super::fd_budget::{ConnectionLimit, FdLimit, LimitOrigin};

/// Which I/O engine runs the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// io_uring, thread per core (the default).
    #[default]
    Uring,
    /// Edge-triggered epoll, thread per core.
    Epoll,
    /// One thread per connection with blocking sockets.
    Blocking,
}

/// How a listener moves bytes between client and backend (defined by the core, which
/// forwards by it).
pub use crate::core::conn::Mode;

/// How many workers to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Workers {
    /// One per CPU in the process's affinity mask.
    #[default]
    Auto,
    /// Exactly this many (at least 1).
    Count(usize),
}

/// A TCP listening address (`protocol = "tcp"`, the default) and where its connections go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    /// Index into [`Config::pools`].
    pub pool: usize,
    pub mode: Mode,
    /// listen(2) backlog.
    pub backlog: u32,
    /// `admission_rate` / `admission_burst`: new clients let through per second, process-wide;
    /// the rest wait in the pool's queue. `None`: as fast as they come.
    pub admission: Option<AdmissionRate>,
    /// `accept_proxy`: every client starts with a PROXY protocol v1 or v2 header, read and
    /// strictly validated before anything is forwarded; its source address is then the
    /// client's address. A client without a valid header is closed.
    pub accept_proxy: bool,
    /// `inspect_timeout`: how long a client may take to send what is read before a backend is
    /// picked (its PROXY header, its TLS ClientHello).
    pub inspect_timeout: Duration,
    /// `[[listener.route]]`: TLS server names sent to other pools than [`Listener::pool`],
    /// which stays the default. Empty: the ClientHello is not looked at.
    pub routes: Vec<Route>,
    /// `sni_fallback`: what happens to a client of a listener with routes that sends no
    /// usable ClientHello (not TLS, no server name, too big, or not within
    /// `inspect_timeout`).
    pub sni_fallback: SniFallback,
    /// `freebind`: bind with `IP_FREEBIND` (`IPV6_FREEBIND`), so that the address need not
    /// be on any interface of this node yet: a virtual address that keepalived moves here
    /// later, or that a BGP speaker announces.
    pub freebind: bool,
}

/// A UDP listener (`protocol = "udp"`): datagrams to `pool`, one flow per client address and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpListener {
    pub name: String,
    pub bind: SocketAddr,
    /// Index into [`Config::pools`].
    pub pool: usize,
    /// `rcvbuf`: bytes of receive buffer each worker's socket asks for.
    pub rcvbuf: u32,
    /// `freebind`: as [`Listener::freebind`].
    pub freebind: bool,
}

/// How a pool's UDP flows live (pool keys, used by UDP listeners only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFlows {
    /// `udp_idle_timeout`: a flow with no datagram either way for this long ends.
    pub idle_timeout: Duration,
    /// `udp_responses`: a flow ends after this many datagrams from its backend (DNS: 1). None: no limit.
    pub responses: Option<u32>,
    /// `udp_max_flows`: flows per worker per listener; when full the least recently used is evicted.
    pub max_flows: u32,
}

impl Default for UdpFlows {
    /// What validation gives when a pool has no `udp_*` key.
    fn default() -> Self {
        UdpFlows {
            idle_timeout: super::defaults::DEFAULT_UDP_IDLE_TIMEOUT,
            responses: None,
            max_flows: super::defaults::DEFAULT_UDP_MAX_FLOWS,
        }
    }
}

/// One `[[listener.route]]`: clients asking for `sni` go to `pool`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `sni`: a server name in lower case (`api.example.com`), or a wildcard for every name
    /// under a domain (`*.example.com`: `a.example.com`, `a.b.example.com`, not
    /// `example.com`). An exact name wins over a wildcard, and a longer wildcard over a
    /// shorter one.
    pub sni: String,
    /// Index into [`Config::pools`].
    pub pool: usize,
}

/// What `sni_fallback` does with a client whose server name cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SniFallback {
    /// `"default"`: send it to the listener's own pool, with what it sent (the default).
    #[default]
    Default,
    /// `"close"`: close the connection.
    Close,
}

/// A listener's admission rate: a token bucket of `burst` tokens refilled at `rate` a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionRate {
    /// `admission_rate`: new connections per second, at least 1.
    pub rate: u32,
    /// `admission_burst`: clients let through at once after a quiet spell, at least 1
    /// (default: a tenth of a second's worth, see `DEFAULT_ADMISSION_BURST_DIVISOR`).
    pub burst: u32,
}

/// A pool's waiting queue: where clients wait when every eligible backend is at its
/// `max_connections`, or when their listener's admission rate holds them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    /// `queue_size`: most clients waiting, process-wide; 0: none wait (turned away at once).
    pub size: u32,
    /// `queue_timeout`: longest wait, after which the client is turned away.
    pub timeout: Duration,
    /// `queue_close`: how a client is turned away.
    pub close: QueueClose,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            size: super::defaults::DEFAULT_QUEUE_SIZE,
            timeout: super::defaults::DEFAULT_QUEUE_TIMEOUT,
            close: QueueClose::Reset,
        }
    }
}

/// How the queue turns a client away (`queue_close`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum QueueClose {
    /// `"reset"`: an RST, at once (the default).
    #[default]
    Reset,
    /// `"fin"`: an orderly close. The kernel still answers with an RST if the client had
    /// sent bytes that were never read.
    Fin,
}

/// A named group of backends and how to choose among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    /// Backends in the order written; names are unique within the pool.
    pub backends: Vec<BackendInfo>,
    /// Further backends to try after a failed connect (so at most `retries + 1` attempts).
    pub retries: u32,
    /// `[pool.health]`: active checks of every backend, if any.
    pub health: Option<Health>,
    /// `slow_start`: a backend that comes back (up again, or ready again) ramps its weight
    /// from 1 to its own over this long; zero: at once.
    pub slow_start: Duration,
    /// `max_fails` failed connects within `fail_timeout` take a backend down (passive
    /// checks, as nginx's); 0: never.
    pub max_fails: u32,
    /// `fail_timeout`: the window of `max_fails`, and how long a backend taken down by them
    /// stays down when the pool has no active checks to bring it back.
    pub fail_timeout: Duration,
    /// `queue_size`, `queue_timeout`, `queue_close`.
    pub queue: Queue,
    /// `affinity = "source"` with `affinity_ttl` and `affinity_max_entries`; `None` for
    /// `affinity = "none"` (the default).
    pub affinity: Option<Affinity>,
    /// `udp_idle_timeout`, `udp_responses`, `udp_max_flows`: read by UDP listeners only.
    pub udp: UdpFlows,
}

/// Sticky sessions by client address (`affinity = "source"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// `affinity_ttl`: how long after its last connection a client keeps its backend.
    pub ttl: Duration,
    /// `affinity_max_entries`: most clients remembered (least recently seen evicted first).
    pub max_entries: u32,
}

/// `[pool.health]`: how and how often each backend of a pool is checked, off the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub check: Check,
    /// Time between the starts of two checks of one backend.
    pub interval: Duration,
    /// Limit of one check (connect, send and answer together); at most `interval`.
    pub timeout: Duration,
    /// Consecutive passes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Port to check instead of the backend's own (`port`).
    pub port: Option<u16>,
}

/// What one check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The connect alone.
    Tcp,
    /// Send `send` (may be empty: a banner is awaited), pass when the answer starts with
    /// `expect`.
    SendExpect { send: Vec<u8>, expect: Vec<u8> },
    /// `GET path` (HTTP/1.0, `Connection: close`); pass when the status matches `expect`.
    Http { path: String, expect: StatusMatch },
}

/// Which HTTP statuses pass an `http` check: `"2xx"` (a class) or `"204"` (exactly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMatch {
    /// The hundreds digit: 2 for `2xx`.
    Class(u16),
    Exact(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Class(class) => status / 100 == class,
            StatusMatch::Exact(exact) => status == exact,
        }
    }
}

/// Timeouts applied to every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Limit for one connect attempt to a backend.
    pub connect: Duration,
    /// A connection with no traffic in either direction for this long is closed.
    pub idle: Duration,
    /// Once ringlb has shut down writing toward the client while the client's direction is
    /// still open, the inactivity limit instead of `idle` (HAProxy's `timeout client-fin`).
    pub client_fin: Duration,
    /// Once ringlb has shut down writing toward the backend while the backend's direction is
    /// still open, the inactivity limit instead of `idle` (HAProxy's `timeout server-fin`).
    pub server_fin: Duration,
    /// After SIGTERM/SIGINT/SIGQUIT, how long established connections may continue.
    pub shutdown_grace: Duration,
}

/// TCP keepalive on one side's sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keepalive {
    /// No keepalive probes (`SO_KEEPALIVE` off).
    Off,
    /// `SO_KEEPALIVE` with these probe timings.
    On(KeepaliveProbes),
}

/// When keepalive probes go out and when the peer counts as dead: after `idle` without
/// traffic, a probe every `interval`, dropped after `count` unanswered probes. The kernel
/// counts in whole seconds; validation guarantees `idle` and `interval` are such.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveProbes {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

/// Socket options for the sockets of one side (clients, or backends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    pub keepalive: Keepalive,
    /// `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged before the connection
    /// is dropped. `None` leaves the kernel's behaviour.
    pub user_timeout: Option<Duration>,
}

/// TCP socket options, per side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcp {
    /// Accepted sockets (set on the listening sockets, which they inherit them from).
    pub client: SocketOptions,
    /// Sockets connected to backends.
    pub server: SocketOptions,
}

impl Default for Tcp {
    /// What validation gives when `[tcp]` is left out.
    fn default() -> Self {
        use super::defaults::*;
        let probes = KeepaliveProbes {
            idle: DEFAULT_KEEPALIVE_IDLE,
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            count: DEFAULT_KEEPALIVE_COUNT,
        };
        let side = |on: bool| SocketOptions {
            keepalive: if on {
                Keepalive::On(probes)
            } else {
                Keepalive::Off
            },
            user_timeout: (!DEFAULT_USER_TIMEOUT.is_zero()).then_some(DEFAULT_USER_TIMEOUT),
        };
        Tcp {
            client: side(DEFAULT_CLIENT_KEEPALIVE),
            server: side(DEFAULT_SERVER_KEEPALIVE),
        }
    }
}

/// Kernel features that can be switched off so that every fallback path can be exercised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Multishot accept and multishot recv (off: single-shot operations).
    pub multishot: bool,
    /// Provided-buffer rings for copy mode (off: one buffer per connection direction).
    pub buffer_ring: bool,
    /// Send bundles (6.10) where the kernel has them.
    pub send_bundle: bool,
    /// SINGLE_ISSUER + DEFER_TASKRUN where the kernel has them (off: COOP_TASKRUN only).
    pub defer_taskrun: bool,
    /// Splice mode: wait for readiness in the ring and splice with direct calls (off:
    /// `IORING_OP_SPLICE`, which the kernel runs on io-wq threads).
    pub inline_splice: bool,
    /// Copy mode with a provided-buffer ring: the ring holds only a window of the free
    /// buffers, the most recently used first, so receives land in memory still in the caches
    /// (off: every free buffer is in the ring, and each is reused after all the others).
    pub hot_buffers: bool,
    /// Auto mode: a direction toward a peer on the loopback keeps copying instead of
    /// switching to splice (off, the default: bulk data splices whatever the peer; measured
    /// better for one stream, worse for several, see kernel-notes.md).
    pub loopback_copy: bool,
    /// io_uring engine: half-close with a direct `shutdown(2)` (off: `IORING_OP_SHUTDOWN`,
    /// which the kernel always runs on an io-wq thread).
    pub inline_shutdown: bool,
}

/// Sizes of per-worker resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Submission queue entries per ring (power of two).
    pub ring_entries: u32,
    /// Buffers in each worker's provided-buffer ring (power of two).
    pub buffer_count: u32,
    /// Bytes per provided buffer.
    pub buffer_size: u32,
    /// Pipe capacity for splice, set with F_SETPIPE_SZ.
    pub pipe_size: u32,
    /// Most idle pipes each worker keeps for reuse.
    pub pipe_pool: u32,
    /// Most pipes each worker holds, in use and idle together; a direction that would splice
    /// beyond it forwards by copy.
    pub max_pipes: u32,
    /// Send rings per worker for send bundles (copy mode); 0 sends with `sendmsg` only.
    pub send_rings: u32,
    /// Cap on io-wq worker threads per ring (bounded and unbounded alike).
    pub iowq_max_workers: u32,
    /// Most connections per worker: the size of its slot table (the blocking engine has one
    /// table for all). A full worker stops accepting; the process-wide limit is
    /// [`Config::connections`].
    pub max_connections: u32,
}

/// Where the admin API's Unix socket is, and whether that path was chosen by the operator:
/// the startup rules differ (see `control::server`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminSocket {
    /// `socket = ""` or `--admin-socket ""`: no Unix socket.
    Off,
    /// Left out: [`super::defaults::DEFAULT_ADMIN_SOCKET`]. Held by another live process, it
    /// is skipped with a warning.
    Default(PathBuf),
    /// Given in the file or on the command line. Failing to bind it is a startup error.
    Given(PathBuf),
}

impl AdminSocket {
    /// The path, unless the socket is off.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            AdminSocket::Off => None,
            AdminSocket::Default(path) | AdminSocket::Given(path) => Some(path),
        }
    }
}

/// `[admin]`: how the admin API (`ringlb ctl`, `/metrics`, `/health`) is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    pub socket: AdminSocket,
    /// Optional TCP address of the same API.
    pub listen: Option<SocketAddr>,
    /// Bearer token required on TCP requests when set; required by validation when `listen`
    /// is not a loopback address. Never printed.
    pub token: Option<String>,
}

impl Default for Admin {
    /// What validation gives when `[admin]` is left out.
    fn default() -> Self {
        Admin {
            socket: AdminSocket::Default(PathBuf::from(super::defaults::DEFAULT_ADMIN_SOCKET)),
            listen: None,
            token: None,
        }
    }
}

impl Admin {
    /// No admin API at all (the demo, tests that run the engine in-process).
    pub fn off() -> Self {
        Admin {
            socket: AdminSocket::Off,
            listen: None,
            token: None,
        }
    }
}

/// Where the access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error.
    Stderr,
    /// A file, appended to (created with mode 0640 if missing).
    File(PathBuf),
}

/// How an access-log line is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Space-separated fields, as HAProxy's tcplog.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[access_log]`, when on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLog {
    pub target: LogTarget,
    pub format: LogFormat,
}

/// The whole validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub engine: EngineKind,
    pub workers: Workers,
    /// CPUs to pin workers to, in order; `None` means the affinity mask in order.
    pub cpus: Option<Vec<usize>>,
    /// TCP listeners only, in the order written among them.
    pub listeners: Vec<Listener>,
    /// `[[listener]]` tables with `protocol = "udp"`, in the order written among them. Kept
    /// apart from [`Config::listeners`] so that TCP listener indices do not depend on them.
    pub udp_listeners: Vec<UdpListener>,
    pub pools: Vec<Pool>,
    pub timeouts: Timeouts,
    pub tcp: Tcp,
    pub features: Features,
    pub tuning: Tuning,
    /// The process-wide `max_connections` and the file descriptors it needs.
    pub connections: ConnectionLimit,
    /// The admin API.
    pub admin: Admin,
    /// The access log, if on.
    pub access_log: Option<AccessLog>,
}
