//! Backend limits, the FIFO waiting queue and admission rates, against backends that count
//! what they see.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringlb::control::client::{Endpoint, request};

use crate::control::admin_socket;
use crate::harness::{Ctx, Launch, Outcome, Proxy, connect};

/// The index a client sends that the backend holds until told to let it go.
const HOLD: u32 = u32::MAX;
/// The index recorded for a connection whose index has not been read (yet).
const UNREAD: u32 = u32::MAX - 1;

/// A backend that reads a 4-byte index from each connection, records it with the time,
/// answers `ok <index>\n` and closes, counting the connections it holds open; a client with
/// index [`HOLD`] is held until [`Counting::release`].
struct Counting {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(u32, Instant)>>>,
    hold: Arc<AtomicBool>,
}

impl Counting {
    fn start(delay: Duration) -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(AtomicBool::new(true));
        let (o, m, s, h) = (
            Arc::clone(&open),
            Arc::clone(&most),
            Arc::clone(&seen),
            Arc::clone(&hold),
        );
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // Counted as soon as accepted: what the limit promises the backend.
                let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                // Its place in accept order, whenever its thread learns its index.
                let place = {
                    let mut seen = s.lock().expect("seen");
                    seen.push((UNREAD, Instant::now()));
                    seen.len() - 1
                };
                let (o, s, h) = (Arc::clone(&o), Arc::clone(&s), Arc::clone(&h));
                thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(move || serve(stream, place, delay, &o, &s, &h))
                    .expect("backend thread");
            }
        });
        Counting {
            addr,
            open,
            most,
            seen,
            hold,
        }
    }

    fn release(&self) {
        self.hold.store(false, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<(u32, Instant)> {
        self.seen.lock().expect("seen").clone()
    }
}

fn serve(
    mut stream: TcpStream,
    place: usize,
    delay: Duration,
    open: &AtomicUsize,
    seen: &Mutex<Vec<(u32, Instant)>>,
    hold: &AtomicBool,
) {
    let mut index = [0u8; 4];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    if stream.read_exact(&mut index).is_ok() {
        let index = u32::from_be_bytes(index);
        seen.lock().expect("seen")[place].0 = index;
        if index == HOLD {
            while hold.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(2));
            }
        }
        thread::sleep(delay);
        let _ = stream.write_all(format!("ok {index}\n").as_bytes());
    }
    // Uncounted before the close: a new connection may only come after it.
    open.fetch_sub(1, Ordering::SeqCst);
}

/// A client that takes `backend`'s only slot and keeps it until [`Counting::release`].
fn hold_the_slot(proxy: &Proxy, backend: &Counting) -> TcpStream {
    let holder = client(proxy, HOLD);
    let started = Instant::now();
    while backend.seen().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the holder never arrived"
        );
        thread::sleep(Duration::from_millis(1));
    }
    holder
}

/// A client that sent `index` at once (ringlb may not read it yet).
fn client(proxy: &Proxy, index: u32) -> TcpStream {
    let mut stream = connect(proxy.addr);
    stream
        .write_all(&index.to_be_bytes())
        .expect("send the index");
    stream
}

/// How a client that ringlb turns away at once sees it: the reset may come before `connect`
/// has returned (the handshake completes in the kernel, then ringlb accepts and resets), or
/// after.
fn turned_away(addr: SocketAddr) -> std::io::Error {
    match TcpStream::connect(addr) {
        Err(e) => e,
        Ok(mut stream) => {
            // A reset that came first fails the write, and only once: later reads see EOF.
            if let Err(e) = stream.write_all(&3u32.to_be_bytes()) {
                return e;
            }
            let started = Instant::now();
            match answer(&mut stream, Duration::from_secs(2)) {
                Err(e) => e,
                Ok(text) => panic!("not turned away: {text:?} after {:?}", started.elapsed()),
            }
        }
    }
}

/// Reads the whole answer (until the backend's close) within `limit`.
fn answer(stream: &mut TcpStream, limit: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(limit))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

