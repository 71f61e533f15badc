//! The load generator against the test backends, directly on loopback.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringlb_tools::backend::{self, BackendKind};
use ringlb_tools::loadgen::{self, Direction, LoadConfig, LoadError, Mode};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn rr_against_echo_verifies_and_stops_on_time() {
    let b = backend::spawn(BackendKind::Echo, any_port()).expect("spawn echo");
    let mut c = LoadConfig::new(b.local_addr(), Mode::Rr { size: 100 });
    c.connections = 10;
    c.duration = Duration::from_millis(700);
    let t = Instant::now();
    let r = loadgen::run(&c).expect("rr run");
    let wall = t.elapsed();
    assert!(wall < Duration::from_millis(1200), "took {wall:?}");
    assert_eq!(r.connections_opened, 10);
    assert!(r.requests > 0 && r.requests_per_sec > 0.0);
    assert_eq!(r.verify_errors, 0);
    assert_eq!(r.io_errors + r.short_reads + r.connect_errors, 0);
    let lat = r.latency_us.as_ref().expect("latency recorded");
    assert_eq!(lat.samples, r.requests);
    assert!(lat.p50_us <= lat.p99_us && lat.p99_us <= lat.max_us);
    let json = serde_json::to_value(&r).expect("report serialises");
    assert_eq!(json["mode"], "rr");
}

#[test]
fn rr_max_requests_stops_early_and_large_requests_work() {
    let b = backend::spawn(BackendKind::Echo, any_port()).expect("spawn echo");
    // 300 KB requests exceed socket buffers: writing and reading must interleave.
    let mut c = LoadConfig::new(b.local_addr(), Mode::Rr { size: 300_000 });
    c.connections = 3;
    c.duration = Duration::from_secs(4);
    c.max_requests = Some(30);
    let t = Instant::now();
    let r = loadgen::run(&c).expect("rr run");
    assert!(t.elapsed() < Duration::from_secs(3), "did not stop early");
    assert_eq!(r.requests, 30);
    assert_eq!(r.verify_errors, 0);
    assert_eq!(r.bytes_received, 30 * 300_000);
}

#[test]
fn rr_counts_mismatched_echo() {
    // The hello greeting shifts every echoed byte, so each response must fail verification.
    let b = backend::spawn(BackendKind::Hello("x".into()), any_port()).expect("spawn hello");
    let mut c = LoadConfig::new(b.local_addr(), Mode::Rr { size: 16 });
    c.max_requests = Some(5);
    let r = loadgen::run(&c).expect("rr run");
    assert_eq!(r.requests, 5);
    assert_eq!(r.verify_errors, 5);
}

#[test]
fn stream_upload_bytes_match_sink() {
    let sink = backend::spawn(BackendKind::Sink, any_port()).expect("spawn sink");
    let mode = Mode::Stream {
        direction: Direction::Upload,
        bytes_per_conn: Some(1 << 20),
    };
    let mut c = LoadConfig::new(sink.local_addr(), mode);
    c.connections = 4;
    c.duration = Duration::from_secs(3);
    let r = loadgen::run(&c).expect("stream run");
    assert_eq!(r.bytes_sent, 4 << 20);
    // The client waited for the sink's EOF, so the sink has counted everything already.
    assert_eq!(sink.stats().bytes_in, 4 << 20);
    assert_eq!(r.io_errors + r.closed_by_peer, 0);

    // Time-bounded upload: whatever was written arrives once the sockets drain.
    let mode = Mode::Stream {
        direction: Direction::Upload,
        bytes_per_conn: None,
    };
    let before = sink.stats().bytes_in;
    let mut c = LoadConfig::new(sink.local_addr(), mode);
    c.connections = 2;
    c.duration = Duration::from_millis(300);
    let r = loadgen::run(&c).expect("stream run");
    assert!(r.gbit_per_sec > 0.0);
    assert!(eventually(|| sink.stats().bytes_in - before == r.bytes_sent));
}

#[test]
fn stream_download_from_source_verifies_pattern() {
    let src = backend::spawn(
        BackendKind::Source {
            bytes: Some(500_000),
        },
        any_port(),
    )
    .expect("spawn source");
    let mode = Mode::Stream {
        direction: Direction::Download,
        bytes_per_conn: None,
    };
    let mut c = LoadConfig::new(src.local_addr(), mode);
    c.connections = 3;
    c.duration = Duration::from_secs(3);
    let r = loadgen::run(&c).expect("download run");
    assert_eq!(r.bytes_received, 1_500_000);
    assert_eq!(r.verify_errors, 0);
}

