//! Every default value, named and documented once.

use std::time::Duration;

/// One connect attempt may take this long before the next candidate is tried.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection idle in both directions this long is closed (HAProxy `timeout client/server`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
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
/// Send rings per worker for send bundles: enough for this many directions sending at once
/// (one page each, touched only when first used); beyond it, sends use `sendmsg`.
pub const DEFAULT_SEND_RINGS: u32 = 1024;
/// io-wq threads per ring, bounded and unbounded each.
pub const DEFAULT_IOWQ_MAX_WORKERS: u32 = 4;
/// Connections per worker (blocking engine: in total).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 65_536;
/// Maglev table size for pools of up to 256 backends (prime). Larger pools get the smallest
/// prime ≥ 65537·2ᵏ that leaves at least 256 slots per backend (see `core::balance::maglev`):
/// at 100 slots per backend, removing one backend measurably moved more than 1% of the other
/// clients.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;
