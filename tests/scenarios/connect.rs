//! Connect failures: retries move on to another backend; when every backend fails (refused or
//! timed out), the client connection is closed within the retry budget.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    CONNECT_TIMEOUT, Ctx, Launch, Outcome, Proxy, connect, echo_backend, echo_exchange, free_addr,
    join, payload, wait_closed,
};

/// `--retries` in these scenarios.
const RETRIES: u32 = 2;
/// Slack on top of `connect_timeout × (retries + 1)` for a close to arrive.
const SLACK: Duration = Duration::from_millis(1500);

/// Round robin over a refused port and a live echo backend, with retries: every connection
/// succeeds, and the live backend serves them all.
pub fn refused_connect_retried(ctx: &Ctx) -> Outcome {
    const CONNECTIONS: usize = 40;
    let echo = echo_backend();
    let dead = free_addr();
    let launch = Launch::specs(vec![
        format!("{dead},name=dead"),
        format!("{},name=live", echo.local_addr()),
    ])
    .retries(RETRIES)
    .arg("--algorithm")
    .arg("round-robin");
    let proxy = Proxy::start(ctx, &launch)?;
    let addr = proxy.addr;
    let clients: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..CONNECTIONS / 4 {
                    let data = payload(1000 + i, (t * 100 + i) as u64);
                    let got = echo_exchange(addr, data.clone());
                    assert!(got == data, "connection {t}/{i}: echo differs");
                }
            })
        })
        .collect();
    for c in clients {
        join(c, "client");
    }
    assert_eq!(
        echo.stats().connections,
        CONNECTIONS as u64,
        "connections the live backend served"
    );
    proxy.finish();
    Ok(())
}

/// Every backend refuses: each client connection is closed (end of stream or reset), with no
/// data, within `connect_timeout × (retries + 1)` plus slack.
pub fn all_backends_refused(ctx: &Ctx) -> Outcome {
    let launch = Launch::new(&[free_addr(), free_addr()]).retries(RETRIES);
    let proxy = Proxy::start(ctx, &launch)?;
    let limit = CONNECT_TIMEOUT * (RETRIES + 1) + SLACK;
    let addr = proxy.addr;
    let clients: Vec<_> = (0..5)
        .map(|_| {
            thread::spawn(move || {
                let stream = connect(addr);
                let started = Instant::now();
                let (how, at) = wait_closed(&stream, limit);
                (how, at.duration_since(started))
            })
        })
        .collect();
    for c in clients {
        let (how, took) = join(c, "client");
        eprintln!("closed by {how:?} after {took:?}");
        assert!(took < limit, "closed after {took:?}, limit {limit:?}");
    }
    proxy.finish();
    Ok(())
}

/// A listening socket that never accepts and whose accept queue is full, so that new SYNs are
/// dropped and connects to it hang until they time out. The filler connections are kept.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        socket.bind(&any.into()).expect("bind");
        socket.listen(0).expect("listen(0)");
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().expect("address");
        let mut fillers = Vec::new();
        // listen(0) queues one connection; the next connect hangs: the queue is full.
        for _ in 0..4 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        assert!(
            !fillers.is_empty() && fillers.len() < 4,
            "could not saturate the accept queue ({} connections queued)",
            fillers.len()
        );
        Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

/// Two backends whose connects hang: each attempt ends by the connect timeout, and the client
/// connection is closed after both attempts have timed out, within the retry budget.
pub fn blackholed_backends(ctx: &Ctx) -> Outcome {
    let holes = [Blackhole::new(), Blackhole::new()];
    let launch = Launch::new(&[holes[0].addr, holes[1].addr]).retries(RETRIES);
    let proxy = Proxy::start(ctx, &launch)?;
    let stream = connect(proxy.addr);
    let started = Instant::now();
    let limit = CONNECT_TIMEOUT * (RETRIES + 1) + SLACK;
    let (how, at) = wait_closed(&stream, limit);
    let took = at.duration_since(started);
    eprintln!("closed by {how:?} after {took:?}");
    // Two distinct candidates (the pick plus one fallback), each given the whole timeout.
    let earliest = CONNECT_TIMEOUT * 2 - Duration::from_millis(100);
    assert!(
        took >= earliest,
        "closed after {took:?}: before two connect timeouts ({earliest:?}) had passed"
    );
    assert!(took < limit, "closed after {took:?}, limit {limit:?}");
    proxy.finish();
    Ok(())
}