#[test]
fn connect_mode_opens_a_connection_per_request() {
    let b = backend::spawn(BackendKind::Echo, any_port()).expect("spawn echo");
    let mut c = LoadConfig::new(b.local_addr(), Mode::Connect { size: 32 });
    c.connections = 4;
    c.duration = Duration::from_secs(3);
    c.max_requests = Some(200);
    let r = loadgen::run(&c).expect("connect run");
    assert_eq!(r.requests, 200);
    assert_eq!(r.connections_opened, 200);
    assert_eq!(r.verify_errors + r.connect_errors + r.io_errors, 0);
    assert!(r.latency_us.is_some());
    assert!(eventually(|| b.stats().connections == 200));
}

#[test]
fn idle_mode_holds_connections() {
    let b = backend::spawn(BackendKind::Echo, any_port()).expect("spawn echo");
    let mut c = LoadConfig::new(
        b.local_addr(),
        Mode::Idle {
            hold: Duration::from_millis(500),
        },
    );
    c.connections = 200;
    c.threads = 2;
    c.duration = Duration::from_secs(2);
    let run = std::thread::spawn(move || loadgen::run(&c));
    assert!(
        eventually(|| b.stats().active == 200),
        "backend saw 200 open"
    );
    let r = run.join().expect("loadgen thread").expect("idle run");
    assert_eq!(r.connections_opened, 200);
    assert_eq!(r.open_peak, 200);
    assert_eq!(r.open_at_end, 200);
    assert!(eventually(|| b.stats().active == 0), "closed after hold");
}

#[test]
fn source_range_spreads_client_addresses() {
    let b = backend::spawn(BackendKind::Echo, any_port()).expect("spawn echo");
    let mut c = LoadConfig::new(b.local_addr(), Mode::Rr { size: 8 });
    c.connections = 8;
    c.threads = 2;
    c.sources = Some("127.3.0.1-127.3.0.4".parse().expect("valid range"));
    c.max_requests = Some(100);
    c.duration = Duration::from_secs(2);
    let r = loadgen::run(&c).expect("rr run");
    assert_eq!(r.connect_errors, 0);
    assert_eq!(r.per_source.len(), 4);
    assert!(r.per_source.values().all(|&n| n == 2));
    let peers = b.peers();
    let want: Vec<IpAddr> = (1..=4).map(|i| IpAddr::from([127, 3, 0, i])).collect();
    assert_eq!(peers.keys().copied().collect::<Vec<_>>(), want);
    assert!(peers.values().all(|&n| n == 2));
}

#[test]
fn paced_rr_answers_every_request() {
    let b = backend::spawn(BackendKind::Echo, any_port()).expect("spawn echo");
    let mut c = LoadConfig::new(b.local_addr(), Mode::Rr { size: 64 });
    c.connections = 4;
    c.threads = 2;
    c.rate = Some(2_000);
    c.max_requests = Some(40);
    // 40 requests at 2,000/s take 20 ms: the run ends when the budget is spent, long before
    // its time limit (it once waited for the limit with every connection closed).
    c.duration = Duration::from_secs(60);
    let r = loadgen::run(&c).expect("paced rr run");
    assert!(r.elapsed_secs < 30.0, "ran {} s", r.elapsed_secs);
    assert_eq!(r.requests, 40);
    assert_eq!(r.bytes_received, 40 * 64);
    assert_eq!(r.verify_errors + r.io_errors + r.connect_errors, 0);
    // A rate is for rr only, and must be positive.
    c.rate = Some(0);
    assert!(matches!(loadgen::run(&c), Err(LoadError::Config(_))));
    let mut c = LoadConfig::new(b.local_addr(), Mode::Connect { size: 8 });
    c.rate = Some(100);
    assert!(matches!(loadgen::run(&c), Err(LoadError::Config(_))));
}

