//! Replies to clients, gathered over one relay run and sent with `sendmmsg`: one system call
//! for a batch instead of one `sendto` each. A listener bound to a wildcard address answers
//! each client from the address the client wrote to (`IP_PKTINFO`).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use rustix::io::Errno;
use socket2::Socket;

use crate::sys::mmsg::{Outgoing, SendBatch};

/// Most replies gathered before a send.
const BATCH: usize = 32;
/// Most bytes gathered before a send.
const BATCH_BYTES: usize = 256 * 1024;

/// What one [`Replies::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Flushed {
    pub datagrams: u64,
    pub bytes: u64,
    /// Replies the kernel refused (counted as dropped).
    pub dropped: u64,
    /// The first error other than a full buffer, to log.
    pub error: Option<Errno>,
}

/// Replies waiting to be sent, in arrival order.
#[derive(Debug, Default)]
pub(super) struct Replies {
    data: Vec<u8>,
    /// Each reply's client, its source address (if the listener's is a wildcard) and its
    /// bytes' range in `data`.
    entries: Vec<(SocketAddr, Option<IpAddr>, usize, usize)>,
    batch: SendBatch,
}

impl Replies {
    /// Gather `bytes` for `client`, to be sent from `local` if given.
    pub(super) fn push(&mut self, client: SocketAddr, local: Option<IpAddr>, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.entries.push((client, local, start, bytes.len()));
    }

    /// Whether it is time to send.
    pub(super) fn is_full(&self) -> bool {
        self.entries.len() >= BATCH || self.data.len() >= BATCH_BYTES
    }

    /// Send everything gathered from `socket`. A reply the kernel refuses is dropped (UDP
    /// may drop; it is counted), and the rest go on; a full socket buffer drops what is left.
    pub(super) fn flush(&mut self, socket: &Socket) -> Flushed {
        let mut done = Flushed::default();
        let mut at = 0;
        while at < self.entries.len() {
            let rest = &self.entries[at..];
            let messages = rest.iter().map(|&(client, local, start, len)| Outgoing {
                to: Some(client),
                from: local,
                segment: None,
                bytes: &self.data[start..start + len],
            });
            let sent = self.batch.send(socket.as_fd(), messages);
            match sent.map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO)) {
                Ok(0) => {
                    done.dropped += rest.len() as u64;
                    break;
                }
                Ok(sent) => {
                    done.datagrams += sent as u64;
                    done.bytes += rest[..sent].iter().map(|e| e.3 as u64).sum::<u64>();
                    at += sent;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN | Errno::NOBUFS) => {
                    done.dropped += rest.len() as u64;
                    break;
                }
                Err(err) => {
                    // The first one failed (a refusing client, say): drop it, send the rest.
                    done.dropped += 1;
                    done.error.get_or_insert(err);
                    at += 1;
                }
            }
        }
        self.data.clear();
        self.entries.clear();
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_batch_reaches_each_client_whole_and_in_order() {
        let from = Socket::from(std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"));
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (a_addr, b_addr) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        let mut replies = Replies::default();
        replies.push(a_addr, None, b"first");
        replies.push(b_addr, None, &[5u8; 9000]);
        replies.push(a_addr, None, b"");
        replies.push(a_addr, None, b"last");
        assert!(!replies.is_full());
        let done = replies.flush(&from);
        assert_eq!(
            done,
            Flushed {
                datagrams: 4,
                bytes: 9009,
                dropped: 0,
                error: None
            }
        );
        let mut buffer = [0u8; 10_000];
        let mut got = |s: &UdpSocket| s.recv(&mut buffer).map(|n| buffer[..n].to_vec());
        assert_eq!(got(&a).expect("a 1"), b"first");
        assert_eq!(got(&a).expect("a 2"), b"");
        assert_eq!(got(&a).expect("a 3"), b"last");
        assert_eq!(got(&b).expect("b").len(), 9000);
        assert_eq!(replies.flush(&from), Flushed::default(), "emptied");
    }

    #[test]
    fn a_batch_fills_by_count_or_bytes() {
        let client: SocketAddr = "127.0.0.1:9".parse().expect("literal");
        let mut replies = Replies::default();
        for _ in 0..BATCH - 1 {
            replies.push(client, None, b"x");
        }
        assert!(!replies.is_full());
        replies.push(client, None, b"x");
        assert!(replies.is_full());
        let mut big = Replies::default();
        big.push(client, None, &vec![0; BATCH_BYTES]);
        assert!(big.is_full());
    }
}
