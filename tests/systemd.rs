//! systemd's notification protocol, against the real binary: a test plays the service manager
//! with a datagram socket in `NOTIFY_SOCKET`, as systemd does for `Type=notify` units.

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the "service manager" received, in order, until `until` is among it or `within` passed.
fn receive_until(socket: &UnixDatagram, until: &str, within: Duration, got: &mut Vec<String>) {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline && !got.iter().any(|m| m == until) {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .expect("timeout");
        if let Ok(n) = socket.recv(&mut buf) {
            got.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
    }
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let dir = std::env::temp_dir().join(format!("ringlb-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path: PathBuf = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let manager = UnixDatagram::bind(&path).expect("bind the notify socket");
    let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
    let front = TcpListener::bind("127.0.0.1:0").expect("probe a free port");
    let listen = front.local_addr().expect("address").to_string();
    drop(front);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .args([
            "run",
            "--listen",
            &listen,
            "--engine",
            "epoll",
            "--workers",
            "1",
        ])
        .args(["--shutdown-grace", "1s"])
        .args([
            "--backend",
            &backend.local_addr().expect("address").to_string(),
        ])
        .env("NOTIFY_SOCKET", &path)
        // 400 ms: a keep-alive every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .env_remove("RINGLB_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ringlb");
    let mut got = Vec::new();
    receive_until(&manager, "READY=1", Duration::from_secs(10), &mut got);
    assert!(got.iter().any(|m| m == "READY=1"), "no READY=1: {got:?}");
    // Once up, it listens: the readiness it reported is real.
    std::net::TcpStream::connect(&listen).expect("ringlb listens once it said READY=1");
    receive_until(&manager, "WATCHDOG=1", Duration::from_secs(3), &mut got);
    assert!(
        got.iter().any(|m| m == "WATCHDOG=1"),
        "no watchdog keep-alive: {got:?}"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    receive_until(&manager, "STOPPING=1", Duration::from_secs(5), &mut got);
    let status = child.wait().expect("ringlb exits");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        got.iter().any(|m| m == "STOPPING=1"),
        "no STOPPING=1: {got:?}"
    );
    assert!(status.success(), "exit status {status}");
}
