//! `recvmmsg(2)` and `sendmmsg(2)`: many datagrams, with their addresses and control
//! messages, in one system call each, and the socket options that make the kernel add those
//! messages. `rustix` lacks `recvmmsg` and the options, and its `sendmmsg` cannot carry
//! `IP_PKTINFO`, so this is the one place outside the io_uring engine with `unsafe`: the
//! calls' pointers all point into buffers these types own or borrow for the call.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cmsg;

/// Control room per message, in `u64`s so that it is aligned as `cmsghdr` wants.
const CONTROL_WORDS: usize = cmsg::RECV_SPACE.div_ceil(8);
const SEND_CONTROL_WORDS: usize = cmsg::SEND_SPACE.div_ceil(8);

/// Buffers for up to `count` datagrams of up to `size` bytes each, and their senders.
pub struct RecvBatch {
    size: usize,
    data: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    headers: Vec<libc::mmsghdr>,
    /// Datagrams the last [`RecvBatch::recv`] brought.
    filled: usize,
}

// The raw pointers in `iovecs` and `headers` point only into this value's own buffers, and
// are rebuilt before every call.
// SAFETY: nothing in it is shared with another thread or tied to the one that made it.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("count", &self.headers.len())
            .field("size", &self.size)
            .field("filled", &self.filled)
            .finish()
    }
}

/// One received datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub from: Option<SocketAddr>,
    /// Its bytes (all of them unless `truncated`).
    pub bytes: &'a [u8],
    /// It was larger than the buffer: `bytes` holds only its start.
    pub truncated: bool,
    /// What its control messages said: the address it was sent to (if the socket asked,
    /// [`set_recv_local`]), and whether it is several datagrams coalesced ([`set_gro`]).
    pub ancillary: cmsg::Ancillary,
}

impl RecvBatch {
    /// Room for `count` datagrams (at least 1) of `size` bytes each.
    pub fn new(count: usize, size: usize) -> Self {
        let count = count.max(1);
        // SAFETY: all-zero bytes are a valid `iovec`, `sockaddr_storage` and `mmsghdr` (null
        // pointers and zero lengths); every pointer is set before use.
        let zeroed = || unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
        RecvBatch {
            size,
            data: vec![0; count * size],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                count
            ],
            // SAFETY: as above, all-zero is a valid (unspecified-family) address.
            names: vec![unsafe { MaybeUninit::zeroed().assume_init() }; count],
            controls: vec![[0; CONTROL_WORDS]; count],
            headers: (0..count).map(|_| zeroed()).collect(),
            filled: 0,
        }
    }

    /// How many datagrams one call may bring.
    pub fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// Receive what is waiting on `socket` (non-blocking), up to the batch's count. Returns
    /// how many datagrams came (0 never: nothing waiting is `WouldBlock`).
    pub fn recv(&mut self, socket: BorrowedFd<'_>) -> io::Result<usize> {
        self.filled = 0;
        let count = self.headers.len();
        let base = self.data.as_mut_ptr();
        for i in 0..count {
            // SAFETY: `i * size` is within `data`, which holds `count * size` bytes.
            self.iovecs[i].iov_base = unsafe { base.add(i * self.size) }.cast();
            self.iovecs[i].iov_len = self.size;
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = std::ptr::from_mut(&mut self.names[i]).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = std::ptr::from_mut(&mut self.iovecs[i]);
            header.msg_iovlen = 1;
            header.msg_control = self.controls[i].as_mut_ptr().cast();
            header.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>();
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: `headers` holds `count` initialised entries whose name and iovec pointers
        // point into `names`, `iovecs` and `data`, all owned by `self` and not moved or
        // resized during the call; the kernel writes at most `msg_namelen` bytes of address,
        // `msg_controllen` of control and `iov_len` of data into each. No timeout.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        self.filled = received as usize;
        Ok(self.filled)
    }

    /// Datagram `i` of the last [`Self::recv`].
    pub fn get(&self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.filled {
            return None;
        }
        let header = &self.headers[i];
        let len = (header.msg_len as usize).min(self.size);
        let start = i * self.size;
        let control_len = header.msg_hdr.msg_controllen.min(cmsg::RECV_SPACE);
        let control = &words_to_bytes(&self.controls[i])[..control_len];
        Some(Datagram {
            from: address(&self.names[i], header.msg_hdr.msg_namelen),
            bytes: &self.data[start..start + len],
            truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            ancillary: if control_len == 0 {
                cmsg::Ancillary::default()
            } else {
                cmsg::parse(control)
            },
        })
    }
}

