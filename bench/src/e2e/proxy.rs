//! The rows (proxy configurations) and starting, checking and stopping one proxy instance.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::child::{self, Guard, Output, Spec, StopFlag};
use super::error::{BenchError, Result};
use super::opts::CpuList;
use super::peers::{self, NginxListen, Peers};
use super::procfs;
use super::workload::{self, Workload};

/// What sits between the load generator and the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RowKind {
    /// Nothing: loadgen talks to the backend (the physical limit).
    Direct,
    /// ringlb with this engine and forwarding mode.
    Ringlb {
        /// `uring`, `epoll` or `blocking`.
        engine: &'static str,
        /// `copy`, `splice` or `auto`.
        mode: &'static str,
        /// Further flags (the extra rows that compare one setting).
        flags: &'static [&'static str],
    },
    /// HAProxy in `mode tcp`.
    Haproxy {
        /// With `option splice-*`.
        splice: bool,
    },
    /// nginx `stream`.
    Nginx,
}

/// One row of the result tables.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Row {
    /// Its name in tables and `--rows`.
    pub name: &'static str,
    /// What it runs.
    pub kind: RowKind,
}

const fn ringlb(name: &'static str, engine: &'static str, mode: &'static str) -> Row {
    ringlb_with(name, engine, mode, &[])
}

const fn ringlb_with(
    name: &'static str,
    engine: &'static str,
    mode: &'static str,
    flags: &'static [&'static str],
) -> Row {
    Row {
        name,
        kind: RowKind::Ringlb {
            engine,
            mode,
            flags,
        },
    }
}

/// Rows run only when named with `--rows`: one setting compared against its default, for the
/// choices made from figures (pipe size, inline splice vs IORING_OP_SPLICE, shutdown(2) vs
/// IORING_OP_SHUTDOWN, send bundles vs sendmsg, hot buffers vs the whole ring, auto splicing vs
/// copying toward the loopback, active health checks on, sticky sessions on).
pub const EXTRA_ROWS: [Row; 12] = [
    ringlb_with(
        "uring-splice-pipe64k",
        "uring",
        "splice",
        &["--pipe-size", "64KiB"],
    ),
    ringlb_with(
        "uring-splice-pipe1m",
        "uring",
        "splice",
        &["--pipe-size", "1MiB"],
    ),
    ringlb_with(
        "uring-splice-iowq",
        "uring",
        "splice",
        &["--no-inline-splice"],
    ),
    ringlb_with("uring-auto-iowq", "uring", "auto", &["--no-inline-splice"]),
    ringlb_with(
        "uring-auto-shutdown-iowq",
        "uring",
        "auto",
        &["--no-inline-shutdown"],
    ),
    ringlb_with("uring-copy-sendmsg", "uring", "copy", &["--no-send-bundle"]),
    ringlb_with("uring-auto-sendmsg", "uring", "auto", &["--no-send-bundle"]),
    ringlb_with("uring-copy-cold", "uring", "copy", &["--no-hot-buffers"]),
    ringlb_with(
        "uring-auto-loopback-splice",
        "uring",
        "auto",
        &["--no-loopback-copy"],
    ),
    ringlb_with(
        "uring-copy-checks",
        "uring",
        "copy",
        &["--health-check", "tcp", "--health-interval", "1s"],
    ),
    ringlb_with(
        "uring-auto-checks",
        "uring",
        "auto",
        &["--health-check", "tcp", "--health-interval", "1s"],
    ),
    ringlb_with(
        "uring-auto-affinity",
        "uring",
        "auto",
        &["--affinity-ttl", "30m"],
    ),
];

/// Every row, in table order.
pub const ROWS: [Row; 10] = [
    Row {
        name: "direct",
        kind: RowKind::Direct,
    },
    ringlb("uring-copy", "uring", "copy"),
    ringlb("uring-splice", "uring", "splice"),
    ringlb("uring-auto", "uring", "auto"),
    ringlb("epoll-copy", "epoll", "copy"),
    ringlb("epoll-splice", "epoll", "splice"),
    ringlb("blocking", "blocking", "copy"),
    Row {
        name: "haproxy",
        kind: RowKind::Haproxy { splice: false },
    },
    Row {
        name: "haproxy-splice",
        kind: RowKind::Haproxy { splice: true },
    },
    Row {
        name: "nginx",
        kind: RowKind::Nginx,
    },
];

/// The name of the row used as the io_uring splice reference (io-wq check).
pub const URING_SPLICE: &str = "uring-splice";

