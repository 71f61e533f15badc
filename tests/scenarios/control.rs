//! Changes made through the admin API, and reloads, while traffic flows.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use ringlb::control::client::{Endpoint, request};
use ringlb_tools::backend::BackendKind;

use crate::harness::{
    Ctx, Launch, Outcome, Proxy, connect, echo_backend, echo_exchange, join, payload, signal,
    spawn_backend,
};

/// A drained backend stops getting new clients at once.
const DRAIN_WITHIN: Duration = Duration::from_millis(100);

/// The admin socket for `ctx`'s run: one per configuration and scenario (two may run at
/// once), under the temporary directory to stay short enough for `sun_path`.
pub fn admin_socket(ctx: &Ctx) -> PathBuf {
    std::env::temp_dir().join(format!(
        "ringlb-{}-{}-{}.sock",
        std::process::id(),
        ctx.config,
        ctx.scenario
    ))
}

/// Connects and reads the `hello` backend's greeting: which backend it reached.
fn greeted(proxy: &Proxy) -> (TcpStream, String) {
    let stream = connect(proxy.addr);
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("read the greeting");
    (stream, line.trim().to_owned())
}

pub fn round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).expect("write");
    let mut echoed = vec![0u8; msg.len()];
    stream.read_exact(&mut echoed).expect("read the echo");
    assert_eq!(echoed, msg);
}

