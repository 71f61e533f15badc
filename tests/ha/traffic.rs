//! Traffic for the high-availability tests: a backend process that names itself, and clients
//! (threads moved into the client namespace) that record which backend and node answered.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

/// The environment variable that turns this test binary into a backend (see
/// [`serve_if_asked`]): `NAME LISTEN-ADDRESS`.
pub const BACKEND_ENV: &str = "RINGLB_HA_BACKEND";

/// When [`BACKEND_ENV`] is set, serve as backend NAME on its address until killed: each
/// client is sent `NAME PEER-IP\n` (PEER-IP: the ringlb node that connected), then whatever
/// it sends is echoed. Otherwise returns at once.
pub fn serve_if_asked() {
    let Ok(spec) = std::env::var(BACKEND_ENV) else {
        return;
    };
    let (name, addr) = spec.split_once(' ').expect("NAME ADDRESS");
    let listener = TcpListener::bind(addr).expect("backend bind");
    let name = name.to_owned();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let name = name.clone();
        std::thread::spawn(move || {
            let peer = stream.peer_addr().map(|p| p.ip().to_string());
            let hello = format!("{name} {}\n", peer.unwrap_or_default());
            if stream.write_all(hello.as_bytes()).is_err() {
                return;
            }
            let mut buf = [0u8; 512];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

/// The backend's greeting: its name and the node that connected to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub backend: String,
    pub node: String,
}

/// A connection from `src` to `dst`, within `timeout`, with its greeting read.
pub fn connect(
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<(TcpStream, Answer)> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    socket.connect_timeout(&SockAddr::from(dst), timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (Some(backend), Some(node)) = (words.next(), words.next()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("no greeting: {line:?}"),
        ));
    };
    let answer = Answer {
        backend: backend.to_owned(),
        node: node.to_owned(),
    };
    Ok((stream, answer))
}

/// Runs `work` on a thread inside the namespace at `ns` and returns its result.
pub fn in_ns<T: Send + 'static>(ns: PathBuf, work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        super::net::enter(&ns);
        work()
    })
    .join()
    .expect("client thread")
}

/// One new connection of a [`Load`]: when it started and what came of it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Instant,
    pub client: IpAddr,
    pub answer: Option<Answer>,
}

