//! The checker: one thread, never a worker, that runs every due check at once with
//! non-blocking sockets and one `poll` per turn, so that a black-holed backend holds up no
//! other check. What a check sends and how its answer is judged is in `probe.rs`; what the
//! results mean (rise, fall, the backend's state) is the [`Sink`]'s business.
//!
//! Each backend is checked every `interval` of its pool; the first checks of a pool's
//! backends are spread over one interval (backend `i` of `n` at `i/n` of it), so that checks
//! of many backends do not fire together. The list of backends is read again every
//! [`REFRESH`]: backends added, removed, drained or reloaded are followed within it.

use std::collections::BTreeMap;
use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use socket2::{Domain, Socket, Type};

use super::probe::{self, Judged};
use crate::config::Health;
use crate::engine::rate_limit::RateLimit;

/// How often the list of backends to check is read again.
pub const REFRESH: Duration = Duration::from_secs(1);
/// Longest sleep of the checker (so that it notices its stop flag).
const MAX_WAIT: Duration = Duration::from_millis(100);

/// One backend to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pool: usize,
    pub backend: usize,
    /// Where to connect: the backend's address, with the check's port when it has one.
    pub addr: SocketAddr,
    pub health: Health,
}

/// Where the checker gets its targets and leaves its results.
pub trait Sink: Send + Sync {
    /// Every backend to check now.
    fn targets(&self) -> Vec<Target>;
    /// One finished check of `target`: `Err(reason)` when it failed.
    fn record(&self, target: &Target, result: Result<(), String>);
}

/// Start the checker thread; it runs until `stop` is set.
pub fn spawn(sink: Arc<dyn Sink>, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ringlb-health".into())
        .spawn(move || Checker::default().run(sink.as_ref(), &stop))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Connecting,
    Sending,
    Receiving,
}

/// One check in flight.
struct Probe {
    target: Target,
    socket: Socket,
    stage: Stage,
    deadline: Instant,
    request: Vec<u8>,
    sent: usize,
    answer: Vec<u8>,
}

/// A backend's next check.
struct Due {
    target: Target,
    next: Instant,
}

#[derive(Default)]
struct Checker {
    /// By (pool, backend).
    due: BTreeMap<(usize, usize), Due>,
    probes: Vec<Probe>,
    refresh: Option<Instant>,
    /// Warnings about checks that could not start for a local shortage.
    local_errors: RateLimit,
}

