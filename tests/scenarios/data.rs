//! Bytes arrive exactly as sent, in both directions at once, for sizes from 0 B to 16 MiB.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use crate::harness::{
    Ctx, Launch, Outcome, Proxy, connect, custom_backend_many, echo_backend, echo_exchange, join,
    payload,
};

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

/// Reads to end of stream in 64 KiB pieces, pausing 30 ms after every MiB.
fn slow_read_to_end(mut s: &TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut next_pause = 1 << 20;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("slow reader: {e} after {} bytes", got.len()),
        }
        if got.len() >= next_pause {
            next_pause += 1 << 20;
            thread::sleep(Duration::from_millis(30));
        }
    }
}

/// Backpressure: 8 MiB towards a client that starts reading only after 300 ms and then reads
/// slowly, and at the same time 8 MiB towards a backend that does the same. The proxy has to
/// stop reading while its sink is full and resume later; every byte arrives, in order.
pub fn slow_peers(ctx: &Ctx) -> Outcome {
    const SIZE: usize = 8 << 20;
    let (backend, served) = custom_backend_many(2, |mut s: TcpStream| {
        let mut command = [0u8; 1];
        s.read_exact(&mut command).expect("backend: command byte");
        match &command {
            b"D" => {
                s.write_all(&payload(SIZE, 21))
                    .expect("backend: write to the slow client");
                s.shutdown(Shutdown::Write).expect("backend: shutdown");
                let mut rest = Vec::new();
                s.read_to_end(&mut rest)
                    .expect("backend: wait for the close");
                rest
            }
            b"U" => {
                thread::sleep(Duration::from_millis(300));
                slow_read_to_end(&s)
            }
            other => panic!("backend: unknown command {other:?}"),
        }
    });
    let proxy = Proxy::start(ctx, &Launch::new(&[backend]))?;
    let addr = proxy.addr;
    let download = thread::spawn(move || {
        let mut s = connect(addr);
        s.write_all(b"D").expect("client: command");
        thread::sleep(Duration::from_millis(300));
        let got = slow_read_to_end(&s);
        assert_eq!(got.len(), SIZE, "bytes the slow client received");
        assert!(
            got == payload(SIZE, 21),
            "bytes the slow client received differ"
        );
    });
    let upload = thread::spawn(move || {
        let mut s = connect(addr);
        let mut data = b"U".to_vec();
        data.extend_from_slice(&payload(SIZE, 22));
        s.write_all(&data)
            .expect("client: write to the slow backend");
        s.shutdown(Shutdown::Write).expect("client: shutdown");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .expect("client: wait for end of stream");
        assert!(rest.is_empty(), "unexpected bytes from the slow backend");
    });
    join(download, "slow client");
    join(upload, "upload to the slow backend");
    let results = join(served, "custom backend");
    let uploaded = results
        .iter()
        .find(|r| !r.is_empty())
        .expect("the slow backend received the upload");
    assert_eq!(uploaded.len(), SIZE, "bytes the slow backend received");
    assert!(
        *uploaded == payload(SIZE, 22),
        "bytes the slow backend received differ"
    );
    proxy.finish();
    Ok(())
}
