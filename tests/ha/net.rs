//! Network namespaces for the high-availability tests: a [`Lab`] creates them with a prefix
//! unique to this run, joins them with veth pairs (never in the host's own namespace) and
//! starts processes inside them; dropping it kills every process it started (its whole
//! process group) and deletes every namespace, which takes their links with them, whether
//! the test passed or panicked. Its scratch directory (configurations, logs, sockets) is
//! under `target/tmp/ha/`, removed when the test passes and kept when it fails.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why a test cannot run here, printed and the test passes (not root, no `ip netns`, a tool
/// missing).
pub fn unavailable(tools: &[&str]) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (network namespaces)".into());
    }
    for tool in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            || Path::new("/usr/sbin").join(tool).is_file()
            || Path::new("/sbin").join(tool).is_file();
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    let probe = format!("rlbprobe{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        return Some("`ip netns add` fails here".into());
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    None
}

/// Prints why a test is skipped where libtest's capture does not hide it.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {reason}");
}

static LABS: AtomicUsize = AtomicUsize::new(0);

/// Namespaces, processes and a scratch directory, all removed on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    processes: Vec<(String, Child)>,
    pub dir: PathBuf,
}

impl Lab {
    /// A lab whose namespaces are named `rlb<pid>x<n>-NAME`.
    pub fn new(tag: &str) -> Lab {
        if LABS.load(Ordering::Relaxed) == 0 {
            remove_orphans();
        }
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("rlb{}x{n}", std::process::id());
        // Under target/: kept when a test fails, for its logs (as the scenario suite's are).
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("ha")
            .join(format!("{prefix}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Lab {
            prefix,
            namespaces: Vec::new(),
            processes: Vec::new(),
            dir,
        }
    }

    /// The full name of namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates namespace `name` with its loopback up.
    pub fn add_ns(&mut self, name: &str) {
        let ns = self.ns(name);
        run("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns);
        self.ip(name, "link set lo up");
    }

    /// `ip -n NS ARGS` (split on spaces), which must succeed.
    pub fn ip(&self, name: &str, args: &str) {
        let ns = self.ns(name);
        let mut all = vec!["-n", ns.as_str()];
        all.extend(args.split_whitespace());
        run("ip", &all);
    }

    /// Many `ip` commands in namespace `name` at once (`ip -batch`), one a line.
    pub fn ip_batch(&self, name: &str, lines: &str) {
        let ns = self.ns(name);
        let mut child = Command::new("ip")
            .args(["-n", &ns, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("ip -batch");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(lines.as_bytes())
            .expect("ip -batch input");
        assert!(
            child.wait().expect("ip -batch").success(),
            "ip -batch in {ns}"
        );
    }

    /// `sysctl -w KEY=VALUE` in namespace `name`.
    pub fn sysctl(&self, name: &str, setting: &str) {
        run(
            "ip",
            &["netns", "exec", &self.ns(name), "sysctl", "-qw", setting],
        );
    }

    /// A veth pair: `a_if` in namespace `a`, `b_if` in `b`, both up.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        self.ip(
            a,
            &format!(
                "link add {a_if} type veth peer name {b_if} netns {}",
                self.ns(b)
            ),
        );
        self.ip(a, &format!("link set {a_if} up"));
        self.ip(b, &format!("link set {b_if} up"));
    }

    /// A command run to completion inside namespace `name`: its success and output.
    pub fn exec(&self, name: &str, program: &str, args: &[&str]) -> (bool, String) {
        let ns = self.ns(name);
        let mut all = vec!["netns", "exec", ns.as_str(), program];
        all.extend_from_slice(args);
        match Command::new("ip").args(&all).output() {
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                (out.status.success(), text)
            }
            Err(e) => (false, e.to_string()),
        }
    }

    /// Starts `program` inside namespace `name` in a process group of its own, its output
    /// in `<dir>/<label>.log`; `label` names it for [`Lab::kill`].
    pub fn spawn(&mut self, name: &str, label: &str, program: &Path, args: &[&str]) {
        self.spawn_env(name, label, program, args, &[]);
    }

    /// [`Lab::spawn`] with environment variables.
    pub fn spawn_env(
        &mut self,
        name: &str,
        label: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) {
        use std::os::unix::process::CommandExt as _;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{label}.log")))
            .expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(name)])
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {label}: {e}"));
        self.processes.push((label.to_owned(), child));
    }

    /// Sends `signal` to process `label`'s group and, for SIGKILL, reaps it.
    pub fn kill(&mut self, label: &str, signal: i32) {
        let Some(i) = self.processes.iter().position(|(l, _)| l == label) else {
            panic!("no process {label}");
        };
        let pid = self.processes[i].1.id() as i32;
        // SAFETY: kill(2) on a process group this lab created; no memory is involved.
        unsafe { libc::kill(-pid, signal) };
        if signal == libc::SIGKILL || signal == libc::SIGTERM {
            let (_, mut child) = self.processes.remove(i);
            let _ = child.wait();
        }
    }

    /// Whether process `label` is still running.
    pub fn running(&mut self, label: &str) -> bool {
        self.processes
            .iter_mut()
            .find(|(l, _)| l == label)
            .is_some_and(|(_, c)| c.try_wait().ok().flatten().is_none())
    }

    /// The last lines of process `label`'s log, for a failure message.
    pub fn log_tail(&self, label: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{label}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for line in &lines[lines.len().saturating_sub(15)..] {
            let _ = writeln!(out, "  {label}: {line}");
        }
        out
    }

    /// Writes `text` to `<dir>/<file>` and returns its path.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, text).expect("scratch file");
        path
    }

    /// The `/run/netns` file of namespace `name`, for `setns`.
    pub fn ns_file(&self, name: &str) -> PathBuf {
        Path::new("/run/netns").join(self.ns(name))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            // SAFETY: as in `kill`: a process group this lab created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        }
        for (_, child) in &mut self.processes {
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Deleting a namespace deletes its links; a veth pair goes with either end.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Deletes the namespaces of earlier runs that could not clean up (killed outright): those
/// named `rlb<pid>x...` whose process is gone.
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("rlb")
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// Runs `program ARGS`, which must succeed.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `ready` holds, at most `limit`.
pub fn wait_for(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Moves the calling thread into the network namespace at `file`: sockets it creates from
/// then on belong there (other threads are untouched).
pub fn enter(file: &Path) {
    let ns = std::fs::File::open(file).expect("namespace file");
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&ns),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .expect("setns");
}