/// A failure of this host rather than of the backend checked.
fn local_failure(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

impl Checker {
    fn run(&mut self, sink: &dyn Sink, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self.refresh.is_none_or(|at| now >= at) {
                self.follow(sink.targets(), now);
                self.refresh = Some(now + REFRESH);
            }
            self.start_due(sink, now);
            self.wait(sink);
            self.expire(sink, Instant::now());
        }
    }

    /// Take the current list of targets: new ones spread over their interval, known ones keep
    /// their schedule (unless their check changed), gone ones are dropped.
    fn follow(&mut self, targets: Vec<Target>, now: Instant) {
        let n = targets.len().max(1) as u32;
        let mut due = BTreeMap::new();
        for (i, target) in targets.into_iter().enumerate() {
            let key = (target.pool, target.backend);
            let next = match self.due.remove(&key) {
                Some(old) if old.target == target => old.next,
                _ => now + target.health.interval * i as u32 / n,
            };
            due.insert(key, Due { target, next });
        }
        self.due = due;
    }

    fn start_due(&mut self, sink: &dyn Sink, now: Instant) {
        for due in self.due.values_mut() {
            if now < due.next {
                continue;
            }
            let key = (due.target.pool, due.target.backend);
            let in_flight = self
                .probes
                .iter()
                .any(|p| (p.target.pool, p.target.backend) == key);
            due.next = (due.next + due.target.health.interval).max(now);
            if in_flight {
                continue;
            }
            match start(&due.target, now) {
                Ok(probe) => self.probes.push(probe),
                // Out of fds, memory or local ports: no news of the backend, and counting it
                // as a failure would take every backend down for a local shortage.
                Err(e) if local_failure(&e) => {
                    if let Some(suppressed) = self.local_errors.allow(now) {
                        tracing::warn!(%e, suppressed, "health check not started");
                    }
                }
                Err(e) => sink.record(&due.target, Err(format!("connect: {e}"))),
            }
        }
    }

    /// One `poll` over the checks in flight, until the next deadline or due check; then
    /// every check that can go on does.
    fn wait(&mut self, sink: &dyn Sink) {
        let now = Instant::now();
        let until = self
            .probes
            .iter()
            .map(|p| p.deadline)
            .chain(self.due.values().map(|d| d.next))
            .chain(self.refresh)
            .min()
            .map_or(MAX_WAIT, |at| {
                at.saturating_duration_since(now).min(MAX_WAIT)
            });
        if self.probes.is_empty() {
            std::thread::sleep(until);
            return;
        }
        let mut fds: Vec<PollFd<'_>> = self
            .probes
            .iter()
            .map(|p| {
                let flags = match p.stage {
                    Stage::Connecting | Stage::Sending => PollFlags::OUT,
                    Stage::Receiving => PollFlags::IN,
                };
                PollFd::new(&p.socket, flags)
            })
            .collect();
        let timeout = Timespec::try_from(until).unwrap_or_default();
        if poll(&mut fds, Some(&timeout)).is_err() {
            return;
        }
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.revents().is_empty())
            .map(|(i, _)| i)
            .collect();
        drop(fds);
        // From the last: a finished check is swapped out with one already handled.
        for &i in ready.iter().rev() {
            self.step(i, sink);
        }
    }

    /// Move check `i` on after `poll` reported it ready; a finished one is removed.
    fn step(&mut self, i: usize, sink: &dyn Sink) {
        let probe = &mut self.probes[i];
        let outcome = match probe.stage {
            Stage::Connecting => match probe.socket.take_error() {
                Ok(None) => {
                    probe.stage = Stage::Sending;
                    probe.send()
                }
                Ok(Some(e)) | Err(e) => Some(Err(format!("connect: {e}"))),
            },
            Stage::Sending => probe.send(),
            Stage::Receiving => probe.receive(),
        };
        if let Some(result) = outcome {
            let probe = self.probes.swap_remove(i);
            sink.record(&probe.target, result);
        }
    }

    /// Fail every check past its deadline.
    fn expire(&mut self, sink: &dyn Sink, now: Instant) {
        let mut i = 0;
        while i < self.probes.len() {
            if now < self.probes[i].deadline {
                i += 1;
                continue;
            }
            let probe = self.probes.swap_remove(i);
            let what = match probe.stage {
                Stage::Connecting => "no connect",
                Stage::Sending => "could not send",
                Stage::Receiving => "no answer",
            };
            let timeout = probe.target.health.timeout;
            sink.record(
                &probe.target,
                Err(format!("timeout: {what} within {timeout:?}")),
            );
        }
    }
}