fn file(ctx: &Ctx, pool_keys: &str, listener_keys: &str, backends: &[(SocketAddr, u32)]) -> String {
    let mut text = format!(
        "[admin]\nsocket = \"{}\"\n[[listener]]\nbind = \"{{listen}}\"\npool = \"web\"\n\
         {listener_keys}\n[[pool]]\nname = \"web\"\nalgorithm = \"round-robin\"\n{pool_keys}\n",
        admin_socket(ctx).display()
    );
    for (addr, limit) in backends {
        text.push_str(&format!("[[pool.backend]]\naddress = \"{addr}\"\n"));
        if *limit > 0 {
            text.push_str(&format!("max_connections = {limit}\n"));
        }
    }
    text
}

pub fn api(ctx: &Ctx, path: &str) -> serde_json::Value {
    let answer = request(&Endpoint::Unix(admin_socket(ctx)), None, "GET", path, None).expect(path);
    serde_json::from_slice(&answer.body).expect("JSON")
}

/// Clients waiting now, as `ringlb ctl show queue` sees them.
fn waiting(ctx: &Ctx) -> Vec<serde_json::Value> {
    api(ctx, "/api/queue")["waiting"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn until_waiting(ctx: &Ctx, n: usize) {
    let started = Instant::now();
    while waiting(ctx).len() != n {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} waiting, not {n}",
            waiting(ctx).len()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// The listener's queue counters in `ctl show`.
fn listener_queue(ctx: &Ctx) -> serde_json::Value {
    api(ctx, "/api/show")["listeners"][0]["queue"].clone()
}

/// 1,000 concurrent clients against two backends of at most 4 connections each: neither ever
/// holds more (counted at the backends), every client is answered, and the queue was used.
pub fn backend_limits_hold_under_a_thousand_clients(ctx: &Ctx) -> Outcome {
    const LIMIT: u32 = 4;
    let a = Counting::start(Duration::from_millis(2));
    let b = Counting::start(Duration::from_millis(2));
    a.release();
    b.release();
    let text = file(
        ctx,
        "queue_size = 2000\nqueue_timeout = \"60s\"",
        "",
        &[(a.addr, LIMIT), (b.addr, LIMIT)],
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text))?;
    let addr = proxy.addr;
    let clients: Vec<_> = (0..1000u32)
        .map(|i| {
            thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let mut stream = connect(addr);
                    stream.write_all(&i.to_be_bytes()).expect("send");
                    answer(&mut stream, Duration::from_secs(60)).expect("answer")
                })
                .expect("client thread")
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().expect("client"), format!("ok {i}\n"));
    }
    let most = (a.most.load(Ordering::SeqCst), b.most.load(Ordering::SeqCst));
    eprintln!("most connections open at once: {most:?} (limit {LIMIT} each)");
    assert!(
        most.0 <= LIMIT as usize && most.1 <= LIMIT as usize,
        "{most:?}"
    );
    assert_eq!(a.seen().len() + b.seen().len(), 1000);
    let queue = listener_queue(ctx);
    assert!(queue["queued"].as_u64() > Some(0), "nobody waited: {queue}");
    assert_eq!(queue["admitted"], queue["queued"], "{queue}");
    assert_eq!(queue["waiting"], 0);
    assert_eq!(
        (a.open.load(Ordering::SeqCst), b.open.load(Ordering::SeqCst)),
        (0, 0)
    );
    proxy.finish();
    Ok(())
}

