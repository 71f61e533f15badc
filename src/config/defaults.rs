//! Every default value, named and documented once.

use std::time::Duration;

/// One connect attempt may take this long before the next candidate is tried.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection idle in both directions this long is closed (HAProxy `timeout client/server`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// `timeouts.client_fin` and `timeouts.server_fin` have no constant of their own: left out,
/// each is the idle timeout (as HAProxy's `timeout client-fin` defaults to `timeout client`),
/// so a half-closed connection lives exactly as long as before unless they are set. A shorter
/// fixed default would cut legitimate exchanges such as a client that sends its request, shuts
/// down its write side and waits minutes for the answer.
/// After SIGTERM/SIGINT/SIGQUIT, established connections may finish for this long.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Further backends tried after a failed connect.
pub const DEFAULT_RETRIES: u32 = 2;
/// listen(2) backlog; the kernel caps it at `net.core.somaxconn`.
pub const DEFAULT_BACKLOG: u32 = 4096;
/// Submission queue entries per worker ring.
pub const DEFAULT_RING_ENTRIES: u32 = 4096;
/// Buffers per worker in the provided-buffer ring.
pub const DEFAULT_BUFFER_COUNT: u32 = 4096;
/// Size of one provided buffer: 16 KiB, one TSO-friendly chunk.
pub const DEFAULT_BUFFER_SIZE: u32 = 16 * 1024;
/// Pipe capacity for splice forwarding.
pub const DEFAULT_PIPE_SIZE: u32 = 256 * 1024;
/// Idle pipes kept per worker.
pub const DEFAULT_PIPE_POOL: u32 = 256;
/// Pipes per worker, in use and idle together: 2,048 pipes are 4,096 fds and, at the default
/// 256 KiB `pipe_size`, at most 512 MiB of unswappable kernel memory per worker (1,024
/// connections splicing both ways). Directions that find no pipe forward by copy.
pub const DEFAULT_MAX_PIPES: u32 = 2048;
/// Send rings per worker for send bundles: enough for this many directions sending at once
/// (one page each, touched only when first used); beyond it, sends use `sendmsg`.
pub const DEFAULT_SEND_RINGS: u32 = 1024;
/// io-wq threads per ring, bounded and unbounded each.
pub const DEFAULT_IOWQ_MAX_WORKERS: u32 = 4;
/// Connections per worker (`tuning.max_connections`, the size of a worker's slot table; the
/// blocking engine has one table for all). The process-wide `max_connections` has no fixed
/// default: it is derived from `RLIMIT_NOFILE` (see `config::fd_budget`).
pub const DEFAULT_WORKER_MAX_CONNECTIONS: u32 = 65_536;
/// Maglev table size for pools of up to 256 backends (prime). Larger pools get the smallest
/// prime ≥ 65537·2ᵏ that leaves at least 256 slots per backend (see `core::balance::maglev`):
/// at 100 slots per backend, removing one backend measurably moved more than 1% of the other
/// clients.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = crate::core::balance::maglev::BASE_TABLE_SIZE;
/// TCP keepalive on client sockets (`tcp.client_keepalive`): on, so that a client that
/// vanished (power loss, a NAT or firewall that dropped the flow) is found without waiting for
/// the idle timeout, and long idle timeouts stay safe.
pub const DEFAULT_CLIENT_KEEPALIVE: bool = true;
/// TCP keepalive on backend sockets (`tcp.server_keepalive`): on, for the same reason.
pub const DEFAULT_SERVER_KEEPALIVE: bool = true;
/// Idle time before the first keepalive probe (`TCP_KEEPIDLE`; the kernel's default is 2 h).
/// With the interval and count below a dead peer is found about 2 minutes after it was last
/// heard from, well within the default idle timeout, for one small packet per idle connection
/// and minute.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between unanswered keepalive probes (`TCP_KEEPINTVL`).
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`).
pub const DEFAULT_KEEPALIVE_COUNT: u32 = 6;
/// `TCP_USER_TIMEOUT` on both sides: zero, the kernel's own behaviour (about 15 minutes of
/// retransmissions with `tcp_retries2 = 15`). Linux applies the user timeout to zero-window
/// probing too, so a live client that merely stops reading while it keeps sending would be cut
/// after it, even with a longer idle timeout; a stuck peer that sends nothing is cut by the
/// idle timeout anyway. Set it where unacknowledged data must fail faster.
pub const DEFAULT_USER_TIMEOUT: Duration = Duration::ZERO;
/// The admin API's Unix socket (`admin.socket`, `--admin-socket`). Its directory is created
/// when missing; when another live ringlb already holds it, the admin socket is left off with
/// a warning, so that several instances can run on one host.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/ringlb/admin.sock";

/// `[pool.health] interval`: as HAProxy's `inter`.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// `[pool.health] timeout`.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// `[pool.health] rise`: as HAProxy's.
pub const DEFAULT_HEALTH_RISE: u32 = 2;
/// `[pool.health] fall`: as HAProxy's.
pub const DEFAULT_HEALTH_FALL: u32 = 3;
/// `[pool.health] path` of an `http` check.
pub const DEFAULT_HEALTH_PATH: &str = "/";
/// `[pool.health] expect` of an `http` check.
pub const DEFAULT_HEALTH_HTTP_EXPECT: &str = "2xx";
/// `slow_start`: off.
pub const DEFAULT_SLOW_START: Duration = Duration::ZERO;
/// `max_fails`: passive checks off.
pub const DEFAULT_MAX_FAILS: u32 = 0;
/// `fail_timeout`: as nginx's.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// `queue_size`: clients that may wait for a backend slot or an admission token, per pool.
pub const DEFAULT_QUEUE_SIZE: u32 = 1024;
/// `queue_timeout`: as HAProxy's `timeout queue` defaults to its connect timeout.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = DEFAULT_CONNECT_TIMEOUT;
/// `admission_burst` defaults to `admission_rate / DEFAULT_ADMISSION_BURST_DIVISOR` (at
/// least 1): a tenth of a second's worth of clients at once.
pub const DEFAULT_ADMISSION_BURST_DIVISOR: u32 = 10;
/// `inspect_timeout`: HAProxy's usual `tcp-request inspect-delay`. A client has this long to
/// send its PROXY header or ClientHello; a slow or silent one holds a connection no longer.
pub const DEFAULT_INSPECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `affinity_ttl`: half an hour, a common stick-table `expire`.
pub const DEFAULT_AFFINITY_TTL: Duration = Duration::from_secs(30 * 60);
/// `affinity_max_entries`: about 10 MB of table per pool.
pub const DEFAULT_AFFINITY_MAX_ENTRIES: u32 = 100_000;
/// `udp_idle_timeout`: a UDP flow (one client address and port) with no datagram either way
/// for this long ends, and its socket to the backend is closed. 30 s, as common NAT and
/// conntrack UDP timeouts, outlasts a request and its answers without holding sockets of
/// clients long gone.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `udp_max_flows`: flows per worker per UDP listener, each holding one connected UDP socket
/// (a file descriptor, counted in the budget of `config::fd_budget`); when the table is full
/// the least recently used flow is evicted.
pub const DEFAULT_UDP_MAX_FLOWS: u32 = 4096;

/// `rcvbuf` of a UDP listener: the receive buffer of each worker's socket. The kernel's default
/// (`net.core.rmem_default`, 208 KiB) holds about 150 full-size datagrams, which a burst from
/// 1,024 clients overflows (7 % loss in the e2e harness's udp-rr-1024); 4 MiB holds a burst of
/// thousands and costs memory only while datagrams wait.
pub const DEFAULT_UDP_RCVBUF: u32 = 4 * 1024 * 1024;
