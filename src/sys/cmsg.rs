//! Control messages (`cmsg(3)`) of UDP sockets, read and written as plain bytes: the local
//! address a datagram was sent to (`IP_PKTINFO`, `IPV6_PKTINFO`), and the segment size of a
//! coalesced receive (`UDP_GRO`) or of a segmented send (`UDP_SEGMENT`).
//!
//! The layout is Linux's: a header of `size_t` length, `int` level and `int` type, the data
//! after it, and each message padded to the alignment of `size_t`. Nothing here needs
//! `unsafe`: [`parse`] walks a byte slice the kernel filled (`recvmmsg`, or an io_uring
//! multishot `recvmsg` buffer), [`Builder`] writes into a buffer the caller hands to
//! `sendmsg`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `sizeof(size_t)`: the alignment of every control message.
const ALIGN: usize = std::mem::size_of::<usize>();
/// `sizeof(struct cmsghdr)`: `size_t` length, `int` level, `int` type.
const HEADER: usize = ALIGN + 8;
/// `UDP_GRO` and `UDP_SEGMENT` from `linux/udp.h` (the `libc` crate lacks the first).
pub const UDP_SEGMENT: i32 = 103;
pub const UDP_GRO: i32 = 104;
/// Control room for what [`parse`] reads: one `in6_pktinfo` (20 bytes) and one `int`, with
/// headers and padding, and room to spare.
pub const RECV_SPACE: usize = 128;

const fn align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// `CMSG_SPACE(len)`.
pub const fn space(len: usize) -> usize {
    align(HEADER) + align(len)
}

/// What a received datagram's control messages said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ancillary {
    /// The address the datagram was sent to (on a socket with `IP_PKTINFO` or
    /// `IPV6_RECVPKTINFO`).
    pub local: Option<IpAddr>,
    /// The datagrams were coalesced (`UDP_GRO`): each is this long, the last maybe shorter.
    pub segment: Option<u16>,
}

/// Read the control messages in `control` (as many bytes as the kernel reported).
/// Malformed or unknown messages are skipped; parsing stops at the first that would run past
/// the end.
pub fn parse(control: &[u8]) -> Ancillary {
    let mut found = Ancillary::default();
    let mut at = 0;
    while at + HEADER <= control.len() {
        let len = usize::from_ne_bytes(take(&control[at..]));
        let level = i32::from_ne_bytes(take(&control[at + ALIGN..]));
        let kind = i32::from_ne_bytes(take(&control[at + ALIGN + 4..]));
        if len < HEADER || at + len > control.len() {
            break;
        }
        let data = &control[at + align(HEADER)..at + len];
        match (level, kind) {
            // `struct in_pktinfo`: ifindex, spec_dst, addr (the header's destination).
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= 12 => {
                let addr: [u8; 4] = take(&data[8..]);
                found.local = Some(IpAddr::V4(Ipv4Addr::from(addr)));
            }
            // `struct in6_pktinfo`: addr, ifindex.
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= 20 => {
                let addr: [u8; 16] = take(data);
                found.local = Some(IpAddr::V6(Ipv6Addr::from(addr)));
            }
            (libc::IPPROTO_UDP, UDP_GRO) if data.len() >= 4 => {
                let size = i32::from_ne_bytes(take(data));
                found.segment = u16::try_from(size).ok().filter(|&s| s > 0);
            }
            _ => {}
        }
        at += align(len);
    }
    found
}