/// One slot, two workers, 200 clients queued in a known order (each waits until the queue
/// shows it): the backend sees them in exactly that order, and `ctl show queue` numbered
/// them in it.
pub fn queue_serves_clients_in_arrival_order(ctx: &Ctx) -> Outcome {
    const CLIENTS: u32 = 200;
    let backend = Counting::start(Duration::ZERO);
    let text = file(
        ctx,
        "queue_size = 1000\nqueue_timeout = \"60s\"",
        "",
        &[(backend.addr, 1)],
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text))?;
    let mut holder = hold_the_slot(&proxy, &backend);
    let mut streams = Vec::new();
    for i in 0..CLIENTS {
        streams.push(client(&proxy, i));
        until_waiting(ctx, i as usize + 1);
    }
    let line = waiting(ctx);
    for (i, (w, s)) in line.iter().zip(&streams).enumerate() {
        assert_eq!(w["position"], i + 1, "{w}");
        let port = s.local_addr().expect("address").to_string();
        assert_eq!(w["client"].as_str(), Some(port.as_str()), "place {}", i + 1);
    }
    backend.release();
    assert_eq!(
        answer(&mut holder, Duration::from_secs(5)).expect("holder"),
        format!("ok {HOLD}\n")
    );
    drop(holder);
    // Each client closes after its answer: the connection, and its slot, end only then.
    for (i, mut stream) in streams.into_iter().enumerate() {
        let text = match answer(&mut stream, Duration::from_secs(10)) {
            Ok(text) => text,
            Err(e) => panic!(
                "client {i}: {e}; queue {:?}; show {}; backend saw {:?}",
                waiting(ctx).iter().take(3).collect::<Vec<_>>(),
                api(ctx, "/api/show"),
                backend.seen().iter().map(|(i, _)| *i).collect::<Vec<_>>()
            ),
        };
        assert_eq!(text, format!("ok {i}\n"));
    }
    let order: Vec<u32> = backend.seen().iter().skip(1).map(|(i, _)| *i).collect();
    let displaced = order
        .iter()
        .enumerate()
        .filter(|&(at, &i)| at as u32 != i)
        .count();
    eprintln!("{CLIENTS} queued clients, {displaced} admitted out of arrival order");
    assert_eq!(order, (0..CLIENTS).collect::<Vec<_>>());
    assert!(waiting(ctx).is_empty());
    proxy.finish();
    Ok(())
}

/// A full queue turns a client away at once, and a client that waits `queue_timeout` is
/// turned away then (reset by default); both are counted by reason.
pub fn queue_overflow_and_timeout_close_promptly(ctx: &Ctx) -> Outcome {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let backend = Counting::start(Duration::ZERO);
    let text = file(
        ctx,
        &format!(
            "queue_size = 2\nqueue_timeout = \"{}ms\"",
            TIMEOUT.as_millis()
        ),
        "",
        &[(backend.addr, 1)],
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text))?;
    let mut holder = hold_the_slot(&proxy, &backend);
    let queued_at = Instant::now();
    let mut queued = vec![client(&proxy, 1), client(&proxy, 2)];
    until_waiting(ctx, 2);
    let turned = Instant::now();
    let err = turned_away(proxy.addr);
    let took = turned.elapsed();
    eprintln!("overflow closed after {took:?} ({err})");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "{err}"
    );
    assert!(took < Duration::from_millis(250), "{took:?}");
    for stream in &mut queued {
        let err = answer(stream, Duration::from_secs(3)).expect_err("timed out");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    }
    let waited = queued_at.elapsed();
    eprintln!("queued clients closed after {waited:?} (queue_timeout {TIMEOUT:?})");
    assert!(waited >= TIMEOUT - Duration::from_millis(20), "{waited:?}");
    assert!(waited < TIMEOUT + Duration::from_millis(600), "{waited:?}");
    let queue = listener_queue(ctx);
    assert_eq!(
        (queue["full"].as_u64(), queue["timeout"].as_u64()),
        (Some(1), Some(2)),
        "{queue}"
    );
    backend.release();
    assert_eq!(
        answer(&mut holder, Duration::from_secs(5)).expect("holder"),
        format!("ok {HOLD}\n")
    );
    assert_eq!(
        backend.seen().len(),
        1,
        "no turned-away client reached the backend"
    );
    proxy.finish();
    Ok(())
}

