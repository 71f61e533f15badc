//! `recvmmsg(2)`: many datagrams, with their senders, in one system call. `rustix` wraps
//! `sendmmsg` but not `recvmmsg`, so this is the one place outside the io_uring engine with
//! `unsafe`: one call, whose pointers all point into buffers this type owns.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Buffers for up to `count` datagrams of up to `size` bytes each, and their senders.
pub struct RecvBatch {
    size: usize,
    data: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
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
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: `headers` holds `count` initialised entries whose name and iovec pointers
        // point into `names`, `iovecs` and `data`, all owned by `self` and not moved or
        // resized during the call; the kernel writes at most `msg_namelen` bytes of address
        // and `iov_len` bytes of data into each. No timeout.
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
        Some(Datagram {
            from: address(&self.names[i], header.msg_hdr.msg_namelen),
            bytes: &self.data[start..start + len],
            truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
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
                truncated: false
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
