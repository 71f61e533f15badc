//! The command line: clap definitions and the glue from flags to [`Overrides`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ringlb::config::quick::parse_workers;
use ringlb::config::raw::LogFormatName;
use ringlb::config::raw::{AlgorithmName, EngineName, ModeName, ProtocolName, RawWorkers};
use ringlb::config::{BackendSpec, HealthCheckSpec, Overrides};
use ringlb::control::AdminState;
use ringlb::control::ctl::CtlCommand;

/// ringlb: an L4 TCP load balancer for Linux on io_uring.
///
/// Configure it with a TOML file (`--config`), or for a quick start with `--listen` and one or
/// more `--backend`. Logging goes to stderr; set its level with RINGLB_LOG (default: info;
/// `demo` logs nothing unless it is set), for example RINGLB_LOG=debug or
/// RINGLB_LOG=ringlb=trace.
#[derive(Debug, Parser)]
#[command(name = "ringlb", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration and print a summary of it (exit status 1 on any error).
    Check {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Flags that override the file.
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Run the load balancer until SIGTERM, SIGINT or SIGQUIT.
    Run(RunArgs),
    /// Report the kernel features ringlb probes and which of them it will use.
    Doctor,
    /// Run a self-contained demo: local backends, ringlb in front, a short bounded load. It
    /// prints its report alone; set RINGLB_LOG (such as info) to see the engine's logs too.
    Demo(DemoArgs),
    /// Talk to a running ringlb through its admin API: show counters, drain or re-weight a
    /// backend, add or remove one, switch a listener. Exit status 0 on success; otherwise
    /// non-zero with the reason on stderr. Changes last until ringlb restarts: write them to
    /// the configuration file to keep them.
    Ctl(CtlArgs),
}

/// `ringlb ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The admin Unix socket [default: /run/ringlb/admin.sock].
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    pub socket: Option<PathBuf>,
    /// The admin API over TCP instead, such as http://127.0.0.1:9900.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token, for an admin TCP address that requires one [default: the
    /// RINGLB_ADMIN_TOKEN environment variable, which keeps it out of the process list].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlSubcommand,
}

/// The parts `ringlb ctl show` can show on their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowWhat {
    /// The waiting queues: each client's pool, place in line, address and wait so far.
    Queue,
    /// The sticky-session tables: each remembered client's backend and idle time.
    Affinity,
}

