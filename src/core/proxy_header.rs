//! The PROXY protocol, versions 1 and 2 (HAProxy's `doc/proxy-protocol.txt`): a strict,
//! incremental parser for the header a listener with `accept_proxy` must find before anything
//! else, and the encoders for the header ringlb sends a backend with `send_proxy`: once at
//! the start of a TCP connection (STREAM), or ahead of every datagram of a UDP flow (DGRAM).
//!
//! The parser follows the specification's MUSTs:
//! - It never guesses: the first bytes are the v1 prefix `PROXY ` or the 12-byte v2
//!   signature, or the header is invalid. Fewer bytes than needed to decide are
//!   [`Parsed::Incomplete`].
//! - v1 is one line of at most 107 bytes ending in CRLF; a lone CR or LF is invalid. The
//!   protocol is `TCP4`, `TCP6` or `UNKNOWN` (the rest of an `UNKNOWN` line is ignored), with
//!   addresses of that family and ports in 0..=65535 written without leading zeros.
//! - v2 has version 2 and the command LOCAL or PROXY. Its length field is always honoured,
//!   for LOCAL as well, whose addresses are ignored. Families are UNSPEC, INET, INET6 and
//!   UNIX; anything else is rejected. An address block shorter than its family needs is
//!   rejected. TLVs are walked and must end exactly at the header's end, and a CRC32C TLV is
//!   verified.
//!
//! A header that is not complete yet asks for more bytes; a header that can never become
//! valid is rejected at once, whatever follows it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version and command, family and protocol,
/// length.
pub const V2_FIXED: usize = 16;
/// The longest v2 header.
pub const V2_MAX: usize = V2_FIXED + u16::MAX as usize;

const V1_PREFIX: &[u8] = b"PROXY ";
const TLV_CRC32C: u8 = 0x03;

/// What the header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The client and the address it connected to, as the proxy in front saw them; `None`
    /// when the header carries none that applies (v1 `UNKNOWN`, v2 LOCAL, UNSPEC or UNIX):
    /// the connection's own addresses stand.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// Bytes the header takes at the start of the stream.
    pub len: usize,
}

/// What [`parse`] found in the bytes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid header of `header.len` bytes; what follows it is the client's data.
    Complete(ProxyHeader),
    /// Valid so far: at least this many bytes in all are needed to go on.
    Incomplete { needed: usize },
}

/// Why a header is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("no PROXY protocol header (neither the v1 prefix nor the v2 signature)")]
    NoHeader,
    #[error("v1 header longer than 107 bytes")]
    V1TooLong,
    #[error("v1 header with a CR or LF that is not its final CRLF")]
    V1BadLineEnd,
    #[error("v1 header with an unknown protocol (not TCP4, TCP6 or UNKNOWN)")]
    V1Protocol,
    #[error("v1 header with a malformed address or port")]
    V1Address,
    #[error("v2 header with a version other than 2")]
    V2Version,
    #[error("v2 header with a command other than LOCAL or PROXY")]
    V2Command,
    #[error("v2 header with an unknown address family or protocol")]
    V2Family,
    #[error("v2 header whose length is too short for its address family")]
    V2Length,
    #[error("v2 header whose TLVs do not end at its end")]
    V2Tlv,
    #[error("v2 header whose CRC32C does not match")]
    V2Checksum,
}

/// Parse the header at the start of `bytes` (the first bytes a client sent).
pub fn parse(bytes: &[u8]) -> Result<Parsed, Invalid> {
    let Some(&first) = bytes.first() else {
        return Ok(Parsed::Incomplete { needed: 1 });
    };
    if first == b'P' {
        let n = bytes.len().min(V1_PREFIX.len());
        if bytes[..n] != V1_PREFIX[..n] {
            return Err(Invalid::NoHeader);
        }
        if bytes.len() < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete {
                needed: V1_PREFIX.len(),
            });
        }
        return parse_v1(bytes);
    }
    let n = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..n] != V2_SIGNATURE[..n] {
        return Err(Invalid::NoHeader);
    }
    if bytes.len() < V2_FIXED {
        return Ok(Parsed::Incomplete { needed: V2_FIXED });
    }
    parse_v2(bytes)
}

fn parse_v1(bytes: &[u8]) -> Result<Parsed, Invalid> {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if bytes.len() >= V1_MAX {
            return Err(Invalid::V1TooLong);
        }
        return Ok(Parsed::Incomplete {
            needed: bytes.len() + 1,
        });
    };
    match (window[end], window.get(end + 1)) {
        (b'\r', Some(b'\n')) => {}
        (b'\r', None) if bytes.len() < V1_MAX => {
            return Ok(Parsed::Incomplete { needed: end + 2 });
        }
        (b'\r', None) => return Err(Invalid::V1TooLong),
        _ => return Err(Invalid::V1BadLineEnd),
    }
    let line = &window[V1_PREFIX.len()..end];
    let text = std::str::from_utf8(line).map_err(|_| Invalid::V1Address)?;
    let mut fields = text.split(' ');
    let protocol = fields.next().unwrap_or_default();
    let len = end + 2;
    if protocol == "UNKNOWN" {
        return Ok(Parsed::Complete(ProxyHeader {
            version: 1,
            addresses: None,
            len,
        }));
    }
    let v6 = match protocol {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(Invalid::V1Protocol),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(Invalid::V1Address);
    };
    let ip = |text: &str| -> Result<IpAddr, Invalid> {
        let ip = if v6 {
            IpAddr::V6(text.parse::<Ipv6Addr>().map_err(|_| Invalid::V1Address)?)
        } else {
            IpAddr::V4(text.parse::<Ipv4Addr>().map_err(|_| Invalid::V1Address)?)
        };
        Ok(ip)
    };
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, port(dport)?);
    Ok(Parsed::Complete(ProxyHeader {
        version: 1,
        addresses: Some((source, destination)),
        len,
    }))
}

