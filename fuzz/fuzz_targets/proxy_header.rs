//! The PROXY protocol parser (`ringlb::core::proxy_header::parse`) on arbitrary bytes.
//!
//! Not only "no panic": every input is checked against the parser's contract.
//! - A complete header fits in the input and within the version's maximum, starts with its
//!   version's prefix, and parses the same on its own and with more bytes after it.
//! - An incomplete one asks for more bytes than it has, never more than a header can take.
//! - An invalid one stays invalid, with the same reason, whatever follows it.
//! - A reader that reads exactly what the parser asks for, as the engines do, reaches the
//!   same verdict as one that has every byte at once, and is never asked for bytes past the
//!   end of a header. On inputs of up to 256 bytes every prefix is checked the same way.
//! - The addresses of a complete header, encoded by ringlb's own encoders (v1 and v2), parse
//!   back to the same addresses; a TCP4 v1 line has one spelling, so it is re-encoded to the
//!   very bytes it was parsed from.
//! - The `ppp` crate, an independent implementation, reads a header ringlb accepts to the
//!   same version, length and addresses, except where ppp departs from the specification
//!   ([`ppp_departs`]). Not the other way round: ppp is more lenient in places, which
//!   `src/core/proxy_header/ppp_tests.rs` lists.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use ppp::v2::Command;
use ppp::{HeaderResult, v1, v2};
use ringlb::core::proxy_header::{
    Invalid, Parsed, ProxyHeader, ProxyVersion, V1_MAX, V2_FIXED, V2_MAX, V2_SIGNATURE, encode,
    encode_unknown, encode_v1, parse,
};

/// Inputs up to this long also have every prefix checked.
const ALL_PREFIXES_UP_TO: usize = 256;

fuzz_target!(|data: &[u8]| check(data));

fn check(data: &[u8]) {
    let whole = parse(data);
    match whole {
        Ok(Parsed::Complete(h)) => complete(data, h),
        Ok(Parsed::Incomplete { needed }) => {
            assert!(needed > data.len(), "needed {needed} of {}", data.len());
            assert!(needed <= V2_MAX, "needed {needed}");
            if data.first() == Some(&b'P') {
                assert!(needed <= V1_MAX, "v1 needed {needed}");
            }
        }
        Err(why) => {
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"\r\n\r\nmore");
            assert_eq!(
                parse(&longer),
                Err(why),
                "invalid, then valid after more bytes"
            );
        }
    }
    incremental_reader_agrees(data, whole);
    if data.len() <= ALL_PREFIXES_UP_TO {
        prefixes_agree(data, whole);
    }
}

/// A complete header `h` at the start of `data`.
fn complete(data: &[u8], h: ProxyHeader) {
    assert!(
        h.len <= data.len(),
        "header of {} in {} bytes",
        h.len,
        data.len()
    );
    let header = &data[..h.len];
    match h.version {
        1 => {
            assert!(header.starts_with(b"PROXY ") && header.ends_with(b"\r\n"));
            assert!(h.len <= V1_MAX, "v1 of {}", h.len);
        }
        2 => {
            assert!(header.starts_with(&V2_SIGNATURE));
            assert!(h.len >= V2_FIXED && h.len <= V2_MAX, "v2 of {}", h.len);
        }
        v => panic!("version {v}"),
    }
    // The header alone, and with any bytes after it, is the same header.
    assert_eq!(parse(header), Ok(Parsed::Complete(h)));
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"PROXY \r\n\r\n\0\r\nQUIT\n");
    assert_eq!(parse(&longer), Ok(Parsed::Complete(h)));

    match h.addresses {
        Some((source, destination)) => {
            assert_eq!(
                source.is_ipv4(),
                destination.is_ipv4(),
                "mixed families: {h:?}"
            );
            for version in [ProxyVersion::V1, ProxyVersion::V2] {
                let encoded = encode(version, source, destination);
                let again = parse(&encoded);
                let Ok(Parsed::Complete(back)) = again else {
                    panic!("{version:?} of {h:?} parses to {again:?}");
                };
                assert_eq!(back.len, encoded.len());
                assert_eq!(back.addresses, h.addresses, "{version:?} of {h:?}");
            }
            if h.version == 1 && source.is_ipv4() {
                assert_eq!(
                    encode_v1(source, destination).as_bytes(),
                    header,
                    "TCP4 spelt another way"
                );
            }
        }
        None => {
            for version in [ProxyVersion::V1, ProxyVersion::V2] {
                let encoded = encode_unknown(version);
                let again = parse(&encoded);
                assert!(
                    matches!(again, Ok(Parsed::Complete(back)) if back.addresses.is_none()),
                    "{version:?} unknown: {again:?}"
                );
            }
        }
    }
    ppp_agrees(header, h);
}

