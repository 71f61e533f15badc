//! Sticky sessions: a client address keeps its backend for `affinity_ttl` whatever the pool
//! does meanwhile, but for a backend that goes down.

use std::io::BufRead;
use std::net::Ipv4Addr;
use std::thread;
use std::time::Duration;

use ringlb::control::client::{Endpoint, request};

use crate::capacity::api;
use crate::control::admin_socket;
use crate::harness::{Ctx, Launch, Outcome, Proxy, connect_from};

/// The name a greeter behind the proxy answers a client bound to `source` with.
fn greeted_from(proxy: &Proxy, source: Ipv4Addr) -> String {
    let stream = connect_from(proxy.addr, source);
    let mut line = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut line)
        .expect("read the greeting");
    line.trim().to_owned()
}

/// `affinity = "source"`: 40 client addresses keep their backends when a third backend is
/// added (where round robin would send a third of them), a backend put in maintenance
/// releases its clients, and after `affinity_ttl` of silence clients are balanced afresh
/// and some reach the new backend. `ctl show affinity` lists every client with its backend.
pub fn affinity_survives_scale_out_and_expires(ctx: &Ctx) -> Outcome {
    const TTL: Duration = Duration::from_millis(1500);
    const CLIENTS: u8 = 40;
    let alpha = crate::health::Greeter::start("alpha", "127.0.0.1:0".parse().expect("addr"));
    let bravo = crate::health::Greeter::start("bravo", "127.0.0.1:0".parse().expect("addr"));
    let charlie = crate::health::Greeter::start("charlie", "127.0.0.1:0".parse().expect("addr"));
    let mut text = format!(
        "[admin]\nsocket = \"{}\"\n[[listener]]\nbind = \"{{listen}}\"\npool = \"web\"\n\
         [[pool]]\nname = \"web\"\nalgorithm = \"round-robin\"\naffinity = \"source\"\n\
         affinity_ttl = \"{}ms\"\n",
        admin_socket(ctx).display(),
        TTL.as_millis()
    );
    for (name, g) in [("alpha", &alpha), ("bravo", &bravo)] {
        text.push_str(&format!(
            "[[pool.backend]]\nname = \"{name}\"\naddress = \"{}\"\n",
            g.addr
        ));
    }
    let proxy = Proxy::start(ctx, &Launch::file(&text))?;
    let endpoint = Endpoint::Unix(admin_socket(ctx));
    let source = |i: u8| Ipv4Addr::new(127, 0, 1, i + 1);
    let first: Vec<String> = (0..CLIENTS)
        .map(|i| greeted_from(&proxy, source(i)))
        .collect();
    let post = |path: &str, body: serde_json::Value| {
        let answer = request(&endpoint, None, "POST", path, Some(&body)).expect(path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    };
    post(
        "/api/backends/add",
        serde_json::json!({ "pool": "web", "spec": format!("{},name=charlie", charlie.addr) }),
    );
    for round in 0..3 {
        for i in 0..CLIENTS {
            assert_eq!(
                greeted_from(&proxy, source(i)),
                first[i as usize],
                "client {i} moved after the scale-out (round {round})"
            );
        }
    }
    let table = api(ctx, "/api/affinity");
    let listed = table["pools"][0]["clients"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed.len(), usize::from(CLIENTS), "{table}");
    for entry in &listed {
        let client: Ipv4Addr = entry["client"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .expect("client");
        let i = client.octets()[3] - 1;
        assert_eq!(
            entry["backend"].as_str(),
            Some(first[i as usize].as_str()),
            "{entry}"
        );
    }
    assert!(
        table["pools"][0]["hits"].as_u64() >= Some(3 * u64::from(CLIENTS)),
        "{table}"
    );

    // Maintenance releases alpha's clients; they stay where they went when it is back.
    post(
        "/api/backends/state",
        serde_json::json!({ "pool": "web", "backend": "alpha", "state": "maint" }),
    );
    let moved: Vec<String> = (0..CLIENTS)
        .map(|i| greeted_from(&proxy, source(i)))
        .collect();
    for i in 0..usize::from(CLIENTS) {
        assert_ne!(
            moved[i], "alpha",
            "client {i} still reaches alpha in maintenance"
        );
        if first[i] != "alpha" {
            assert_eq!(
                moved[i], first[i],
                "client {i} moved though its backend was up"
            );
        }
    }
    post(
        "/api/backends/state",
        serde_json::json!({ "pool": "web", "backend": "alpha", "state": "ready" }),
    );
    for i in 0..CLIENTS {
        assert_eq!(
            greeted_from(&proxy, source(i)),
            moved[i as usize],
            "client {i}"
        );
    }

    // A TTL of silence: balanced afresh, over all three.
    thread::sleep(TTL + Duration::from_millis(300));
    let after: Vec<String> = (0..CLIENTS)
        .map(|i| greeted_from(&proxy, source(i)))
        .collect();
    let on_charlie = after.iter().filter(|n| *n == "charlie").count();
    let on_alpha = after.iter().filter(|n| *n == "alpha").count();
    eprintln!("after the TTL: {on_alpha} on alpha, {on_charlie} on charlie of {CLIENTS}");
    assert!(on_charlie >= 5 && on_alpha >= 5, "{after:?}");
    drop((alpha, bravo, charlie));
    proxy.finish();
    Ok(())
}