/// What starting a proxy needs.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The ringlb binary.
    pub ringlb: &'a Path,
    /// Installed peers.
    pub peers: &'a Peers,
    /// CPUs of the proxy (and its worker count).
    pub cpus: &'a CpuList,
    /// Scratch directory for configuration files.
    pub tmp: &'a Path,
    /// Directory for the proxies' logs.
    pub logs: &'a Path,
    /// Interrupt flag.
    pub stop: &'a StopFlag,
    /// The open-files limit the proxy inherits.
    pub fd_limit: u64,
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    guard: Guard,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The proxy's processes (nginx: master and workers), first the one started.
    pub pids: Vec<i32>,
    /// Its stderr log.
    pub stderr: PathBuf,
    /// Count io-wq workers while sampling (io_uring rows).
    pub uring: bool,
}

impl Row {
    /// Why this row cannot run here, if it cannot (a missing program).
    pub fn unavailable(&self, peers: &Peers) -> Option<String> {
        match self.kind {
            RowKind::Haproxy { .. } => peers.haproxy.as_ref().err().cloned(),
            RowKind::Nginx => peers.nginx.as_ref().err().cloned(),
            RowKind::Direct | RowKind::Ringlb { .. } => None,
        }
    }

    /// Why this row does not run `workload`, if it does not: HAProxy has no UDP proxying,
    /// and for UDP the forwarding mode (and the extra rows' TCP settings) do not apply, so
    /// ringlb runs UDP once per engine, on its `copy` row.
    pub fn skip_reason(&self, workload: Workload) -> Option<String> {
        if !workload.is_udp() {
            return None;
        }
        match self.kind {
            RowKind::Haproxy { .. } => Some("HAProxy has no UDP proxying".into()),
            RowKind::Ringlb {
                engine,
                mode,
                flags,
            } if mode != "copy" || !flags.is_empty() => Some(format!(
                "the forwarding mode and TCP settings do not apply to UDP; the {engine} engine's \
                 UDP figures are on its copy row"
            )),
            _ => None,
        }
    }

