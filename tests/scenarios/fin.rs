//! The fin timeouts (`--client-fin`, `--server-fin`): once one direction has ended, a
//! half-closed connection waits at most that long, without traffic, for the other side.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    Closed, Ctx, Launch, Outcome, Proxy, connect, custom_backend, join, wait_closed,
};

/// The fin timeout every scenario here runs with.
const FIN: Duration = Duration::from_secs(1);
/// The idle timeout they run with: far longer, so that only the fin timeout can close.
const IDLE: Duration = Duration::from_secs(30);

fn launch(backend: std::net::SocketAddr, flag: &str) -> Launch {
    Launch::new(&[backend])
        .idle(IDLE)
        .arg(flag)
        .arg(&format!("{}ms", FIN.as_millis()))
}

/// Asserts a close `took` about the fin timeout: not before, and well before the idle timeout.
fn about_fin(took: Duration, what: &str) {
    eprintln!("{what} after {took:?}");
    assert!(
        took >= FIN - Duration::from_millis(200),
        "{what} after {took:?}, before the fin timeout"
    );
    // Well before the idle timeout, with room for a loaded machine (the idle timeout scenario
    // allows 2 s too).
    assert!(
        took < FIN + Duration::from_secs(4),
        "{what} only after {took:?} (fin timeout {FIN:?}, idle {IDLE:?})"
    );
}

/// The backend replies and shuts down its write side; the client reads the reply and its end
/// of stream but then neither sends nor closes. With `--client-fin 1s` ringlb closes the
/// connection about 1 s later, which the backend (still reading) sees as end of stream.
pub fn client_fin_timeout(ctx: &Ctx) -> Outcome {
    let (backend, served) = custom_backend(|mut s| {
        s.write_all(b"bye").expect("backend: reply");
        s.shutdown(Shutdown::Write)
            .expect("backend: shutdown(Write)");
        let finished = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut buf = [0u8; 64];
        let read = s.read(&mut buf).map_err(|e| e.kind());
        (read, finished.elapsed())
    });
    let proxy = Proxy::start(ctx, &launch(backend, "--client-fin"))?;
    let stream = connect(proxy.addr);
    let mut got = Vec::new();
    (&stream)
        .read_to_end(&mut got)
        .expect("client: the reply up to end of stream");
    assert_eq!(got, b"bye");
    let (read, took) = join(served, "custom backend");
    assert_eq!(
        read,
        Ok(0),
        "the backend sees a clean end of stream once client_fin has passed"
    );
    about_fin(took, "half-closed connection closed by client_fin");
    drop(stream);
    proxy.finish();
    Ok(())
}

/// The client sends a request and shuts down its write side; the backend reads it to its end
/// but never answers nor closes. With `--server-fin 1s` the client sees end of stream about
/// 1 s later.
pub fn server_fin_timeout(ctx: &Ctx) -> Outcome {
    let (backend, served) = custom_backend(|mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("backend: the request");
        // Handed back open: the test holds it until the end.
        (got, s)
    });
    let proxy = Proxy::start(ctx, &launch(backend, "--server-fin"))?;
    let mut stream = connect(proxy.addr);
    stream.write_all(b"request").expect("client: request");
    stream
        .shutdown(Shutdown::Write)
        .expect("client: shutdown(Write)");
    let finished = Instant::now();
    let (got, held) = join(served, "custom backend");
    assert_eq!(got, b"request");
    let (how, at) = wait_closed(&stream, Duration::from_secs(6));
    assert_eq!(how, Closed::Eof, "a fin timeout is a clean close");
    about_fin(
        at.duration_since(finished),
        "half-closed connection closed by server_fin",
    );
    drop(held);
    proxy.finish();
    Ok(())
}

/// The fin timeout is an inactivity limit: a client that keeps sending after the backend has
/// finished keeps its half-closed connection for longer than `--client-fin`, and every byte
/// reaches the backend.
pub fn half_closed_traffic_outlives_client_fin(ctx: &Ctx) -> Outcome {
    const CHUNKS: usize = 8;
    let (backend, served) = custom_backend(|mut s| {
        s.write_all(b"bye").expect("backend: reply");
        s.shutdown(Shutdown::Write)
            .expect("backend: shutdown(Write)");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut got = Vec::new();
        let read = s.read_to_end(&mut got).map_err(|e| e.kind());
        (read, got)
    });
    let proxy = Proxy::start(ctx, &launch(backend, "--client-fin"))?;
    let mut stream = connect(proxy.addr);
    let mut got = Vec::new();
    (&stream)
        .read_to_end(&mut got)
        .expect("client: the reply up to end of stream");
    assert_eq!(got, b"bye");
    let started = Instant::now();
    for i in 0..CHUNKS {
        if let Err(e) = stream.write_all(b"tick") {
            panic!(
                "client: chunk {i} failed after {:?}: {e}",
                started.elapsed()
            );
        }
        thread::sleep(FIN * 3 / 10);
    }
    assert!(
        started.elapsed() > FIN * 2,
        "the exchange outlasted the fin timeout"
    );
    stream
        .shutdown(Shutdown::Write)
        .expect("client: shutdown(Write)");
    let (read, received) = join(served, "custom backend");
    assert_eq!(read, Ok::<usize, io::ErrorKind>(4 * CHUNKS));
    assert!(received.chunks(4).all(|c| c == b"tick"));
    proxy.finish();
    Ok(())
}