/// A v1 port: decimal digits, no sign, no leading zero, at most 65535.
fn port(text: &str) -> Result<u16, Invalid> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(Invalid::V1Address);
    }
    text.parse().map_err(|_| Invalid::V1Address)
}

fn parse_v2(bytes: &[u8]) -> Result<Parsed, Invalid> {
    let version = bytes[12] >> 4;
    let command = bytes[12] & 0x0f;
    if version != 2 {
        return Err(Invalid::V2Version);
    }
    if command > 1 {
        return Err(Invalid::V2Command);
    }
    let family = bytes[13] >> 4;
    let protocol = bytes[13] & 0x0f;
    if family > 3 || protocol > 2 {
        return Err(Invalid::V2Family);
    }
    let body = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let len = V2_FIXED + body;
    // The address block of the family, checked before the whole header is in: a length
    // that cannot hold it never will.
    let block = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body < block {
        return Err(Invalid::V2Length);
    }
    if bytes.len() < len {
        return Ok(Parsed::Incomplete { needed: len });
    }
    let header = &bytes[..len];
    walk_tlvs(header, V2_FIXED + block)?;
    let local = command == 0;
    let addresses = match family {
        _ if local => None,
        1 => {
            let a = &header[V2_FIXED..];
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]));
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        2 => {
            let a = &header[V2_FIXED..];
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        // UNSPEC or UNIX: the connection's own addresses stand.
        _ => None,
    };
    Ok(Parsed::Complete(ProxyHeader {
        version: 2,
        addresses,
        len,
    }))
}

/// Walk the TLVs of `header` from `start`: each must fit, and they must end exactly at the
/// header's end. A CRC32C TLV is verified over the whole header with its value zeroed.
fn walk_tlvs(header: &[u8], start: usize) -> Result<(), Invalid> {
    let mut at = start;
    while at < header.len() {
        if header.len() - at < 3 {
            return Err(Invalid::V2Tlv);
        }
        let kind = header[at];
        let len = usize::from(u16::from_be_bytes([header[at + 1], header[at + 2]]));
        let value = at + 3;
        if header.len() - value < len {
            return Err(Invalid::V2Tlv);
        }
        if kind == TLV_CRC32C {
            if len != 4 {
                return Err(Invalid::V2Tlv);
            }
            let mut zeroed = header.to_vec();
            zeroed[value..value + 4].fill(0);
            let expected = u32::from_be_bytes([
                header[value],
                header[value + 1],
                header[value + 2],
                header[value + 3],
            ]);
            if crc32c::crc32c(&zeroed) != expected {
                return Err(Invalid::V2Checksum);
            }
        }
        at = value + len;
    }
    Ok(())
}

/// Which header a backend is sent (`send_proxy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// The header of `version` for a connection from `source` to `destination`.
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    match version {
        ProxyVersion::V1 => encode_v1(source, destination).into_bytes(),
        ProxyVersion::V2 => encode_v2(source, destination),
    }
}

/// The v1 header for a TCP connection from `source` to `destination` (`UNKNOWN` when their
/// families differ).
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> String {
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        ),
        (SocketAddr::V6(s), SocketAddr::V6(d)) => format!(
            "PROXY TCP6 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        ),
        _ => "PROXY UNKNOWN\r\n".to_owned(),
    }
}

/// The transport a v2 header names, in the low nibble of its 14th byte (section 2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `SOCK_STREAM`: TCP (`\x11` over IPv4, `\x21` over IPv6).
    Stream,
    /// `SOCK_DGRAM`: UDP (`\x12` over IPv4, `\x22` over IPv6).
    Datagram,
}

/// The v2 header (command PROXY, protocol STREAM) for a connection from `source` to
/// `destination`; LOCAL with no addresses when their families differ.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    encode_v2_over(Transport::Stream, source, destination)
}

/// The v2 header (command PROXY, protocol DGRAM) for a UDP flow from `source` to
/// `destination`, the prefix of each of its datagrams; LOCAL with no addresses when their
/// families differ. 28 bytes over IPv4, 52 over IPv6.
pub fn encode_v2_datagram(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    encode_v2_over(Transport::Datagram, source, destination)
}

/// The v2 header (command PROXY) of `transport` from `source` to `destination`; LOCAL with
/// no addresses when their families differ.
pub fn encode_v2_over(
    transport: Transport,
    source: SocketAddr,
    destination: SocketAddr,
) -> Vec<u8> {
    let protocol = match transport {
        Transport::Stream => 0x01,
        Transport::Datagram => 0x02,
    };
    let mut out = V2_SIGNATURE.to_vec();
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x21, 0x10 | protocol, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            out.extend_from_slice(&[0x21, 0x20 | protocol, 0, 36]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
    out
}

/// A header of `version` that names no addresses (v1 `UNKNOWN`, v2 `LOCAL`): the receiver
/// keeps the connection's own.
pub fn encode_unknown(version: ProxyVersion) -> Vec<u8> {
    match version {
        ProxyVersion::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        ProxyVersion::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.extend_from_slice(&[0x20, 0x00, 0, 0]);
            out
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod ppp_tests;
