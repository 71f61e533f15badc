//! The admin API and `ringlb ctl` against the real binary: socket rules, show, state changes,
//! errors and exit statuses, health, the TCP token, and /metrics.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ringlb::control::client::{Endpoint, request};

#[path = "support/mod.rs"]
mod support;

use support::{TempDir, echo_backend, free_port};

/// A running ringlb, killed when dropped.
struct Ringlb {
    child: Child,
    listen: SocketAddr,
    stderr: PathBuf,
}

impl Ringlb {
    /// `ringlb run` with `args`, its stderr kept in `dir`; returns once it listens on `listen`.
    fn start(dir: &TempDir, listen: SocketAddr, args: &[&str]) -> Ringlb {
        let stderr = dir.join(&format!("stderr-{}", listen.port()));
        let child = Command::new(env!("CARGO_BIN_EXE_ringlb"))
            .arg("run")
            .args(args)
            .args([
                "--engine",
                "epoll",
                "--workers",
                "1",
                "--shutdown-grace",
                "0s",
            ])
            .env_remove("RINGLB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn ringlb");
        let mut ringlb = Ringlb {
            child,
            listen,
            stderr,
        };
        let started = Instant::now();
        while TcpStream::connect(listen).is_err() {
            if let Some(status) = ringlb.child.try_wait().expect("wait") {
                panic!("ringlb exited with {status}: {}", ringlb.stderr());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "ringlb did not listen"
            );
            thread::sleep(Duration::from_millis(20));
        }
        ringlb
    }

