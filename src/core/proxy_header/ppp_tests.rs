//! Cross-checks against the `ppp` crate, an independent implementation of the PROXY
//! protocol: headers that ppp builds must parse here to what ppp says they carry, headers
//! that ringlb encodes must parse in ppp, and on truncated or corrupted headers the two
//! parsers must reach the same verdict, or differ only where ppp is more lenient than
//! HAProxy's `doc/proxy-protocol.txt` and ringlb follows the text (see [`allowed`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use ppp::v2::{AddressFamily, Command, Protocol, Type, Unix};
use ppp::{HeaderResult, PartialResult, v1, v2};
use proptest::prelude::*;

use super::*;

/// What a parser made of some bytes, in the terms both parsers share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Complete {
        version: u8,
        addresses: Option<(SocketAddr, SocketAddr)>,
        len: usize,
    },
    Incomplete,
    Invalid,
}

fn ours(bytes: &[u8]) -> Verdict {
    match parse(bytes) {
        Ok(Parsed::Complete(h)) => Verdict::Complete {
            version: h.version,
            addresses: h.addresses,
            len: h.len,
        },
        Ok(Parsed::Incomplete { .. }) => Verdict::Incomplete,
        Err(_) => Verdict::Invalid,
    }
}

fn pair(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> (SocketAddr, SocketAddr) {
    (SocketAddr::new(src, sport), SocketAddr::new(dst, dport))
}

/// ppp's verdict. ppp checks a v2 header's TLVs only when they are iterated, so a v2 header
/// whose TLVs do not iterate cleanly counts as invalid here, as it would for a ppp user who
/// reads them. LOCAL carries no addresses whatever its address block says (section 2.2:
/// the receiver "must use the real connection endpoints and discard the protocol block").
fn theirs(result: &HeaderResult<'_>) -> Verdict {
    match result {
        HeaderResult::V1(Ok(h)) => Verdict::Complete {
            version: 1,
            addresses: match h.addresses {
                v1::Addresses::Tcp4(a) => Some(pair(
                    a.source_address.into(),
                    a.source_port,
                    a.destination_address.into(),
                    a.destination_port,
                )),
                v1::Addresses::Tcp6(a) => Some(pair(
                    a.source_address.into(),
                    a.source_port,
                    a.destination_address.into(),
                    a.destination_port,
                )),
                v1::Addresses::Unknown => None,
            },
            len: h.header.len(),
        },
        HeaderResult::V2(Ok(h)) if h.tlvs().all(|tlv| tlv.is_ok()) => Verdict::Complete {
            version: 2,
            addresses: match (h.command, h.addresses) {
                (Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => Some(pair(
                    a.source_address.into(),
                    a.source_port,
                    a.destination_address.into(),
                    a.destination_port,
                )),
                (_, v2::Addresses::IPv6(a)) => Some(pair(
                    a.source_address.into(),
                    a.source_port,
                    a.destination_address.into(),
                    a.destination_port,
                )),
                _ => None,
            },
            len: h.len(),
        },
        HeaderResult::V2(Ok(_)) => Verdict::Invalid,
        other if other.is_incomplete() => Verdict::Incomplete,
        _ => Verdict::Invalid,
    }
}

/// Where ringlb and ppp may disagree, and the rule of `doc/proxy-protocol.txt` that ringlb
/// follows there; `None` when the difference is not one of these (a failure).
fn allowed(bytes: &[u8], result: &HeaderResult<'_>) -> Option<&'static str> {
    let mine = parse(bytes);
    match (mine, theirs(result), result) {
        // ppp does not implement the checksum; 2.2.3: "If the checksum is provided as part
        // of the PROXY header and the checksum functionality is supported by the receiver,
        // the receiver MUST [...] treat the TCP connection providing the header as invalid"
        // when it does not match.
        (Err(Invalid::V2Checksum), Verdict::Complete { .. }, _) => Some("CRC32C not verified"),
        // 2.2.3: "The value of the type PP2_TYPE_CRC32C is a 32-bit number"; one of
        // another length cannot be verified, so ringlb (like haproxy) rejects it.
        (Err(Invalid::V2Tlv), Verdict::Complete { .. }, HeaderResult::V2(Ok(h)))
            if h.tlvs()
                .flatten()
                .any(|t| t.kind == 0x03 && t.value.len() != 4) =>
        {
            Some("CRC32C TLV not 4 bytes long")
        }
        // ppp takes the whole body of an AF_UNSPEC header for address information and
        // reads no TLVs in it. The address union of 2.2 has no UNSPEC member, so ringlb
        // reads TLVs right after the 16-byte header (where haproxy's sender puts them, and
        // where a CRC32C can be found and verified); beyond the addresses, 2.2 lets the
        // receiver "attempt to interpret those bytes" as TLVs, and with PROXY it is "free
        // to accept the connection anyway [...] or to reject it". With LOCAL the text
        // leans towards ppp ("the receiver must accept the connection and ignore any
        // address information"): ringlb's strictness there is a choice, kept on purpose.
        (Err(Invalid::V2Tlv), Verdict::Complete { .. }, HeaderResult::V2(Ok(h)))
            if h.address_family() == AddressFamily::Unspecified =>
        {
            Some("TLVs of AF_UNSPEC")
        }
        // ppp ends a v1 line at its first CR, takes the rest for more to come, and also
        // accepts a line ending in a space and a lone LF; 2.1: "The receiver must not
        // tolerate a single CR or LF character to end the line when a complete CRLF
        // sequence is expected."
        (
            Err(Invalid::V1BadLineEnd | Invalid::NoHeader),
            Verdict::Incomplete,
            HeaderResult::V1(_),
        ) if lone_cr(bytes) => Some("v1 lone CR"),
        (Err(Invalid::V1BadLineEnd), Verdict::Complete { len, .. }, HeaderResult::V1(_))
            if !bytes[..len].ends_with(b"\r\n") =>
        {
            Some("v1 lone LF")
        }
        // ppp parses a v1 port with Rust's `u16::from_str`, which takes a leading `+`; 2.1:
        // the port is "represented as a decimal integer in the range [0..65535]".
        (Err(Invalid::V1Address), Verdict::Complete { len, .. }, HeaderResult::V1(_))
            if bytes[..len].contains(&b'+') =>
        {
            Some("v1 port with a sign")
        }
        _ => None,
    }
}

/// A CR in the line that is not followed by an LF.
fn lone_cr(bytes: &[u8]) -> bool {
    let line = &bytes[..bytes.len().min(V1_MAX)];
    line.iter()
        .enumerate()
        .any(|(at, &b)| b == b'\r' && line.get(at + 1) != Some(&b'\n'))
}

/// On a strict prefix of a valid header ringlb must ask for more. ppp does too, except on a
/// v1 line cut right after the space that follows the source port, where it finds the
/// destination port empty and rejects the line: 2 lets a receiver "simply drop the
/// connection when receiving a partial header" (ringlb follows the recommendation "to be
/// tolerant").
fn prefixes_agree(header: &[u8]) {
    for n in 0..header.len() {
        let prefix = &header[..n];
        match parse(prefix) {
            Ok(Parsed::Incomplete { needed }) => assert!(needed > n, "{n}: {needed}"),
            other => panic!("prefix of {n} bytes of {header:?}: {other:?}"),
        }
        let result = HeaderResult::parse(prefix);
        if theirs(&result) != Verdict::Incomplete {
            let empty_port = matches!(
                result,
                HeaderResult::V1(Err(v1::BinaryParseError::Parse(
                    v1::ParseError::InvalidDestinationPort(_)
                )))
            );
            assert!(
                empty_port && prefix.ends_with(b" "),
                "ppp on a prefix of {n} bytes of {:?}: {result:?}",
                String::from_utf8_lossy(header)
            );
        }
    }
}

/// The two parsers on `bytes`: the same verdict, or an allowed difference.
fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let result = HeaderResult::parse(bytes);
    let (mine, other) = (ours(bytes), theirs(&result));
    if mine != other {
        prop_assert!(
            allowed(bytes, &result).is_some(),
            "{:?}\nringlb: {:?}\nppp: {:?}",
            String::from_utf8_lossy(bytes),
            parse(bytes),
            result
        );
    }
    Ok(())
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
        }),
    ]
}

