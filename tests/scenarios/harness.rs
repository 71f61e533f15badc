//! What every scenario shares: the configuration matrix entry, the `ringlb` child process and
//! its guard, engine-availability skips, and a global concurrency limit; the socket helpers
//! live in `net` and are re-exported here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringlb_tools::backend::{self, BackendHandle, BackendKind};

#[path = "net.rs"]
mod net;
pub use net::*;

/// `--connect-timeout` every scenario runs with.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// `--idle-timeout` every scenario runs with.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// `--shutdown-grace` every scenario runs with.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// `--workers` every scenario runs with.
pub const WORKERS: usize = 2;
/// `tuning.pipe_pool` default: idle pipes a worker keeps (no flag changes it in the quick form).
pub const PIPE_POOL: usize = 256;
/// Longest any single blocking read or write in a scenario may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest the binary may take to start listening: generous, because a debug build starting
/// while the whole suite runs on two loaded cores can take seconds, and only a failure waits
/// this long.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One entry of the matrix: an engine, a forwarding mode and feature switches.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// `--engine`.
    pub engine: &'static str,
    /// `--mode`.
    pub mode: &'static str,
    /// Extra flags such as `--no-multishot`.
    pub flags: &'static [&'static str],
    /// Runs the expensive variants (10,000 connections in the fd-leak scenario).
    pub heavy: bool,
}

impl Setup {
    pub const fn new(engine: &'static str, mode: &'static str) -> Self {
        Setup {
            engine,
            mode,
            flags: &[],
            heavy: false,
        }
    }

    pub const fn flags(self, flags: &'static [&'static str]) -> Self {
        Setup { flags, ..self }
    }

    pub const fn heavy(self) -> Self {
        Setup {
            heavy: true,
            ..self
        }
    }

    /// Listening sockets the engine opens for one listener: one per worker (SO_REUSEPORT)
    /// for the thread-per-core engines, one for the blocking engine.
    fn listeners(&self, workers: usize) -> usize {
        if self.engine == "blocking" {
            1
        } else {
            workers
        }
    }
}

/// The running test: its setup and its name, for messages and log files.
#[derive(Debug)]
pub struct Ctx {
    pub setup: Setup,
    pub config: &'static str,
    pub scenario: &'static str,
}

/// Why a scenario did not run here; the test still passes, and says so on stderr.
#[derive(Debug)]
pub struct Skip(pub String);

/// What a scenario returns: done, or skipped with a reason.
pub type Outcome = Result<(), Skip>;

/// How much of a failed scenario's panic message [`run`] repeats at the end of its output.
const MESSAGE_AGAIN: usize = 2_000;

/// Runs one (scenario, configuration) pair under the global concurrency limit.
pub fn run(setup: &Setup, config: &'static str, scenario: &'static str, f: fn(&Ctx) -> Outcome) {
    let _permit = Permit::acquire(EXCLUSIVE.contains(&scenario));
    let ctx = Ctx {
        setup: *setup,
        config,
        scenario,
    };
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(|| f(&ctx)).unwrap_or_else(|panic| {
        // Said again last, after the backtrace and the log tails that follow the panic
        // message, so that a report that keeps only the end of the output still says why.
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let end = (0..=MESSAGE_AGAIN.min(message.len()))
            .rev()
            .find(|&i| message.is_char_boundary(i))
            .unwrap_or(0);
        eprintln!(
            "FAILED {config}::{scenario} after {:?}: {}",
            started.elapsed(),
            &message[..end]
        );
        std::panic::resume_unwind(panic)
    });
    if let Err(Skip(reason)) = outcome {
        // Written to the real stderr, past libtest's capture, so that skips are always seen.
        let _ = writeln!(
            io::stderr(),
            "SKIP {}: {reason} [{config}::{scenario}]",
            setup.engine
        );
    }
    let took = started.elapsed();
    if took > Duration::from_secs(10) {
        let _ = writeln!(io::stderr(), "SLOW {config}::{scenario}: {took:?}");
    }
}

/// A counting semaphore over all tests of this binary, so that `--test-threads` larger than
/// the machine does not overload it. RINGLB_SCENARIO_JOBS sets the width (default 2).
/// The slots a running scenario holds.
struct Permit(usize);

