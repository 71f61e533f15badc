//! Hostile clients must not starve the others: clients that never read their replies pin what
//! the proxy received for them, and that must not leave other connections without buffers.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::harness::{Ctx, Launch, Outcome, Proxy, join};

/// Request/response exchanges of the well-behaved client.
const EXCHANGES: usize = 100;
/// Longest the well-behaved client waits for one answer before calling itself starved.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// A trickling backend's message, and its pause between two.
const TRICKLE: (usize, Duration) = (100, Duration::from_millis(5));

/// What the backend sends to a client that does not read.
#[derive(Clone, Copy, Debug)]
enum Feed {
    /// 16 KiB writes, as fast as the proxy takes them.
    Stream,
    /// [`TRICKLE`]: small segments, each of which may take a whole receive buffer of the
    /// proxy, and never look like bulk (auto mode keeps them in copy mode).
    Trickle,
}

impl Feed {
    /// The first byte a client sends to ask for this feed.
    fn request(self) -> u8 {
        match self {
            Feed::Stream => b'S',
            Feed::Trickle => b'T',
        }
    }
}

/// One attack of issue 10, item 2: `clients` non-readers fed `feed`, on one worker.
#[derive(Clone, Copy, Debug)]
struct Attack {
    clients: usize,
    feed: Feed,
}

/// A backend that streams to connections whose first byte is `S`, trickles to those whose
/// first byte is `T`, and echoes the others.
/// Every connection gets a thread; all stop once `stop` is set.
fn mixed_backend(stop: Arc<AtomicBool>) -> (SocketAddr, thread::JoinHandle<()>) {
    // A long backlog: 600 connections arrive in a burst, faster than one thread accepts
    // them (std's listeners get 128, and a refused connect would leave a client with no
    // backend at all).
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("backend socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    socket.bind(&any.into()).expect("bind the mixed backend");
    socket.listen(4096).expect("listen");
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().expect("backend address");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    // One thread writes every trickle, so that 400 of them cost one wake-up per period
    // rather than 400 (the test's own load would otherwise dominate the latency it prints).
    let trickles: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let trickler = {
        let (trickles, stop) = (Arc::clone(&trickles), Arc::clone(&stop));
        thread::spawn(move || trickle(&trickles, &stop))
    };
    let handle = thread::spawn(move || {
        let mut served = vec![trickler];
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (stop, trickles) = (Arc::clone(&stop), Arc::clone(&trickles));
                    served.push(thread::spawn(move || serve(stream, &stop, &trickles)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("mixed backend accept: {e}"),
            }
        }
        for s in served {
            let _ = s.join();
        }
    });
    (addr, handle)
}

/// Every [`TRICKLE`] period, one message to each trickled stream that has room for it.
fn trickle(streams: &Mutex<Vec<TcpStream>>, stop: &AtomicBool) {
    let message = [0x74u8; TRICKLE.0];
    while !stop.load(Ordering::Relaxed) {
        let mut streams = streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain_mut(|stream| match stream.write(&message) {
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        });
        drop(streams);
        thread::sleep(TRICKLE.1);
    }
}

fn serve(mut stream: TcpStream, stop: &AtomicBool, trickles: &Mutex<Vec<TcpStream>>) {
    stream.set_nonblocking(false).expect("blocking stream");
    // Short timeouts so that every thread notices `stop` soon.
    let tick = Some(Duration::from_millis(100));
    stream.set_read_timeout(tick).expect("read timeout");
    stream.set_write_timeout(tick).expect("write timeout");
    let mut first = [0u8; 1];
    loop {
        match stream.read(&mut first) {
            Ok(0) => return,
            Ok(_) => break,
            Err(_) if !stop.load(Ordering::Relaxed) => {}
            Err(_) => return,
        }
    }
    if first[0] == b'T' {
        if stream.set_nonblocking(true).is_ok() {
            trickles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(stream);
        }
        return;
    }
    if first[0] == b'S' {
        let chunk = vec![0x5a; 16 << 10];
        while !stop.load(Ordering::Relaxed) {
            match stream.write(&chunk) {
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(_) => return,
            }
        }
        return;
    }
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => return,
        }
    }
}

