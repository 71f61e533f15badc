//! Bytes arrive exactly as sent, in both directions at once, for sizes from 0 B to 16 MiB.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::thread;

use crate::harness::{Ctx, Launch, Outcome, Proxy, echo_backend, echo_exchange, join, payload};

fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// 0 B, 1 B, 64 KiB, 1 MiB and 16 MiB through an echo backend, each on its own connection,
/// all at once; each connection writes from one thread and reads from another.
pub fn exact_bytes(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let proxy = Proxy::start(ctx, &Launch::new(&[echo.local_addr()]))?;
    let sizes = [0usize, 1, 64 << 10, 1 << 20, 16 << 20];
    let addr = proxy.addr;
    let clients: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            thread::spawn(move || {
                let data = payload(size, i as u64 + 11);
                let expected = digest(&data);
                let got = echo_exchange(addr, data);
                assert_eq!(got.len(), size, "{size} B payload: echoed length");
                assert_eq!(
                    digest(&got),
                    expected,
                    "{size} B payload: echoed bytes differ"
                );
            })
        })
        .collect();
    for (c, size) in clients.into_iter().zip(sizes) {
        join(c, &format!("{size} B exchange"));
    }
    let stats = echo.stats();
    let total: u64 = sizes.iter().map(|&s| s as u64).sum();
    assert_eq!(stats.bytes_in, total, "bytes the backend received");
    assert_eq!(stats.bytes_out, total, "bytes the backend sent");
    proxy.finish();
    Ok(())
}