/// Scenarios that run alone (see [`Permit::acquire`]).
const EXCLUSIVE: [&str; 3] = [
    "non_readers_400_do_not_starve_others",
    "non_readers_1500_do_not_starve_others",
    "trickling_non_readers_do_not_starve_others",
];

static WIDTH: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

static SLOTS: Mutex<Option<usize>> = Mutex::new(None);
static FREED: Condvar = Condvar::new();

impl Permit {
    /// One slot, or (`exclusive`) every slot: a scenario that loads the whole machine (hundreds
    /// of connections and threads) runs alone, so that it cannot starve another into failing.
    fn acquire(exclusive: bool) -> Permit {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        let width = *WIDTH.get_or_init(|| {
            std::env::var("RINGLB_SCENARIO_JOBS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2usize)
                .max(1)
        });
        let want = if exclusive { width } else { 1 };
        while slots.unwrap_or(width) < want {
            slots = FREED.wait(slots).unwrap_or_else(|p| p.into_inner());
        }
        *slots = Some(slots.unwrap_or(width) - want);
        Permit(want)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        *slots = slots.map(|n| n + self.0);
        FREED.notify_all();
    }
}

/// An echo backend from ringlb_tools on an ephemeral loopback port.
pub fn echo_backend() -> BackendHandle {
    spawn_backend(BackendKind::Echo)
}

/// A ringlb_tools backend of `kind` on an ephemeral loopback port.
pub fn spawn_backend(kind: BackendKind) -> BackendHandle {
    backend::spawn(kind, "127.0.0.1:0".parse().expect("address")).expect("spawn a test backend")
}

/// The `ringlb` child process; killed (SIGTERM, then SIGKILL) when dropped, so that a failing
/// assertion never leaks it.
#[derive(Debug)]
pub struct Proxy {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
    /// The configuration file, when started with [`Launch::file`].
    config: PathBuf,
}

/// How a `ringlb run` is configured beyond the matrix entry.
#[derive(Clone, Debug)]
pub struct Launch {
    /// `--backend` values.
    pub backends: Vec<String>,
    /// `--retries`.
    pub retries: u32,
    /// Further flags.
    pub extra: Vec<String>,
    /// `RINGLB_LOG` for this run (default: RINGLB_SCENARIO_LOG, else info).
    pub log: Option<&'static str>,
    /// `--shutdown-grace` (default [`SHUTDOWN_GRACE`]; clap refuses the flag twice).
    pub grace: Duration,
    /// `--idle-timeout` (default [`IDLE_TIMEOUT`]).
    pub idle: Duration,
    /// `--workers` (default [`WORKERS`]).
    pub workers: usize,
    /// A configuration file to run with instead of the quick form: `{listen}` in it becomes
    /// the address picked; see [`Launch::file`].
    pub file: Option<String>,
}

impl Launch {
    pub fn new(backends: &[SocketAddr]) -> Self {
        Launch {
            backends: backends.iter().map(ToString::to_string).collect(),
            retries: 2,
            extra: Vec::new(),
            log: None,
            grace: SHUTDOWN_GRACE,
            idle: IDLE_TIMEOUT,
            workers: WORKERS,
            file: None,
        }
    }

    /// Run `ringlb run --config FILE` with `template` as the file, `{listen}` replaced by the
    /// listener's address (the matrix's flags still override it); [`Proxy::config_path`] is
    /// where it was written.
    pub fn file(template: &str) -> Self {
        Launch {
            file: Some(template.to_owned()),
            ..Launch::specs(Vec::new())
        }
    }

    pub fn specs(backends: Vec<String>) -> Self {
        Launch {
            backends,
            retries: 2,
            extra: Vec::new(),
            log: None,
            grace: SHUTDOWN_GRACE,
            idle: IDLE_TIMEOUT,
            workers: WORKERS,
            file: None,
        }
    }

    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_owned());
        self
    }

    /// Run with `--idle-timeout idle`.
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Run with `--shutdown-grace grace`.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Run with `--workers workers` (the thread-per-core engines; the blocking engine has
    /// none).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Run with `RINGLB_LOG=level`.
    pub fn log(mut self, level: &'static str) -> Self {
        self.log = Some(level);
        self
    }
}

