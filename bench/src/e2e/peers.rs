//! The peers ringlb is compared with (HAProxy, nginx stream), the clients nobody here wrote
//! (iperf3, wrk, with nginx as wrk's HTTP backend) and perf: finding them,
//! installing them (`--install-peers`), and writing their configuration files.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::child::{run_capture, which};
use super::error::{Result, io_err};
use super::procfs;

/// HAProxy's pipe limit (plenty for a handful of concurrent streams).
pub const HAPROXY_PIPES: u64 = 200;

/// Where nginx's stream module lives when built as a dynamic module (Debian).
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// What is installed, or why not.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The haproxy binary, or why it cannot run.
    pub haproxy: std::result::Result<PathBuf, String>,
    /// The nginx binary with how to get the stream module, or why it cannot run.
    pub nginx: std::result::Result<Nginx, String>,
    /// Whether `perf stat -e raw_syscalls:sys_enter` works, or why not.
    pub perf: std::result::Result<PathBuf, String>,
    /// The iperf3 binary (client and server of the iperf3 workloads), or why it cannot run.
    pub iperf3: std::result::Result<PathBuf, String>,
    /// The wrk binary (the wrk workloads' client), or why it cannot run.
    pub wrk: std::result::Result<PathBuf, String>,
    /// The nginx binary as the wrk workloads' HTTP backend (no stream module needed), or why
    /// it cannot run.
    pub nginx_http: std::result::Result<PathBuf, String>,
}

/// An nginx that can proxy TCP.
#[derive(Debug, Clone)]
pub struct Nginx {
    /// The binary.
    pub path: PathBuf,
    /// `load_module` this file first (dynamic stream module); `None` when built in.
    pub module: Option<PathBuf>,
}

impl Peers {
    /// Looks for haproxy, nginx (with the stream module) and a working perf.
    pub fn detect() -> Peers {
        Peers {
            haproxy: which("haproxy").ok_or_else(|| "haproxy is not installed".to_string()),
            nginx: detect_nginx(),
            perf: detect_perf(),
            iperf3: which("iperf3")
                .ok_or_else(|| "iperf3 is not installed (apt-get install iperf3)".to_string()),
            wrk: which("wrk")
                .ok_or_else(|| "wrk is not installed (apt-get install wrk)".to_string()),
            nginx_http: which("nginx").ok_or_else(|| {
                "nginx (wrk's HTTP backend) is not installed (apt-get install nginx)".to_string()
            }),
        }
    }
}

fn detect_nginx() -> std::result::Result<Nginx, String> {
    let path = which("nginx").ok_or("nginx is not installed")?;
    let out = Command::new(&path)
        .arg("-V")
        .output()
        .map_err(|e| format!("cannot run nginx -V: {e}"))?;
    let info = String::from_utf8_lossy(&out.stderr).into_owned();
    let module = Path::new(NGINX_STREAM_MODULE);
    if info.contains("--with-stream=dynamic") || module.is_file() {
        if module.is_file() {
            Ok(Nginx {
                path,
                module: Some(module.to_path_buf()),
            })
        } else {
            Err(format!(
                "nginx's stream module is not installed ({NGINX_STREAM_MODULE} missing; \
                 apt-get install libnginx-mod-stream)"
            ))
        }
    } else if info.contains("--with-stream") {
        Ok(Nginx { path, module: None })
    } else {
        Err("nginx was built without the stream module".into())
    }
}

fn detect_perf() -> std::result::Result<PathBuf, String> {
    let path = which("perf").ok_or("perf is not installed (apt-get install linux-perf)")?;
    let p = path.to_string_lossy().into_owned();
    let out = run_capture(
        &p,
        &[
            "stat",
            "-x",
            ",",
            "-e",
            "raw_syscalls:sys_enter",
            "--",
            "true",
        ],
    )
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && parse_perf_count(&text).is_some() {
        Ok(path)
    } else {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!(
            "perf cannot count raw_syscalls:sys_enter: {}",
            first.trim()
        ))
    }
}

/// The count of `raw_syscalls:sys_enter` in `perf stat -x ,` output.
pub fn parse_perf_count(text: &str) -> Option<u64> {
    text.lines()
        .filter(|l| l.contains("raw_syscalls:sys_enter"))
        .find_map(|l| l.split(',').next()?.trim().parse().ok())
}

