//! Smoke test of the epoll and blocking engines through the `ringlb` binary: bytes forwarded
//! intact both ways through an echo backend, half-close carried through, an unreachable backend
//! answered with a close, and a clean exit (status 0) on SIGTERM.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use ringlb_tools::backend::{self, BackendKind};

const PAYLOAD: usize = 3 * 1024 * 1024;
const CLIENTS: usize = 3;

/// A loopback port nobody listens on, never handed out twice in this process: ringlb binds with
/// SO_REUSEPORT, so two tests given the same port would silently share it.
fn free_port() -> SocketAddr {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
        let addr = probe.local_addr().expect("probe address");
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

fn payload(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..PAYLOAD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Balancer(Child);

impl Balancer {
    fn start(listen: SocketAddr, backends: &[SocketAddr], engine: &str, mode: &str) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlb"));
        cmd.args(["run", "--listen", &listen.to_string()]);
        for b in backends {
            cmd.args(["--backend", &b.to_string()]);
        }
        cmd.args(["--engine", engine, "--mode", mode, "--workers", "2"])
            .args([
                "--connect-timeout",
                "1s",
                "--idle-timeout",
                "2s",
                "--shutdown-grace",
                "2s",
            ])
            .stdin(Stdio::null());
        let child = cmd.spawn().expect("spawn ringlb");
        let started = Instant::now();
        while TcpStream::connect(listen).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "ringlb did not start listening"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Balancer(child)
    }

    fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                assert!(status.success(), "ringlb exited with {status}");
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "ringlb did not exit after SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Send `data`, half-close, and read the echo until end of stream.
fn echo_through(addr: SocketAddr, data: Vec<u8>) {
    let stream = TcpStream::connect(addr).expect("connect to ringlb");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let expected = data.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&data).expect("write");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut got = Vec::with_capacity(expected.len());
    (&stream).read_to_end(&mut got).expect("read echo to EOF");
    sender.join().expect("sender");
    assert_eq!(got.len(), expected.len(), "echoed length");
    assert!(got == expected, "echoed bytes differ");
}

fn smoke(engine: &str, mode: &str) {
    let echo =
        backend::spawn(BackendKind::Echo, "127.0.0.1:0".parse().unwrap()).expect("echo backend");
    // A port nobody listens on, tried first by round robin on some connections: the retry
    // moves on to the echo backend.
    let dead = free_port();
    let listen = free_port();
    let lb = Balancer::start(listen, &[dead, echo.local_addr()], engine, mode);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| thread::spawn(move || echo_through(listen, payload(i as u64 + 7))))
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    // An empty exchange: the client half-closes at once and sees end of stream.
    echo_through(listen, Vec::new());
    // A pause longer than any internal wake-up interval must not disturb a connection.
    let mut stream = TcpStream::connect(listen).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    thread::sleep(Duration::from_millis(300));
    stream.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).expect("echo after a pause");
    assert_eq!(&buf, b"ping");
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(stream.read(&mut buf).expect("EOF"), 0);
    lb.stop();
}

fn smoke_unreachable(engine: &str) {
    let listen = free_port();
    let lb = Balancer::start(listen, &[free_port()], engine, "copy");
    let mut stream = TcpStream::connect(listen).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    // Closed without data (FIN, or RST): never a hang.
    match stream.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "no close within 5 s"
        ),
    }
    lb.stop();
}

#[test]
fn epoll_copy() {
    smoke("epoll", "copy");
}

#[test]
fn epoll_splice() {
    smoke("epoll", "splice");
}

#[test]
fn epoll_auto() {
    smoke("epoll", "auto");
}

#[test]
fn epoll_unreachable_backend() {
    smoke_unreachable("epoll");
}

#[test]
fn blocking_copy() {
    smoke("blocking", "copy");
}

#[test]
fn blocking_splice() {
    smoke("blocking", "splice");
}

#[test]
fn blocking_auto() {
    smoke("blocking", "auto");
}

#[test]
fn blocking_unreachable_backend() {
    smoke_unreachable("blocking");
}
