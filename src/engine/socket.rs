//! Sockets as every engine sets them up.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};

use crate::config::{Keepalive, SocketOptions};

/// A listening TCP socket with `SO_REUSEPORT`, so that each worker has its own and the kernel
/// spreads new connections across them (no shared accept queue, no thundering herd).
///
/// It carries `TCP_NODELAY`, for the reason given at [`backend`]: Linux copies the listener's
/// TCP state into each accepted socket, Nagle's setting included, so clients arrive with it
/// set and no `setsockopt` per client is needed (a test below checks the kernel does so). The
/// clients' keepalive and user timeout (`client`) are set here for the same reason: accepted
/// sockets inherit `SO_KEEPALIVE`, `TCP_KEEPIDLE`/`KEEPINTVL`/`KEEPCNT` and `TCP_USER_TIMEOUT`
/// too, so they cost nothing per connection.
///
/// With `freebind` (the listener's `freebind` key) the address need not be on this node:
/// `IP_FREEBIND` / `IPV6_FREEBIND`, as [`set_freebind`] sets it.
pub fn listener(
    addr: SocketAddr,
    backlog: u32,
    nonblocking: bool,
    client: &SocketOptions,
    freebind: bool,
) -> io::Result<Socket> {
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
    socket.set_tcp_nodelay(true)?;
    set_options(&socket, client)?;
    socket.set_nonblocking(nonblocking)?;
    if freebind {
        set_freebind(&socket, addr)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

/// A socket ready to connect to `addr`: `TCP_NODELAY`, because a proxy must not add Nagle's
/// delay to small writes that the client already chose to send. Non-blocking from creation
/// (`SOCK_NONBLOCK`) when asked: two `fcntl` calls fewer per connection. With `server`'s
/// keepalive and user timeout: up to five more `setsockopt` calls (four for keepalive, one
/// for the user timeout), the only per-connection cost of these options.
pub fn backend(addr: SocketAddr, nonblocking: bool, server: &SocketOptions) -> io::Result<Socket> {
    let kind = if nonblocking {
        Type::STREAM.nonblocking()
    } else {
        Type::STREAM
    };
    let socket = Socket::new(
        Domain::for_address(addr),
        kind.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    set_options(&socket, server)?;
    Ok(socket)
}

/// Keepalive and user timeout as `options` say. New sockets have neither, so `Off` and `None`
/// cost no call.
fn set_options(socket: &Socket, options: &SocketOptions) -> io::Result<()> {
    if let Keepalive::On(probes) = options.keepalive {
        let keepalive = TcpKeepalive::new()
            .with_time(probes.idle)
            .with_interval(probes.interval)
            .with_retries(probes.count);
        socket.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(timeout) = options.user_timeout {
        socket.set_tcp_user_timeout(Some(timeout))?;
    }
    Ok(())
}

/// Make the next close abortive: the peer sees RST instead of FIN (`SO_LINGER` with 0 s).
pub fn set_reset_on_close(socket: &Socket) -> io::Result<()> {
    socket.set_linger(Some(std::time::Duration::ZERO))
}

/// What an engine should do after `accept` failed with `errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptFailure {
    /// Nothing is waiting (EAGAIN) or a signal interrupted the call: carry on.
    Retry,
    /// That one client went away before it was taken, or failed on its own (ECONNABORTED,
    /// EPROTO, a network error accept(2) passes through): take the next one at once.
    Skip,
    /// Out of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) or unexpected: pause this listener
    /// for a moment and keep serving the connections already open, rather than spin.
    BackOff,
}

/// Classify an `accept` error the same way in every engine (accept(2), "Error handling").
pub fn accept_failure(errno: i32) -> AcceptFailure {
    match errno {
        libc::EAGAIN | libc::EINTR => AcceptFailure::Retry,
        libc::ECONNABORTED
        | libc::EPROTO
        | libc::EPERM
        | libc::ENETDOWN
        | libc::ENOPROTOOPT
        | libc::EHOSTDOWN
        | libc::ENONET
        | libc::EHOSTUNREACH
        | libc::EOPNOTSUPP
        | libc::ENETUNREACH => AcceptFailure::Skip,
        _ => AcceptFailure::BackOff,
    }
}

/// One worker's socket of a UDP listener on `addr`: `SO_REUSEPORT`, so that every worker binds
/// its own and the kernel hashes each client address and port to one of them; non-blocking.
/// With `freebind`, as [`listener`]'s.
pub fn udp_listener(addr: SocketAddr, freebind: bool) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if freebind {
        set_freebind(&socket, addr)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

/// Let `socket` bind `addr` although no interface of this node has it (yet): `IP_FREEBIND`
/// for IPv4, `IPV6_FREEBIND` for IPv6. The listener of a virtual address that keepalived
/// brings here only on failover, or that a BGP speaker announces, can then be up before
/// the address is. Per socket, unlike `net.ipv4.ip_nonlocal_bind` (a sysctl for the whole
/// network namespace); connections arrive once the address is routed here.
fn set_freebind(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv6() {
        socket.set_freebind_v6(true)
    } else {
        socket.set_freebind_v4(true)
    }
}

/// Ask for `bytes` of receive buffer on UDP listener socket `socket` (bound to `bind`):
/// beyond `net.core.rmem_max` with `SO_RCVBUFFORCE` where the process may (`CAP_NET_ADMIN`),
/// else as far as `rmem_max` lets `SO_RCVBUF` go. Less than asked is logged once per socket
/// (it works, and loses more in a burst), never an error.
pub fn udp_receive_buffer(socket: &Socket, bind: SocketAddr, bytes: usize) {
    use rustix::net::sockopt;
    if sockopt::set_socket_recv_buffer_size_force(socket, bytes).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(socket, bytes);
    }
    // The kernel doubles what it is given, for its own bookkeeping, and reports that.
    let granted = sockopt::socket_recv_buffer_size(socket).map_or(0, |n| n / 2);
    if granted < bytes {
        tracing::info!(
            listener = %bind,
            asked = bytes,
            granted,
            "UDP receive buffer below rcvbuf (net.core.rmem_max limits it without CAP_NET_ADMIN)"
        );
    }
}

/// A UDP flow's socket, connected to its backend `addr` (which picks an ephemeral port):
/// only that backend's datagrams arrive on it, and its refusals come back as
/// `ECONNREFUSED`. Non-blocking.
pub fn udp_flow(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    socket.connect(&SockAddr::from(addr))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_udp_listener_gets_the_receive_buffer_asked_or_what_the_host_allows() {
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let socket = super::udp_listener(bind, false).expect("bind");
        let asked = 3 << 20;
        super::udp_receive_buffer(&socket, bind, asked);
        let granted = rustix::net::sockopt::socket_recv_buffer_size(&socket).expect("read") / 2;
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let privileged = rustix::process::geteuid().is_root();
        if privileged {
            assert_eq!(
                granted, asked,
                "SO_RCVBUFFORCE goes past rmem_max {rmem_max}"
            );
        } else {
            assert_eq!(granted, asked.min(rmem_max), "capped at rmem_max");
        }
    }

    use super::*;

    const OFF: SocketOptions = SocketOptions {
        keepalive: Keepalive::Off,
        user_timeout: None,
    };

    fn options() -> SocketOptions {
        SocketOptions {
            keepalive: Keepalive::On(crate::config::KeepaliveProbes {
                idle: Duration::from_secs(37),
                interval: Duration::from_secs(7),
                count: 3,
            }),
            user_timeout: Some(Duration::from_millis(4500)),
        }
    }

    fn assert_options(socket: &Socket, what: &str) {
        assert!(socket.keepalive().expect("SO_KEEPALIVE"), "{what}");
        assert_eq!(
            socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            Duration::from_secs(37),
            "{what}"
        );
        assert_eq!(
            socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
            Duration::from_secs(7),
            "{what}"
        );
        assert_eq!(
            socket.tcp_keepalive_retries().expect("TCP_KEEPCNT"),
            3,
            "{what}"
        );
        assert_eq!(
            socket.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(Duration::from_millis(4500)),
            "{what}"
        );
    }

    /// A client connected to `listening`, and the socket it accepted for it.
    fn accept_one(listening: &Socket) -> (std::net::TcpStream, Socket) {
        let addr = listening
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("the listener's address");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (accepted, _) = listening.accept().expect("accept");
        (client, accepted)
    }

    /// The engines rely on this instead of setting the client options on every client.
    #[test]
    fn accepted_clients_inherit_keepalive_and_user_timeout_from_the_listener() {
        let listening = listener(
            "127.0.0.1:0".parse().expect("literal"),
            8,
            false,
            &options(),
            false,
        )
        .expect("a listener");
        let (_client, accepted) = accept_one(&listening);
        assert_options(&accepted, "accepted socket");
        // And with the options off, accepted sockets have none.
        let plain = listener(
            "127.0.0.1:0".parse().expect("literal"),
            8,
            false,
            &OFF,
            false,
        )
        .expect("a listener");
        let (_client, accepted) = accept_one(&plain);
        assert!(!accepted.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(accepted.tcp_user_timeout().expect("TCP_USER_TIMEOUT"), None);
    }

    /// `freebind`: a listener binds an address no interface has (192.0.2.1, TEST-NET-1), TCP
    /// and UDP; without it the kernel refuses with `EADDRNOTAVAIL`, unless the whole network
    /// namespace allows it (`net.ipv4.ip_nonlocal_bind = 1`, the alternative to `freebind`).
    #[test]
    fn freebind_binds_an_address_that_is_not_on_this_node() {
        let vip: SocketAddr = "192.0.2.1:18080".parse().expect("literal");
        let on_this_node = std::net::TcpListener::bind("192.0.2.1:0").is_ok();
        let nonlocal_bind = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind")
            .is_ok_and(|t| t.trim() == "1");
        if on_this_node || nonlocal_bind {
            eprintln!("skipped: 192.0.2.1 is bindable here without IP_FREEBIND");
            return;
        }
        let refused = listener(vip, 8, true, &OFF, false).expect_err("not on this node");
        assert_eq!(refused.raw_os_error(), Some(libc::EADDRNOTAVAIL));
        let refused = udp_listener(vip, false).expect_err("not on this node");
        assert_eq!(refused.raw_os_error(), Some(libc::EADDRNOTAVAIL));
        let tcp = listener(vip, 8, true, &OFF, true).expect("IP_FREEBIND");
        assert_eq!(tcp.local_addr().expect("bound").as_socket(), Some(vip));
        let udp = udp_listener(vip, true).expect("IP_FREEBIND");
        assert_eq!(udp.local_addr().expect("bound").as_socket(), Some(vip));
        let v6: SocketAddr = "[2001:db8::1]:18080".parse().expect("literal");
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            listener(v6, 8, true, &OFF, false).expect_err("not on this node");
            listener(v6, 8, true, &OFF, true).expect("IPV6_FREEBIND");
        }
    }

    /// The engines rely on this instead of setting `TCP_NODELAY` on every client.
    #[test]
    fn accepted_clients_inherit_tcp_nodelay_from_the_listener() {
        let listening = listener(
            "127.0.0.1:0".parse().expect("literal"),
            8,
            false,
            &OFF,
            false,
        )
        .expect("a listener");
        let (_client, accepted) = accept_one(&listening);
        assert!(accepted.tcp_nodelay().expect("getsockopt"));
        assert!(!accepted.nonblocking().expect("fcntl"), "as the listener");
    }

    #[test]
    fn backend_sockets_are_created_as_asked() {
        let addr = "127.0.0.1:9".parse().expect("literal");
        for nonblocking in [true, false] {
            let socket = backend(addr, nonblocking, &options()).expect("a socket");
            assert_eq!(socket.nonblocking().expect("fcntl"), nonblocking);
            assert!(socket.tcp_nodelay().expect("getsockopt"));
            assert_options(&socket, "backend socket");
            let plain = backend(addr, nonblocking, &OFF).expect("a socket");
            assert!(!plain.keepalive().expect("SO_KEEPALIVE"));
        }
    }

    #[test]
    fn accept_errors_are_classified() {
        assert_eq!(accept_failure(libc::EAGAIN), AcceptFailure::Retry);
        assert_eq!(accept_failure(libc::ECONNABORTED), AcceptFailure::Skip);
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EBADF,
        ] {
            assert_eq!(accept_failure(errno), AcceptFailure::BackOff);
        }
    }
}
