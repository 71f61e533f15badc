//! The bounds that validation enforces, each with the reason for it.

/// Largest `max_fails`.
pub const MAX_MAX_FAILS: u32 = 1_000_000;
/// Most retries per pool: a pick carries at most 8 candidates (the first and 7 fallbacks).
pub const MAX_RETRIES: u32 = 7;
/// Largest backend weight; keeps weight sums of large pools far from overflow.
pub const MAX_WEIGHT: u32 = 65_535;
/// Most backends in one pool; a Maglev table (65 537 entries) must be larger than the pool.
pub const MAX_BACKENDS_PER_POOL: usize = 65_536;
/// Most workers; far above any core count this is meant for, and it catches typos.
pub const MAX_WORKERS: usize = 1024;
/// Largest listen(2) backlog accepted (the kernel caps it at `net.core.somaxconn` anyway).
pub const MAX_BACKLOG: u32 = 1 << 20;
/// Smallest submission queue: a connect and its linked timeout are queued together, as a chain
/// of 2 entries that must go to the kernel in one submit (see `Ring::push_chain`), and no
/// chain is longer. With 1 entry the first client's connect could never be queued.
pub const MIN_RING_ENTRIES: u32 = 2;
/// Largest submission queue (the kernel's `IORING_MAX_ENTRIES`).
pub const MAX_RING_ENTRIES: u32 = 32_768;
/// Most buffers in a provided-buffer ring (the kernel's limit for one buffer group ring).
pub const MAX_BUFFER_COUNT: u32 = 32_768;
/// Largest provided buffer.
pub const MAX_BUFFER_SIZE: u32 = 16 << 20;
/// Most memory in one worker's provided buffers (`buffer_count × buffer_size`).
pub const MAX_BUFFER_MEMORY: u64 = 1 << 30;
/// Smallest pipe: one page; the kernel rounds pipe sizes up to a power-of-two page count.
pub const MIN_PIPE_SIZE: u32 = 4096;
/// Largest pipe asked for. Unprivileged processes are further limited by
/// `/proc/sys/fs/pipe-max-size` (1 MiB by default), which the engine reports at run time.
pub const MAX_PIPE_SIZE: u32 = 1 << 30;
/// Most idle pipes kept per worker (0 keeps none).
pub const MAX_PIPE_POOL: u32 = 65_536;
/// Most pipes per worker (`tuning.max_pipes`): 2 fds each, so this is already far beyond a
/// usual `RLIMIT_NOFILE`; 0 allows none (every direction copies).
pub const MAX_PIPES: u32 = 1 << 20;
/// Most send rings per worker (each is a buffer group; group ids are 16 bits).
pub const MAX_SEND_RINGS: u32 = 4096;
/// Most io-wq workers per ring.
pub const MAX_IOWQ_WORKERS: u32 = 4096;
/// Most connections per worker (`tuning.max_connections`); the slot table is sized for this
/// up front.
pub const MAX_WORKER_CONNECTIONS: u32 = 1 << 24;
/// Most connections in the whole process (`max_connections`): at two descriptors each, more
/// would pass Linux's ceiling on `fs.nr_open` (about 2³¹).
pub const MAX_PROCESS_CONNECTIONS: u32 = 1 << 30;
/// Descriptors one connection holds: its client socket and its backend socket.
pub const FDS_PER_CONNECTION: u64 = 2;
/// Descriptors one pipe holds (splice and auto modes): its two ends.
pub const FDS_PER_PIPE: u64 = 2;
/// Descriptors set aside for the process as a whole: stdin, stdout, stderr, the signal
/// thread, logging, the files `check` and `run` read at start, with margin.
pub const FD_RESERVE_PROCESS: u64 = 32;
/// Descriptors set aside for each worker besides its listeners: its io_uring or epoll
/// instance, the sockets of a connect in progress before its slot owns them, with margin.
pub const FD_RESERVE_PER_WORKER: u64 = 8;
/// Longest keepalive idle time and probe interval: the kernel's `MAX_TCP_KEEPIDLE` and
/// `MAX_TCP_KEEPINTVL` (32767 s). Both are whole seconds, at least 1.
pub const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// Most keepalive probes: the kernel's `MAX_TCP_KEEPCNT`.
pub const MAX_KEEPALIVE_COUNT: u32 = 127;
/// Shortest `[pool.health] interval`: checks faster than ten a second per backend load the
/// backends and the checker thread for no gain in detection time worth having.
pub const MIN_HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// Largest `rise` and `fall`: at the shortest interval, 100 checks are still only 10 s; more
/// is a typo rather than a policy.
pub const MAX_HEALTH_RISE_FALL: u32 = 100;
/// Longest `send` of a send-expect check: it is written once per check, in one piece.
pub const MAX_HEALTH_SEND: usize = 4096;
/// Longest `expect` of a send-expect check: well under the 4 KiB the checker reads of an
/// answer, so a matching answer always fits.
pub const MAX_HEALTH_EXPECT: usize = 1024;
/// Longest `path` of an http check.
pub const MAX_HEALTH_PATH: usize = 1024;
/// Largest `queue_size`: each waiting client holds a descriptor and a connection slot.
pub const MAX_QUEUE_SIZE: u32 = 1 << 20;
/// Longest `queue_timeout`: a client waiting longer has long given up.
pub const MAX_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
/// Longest `inspect_timeout`: a client that has not sent its PROXY header or its ClientHello
/// within an hour is not going to.
pub const MAX_INSPECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
/// Largest `admission_rate` and `admission_burst`, per second: far above what one machine
/// accepts.
pub const MAX_ADMISSION_RATE: u32 = 10_000_000;
/// Longest `affinity_ttl`: a day; longer is a typo rather than a policy.
pub const MAX_AFFINITY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Most `affinity_max_entries`: about 1.6 GB of table, far beyond a sensible pool.
pub const MAX_AFFINITY_MAX_ENTRIES: u32 = 1 << 24;
/// Longest `udp_idle_timeout`: an hour; a flow silent for longer is gone.
pub const MAX_UDP_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most `udp_responses`: a limit that high is no limit; leave the key out instead.
pub const MAX_UDP_RESPONSES: u32 = 1 << 20;
/// Most `udp_max_flows`: one descriptor each, per worker and UDP listener, so already far
/// beyond a usual `RLIMIT_NOFILE`.
pub const MAX_UDP_MAX_FLOWS: u32 = 1 << 20;

/// Smallest UDP listener `rcvbuf`: the kernel doubles what it is given and never goes below
/// 2,304 bytes anyway.
pub const MIN_UDP_RCVBUF: u32 = 4096;
/// Largest UDP listener `rcvbuf`, per worker's socket.
pub const MAX_UDP_RCVBUF: u32 = 512 * 1024 * 1024;
