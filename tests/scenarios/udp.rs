//! UDP listeners (`protocol = "udp"`) on every engine: datagrams forwarded whole, flows that
//! expire, end after their responses, leave a refusing backend, and a table that stays
//! bounded under a flood of new clients.
//!
//! Each configuration has a TCP listener on `{listen}` too (the harness waits for it), and
//! the UDP listener on the same port. A client's first datagram is sent again until it is
//! answered, since the UDP sockets may be bound a moment after the TCP ones.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Ctx, Launch, Outcome, Proxy, payload};

/// Source ports of the datagrams an echo backend saw (ringlb's flow sockets).
type Ports = Arc<Mutex<Vec<u16>>>;

/// A UDP backend that sends every datagram back unchanged and records where it came from.
fn udp_echo() -> (SocketAddr, Ports) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP backend");
    let addr = socket.local_addr().expect("address");
    let seen: Ports = Arc::default();
    let record = Arc::clone(&seen);
    thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buffer) {
            record.lock().expect("ports").push(from.port());
            let _ = socket.send_to(&buffer[..n], from);
        }
    });
    (addr, seen)
}

/// A UDP address on which nothing listens: datagrams to it are refused.
fn udp_refusing() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address")
}

/// A configuration with a TCP listener (for the harness) and a UDP one on `{listen}`, both to
/// pool `p` of `backends`, with the pool's extra `keys`.
fn config(backends: &[SocketAddr], keys: &str) -> String {
    let mut text = String::from(
        "[[listener]]\nbind = \"{listen}\"\npool = \"p\"\n\
         [[listener]]\nname = \"udp\"\nbind = \"{listen}\"\nprotocol = \"udp\"\npool = \"p\"\n\
         [[pool]]\nname = \"p\"\nalgorithm = \"round-robin\"\n",
    );
    text.push_str(keys);
    for b in backends {
        text.push_str(&format!("[[pool.backend]]\naddress = \"{b}\"\n"));
    }
    text
}

/// A client socket on `source` (port 0: any).
pub(crate) fn client(source: &str) -> UdpSocket {
    let socket = UdpSocket::bind(source).expect("bind a UDP client");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    socket
}