/// The IPv4 or IPv6 socket address in `name`, the bytes of a `sockaddr_in` or `sockaddr_in6`
/// as the kernel wrote them (an io_uring multishot `recvmsg`'s name field).
pub fn socket_address(name: &[u8]) -> Option<SocketAddr> {
    if name.len() < 2 {
        return None;
    }
    let family = i32::from(u16::from_ne_bytes(take(name)));
    let port = u16::from_be_bytes(take(&name[2..]));
    match family {
        libc::AF_INET if name.len() >= 16 => {
            let ip: [u8; 4] = take(&name[4..]);
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 if name.len() >= 28 => {
            let flowinfo = u32::from_ne_bytes(take(&name[4..]));
            let ip: [u8; 16] = take(&name[8..]);
            let scope = u32::from_ne_bytes(take(&name[24..]));
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

fn take<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// Writes control messages for a send into a caller's buffer (aligned to `size_t`, which the
/// caller guarantees by backing it with `u64`s).
#[derive(Debug)]
pub struct Builder<'a> {
    buffer: &'a mut [u8],
    len: usize,
}

impl<'a> Builder<'a> {
    pub fn new(buffer: &'a mut [u8]) -> Self {
        Builder { buffer, len: 0 }
    }

    /// Send from `local` (the address the client wrote to): `IP_PKTINFO` with `ipi_spec_dst`
    /// for IPv4, `IPV6_PKTINFO` with `ipi6_addr` for IPv6; the interface is left to routing.
    pub fn source(&mut self, local: IpAddr) -> &mut Self {
        match local {
            IpAddr::V4(ip) => {
                let mut data = [0u8; 12];
                data[4..8].copy_from_slice(&ip.octets());
                self.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &data)
            }
            IpAddr::V6(ip) => {
                let mut data = [0u8; 20];
                data[..16].copy_from_slice(&ip.octets());
                self.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &data)
            }
        }
    }

    /// Let the kernel cut the payload into datagrams of `size` bytes (`UDP_SEGMENT`).
    pub fn segment(&mut self, size: u16) -> &mut Self {
        self.push(libc::IPPROTO_UDP, UDP_SEGMENT, &size.to_ne_bytes())
    }

    fn push(&mut self, level: i32, kind: i32, data: &[u8]) -> &mut Self {
        let need = space(data.len());
        if self.len + need > self.buffer.len() {
            // The callers size their buffers for what they push; never reached.
            debug_assert!(false, "control buffer too small");
            return self;
        }
        let out = &mut self.buffer[self.len..self.len + need];
        out.fill(0);
        out[..ALIGN].copy_from_slice(&(align(HEADER) + data.len()).to_ne_bytes());
        out[ALIGN..ALIGN + 4].copy_from_slice(&level.to_ne_bytes());
        out[ALIGN + 4..ALIGN + 8].copy_from_slice(&kind.to_ne_bytes());
        out[align(HEADER)..align(HEADER) + data.len()].copy_from_slice(data);
        self.len += need;
        self
    }

    /// Bytes written (`msg_controllen`).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Control room for what [`Builder`] writes: a source address and a segment size.
pub const SEND_SPACE: usize = space(20) + space(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_built_parses_back() {
        let mut bytes = [0u8; 128];
        let mut builder = Builder::new(&mut bytes);
        builder.source("10.1.2.3".parse().expect("literal")).push(
            libc::IPPROTO_UDP,
            UDP_GRO,
            &1200i32.to_ne_bytes(),
        );
        let len = builder.len();
        assert_eq!(len, space(12) + space(4));
        let got = parse(&bytes[..len]);
        assert_eq!(got.segment, Some(1200));
        // A sent IP_PKTINFO names the source in `ipi_spec_dst`; what is read is a received
        // one's `ipi_addr`, left zero here.
        assert_eq!(got.local, Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        let mut v6 = [0u8; 64];
        let mut builder = Builder::new(&mut v6);
        builder.source("fd00::7".parse().expect("literal"));
        let len = builder.len();
        assert_eq!(
            parse(&v6[..len]).local,
            Some("fd00::7".parse().expect("literal"))
        );
    }

    #[test]
    fn socket_addresses_read_as_the_kernel_lays_them_out() {
        let v4: SocketAddr = "10.0.0.7:5353".parse().expect("literal");
        let mut name = [0u8; 16];
        name[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        name[2..4].copy_from_slice(&5353u16.to_be_bytes());
        name[4..8].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(socket_address(&name), Some(v4));
        assert_eq!(socket_address(&name[..15]), None);
        let mut name6 = [0u8; 28];
        name6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        name6[2..4].copy_from_slice(&53u16.to_be_bytes());
        name6[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().expect("literal").octets());
        assert_eq!(
            socket_address(&name6),
            Some("[fd00::1]:53".parse().expect("literal"))
        );
        assert_eq!(socket_address(&[0u8; 28]), None, "AF_UNSPEC");
    }

    #[test]
    fn a_truncated_or_malformed_buffer_yields_nothing() {
        let mut buffer = [0u8; 64];
        let mut builder = Builder::new(&mut buffer);
        builder.source("fd00::3".parse().expect("literal"));
        let len = builder.len();
        // The message's own length is 36 of its 40 bytes of space.
        assert_eq!(parse(&buffer[..len - 5]), Ancillary::default());
        assert!(parse(&buffer[..len - 4]).local.is_some());
        assert_eq!(parse(&[]), Ancillary::default());
        let mut zero_len = buffer;
        zero_len[..ALIGN].fill(0);
        assert_eq!(parse(&zero_len[..len]), Ancillary::default());
    }

    #[test]
    fn the_kernel_reports_the_address_a_client_wrote_to() {
        use std::net::UdpSocket;
        use std::os::fd::AsFd;
        let receiver = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let port = receiver.local_addr().expect("address").port();
        super::super::mmsg::set_recv_local(receiver.as_fd(), false).expect("IP_PKTINFO");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sender.send_to(b"x", ("127.0.0.9", port)).expect("send");
        let mut batch = super::super::mmsg::RecvBatch::new(2, 64);
        assert_eq!(batch.recv(receiver.as_fd()).expect("one"), 1);
        let got = batch.get(0).expect("one");
        assert_eq!(
            got.ancillary.local,
            Some("127.0.0.9".parse().expect("literal"))
        );
    }
}
