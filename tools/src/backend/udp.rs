//! The UDP backends: `udp-echo` (every datagram back to its sender, byte for byte) and
//! `udp-sink` (count datagrams and bytes).
//!
//! Each thread owns one `SO_REUSEPORT` socket bound to the same port, so the kernel spreads
//! senders (by address and port) over the threads. Sockets block with a short receive timeout:
//! one `recvfrom` per datagram (and one `sendto` for echo), and a stop request is seen within
//! [`RECV_TIMEOUT`].

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::Shared;

/// Upper bound on how long a stop request goes unnoticed.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);

/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// Receive buffer asked for (capped by `net.core.rmem_max`): with 1,024 flows each owing
/// one answer, the 208 KiB default overflows on loopback and drops requests (measured: 1.6% of
/// 207,000 requests lost in one second directly against a one-thread echo), so the backend
/// would be where datagrams are lost instead of the proxy under test.
const RECV_BUFFER: usize = 4 << 20;

/// Distinct senders remembered per thread (for the `connections` counter); past this, new
/// senders are no longer counted, so memory stays bounded.
const MAX_PEERS: usize = 1 << 20;

/// Binds `threads` `SO_REUSEPORT` sockets to `addr` (the first one picks the port if it is 0).
pub(super) fn bind(addr: SocketAddr, threads: usize) -> io::Result<Vec<UdpSocket>> {
    let mut socks: Vec<UdpSocket> = Vec::new();
    let mut at = addr;
    for _ in 0..threads.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        s.set_read_timeout(Some(RECV_TIMEOUT))?;
        // Best effort: the default still works, it only drops sooner under bursts.
        let _ = s.set_recv_buffer_size(RECV_BUFFER);
        s.bind(&at.into())?;
        let s: UdpSocket = s.into();
        at = s.local_addr()?;
        socks.push(s);
    }
    Ok(socks)
}

/// One thread's loop: receive, count, echo if asked, until the stop flag is set.
pub(super) fn run(sock: UdpSocket, echo: bool, shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut peers: HashSet<SocketAddr> = HashSet::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            // Timeout (EAGAIN), a signal, or an ICMP error left by an earlier send.
            Err(_) => continue,
        };
        Shared::add(&shared.datagrams_in, 1);
        Shared::add(&shared.bytes_in, n);
        if peers.len() < MAX_PEERS && peers.insert(peer) {
            shared.connections.fetch_add(1, Ordering::Relaxed);
            let mut p = match shared.peers.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            *p.entry(peer.ip()).or_default() += 1;
        }
        if echo {
            // A failed send (the sender is gone) is the sender's loss; keep serving.
            if let Ok(m) = sock.send_to(&buf[..n], peer) {
                Shared::add(&shared.datagrams_out, 1);
                Shared::add(&shared.bytes_out, m);
            }
        }
    }
}