/// Send `data` to `to` until the exact same bytes come back, at most `tries` times.
pub(crate) fn ask(
    socket: &UdpSocket,
    to: SocketAddr,
    data: &[u8],
    tries: u32,
) -> Result<(), String> {
    let mut buffer = vec![0u8; 65_536];
    for _ in 0..tries {
        socket.send_to(data, to).map_err(|e| format!("send: {e}"))?;
        match socket.recv_from(&mut buffer) {
            Ok((n, from)) => {
                if from != to {
                    return Err(format!("a reply from {from}, not {to}"));
                }
                if buffer[..n] != *data {
                    return Err(format!("{n} bytes came back for {}", data.len()));
                }
                return Ok(());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // A refusal of an earlier datagram; the next try goes elsewhere.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    Err(format!(
        "no answer to {} bytes after {tries} tries",
        data.len()
    ))
}

pub(crate) fn start(ctx: &Ctx, text: &str) -> Result<Proxy, crate::harness::Skip> {
    Proxy::start(ctx, &Launch::file(text).workers(2))
}

/// The first exchange, retried while the UDP sockets may not be bound yet.
pub(crate) fn warm_up(proxy: &Proxy) {
    let socket = client("127.0.0.1:0");
    ask(&socket, proxy.addr, b"warm-up", 20).expect("the UDP listener answers");
}

/// 10,000 flows from 2,000 client addresses (127.77.x.y, five ports each), each sending a
/// payload of its own: every one comes back exact, to the socket that sent it. Datagrams
/// of 0 B, 1 B, 1,472 B, 9,000 B and 65,507 B (the largest IPv4 allows) come back whole.
pub fn udp_flows_carry_exact_datagrams(ctx: &Ctx) -> Outcome {
    let (one, _) = udp_echo();
    let (two, _) = udp_echo();
    let proxy = start(ctx, &config(&[one, two], ""))?;
    warm_up(&proxy);
    let sizes = [0usize, 1, 1472, 9000, 65_507];
    let socket = client("127.0.0.1:0");
    for (i, size) in sizes.into_iter().enumerate() {
        let data = payload(size, i as u64);
        ask(&socket, proxy.addr, &data, 3).unwrap_or_else(|e| panic!("{size} B: {e}"));
    }
    const THREADS: usize = 8;
    const FLOWS: usize = 10_000;
    let target = proxy.addr;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut failures = Vec::new();
                for n in (t..FLOWS).step_by(THREADS) {
                    let host = n / 5;
                    let source = format!("127.77.{}.{}:0", host / 250, host % 250 + 1);
                    let socket = client(&source);
                    let data = payload(16 + n % 200, n as u64 + 1000);
                    if let Err(e) = ask(&socket, target, &data, 3) {
                        failures.push(format!("flow {n} from {source}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("client thread"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {FLOWS} flows failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    proxy.finish();
    Ok(())
}

/// `udp_idle_timeout`: a client that speaks again within it stays on its flow (the backend
/// sees the same source port), and after it gets a new flow. `udp_responses = 1`: every
/// request is a flow of its own.
pub fn udp_flows_expire_and_end_after_responses(ctx: &Ctx) -> Outcome {
    let (backend, ports) = udp_echo();
    let proxy = start(ctx, &config(&[backend], "udp_idle_timeout = \"400ms\"\n"))?;
    warm_up(&proxy);
    let socket = client("127.0.0.1:0");
    let last_port = || *ports.lock().expect("ports").last().expect("a datagram");
    ask(&socket, proxy.addr, b"one", 3).expect("one");
    let first = last_port();
    thread::sleep(Duration::from_millis(100));
    ask(&socket, proxy.addr, b"two", 3).expect("two");
    assert_eq!(last_port(), first, "within the idle timeout: the same flow");
    thread::sleep(Duration::from_millis(900));
    ask(&socket, proxy.addr, b"three", 3).expect("three");
    assert_ne!(last_port(), first, "after the idle timeout: a new flow");
    proxy.finish();

    let (backend, ports) = udp_echo();
    let proxy = start(ctx, &config(&[backend], "udp_responses = 1\n"))?;
    warm_up(&proxy);
    let socket = client("127.0.0.1:0");
    let before = ports.lock().expect("ports").len();
    for i in 0..5u8 {
        ask(&socket, proxy.addr, &[i; 10], 3).expect("an answer");
    }
    let seen: BTreeSet<u16> = ports.lock().expect("ports")[before..]
        .iter()
        .copied()
        .collect();
    assert_eq!(seen.len(), 5, "five requests, five flows: {seen:?}");
    proxy.finish();
    Ok(())
}

/// A backend that refuses (nothing listens: ICMP port unreachable) ends its flows, and the
/// client's next datagram goes to the backend that answers. The refusals count as failures
/// for the pool's passive check (`max_fails = 1`): soon every new flow goes to the live
/// backend at once.
pub fn udp_refused_flows_move_to_another_backend(ctx: &Ctx) -> Outcome {
    let (alive, _) = udp_echo();
    let dead = udp_refusing();
    let keys = "max_fails = 1\nfail_timeout = \"60s\"\n";
    let proxy = start(ctx, &config(&[dead, alive], keys))?;
    warm_up(&proxy);
    let fresh = |n: u32| {
        let socket = client(&format!("127.78.{}.{}:0", n / 250, n % 250 + 1));
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        socket
    };
    for n in 0..10 {
        // Round robin may send a new flow to the dead backend first; its refusal ends the
        // flow, and the retry is balanced again, away from it.
        ask(&fresh(n), proxy.addr, format!("client {n}").as_bytes(), 2)
            .unwrap_or_else(|e| panic!("client {n}: {e}"));
    }
    // The control side reads the workers' refusals about once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 100;
    let mut first_try = 0;
    while first_try < 20 {
        assert!(
            Instant::now() < deadline,
            "the refusing backend was not taken down: {first_try} clients in a row answered at once"
        );
        n += 1;
        match ask(&fresh(n), proxy.addr, b"again", 1) {
            Ok(()) => first_try += 1,
            Err(_) => first_try = 0,
        }
    }
    proxy.finish();
    Ok(())
}

/// A flood of new clients against `udp_max_flows = 50`: every one is still answered (the
/// least recently used flow makes room), the process holds no more sockets than the table
/// allows, and its memory stays flat (a leak of 4 KiB per flow fails it).
pub fn udp_flood_keeps_the_flow_table_bounded(ctx: &Ctx) -> Outcome {
    let (backend, _) = udp_echo();
    let proxy = start(ctx, &config(&[backend], "udp_max_flows = 50\n"))?;
    warm_up(&proxy);
    let sockets_before = proxy.fds().get("socket").copied().unwrap_or(0);
    let started = Instant::now();
    // Two waves of 2,000 new clients each: the first fills the tables, the second may not
    // grow anything.
    let mut rss = Vec::new();
    for wave in 0..2u32 {
        for n in 0..2000u32 {
            let host = wave * 2000 + n;
            let socket = client(&format!("127.79.{}.{}:0", host / 250, host % 250 + 1));
            ask(&socket, proxy.addr, &host.to_be_bytes(), 3)
                .unwrap_or_else(|e| panic!("{host}: {e}"));
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "bounded in time"
            );
        }
        rss.push(resident_kib(proxy.pid()));
    }
    // Allocator slack aside, the second wave leaves memory where the first did.
    assert!(
        rss[1] <= rss[0] + 2048,
        "resident memory after each wave of 2,000 new flows: {rss:?} KiB"
    );
    let sockets_after = proxy.fds().get("socket").copied().unwrap_or(0);
    // Two workers, 50 flows each at most.
    assert!(
        sockets_after <= sockets_before + 100,
        "{sockets_before} sockets before the flood, {sockets_after} after"
    );
    proxy.finish();
    Ok(())
}

/// The resident memory of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A reload that sets `udp_responses = 1` applies to the flows at once (each request becomes
/// a flow of its own), `/api/show` counts what the UDP listener did, and a reload that would
/// change the UDP listeners is refused with the running ones kept.
pub fn udp_reload_and_counters(ctx: &Ctx) -> Outcome {
    use ringlb::control::client::{Endpoint, request};
    let (backend, ports) = udp_echo();
    let socket_path = crate::control::admin_socket(ctx);
    let head = format!("[admin]\nsocket = \"{}\"\n", socket_path.display());
    let before = format!("{head}{}", config(&[backend], ""));
    let proxy = start(ctx, &before)?;
    let endpoint = Endpoint::Unix(socket_path.clone());
    warm_up(&proxy);
    let client = client("127.0.0.1:0");
    let last_port = || *ports.lock().expect("ports").last().expect("a datagram");
    ask(&client, proxy.addr, b"a", 3).expect("a");
    let first = last_port();
    ask(&client, proxy.addr, b"b", 3).expect("b");
    assert_eq!(last_port(), first, "one flow before the reload");

    crate::control::reload_file(
        &proxy,
        &endpoint,
        &format!("{head}{}", config(&[backend], "udp_responses = 1\n")),
    );
    let mut seen = BTreeSet::new();
    for i in 0..3u8 {
        ask(&client, proxy.addr, &[i; 3], 3).expect("after the reload");
        seen.insert(last_port());
    }
    assert_eq!(
        seen.len(),
        3,
        "a flow per request after the reload: {seen:?}"
    );

    let show = request(&endpoint, None, "GET", "/api/show", None).expect("show");
    let show: serde_json::Value = serde_json::from_slice(&show.body).expect("JSON");
    let udp = &show["udp_listeners"][0];
    assert_eq!(udp["name"], "udp", "{show}");
    // The warm-up, a, b, and three after the reload (retries would only add).
    assert!(udp["client_datagrams"].as_u64() >= Some(6), "{udp}");
    assert_eq!(udp["client_datagrams"], udp["forwarded_datagrams"], "{udp}");
    assert_eq!(udp["backend_datagrams"], udp["replied_datagrams"], "{udp}");
    assert!(udp["flows_answered"].as_u64() >= Some(3), "{udp}");

    let moved = format!(
        "{head}{}",
        config(&[backend], "").replace("name = \"udp\"", "name = \"dns\"")
    );
    crate::control::write_file(
        proxy.config_path(),
        &moved.replace("{listen}", &proxy.addr.to_string()),
    );
    let answer = request(
        &endpoint,
        None,
        "POST",
        "/api/reload",
        Some(&serde_json::json!({})),
    )
    .expect("the admin API answers");
    assert_ne!(answer.status, 200, "a changed UDP listener is refused");
    assert!(answer.text().contains("UDP listeners"), "{}", answer.text());
    ask(&client, proxy.addr, b"still", 3).expect("the running listener still answers");
    proxy.finish();
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}

/// A UDP listener bound to the wildcard address answers each client from the address the
/// client wrote to (`IP_PKTINFO`): a client whose socket is connected to 127.0.0.9, as
/// `dig` and most resolvers' are, hears its answer, and so does one writing to 127.0.0.1.
pub fn udp_wildcard_listener_answers_from_the_address_written_to(ctx: &Ctx) -> Outcome {
    let (backend, _) = udp_echo();
    let port = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let text = format!(
        "[[listener]]\nbind = \"{{listen}}\"\npool = \"p\"\n\
         [[listener]]\nname = \"udp\"\nbind = \"0.0.0.0:{port}\"\nprotocol = \"udp\"\n\
         pool = \"p\"\n[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{backend}\"\n"
    );
    let proxy = start(ctx, &text)?;
    let first: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    ask(&client("127.0.0.1:0"), first, b"warm-up", 20).expect("the UDP listener answers");
    for (n, to) in ["127.0.0.9", "127.0.0.1", "127.45.6.7"]
        .into_iter()
        .enumerate()
    {
        let to: SocketAddr = format!("{to}:{port}").parse().expect("address");
        let socket = client("127.0.0.1:0");
        socket.connect(to).expect("connect");
        let data = payload(100 + n, n as u64);
        socket.send(&data).expect("send");
        let mut buffer = [0u8; 256];
        let got = socket
            .recv(&mut buffer)
            .unwrap_or_else(|e| panic!("no answer from {to} (a connected socket): {e}"));
        assert_eq!(&buffer[..got], &data[..], "to {to}");
        // An unconnected socket sees where the answer came from.
        ask(&client("127.0.0.1:0"), to, &data, 3).unwrap_or_else(|e| panic!("{to}: {e}"));
    }
    proxy.finish();
    Ok(())
}

/// A client that sends with `UDP_SEGMENT` (QUIC stacks do) hands the kernel many datagrams
/// in one call, which reach ringlb's `UDP_GRO` listener coalesced: the backend still gets
/// them one by one, each whole, in order, and the client gets each echo back apart.
pub fn udp_coalesced_datagrams_stay_apart(ctx: &Ctx) -> Outcome {
    use ringlb::sys::mmsg::{Outgoing, SendBatch};
    use std::os::fd::AsFd;
    let backend = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP backend");
    let backend_addr = backend.local_addr().expect("address");
    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let record = Arc::clone(&sizes);
    thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((n, from)) = backend.recv_from(&mut buffer) {
            record.lock().expect("sizes").push(n);
            let _ = backend.send_to(&buffer[..n], from);
        }
    });
    let proxy = start(ctx, &config(&[backend_addr], ""))?;
    warm_up(&proxy);
    let socket = client("127.0.0.1:0");
    ask(&socket, proxy.addr, b"hello", 20).expect("the flow answers");
    sizes.lock().expect("sizes").clear();
    let mut batch = SendBatch::default();
    for round in 0..5u64 {
        // 20 datagrams of 1,200 B and one of 345.
        let data = payload(20 * 1200 + 345, round);
        let message = Outgoing {
            to: Some(proxy.addr),
            from: None,
            segment: Some(1200),
            bytes: &data,
        };
        assert_eq!(batch.send(socket.as_fd(), [message]).expect("GSO send"), 1);
        let mut buffer = vec![0u8; 65_536];
        for (i, expected) in data.chunks(1200).enumerate() {
            let n = socket
                .recv(&mut buffer)
                .unwrap_or_else(|e| panic!("round {round}, echo {i}: {e}"));
            assert_eq!(&buffer[..n], expected, "round {round}, echo {i}");
        }
    }
    let seen = sizes.lock().expect("sizes").clone();
    let mut expected = Vec::new();
    for _ in 0..5 {
        expected.extend(std::iter::repeat_n(1200, 20));
        expected.push(345);
    }
    assert_eq!(
        seen, expected,
        "what the backend received, datagram by datagram"
    );
    proxy.finish();
    Ok(())
}