/// IPv4 and IPv6 pairs of either kind, and pairs of mixed families.
fn socket_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        2 => (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u16>(), any::<u16>()).prop_map(
            |(s, d, sp, dp)| pair(Ipv4Addr::from(s).into(), sp, Ipv4Addr::from(d).into(), dp)
        ),
        2 => (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<u16>(), any::<u16>()).prop_map(
            |(s, d, sp, dp)| pair(Ipv6Addr::from(s).into(), sp, Ipv6Addr::from(d).into(), dp)
        ),
        1 => (socket_addr(), socket_addr()),
    ]
}

/// A v1 header as ppp writes it: TCP4, TCP6, or UNKNOWN for mixed families.
#[derive(Clone, Debug)]
struct V1Case {
    addresses: (SocketAddr, SocketAddr),
    unknown: bool,
}

impl V1Case {
    fn build(&self) -> Vec<u8> {
        let addresses = if self.unknown {
            v1::Addresses::Unknown
        } else {
            v1::Addresses::from(self.addresses)
        };
        addresses.to_string().into_bytes()
    }

    fn expected(&self) -> Option<(SocketAddr, SocketAddr)> {
        let (src, dst) = self.addresses;
        (!self.unknown && src.is_ipv4() == dst.is_ipv4()).then_some(self.addresses)
    }
}