/// A socket timeout expired (reported as either kind).
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A client that asks for `feed` with a 4 KiB receive buffer and then never reads.
fn non_reader(addr: SocketAddr, feed: Feed) -> Option<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket.set_recv_buffer_size(4096).ok()?;
    socket.connect(&addr.into()).ok()?;
    socket.send(&[feed.request()]).ok()?;
    Some(socket)
}

/// Issue 10, item 2: 400 clients on one worker ask the backend for a stream and never read
/// it, so the proxy holds what it received for them. Meanwhile a well-behaved client on the
/// same worker gets every one of its 100 answers, each within 3 s (it got none before the fix
/// in copy mode, where the non-readers pinned every buffer of the worker's shared ring). The
/// 99th percentile of its round trips is printed.
pub fn non_readers_400_do_not_starve_others(ctx: &Ctx) -> Outcome {
    starve(
        ctx,
        Attack {
            clients: 400,
            feed: Feed::Stream,
        },
    )
}

/// As [`non_readers_400_do_not_starve_others`], with 1,500 non-readers on the one worker.
pub fn non_readers_1500_do_not_starve_others(ctx: &Ctx) -> Outcome {
    starve(
        ctx,
        Attack {
            clients: 1500,
            feed: Feed::Stream,
        },
    )
}

/// As [`non_readers_400_do_not_starve_others`], with a backend that sends the non-readers a
/// 100-byte message every 5 ms: small segments, each of which may take a whole receive
/// buffer, and which auto mode never moves to splice.
pub fn trickling_non_readers_do_not_starve_others(ctx: &Ctx) -> Outcome {
    starve(
        ctx,
        Attack {
            clients: 400,
            feed: Feed::Trickle,
        },
    )
}

fn starve(ctx: &Ctx, attack: Attack) -> Outcome {
    let _ = ringlb_tools::raise_nofile_limit();
    let stop = Arc::new(AtomicBool::new(false));
    let (backend, served) = mixed_backend(Arc::clone(&stop));
    // Non-readers move no bytes: with the suite's 2 s idle timeout they would be closed, and
    // their buffers freed, before the starvation showed.
    let launch = Launch::new(&[backend])
        .idle(Duration::from_secs(60))
        .workers(1);
    let proxy = Proxy::start(ctx, &launch)?;
    let hogs: Vec<Socket> = (0..attack.clients)
        .filter_map(|i| {
            if i % 50 == 49 {
                // Let the backend's accept loop keep up.
                thread::sleep(Duration::from_millis(20));
            }
            non_reader(proxy.addr, attack.feed)
        })
        .collect();
    assert!(
        hogs.len() * 100 >= attack.clients * 95,
        "only {} of {} non-readers connected",
        hogs.len(),
        attack.clients
    );
    // Let the streams fill what the proxy will hold for the non-readers.
    thread::sleep(Duration::from_millis(1500));
    let mut client = TcpStream::connect(proxy.addr).expect("the well-behaved client connects");
    client
        .set_read_timeout(Some(ANSWER_WITHIN))
        .expect("read timeout");
    client.write_all(b"E").expect("choose echo");
    let mut rtts = Vec::with_capacity(EXCHANGES);
    for i in 0..EXCHANGES {
        let request = [i as u8; 64];
        let started = Instant::now();
        client.write_all(&request).expect("send a request");
        let mut answer = [0u8; 64];
        if let Err(e) = client.read_exact(&mut answer) {
            panic!(
                "answer {i} of {EXCHANGES} not received within {ANSWER_WITHIN:?} with {} \
                 non-reading clients connected: {e}",
                hogs.len()
            );
        }
        assert_eq!(answer, request, "answer {i}");
        rtts.push(started.elapsed());
    }
    rtts.sort();
    eprintln!(
        "{} {:?} non-readers of {}, one worker: p99 round trip {:?}, median {:?}",
        hogs.len(),
        attack.feed,
        ctx.config,
        rtts[rtts.len() * 99 / 100],
        rtts[rtts.len() / 2]
    );
    stop.store(true, Ordering::Relaxed);
    drop(hogs);
    drop(client);
    join(served, "mixed backend");
    proxy.finish();
    Ok(())
}