#[test]
fn bad_config_and_dead_target_are_reported() {
    let far: SocketAddr = "10.0.0.1:80".parse().expect("literal address");
    let c = LoadConfig::new(far, Mode::Rr { size: 8 });
    assert!(matches!(loadgen::run(&c), Err(LoadError::NotLoopback(_))));
    let mut c = LoadConfig::new(any_port(), Mode::Rr { size: 8 });
    c.connections = 0;
    assert!(matches!(loadgen::run(&c), Err(LoadError::Config(_))));

    // A port nobody listens on: connects fail, and the run still ends by itself. The socket is
    // bound but never listens, and stays bound for the whole run, so that no other test can be
    // given the port meanwhile (a released port was, and connects then succeeded).
    let dead =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    dead.bind(&any_port().into())
        .expect("bind without listening");
    let addr = dead
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("bound address");
    let mut c = LoadConfig::new(addr, Mode::Connect { size: 8 });
    c.connections = 2;
    c.duration = Duration::from_millis(300);
    let t = Instant::now();
    let r = loadgen::run(&c).expect("run against dead port");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(r.connect_errors > 0);
    assert_eq!(r.requests, 0);
    drop(dead);
}

#[test]
fn binaries_print_address_and_json() {
    let mut backend = Command::new(env!("CARGO_BIN_EXE_backend"))
        .args([
            "--kind",
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--seconds",
            "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start backend binary");
    let out = backend.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    let addr = lines
        .next()
        .expect("first line")
        .expect("readable first line");
    let lg = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--mode", "rr", "--target", &addr, "--connections", "2"])
        .args(["--seconds", "0.3", "--size", "10", "--json"])
        .output()
        .expect("run loadgen binary");
    assert!(lg.status.success());
    let report: serde_json::Value = serde_json::from_slice(&lg.stdout).expect("one JSON object");
    assert!(report["requests"].as_u64().expect("requests field") > 0);
    assert_eq!(report["verify_errors"], 0);
    // Stop the backend early with SIGTERM; it prints its counters and exits cleanly.
    let pid = backend.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    let status = backend.wait().expect("backend exits");
    assert!(status.success());
    let stats = lines.next().expect("stats line").expect("readable stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(stats["connections"], 2);
}

#[test]
fn udp_rr_against_udp_echo_checks_every_answer() {
    let mut cfg = backend::BackendConfig::new(BackendKind::UdpEcho, any_port());
    cfg.threads = 2;
    let b = backend::spawn_with(cfg).expect("spawn udp echo");
    let mode = Mode::UdpRr {
        size: 100,
        timeout: Duration::from_millis(500),
    };
    let mut c = LoadConfig::new(b.local_addr(), mode);
    c.connections = 16;
    c.threads = 2;
    c.sources = Some("127.5.0.1-127.5.0.8".parse().expect("valid range"));
    c.duration = Duration::from_millis(500);
    let t = Instant::now();
    let r = loadgen::run(&c).expect("udp-rr run");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.mode, "udp-rr");
    assert_eq!(r.connections_opened, 16);
    assert!(r.requests > 0 && r.requests_per_sec > 0.0);
    assert_eq!(r.verify_errors + r.io_errors + r.connect_errors, 0);
    // Loopback against a 4 MiB buffer loses nothing, and every answer was collected.
    assert_eq!((r.lost, r.late, r.abandoned), (0, 0, 0));
    assert_eq!(r.datagrams_sent, r.requests);
    assert_eq!(r.datagrams_received, r.requests);
    assert_eq!(r.bytes_received, r.requests * 100);
    assert_eq!(r.latency_us.as_ref().expect("latency").samples, r.requests);
    assert_eq!(r.per_source.len(), 8);
    let st = b.stats();
    assert_eq!(st.datagrams_in, r.datagrams_sent);
    assert_eq!(st.bytes_in, r.bytes_sent);
    assert_eq!(st.connections, 16, "one sender address and port per flow");
    assert_eq!(b.peers().len(), 8);
}

#[test]
fn udp_rr_counts_wrong_answers_and_lost_requests() {
    // An echo that flips the last byte of every datagram: each answer fails the check.
    let bad = std::net::UdpSocket::bind(any_port()).expect("bad echo socket");
    bad.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("set timeout");
    let addr = bad.local_addr().expect("bad echo address");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok((n, peer)) = bad.recv_from(&mut buf) {
                buf[n - 1] ^= 0xff;
                let _ = bad.send_to(&buf[..n], peer);
            }
        }
    });
    let mode = Mode::UdpRr {
        size: 64,
        timeout: Duration::from_millis(50),
    };
    let mut c = LoadConfig::new(addr, mode);
    c.connections = 2;
    c.duration = Duration::from_millis(300);
    let r = loadgen::run(&c).expect("udp-rr run");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    echo.join().expect("bad echo thread");
    assert_eq!(r.requests, 0);
    assert!(r.verify_errors > 0);
    // Unanswered (wrongly answered) requests time out and are sent again.
    assert!(r.lost > 0 && r.datagrams_sent > 2);

    // A sink answers nothing: everything is lost, and the run still ends on time.
    let sink = backend::spawn(BackendKind::UdpSink, any_port()).expect("spawn udp sink");
    let mut c = LoadConfig::new(sink.local_addr(), mode);
    c.connections = 3;
    c.duration = Duration::from_millis(300);
    let t = Instant::now();
    let r = loadgen::run(&c).expect("udp-rr run");
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!((r.requests, r.verify_errors), (0, 0));
    assert!(r.lost >= 3);
    assert_eq!(r.datagrams_sent, r.lost + r.abandoned);
    assert!(eventually(|| sink.stats().datagrams_in == r.datagrams_sent));
}