/// A flash crowd against `admission_rate = 500`, `admission_burst = 50`: clients arriving at
/// 5,000 a second reach the backend at 500 a second ± 10 % after the burst, none lost while
/// the queue has room, and in the order of the queue (as `ctl show queue` numbered them
/// while they waited). How far that order is from the order of arrival (the skew between
/// the workers' accepts) is printed.
pub fn admission_rate_paces_a_flash_crowd(ctx: &Ctx) -> Outcome {
    const RATE: u32 = 500;
    const BURST: usize = 50;
    let clients: u32 = if ctx.setup.heavy { 5000 } else { 1000 };
    let backend = Counting::start(Duration::ZERO);
    backend.release();
    let text = file(
        ctx,
        "queue_size = 10000\nqueue_timeout = \"60s\"",
        &format!("admission_rate = {RATE}\nadmission_burst = {BURST}"),
        &[(backend.addr, 0)],
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text))?;
    let started = Instant::now();
    let mut streams = Vec::with_capacity(clients as usize);
    for i in 0..clients {
        // 5,000 attempts a second.
        let due = started + Duration::from_micros(200) * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        streams.push(client(&proxy, i));
    }
    let arrived = started.elapsed();
    // The line as the queue holds it now: client addresses by position.
    let line: Vec<String> = waiting(ctx)
        .iter()
        .filter_map(|w| w["client"].as_str().map(str::to_owned))
        .collect();
    let index_of: std::collections::HashMap<String, u32> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| (s.local_addr().expect("address").to_string(), i as u32))
        .collect();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let text = answer(&mut stream, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("client {i}: {e}; queue {}", listener_queue(ctx)));
        assert_eq!(text, format!("ok {i}\n"));
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), clients as usize, "every client served");
    let after_burst = &seen[BURST..];
    let span = after_burst[after_burst.len() - 1].1 - after_burst[0].1;
    let rate = (after_burst.len() - 1) as f64 / span.as_secs_f64();
    let in_line: Vec<u32> = line
        .iter()
        .filter_map(|c| index_of.get(c).copied())
        .collect();
    let served: Vec<u32> = seen
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| in_line.contains(i))
        .collect();
    let most_displaced = after_burst
        .iter()
        .enumerate()
        .map(|(at, (i, _))| ((at + BURST) as i64 - i64::from(*i)).unsigned_abs())
        .max()
        .unwrap_or(0);
    // Clients granted together (one dispatch) may start connecting a loop turn apart when they
    // are on different workers (or threads): how far from its place in line each one reached
    // the backend.
    let rank: std::collections::HashMap<u32, usize> =
        in_line.iter().enumerate().map(|(r, &i)| (i, r)).collect();
    let most_jumped = served
        .iter()
        .enumerate()
        .map(|(r, i)| (r as i64 - rank[i] as i64).unsigned_abs())
        .max()
        .unwrap_or(0);
    eprintln!(
        "{clients} clients arrived in {arrived:?}; admitted at {rate:.1}/s after the burst \
         (target {RATE}/s); {} were in line at once, and reached the backend at most \
         {most_jumped} places from their place in line; against arrival order, the most \
         displaced moved {most_displaced} places",
        in_line.len()
    );
    assert!(in_line.len() >= 50, "only {} in line", in_line.len());
    assert_eq!(served.len(), in_line.len());
    // Grants follow the line exactly (the one-slot scenario shows it client by client); a
    // client granted to a worker that is not running starts its connect when that worker
    // runs again, while the others go on. A quarter of a second of such delay on a busy
    // machine, at the rate: a queue served out of order (a stack) jumps by the hundreds.
    let window = u64::from(RATE) / 4;
    assert!(
        most_jumped <= window,
        "clients reached the backend {most_jumped} places from their place in line"
    );
    let target = f64::from(RATE);
    assert!((rate - target).abs() <= target * 0.1, "{rate:.1}/s");
    let queue = listener_queue(ctx);
    assert_eq!(queue["full"], 0);
    assert_eq!(queue["timeout"], 0);
    proxy.finish();
    Ok(())
}
