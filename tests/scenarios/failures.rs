//! Resets: an abortive close on one side closes the other side promptly.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{
    Closed, Ctx, Launch, Outcome, Proxy, connect, custom_backend, join, reset, wait_closed,
};

/// How quickly the far side must learn of a reset.
const PROMPTLY: Duration = Duration::from_secs(1);

/// The client sends a little, then resets (SO_LINGER 0, close): the proxy closes its backend
/// connection within a second, abortively, so the backend sees a reset too.
pub fn client_reset(ctx: &Ctx) -> Outcome {
    let (got_data, got_data_rx) = mpsc::channel();
    let (backend, served) = custom_backend(move |mut s| {
        let mut buf = [0u8; 64];
        let mut total = 0;
        while total < 4 {
            match s.read(&mut buf) {
                Ok(0) => panic!("backend: end of stream before the client's bytes"),
                Ok(n) => total += n,
                Err(e) => panic!("backend: reading the client's bytes: {e}"),
            }
        }
        got_data.send(()).expect("notify");
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (Closed::Eof, Instant::now()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return (Closed::Reset, Instant::now());
                }
                Err(e) => panic!("backend: connection not closed after the client reset: {e}"),
            }
        }
    });
    let proxy = Proxy::start(ctx, &Launch::new(&[backend]).log("debug"))?;
    let mut stream = connect(proxy.addr);
    stream.write_all(b"ping").expect("client write");
    got_data_rx
        .recv_timeout(Duration::from_secs(3))
        .expect("the backend received the client's bytes");
    let reset_at = Instant::now();
    reset(stream);
    let (how, at) = join(served, "custom backend");
    let took = at.duration_since(reset_at);
    eprintln!("backend saw {how:?} {took:?} after the client reset");
    assert!(
        took < PROMPTLY,
        "backend connection closed {took:?} after the client reset"
    );
    // A failed side is closed abortively (`Close { reset: true }`), so the reset passes on.
    assert_eq!(how, Closed::Reset, "how the backend connection was closed");
    let log = proxy.finish();
    let reset_by_peer = io::Error::from_raw_os_error(libc::ECONNRESET).to_string();
    assert_reset_logged(
        &log,
        &format!("cause=client: {reset_by_peer}"),
        "client_reset: 1",
    );
    Ok(())
}

/// The proxy's debug log says why it reset the connection, and its worker counters count the
/// reset under its cause (every engine prints the shard's `ResetCounts` when it stops).
fn assert_reset_logged(log: &str, cause: &str, counter: &str) {
    let line = log
        .lines()
        .find(|l| l.contains("resetting connection"))
        .unwrap_or_else(|| panic!("no reset logged:\n{log}"));
    assert!(
        line.contains(cause),
        "reset logged without {cause:?}: {line}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("stopped") && l.contains(counter)),
        "no stop line counts {counter:?}:\n{log}"
    );
}

/// The backend resets its connection: the client sees its connection reset within a second.
pub fn backend_reset(ctx: &Ctx) -> Outcome {
    let (reset_tx, reset_rx) = mpsc::channel();
    let (backend, served) = custom_backend(move |mut s| {
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)
            .expect("backend: read the client's bytes");
        reset(s);
        reset_tx.send(Instant::now()).expect("notify");
    });
    let proxy = Proxy::start(ctx, &Launch::new(&[backend]).log("debug"))?;
    let mut stream = connect(proxy.addr);
    stream.write_all(b"ping").expect("client write");
    let (how, at) = wait_closed(&stream, Duration::from_secs(3));
    join(served, "custom backend");
    let reset_at = reset_rx.recv().expect("reset time");
    let took = at.saturating_duration_since(reset_at);
    eprintln!("client saw {how:?} {took:?} after the backend reset");
    assert!(
        took < PROMPTLY,
        "client connection closed {took:?} after the backend reset"
    );
    assert_eq!(how, Closed::Reset, "how the client connection was closed");
    let log = proxy.finish();
    assert_reset_logged(&log, "cause=backend: ", "backend_reset: 1");
    Ok(())
}
