//! Balancing: round robin spreads connections over every backend.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

use ringlb_tools::backend::BackendKind;

use crate::harness::{Ctx, Launch, Outcome, Proxy, connect, spawn_backend};

/// Three `hello` backends (each greets with its name), round robin, 30 sequential
/// connections: every backend serves at least 5 (exactly 10 with one worker; each of the two
/// workers keeps its own rotation, so a little imbalance is allowed).
pub fn round_robin_balance(ctx: &Ctx) -> Outcome {
    const CONNECTIONS: usize = 30;
    let names = ["alpha", "bravo", "charlie"];
    let backends: Vec<_> = names
        .iter()
        .map(|n| spawn_backend(BackendKind::Hello((*n).to_owned())))
        .collect();
    let specs = backends
        .iter()
        .zip(names)
        .map(|(b, n)| format!("{},name={n}", b.local_addr()))
        .collect();
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
