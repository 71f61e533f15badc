use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;

use super::*;

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port))
}

fn complete(bytes: &[u8]) -> ProxyHeader {
    match parse(bytes) {
        Ok(Parsed::Complete(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

/// Every strict prefix of a valid header asks for more, and never for fewer bytes than it has.
fn prefixes_are_incomplete(header: &[u8]) {
    for n in 0..header.len() {
        match parse(&header[..n]) {
            Ok(Parsed::Incomplete { needed }) => assert!(needed > n, "{n}: {needed}"),
            other => panic!("prefix of {n} bytes: {other:?}"),
        }
    }
}

#[test]
fn v1_headers_of_both_families_and_unknown() {
    let h = complete(b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\nGET /");
    assert_eq!(h.version, 1);
    assert_eq!(
        h.addresses,
        Some((v4([192, 0, 2, 1], 51234), v4([198, 51, 100, 7], 443)))
    );
    assert_eq!(h.len, 45);
    let h = complete(b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n");
    let (src, dst) = h.addresses.expect("addresses");
    assert_eq!((src.port(), dst.port()), (0, 65535));
    assert_eq!(dst.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    let h = complete(b"PROXY UNKNOWN ffff:f...f:ffff 1 2 3\r\nrest");
    assert_eq!((h.addresses, h.len), (None, 37));
}

#[test]
fn v1_rejects_what_the_specification_forbids() {
    let cases: [(&[u8], Invalid); 12] = [
        (b"GET / HTTP/1.1\r\n", Invalid::NoHeader),
        (b"PROXZ TCP4", Invalid::NoHeader),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Invalid::V1BadLineEnd),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx", Invalid::V1BadLineEnd),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", Invalid::V1Protocol),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            Invalid::V1Address,
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", Invalid::V1Address),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", Invalid::V1Address),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", Invalid::V1Address),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", Invalid::V1Address),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", Invalid::V1Address),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", Invalid::V1Address),
    ];
    for (bytes, why) in cases {
        assert_eq!(
            parse(bytes),
            Err(why),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
    assert_eq!(parse(&long), Err(Invalid::V1TooLong));
    // Exactly 107 bytes with its CRLF is the longest allowed.
    let mut max = b"PROXY UNKNOWN ".to_vec();
    max.resize(V1_MAX - 2, b'x');
    max.extend_from_slice(b"\r\n");
    assert_eq!(complete(&max).len, V1_MAX);
}

#[test]
fn v2_local_honours_its_length_and_ignores_its_addresses() {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x11, 0, 12]);
    h.extend_from_slice(&[9; 12]);
    h.extend_from_slice(b"data");
    let header = complete(&h);
    assert_eq!((header.addresses, header.len), (None, 28));
}

/// DGRAM (UDP) headers: the transport nibble 2 (`\x12`, `\x22`), and otherwise the bytes of
/// the STREAM header for the same addresses; they parse back, and mixed families are LOCAL.
#[test]
fn v2_datagram_headers_name_udp() {
    let client = v4([192, 0, 2, 1], 51234);
    let listener = v4([198, 51, 100, 7], 53);
    let h = encode_v2_datagram(client, listener);
    let mut expected = V2_SIGNATURE.to_vec();
    expected.extend_from_slice(&[0x21, 0x12, 0, 12, 192, 0, 2, 1, 198, 51, 100, 7]);
    expected.extend_from_slice(&[0xc8, 0x22, 0, 53]);
    assert_eq!(h, expected);
    assert_eq!(h.len(), 28);
    let mut stream = encode_v2(client, listener);
    stream[13] = 0x12;
    assert_eq!(h, stream, "only the transport differs from STREAM");
    prefixes_are_incomplete(&h);
    let parsed = complete(&[h.as_slice(), b"payload"].concat());
    assert_eq!(parsed.addresses, Some((client, listener)));
    assert_eq!(parsed.len, 28);

    let client: SocketAddr = "[2001:db8::1]:5353".parse().expect("literal");
    let listener: SocketAddr = "[2001:db8::53]:53".parse().expect("literal");
    let h = encode_v2_datagram(client, listener);
    assert_eq!((h.len(), h[12], h[13], h[15]), (52, 0x21, 0x22, 36));
    assert_eq!(
        &h[16..32],
        &Ipv6Addr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]).octets()
    );
    assert_eq!(complete(&h).addresses, Some((client, listener)));
    assert_eq!(
        encode_v2_over(Transport::Datagram, client, listener),
        h,
        "the same encoder"
    );

    let mixed = encode_v2_datagram(v4([192, 0, 2, 1], 1), listener);
    assert_eq!(mixed, encode_unknown(ProxyVersion::V2));
}