/// Two backends, round robin, and a connection established to each; `bravo` is set to drain
/// through the admin API. From 100 ms after the answer, no new client reaches `bravo` (its
/// own accept count stays put) and every one reaches `alpha`, while the connection `bravo`
/// already had keeps exchanging data and is counted there as active.
pub fn drain_through_the_api(ctx: &Ctx) -> Outcome {
    let alpha = spawn_backend(BackendKind::Hello("alpha".into()));
    let bravo = spawn_backend(BackendKind::Hello("bravo".into()));
    let socket = admin_socket(ctx);
    let launch = Launch::specs(vec![
        format!("{},name=alpha", alpha.local_addr()),
        format!("{},name=bravo", bravo.local_addr()),
    ])
    .arg("--algorithm")
    .arg("round-robin")
    .arg("--admin-socket")
    .arg(socket.to_str().expect("UTF-8 path"));
    let proxy = Proxy::start(ctx, &launch)?;
    let endpoint = Endpoint::Unix(socket.clone());

    // Hold connections until one reached bravo (round robin: within a few).
    let mut held = Vec::new();
    let mut established = None;
    for _ in 0..10 {
        let (stream, name) = greeted(&proxy);
        if name == "bravo" {
            established = Some(stream);
            break;
        }
        held.push(stream);
    }
    let mut established = established.expect("round robin reached bravo within 10 clients");
    round_trip(&mut established, b"before the drain");

    let body = serde_json::json!({"pool": "backends", "backend": "bravo", "state": "drain"});
    let answer = request(&endpoint, None, "POST", "/api/backends/state", Some(&body))
        .expect("the admin API answers");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answered = Instant::now();
    thread::sleep(DRAIN_WITHIN.saturating_sub(answered.elapsed()));
    let bravo_before = bravo.stats().connections;
    for i in 0..20 {
        let (mut stream, name) = greeted(&proxy);
        assert_eq!(name, "alpha", "client {i} after the drain");
        round_trip(&mut stream, b"new client");
    }
    assert_eq!(
        bravo.stats().connections,
        bravo_before,
        "no new connection reached the drained backend"
    );

    // The established connection keeps working, and is what bravo still has.
    round_trip(&mut established, b"after the drain");
    let view = request(&endpoint, None, "GET", "/api/show", None).expect("show");
    let view: serde_json::Value = serde_json::from_slice(&view.body).expect("JSON");
    let backends = view["pools"][0]["backends"].as_array().expect("backends");
    let bravo_view = backends
        .iter()
        .find(|b| b["name"] == "bravo")
        .expect("bravo listed");
    assert_eq!(bravo_view["state"], "drain");
    assert_eq!(bravo_view["active"], 1, "{bravo_view}");
    round_trip(&mut established, b"still flowing");
    established
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut rest = Vec::new();
    established.read_to_end(&mut rest).expect("a clean end");
    assert!(rest.is_empty());
    drop(held);
    proxy.finish();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Two configurations that differ in backends and weights: `one` and `two` first, then `two`
/// (weight 3) and `three`.
pub fn reload_files(ctx: &Ctx, backends: &[SocketAddr; 3]) -> [String; 2] {
    let socket = admin_socket(ctx);
    let head = format!(
        "[admin]\nsocket = \"{}\"\n[[listener]]\nname = \"front\"\nbind = \"{{listen}}\"\n\
         pool = \"web\"\n[[pool]]\nname = \"web\"\n",
        socket.display()
    );
    let backend = |name: &str, addr: SocketAddr, weight: u32| {
        format!("[[pool.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\nweight = {weight}\n")
    };
    [
        format!(
            "{head}{}{}",
            backend("one", backends[0], 1),
            backend("two", backends[1], 1)
        ),
        format!(
            "{head}{}{}",
            backend("two", backends[1], 3),
            backend("three", backends[2], 1)
        ),
    ]
}

/// Writes `template` (`{listen}`: the proxy's address) as the proxy's file and reloads it
/// through the admin API; the reload's answer, checked to be a success.
pub fn reload_file(proxy: &Proxy, endpoint: &Endpoint, template: &str) -> serde_json::Value {
    let text = template.replace("{listen}", &proxy.addr.to_string());
    write_file(proxy.config_path(), &text);
    let body = serde_json::json!({});
    let answer =
        request(endpoint, None, "POST", "/api/reload", Some(&body)).expect("the admin API answers");
    assert_eq!(answer.status, 200, "reload: {}", answer.text());
    serde_json::from_slice(&answer.body).expect("JSON")
}

/// Replaces the file in one step, so that a reload never reads half of it.
pub fn write_file(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write the next configuration");
    std::fs::rename(&next, path).expect("replace the configuration");
}

/// Stops the [`load`] threads; the clients and request rounds they completed (each > 0).
pub fn stop_load(stop: &AtomicBool, threads: Vec<thread::JoinHandle<(u64, u64)>>) -> (u64, u64) {
    stop.store(true, Ordering::Relaxed);
    let (mut clients, mut rounds) = (0, 0);
    for t in threads {
        let (c, r) = join(t, "load thread");
        clients += c;
        rounds += r;
    }
    assert!(clients > 0 && rounds > 0, "load ran");
    (clients, rounds)
}

/// Load that checks every byte: sequential clients with payloads of varied sizes, and
/// connections doing request/response rounds (`per_connection` rounds each, then a new
/// connection), until `stop` (or their bound).
pub fn load(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    per_connection: u64,
) -> Vec<thread::JoinHandle<(u64, u64)>> {
    let mut threads = Vec::new();
    for seed in 0..2u64 {
        let stop = Arc::clone(stop);
        threads.push(thread::spawn(move || {
            let mut done = 0;
            for i in 0..3000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let len = 1 + ((i * 7919 + seed * 104_729) % 65_536) as usize;
                let data = payload(len, seed * 10_000 + i);
                assert!(
                    echo_exchange(addr, data.clone()) == data,
                    "client {seed}/{i}"
                );
                done += 1;
            }
            (done, 0)
        }));
    }
    for c in 0..4u64 {
        let stop = Arc::clone(stop);
        threads.push(thread::spawn(move || {
            let mut stream = connect(addr);
            let mut rounds = 0;
            for i in 0..100_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if i > 0 && i % per_connection == 0 {
                    stream = connect(addr);
                }
                let request = payload(1024, 1_000_000 + c * 100_000 + i);
                round_trip(&mut stream, &request);
                rounds += 1;
            }
            (0, rounds)
        }));
    }
    threads
}