/// The `ringlb ctl` commands.
#[derive(Debug, Subcommand)]
pub enum CtlSubcommand {
    /// Listeners, backends (state, weights, connections, bytes) and workers; `show queue`:
    /// every client waiting in a queue, with its place in line and how long it has waited;
    /// `show affinity`: the clients each sticky pool remembers, and their backends.
    Show {
        /// What to show instead of the whole picture.
        #[arg(value_enum)]
        what: Option<ShowWhat>,
        /// Print the API's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Set a backend's state or weight: set POOL/BACKEND state ready|drain|maint, or
    /// set POOL/BACKEND weight N.
    Set {
        /// POOL/BACKEND; a backend is named by its name, or by its address when it has none.
        #[arg(value_name = "POOL/BACKEND")]
        target: String,
        /// What to set.
        #[command(subcommand)]
        what: SetWhat,
    },
    /// Add a backend to a pool, ready: SPEC as for --backend,
    /// ADDR[,weight=N][,name=NAME][,max_connections=N].
    Add {
        /// The pool (the quick form's is called backends).
        pool: String,
        /// ADDR[,weight=N][,name=NAME][,max_connections=N].
        spec: String,
    },
    /// Remove a backend: it drains, and is forgotten once its connections have ended.
    Remove {
        /// POOL/BACKEND.
        #[arg(value_name = "POOL/BACKEND")]
        target: String,
    },
    /// Accept new connections on a listener again (by name or bind address).
    Enable {
        /// The listener's name or bind address.
        listener: String,
    },
    /// Stop accepting new connections on a listener; open connections go on.
    Disable {
        /// The listener's name or bind address.
        listener: String,
    },
    /// Re-read the configuration file and apply it without dropping a connection; prints
    /// what changed and what needs a restart.
    Reload,
    /// Exit 0 when ringlb is healthy (every listener accepting, none disabled, a ready backend
    /// in every pool); for keepalived's track_script and a BGP speaker's export condition.
    Health,
}

/// `ringlb ctl set POOL/BACKEND …`.
#[derive(Debug, Subcommand)]
pub enum SetWhat {
    /// ready (takes connections), drain (no new ones, open ones go on), maint (none).
    State {
        /// The state.
        #[arg(value_enum)]
        state: AdminState,
    },
    /// Relative weight, 1 to 65535.
    Weight {
        /// The weight.
        weight: u32,
    },
}

impl CtlSubcommand {
    /// The library's form of the command.
    pub fn to_command(&self) -> CtlCommand {
        match self {
            CtlSubcommand::Show { what: None, json } => CtlCommand::Show { json: *json },
            CtlSubcommand::Show {
                what: Some(ShowWhat::Queue),
                json,
            } => CtlCommand::ShowQueue { json: *json },
            CtlSubcommand::Show {
                what: Some(ShowWhat::Affinity),
                json,
            } => CtlCommand::ShowAffinity { json: *json },
            CtlSubcommand::Set { target, what } => match what {
                SetWhat::State { state } => CtlCommand::SetState {
                    target: target.clone(),
                    state: *state,
                },
                SetWhat::Weight { weight } => CtlCommand::SetWeight {
                    target: target.clone(),
                    weight: *weight,
                },
            },
            CtlSubcommand::Add { pool, spec } => CtlCommand::Add {
                pool: pool.clone(),
                spec: spec.clone(),
            },
            CtlSubcommand::Remove { target } => CtlCommand::Remove {
                target: target.clone(),
            },
            CtlSubcommand::Enable { listener } => CtlCommand::Listener {
                listener: listener.clone(),
                enabled: true,
            },
            CtlSubcommand::Disable { listener } => CtlCommand::Listener {
                listener: listener.clone(),
                enabled: false,
            },
            CtlSubcommand::Reload => CtlCommand::Reload,
            CtlSubcommand::Health => CtlCommand::Health,
        }
    }
}

/// `ringlb run`: a configuration file, or the quick form.
#[derive(Debug, Args)]
#[group(id = "source", required = true, multiple = false, args = ["config", "listen"])]
pub struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Quick form: the address to listen on, such as 0.0.0.0:8080 or [::]:8080.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "config",
        requires = "backend"
    )]
    pub listen: Option<String>,
    /// Quick form: a backend, ADDR[,weight=N][,name=NAME][,max_connections=N] such as
    /// 127.0.0.1:9001,weight=3,name=a. max_connections (1 to 1073741824) caps the connections
    /// open to it at once; clients beyond it wait in the queue. Repeat for more backends.
    #[arg(long, value_name = "SPEC", requires = "listen")]
    pub backend: Vec<BackendSpec>,
    /// Binary upgrade: take the listening sockets over from the running ringlb whose admin
    /// socket is PATH (no client in an accept queue is reset); once this one runs, the old
    /// one stops accepting and drains.
    #[arg(long, value_name = "PATH")]
    pub upgrade_from: Option<PathBuf>,
    /// Flags that override the file, or complete the quick form.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// Settings that can be given as flags, with `--config` or in the quick form.
