//! Real peers nobody here wrote (nginx, HAProxy, openssl), run by a scenario as child
//! processes on loopback: found or skipped, started in a scratch directory, waited for, their
//! logs read, and killed with their directory removed when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Ctx, Skip};

/// The first of `paths` that exists, or a skip naming the Debian `packages` to install.
pub fn find(paths: &[&'static str], packages: &str) -> Result<&'static str, Skip> {
    paths
        .iter()
        .copied()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| Skip(format!("{} is not installed ({packages})", paths[0])))
}

/// A scratch directory for one peer of one scenario run.
pub fn scratch(ctx: &Ctx, peer: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringlb-{peer}-{}-{}-{}",
        std::process::id(),
        ctx.config,
        ctx.scenario
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A peer process, killed and its directory removed when dropped.
pub struct Daemon {
    child: Child,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Run `command` (its output to `dir/output.log`) and wait until every address of
    /// `listening` takes connections.
    pub fn start(mut command: Command, dir: PathBuf, listening: &[SocketAddr]) -> Daemon {
        let log = dir.join("output.log");
        let out = std::fs::File::create(&log).expect("peer log");
        let err = out.try_clone().expect("peer log");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start the peer");
        let daemon = Daemon { child, dir, log };
        let started = Instant::now();
        for &addr in listening {
            while TcpStream::connect(addr).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the peer did not listen on {addr}: {}",
                    daemon.output()
                );
                thread::sleep(Duration::from_millis(10));
            }
        }
        daemon
    }

    /// What the peer wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Longest a peer may take to write the log line of a connection that has ended (nginx
/// writes a stream's line when the session ends, HAProxy a TCP proxy's when both sides have
/// closed): 15 s, longer than HAProxy's client and server timeouts in these scenarios (10 s), so a
/// session a peer holds open until a timeout still shows its line, with the termination state
/// (`%ts`) that says why.
const LOG_WAIT: Duration = Duration::from_secs(15);

/// A line that takes longer than this is reported on stderr (see [`expect_log_lines`]).
const SLOW_LOG: Duration = Duration::from_secs(3);

/// Waits (up to [`LOG_WAIT`]) until the log `read` returns has a line whose `key` is each of
/// `expected`, then asserts that each is there exactly once (one line per connection); `what`
/// names the log in messages.
pub fn expect_log_lines(
    what: &str,
    read: impl Fn() -> String,
    key: impl Fn(&str) -> Option<String>,
    expected: &[String],
) {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let text = read();
        let keys: Vec<String> = text.lines().filter_map(&key).collect();
        let count = |wanted: &String| keys.iter().filter(|k| *k == wanted).count();
        if expected.iter().all(|e| count(e) > 0) || Instant::now() > deadline {
            if Instant::now() + LOG_WAIT > deadline + SLOW_LOG {
                // Printed, not failed: a peer that ends a session late is worth a look (once
                // seen with HAProxy's front, not reproduced since), the test's point is the lines.
                eprintln!("SLOW LOG: {what} took over {SLOW_LOG:?}; the log:\n{text}");
            }
            for wanted in expected {
                assert_eq!(
                    count(wanted),
                    1,
                    "{what}: one line for {wanted:?}; the log:\n{text}"
                );
            }
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The whole line, for peers whose log format is written to be compared whole.
pub fn whole_line(line: &str) -> Option<String> {
    Some(line.to_owned())
}