    /// The quick form on a free port with one backend and `extra` flags.
    fn quick(dir: &TempDir, backend: &str, extra: &[&str]) -> Ringlb {
        let listen = free_port().to_string();
        let mut args = vec!["--listen", listen.as_str(), "--backend", backend];
        args.extend_from_slice(extra);
        Ringlb::start(dir, listen.parse().expect("address"), &args)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, and wait for a clean exit.
    fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "ringlb exited with {status}");
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ringlb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ringlb ctl --socket SOCKET ARGS…`.
fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("RINGLB_LOG")
        .output()
        .expect("ringlb ctl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(socket: &Path) -> serde_json::Value {
    let out = ctl(socket, &["show", "--json"]);
    assert!(out.status.success(), "show: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("show --json is JSON")
}

fn backend_state(show: &serde_json::Value, name: &str) -> String {
    show["pools"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["name"] == name)
        .and_then(|b| b["state"].as_str())
        .unwrap_or("(absent)")
        .to_owned()
}

/// Run `check` until it holds, up to 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctl_shows_changes_and_reports_errors_by_exit_status() {
    let dir = TempDir::new("ctl");
    let socket = dir.join("admin.sock");
    let backend = format!("{},name=a", echo_backend());
    let lb = Ringlb::quick(
        &dir,
        &backend,
        &["--admin-socket", socket.to_str().expect("utf-8")],
    );

    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let view = show(&socket);
    assert_eq!(view["pools"][0]["name"], "backends");
    assert_eq!(backend_state(&view, "a"), "ready");
    assert_eq!(view["listeners"][0]["bind"], lb.listen.to_string());

    // Healthy once the workers are up.
    eventually("health exits 0", || {
        ctl(&socket, &["health"]).status.success()
    });

    let out = ctl(&socket, &["set", "backends/a", "state", "drain"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(backend_state(&show(&socket), "a"), "drain");
    // The only backend drains: unhealthy, with the reason.
    let out = ctl(&socket, &["health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no backend ready"),
        "{}",
        text(&out.stderr)
    );
    let tables = ctl(&socket, &["show"]);
    assert!(tables.status.success());
    assert!(
        text(&tables.stdout).contains("backends/a"),
        "{}",
        text(&tables.stdout)
    );

    for (args, reason) in [
        (
            &["set", "backends/zz", "state", "ready"][..],
            "no backend \"zz\"",
        ),
        (&["set", "nopool/a", "weight", "2"][..], "unknown pool"),
        (
            &["set", "backends/a", "weight", "0"][..],
            "weight must be between",
        ),
        (
            &["add", "backends", "127.0.0.1:9,name=a"][..],
            "already exists",
        ),
        (&["add", "backends", "nonsense"][..], "bad backend"),
        (&["disable", "nolistener"][..], "unknown listener"),
        (&["remove", "no-slash"][..], "POOL/BACKEND"),
        (&["reload"][..], "started without --config"),
    ] {
        let out = ctl(&socket, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(reason),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // Bad arguments are refused before any request.
    assert!(
        !ctl(&socket, &["set", "backends/a", "state", "sideways"])
            .status
            .success()
    );

    // Add, re-weight, remove: the backend list follows.
    let out = ctl(&socket, &["add", "backends", "127.0.0.1:9,weight=2,name=b"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        ctl(&socket, &["set", "backends/b", "weight", "5"])
            .status
            .success()
    );
    let view = show(&socket);
    assert_eq!(backend_state(&view, "b"), "ready");
    assert_eq!(view["pools"][0]["backends"][1]["weight"], 5);
    assert!(ctl(&socket, &["health"]).status.success(), "b is ready");
    // b has no connections: it drains, then the next read of the reports forgets it.
    assert!(ctl(&socket, &["remove", "backends/b"]).status.success());
    eventually("b is forgotten", || {
        backend_state(&show(&socket), "b") == "(absent)"
    });
    let out = ctl(&socket, &["set", "backends/b", "weight", "2"]);
    assert_eq!(out.status.code(), Some(1), "a forgotten backend is unknown");
    assert!(ctl(&socket, &["disable", "listen"]).status.success());
    assert_eq!(show(&socket)["listeners"][0]["enabled"], false);

    lb.stop();
    assert!(!socket.exists(), "the socket is removed on shutdown");
    // Nothing listens now: connection refused is an error too.
    let out = ctl(&socket, &["show"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn metrics_parse_and_carry_every_name() {
    let dir = TempDir::new("metrics");
    let socket = dir.join("admin.sock");
    let backend = format!("{},name=a", echo_backend());
    let _lb = Ringlb::quick(
        &dir,
        &backend,
        &["--admin-socket", socket.to_str().expect("utf-8")],
    );
    let answer = request(&Endpoint::Unix(socket), None, "GET", "/metrics", None).expect("scrape");
    assert_eq!(answer.status, 200);
    let text = answer.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition parses");
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "ringlb_backend_up",
        "ringlb_backend_current_sessions",
        "ringlb_backend_sessions_total",
        "ringlb_backend_bytes_in_total",
        "ringlb_backend_bytes_out_total",
        "ringlb_backend_connect_failures_total",
        "ringlb_listener_current_sessions",
        "ringlb_listener_accepted_total",
        "ringlb_listener_refused_total",
        "ringlb_worker_connections",
        "ringlb_worker_loop_turns_total",
        "ringlb_worker_buffers_in_use",
        "ringlb_worker_pipes_in_use",
        "ringlb_build_info",
    ] {
        assert!(names.contains(&name), "{name} missing from\n{text}");
    }
    let up = scrape
        .samples
        .iter()
        .find(|s| s.metric == "ringlb_backend_up")
        .expect("up");
    assert_eq!(up.labels.get("pool"), Some("backends"));
    assert_eq!(up.labels.get("backend"), Some("a"));
}

#[test]
fn a_stale_socket_is_replaced_and_a_bad_explicit_path_fails_the_start() {
    let dir = TempDir::new("stale");
    let socket = dir.join("admin.sock");
    // A socket file whose process is gone: connecting is refused.
    drop(UnixListener::bind(&socket).expect("stale socket"));
    assert!(socket.exists());
    let backend = echo_backend().to_string();
    let path = socket.to_str().expect("utf-8");
    let lb = Ringlb::quick(&dir, &backend, &["--admin-socket", path]);
    assert!(ctl(&socket, &["show"]).status.success(), "{}", lb.stderr());

    // Held by a live process: an explicit path is an error at start.
    let listen = free_port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .args([
            "run",
            "--listen",
            &listen,
            "--backend",
            &backend,
            "--admin-socket",
            path,
        ])
        .args(["--engine", "epoll", "--workers", "1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another running process holds it"),
        "{}",
        text(&out.stderr)
    );

    // A directory that does not exist (only the default path's is created).
    let missing = dir.join("no/such/dir/admin.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .args([
            "run",
            "--listen",
            &listen,
            "--backend",
            &backend,
            "--admin-socket",
        ])
        .arg(&missing)
        .args(["--engine", "epoll", "--workers", "1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("admin socket") && stderr.contains("no/such/dir"),
        "{stderr}"
    );
    drop(lb);
}

#[test]
fn two_instances_on_the_default_socket_both_run() {
    let dir = TempDir::new("default");
    let backend = echo_backend().to_string();
    let first = Ringlb::quick(&dir, &backend, &[]);
    let second = Ringlb::quick(&dir, &backend, &[]);
    // Both serve; at most one holds the default socket, so the other (or both, when another
    // process on this host holds it) started without one, saying so.
    thread::sleep(Duration::from_millis(300));
    let warned = [&first, &second]
        .iter()
        .filter(|lb| lb.stderr().contains("starting without the admin socket"))
        .count();
    assert!(warned >= 1, "{}\n{}", first.stderr(), second.stderr());
    assert!(TcpStream::connect(first.listen).is_ok());
    assert!(TcpStream::connect(second.listen).is_ok());
    second.stop();
    first.stop();
}

#[test]
fn tcp_requires_the_token() {
    let dir = TempDir::new("tcp");
    let admin = free_port();
    let listen = free_port();
    let config = dir.join("ringlb.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nsocket = \"\"\nlisten = \"{admin}\"\ntoken = \"t0ken\"\n\
             [[listener]]\nbind = \"{listen}\"\npool = \"p\"\n\
             [[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{}\"\n",
            echo_backend()
        ),
    )
    .expect("config");
    let _lb = Ringlb::start(&dir, listen, &["--config", config.to_str().expect("utf-8")]);
    let url = format!("http://{admin}");
    let run = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlb"));
        cmd.args(["ctl", "--url", &url])
            .env_remove("RINGLB_ADMIN_TOKEN");
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        cmd.arg("show").output().expect("ctl runs")
    };
    let out = run(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(401)"), "{}", text(&out.stderr));
    assert_eq!(run(Some("wrong")).status.code(), Some(1));
    let out = run(Some("t0ken"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("p/"), "{}", text(&out.stdout));
    // From the environment, kept out of the process list.
    let out = Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .args(["ctl", "--url", &url, "show"])
        .env("RINGLB_ADMIN_TOKEN", "t0ken")
        .output()
        .expect("ctl runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Counter values, summed from the workers' reports.
#[test]
fn counters_follow_the_traffic() {
    let dir = TempDir::new("counters");
    let socket = dir.join("admin.sock");
    let backend = format!("{},name=a", echo_backend());
    let lb = Ringlb::quick(
        &dir,
        &backend,
        &["--admin-socket", socket.to_str().expect("utf-8")],
    );
    // The start-up probe connected once already; count from here.
    let number = |v: &serde_json::Value| v.as_u64().expect("a count");
    eventually("the probe connection is gone", || {
        number(&show(&socket)["pools"][0]["backends"][0]["active"]) == 0
    });
    let before = show(&socket);
    let mut client = TcpStream::connect(lb.listen).expect("connect through ringlb");
    client.write_all(b"hello").expect("send");
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).expect("echo");
    let view = show(&socket);
    assert_eq!(view["workers_missing"], serde_json::json!([]));
    let (a, was) = (
        &view["pools"][0]["backends"][0],
        &before["pools"][0]["backends"][0],
    );
    assert_eq!(number(&a["active"]), 1);
    assert_eq!(number(&a["connections"]), number(&was["connections"]) + 1);
    assert!(number(&a["bytes_in"]) >= number(&was["bytes_in"]) + 5);
    assert!(number(&a["bytes_out"]) >= number(&was["bytes_out"]) + 5);
    assert_eq!(
        number(&view["listeners"][0]["accepted"]),
        number(&before["listeners"][0]["accepted"]) + 1
    );
    let metrics = request(
        &Endpoint::Unix(socket.clone()),
        None,
        "GET",
        "/metrics",
        None,
    )
    .expect("scrape")
    .text();
    for name in [
        "ringlb_worker_connections{worker=\"0\"} 1",
        "ringlb_worker_loop_turns_total{worker=\"0\"}",
        "ringlb_worker_buffers_in_use{worker=\"0\"}",
        "ringlb_worker_pipes_in_use{worker=\"0\"}",
        "ringlb_backend_sessions_total{pool=\"backends\",backend=\"a\"} ",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    drop(client);
    // Drain then remove: forgotten once the connection is gone.
    assert!(ctl(&socket, &["remove", "backends/a"]).status.success());
    eventually("the removed backend is forgotten", || {
        backend_state(&show(&socket), "a") == "(absent)"
    });
}

/// A backend that echoes and counts what it saw: connections, bytes.
fn counting_backend() -> (
    SocketAddr,
    std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").expect("backend");
    let addr = listener.local_addr().expect("backend address");
    let seen = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let counts = std::sync::Arc::clone(&seen);
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counts[0].fetch_add(1, Ordering::Relaxed);
            let counts = std::sync::Arc::clone(&counts);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    counts[1].fetch_add(n as u64, Ordering::Relaxed);
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// `metric{pool="backends",backend=NAME}` in `scrape`, as an integer (0 when absent).
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, backend: &str, le: Option<&str>) -> u64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get("backend") == Some(backend))
        .find_map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v as u64),
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| le.is_some_and(|le| le == "+Inf") && b.less_than.is_infinite())
                .map(|b| b.count as u64),
            _ => None,
        })
        .unwrap_or(0)
}

/// /metrics, parsed: each backend's sessions, bytes each way and connect-time count move by
/// exactly what the test sent through it (as the backends themselves counted it).
#[test]
fn metrics_equal_what_was_sent() {
    use std::sync::atomic::Ordering;
    let dir = TempDir::new("metrics-exact");
    let socket = dir.join("admin.sock");
    let (a, seen_a) = counting_backend();
    let (b, seen_b) = counting_backend();
    let listen = free_port();
    let (listen_text, a_spec, b_spec) = (
        listen.to_string(),
        format!("{a},name=a"),
        format!("{b},name=b"),
    );
    let _lb = Ringlb::start(
        &dir,
        listen,
        &[
            "--listen",
            &listen_text,
            "--backend",
            &a_spec,
            "--backend",
            &b_spec,
            "--admin-socket",
            socket.to_str().expect("utf-8"),
        ],
    );
    let scrape = || {
        let text = request(
            &Endpoint::Unix(socket.clone()),
            None,
            "GET",
            "/metrics",
            None,
        )
        .expect("scrape")
        .text();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
    };
    let idle = || {
        let view = show(&socket);
        (0..2).all(|i| view["pools"][0]["backends"][i]["active"] == 0)
    };
    eventually("the start-up probe is gone", idle);
    let before = scrape();
    let seen_before: Vec<[u64; 2]> = [&seen_a, &seen_b]
        .iter()
        .map(|s| [s[0].load(Ordering::Relaxed), s[1].load(Ordering::Relaxed)])
        .collect();
    for i in 0..10usize {
        let mut client = TcpStream::connect(listen).expect("connect through ringlb");
        let data = vec![i as u8; 1000 + 37 * i];
        client.write_all(&data).expect("send");
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let mut echo = Vec::new();
        client.read_to_end(&mut echo).expect("echo");
        assert_eq!(echo, data);
    }
    eventually("every connection is closed", idle);
    let after = scrape();
    for (name, seen, was) in [
        ("a", &seen_a, seen_before[0]),
        ("b", &seen_b, seen_before[1]),
    ] {
        let moved = |metric: &str, le: Option<&str>| {
            sample(&after, metric, name, le) - sample(&before, metric, name, le)
        };
        let connections = seen[0].load(Ordering::Relaxed) - was[0];
        let bytes = seen[1].load(Ordering::Relaxed) - was[1];
        assert!(connections > 0, "round robin reached backend {name}");
        assert_eq!(
            moved("ringlb_backend_sessions_total", None),
            connections,
            "{name}"
        );
        assert_eq!(
            moved("ringlb_backend_bytes_in_total", None),
            bytes,
            "{name}"
        );
        assert_eq!(
            moved("ringlb_backend_bytes_out_total", None),
            bytes,
            "{name}"
        );
        assert_eq!(
            moved("ringlb_backend_connect_time_seconds", Some("+Inf")),
            connections,
            "{name}: one connect time per connection"
        );
        assert_eq!(moved("ringlb_backend_current_sessions", None), 0);
    }
}
