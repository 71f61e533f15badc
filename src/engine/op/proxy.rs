//! The PROXY protocol header a backend with `send_proxy` is sent before the client's first byte
//! (see `core::proxy_header`).
//!
//! One direct system call for every engine: it goes out right after the connect completes, on
//! a socket that has sent nothing yet, so its few bytes (at most 232) fit the empty send
//! buffer and a non-blocking send writes them whole. A short or failed write fails the
//! backend side.

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use socket2::SockRef;

use crate::core::conn::{Event, Failure, Side};
use crate::core::proxy_header::{self, ProxyVersion};

/// Write the `version` header for the client connection `client`, whose peer is `peer`, to
/// `backend`. The destination in the header is the address the client connected to.
#[derive(Clone, Copy, Debug)]
pub struct SendProxyHeader<'a> {
    pub client: BorrowedFd<'a>,
    pub backend: BorrowedFd<'a>,
    pub peer: SocketAddr,
    pub version: ProxyVersion,
}

impl SendProxyHeader<'_> {
    /// Build and write the header in one `send`.
    pub fn run(&self) -> io::Result<()> {
        let local = SockRef::from(&self.client)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
        let header = proxy_header::encode(self.version, self.peer, local);
        let sent = SockRef::from(&self.backend).send_with_flags(&header, libc::MSG_NOSIGNAL)?;
        if sent != header.len() {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        Ok(())
    }
}

/// Carry out `SendProxyHeader { version }` for a connection with sockets `client` and
/// `backend` and client address `peer`: the event to report. Every engine calls this.
pub fn send_proxy_header(
    client: BorrowedFd<'_>,
    backend: Option<BorrowedFd<'_>>,
    peer: Option<SocketAddr>,
    version: ProxyVersion,
) -> Event {
    let (Some(backend), Some(peer)) = (backend, peer) else {
        return Event::Failed {
            side: Side::Backend,
            failure: Failure::Local,
        };
    };
    let op = SendProxyHeader {
        client,
        backend,
        peer,
        version,
    };
    match op.run() {
        Ok(()) => Event::ProxyHeaderSent,
        Err(err) => {
            tracing::debug!(%err, "PROXY protocol header not sent");
            Event::Failed {
                side: Side::Backend,
                failure: super::os_failure(&err),
            }
        }
    }
}
