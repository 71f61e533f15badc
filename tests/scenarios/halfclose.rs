//! Half-close: either side may stop writing while the other direction carries on.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;

use crate::harness::{
    Ctx, Launch, Outcome, Proxy, connect, custom_backend, echo_backend, join, payload,
};

/// The client sends 256 KiB and shuts down its write side; the whole echo still arrives
/// afterwards, followed by end of stream.
pub fn half_close_client_first(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let proxy = Proxy::start(ctx, &Launch::new(&[echo.local_addr()]))?;
    let data = payload(256 << 10, 3);
    let stream = connect(proxy.addr);
    let mut writer = stream.try_clone().expect("clone");
    let sent = data.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer.shutdown(Shutdown::Write).expect("shutdown(Write)");
    });
    // Let the FIN go out before most of the echo has been read.
    join(sender, "writer");
    let mut got = Vec::new();
    (&stream)
        .read_to_end(&mut got)
        .expect("read the echo after half-closing, up to end of stream");
    assert_eq!(got.len(), data.len(), "echo length after half-close");
    assert!(got == data, "echo bytes after half-close differ");
    proxy.finish();
    Ok(())
}

/// The backend sends a fixed payload and shuts down its write side but keeps reading: the
/// client gets the payload and end of stream, then can still send bytes that the backend
/// receives, followed by end of stream when the client half-closes too.
pub fn half_close_backend_first(ctx: &Ctx) -> Outcome {
    let greeting = payload(100 << 10, 5);
    let upload = payload(50 << 10, 6);
    let to_send = greeting.clone();
    let (backend, served) = custom_backend(move |mut s| {
        s.write_all(&to_send).expect("backend: write the payload");
        s.shutdown(Shutdown::Write)
            .expect("backend: shutdown(Write)");
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("backend: read the client's bytes after its own half-close");
        got
    });
    let proxy = Proxy::start(ctx, &Launch::new(&[backend]))?;
    let mut stream = connect(proxy.addr);
    let mut got = Vec::new();
    (&stream)
        .read_to_end(&mut got)
        .expect("client: read the backend's payload up to end of stream");
    assert_eq!(got.len(), greeting.len(), "payload length before EOF");
    assert!(got == greeting, "payload bytes before EOF differ");
    stream
        .write_all(&upload)
        .expect("client: write after receiving EOF");
    stream.shutdown(Shutdown::Write).expect("client: shutdown");
    let received = join(served, "custom backend");
    assert_eq!(
        received.len(),
        upload.len(),
        "bytes the backend received after its half-close"
    );
    assert!(received == upload, "bytes the backend received differ");
    drop(stream);
    proxy.finish();
    Ok(())
}

/// A client sends TCP urgent (out-of-band) data mid-stream. Splice stops at the urgent mark
/// (answering 0, as at end of stream, or EAGAIN while poll says readable); the proxy must
/// neither take that for end of stream nor spin, and every normal byte before and after the
/// mark must arrive. The urgent byte itself is not forwarded (ringlb, like HAProxy, relays a
/// byte stream, and the kernel keeps urgent data out of it).
pub fn urgent_data_mid_stream(ctx: &Ctx) -> Outcome {
    urgent_data_through(ctx, &[])
}

/// The same with the smallest pipe a configuration allows (`--pipe-size 4KiB`, one page): the
/// copy that moves past the mark must take no more than the pipe holds (it took 16 KiB, wrote
/// 4 KiB and reset the connection).
pub fn urgent_data_small_pipe(ctx: &Ctx) -> Outcome {
    urgent_data_through(ctx, &["--pipe-size", "4KiB"])
}

fn urgent_data_through(ctx: &Ctx, flags: &[&str]) -> Outcome {
    let echo = echo_backend();
    let launch = flags
        .iter()
        .fold(Launch::new(&[echo.local_addr()]), |launch, flag| {
            launch.arg(flag)
        });
    let proxy = Proxy::start(ctx, &launch)?;
    let before = payload(40 << 10, 7);
    let after = payload(40 << 10, 8);
    let stream = connect(proxy.addr);
    let mut writer = stream.try_clone().expect("clone");
    let (first, second) = (before.clone(), after.clone());
    let sender = thread::spawn(move || {
        writer.write_all(&first).expect("write before the mark");
        let sock = socket2::SockRef::from(&writer);
        sock.send_out_of_band(b"!").expect("send urgent byte");
        // Let the urgent byte reach the proxy on its own, so the splice meets the mark.
        thread::sleep(std::time::Duration::from_millis(100));
        writer.write_all(&second).expect("write after the mark");
        writer.shutdown(Shutdown::Write).expect("shutdown(Write)");
    });
    let mut got = Vec::new();
    (&stream)
        .read_to_end(&mut got)
        .expect("read the echo up to end of stream");
    join(sender, "writer");
    let mut expected = before;
    expected.extend_from_slice(&after);
    assert_eq!(
        got.len(),
        expected.len(),
        "bytes echoed around urgent data (the bytes after the mark were lost if short)"
    );
    assert!(got == expected, "bytes echoed around urgent data differ");
    proxy.finish();
    Ok(())
}
