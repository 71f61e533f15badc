//! Sockets as every engine sets them up.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A listening TCP socket with `SO_REUSEPORT`, so that each worker has its own and the kernel
/// spreads new connections across them (no shared accept queue, no thundering herd).
pub fn listener(addr: SocketAddr, backlog: u32, nonblocking: bool) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]:port` should not also claim the IPv4 port; a separate listener can do that.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(nonblocking)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

/// A socket ready to connect to `addr`: `TCP_NODELAY`, because a proxy must not add Nagle's
/// delay to small writes that the client already chose to send.
pub fn backend(addr: SocketAddr, nonblocking: bool) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(nonblocking)?;
    Ok(socket)
}

/// Prepare an accepted client socket: `TCP_NODELAY`, for the same reason as [`backend`].
pub fn client(socket: &Socket) -> io::Result<()> {
    socket.set_tcp_nodelay(true)
}

/// Make the next close abortive: the peer sees RST instead of FIN (`SO_LINGER` with 0 s).
pub fn set_reset_on_close(socket: &Socket) -> io::Result<()> {
    socket.set_linger(Some(std::time::Duration::ZERO))
}