/// `apt-get update && apt-get install -y haproxy nginx libnginx-mod-stream linux-perf
/// iperf3 wrk`, then stops the daemons the packages started (the harness runs its own instances;
/// Debian's iperf3 starts none unless asked).
pub fn install() -> Result<()> {
    eprintln!(
        "e2e: installing peers with apt-get (haproxy nginx libnginx-mod-stream linux-perf iperf3 \
         wrk)"
    );
    let before: Vec<i32> = daemon_pids();
    let status = Command::new("sh")
        .arg("-c")
        .arg(
            "apt-get update && apt-get install -y --no-install-recommends \
             haproxy nginx libnginx-mod-stream linux-perf iperf3 wrk",
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(io_err("running apt-get"))?;
    if !status.success() {
        eprintln!("e2e: apt-get failed ({status}); continuing with what is installed");
    }
    for svc in ["haproxy", "nginx"] {
        let _ = Command::new("service")
            .args([svc, "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    std::thread::sleep(Duration::from_millis(500));
    // Daemons the packages started and `service` did not stop.
    for pid in daemon_pids() {
        if !before.contains(&pid) {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                eprintln!("e2e: stopping daemon started by the package install (pid {pid})");
                let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
            }
        }
    }
    Ok(())
}

/// haproxy and nginx processes whose parent is init (daemons).
fn daemon_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            let comm = comm.trim();
            (comm == "haproxy" || comm == "nginx") && procfs::ppid(p) == Some(1)
        })
        .collect()
}

/// An HAProxy `mode tcp` configuration: `listen` forwarding to `backend`, `threads` threads,
/// with or without splicing, `maxconn` connections (HAProxy needs 2 descriptors per connection
/// and 2 per pipe; it refuses to start if the open-files limit is lower).
pub fn haproxy_config(
    listen: SocketAddr,
    backend: SocketAddr,
    threads: usize,
    splice: bool,
    maxconn: u64,
) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "global");
    let _ = writeln!(c, "    nbthread {threads}");
    let _ = writeln!(c, "    maxconn {maxconn}");
    let _ = writeln!(c, "    maxpipes {HAPROXY_PIPES}");
    let _ = writeln!(c, "defaults");
    let _ = writeln!(c, "    mode tcp");
    let _ = writeln!(c, "    maxconn {maxconn}");
    let _ = writeln!(c, "    timeout connect 2s");
    let _ = writeln!(c, "    timeout client 5m");
    let _ = writeln!(c, "    timeout server 5m");
    if splice {
        let _ = writeln!(c, "    option splice-auto");
        let _ = writeln!(c, "    option splice-request");
        let _ = writeln!(c, "    option splice-response");
    }
    let _ = writeln!(c, "frontend fe");
    let _ = writeln!(c, "    bind {listen} backlog 4096");
    let _ = writeln!(c, "    default_backend be");
    let _ = writeln!(c, "backend be");
    let _ = writeln!(c, "    server s1 {backend}");
    c
}

/// What nginx's `stream` server listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NginxListen {
    /// TCP connections.
    Tcp,
    /// UDP datagrams (`listen ... udp`): a session per client address and port, ending after
    /// `responses` datagrams from the backend (`proxy_responses`; `None`: not set, so the
    /// session lasts until it is idle for `proxy_timeout`).
    Udp {
        /// `proxy_responses`.
        responses: Option<u32>,
        /// `proxy_timeout` (such as `10s`).
        timeout: &'static str,
    },
    /// Both on one port, each in a server of its own (TCP with [`NginxListen::Tcp`]'s
    /// settings, UDP with no `proxy_responses`): iperf3's control connection and datagrams.
    TcpAndUdp {
        /// The UDP server's `proxy_timeout`.
        timeout: &'static str,
    },
}

