//! Active health checks against real backends that the test stops, black-holes and restarts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringlb::control::client::{Endpoint, request};

use crate::connect::Blackhole;
use crate::control::admin_socket;
use crate::harness::{Ctx, Launch, Outcome, Proxy, connect};

/// Check timing of these scenarios: a dead backend is out within INTERVAL × FALL + TIMEOUT.
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(150);
const RISE: u32 = 2;
const FALL: u32 = 2;
/// Scheduling slack on a loaded machine.
const SLACK: Duration = Duration::from_millis(600);

/// A backend that greets with its name, then echoes, until stopped; it can be started again
/// on the same port.
pub struct Greeter {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Greeter {
    pub fn start(name: &'static str, addr: SocketAddr) -> Greeter {
        let listener = TcpListener::bind(addr).expect("bind the greeter");
        let addr = listener.local_addr().expect("address");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        thread::spawn(move || serve(stream, name));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            // Dropping the listener closes the port: connects are refused from now on.
        });
        Greeter {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut stream: TcpStream, name: &str) {
    let _ = stream.set_nonblocking(false);
    if stream.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Connects through the proxy and reads the greeting.
fn greeted(proxy: &Proxy) -> String {
    let stream = connect(proxy.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("read the greeting");
    line.trim().to_owned()
}

/// `[pool.health]` lines for `check`.
fn health(check: &str) -> String {
    format!(
        "[pool.health]\n{check}\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\nrise = {RISE}\n\
         fall = {FALL}\n",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    )
}

fn file(ctx: &Ctx, backends: &[(&str, SocketAddr)], health: &str) -> String {
    let mut text = format!(
        "[admin]\nsocket = \"{}\"\n[[listener]]\nbind = \"{{listen}}\"\npool = \"web\"\n\
         [[pool]]\nname = \"web\"\n",
        admin_socket(ctx).display()
    );
    for (name, addr) in backends {
        text.push_str(&format!(
            "[[pool.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    text + health
}

/// `name`'s state in `ctl show`.
fn state(endpoint: &Endpoint, name: &str) -> String {
    let answer = request(endpoint, None, "GET", "/api/show", None).expect("show");
    let view: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    view["pools"][0]["backends"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["name"] == name))
        .and_then(|b| b["state"].as_str())
        .unwrap_or("(absent)")
        .to_owned()
}

/// Waits until `name` is in `wanted` state; how long it took.
fn until_state(endpoint: &Endpoint, name: &str, wanted: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = state(endpoint, name);
        if now == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{name} still {now}, not {wanted}, after {limit:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// tcp checks: a backend that stops is out of rotation within interval × fall + timeout and
/// clients then only reach the other one; back, it is in again within interval × rise. A
/// black-holed backend (connects hang) is out within the same bound and costs no client a
/// connect timeout.
pub fn tcp_checks_follow_dead_and_blackholed_backends(ctx: &Ctx) -> Outcome {
    let alpha = Greeter::start("alpha", "127.0.0.1:0".parse().expect("addr"));
    let mut bravo = Greeter::start("bravo", "127.0.0.1:0".parse().expect("addr"));
    let hole = Blackhole::new();
    let text = file(
        ctx,
        &[
            ("alpha", alpha.addr),
            ("bravo", bravo.addr),
            ("charlie", hole.addr),
        ],
        &health("check = \"tcp\""),
    );
    let launch = Launch::file(&text).arg("--algorithm").arg("round-robin");
    let proxy = Proxy::start(ctx, &launch)?;
    let endpoint = Endpoint::Unix(admin_socket(ctx));
    let out = INTERVAL * FALL + TIMEOUT + SLACK;
    let took = until_state(&endpoint, "charlie", "down", out);
    eprintln!("black-holed backend down after {took:?} (bound {out:?})");
    for i in 0..10 {
        let name = greeted(&proxy);
        assert!(
            name == "alpha" || name == "bravo",
            "client {i} reached {name}"
        );
    }

    bravo.stop();
    let stopped = Instant::now();
    until_state(&endpoint, "bravo", "down", out);
    eprintln!("stopped backend down after {:?}", stopped.elapsed());
    for i in 0..10 {
        assert_eq!(greeted(&proxy), "alpha", "client {i} with bravo down");
    }

    let bravo = Greeter::start("bravo", bravo.addr);
    let back = INTERVAL * RISE + TIMEOUT + SLACK;
    let took = until_state(&endpoint, "bravo", "ready", back);
    eprintln!("restarted backend up after {took:?}");
    let reached: Vec<String> = (0..10).map(|_| greeted(&proxy)).collect();
    assert!(reached.iter().any(|n| n == "bravo"), "{reached:?}");
    drop(bravo);
    proxy.finish();
    Ok(())
}

/// A responder on the check port: `HTTP/1.0 200` while `healthy`, 503 otherwise.
fn health_port(healthy: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = stream.read(&mut request);
            let status = if healthy.load(Ordering::Relaxed) {
                "200 OK"
            } else {
                "503 Unavailable"
            };
            let _ = stream.write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes());
        }
    });
    addr
}

/// Two backends checked with `check` (the lines of `[pool.health]` naming a check port) while
/// `healthy` says how the port answers: when it answers badly both go down, while their
/// traffic ports still accept, and `/health` says so; when it answers well they come back.
fn checks_follow_the_check_port(
    ctx: &Ctx,
    kind: &str,
    check: &str,
    healthy: &AtomicBool,
) -> Outcome {
    let alpha = Greeter::start("alpha", "127.0.0.1:0".parse().expect("addr"));
    let bravo = Greeter::start("bravo", "127.0.0.1:0".parse().expect("addr"));
    let text = file(
        ctx,
        &[("alpha", alpha.addr), ("bravo", bravo.addr)],
        &health(check),
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text))?;
    let endpoint = Endpoint::Unix(admin_socket(ctx));
    let back = INTERVAL * RISE + TIMEOUT + SLACK;
    until_state(&endpoint, "alpha", "ready", back);
    healthy.store(false, Ordering::Relaxed);
    let out = INTERVAL * FALL + TIMEOUT + SLACK;
    let took = until_state(&endpoint, "alpha", "down", out);
    eprintln!("{kind} check: answering badly, down after {took:?}");
    until_state(&endpoint, "bravo", "down", out);
    let answer = request(&endpoint, None, "GET", "/health", None).expect("health");
    assert_eq!(answer.status, 503, "no backend up: {}", answer.text());
    healthy.store(true, Ordering::Relaxed);
    let took = until_state(&endpoint, "alpha", "ready", back);
    eprintln!("{kind} check: answering well again, up after {took:?}");
    until_state(&endpoint, "bravo", "ready", back);
    let name = greeted(&proxy);
    assert!(name == "alpha" || name == "bravo", "{name}");
    proxy.finish();
    Ok(())
}

/// http checks on their own port (`port`): 503 takes the backends down, 200 brings them back.
pub fn http_checks_on_their_own_port(ctx: &Ctx) -> Outcome {
    let healthy = Arc::new(AtomicBool::new(true));
    let check = health_port(Arc::clone(&healthy));
    let lines = format!(
        "check = \"http\"\npath = \"/healthz\"\nexpect = \"2xx\"\nport = {}",
        check.port()
    );
    checks_follow_the_check_port(ctx, "http", &lines, &healthy)
}

/// A responder on the check port speaking a line protocol: `+PONG` to `PING` while `healthy`,
/// `-LOADING` otherwise (as a Redis that is loading its data set).
fn pong_port(healthy: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut line = [0u8; 64];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
            let n = stream.read(&mut line).unwrap_or(0);
            let answer: &[u8] = match (&line[..n], healthy.load(Ordering::Relaxed)) {
                (b"PING\r\n", true) => b"+PONG\r\n",
                (b"PING\r\n", false) => b"-LOADING\r\n",
                _ => b"-ERR\r\n",
            };
            let _ = stream.write_all(answer);
        }
    });
    addr
}

