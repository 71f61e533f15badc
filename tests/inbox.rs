//! The control path into running workers, on every engine, in process: per-worker counters
//! summed over a report request equal what the test sent; a pool snapshot with a backend
//! draining sends new clients elsewhere and keeps the established one; a disabled listener
//! leaves clients waiting in the backlog until it is enabled again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringlb::config::raw::EngineName;
use ringlb::config::{BackendSpec, Config, Overrides};
use ringlb::core::backend::{BackendId, BackendState};
use ringlb::core::stats::{BackendCounters, ListenerCounters};
use ringlb::engine::inbox::{self, Message, WorkerLink, WorkerReport};
use ringlb::engine::signal::Shutdown;
use ringlb::engine::{self, plan};

/// An echo backend on loopback that counts the connections it accepted.
fn echo_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a backend");
    let addr = listener.local_addr().expect("backend address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn free_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("probe");
    probe.local_addr().expect("probe address")
}

struct Running {
    listen: SocketAddr,
    links: Vec<WorkerLink>,
    shutdown: Shutdown,
    engine: thread::JoinHandle<Result<(), engine::EngineError>>,
    config: Config,
}

fn start(engine_name: EngineName, backends: &[SocketAddr]) -> Option<Running> {
    let listen = free_addr();
    let specs: Vec<BackendSpec> = backends
        .iter()
        .map(|b| b.to_string().parse().expect("spec"))
        .collect();
    let overrides = Overrides {
        engine: Some(engine_name),
        ..Overrides::default()
    };
    let config = Config::from_quick_with(&listen.to_string(), &specs, &overrides, &[0, 0])
        .expect("valid configuration");
    let (links, inboxes) =
        inbox::pairs(engine::worker_count(&config)).expect("inboxes for every worker");
    let shutdown = Shutdown::default();
    let (kept, stopper) = (config.clone(), shutdown.clone());
    let engine = thread::spawn(move || engine::run_with_inboxes(kept, stopper, inboxes));
    let started = Instant::now();
    while !shutdown.is_up() {
        if engine.is_finished() {
            let result = engine.join().expect("engine thread");
            eprintln!("SKIP {engine_name:?}: {result:?}");
            return None;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "engine not up");
        thread::sleep(Duration::from_millis(10));
    }
    Some(Running {
        listen,
        links,
        shutdown,
        engine,
        config,
    })
}

impl Running {
    /// Every worker's report, asked for at once; also proves that whatever was sent before
    /// has been applied (each inbox is FIFO).
    fn reports(&self) -> Vec<WorkerReport> {
        let (tx, rx) = mpsc::channel();
        for link in &self.links {
            link.send(Message::Report(tx.clone()))
                .expect("worker alive");
        }
        (0..self.links.len())
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("a report"))
            .collect()
    }

    fn backend_totals(&self) -> Vec<BackendCounters> {
        let mut totals = Vec::new();
        for report in self.reports() {
            let pool = &report.backends[0];
            totals.resize(pool.len(), BackendCounters::default());
            for (total, c) in totals.iter_mut().zip(pool) {
                total.add(c);
            }
        }
        totals
    }

    fn listener_totals(&self) -> ListenerCounters {
        let mut total = ListenerCounters::default();
        for report in self.reports() {
            total.add(&report.listeners[0]);
        }
        total
    }

    fn send_all(&self, message: impl Fn() -> Message) {
        for link in &self.links {
            link.send(message()).expect("worker alive");
        }
    }

    fn stop(self) {
        self.shutdown.request();
        self.engine
            .join()
            .expect("engine thread")
            .expect("clean stop");
    }
}

fn exchange(stream: &mut TcpStream, len: usize) {
    let sent: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
    stream.write_all(&sent).expect("send");
    let mut got = vec![0u8; len];
    stream.read_exact(&mut got).expect("echo");
    assert_eq!(got, sent, "echoed intact");
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

fn control_path(engine_name: EngineName) {
    let (a, at_a) = echo_backend();
    let (b, at_b) = echo_backend();
    let Some(run) = start(engine_name, &[a, b]) else {
        return;
    };

    // Counters: exact connections and bytes, summed over workers.
    let mut sent = 0u64;
    for i in 0..10 {
        let len = 1000 + i;
        exchange(&mut connect(run.listen), len);
        sent += len as u64;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.listener_totals().active > 0 {
        assert!(Instant::now() < deadline, "connections never closed");
        thread::sleep(Duration::from_millis(10));
    }
    let totals = run.backend_totals();
    let conns: u64 = totals.iter().map(|c| c.connections).sum();
    let bytes_in: u64 = totals.iter().map(|c| c.bytes_in).sum();
    let bytes_out: u64 = totals.iter().map(|c| c.bytes_out).sum();
    assert_eq!(conns, 10, "{totals:?}");
    assert_eq!((bytes_in, bytes_out), (sent, sent), "{totals:?}");
    assert_eq!(
        conns as usize,
        at_a.load(Ordering::SeqCst) + at_b.load(Ordering::SeqCst)
    );
    assert_eq!(run.listener_totals().accepted, 10);

    // Drain B: an established connection to B keeps working; new clients all go to A.
    let mut on_b = None;
    for _ in 0..4 {
        let before = at_b.load(Ordering::SeqCst);
        let mut stream = connect(run.listen);
        exchange(&mut stream, 10);
        if at_b.load(Ordering::SeqCst) > before {
            on_b = Some(stream);
            break;
        }
    }
    let mut on_b = on_b.expect("round robin reached B");
    let pool = plan::pool_snapshots(&run.config).remove(0);
    let drained = Arc::new(pool.with_state(BackendId(1), BackendState::Draining));
    run.send_all(|| Message::Pool {
        pool: 0,
        snapshot: Arc::clone(&drained),
    });
    run.reports(); // applied everywhere
    let b_before = at_b.load(Ordering::SeqCst);
    for _ in 0..10 {
        exchange(&mut connect(run.listen), 100);
    }
    assert_eq!(at_b.load(Ordering::SeqCst), b_before, "no new client on B");
    exchange(&mut on_b, 5000);
    drop(on_b);

    // Disable the listener: a client waits in the backlog, unanswered; enabled, it is served.
    run.send_all(|| Message::Accepting {
        listener: 0,
        on: false,
    });
    run.reports();
    let accepted = run.listener_totals().accepted;
    let mut waiting = connect(run.listen);
    waiting.write_all(b"hello").expect("send into the backlog");
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 5];
    assert!(
        waiting.read(&mut buf).is_err(),
        "a disabled listener forwarded a client"
    );
    assert_eq!(run.listener_totals().accepted, accepted);
    run.send_all(|| Message::Accepting {
        listener: 0,
        on: true,
    });
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    waiting.read_exact(&mut buf).expect("served once enabled");
    assert_eq!(&buf, b"hello");
    drop(waiting);

    // How long a report takes from an idle worker (the wake-up; printed, not asserted).
    thread::sleep(Duration::from_millis(200));
    let mut took: Vec<Duration> = (0..20)
        .map(|_| {
            thread::sleep(Duration::from_millis(7));
            let started = Instant::now();
            run.reports();
            started.elapsed()
        })
        .collect();
    took.sort();
    eprintln!(
        "{engine_name:?}: report round trip from idle workers: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    run.stop();
}

#[test]
fn uring_workers_obey_their_inboxes() {
    control_path(EngineName::Uring);
}

#[test]
fn epoll_workers_obey_their_inboxes() {
    control_path(EngineName::Epoll);
}

#[test]
fn blocking_engine_obeys_its_inbox() {
    control_path(EngineName::Blocking);
}