/// Ask the kernel to name each datagram's destination address (`IP_PKTINFO`, or
/// `IPV6_RECVPKTINFO` for an IPv6 socket): what a socket bound to a wildcard address needs to
/// answer from the address its client wrote to.
pub fn set_recv_local(socket: BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
    } else {
        set_int(socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

/// Let the kernel coalesce a sender's datagrams into one receive (`UDP_GRO`, 5.0), each
/// receive naming the segment size in a control message.
pub fn set_gro(socket: BorrowedFd<'_>) -> io::Result<()> {
    set_int(socket, libc::IPPROTO_UDP, cmsg::UDP_GRO, 1)
}

fn set_int(socket: BorrowedFd<'_>, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a live `c_int` whose size is passed with it.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One datagram to send (or several, cut by the kernel: `segment`).
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    /// `None` on a connected socket.
    pub to: Option<SocketAddr>,
    /// The source address, if not the socket's own (it is bound to a wildcard).
    pub from: Option<IpAddr>,
    /// Cut `bytes` into datagrams of this size (`UDP_SEGMENT`, 4.18), the last maybe shorter.
    pub segment: Option<u16>,
    pub bytes: &'a [u8],
}

/// Reusable room for the headers of a `sendmmsg`.
#[derive(Default)]
pub struct SendBatch {
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; SEND_CONTROL_WORDS]>,
    headers: Vec<libc::mmsghdr>,
}

// As for `RecvBatch`: the pointers are rebuilt before every call and point only into this
// value's buffers and the call's own arguments.
// SAFETY: nothing in it is shared with another thread or tied to the one that made it.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("room", &self.headers.len())
            .finish()
    }
}

