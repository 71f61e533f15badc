//! The backends a workload runs against: the harness's own (sink, echo, UDP), an iperf3
//! server, or an nginx HTTP server for wrk; started on loopback, pinned to the load CPUs.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use super::child::{self, Guard, Output, Spec, StopFlag};
use super::error::{BenchError, Result, io_err};
use super::iperf3;
use super::measure::Env;
use super::procfs;
use super::proxy;
use super::workload::BackendKind;
use super::wrk;

/// The backend's counters, printed as JSON when it stops (and on SIGUSR1).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct BackendStats {
    /// Connections accepted (UDP: distinct senders).
    pub connections: u64,
    /// Requests served (echo: reads echoed).
    pub requests: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams received (UDP backends).
    #[serde(default)]
    pub datagrams_in: u64,
    /// Datagrams sent (UDP echo).
    #[serde(default)]
    pub datagrams_out: u64,
}

impl BackendStats {
    /// The counts of `all` added up.
    pub fn sum(all: impl IntoIterator<Item = BackendStats>) -> BackendStats {
        all.into_iter()
            .fold(BackendStats::default(), |a, b| BackendStats {
                connections: a.connections + b.connections,
                requests: a.requests + b.requests,
                bytes_in: a.bytes_in + b.bytes_in,
                bytes_out: a.bytes_out + b.bytes_out,
                datagrams_in: a.datagrams_in + b.datagrams_in,
                datagrams_out: a.datagrams_out + b.datagrams_out,
            })
    }

    /// What was counted since `before`.
    pub fn since(&self, before: &BackendStats) -> BackendStats {
        BackendStats {
            connections: self.connections.saturating_sub(before.connections),
            requests: self.requests.saturating_sub(before.requests),
            bytes_in: self.bytes_in.saturating_sub(before.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(before.bytes_out),
            datagrams_in: self.datagrams_in.saturating_sub(before.datagrams_in),
            datagrams_out: self.datagrams_out.saturating_sub(before.datagrams_out),
        }
    }
}

/// The JSON lines (counter reports) in the backend's stdout.
fn stats_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| l.trim_start().starts_with('{'))
}

/// A backend process.
#[derive(Debug)]
pub struct Backend {
    guard: Guard,
    /// Its address.
    pub addr: SocketAddr,
    stdout: PathBuf,
    /// What it is (an iperf3 server reports no counters of its own).
    kind: BackendKind,
}

/// The iperf3 binary, or why there is none.
pub fn iperf3_path<'a>(env: &Env<'a>) -> Result<&'a Path> {
    env.iperf3
        .ok_or_else(|| BenchError::Setup("iperf3 is not installed".into()))
}