#[test]
fn udp_stream_counts_match_the_sink() {
    let sink = backend::spawn(BackendKind::UdpSink, any_port()).expect("spawn udp sink");
    // Paced: well below what loopback carries, so nothing is dropped.
    let mode = Mode::UdpStream {
        size: 1_472,
        rate: Some(20_000),
    };
    let mut c = LoadConfig::new(sink.local_addr(), mode);
    c.connections = 3;
    c.duration = Duration::from_millis(400);
    let t = Instant::now();
    let r = loadgen::run(&c).expect("udp-stream run");
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.mode, "udp-stream");
    assert_eq!(r.io_errors, 0);
    let want = 20_000.0 * 0.4;
    let sent = r.datagrams_sent as f64;
    assert!(
        sent > want * 0.8 && sent < want * 1.1,
        "sent {sent} at 20,000/s for 0.4 s"
    );
    assert_eq!(r.bytes_sent, r.datagrams_sent * 1_472);
    assert!(eventually(|| sink.stats().datagrams_in == r.datagrams_sent));
    assert_eq!(sink.stats().bytes_in, r.bytes_sent);
    assert_eq!(sink.stats().connections, 3);

    // Unpaced but bounded by a datagram budget.
    let before = sink.stats().datagrams_in;
    let mut c = LoadConfig::new(
        sink.local_addr(),
        Mode::UdpStream {
            size: 100,
            rate: None,
        },
    );
    c.max_requests = Some(1_000);
    c.duration = Duration::from_secs(3);
    let r = loadgen::run(&c).expect("udp-stream run");
    assert_eq!(r.datagrams_sent, 1_000);
    assert!(r.elapsed_secs < 2.0);
    assert!(eventually(|| sink.stats().datagrams_in - before == 1_000));
}

#[test]
fn udp_modes_reject_bad_sizes() {
    let t: SocketAddr = "127.0.0.1:9".parse().expect("literal address");
    let rr = Mode::UdpRr {
        size: 4,
        timeout: Duration::from_millis(100),
    };
    assert!(matches!(
        loadgen::run(&LoadConfig::new(t, rr)),
        Err(LoadError::Config(_))
    ));
    let big = Mode::UdpStream {
        size: 70_000,
        rate: None,
    };
    assert!(matches!(
        loadgen::run(&LoadConfig::new(t, big)),
        Err(LoadError::Config(_))
    ));
}

#[test]
fn backend_binary_reports_counters_on_sigusr1() {
    let mut backend = Command::new(env!("CARGO_BIN_EXE_backend"))
        .args(["--kind", "udp-sink", "--seconds", "5"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start backend binary");
    let out = backend.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    let addr = lines.next().expect("first line").expect("readable line");
    let lg = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--mode", "udp-stream", "--target", &addr, "--rate", "1000"])
        .args(["--seconds", "0.2", "--size", "200", "--json"])
        .output()
        .expect("run loadgen binary");
    assert!(lg.status.success());
    let report: serde_json::Value = serde_json::from_slice(&lg.stdout).expect("one JSON object");
    let sent = report["datagrams_sent"].as_u64().expect("datagrams_sent");
    assert!(sent > 0);
    std::thread::sleep(Duration::from_millis(100));
    let pid = backend.id().to_string();
    Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .expect("send SIGUSR1");
    let stats = lines.next().expect("stats line").expect("readable stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(stats["datagrams_in"], sent);
    assert_eq!(stats["bytes_in"], sent * 200);
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    assert!(backend.wait().expect("backend exits").success());
}