/// A steady connection rate from many client addresses to one address, recorded.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Attempt>>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// New connections to `dst` from `clients` in turn, one every `every`, each given
    /// `timeout`; stops by itself after `limit`.
    pub fn start(
        ns: PathBuf,
        clients: Vec<IpAddr>,
        dst: SocketAddr,
        every: Duration,
        limit: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                super::net::enter(&ns);
                let start = Instant::now();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                    let client = clients[i % clients.len()];
                    i += 1;
                    let at = Instant::now();
                    let answer = connect(client, dst, Duration::from_millis(150))
                        .ok()
                        .map(|(_, a)| a);
                    log.lock()
                        .expect("log")
                        .push(Attempt { at, client, answer });
                    std::thread::sleep(every.saturating_sub(at.elapsed()));
                }
            })
        };
        Load {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// The attempts so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.log.lock().expect("log").clone()
    }

    /// Stops and returns every attempt.
    pub fn finish(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.attempts()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What happened to new connections after an event at `event`.
#[derive(Debug)]
pub struct Outage {
    /// From the event to the first new connection served by another node than before it
    /// (when the node changed), or to the first one served after the last failure (when it
    /// did not); zero when none failed and the node stayed.
    pub duration: Duration,
    pub failed: usize,
    /// Node serving before and after.
    pub before: Option<String>,
    pub after: Option<String>,
}

pub fn outage(attempts: &[Attempt], event: Instant) -> Outage {
    let before = attempts
        .iter()
        .rev()
        .find(|a| a.at < event && a.answer.is_some())
        .and_then(|a| a.answer.clone().map(|a| a.node));
    let later: Vec<&Attempt> = attempts.iter().filter(|a| a.at >= event).collect();
    let failed = later.iter().filter(|a| a.answer.is_none()).count();
    let after = later
        .iter()
        .rev()
        .find_map(|a| a.answer.clone().map(|a| a.node));
    let served_at = |a: &&Attempt| a.at.duration_since(event);
    let duration = if after.is_some() && after != before {
        later
            .iter()
            .find(|a| {
                a.answer
                    .as_ref()
                    .is_some_and(|x| Some(&x.node) == after.as_ref())
            })
            .map_or(Duration::MAX, served_at)
    } else {
        match later.iter().rposition(|a| a.answer.is_none()) {
            None => Duration::ZERO,
            Some(i) => later[i + 1..]
                .iter()
                .find(|a| a.answer.is_some())
                .map_or(Duration::MAX, served_at),
        }
    };
    Outage {
        duration,
        failed,
        before,
        after,
    }
}

/// From `event` to the first new connection served after the last one that failed after
/// it (zero when none failed), and how many failed.
pub fn failure_window(attempts: &[Attempt], event: Instant) -> (Duration, usize) {
    let later: Vec<&Attempt> = attempts.iter().filter(|a| a.at >= event).collect();
    let failed = later.iter().filter(|a| a.answer.is_none()).count();
    let window = match later.iter().rposition(|a| a.answer.is_none()) {
        None => Duration::ZERO,
        Some(i) => later[i + 1..]
            .iter()
            .find(|a| a.answer.is_some())
            .map_or(Duration::MAX, |a| a.at.duration_since(event)),
    };
    (window, failed)
}

/// Established connections kept busy: each sends a line every `every` and expects it back.
/// A connection that errs (reset by a node that never had it, or gone with its node) is
/// counted broken.
#[derive(Debug)]
pub struct Held {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<HeldReport>>,
}

#[derive(Debug, Default)]
pub struct HeldReport {
    /// The greeting of each connection opened.
    pub answers: Vec<Answer>,
    /// Whether each one broke, by index, and when.
    pub broken: Vec<Option<Instant>>,
}

impl HeldReport {
    /// Of the connections whose node's address passes `node`: how many broke, and how many
    /// there were.
    pub fn broken_where(&self, node: impl Fn(&str) -> bool) -> (usize, usize) {
        let chosen: Vec<usize> = (0..self.answers.len())
            .filter(|&i| node(&self.answers[i].node))
            .collect();
        let broken = chosen.iter().filter(|&&i| self.broken[i].is_some()).count();
        (broken, chosen.len())
    }
}

impl Held {
    /// One connection from each of `clients` to `dst`, opened before this returns, then kept
    /// busy on a thread for at most `limit`.
    pub fn start(
        ns: PathBuf,
        clients: Vec<IpAddr>,
        dst: SocketAddr,
        every: Duration,
        limit: Duration,
    ) -> Held {
        let stop = Arc::new(AtomicBool::new(false));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                super::net::enter(&ns);
                let mut streams = Vec::new();
                let mut report = HeldReport::default();
                for client in clients {
                    let (stream, answer) =
                        connect(client, dst, Duration::from_secs(1)).expect("held connection");
                    streams.push(Some(stream));
                    report.answers.push(answer);
                    report.broken.push(None);
                }
                let _ = opened_tx.send(());
                let start = Instant::now();
                let mut buf = [0u8; 16];
                while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                    let round = Instant::now();
                    for (i, slot) in streams.iter_mut().enumerate() {
                        let Some(stream) = slot else { continue };
                        let ok = stream.write_all(b"ping\n").is_ok()
                            && stream.read_exact(&mut buf[..5]).is_ok()
                            && &buf[..5] == b"ping\n";
                        if !ok {
                            report.broken[i] = Some(Instant::now());
                            *slot = None;
                        }
                    }
                    std::thread::sleep(every.saturating_sub(round.elapsed()));
                }
                report
            })
        };
        opened_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("held connections opened");
        Held {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> HeldReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("held connections thread")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