/// Begin a check of `target`: a non-blocking connect.
fn start(target: &Target, now: Instant) -> io::Result<Probe> {
    let socket = Socket::new(
        Domain::for_address(target.addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    match socket.connect(&target.addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(Probe {
        request: probe::request(&target.health.check, target.addr),
        target: target.clone(),
        socket,
        stage: Stage::Connecting,
        deadline: now + target.health.timeout,
        sent: 0,
        answer: Vec::new(),
    })
}

impl Probe {
    /// Send what is left of the request; the result once the check is over.
    fn send(&mut self) -> Option<Result<(), String>> {
        while self.sent < self.request.len() {
            match self.socket.send(&self.request[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(Err(format!("send: {e}"))),
            }
        }
        if probe::done_when_sent(&self.target.health.check) {
            return Some(Ok(()));
        }
        self.stage = Stage::Receiving;
        None
    }

    /// Read what arrived and judge it; the result once the check is over.
    fn receive(&mut self) -> Option<Result<(), String>> {
        let mut buf = [0u8; 1024];
        loop {
            let room = probe::MAX_ANSWER
                .saturating_sub(self.answer.len())
                .min(buf.len());
            let (eof, n) = match (&self.socket).read(&mut buf[..room.max(1)]) {
                Ok(0) => (true, 0),
                Ok(n) => (false, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(Err(format!("receive: {e}"))),
            };
            self.answer.extend_from_slice(&buf[..n]);
            match probe::judge(&self.target.health.check, &self.answer, eof) {
                Judged::Pass => return Some(Ok(())),
                Judged::Fail(reason) => return Some(Err(reason)),
                Judged::NeedMore if eof => return Some(Err("closed early".into())),
                Judged::NeedMore => {}
            }
        }
    }
}

impl AsFd for Probe {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;

    use super::*;
    use crate::config::{Check, StatusMatch};

    #[derive(Default)]
    struct Recorder {
        targets: Vec<Target>,
        results: Mutex<Vec<(usize, Result<(), String>)>>,
    }

    impl Sink for Recorder {
        fn targets(&self) -> Vec<Target> {
            self.targets.clone()
        }

        fn record(&self, target: &Target, result: Result<(), String>) {
            let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
            results.push((target.backend, result));
        }
    }

    fn target(backend: usize, addr: SocketAddr, check: Check) -> Target {
        Target {
            pool: 0,
            backend,
            addr,
            health: Health {
                check,
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(150),
                rise: 1,
                fall: 1,
                port: None,
            },
        }
    }

    /// A server that answers every connection with `answer` and closes.
    fn answering(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = [0u8; 512];
                let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
                let _ = (&stream).read(&mut request);
                let _ = stream.write_all(answer);
            }
        });
        addr
    }

    #[test]
    fn every_kind_of_check_passes_and_fails_as_it_should() {
        let open = TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr")
        };
        // A full accept queue: SYNs are dropped and connects hang.
        let hole = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        hole.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
            .expect("bind");
        hole.listen(0).expect("listen");
        let hole_addr = hole.local_addr().expect("addr").as_socket().expect("ip");
        let _fillers: Vec<_> = (0..3)
            .filter_map(|_| TcpStream::connect_timeout(&hole_addr, Duration::from_millis(100)).ok())
            .collect();
        let http = |expect| Check::Http {
            path: "/".into(),
            expect,
        };
        let recorder = Arc::new(Recorder {
            targets: vec![
                target(0, open.local_addr().expect("addr"), Check::Tcp),
                target(1, closed, Check::Tcp),
                target(2, hole_addr, Check::Tcp),
                target(
                    3,
                    answering(b"HTTP/1.1 200 OK\r\n\r\n"),
                    http(StatusMatch::Class(2)),
                ),
                target(
                    4,
                    answering(b"HTTP/1.1 503 Busy\r\n\r\n"),
                    http(StatusMatch::Class(2)),
                ),
                target(
                    5,
                    answering(b"+PONG\r\n"),
                    Check::SendExpect {
                        send: b"PING\r\n".to_vec(),
                        expect: b"+PONG".to_vec(),
                    },
                ),
            ],
            ..Recorder::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn(recorder.clone(), stop.clone()).expect("spawn");
        std::thread::sleep(Duration::from_millis(900));
        stop.store(true, Ordering::Relaxed);
        handle.join().expect("checker");
        let results = recorder.results.lock().expect("lock");
        let of = |b: usize| -> Vec<&Result<(), String>> {
            results
                .iter()
                .filter(|(i, _)| *i == b)
                .map(|(_, r)| r)
                .collect()
        };
        for (b, passes) in [
            (0, true),
            (1, false),
            (2, false),
            (3, true),
            (4, false),
            (5, true),
        ] {
            let got = of(b);
            assert!(got.len() >= 3, "backend {b}: {got:?}");
            assert!(
                got.len() <= 6,
                "backend {b} checked about every 200 ms: {got:?}"
            );
            assert!(
                got.iter().all(|r| r.is_ok() == passes),
                "backend {b}: {got:?}"
            );
        }
        assert!(
            of(1)
                .iter()
                .all(|r| matches!(r, Err(e) if e.starts_with("connect")))
        );
        assert!(
            of(2)
                .iter()
                .all(|r| matches!(r, Err(e) if e.contains("timeout")))
        );
        assert!(
            of(4)
                .iter()
                .all(|r| matches!(r, Err(e) if e.contains("503")))
        );
    }
}