/// Feeds the parser `data` the way an engine does: only as many bytes as it asks for, until
/// it decides or the input runs out; the verdict must be the one on all of `data`.
fn incremental_reader_agrees(data: &[u8], whole: Result<Parsed, Invalid>) {
    let mut have = 0;
    loop {
        let step = parse(&data[..have]);
        match step {
            Ok(Parsed::Incomplete { needed }) => {
                assert!(needed > have, "{have} bytes ask for {needed}");
                if let Ok(Parsed::Complete(h)) = whole {
                    assert!(needed <= h.len, "{have} bytes ask for {needed} of {h:?}");
                }
                if needed > data.len() {
                    // Out of input: all of it is not a header (it may be invalid already),
                    // and asks for no fewer bytes.
                    assert!(
                        match whole {
                            Ok(Parsed::Complete(_)) => false,
                            Ok(Parsed::Incomplete { needed: n }) => n >= needed,
                            Err(_) => true,
                        },
                        "asked for {needed} after {have}, but all {} give {whole:?}",
                        data.len()
                    );
                    return;
                }
                have = needed;
            }
            decided => {
                assert_eq!(decided, whole, "read {have} of {} bytes", data.len());
                return;
            }
        }
    }
}

/// Every strict prefix of `data`: an invalid one makes `data` invalid for the same reason, an
/// incomplete one asks for more than it has but not past the end of the header in `data`,
/// and a complete one is the header of `data` (bytes after a header do not change it).
fn prefixes_agree(data: &[u8], whole: Result<Parsed, Invalid>) {
    for n in 0..data.len() {
        match parse(&data[..n]) {
            Err(why) => assert_eq!(whole, Err(why), "prefix of {n}"),
            Ok(Parsed::Incomplete { needed }) => {
                assert!(needed > n, "prefix of {n}: {needed}");
                // Never asks for bytes after a header: a client waiting for the answer
                // would wait forever.
                if let Ok(Parsed::Complete(h)) = whole {
                    assert!(needed <= h.len, "prefix of {n} asks for {needed} of {h:?}");
                }
            }
            Ok(Parsed::Complete(h)) => {
                assert_eq!(whole, Ok(Parsed::Complete(h)), "prefix of {n}");
            }
        }
    }
}

/// ppp's reading of a header ringlb accepted: the same version, length and addresses, but
/// where ppp departs from `doc/proxy-protocol.txt` (see [`ppp_departs`]).
fn ppp_agrees(header: &[u8], h: ProxyHeader) {
    if ppp_departs(header, h) {
        return;
    }
    let result = HeaderResult::parse(header);
    let theirs = match &result {
        HeaderResult::V1(Ok(p)) => Some((
            1,
            p.header.len(),
            match p.addresses {
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
        )),
        // LOCAL carries no addresses whatever its address block says.
        HeaderResult::V2(Ok(p)) => Some((
            2,
            p.len(),
            match (p.command, p.addresses) {
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
        )),
        _ => None,
    };
    assert_eq!(
        theirs,
        Some((h.version, h.len, h.addresses)),
        "ringlb: {h:?}\nppp: {result:?}"
    );
}

fn pair(
    src: std::net::IpAddr,
    sport: u16,
    dst: std::net::IpAddr,
    dport: u16,
) -> (SocketAddr, SocketAddr) {
    (SocketAddr::new(src, sport), SocketAddr::new(dst, dport))
}

/// The headers ringlb accepts as the specification says and ppp rejects.
fn ppp_departs(header: &[u8], h: ProxyHeader) -> bool {
    // ppp splits a v1 line into at most 7 fields at spaces and CRs, and finds no CRLF in
    // the last one when an UNKNOWN line has more; 2.1: with UNKNOWN "the receiver must
    // ignore anything presented before the CRLF is found".
    let separators = header.iter().filter(|&&b| b == b' ' || b == b'\r').count();
    h.version == 1 && h.addresses.is_none() && separators >= 7
}