fn v1_case() -> impl Strategy<Value = V1Case> {
    (socket_pair(), prop::bool::weighted(0.1))
        .prop_map(|(addresses, unknown)| V1Case { addresses, unknown })
}

/// The TLV types written, all but CRC32C (added on its own, with its checksum).
const TLV_TYPES: [u8; 9] = [0x01, 0x02, 0x04, 0x05, 0x20, 0x21, 0x30, 0xe0, 0xff];

#[derive(Clone, Copy, Debug)]
enum Family {
    Inet,
    Unspec,
    Unix(u8),
}

/// A v2 header built with ppp's `Builder`.
#[derive(Clone, Debug)]
struct V2Case {
    family: Family,
    addresses: (SocketAddr, SocketAddr),
    local: bool,
    datagram: bool,
    tlvs: Vec<(u8, Vec<u8>)>,
    /// Where among the TLVs a CRC32C goes, if anywhere.
    crc: Option<usize>,
}

impl V2Case {
    fn addresses(&self) -> v2::Addresses {
        match self.family {
            Family::Inet => v2::Addresses::from(self.addresses),
            Family::Unspec => v2::Addresses::Unspecified,
            Family::Unix(b) => v2::Addresses::Unix(Unix::new([b; 108], [!b; 108])),
        }
    }

    fn build(&self) -> Vec<u8> {
        let addresses = self.addresses();
        let command = if self.local {
            Command::Local
        } else {
            Command::Proxy
        };
        let protocol = match (addresses, self.datagram) {
            (v2::Addresses::Unspecified, _) => Protocol::Unspecified,
            (_, true) => Protocol::Datagram,
            (_, false) => Protocol::Stream,
        };
        let mut builder =
            v2::Builder::with_addresses(v2::Version::Two | command, protocol, addresses);
        let mut at = V2_FIXED + addresses.len();
        let mut crc_at = None;
        for (i, (kind, value)) in self.tlvs.iter().enumerate() {
            if self.crc == Some(i) {
                builder = builder.write_tlv(Type::CRC32C, &[0; 4]).expect("crc tlv");
                crc_at = Some(at + 3);
                at += 7;
            }
            builder = builder.write_tlv(*kind, value).expect("tlv");
            at += 3 + value.len();
        }
        if self.crc == Some(self.tlvs.len()) {
            builder = builder.write_tlv(Type::CRC32C, &[0; 4]).expect("crc tlv");
            crc_at = Some(at + 3);
        }
        let mut header = builder.build().expect("header");
        // ppp writes the CRC32C TLV but cannot compute it: fill it in as 2.2.3 says, over
        // the whole header with the value zeroed.
        if let Some(at) = crc_at {
            let crc = crc32c::crc32c(&header);
            header[at..at + 4].copy_from_slice(&crc.to_be_bytes());
        }
        header
    }

    fn expected(&self) -> Option<(SocketAddr, SocketAddr)> {
        let (src, dst) = self.addresses;
        let inet = matches!(self.family, Family::Inet) && src.is_ipv4() == dst.is_ipv4();
        (inet && !self.local).then_some(self.addresses)
    }
}

fn v2_case() -> impl Strategy<Value = V2Case> {
    let family = prop_oneof![
        6 => Just(Family::Inet),
        1 => Just(Family::Unspec),
        1 => any::<u8>().prop_map(Family::Unix),
    ];
    let tlv = (
        prop::sample::select(TLV_TYPES.as_slice()),
        prop::collection::vec(any::<u8>(), 0..40),
    );
    (
        family,
        socket_pair(),
        prop::bool::weighted(0.2),
        any::<bool>(),
        prop::collection::vec(tlv, 0..4),
        prop::option::weighted(0.25, any::<prop::sample::Index>()),
    )
        .prop_map(|(family, addresses, local, datagram, tlvs, crc)| {
            let crc = crc.map(|i| i.index(tlvs.len() + 1));
            // Mixed families have no v2 address block: ppp would write UNSPEC.
            let family = match family {
                Family::Inet if addresses.0.is_ipv4() != addresses.1.is_ipv4() => Family::Unspec,
                f => f,
            };
            V2Case {
                family,
                addresses,
                local,
                datagram,
                tlvs,
                crc,
            }
        })
}