    /// Starts this row's proxy for `workload` in front of `backend` (`None` for `direct`);
    /// `tag` names its log files. Errors carry the proxy's own explanation when it exited at
    /// start.
    pub fn start(
        &self,
        ctx: &Ctx<'_>,
        backend: SocketAddr,
        workload: Workload,
        tag: &str,
    ) -> Result<Option<Proxy>> {
        if self.kind == RowKind::Direct {
            return Ok(None);
        }
        let udp = workload.is_udp();
        let both = workload.needs_tcp_and_udp();
        let listen = match (udp, both) {
            (_, true) => free_tcp_and_udp_port()?,
            (true, false) => free_udp_port()?,
            (false, false) => free_port()?,
        };
        let workers = ctx.cpus.0.len();
        let stderr = ctx.logs.join(format!("{}-{tag}.stderr", self.name));
        let (program, args, uring): (PathBuf, Vec<String>, bool) = match self.kind {
            RowKind::Direct => return Ok(None),
            RowKind::Ringlb {
                engine,
                mode,
                flags,
            } => {
                let mut args = vec!["run".to_string()];
                if both {
                    // The quick form has one listener: a file with a TCP and a UDP one.
                    let file = ctx.tmp.join(format!("{}-{tag}.toml", self.name));
                    write(&file, &ringlb_tcp_and_udp(listen, backend))?;
                    args.extend(["--config".to_string(), file.display().to_string()]);
                } else {
                    args.extend(
                        [
                            "--listen",
                            &listen.to_string(),
                            "--backend",
                            &backend.to_string(),
                        ]
                        .map(String::from),
                    );
                }
                args.extend(
                    [
                        "--engine",
                        engine,
                        "--workers",
                        &workers.to_string(),
                        "--cpus",
                        &ctx.cpus.joined(),
                        "--shutdown-grace",
                        "1s",
                    ]
                    .map(String::from),
                );
                if both {
                    // The TCP listener's mode; the file has the UDP keys.
                    args.extend(["--mode".to_string(), mode.to_string()]);
                } else if udp {
                    // `--mode` and the TCP flags are errors on a UDP listener.
                    args.extend(
                        ["--protocol", "udp", "--udp-idle-timeout"]
                            .map(String::from)
                            .into_iter()
                            .chain([workload::UDP_IDLE_TIMEOUT.to_string()]),
                    );
                    if let Some(n) = workload.udp_responses() {
                        args.extend(["--udp-responses".to_string(), n.to_string()]);
                    }
                } else {
                    args.extend(["--mode".to_string(), mode.to_string()]);
                    args.extend(flags.iter().map(|s| s.to_string()));
                }
                (ctx.ringlb.to_path_buf(), args, engine == "uring")
            }
            RowKind::Haproxy { splice } => {
                let path = ctx.peers.haproxy.clone().map_err(BenchError::Setup)?;
                let cfg = ctx.tmp.join(format!("{}.cfg", self.name));
                // Two descriptors per connection, two per pipe, some spare.
                let maxconn = ctx.fd_limit.saturating_sub(2 * peers::HAPROXY_PIPES + 200) / 2;
                let conf = peers::haproxy_config(listen, backend, workers, splice, maxconn);
                write(&cfg, &conf)?;
                let args = vec!["-db".into(), "-f".into(), cfg.display().to_string()];
                (path, args, false)
            }
            RowKind::Nginx => {
                let nginx = ctx.peers.nginx.clone().map_err(BenchError::Setup)?;
                let cfg = ctx.tmp.join("nginx.conf");
                let proto = if both {
                    NginxListen::TcpAndUdp {
                        timeout: workload::UDP_IDLE_TIMEOUT,
                    }
                } else if udp {
                    NginxListen::Udp {
                        responses: workload.udp_responses(),
                        timeout: workload::UDP_IDLE_TIMEOUT,
                    }
                } else {
                    NginxListen::Tcp
                };
                let conf = peers::nginx_config(
                    &nginx,
                    ctx.tmp,
                    (listen, backend),
                    proto,
                    workers,
                    ctx.fd_limit,
                );
                write(&cfg, &conf)?;
                let errlog = ctx.tmp.join("nginx-error.log").display().to_string();
                let args = [
                    "-p",
                    &ctx.tmp.display().to_string(),
                    "-e",
                    &errlog,
                    "-c",
                    &cfg.display().to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                (nginx.path, args, false)
            }
        };
        let mut guard = child::spawn(Spec {
            name: self.name.to_string(),
            program: &program,
            args,
            cpus: &ctx.cpus.0,
            stdout: Output::File(ctx.logs.join(format!("{}-{tag}.stdout", self.name))),
            stderr: Output::File(stderr.clone()),
            env: vec![("RINGLB_LOG", "info"), ("NO_COLOR", "1")],
        })?;
        let listens = Listens {
            udp,
            tcp: !udp || both,
        };
        wait_ready(&mut guard, listen, listens, &stderr, ctx.stop)?;
        // Let every worker (thread or process) come up and start accepting.
        ctx.stop.sleep(Duration::from_millis(100))?;
        let pids = guard.adopt_descendants();
        Ok(Some(Proxy {
            guard,
            listen,
            pids,
            stderr,
            uring,
        }))
    }
}

impl Proxy {
    /// Whether the proxy is still running.
    pub fn running(&mut self) -> bool {
        self.guard.try_exited().is_none()
    }

    /// Stops the proxy (SIGTERM; SIGKILL after 5 s) and returns what it wrote on stderr.
    pub fn stop(mut self) -> String {
        self.guard.stop(Signal::TERM, Duration::from_secs(5));
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// A ringlb configuration with a TCP and a UDP listener on `listen`, both to `backend` (UDP
/// flows last until idle for [`workload::UDP_IDLE_TIMEOUT`]); engine, workers, CPUs and mode
/// come as flags.
fn ringlb_tcp_and_udp(listen: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "[[listener]]\nname = \"tcp\"\nbind = \"{listen}\"\npool = \"be\"\n\n\
         [[listener]]\nname = \"udp\"\nbind = \"{listen}\"\nprotocol = \"udp\"\npool = \"be\"\n\n\
         [[pool]]\nname = \"be\"\nudp_idle_timeout = \"{}\"\n\n\
         [[pool.backend]]\naddress = \"{backend}\"\n",
        workload::UDP_IDLE_TIMEOUT
    )
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(super::error::io_err(format!("writing {}", path.display())))
}

/// A loopback address with a port that was free a moment ago.
pub fn free_port() -> Result<SocketAddr> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(super::error::io_err("finding a free port"))?;
    l.local_addr()
        .map_err(super::error::io_err("finding a free port"))
}

/// A loopback address with a UDP port that was free a moment ago.
pub fn free_udp_port() -> Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(super::error::io_err("finding a free port"))?;
    s.local_addr()
        .map_err(super::error::io_err("finding a free port"))
}