#[derive(Debug, Args)]
pub struct OverrideArgs {
    /// I/O engine [default: uring].
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Option<EngineName>,
    /// Transport protocol, for every listener: tcp (connections) or udp (datagrams, one flow
    /// per client address and port, each with a connected socket to its backend). A UDP
    /// listener takes none of the TCP flags (--mode, --accept-proxy, --inspect-timeout,
    /// --admission-rate, --admission-burst, --send-proxy) [default: tcp].
    #[arg(long, value_enum, value_name = "PROTOCOL")]
    pub protocol: Option<ProtocolName>,
    /// Forwarding mode, for every TCP listener [default: auto].
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<ModeName>,
    /// Balancing algorithm, for every pool [default: round-robin].
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub algorithm: Option<AlgorithmName>,
    /// Worker threads: a number, or auto for one per CPU in the affinity mask [default: auto].
    #[arg(long, value_name = "N|auto", value_parser = parse_workers)]
    pub workers: Option<RawWorkers>,
    /// CPUs to pin workers to, in order, such as 0,1 [default: the affinity mask].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Further backends to try after a failed connect, for every pool (at most 7) [default: 2].
    #[arg(long, value_name = "N")]
    pub retries: Option<i64>,
    /// Active health checks for every pool: tcp (the connect), http (GET /) or http:/PATH
    /// (expecting 2xx unless the file says otherwise); replaces the file's check
    /// [default: none, or the file's [pool.health]].
    #[arg(long, value_name = "tcp|http[:/PATH]")]
    pub health_check: Option<HealthCheckSpec>,
    /// Time between two checks of one backend, at least 100ms; without --health-check (and
    /// no [pool.health]) it turns on tcp checks [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Consecutive passed checks that bring a down backend up, 1 to 100; without
    /// --health-check (and no [pool.health]) it turns on tcp checks [default: 2].
    #[arg(long, value_name = "N")]
    pub rise: Option<i64>,
    /// Consecutive failed checks that take a backend down, 1 to 100; without --health-check
    /// (and no [pool.health]) it turns on tcp checks [default: 3].
    #[arg(long, value_name = "N")]
    pub fall: Option<i64>,
    /// Sticky sessions for every pool: turns on affinity = "source" with this TTL, how long
    /// after its last connection a client keeps its backend (above zero, at most 24h); the
    /// quick form has no other way to turn them on [default: the file's, or off].
    #[arg(long, value_name = "DURATION")]
    pub affinity_ttl: Option<String>,
    /// Send every backend a PROXY protocol header (v1: text, v2: binary) before the client's
    /// bytes, so that it sees the client's address; with --protocol udp, v2 only, ahead of
    /// every datagram; over a file with UDP listeners, for the pools none of them uses
    /// [default: the file's, or none].
    #[arg(long, value_name = "VERSION")]
    pub send_proxy: Option<ringlb::config::raw::ProxyName>,
    /// UDP: a flow with no datagram either way for this long ends, for every pool: above
    /// zero, at most 1h [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub udp_idle_timeout: Option<String>,
    /// UDP: a flow ends after this many datagrams from its backend, for every pool, 1 to
    /// 1048576 (1 for DNS) [default: no limit].
    #[arg(long, value_name = "N")]
    pub udp_responses: Option<i64>,
    /// UDP: flows per worker and listener, for every pool, 1 to 1048576; when the table is
    /// full the least recently used flow is evicted. Each flow holds a file descriptor
    /// [default: 16384].
    #[arg(long, value_name = "N")]
    pub udp_max_flows: Option<i64>,
    /// Clients that may wait, for every pool, when every backend is at its max_connections or
    /// a listener's admission rate holds them back: 0 to 1048576; 0 turns them away at once
    /// [default: 1024].
    #[arg(long, value_name = "N")]
    pub queue_size: Option<i64>,
    /// Longest wait in a pool's queue before the client is turned away, for every pool:
    /// above zero, at most 1h [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub queue_timeout: Option<String>,
    /// New connections let through per second, for every TCP listener, 1 to 10000000; the rest
    /// wait in their pool's queue [default: no limit].
    #[arg(long, value_name = "N")]
    pub admission_rate: Option<i64>,
    /// Clients let through at once after a quiet spell, for every TCP listener, 1 to 10000000;
    /// needs an admission rate (--admission-rate or the file's) [default: a tenth of the
    /// rate, at least 1].
    #[arg(long, value_name = "N")]
    pub admission_burst: Option<i64>,
    /// Every TCP listener reads a PROXY protocol header (v1 or v2) from each client before
    /// anything else, and takes the client's address from it; a client without a valid one is
    /// closed. Only for listeners that nothing but trusted proxies reach [default: the file's,
    /// or off].
    #[arg(long)]
    pub accept_proxy: bool,
    /// How long a client may take to send what a listener reads before it picks a backend
    /// (its PROXY header, its TLS ClientHello), for every TCP listener: above zero, at most 1h
    /// [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub inspect_timeout: Option<String>,
    /// Limit for one connect attempt, such as 500ms or 2s [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Close a connection idle in both directions this long, such as 5m [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// After SIGTERM/SIGINT/SIGQUIT, let established connections run this long (a second
    /// signal cuts it short) [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Once ringlb has sent its FIN to the client (the backend finished), close if the client
    /// sends nothing for this long (HAProxy's timeout client-fin) [default: the idle timeout].
    #[arg(long, value_name = "DURATION")]
    pub client_fin: Option<String>,
    /// Once ringlb has sent its FIN to the backend (the client finished), close if the backend
    /// sends nothing for this long (HAProxy's timeout server-fin) [default: the idle timeout].
    #[arg(long, value_name = "DURATION")]
    pub server_fin: Option<String>,
    /// No TCP keepalive probes on client or backend sockets.
    #[arg(long)]
    pub no_keepalive: bool,
    /// Idle time before the first keepalive probe, whole seconds [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub keepalive_idle: Option<String>,
    /// Time between unanswered keepalive probes, whole seconds [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub keepalive_interval: Option<String>,
    /// Unanswered keepalive probes before a peer counts as dead, 1 to 127 [default: 6].
    #[arg(long, value_name = "N")]
    pub keepalive_count: Option<i64>,
    /// TCP_USER_TIMEOUT on client sockets; 0s keeps the kernel's [default: 0s].
    #[arg(long, value_name = "DURATION")]
    pub client_user_timeout: Option<String>,
    /// TCP_USER_TIMEOUT on backend sockets; 0s keeps the kernel's [default: 0s].
    #[arg(long, value_name = "DURATION")]
    pub server_user_timeout: Option<String>,
    /// Use single-shot accept and recv instead of multishot.
    #[arg(long)]
    pub no_multishot: bool,
    /// Use one buffer per connection direction instead of a provided-buffer ring.
    #[arg(long)]
    pub no_buffer_ring: bool,
    /// Do not use send bundles.
    #[arg(long)]
    pub no_send_bundle: bool,
    /// Do not use SINGLE_ISSUER + DEFER_TASKRUN (COOP_TASKRUN only).
    #[arg(long)]
    pub no_defer_taskrun: bool,
    /// Splice with IORING_OP_SPLICE (on io-wq threads) instead of direct calls on readiness.
    #[arg(long)]
    pub no_inline_splice: bool,
    /// Put every free receive buffer in the provided-buffer ring instead of a window of the
    /// most recently used ones.
    #[arg(long)]
    pub no_hot_buffers: bool,
    /// Auto mode: splice bulk data toward peers on the loopback too (by default a direction
    /// toward a local peer keeps copying: it costs the machine less, see kernel-notes.md).
    #[arg(long)]
    pub no_loopback_copy: bool,
    /// Half-close with IORING_OP_SHUTDOWN (on io-wq threads) instead of a direct shutdown(2).
    #[arg(long)]
    pub no_inline_shutdown: bool,
    /// Pipe capacity for splice, in bytes or such as 256KiB [default: 256KiB].
    #[arg(long, value_name = "BYTES")]
    pub pipe_size: Option<String>,
    /// Size of one receive buffer, in bytes or such as 16KiB [default: 16KiB].
    #[arg(long, value_name = "BYTES")]
    pub buffer_size: Option<String>,
    /// Send rings per worker for send bundles; 0 sends with sendmsg only [default: 1024].
    #[arg(long, value_name = "N")]
    pub send_rings: Option<i64>,
    /// Most connections open at once in the whole process (HAProxy's maxconn); clients
    /// beyond it wait in the kernel's listen backlog [default: derived from RLIMIT_NOFILE].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<i64>,
    /// Most connections per worker: the size of its slot table (blocking engine: in total)
    /// [default: 65536].
    #[arg(long, value_name = "N")]
    pub worker_max_connections: Option<i64>,
    /// Most pipes per worker, in use and idle; a direction that would splice beyond it
    /// forwards by copy; 0 allows none [default: 2048].
    #[arg(long, value_name = "N")]
    pub max_pipes: Option<i64>,
    /// Submission queue entries per io_uring worker ring: a power of two, 2 to 32768
    /// [default: 4096].
    #[arg(long, value_name = "N")]
    pub ring_entries: Option<i64>,
    /// The admin API's Unix socket (`ringlb ctl`, /metrics, /health); "" turns it off
    /// [default: /run/ringlb/admin.sock].
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<String>,
    /// Log one line per finished connection to this file, or to "stderr"; "" turns it off
    /// [default: off]. SIGUSR1 reopens the file (logrotate).
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,
    /// The access log's format [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub access_log_format: Option<LogFormatName>,
}