/// send-expect checks: `-LOADING` instead of the expected `+PONG` takes the backends down,
/// `+PONG` brings them back.
pub fn send_expect_checks_follow_the_answer(ctx: &Ctx) -> Outcome {
    let healthy = Arc::new(AtomicBool::new(true));
    let check = pong_port(Arc::clone(&healthy));
    let lines = format!(
        "check = \"send-expect\"\nsend = \"PING\\r\\n\"\nexpect = \"+PONG\"\nport = {}",
        check.port()
    );
    checks_follow_the_check_port(ctx, "send-expect", &lines, &healthy)
}

/// `name`'s effective weight in `ctl show`.
fn effective_weight(endpoint: &Endpoint, name: &str) -> u64 {
    let answer = request(endpoint, None, "GET", "/api/show", None).expect("show");
    let view: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    view["pools"][0]["backends"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["name"] == name))
        .and_then(|b| b["effective_weight"].as_u64())
        .unwrap_or(0)
}

/// Passive checks and slow start, without active checks: a stopped backend is down once two
/// connects to it failed within `fail_timeout` (clients meanwhile retried on the other), is
/// tried again when `fail_timeout` is over, and then ramps its weight up over `slow_start`.
pub fn passive_checks_and_slow_start(ctx: &Ctx) -> Outcome {
    let alpha = Greeter::start("alpha", "127.0.0.1:0".parse().expect("addr"));
    let mut bravo = Greeter::start("bravo", "127.0.0.1:0".parse().expect("addr"));
    let mut text = file(ctx, &[("alpha", alpha.addr), ("bravo", bravo.addr)], "");
    text = text.replace(
        "[[pool]]\nname = \"web\"\n",
        "[[pool]]\nname = \"web\"\nmax_fails = 2\nfail_timeout = \"1500ms\"\nslow_start = \"1s\"\n",
    );
    text = text.replace(
        &format!("name = \"bravo\"\naddress = \"{}\"\n", bravo.addr),
        &format!(
            "name = \"bravo\"\naddress = \"{}\"\nweight = 10\n",
            bravo.addr
        ),
    );
    let launch = Launch::file(&text).arg("--algorithm").arg("round-robin");
    let proxy = Proxy::start(ctx, &launch)?;
    let endpoint = Endpoint::Unix(admin_socket(ctx));
    assert_eq!(effective_weight(&endpoint, "bravo"), 10);

    bravo.stop();
    let stopped = Instant::now();
    // Clients keep coming; the ones picked for bravo are retried on alpha.
    while state(&endpoint, "bravo") != "down" {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "bravo never marked down; log:\n{}",
            proxy.log_tail()
        );
        assert_eq!(greeted(&proxy), "alpha");
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("down by passive checks after {:?}", stopped.elapsed());
    let bravo = Greeter::start("bravo", bravo.addr);
    let down = Instant::now();
    until_state(&endpoint, "bravo", "ready", Duration::from_secs(4));
    eprintln!("tried again after {:?}", down.elapsed());
    let ramping = effective_weight(&endpoint, "bravo");
    assert!(
        (1..10).contains(&ramping),
        "ramping up, not at its weight yet: {ramping}"
    );
    let started = Instant::now();
    while effective_weight(&endpoint, "bravo") < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "slow start never ended"
        );
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("whole weight after {:?} of slow start", started.elapsed());
    let reached: Vec<String> = (0..12).map(|_| greeted(&proxy)).collect();
    assert!(reached.iter().any(|n| n == "bravo"), "{reached:?}");
    drop(bravo);
    proxy.finish();
    Ok(())
}
