//! Changes made through the admin API while traffic flows.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use ringlb::control::client::{Endpoint, request};
use ringlb_tools::backend::BackendKind;

use crate::harness::{Ctx, Launch, Outcome, Proxy, connect, spawn_backend};

/// A drained backend stops getting new clients at once.
const DRAIN_WITHIN: Duration = Duration::from_millis(100);

/// The admin socket for `ctx`'s run (short enough for `sun_path`).
fn admin_socket(ctx: &Ctx) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin");
    std::fs::create_dir_all(&dir).expect("socket directory");
    dir.join(format!("{}-{}.sock", ctx.config, std::process::id()))
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

fn round_trip(stream: &mut TcpStream, msg: &[u8]) {
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
