//! Peers that ringlb's own tools did not write: Python asyncio echo servers
//! (`tests/peers/asyncio_echo.py`) and Python threaded clients (`tests/peers/echo_clients.py`),
//! whose reads, writes and pacing differ from ours.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::harness::{Ctx, Launch, Outcome, Proxy, Skip};

/// Clients at once in each round (fixed by the script).
const CLIENTS: usize = 48;
/// Rounds of `CLIENTS` connections, one after another.
const ROUNDS: usize = 4;

/// The asyncio backends, stopped (stdin closed, then killed) when dropped.
struct AsyncioBackends {
    child: Child,
    stdin: Option<ChildStdin>,
    addrs: Vec<SocketAddr>,
}

impl AsyncioBackends {
    /// `count` backends in one Python process; `Err(Skip)` when python3 is not installed.
    fn start(count: usize) -> Result<AsyncioBackends, Skip> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/asyncio_echo.py");
        let mut child = match Command::new("python3")
            .args([script, &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Skip("python3 is not installed".to_owned()));
            }
            Err(e) => panic!("starting python3: {e}"),
        };
        let stdin = child.stdin.take();
        let mut line = String::new();
        let stdout = child.stdout.take().expect("python's stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the backends' ports");
        let addrs: Vec<SocketAddr> = line
            .split_whitespace()
            .map(|p| format!("127.0.0.1:{p}").parse().expect("a port"))
            .collect();
        assert_eq!(addrs.len(), count, "asyncio backends started: {line:?}");
        Ok(AsyncioBackends {
            child,
            stdin,
            addrs,
        })
    }
}

impl Drop for AsyncioBackends {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 9's reproduction: three asyncio echo backends behind ringlb, and 48 Python clients at
/// once (`tests/peers/echo_clients.py`: payloads from 0 B to 16 MiB, each sent while its echo
/// is read, then half-closed), for [`ROUNDS`] rounds. Every client gets its backend's name and
/// its exact bytes back; none is reset.
pub fn foreign_backends_concurrent(ctx: &Ctx) -> Outcome {
    let backends = AsyncioBackends::start(3)?;
    let proxy = Proxy::start(ctx, &Launch::new(&backends.addrs))?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/echo_clients.py");
    let seed = 9;
    let run = Command::new("python3")
        .args([script, &proxy.addr.port().to_string()])
        .args([seed.to_string(), ROUNDS.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run the python clients");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "python clients (seed {seed}) exited with {}:\n{report}{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let total = CLIENTS * ROUNDS;
    assert!(
        report.contains(&format!("clients {total} failed 0")),
        "python clients: {report}"
    );
    proxy.finish();
    Ok(())
}