/// An nginx configuration: a `stream` server on `listen` proxying to `backend`, `workers`
/// worker processes with `fd_limit` descriptors each, pid file and logs under `dir`.
pub fn nginx_config(
    nginx: &Nginx,
    dir: &Path,
    (listen, backend): (SocketAddr, SocketAddr),
    proto: NginxListen,
    workers: usize,
    fd_limit: u64,
) -> String {
    let mut c = String::new();
    if let Some(m) = &nginx.module {
        let _ = writeln!(c, "load_module {};", m.display());
    }
    let _ = writeln!(c, "daemon off;");
    let _ = writeln!(c, "master_process on;");
    let _ = writeln!(c, "worker_processes {workers};");
    let _ = writeln!(c, "worker_rlimit_nofile {fd_limit};");
    let _ = writeln!(c, "pid {};", dir.join("nginx.pid").display());
    let _ = writeln!(
        c,
        "error_log {} warn;",
        dir.join("nginx-error.log").display()
    );
    let conns = fd_limit.saturating_sub(100).max(1024);
    let _ = writeln!(c, "events {{ worker_connections {conns}; }}");
    let _ = writeln!(c, "stream {{");
    let _ = writeln!(c, "    upstream be {{ server {backend}; }}");
    let tcp = |c: &mut String| {
        let _ = writeln!(c, "    server {{");
        let _ = writeln!(c, "        listen {listen} backlog=4096;");
        let _ = writeln!(c, "        proxy_pass be;");
        let _ = writeln!(c, "        proxy_timeout 5m;");
        let _ = writeln!(c, "        proxy_connect_timeout 2s;");
        let _ = writeln!(c, "    }}");
    };
    let udp = |c: &mut String, responses: Option<u32>, timeout: &str| {
        let _ = writeln!(c, "    server {{");
        let _ = writeln!(c, "        listen {listen} udp;");
        let _ = writeln!(c, "        proxy_pass be;");
        let _ = writeln!(c, "        proxy_timeout {timeout};");
        if let Some(n) = responses {
            let _ = writeln!(c, "        proxy_responses {n};");
        }
        let _ = writeln!(c, "    }}");
    };
    match proto {
        NginxListen::Tcp => tcp(&mut c),
        NginxListen::Udp { responses, timeout } => udp(&mut c, responses, timeout),
        NginxListen::TcpAndUdp { timeout } => {
            tcp(&mut c);
            udp(&mut c, None, timeout);
        }
    }
    let _ = writeln!(c, "}}");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv() {
        let out = "\n12345,,raw_syscalls:sys_enter,1000,100.00,,\n";
        assert_eq!(parse_perf_count(out), Some(12345));
        assert_eq!(
            parse_perf_count("<not counted>,,raw_syscalls:sys_enter,0,0,,"),
            None
        );
    }

    #[test]
    fn configs_mention_addresses() {
        let l: SocketAddr = "127.0.0.1:1000".parse().expect("address");
        let b: SocketAddr = "127.0.0.1:2000".parse().expect("address");
        let h = haproxy_config(l, b, 2, true, 9000);
        assert!(h.contains("maxconn 9000"));
        assert!(h.contains("bind 127.0.0.1:1000") && h.contains("splice-request"));
        assert!(!haproxy_config(l, b, 2, false, 9000).contains("option splice"));
        let n = Nginx {
            path: "/usr/sbin/nginx".into(),
            module: None,
        };
        let c = nginx_config(&n, Path::new("/tmp/x"), (l, b), NginxListen::Tcp, 1, 20000);
        assert!(
            c.contains("listen 127.0.0.1:1000 backlog=4096;") && c.contains("worker_processes 1;")
        );
        let udp = NginxListen::Udp {
            responses: Some(1),
            timeout: "10s",
        };
        let c = nginx_config(&n, Path::new("/tmp/x"), (l, b), udp, 1, 20000);
        assert!(c.contains("listen 127.0.0.1:1000 udp;") && c.contains("proxy_responses 1;"));
        assert!(c.contains("proxy_timeout 10s;") && !c.contains("backlog"));
        let both = NginxListen::TcpAndUdp { timeout: "10s" };
        let c = nginx_config(&n, Path::new("/tmp/x"), (l, b), both, 1, 20000);
        assert!(c.contains("listen 127.0.0.1:1000 backlog=4096;"));
        assert!(c.contains("listen 127.0.0.1:1000 udp;") && !c.contains("proxy_responses"));
        assert_eq!(c.matches("server {").count(), 2);
    }
}