/// A loopback address whose port was free a moment ago for both TCP and UDP.
pub fn free_tcp_and_udp_port() -> Result<SocketAddr> {
    for _ in 0..100 {
        let tcp = free_port()?;
        if UdpSocket::bind(tcp).is_ok() {
            return Ok(tcp);
        }
    }
    Err(BenchError::Setup(
        "no port free for both TCP and UDP in 100 tries".into(),
    ))
}

/// What a proxy listens for.
#[derive(Debug, Clone, Copy)]
struct Listens {
    udp: bool,
    tcp: bool,
}

/// Whether the proxy listens on `listen`. UDP: a socket is bound to the port (a probe
/// datagram would reach the backend and spoil its counts). TCP beside UDP: a listening
/// socket shows in `/proc` (a probe connection would reach the iperf3 server, which takes
/// it for a test). TCP alone: it accepts a connection.
fn listening(listen: SocketAddr, what: Listens) -> bool {
    let port = listen.port();
    match what {
        Listens { udp: true, tcp } => {
            procfs::udp_bound_on_port(port) > 0 && (!tcp || procfs::tcp_listening_on_port(port) > 0)
        }
        Listens { udp: false, .. } => {
            TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
        }
    }
}

/// Waits until the proxy listens on `listen`; fails if the child exits first or 10 s pass.
fn wait_ready(
    guard: &mut Guard,
    listen: SocketAddr,
    what: Listens,
    stderr: &Path,
    stop: &StopFlag,
) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        stop.check()?;
        if let Some(st) = guard.try_exited() {
            return Err(BenchError::Setup(format!(
                "{} exited at start ({st}): {}",
                guard.name(),
                tail(stderr, 5)
            )));
        }
        if listening(listen, what) {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(BenchError::Setup(format!(
                "{} did not listen on {listen} within 10 s: {}",
                guard.name(),
                tail(stderr, 5)
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The last `n` non-empty lines of a file, joined with " | ".
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let t = lines[start..].join(" | ");
    if t.is_empty() {
        "(no output)".into()
    } else {
        t
    }
}

/// The epoll engine's `reads` and `reads_eagain` totals from ringlb's shutdown log line.
pub fn epoll_eagain(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr
        .lines()
        .find(|l| l.contains("epoll engine stopped"))?;
    let value = |key: &str| -> Option<u64> {
        line.split_whitespace().find_map(|tok| {
            let tok = strip_ansi(tok);
            tok.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
        })
    };
    Some((value("reads")?, value("reads_eagain")?))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_esc = false;
    for ch in s.chars() {
        match (in_esc, ch) {
            (false, '\u{1b}') => in_esc = true,
            (true, c) if c.is_ascii_alphabetic() => in_esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_eagain_line() {
        let log = "2025 INFO ringlb::engine::epoll: epoll engine stopped reads=100 \
                   reads_eagain=25 eagain_share=0.250 writes=3\n";
        assert_eq!(epoll_eagain(log), Some((100, 25)));
        let ansi =
            "x epoll engine stopped \u{1b}[3mreads\u{1b}[0m=7 \u{1b}[3mreads_eagain\u{1b}[0m=1";
        assert_eq!(epoll_eagain(ansi), Some((7, 1)));
        assert_eq!(epoll_eagain("nothing"), None);
    }

    #[test]
    fn row_names_unique() {
        for (i, a) in ROWS.iter().enumerate() {
            assert!(ROWS.iter().skip(i + 1).all(|b| b.name != a.name));
        }
        assert!(ROWS.iter().any(|r| r.name == URING_SPLICE));
    }

    #[test]
    fn ringlb_file_has_both_listeners() {
        let l: SocketAddr = "127.0.0.1:1000".parse().expect("address");
        let b: SocketAddr = "127.0.0.1:2000".parse().expect("address");
        let text = ringlb_tcp_and_udp(l, b);
        assert_eq!(text.matches("bind = \"127.0.0.1:1000\"").count(), 2);
        assert!(
            text.contains("protocol = \"udp\"") && text.contains("address = \"127.0.0.1:2000\"")
        );
    }

    #[test]
    fn udp_runs_once_per_engine() {
        let udp = Workload::UdpRr(64);
        let ran: Vec<&str> = ROWS
            .iter()
            .chain(EXTRA_ROWS.iter())
            .filter(|r| r.skip_reason(udp).is_none())
            .map(|r| r.name)
            .collect();
        assert_eq!(
            ran,
            ["direct", "uring-copy", "epoll-copy", "blocking", "nginx"]
        );
        assert!(
            ROWS.iter()
                .all(|r| r.skip_reason(Workload::Rr(64)).is_none())
        );
    }
}