/// The bytes tried at every position of a header, besides one arbitrary byte: the
/// separators and signs of v1 and the bits of v2's version, command, family and protocol.
const SPECIAL: [u8; 8] = [b'\r', b'\n', b' ', b'+', b'0', 0x00, 0x20, 0xff];

/// Every single-byte corruption of `header` (position `i` becomes `noise[i]` and each of
/// [`SPECIAL`]), and every truncation.
fn mutations_agree(header: &[u8], noise: &[u8]) -> Result<(), TestCaseError> {
    prefixes_agree(header);
    let mut bytes = header.to_vec();
    for i in 0..header.len() {
        let replacements = std::iter::once(noise[i % noise.len()]).chain(SPECIAL);
        for b in replacements.filter(|&b| b != header[i]) {
            bytes[i] = b;
            agree(&bytes)?;
        }
        bytes[i] = header[i];
    }
    Ok(())
}

#[test]
fn known_answer_of_the_crc32c_used_to_fill_in_ppp_headers() {
    // RFC 3720's check value for CRC32C; the fill-in does not lean on ringlb's code.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn the_differences_allowed_are_the_ones_expected() {
    let lenient: [(&[u8], &str); 6] = [
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            "v1 port with a sign",
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \n", "v1 lone LF"),
        (b"PROXY UNKNOWN \n", "v1 lone LF"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "v1 lone CR"),
        (b"PROXY UNKNOWN\r\r", "v1 lone CR"),
        (b"PROXY\rTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "v1 lone CR"),
    ];
    for (bytes, why) in lenient {
        let result = HeaderResult::parse(bytes);
        assert_ne!(ours(bytes), theirs(&result), "{bytes:?}");
        assert_eq!(allowed(bytes, &result), Some(why), "{bytes:?}");
    }
    // AF_UNSPEC with a body that is no TLV: ppp takes it for addresses.
    let mut unspec = V2_SIGNATURE.to_vec();
    unspec.extend_from_slice(&[0x21, 0x01, 0, 8, 127, 0, 0, 1, 127, 0, 0, 2]);
    let result = HeaderResult::parse(&unspec);
    assert_eq!(parse(&unspec), Err(Invalid::V2Tlv));
    assert_eq!(allowed(&unspec, &result), Some("TLVs of AF_UNSPEC"));
    // A wrong checksum.
    let mut crc = V2Case {
        family: Family::Inet,
        addresses: pair(Ipv4Addr::LOCALHOST.into(), 1, Ipv4Addr::LOCALHOST.into(), 2),
        local: false,
        datagram: false,
        tlvs: vec![],
        crc: Some(0),
    }
    .build();
    *crc.last_mut().expect("crc") ^= 1;
    let result = HeaderResult::parse(&crc);
    assert_eq!(parse(&crc), Err(Invalid::V2Checksum));
    assert_eq!(allowed(&crc, &result), Some("CRC32C not verified"));
    // Where ppp is as strict, nothing is allowed: an unknown family, a v2 TLV that runs
    // past the end, a v1 port with a leading zero.
    let mut family = V2_SIGNATURE.to_vec();
    family.extend_from_slice(&[0x21, 0x41, 0, 0]);
    let mut tlv = V2_SIGNATURE.to_vec();
    tlv.extend_from_slice(&[
        0x21, 0x11, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 4, 0, 9, 0,
    ]);
    for bytes in [
        family.as_slice(),
        &tlv,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    ] {
        let result = HeaderResult::parse(bytes);
        assert_eq!(
            (ours(bytes), theirs(&result)),
            (Verdict::Invalid, Verdict::Invalid)
        );
    }
}

proptest! {
    /// 1. What ppp builds, ringlb parses, to the addresses ppp put in.
    #[test]
    fn ppp_v1_headers_parse(case in v1_case(), tail in prop::collection::vec(any::<u8>(), 0..32)) {
        let header = case.build();
        let bytes = [header.as_slice(), &tail].concat();
        let expected = Verdict::Complete { version: 1, addresses: case.expected(), len: header.len() };
        prop_assert_eq!(ours(&bytes), expected);
        prop_assert_eq!(theirs(&HeaderResult::parse(&bytes)), expected);
    }

    #[test]
    fn ppp_v2_headers_parse(case in v2_case(), tail in prop::collection::vec(any::<u8>(), 0..32)) {
        let header = case.build();
        let bytes = [header.as_slice(), &tail].concat();
        let expected = Verdict::Complete { version: 2, addresses: case.expected(), len: header.len() };
        prop_assert_eq!(ours(&bytes), expected);
        prop_assert_eq!(theirs(&HeaderResult::parse(&bytes)), expected);
    }

    /// 2. What ringlb encodes, ppp parses, to the same addresses; and ringlb writes the
    /// very bytes ppp writes for them, over STREAM and DGRAM.
    #[test]
    fn ringlb_headers_parse_in_ppp((src, dst) in socket_pair()) {
        let same_family = src.is_ipv4() == dst.is_ipv4();

        let text = encode_v1(src, dst);
        prop_assert_eq!(&text, &v1::Addresses::from((src, dst)).to_string());
        let h = v1::Header::try_from(text.as_bytes()).expect("ppp parses ringlb's v1");
        prop_assert_eq!(h.addresses, v1::Addresses::from((src, dst)));
        prop_assert_eq!(h.header.len(), text.len());
        prop_assert_eq!(encode(ProxyVersion::V1, src, dst), text.as_bytes());

        let binary = encode_v2(src, dst);
        let h = v2::Header::try_from(binary.as_slice()).expect("ppp parses ringlb's v2");
        prop_assert_eq!(h.len(), binary.len());
        prop_assert_eq!(h.tlvs().count(), 0);
        if same_family {
            prop_assert_eq!(h.command, Command::Proxy);
            prop_assert_eq!(h.protocol, Protocol::Stream);
            prop_assert_eq!(h.addresses, v2::Addresses::from((src, dst)));
            let theirs = v2::Builder::with_addresses(
                v2::Version::Two | Command::Proxy,
                Protocol::Stream,
                (src, dst),
            )
            .build()
            .expect("ppp builds");
            prop_assert_eq!(&binary, &theirs);
        } else {
            prop_assert_eq!(h.command, Command::Local);
            prop_assert_eq!(h.addresses, v2::Addresses::Unspecified);
            prop_assert_eq!(&binary, &encode_unknown(ProxyVersion::V2));
        }
        prop_assert_eq!(encode(ProxyVersion::V2, src, dst), binary);

        let datagram = encode_v2_datagram(src, dst);
        let h = v2::Header::try_from(datagram.as_slice()).expect("ppp parses ringlb's DGRAM v2");
        prop_assert_eq!(h.len(), datagram.len());
        if same_family {
            prop_assert_eq!(h.protocol, Protocol::Datagram);
            prop_assert_eq!(h.addresses, v2::Addresses::from((src, dst)));
            let theirs = v2::Builder::with_addresses(
                v2::Version::Two | Command::Proxy,
                Protocol::Datagram,
                (src, dst),
            )
            .build()
            .expect("ppp builds");
            prop_assert_eq!(&datagram, &theirs);
        } else {
            prop_assert_eq!(&datagram, &encode_unknown(ProxyVersion::V2));
        }
    }

    /// 3. Truncated and corrupted ppp headers: the same verdict from both parsers, or an
    /// allowed difference.
    #[test]
    fn corrupted_v1_headers_agree(case in v1_case(), noise in prop::collection::vec(any::<u8>(), 1..128)) {
        mutations_agree(&case.build(), &noise)?;
    }

    #[test]
    fn corrupted_v2_headers_agree(case in v2_case(), noise in prop::collection::vec(any::<u8>(), 1..256)) {
        mutations_agree(&case.build(), &noise)?;
    }
}

#[test]
fn ringlb_unknown_headers_parse_in_ppp() {
    let v1 = encode_unknown(ProxyVersion::V1);
    let h = v1::Header::try_from(v1.as_slice()).expect("ppp parses v1 UNKNOWN");
    assert_eq!(
        (h.addresses, h.header.len()),
        (v1::Addresses::Unknown, v1.len())
    );
    let v2 = encode_unknown(ProxyVersion::V2);
    let h = v2::Header::try_from(v2.as_slice()).expect("ppp parses v2 LOCAL");
    assert_eq!(h.command, Command::Local);
    assert_eq!(h.protocol, Protocol::Unspecified);
    assert_eq!(h.addresses, v2::Addresses::Unspecified);
    assert_eq!(h.len(), v2.len());
}