/// The reload test, on every engine: 20 reloads alternating two files that differ in
/// backends and weights (half through the admin API, half with SIGHUP) while clients connect
/// and long-lived connections exchange requests. No client is refused or reset, every byte
/// comes back as sent, and each backend the files name served clients.
pub fn reload_under_load(ctx: &Ctx) -> Outcome {
    const RELOADS: usize = 20;
    let echoes = [echo_backend(), echo_backend(), echo_backend()];
    let addrs = [0, 1, 2].map(|i| echoes[i].local_addr());
    let files = reload_files(ctx, &addrs);
    let proxy = Proxy::start(ctx, &Launch::file(&files[0]))?;
    let endpoint = Endpoint::Unix(admin_socket(ctx));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(proxy.addr, &stop, u64::MAX);
    let mut signalled = 0;
    for i in 1..=RELOADS {
        if i % 2 == 0 {
            let outcome = reload_file(&proxy, &endpoint, &files[i % 2]);
            assert_eq!(
                outcome["restart_needed"],
                serde_json::json!([]),
                "reload {i}"
            );
        } else {
            let text = files[i % 2].replace("{listen}", &proxy.addr.to_string());
            write_file(proxy.config_path(), &text);
            signalled += 1;
            signal(proxy.pid(), Signal::HUP);
            let deadline = Instant::now() + Duration::from_secs(3);
            while proxy.log_text().matches("configuration reloaded").count() < i {
                assert!(Instant::now() < deadline, "SIGHUP {signalled} not applied");
                thread::sleep(Duration::from_millis(10));
            }
        }
        thread::sleep(Duration::from_millis(40));
    }
    let (clients, rounds) = stop_load(&stop, threads);
    eprintln!("{RELOADS} reloads under {clients} clients and {rounds} request rounds");
    for (echo, name) in echoes.iter().zip(["one", "two", "three"]) {
        assert!(
            echo.stats().connections > 0,
            "backend {name} served no client"
        );
    }
    // The last file (the first one again) is what runs: `three` drains away.
    let view = request(&endpoint, None, "GET", "/api/show", None).expect("show");
    let view: serde_json::Value = serde_json::from_slice(&view.body).expect("JSON");
    let states: Vec<(String, String)> = view["pools"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or("").to_owned(),
                b["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .filter(|(_, state)| state != "removing")
        .collect();
    assert_eq!(
        states,
        [
            ("one".to_owned(), "ready".to_owned()),
            ("two".to_owned(), "ready".to_owned())
        ]
    );
    let log = proxy.finish();
    assert!(!log.contains("reload refused"), "{log}");
    Ok(())
}

/// Connects until `addr` refuses (every worker closed its socket), for at most 2 s.
fn refused_within(addr: SocketAddr, proxy: &Proxy) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(_) => return started.elapsed(),
            Ok(s) => drop(s),
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{addr} still accepts 2 s after its removal; log:\n{}",
        proxy.log_tail()
    )
}

/// A reload adds a listener (it serves at once, on every worker) and another removes the
/// first one: it stops accepting while a connection it had goes on, byte for byte.
pub fn reload_adds_and_removes_listeners(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let socket = admin_socket(ctx);
    let second = crate::harness::free_addr();
    let pool = format!(
        "[[pool]]\nname = \"web\"\n[[pool.backend]]\naddress = \"{}\"\n",
        echo.local_addr()
    );
    let listener = |name: &str, bind: &str| {
        format!("[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\npool = \"web\"\n")
    };
    let admin = format!("[admin]\nsocket = \"{}\"\n", socket.display());
    let first_only = format!("{admin}{}{pool}", listener("first", "{listen}"));
    let proxy = Proxy::start(ctx, &Launch::file(&first_only))?;
    let endpoint = Endpoint::Unix(socket);
    let reload = |text: &str| drop(reload_file(&proxy, &endpoint, text));
    let mut held = connect(proxy.addr);
    round_trip(&mut held, b"through the first listener");

    let both = format!(
        "{admin}{}{}{pool}",
        listener("first", "{listen}"),
        listener("second", &second.to_string())
    );
    reload(&both);
    for i in 0..20u64 {
        let data = payload(4096 + i as usize, i);
        assert!(
            echo_exchange(second, data.clone()) == data,
            "client {i} of the new listener"
        );
    }

    let second_only = format!("{admin}{}{pool}", listener("second", &second.to_string()));
    reload(&second_only);
    let took = refused_within(proxy.addr, &proxy);
    eprintln!("the removed listener refused clients after {took:?}");
    round_trip(&mut held, b"its connection goes on");
    let data = payload(100_000, 7);
    assert!(
        echo_exchange(second, data.clone()) == data,
        "the new listener serves"
    );
    let view = request(&endpoint, None, "GET", "/api/show", None).expect("show");
    let view: serde_json::Value = serde_json::from_slice(&view.body).expect("JSON");
    let names: Vec<&str> = view["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(names, ["second"]);
    round_trip(&mut held, b"still");
    drop(held);
    proxy.finish();
    Ok(())
}
