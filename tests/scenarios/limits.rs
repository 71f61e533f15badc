//! The process-wide connection limit (`--max-connections`, HAProxy's `maxconn`).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Ctx, Launch, Outcome, Proxy, WORKERS, connect, echo_backend};

/// Connections the process may hold in this scenario.
const LIMIT: usize = 4;

/// Sends `message` and reads its echo back.
fn echo_once(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).expect("send");
    let mut got = vec![0u8; message.len()];
    stream.read_exact(&mut got).expect("echo");
    assert_eq!(got, message);
}

/// Issue 10, item 7: `--max-connections` was per worker, and a full worker accepted clients
/// and closed them. With `--max-connections 4` for the whole process (2 workers), four
/// long-lived connections fill it; a fifth client completes its handshake into the kernel's
/// backlog and waits there, neither served nor closed, and is served within 2 s once one of
/// the four ends. The backend never sees more than 4 connections at once (no overshoot:
/// every client arrives after the workers saw the process full).
pub fn max_connections_holds_clients_in_the_backlog(ctx: &Ctx) -> Outcome {
    const { assert!(WORKERS >= 2, "the limit must span workers") };
    let echo = echo_backend();
    let launch = Launch::new(&[echo.local_addr()])
        .arg("--max-connections")
        .arg(&LIMIT.to_string())
        // The four must outlive the wait below.
        .idle(Duration::from_secs(30));
    let proxy = Proxy::start(ctx, &launch)?;
    let mut open: Vec<TcpStream> = (0..LIMIT)
        .map(|i| {
            let mut stream = connect(proxy.addr);
            echo_once(&mut stream, format!("client {i}").as_bytes());
            stream
        })
        .collect();
    // Every worker notices the full process within a loop turn (100 ms).
    thread::sleep(Duration::from_millis(400));

    let mut waiting = connect(proxy.addr);
    waiting
        .write_all(b"waiting")
        .expect("the kernel takes bytes before accept");
    waiting
        .set_read_timeout(Some(Duration::from_millis(1200)))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    match waiting.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("the fifth client was closed instead of waiting"),
        Ok(_) => panic!("the fifth client was served past max_connections"),
        Err(e) => panic!("the fifth client failed instead of waiting: {e}"),
    }
    assert_eq!(
        echo.stats().connections,
        LIMIT as u64,
        "connections the backend saw while the process was full"
    );
    for (i, stream) in open.iter_mut().enumerate() {
        echo_once(stream, format!("still {i}").as_bytes());
    }

    // One ends: its slot goes to the client in the backlog.
    drop(open.remove(0));
    let freed = Instant::now();
    waiting
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let mut got = [0u8; 7];
    waiting
        .read_exact(&mut got)
        .unwrap_or_else(|e| panic!("no echo within 2 s of a slot freeing: {e}"));
    assert_eq!(&got, b"waiting");
    eprintln!("served {:?} after a slot freed", freed.elapsed());
    assert_eq!(echo.stats().connections, LIMIT as u64 + 1);
    drop(waiting);
    drop(open);
    proxy.finish();
    Ok(())
}
