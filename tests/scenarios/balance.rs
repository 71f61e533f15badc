//! Balancing: round robin spreads connections over every backend; source hashing sends each
//! client address to the same backend whichever worker accepts it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};

use ringlb_tools::backend::{BackendHandle, BackendKind};

use crate::harness::{Ctx, Launch, Outcome, Proxy, connect, connect_from, spawn_backend};

/// The names the three `hello` backends greet with.
const NAMES: [&str; 3] = ["alpha", "bravo", "charlie"];

/// Three `hello` backends (each greets with its name) and their `--backend` specs.
fn hello_backends() -> (Vec<BackendHandle>, Vec<String>) {
    let backends: Vec<_> = NAMES
        .iter()
        .map(|n| spawn_backend(BackendKind::Hello((*n).to_owned())))
        .collect();
    let specs = backends
        .iter()
        .zip(NAMES)
        .map(|(b, n)| format!("{},name={n}", b.local_addr()))
        .collect();
    (backends, specs)
}

/// Three `hello` backends (each greets with its name), round robin, 30 sequential
/// connections: every backend serves at least 5 (exactly 10 with one worker; each of the two
/// workers keeps its own rotation, so a little imbalance is allowed).
pub fn round_robin_balance(ctx: &Ctx) -> Outcome {
    const CONNECTIONS: usize = 30;
    let names = NAMES;
    let (backends, specs) = hello_backends();
    let launch = Launch::specs(specs).arg("--algorithm").arg("round-robin");
    let proxy = Proxy::start(ctx, &launch)?;
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..CONNECTIONS {
        let stream = connect(proxy.addr);
        let mut line = String::new();
        BufReader::new(&stream)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("connection {i}: reading the greeting: {e}"));
        let name = line.trim().to_owned();
        assert!(
            names.contains(&name.as_str()),
            "connection {i}: greeting {line:?}"
        );
        *served.entry(name).or_insert(0) += 1;
    }
    eprintln!("served: {served:?}");
    for (b, n) in backends.iter().zip(names) {
        let count = served.get(n).copied().unwrap_or(0);
        assert!(
            count >= 5,
            "{n} served {count} of {CONNECTIONS}: {served:?}"
        );
        assert_eq!(
            b.stats().connections as usize,
            count,
            "{n}: connections accepted vs greetings seen"
        );
    }
    proxy.finish();
    Ok(())
}

/// The greeting of a `hello` backend reached through the proxy from source address `from`.
fn greeting_from(from: Ipv4Addr, proxy: SocketAddr) -> String {
    let stream = connect_from(proxy, from);
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("from {from}: reading the greeting: {e}"));
    line.trim().to_owned()
}

/// Three `hello` backends, source hashing, 24 client addresses (127.0.3.1–24) connecting
/// three times each: every address always reaches the same backend, although successive
/// connections land on either worker (each builds its own Maglev table, identical by
/// design), and the addresses spread over more than one backend.
pub fn source_hash_is_sticky(ctx: &Ctx) -> Outcome {
    const SOURCES: u8 = 24;
    const ROUNDS: usize = 3;
    let names = NAMES;
    let (_backends, specs) = hello_backends(); // kept alive until the end
    let launch = Launch::specs(specs).arg("--algorithm").arg("source-hash");
    let proxy = Proxy::start(ctx, &launch)?;
    let mut reached: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for host in 1..=SOURCES {
            let from = Ipv4Addr::new(127, 0, 3, host);
            let name = greeting_from(from, proxy.addr);
            assert!(
                names.contains(&name.as_str()),
                "from {from}: greeting {name:?}"
            );
            reached.entry(from).or_default().insert(name);
        }
    }
    for (from, names) in &reached {
        assert_eq!(names.len(), 1, "{from} reached {names:?}");
    }
    let used: BTreeSet<&String> = reached.values().flatten().collect();
    assert!(used.len() > 1, "every address hashed to {used:?}");
    proxy.finish();
    Ok(())
}
