//! Child processes behind guards: pinned to CPUs, killed with their parent, and stopped (then
//! killed) when the guard drops, also on error and panic.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::error::{BenchError, Result, io_err};
use super::procfs;

/// Set by SIGINT/SIGTERM; long waits check it and give up with [`BenchError::Interrupted`].
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag raised by SIGINT and SIGTERM.
    pub fn install() -> Result<StopFlag> {
        let flag = StopFlag::default();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag.0))
                .map_err(io_err("installing a signal handler"))?;
        }
        Ok(flag)
    }

    /// Err(Interrupted) once a signal arrived.
    pub fn check(&self) -> Result<()> {
        if self.0.load(Ordering::SeqCst) {
            Err(BenchError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Sleeps `d` in short steps, returning early with Err(Interrupted) on a signal.
    pub fn sleep(&self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        loop {
            self.check()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(20)));
        }
    }
}

/// Where a child's stdout or stderr goes.
#[derive(Debug)]
pub enum Output {
    /// Discarded.
    Null,
    /// Written to this file (created or truncated).
    File(PathBuf),
}

impl Output {
    fn stdio(&self) -> Result<Stdio> {
        match self {
            Output::Null => Ok(Stdio::null()),
            Output::File(p) => File::create(p)
                .map(Stdio::from)
                .map_err(io_err(format!("creating {}", p.display()))),
        }
    }
}

/// What to run and where.
#[derive(Debug)]
pub struct Spec<'a> {
    /// A short name for messages.
    pub name: String,
    /// The program.
    pub program: &'a Path,
    /// Its arguments.
    pub args: Vec<String>,
    /// CPUs the child (and everything it starts) may run on; empty: unrestricted.
    pub cpus: &'a [usize],
    /// stdout.
    pub stdout: Output,
    /// stderr.
    pub stderr: Output,
    /// Extra environment variables.
    pub env: Vec<(&'a str, &'a str)>,
}

/// A running child; dropping it stops it (SIGTERM, then SIGKILL after 3 s) and kills any
/// process it started that is still alive.
#[derive(Debug)]
pub struct Guard {
    name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    descendants: Vec<i32>,
}

/// Starts `spec`: pinned to its CPUs, and killed by the kernel if the harness dies.
pub fn spawn(spec: Spec<'_>) -> Result<Guard> {
    let mut cmd = Command::new(spec.program);
    cmd.args(spec.args.iter().map(OsStr::new))
        .stdin(Stdio::null())
        .stdout(spec.stdout.stdio()?)
        .stderr(spec.stderr.stdio()?);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut set = rustix::thread::CpuSet::new();
    for &c in spec.cpus {
        set.set(c);
    }
    let pin = !spec.cpus.is_empty();
    // `set` was built before the fork and is only read in the child.
    // SAFETY: runs in the forked child before exec, making only two raw syscalls through rustix
    // (prctl, sched_setaffinity) that neither allocate nor lock: async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            if pin {
                rustix::thread::sched_setaffinity(None, &set)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(io_err(format!(
        "starting {} ({})",
        spec.name,
        spec.program.display()
    )))?;
    Ok(Guard {
        name: spec.name,
        child: Some(child),
        status: None,
        descendants: Vec::new(),
    })
}

impl Guard {
    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Remembers the child's current descendants so that they are killed with it.
    pub fn adopt_descendants(&mut self) -> Vec<i32> {
        let tree = procfs::process_tree(self.pid());
        self.descendants = tree.iter().skip(1).copied().collect();
        tree
    }

    /// The exit status if the child has exited (reaping it).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.status = Some(st);
                }
            }
        }
        self.status
    }

    /// Waits up to `limit` for the child to exit by itself.
    pub fn wait_for(&mut self, limit: Duration, stop: &StopFlag) -> Result<Option<ExitStatus>> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_exited() {
                return Ok(Some(st));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            stop.sleep(Duration::from_millis(10))?;
        }
    }

    /// Sends `sig` (if still running), waits up to `grace`, then SIGKILLs the child and its
    /// remembered descendants. Returns the exit status.
    pub fn stop(&mut self, sig: Signal, grace: Duration) -> Option<ExitStatus> {
        if self.try_exited().is_none() {
            if let Some(pid) = Pid::from_raw(self.pid()) {
                let _ = rustix::process::kill_process(pid, sig);
            }
            let end = Instant::now() + grace;
            while self.try_exited().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.try_exited().is_none() {
                if let Some(c) = self.child.as_mut() {
                    let _ = c.kill();
                    if let Ok(st) = c.wait() {
                        self.status = Some(st);
                    }
                }
            }
        }
        for &d in &self.descendants {
            if procfs::alive(d) {
                if let Some(pid) = Pid::from_raw(d) {
                    let _ = rustix::process::kill_process(pid, Signal::KILL);
                }
            }
        }
        self.descendants.clear();
        self.status
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop(Signal::TERM, Duration::from_secs(3));
    }
}

/// Runs `program args` to completion (unpinned, output captured), for helper commands.
pub fn run_capture(program: &str, args: &[&str]) -> Result<std::process::Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {program}")))
}

/// The full path of `program` if it is on `PATH` (or is a path that exists).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    let extra = ["/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