impl SendBatch {
    /// Send `messages` on `socket` (non-blocking) in one `sendmmsg`. Returns how many the
    /// kernel took (from the first; an error means the first failed).
    pub fn send<'a>(
        &mut self,
        socket: BorrowedFd<'_>,
        messages: impl IntoIterator<Item = Outgoing<'a>, IntoIter: ExactSizeIterator>,
    ) -> io::Result<usize> {
        let messages = messages.into_iter();
        let count = messages.len();
        if count == 0 {
            return Ok(0);
        }
        // SAFETY: all-zero bytes are valid for these plain C structs (null pointers, zero
        // lengths, an unspecified family); every field used is set below.
        let zeroed_header = || unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
        // SAFETY: as above.
        let zeroed_name =
            || unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        self.iovecs.resize(
            count,
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
        );
        self.names.resize_with(count, zeroed_name);
        self.controls.resize(count, [0; SEND_CONTROL_WORDS]);
        self.headers.resize_with(count, zeroed_header);
        // Only the entries filled now are handed over, whatever the iterator said its length was.
        let mut filled = 0;
        for (i, message) in messages.take(count).enumerate() {
            filled = i + 1;
            self.iovecs[i] = libc::iovec {
                iov_base: message.bytes.as_ptr().cast_mut().cast(),
                iov_len: message.bytes.len(),
            };
            let name_len = match message.to {
                Some(to) => write_address(&mut self.names[i], to),
                None => 0,
            };
            let control = &mut self.controls[i];
            let control_bytes = words_as_bytes(control);
            let mut builder = cmsg::Builder::new(control_bytes);
            if let Some(from) = message.from {
                builder.source(from);
            }
            if let Some(size) = message.segment {
                builder.segment(size);
            }
            let control_len = builder.len();
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = if name_len == 0 {
                std::ptr::null_mut()
            } else {
                std::ptr::from_mut(&mut self.names[i]).cast()
            };
            header.msg_namelen = name_len;
            header.msg_iov = std::ptr::from_mut(&mut self.iovecs[i]);
            header.msg_iovlen = 1;
            header.msg_control = if control_len == 0 {
                std::ptr::null_mut()
            } else {
                control.as_mut_ptr().cast()
            };
            header.msg_controllen = control_len;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        if filled == 0 {
            return Ok(0);
        }
        // SAFETY: the first `filled` entries of `headers` were set just now; their pointers
        // point into `names`, `controls` and `iovecs` (owned by `self`, not resized during the
        // call) and, through the iovecs, into the messages' bytes, which outlive the call; the
        // kernel only reads them (and writes each entry's `msg_len`).
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                filled as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

/// A `u64` buffer as bytes, to write control messages into.
fn words_as_bytes(words: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: `u8` has no alignment or validity requirements, and the slice covers exactly
    // the buffer's bytes, borrowed mutably for as long as the buffer is.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

/// A `u64` buffer as bytes, to read control messages from.
fn words_to_bytes(words: &[u64]) -> &[u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: as above, shared.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
}

/// Write `addr` into `storage`; returns its length.
fn write_address(storage: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and as aligned as `sockaddr_in`.
            unsafe {
                std::ptr::from_mut(storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for `sockaddr_in6`.
            unsafe {
                std::ptr::from_mut(storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The socket address in `storage`, of `len` bytes, if it is IPv4 or IPv6.
fn address(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which fits in it and
            // has a smaller alignment.
            let a = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn a_batch_brings_each_datagram_whole_with_its_sender() {
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = receiver.local_addr().expect("address");
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        a.send_to(b"one", to).expect("send");
        a.send_to(&[7u8; 3000], to).expect("send");
        a.send_to(b"", to).expect("send");
        a.send_to(&[9u8; 100], to).expect("send");
        let mut batch = RecvBatch::new(8, 2048);
        let n = batch.recv(receiver.as_fd()).expect("four waiting");
        assert_eq!(n, 4);
        let from = Some(a.local_addr().expect("address"));
        assert_eq!(
            batch.get(0),
            Some(Datagram {
                from,
                bytes: b"one",
                truncated: false,
                ancillary: cmsg::Ancillary::default(),
            })
        );
        let big = batch.get(1).expect("second");
        assert!(big.truncated, "3000 bytes do not fit 2048");
        assert_eq!(big.bytes.len(), 2048);
        let empty = batch.get(2).expect("third");
        assert_eq!((empty.bytes.len(), empty.truncated), (0, false));
        assert_eq!(batch.get(3).expect("fourth").bytes, &[9u8; 100][..]);
        assert_eq!(batch.get(4), None);
        let err = batch.recv(receiver.as_fd()).expect_err("nothing left");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn ipv6_senders_are_named() {
        let Ok(receiver) = UdpSocket::bind("[::1]:0") else {
            return;
        };
        let to = receiver.local_addr().expect("address");
        let a = UdpSocket::bind("[::1]:0").expect("bind");
        a.send_to(b"v6", to).expect("send");
        let mut batch = RecvBatch::new(2, 64);
        assert_eq!(batch.recv(receiver.as_fd()).expect("one"), 1);
        let got = batch.get(0).expect("one");
        assert_eq!(got.from, Some(a.local_addr().expect("address")));
        assert_eq!(got.bytes, b"v6");
    }
}

#[cfg(test)]
mod segment_tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// What the relay relies on: a sender's `UDP_SEGMENT` batch reaches a `UDP_GRO` socket
    /// in one piece with its segment size, and a `UDP_SEGMENT` send arrives at a plain
    /// socket as the datagrams it was cut into.
    #[test]
    fn segmented_sends_arrive_coalesced_with_their_segment_size() {
        let gro = UdpSocket::bind("127.0.0.1:0").expect("bind");
        set_gro(gro.as_fd()).expect("UDP_GRO (5.0)");
        let plain = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let bytes: Vec<u8> = (0..10_500u32).map(|i| (i % 251) as u8).collect();
        let mut batch = SendBatch::default();
        for to in [gro.local_addr().expect("a"), plain.local_addr().expect("b")] {
            let message = Outgoing {
                to: Some(to),
                from: None,
                segment: Some(1000),
                bytes: &bytes,
            };
            assert_eq!(batch.send(sender.as_fd(), [message]).expect("GSO"), 1);
        }
        let mut receive = RecvBatch::new(16, 65_536);
        let n = receive.recv(gro.as_fd()).expect("coalesced");
        let first = receive.get(0).expect("one");
        if n == 1 {
            assert_eq!(first.bytes, &bytes[..]);
            assert_eq!(first.ancillary.segment, Some(1000));
        } else {
            // A kernel that segments before the socket: 11 datagrams, no segment size.
            assert_eq!(n, 11);
            assert_eq!(first.ancillary.segment, None);
        }
        let n = receive.recv(plain.as_fd()).expect("segmented");
        assert_eq!(n, 11);
        for i in 0..11 {
            let got = receive.get(i).expect("each");
            let end = (i * 1000 + 1000).min(bytes.len());
            assert_eq!(got.bytes, &bytes[i * 1000..end], "datagram {i}");
            assert_eq!(got.ancillary.segment, None);
        }
    }

    #[test]
    fn a_reply_leaves_from_the_source_it_names() {
        let wildcard = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let port = wildcard.local_addr().expect("address").port();
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .connect(("127.0.0.9", port))
            .expect("connect: only 127.0.0.9 may answer");
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let message = Outgoing {
            to: Some(client.local_addr().expect("client")),
            from: Some("127.0.0.9".parse().expect("literal")),
            segment: None,
            bytes: b"from .9",
        };
        SendBatch::default()
            .send(wildcard.as_fd(), [message])
            .expect("send");
        let mut buffer = [0u8; 16];
        let n = client
            .recv(&mut buffer)
            .expect("the reply passes the connected filter");
        assert_eq!(&buffer[..n], b"from .9");
    }
}
