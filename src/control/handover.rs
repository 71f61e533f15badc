//! Binary upgrade: a new ringlb takes the listening sockets over from the running one, so
//! that no client waiting in an accept queue is reset and no connect is refused, as HAProxy
//! does with `expose-fd listeners` and `-x`.
//!
//! The running process serves its listening sockets on `ADMIN_SOCKET.handover`, a
//! `SOCK_SEQPACKET` Unix socket (mode 0600) beside the admin socket. The exchange:
//! 1. the new process connects and sends `listeners`;
//! 2. the old one answers one message per open listener, `{"bind": ADDR}` with that
//!    listener's sockets (one per worker) attached (`SCM_RIGHTS`), then `end`;
//! 3. the new process starts its workers on them (binding afresh only what is missing) and,
//!    once every worker is up, sends `done`;
//! 4. the old process stops accepting and drains its connections for up to its
//!    `shutdown_grace`, then exits, as on SIGTERM. If the new process goes away without
//!    `done` (it failed to start), the old one logs it and serves on.
//!
//! Both processes accept from the same sockets for a moment; every client is served by one.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketType,
};
use socket2::Socket;

use crate::engine::listeners::Inherited;

/// How long the old process waits for the new one to say `done`.
const DONE_WITHIN: Duration = Duration::from_secs(120);
/// How long any other step of the exchange may take (a connect, a message each way).
const STEP_WITHIN: Duration = Duration::from_secs(10);
/// Descriptors per message: the kernel takes at most 253 (`SCM_MAX_FD`); a listener with
/// more sockets (more workers) sends the rest in `more` messages.
const FDS_PER_MESSAGE: usize = 250;
/// Longest message of the exchange.
const MAX_MESSAGE: usize = 4096;

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("handover socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("handover socket {path}: {message}")]
    Protocol { path: PathBuf, message: String },
}

/// Where the process using admin socket `admin` serves its listening sockets.
pub fn path_for(admin: &Path) -> PathBuf {
    let mut path = admin.as_os_str().to_owned();
    path.push(".handover");
    PathBuf::from(path)
}

fn seqpacket() -> std::io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Receive and send timeouts of one end of the exchange.
fn time_limits(fd: BorrowedFd<'_>, receive: Duration) -> std::io::Result<()> {
    use rustix::net::sockopt::{Timeout, set_socket_timeout};
    set_socket_timeout(fd, Timeout::Recv, Some(receive))?;
    set_socket_timeout(fd, Timeout::Send, Some(STEP_WITHIN))?;
    Ok(())
}