impl Backend {
    /// Starts a `kind` backend on a free loopback port, pinned to the load CPUs.
    pub fn start(env: &Env<'_>, kind: BackendKind, tag: &str) -> Result<Backend> {
        match kind {
            BackendKind::Iperf3 => return Self::start_iperf3(env, tag),
            BackendKind::NginxHttp => return Self::start_nginx_http(env, tag),
            _ => {}
        }
        let stdout = env.logs.join(format!("backend-{tag}.stdout"));
        let mut guard = child::spawn(Spec {
            name: format!("backend ({})", kind.arg()),
            program: env.backend,
            args: [
                "--kind",
                kind.arg(),
                "--listen",
                "127.0.0.1:0",
                "--threads",
                &env.load_cpus.len().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            cpus: env.load_cpus,
            stdout: Output::File(stdout.clone()),
            stderr: Output::File(env.logs.join(format!("backend-{tag}.stderr"))),
            env: Vec::new(),
        })?;
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let text = fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
                let addr = line.trim().parse().map_err(|e| {
                    BenchError::Setup(format!("backend printed {line:?}, not an address: {e}"))
                })?;
                return Ok(Backend {
                    guard,
                    addr,
                    stdout,
                    kind,
                });
            }
            if guard.try_exited().is_some() || Instant::now() >= end {
                return Err(BenchError::Setup(format!(
                    "the {} backend did not start",
                    kind.arg()
                )));
            }
            env.stop.sleep(Duration::from_millis(10))?;
        }
    }

    /// An iperf3 server on a loopback port free for TCP and UDP, ready once its control
    /// socket listens (seen in `/proc`: a probe connection would be taken for a test).
    fn start_iperf3(env: &Env<'_>, tag: &str) -> Result<Backend> {
        let program = iperf3_path(env)?;
        let addr = proxy::free_tcp_and_udp_port()?;
        let stdout = env.logs.join(format!("backend-{tag}.stdout"));
        let mut guard = child::spawn(Spec {
            name: "backend (iperf3 -s)".into(),
            program,
            args: iperf3::server_args(addr),
            cpus: env.load_cpus,
            stdout: Output::File(stdout.clone()),
            stderr: Output::File(env.logs.join(format!("backend-{tag}.stderr"))),
            env: Vec::new(),
        })?;
        let stderr = env.logs.join(format!("backend-{tag}.stderr"));
        let why = || proxy::tail(&stderr, 3);
        listening(env, &mut guard, addr, "the iperf3 server", why)?;
        Ok(Backend {
            guard,
            addr,
            stdout,
            kind: BackendKind::Iperf3,
        })
    }

    /// An nginx HTTP server ([`wrk::nginx_http_config`]) on a free loopback port, its files
    /// in a directory of its own under the logs, ready once it listens (seen in `/proc`).
    fn start_nginx_http(env: &Env<'_>, tag: &str) -> Result<Backend> {
        let program = env
            .nginx
            .ok_or_else(|| BenchError::Setup("nginx is not installed".into()))?;
        let addr = proxy::free_port()?;
        let dir = env.logs.join(format!("backend-{tag}-nginx"));
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let conf = dir.join("nginx.conf");
        let text = wrk::nginx_http_config(&dir, addr, env.plan.fd_limit);
        fs::write(&conf, text).map_err(io_err(format!("writing {}", conf.display())))?;
        let stdout = env.logs.join(format!("backend-{tag}.stdout"));
        let stderr = env.logs.join(format!("backend-{tag}.stderr"));
        let errlog = dir.join("error.log");
        let args = [
            "-p".into(),
            dir.display().to_string(),
            "-e".into(),
            errlog.display().to_string(),
            "-c".into(),
            conf.display().to_string(),
        ];
        let mut guard = child::spawn(Spec {
            name: "backend (nginx http)".into(),
            program,
            args: args.to_vec(),
            cpus: env.load_cpus,
            stdout: Output::File(stdout.clone()),
            stderr: Output::File(stderr.clone()),
            env: Vec::new(),
        })?;
        let why = || format!("{} {}", proxy::tail(&stderr, 3), proxy::tail(&errlog, 3));
        listening(env, &mut guard, addr, "the nginx HTTP backend", why)?;
        Ok(Backend {
            guard,
            addr,
            stdout,
            kind: BackendKind::NginxHttp,
        })
    }

    /// Whether it reports counters of its own (SIGUSR1 and at its end): the harness's
    /// backends do; for iperf3 the client's report says what the server received, for nginx
    /// wrk's what was answered.
    pub fn has_counters(&self) -> bool {
        !matches!(self.kind, BackendKind::Iperf3 | BackendKind::NginxHttp)
    }

    /// Its counters now: asks with SIGUSR1 and waits (up to 2 s) for the new line.
    pub fn snapshot(&self, stop: &StopFlag) -> Result<BackendStats> {
        let count = || stats_lines(&fs::read_to_string(&self.stdout).unwrap_or_default()).count();
        let before = count();
        if let Some(pid) = rustix::process::Pid::from_raw(self.guard.pid()) {
            let _ = rustix::process::kill_process(pid, Signal::USR1);
        }
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            let text = fs::read_to_string(&self.stdout).unwrap_or_default();
            if stats_lines(&text).count() > before {
                let line = stats_lines(&text).last().unwrap_or_default();
                return serde_json::from_str(line)
                    .map_err(|e| BenchError::Setup(format!("bad backend stats {line:?}: {e}")));
            }
            if Instant::now() >= end {
                return Err(BenchError::Setup(
                    "the backend did not report its counters on SIGUSR1".into(),
                ));
            }
            stop.sleep(Duration::from_millis(5))?;
        }
    }

    /// Its counters once datagrams stop arriving: snapshots 50 ms apart until two agree (at
    /// most 1 s), so that what the proxy still held when loadgen stopped is counted.
    pub fn settled(&self, stop: &StopFlag) -> Result<BackendStats> {
        let end = Instant::now() + Duration::from_secs(1);
        let mut last = self.snapshot(stop)?;
        loop {
            stop.sleep(Duration::from_millis(50))?;
            let now = self.snapshot(stop)?;
            if now.datagrams_in == last.datagrams_in || Instant::now() >= end {
                return Ok(now);
            }
            last = now;
        }
    }

    /// Stops it (SIGTERM) and returns its final counters (`None`: it keeps none, see
    /// [`Backend::has_counters`]).
    pub fn stop(mut self) -> Result<Option<BackendStats>> {
        self.guard.stop(Signal::TERM, Duration::from_secs(5));
        if !self.has_counters() {
            return Ok(None);
        }
        let text = fs::read_to_string(&self.stdout).unwrap_or_default();
        let json = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
        let json = json.ok_or_else(|| BenchError::Setup("the backend printed no stats".into()))?;
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| BenchError::Setup(format!("bad backend stats {json:?}: {e}")))
    }
}

/// Waits (up to 5 s) until the child `guard` runs listens on `addr` (seen in `/proc`, so no
/// probe connection is taken for a test); `what` names it and `why` tells what its logs say
/// when it does not.
fn listening(
    env: &Env<'_>,
    guard: &mut child::Guard,
    addr: std::net::SocketAddr,
    what: &str,
    why: impl Fn() -> String,
) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(5);
    while procfs::tcp_listening_on_port(addr.port()) == 0 {
        if guard.try_exited().is_some() || Instant::now() >= end {
            return Err(BenchError::Setup(format!(
                "{what} did not listen on {addr}: {}",
                why()
            )));
        }
        env.stop.sleep(Duration::from_millis(10))?;
    }
    Ok(())
}