/// Error messages with which the binary says that an engine cannot run on this machine or in
/// this build; these skip a test rather than fail it.
const UNAVAILABLE: [&str; 2] = ["not built yet", "io_uring is unavailable"];

impl Proxy {
    /// Starts `ringlb run` in the quick form for `ctx`'s configuration and waits until it
    /// listens. `Err(Skip)` if the engine reports that it cannot run here.
    pub fn start(ctx: &Ctx, launch: &Launch) -> Result<Proxy, Skip> {
        // A free port can be taken by someone else between the probe and the bind: retry.
        let mut last = String::new();
        for attempt in 0..3 {
            match Self::try_start(ctx, launch, attempt)? {
                Ok(proxy) => return Ok(proxy),
                Err(log) => last = log,
            }
        }
        panic!("ringlb could not bind a free port three times; last log:\n{last}");
    }

    /// `Ok(Err(log))`: the port was in use, try another.
    fn try_start(ctx: &Ctx, launch: &Launch, attempt: u32) -> Result<Result<Proxy, String>, Skip> {
        let addr = free_addr();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scenarios");
        std::fs::create_dir_all(&dir).expect("log directory");
        let log = dir.join(format!("{}-{}-{attempt}.log", ctx.config, ctx.scenario));
        let config = dir.join(format!("{}-{}.toml", ctx.config, ctx.scenario));
        if let Some(template) = &launch.file {
            std::fs::write(&config, template.replace("{listen}", &addr.to_string()))
                .expect("write the configuration file");
        }
        let child = Self::command(ctx, launch, addr, &config, &log)
            .spawn()
            .expect("spawn the ringlb binary");
        let mut proxy = Proxy {
            child: Some(child),
            addr,
            log,
            config,
        };
        let s = &ctx.setup;
        let started = Instant::now();
        loop {
            if let Some(status) = proxy.try_wait() {
                let text = proxy.log_text();
                let reason = text
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("ringlb:"))
                    .unwrap_or("")
                    .trim_start_matches("ringlb:")
                    .trim()
                    .to_owned();
                if UNAVAILABLE.iter().any(|m| reason.contains(m)) {
                    return Err(Skip(reason));
                }
                if text.contains("Address already in use") || text.contains("os error 98") {
                    return Ok(Err(text));
                }
                panic!("ringlb exited at start-up with {status}; its log:\n{text}");
            }
            let listening = listening_sockets(addr.port());
            if listening >= s.listeners(launch.workers) {
                return Ok(Ok(proxy));
            }
            if started.elapsed() > START_TIMEOUT {
                assert!(
                    listening > 0,
                    "ringlb did not listen on {addr} within {START_TIMEOUT:?}; log:\n{}",
                    proxy.log_text()
                );
                // Some listeners are up: carry on (connections spread over those).
                return Ok(Ok(proxy));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A binary upgrade of this process: the binary started again with the same file, address
    /// and flags, and `--upgrade-from admin`; returns once it says every worker is up. This
    /// process then drains and exits by itself.
    pub fn successor(&self, ctx: &Ctx, launch: &Launch, admin: &Path, n: u32) -> Proxy {
        let log = self.log.with_extension(format!("next{n}.log"));
        let child = Self::command(ctx, launch, self.addr, &self.config, &log)
            .arg("--upgrade-from")
            .arg(admin)
            .spawn()
            .expect("spawn the ringlb binary");
        let mut next = Proxy {
            child: Some(child),
            addr: self.addr,
            log,
            config: self.config.clone(),
        };
        let started = Instant::now();
        while !next.log_text().contains("telling the old process to stop") {
            if let Some(status) = next.try_wait() {
                panic!(
                    "the upgrade exited with {status}; log:\n{}",
                    next.log_text()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the upgrade did not start within {START_TIMEOUT:?}; log:\n{}",
                next.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
        next
    }

    /// An upgrade of this process from the file at `config` that is expected to fail: its exit
    /// status (killed after 10 s if it does not exit) and its log.
    pub fn failed_successor(
        &self,
        ctx: &Ctx,
        launch: &Launch,
        admin: &Path,
        config: &Path,
    ) -> (ExitStatus, String) {
        let log = self.log.with_extension("failed.log");
        let mut child = Self::command(ctx, launch, self.addr, config, &log)
            .arg("--upgrade-from")
            .arg(admin)
            .spawn()
            .expect("spawn the ringlb binary");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            thread::sleep(Duration::from_millis(10));
        };
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// `ringlb run` for `ctx` and `launch` on `addr` (from the file at `config` when the
    /// launch has one), logging to `log`.
    fn command(ctx: &Ctx, launch: &Launch, addr: SocketAddr, config: &Path, log: &Path) -> Command {
        let s = &ctx.setup;
        let log_file = File::create(log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlb"));
        if launch.file.is_some() {
            cmd.args(["run", "--config"]).arg(config);
        } else {
            cmd.args(["run", "--listen", &addr.to_string()]);
        }
        for b in &launch.backends {
            cmd.args(["--backend", b]);
        }
        cmd.args(["--engine", s.engine, "--mode", s.mode])
            .args(["--workers", &launch.workers.to_string()])
            .args(["--connect-timeout", "500ms"])
            .args(["--idle-timeout", &format!("{}ms", launch.idle.as_millis())])
            .args([
                "--shutdown-grace",
                &format!("{}ms", launch.grace.as_millis()),
            ])
            .args(["--retries", &launch.retries.to_string()])
            .args(s.flags)
            .args(&launch.extra)
            .env(
                "RINGLB_LOG",
                launch.log.map(str::to_owned).unwrap_or_else(|| {
                    std::env::var("RINGLB_SCENARIO_LOG").unwrap_or_else(|_| "info".to_owned())
                }),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        cmd
    }

    /// Where the configuration file of a [`Launch::file`] run is.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        signal(self.pid(), rustix::process::Signal::TERM);
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for ringlb"))
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if started.elapsed() > within {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process exited on its own (crash?) while the test ran: fail with its log.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!(
                "ringlb exited unexpectedly with {status}; log:\n{}",
                self.log_tail()
            );
        }
    }

    /// SIGTERM, then insist on a clean exit (status 0) within the grace period plus slack.
    /// Returns the whole log, which now includes what the workers report as they stop.
    pub fn finish(mut self) -> String {
        self.assert_alive();
        self.terminate();
        let within = SHUTDOWN_GRACE + Duration::from_secs(2);
        match self.wait_exit(within) {
            Some(status) => assert!(
                status.success(),
                "ringlb exited with {status} after SIGTERM; log:\n{}",
                self.log_tail()
            ),
            None => panic!(
                "ringlb did not exit within {within:?} of SIGTERM; log:\n{}",
                self.log_tail()
            ),
        }
        self.check_log();
        self.log_text()
    }

    /// Fails on a panic message in the log (a worker thread can panic without ending the process).
    pub fn check_log(&self) {
        let text = self.log_text();
        assert!(
            !text.contains("panicked"),
            "ringlb logged a panic:\n{}",
            self.log_tail()
        );
    }

    /// Everything the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        let mut out = format!("({})\n", self.log.display());
        for l in &lines[from..] {
            let _ = writeln!(out, "{l}");
        }
        out
    }

    /// The process's open file descriptors, by kind: `socket`, `pipe`, `anon_inode:...`, or the
    /// path for others.
    pub fn fds(&self) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        let dir = format!("/proc/{}/fd", self.pid());
        for entry in std::fs::read_dir(&dir)
            .expect("read /proc/<pid>/fd")
            .flatten()
        {
            // An fd can close between readdir and readlink; skip it then.
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            let kind = if target.starts_with("socket:") {
                "socket".to_owned()
            } else if target.starts_with("pipe:") {
                "pipe".to_owned()
            } else {
                target
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
        kinds
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if thread::panicking() {
            eprintln!("ringlb log tail:\n{}", self.log_tail());
        }
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        signal(child.id(), rustix::process::Signal::TERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a positive pid");
    // The process may have exited already; that is not this function's concern.
    let _ = rustix::process::kill_process(pid, sig);
}