fn send(fd: BorrowedFd<'_>, text: &str, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    rustix::net::sendmsg(
        fd,
        &[IoSlice::new(text.as_bytes())],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// One message and the descriptors that came with it (`""` at end of stream).
fn receive(fd: BorrowedFd<'_>) -> std::io::Result<(String, Vec<OwnedFd>)> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = vec![0u8; MAX_MESSAGE];
    let got = rustix::net::recvmsg(
        fd,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got
        .flags
        .intersects(rustix::net::ReturnFlags::CTRUNC | rustix::net::ReturnFlags::TRUNC)
    {
        return Err(std::io::Error::other(
            "a message or its descriptors were cut short",
        ));
    }
    buf.truncate(got.bytes);
    Ok((String::from_utf8_lossy(&buf).into_owned(), fds))
}

/// The running process's side: what it hands over, and what it does once the new process
/// has taken over.
pub trait Handing: Send + Sync {
    /// Duplicates of every open listener's sockets, with its bind address.
    fn sockets(&self) -> Vec<(SocketAddr, Vec<Socket>)>;
    /// The new process runs: stop accepting and drain.
    fn handed_over(&self);
}

/// Serve handovers on `path` (bound with mode 0600, replacing a file left there) until the
/// process exits, on a thread of its own. Returns the path bound.
pub fn serve(path: &Path, handing: Arc<dyn Handing>) -> Result<PathBuf, HandoverError> {
    let failed = |source: std::io::Error| HandoverError::Io {
        path: path.to_owned(),
        source,
    };
    let listener = seqpacket().map_err(failed)?;
    let _ = std::fs::remove_file(path);
    let addr = SocketAddrUnix::new(path).map_err(|e| failed(e.into()))?;
    rustix::net::bind(&listener, &addr).map_err(|e| failed(e.into()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(failed)?;
    rustix::net::listen(&listener, 1).map_err(|e| failed(e.into()))?;
    let shown = path.to_owned();
    std::thread::Builder::new()
        .name("ringlb-handover".into())
        .spawn(move || {
            loop {
                let conn =
                    match rustix::net::accept_with(&listener, rustix::net::SocketFlags::CLOEXEC) {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of fds, say: try again in a moment rather than spin.
                            tracing::warn!(%e, "handover socket: accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                match hand_over(conn.as_fd(), handing.as_ref()) {
                    Ok(true) => {
                        tracing::info!(
                            "listening sockets handed over: the new process runs; draining"
                        );
                        handing.handed_over();
                        return;
                    }
                    Ok(false) => tracing::warn!(
                        "the new process took the listening sockets but never said it runs; \
                         serving on"
                    ),
                    Err(e) => tracing::warn!(socket = %shown.display(), "handover failed: {e}"),
                }
            }
        })
        .map_err(failed)?;
    Ok(path.to_owned())
}

/// One handover on `conn`: true once the new process said `done`.
fn hand_over(conn: BorrowedFd<'_>, handing: &dyn Handing) -> std::io::Result<bool> {
    time_limits(conn, STEP_WITHIN)?;
    let (request, _) = receive(conn)?;
    if request != "listeners" {
        return Err(std::io::Error::other(format!(
            "unknown request {request:?}"
        )));
    }
    for (bind, sockets) in handing.sockets() {
        let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(AsFd::as_fd).collect();
        let header =
            serde_json::json!({ "bind": bind.to_string(), "sockets": fds.len() }).to_string();
        let mut chunks = fds.chunks(FDS_PER_MESSAGE);
        send(conn, &header, chunks.next().unwrap_or(&[]))?;
        for chunk in chunks {
            send(conn, "more", chunk)?;
        }
    }
    send(conn, "end", &[])?;
    // The new process says `done` once its workers are up.
    time_limits(conn, DONE_WITHIN)?;
    let (said, _) = receive(conn)?;
    Ok(said == "done")
}

/// The new process's side: the connection on which it says `done`.
#[derive(Debug)]
pub struct Takeover {
    conn: OwnedFd,
}

impl Takeover {
    /// Tell the old process that this one runs: it stops accepting and drains.
    pub fn done(self) {
        if let Err(e) = send(self.conn.as_fd(), "done", &[]) {
            tracing::error!(
                "could not tell the old process to stop ({e}): if it still runs (it gave up \
                 waiting), both serve until it is stopped with SIGTERM"
            );
        }
    }
}

/// Take the listening sockets of the process whose admin socket is `admin`.
pub fn take_over(admin: &Path) -> Result<(Inherited, Takeover), HandoverError> {
    let path = path_for(admin);
    let failed = |source: std::io::Error| HandoverError::Io {
        path: path.clone(),
        source,
    };
    let protocol = |message: String| HandoverError::Protocol {
        path: path.clone(),
        message,
    };
    let conn = seqpacket().map_err(failed)?;
    time_limits(conn.as_fd(), STEP_WITHIN).map_err(failed)?;
    let addr = SocketAddrUnix::new(&path).map_err(|e| failed(e.into()))?;
    rustix::net::connect(&conn, &addr).map_err(|e| failed(e.into()))?;
    send(conn.as_fd(), "listeners", &[]).map_err(failed)?;
    let mut inherited = Inherited::new();
    loop {
        let (text, fds) = receive(conn.as_fd()).map_err(failed)?;
        match text.as_str() {
            "end" => break,
            "" => return Err(protocol("the old process closed the connection".into())),
            header => {
                let value = serde_json::from_str::<serde_json::Value>(header).ok();
                let bind = value
                    .as_ref()
                    .and_then(|v| v["bind"].as_str().and_then(|b| b.parse().ok()))
                    .ok_or_else(|| protocol(format!("bad message {header:?}")))?;
                let count = value
                    .as_ref()
                    .and_then(|v| v["sockets"].as_u64())
                    .map_or(fds.len(), |n| usize::try_from(n).unwrap_or(usize::MAX));
                let mut sockets: Vec<Socket> = fds.into_iter().map(Socket::from).collect();
                while sockets.len() < count {
                    let (more, fds) = receive(conn.as_fd()).map_err(failed)?;
                    if more != "more" || fds.is_empty() {
                        return Err(protocol(format!("expected more sockets, got {more:?}")));
                    }
                    sockets.extend(fds.into_iter().map(Socket::from));
                }
                inherited.insert(bind, sockets);
            }
        }
    }
    Ok((inherited, Takeover { conn }))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Fake {
        listeners: Vec<(SocketAddr, Vec<Socket>)>,
        done: Mutex<bool>,
    }

    impl Handing for Fake {
        fn sockets(&self) -> Vec<(SocketAddr, Vec<Socket>)> {
            self.listeners
                .iter()
                .map(|(a, s)| (*a, s.iter().map(|s| s.try_clone().expect("dup")).collect()))
                .collect()
        }

        fn handed_over(&self) {
            *self.done.lock().expect("lock") = true;
        }
    }

    #[test]
    fn sockets_cross_and_done_is_heard() {
        let dir = std::env::temp_dir().join(format!("ringlb-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let admin = dir.join("admin.sock");
        let a = std::net::TcpListener::bind("127.0.0.1:0").expect("a");
        let addr = a.local_addr().expect("addr");
        let fake = Arc::new(Fake {
            listeners: vec![(addr, vec![Socket::from(a)])],
            done: Mutex::new(false),
        });
        serve(&path_for(&admin), fake.clone()).expect("serve");
        let (inherited, takeover) = take_over(&admin).expect("take over");
        let sockets = &inherited[&addr];
        assert_eq!(sockets.len(), 1);
        // The received socket is the same listener: a client connecting is accepted on it.
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let (_accepted, _) = sockets[0]
            .accept()
            .expect("accepted on the received socket");
        takeover.done();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !*fake.done.lock().expect("lock") {
            assert!(std::time::Instant::now() < deadline, "done never heard");
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