impl OverrideArgs {
    /// The library's form of these flags.
    pub fn to_overrides(&self) -> Overrides {
        Overrides {
            engine: self.engine,
            workers: self.workers,
            cpus: self.cpus.clone(),
            protocol: self.protocol,
            mode: self.mode,
            algorithm: self.algorithm,
            retries: self.retries,
            health_check: self.health_check.clone(),
            health_interval: self.health_interval.clone(),
            rise: self.rise,
            fall: self.fall,
            affinity_ttl: self.affinity_ttl.clone(),
            send_proxy: self.send_proxy,
            udp_idle_timeout: self.udp_idle_timeout.clone(),
            udp_responses: self.udp_responses,
            udp_max_flows: self.udp_max_flows,
            queue_size: self.queue_size,
            queue_timeout: self.queue_timeout.clone(),
            admission_rate: self.admission_rate,
            admission_burst: self.admission_burst,
            accept_proxy: self.accept_proxy,
            inspect_timeout: self.inspect_timeout.clone(),
            connect_timeout: self.connect_timeout.clone(),
            idle_timeout: self.idle_timeout.clone(),
            shutdown_grace: self.shutdown_grace.clone(),
            client_fin: self.client_fin.clone(),
            server_fin: self.server_fin.clone(),
            no_keepalive: self.no_keepalive,
            keepalive_idle: self.keepalive_idle.clone(),
            keepalive_interval: self.keepalive_interval.clone(),
            keepalive_count: self.keepalive_count,
            client_user_timeout: self.client_user_timeout.clone(),
            server_user_timeout: self.server_user_timeout.clone(),
            no_multishot: self.no_multishot,
            no_buffer_ring: self.no_buffer_ring,
            no_send_bundle: self.no_send_bundle,
            no_defer_taskrun: self.no_defer_taskrun,
            no_inline_splice: self.no_inline_splice,
            no_hot_buffers: self.no_hot_buffers,
            no_loopback_copy: self.no_loopback_copy,
            no_inline_shutdown: self.no_inline_shutdown,
            pipe_size: self.pipe_size.clone(),
            buffer_size: self.buffer_size.clone(),
            send_rings: self.send_rings,
            max_connections: self.max_connections,
            worker_max_connections: self.worker_max_connections,
            max_pipes: self.max_pipes,
            ring_entries: self.ring_entries,
            admin_socket: self.admin_socket.clone(),
            access_log: self.access_log.clone(),
            access_log_format: self.access_log_format,
        }
    }
}

/// `ringlb demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// I/O engine for ringlb in the demo.
    #[arg(long, value_enum, value_name = "ENGINE", default_value = "uring")]
    pub engine: EngineName,
    /// Forwarding mode.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub mode: ModeName,
    /// How long the load runs, in seconds.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub seconds: u64,
    /// Concurrent client connections.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub clients: u32,
}
