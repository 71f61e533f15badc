//! How a flow's datagrams go to its backend: the bytes each carries ahead of the client's
//! (a PROXY protocol v2 header, when the backend's `send_proxy` asks for one) and how many
//! client bytes then still fit in one datagram.
//!
//! The header prefixes every datagram, not only a flow's first: UDP backends keep no
//! connection to remember it by, a first datagram may be lost or overtaken, and a flow of
//! ringlb's may end and start again (idle, evicted, refused) without the backend knowing.
//! Replies from the backend carry none and go to the client unchanged.

use std::net::SocketAddr;

use crate::core::proxy_header::{self, ProxyVersion};

/// The largest UDP payload over IPv4: 65,535 less the 20-byte IP header and the 8-byte UDP
/// header.
pub const MAX_PAYLOAD_V4: usize = 65_507;
/// The largest UDP payload over IPv6 without jumbograms: the payload length (65,535) leaves
/// the 40-byte IP header out, so only the 8-byte UDP header comes off.
pub const MAX_PAYLOAD_V6: usize = 65_527;

/// The largest UDP payload a datagram to `to` can carry (an IPv4-mapped IPv6 address goes
/// out as IPv4).
pub fn max_payload(to: SocketAddr) -> usize {
    match to {
        SocketAddr::V4(_) => MAX_PAYLOAD_V4,
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => MAX_PAYLOAD_V4,
        SocketAddr::V6(_) => MAX_PAYLOAD_V6,
    }
}

/// What every datagram of one flow carries to its backend, decided when the flow opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framing {
    /// Sent ahead of each client datagram, in the same datagram; empty when the backend is
    /// sent no header.
    prefix: Box<[u8]>,
    /// The most client bytes one datagram can take behind the prefix.
    room: usize,
}

impl Framing {
    /// The framing of a flow from `client` to `backend`, whose `send_proxy` is `send_proxy`.
    /// `destination` is the address the client wrote to (the listener's, or on a wildcard
    /// listener the one the kernel reported); `None` when it is not known, and a v2 header
    /// is then LOCAL, naming no addresses, rather than a made-up one.
    ///
    /// v1 has no datagram form: the configuration refuses it for a pool a UDP listener uses,
    /// and a backend that somehow has it is sent no header.
    pub fn new(
        send_proxy: Option<ProxyVersion>,
        backend: SocketAddr,
        client: SocketAddr,
        destination: Option<SocketAddr>,
    ) -> Self {
        let prefix = match (send_proxy, destination) {
            (Some(ProxyVersion::V2), Some(destination)) => {
                proxy_header::encode_v2_datagram(client, destination)
            }
            (Some(ProxyVersion::V2), None) => proxy_header::encode_unknown(ProxyVersion::V2),
            (Some(ProxyVersion::V1) | None, _) => Vec::new(),
        };
        let room = max_payload(backend).saturating_sub(prefix.len());
        Framing {
            prefix: prefix.into_boxed_slice(),
            room,
        }
    }

    /// The bytes ahead of each datagram (empty: none).
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Whether a client datagram of `len` bytes fits behind the prefix; one that does not is
    /// dropped (counted as too big), never cut.
    pub fn fits(&self, len: usize) -> bool {
        len <= self.room
    }

    /// The most client bytes a datagram can take.
    pub fn room(&self) -> usize {
        self.room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("literal")
    }

    #[test]
    fn the_payload_limit_is_the_backends_family() {
        assert_eq!(max_payload(addr("10.0.0.1:53")), 65_507);
        assert_eq!(max_payload(addr("[2001:db8::1]:53")), 65_527);
        assert_eq!(max_payload(addr("[::ffff:10.0.0.1]:53")), 65_507);
    }

    #[test]
    fn v2_prefixes_a_dgram_header_and_leaves_room_for_it() {
        let client = addr("192.0.2.1:40000");
        let listener = addr("198.51.100.7:53");
        let framing = Framing::new(
            Some(ProxyVersion::V2),
            addr("10.0.0.1:53"),
            client,
            Some(listener),
        );
        assert_eq!(
            framing.prefix(),
            proxy_header::encode_v2_datagram(client, listener)
        );
        assert_eq!(framing.room(), 65_507 - 28);
        assert!(framing.fits(0) && framing.fits(65_479) && !framing.fits(65_480));

        // An IPv6 client and listener, to an IPv6 backend: a 52-byte header.
        let framing = Framing::new(
            Some(ProxyVersion::V2),
            addr("[2001:db8::53]:53"),
            addr("[2001:db8::1]:40000"),
            Some(addr("[2001:db8::7]:53")),
        );
        assert_eq!(framing.room(), 65_527 - 52);
        // An IPv6 client to an IPv4 backend: the backend's limit, the client's header.
        let framing = Framing::new(
            Some(ProxyVersion::V2),
            addr("10.0.0.1:53"),
            addr("[2001:db8::1]:40000"),
            Some(addr("[2001:db8::7]:53")),
        );
        assert_eq!(framing.room(), 65_507 - 52);
    }

    #[test]
    fn no_header_without_v2_and_local_without_a_destination() {
        let backend = addr("10.0.0.1:53");
        let client = addr("192.0.2.1:40000");
        let listener = Some(addr("198.51.100.7:53"));
        for framing in [
            Framing::new(None, backend, client, listener),
            Framing::new(Some(ProxyVersion::V1), backend, client, listener),
        ] {
            assert!(framing.prefix().is_empty());
            assert_eq!(framing.room(), 65_507);
        }
        let local = Framing::new(Some(ProxyVersion::V2), backend, client, None);
        assert_eq!(
            local.prefix(),
            proxy_header::encode_unknown(ProxyVersion::V2)
        );
        assert_eq!(local.room(), 65_507 - 16);
    }
}