#[test]
fn v2_rejects_what_the_specification_forbids() {
    let with = |b12: u8, b13: u8, len: u16, rest: &[u8]| {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[b12, b13]);
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(rest);
        h
    };
    assert_eq!(
        parse(&with(0x11, 0x11, 12, &[0; 12])),
        Err(Invalid::V2Version)
    );
    assert_eq!(
        parse(&with(0x22, 0x11, 12, &[0; 12])),
        Err(Invalid::V2Command)
    );
    assert_eq!(
        parse(&with(0x21, 0x41, 12, &[0; 12])),
        Err(Invalid::V2Family)
    );
    assert_eq!(
        parse(&with(0x21, 0x13, 12, &[0; 12])),
        Err(Invalid::V2Family)
    );
    assert_eq!(
        parse(&with(0x21, 0x11, 11, &[0; 11])),
        Err(Invalid::V2Length)
    );
    assert_eq!(
        parse(&with(0x21, 0x21, 12, &[0; 12])),
        Err(Invalid::V2Length)
    );
    // A TLV running past the end, and one cut short.
    assert_eq!(
        parse(&with(
            0x21,
            0x11,
            16,
            &[[0; 12].as_slice(), &[0x05, 0, 9, 1]].concat()
        )),
        Err(Invalid::V2Tlv)
    );
    assert_eq!(
        parse(&with(
            0x21,
            0x11,
            14,
            &[[0; 12].as_slice(), &[0x05, 0]].concat()
        )),
        Err(Invalid::V2Tlv)
    );
    assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(Invalid::NoHeader));
}

#[test]
fn v2_crc32c_is_verified() {
    let mut h = encode_v2(v4([10, 0, 0, 1], 1000), v4([10, 0, 0, 2], 80));
    // Append a CRC32C TLV and a NOOP, and fix up the length.
    h.extend_from_slice(&[TLV_CRC32C, 0, 4, 0, 0, 0, 0, 0x04, 0, 1, 0xaa]);
    let body = (h.len() - V2_FIXED) as u16;
    h[14..16].copy_from_slice(&body.to_be_bytes());
    let crc = crc32c::crc32c(&h);
    let at = V2_FIXED + 12 + 3;
    h[at..at + 4].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(complete(&h).len, h.len());
    h[at] ^= 1;
    assert_eq!(parse(&h), Err(Invalid::V2Checksum));
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| v4(ip, port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
        }),
    ]
}

proptest! {
    #[test]
    fn encoded_headers_parse_back(src in socket_addr(), dst in socket_addr(), tail in prop::collection::vec(any::<u8>(), 0..32)) {
        let same_family = src.is_ipv4() == dst.is_ipv4();
        for (header, version) in [(encode_v1(src, dst).into_bytes(), 1), (encode_v2(src, dst), 2)] {
            let max = if version == 1 { V1_MAX } else { V2_MAX };
            prop_assert!(header.len() <= max);
            prefixes_are_incomplete(&header);
            let bytes = [header.as_slice(), &tail].concat();
            let parsed = complete(&bytes);
            prop_assert_eq!(parsed.version, version);
            prop_assert_eq!(parsed.len, header.len());
            prop_assert_eq!(parsed.addresses, same_family.then_some((src, dst)));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_complete_headers_fit(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Parsed::Complete(h)) = parse(&bytes) {
            prop_assert!(h.len <= bytes.len());
        }
    }
}
