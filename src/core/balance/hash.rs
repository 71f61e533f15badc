//! The fixed hash functions behind source-IP hashing.
//!
//! Two ringlb nodes running active-active behind ECMP must send one client to the same backend,
//! so every hash here is a pure function of its input bytes: SipHash-1-3 (crate `siphasher`) with
//! fixed keys written below. The keys are the little-endian `u64`s of readable ASCII strings, so
//! they can be re-derived by hand. Changing any key, the hash function or the byte encoding of an
//! input moves clients between backends and must be treated as a breaking change (a unit test
//! pins known values).
//!
//! Never replace these with `ahash`, `RandomState` or anything seeded per process.

use std::net::IpAddr;

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// Key for hashing a client's address: `b"ringlb:c"`, `b"lient-v1"`.
pub const CLIENT_KEY: (u64, u64) = (
    u64::from_le_bytes(*b"ringlb:c"),
    u64::from_le_bytes(*b"lient-v1"),
);
/// Key for a backend's Maglev permutation offset: `b"ringlb:o"`, `b"ffset-v1"`.
pub const OFFSET_KEY: (u64, u64) = (
    u64::from_le_bytes(*b"ringlb:o"),
    u64::from_le_bytes(*b"ffset-v1"),
);
/// Key for a backend's Maglev permutation skip: `b"ringlb:s"`, `b"kip---v1"`.
pub const SKIP_KEY: (u64, u64) = (
    u64::from_le_bytes(*b"ringlb:s"),
    u64::from_le_bytes(*b"kip---v1"),
);

/// SipHash-1-3 of `bytes` under `key`, written as one message (no length prefix, unlike
/// `Hash for [u8]`), so the value does not depend on how Rust's `Hash` trait frames slices.
#[inline]
pub fn sip13(key: (u64, u64), bytes: &[u8]) -> u64 {
    SipHasher13::new_with_keys(key.0, key.1).hash(bytes)
}

/// The hash of a client: its address bytes only, never the port, so that every connection of one
/// client lands on the same backend. IPv4 hashes its 4 octets, IPv6 its 16; an IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`, as seen on a dual-stack socket) hashes as the IPv4 address, so a
/// client keeps its backend whichever socket family accepted it.
#[inline]
pub fn client_hash(client: IpAddr) -> u64 {
    // Fed as little-endian words rather than one slice: SipHash sees the identical byte stream
    // (so the value equals `sip13(CLIENT_KEY, &octets)`, which a test checks), but the hasher's
    // fixed-size writes avoid its generic slice loop and run about twice as fast for IPv6.
    let mut hasher = SipHasher13::new_with_keys(CLIENT_KEY.0, CLIENT_KEY.1);
    let v4 = match client {
        IpAddr::V4(v4) => v4.to_bits(),
        IpAddr::V6(v6) => {
            // The address as one big-endian number: `::ffff:a.b.c.d` is `0xffff` above 32 bits
            // of IPv4 address (what `to_ipv4_mapped` checks, in two instructions).
            let bits = v6.to_bits();
            if bits >> 32 == 0xffff {
                // Truncation on purpose: the low 32 bits are the IPv4 address.
                bits as u32
            } else {
                // Byte-swapped, the low word holds octets 0..8 in little-endian order.
                let words = bits.swap_bytes();
                // Truncations on purpose: low word, then high word.
                hasher.write_u64(words as u64);
                hasher.write_u64((words >> 64) as u64);
                return hasher.finish();
            }
        }
    };
    // `swap_bytes` of the big-endian address: little-endian octets 0..4, i.e. the octets in
    // order in the byte stream.
    hasher.write_u32(v4.swap_bytes());
    hasher.finish()
}

/// A backend's Maglev permutation `(offset, skip)` for a table of prime size `m`: offset in
/// `0..m`, skip in `1..m`. Both come from the backend's name only, so its preferences do not
/// depend on which other backends exist or in what order they were listed.
pub fn permutation(name: &str, m: u32) -> (u32, u32) {
    let m64 = u64::from(m.max(2));
    let offset = sip13(OFFSET_KEY, name.as_bytes()) % m64;
    let skip = sip13(SKIP_KEY, name.as_bytes()) % (m64 - 1) + 1;
    // Both are below `m`, which is a u32.
    (offset as u32, skip as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn keys_are_the_documented_strings() {
        assert_eq!(CLIENT_KEY.0.to_le_bytes(), *b"ringlb:c");
        assert_eq!(SKIP_KEY.1.to_le_bytes(), *b"kip---v1");
    }

    /// Pinned values, checked against an independent SipHash-1-3 implementation: a change here
    /// moves every client.
    #[test]
    fn known_hashes() {
        assert_eq!(sip13(CLIENT_KEY, b""), 0x9877_86f4_8e00_77d2);
        assert_eq!(
            client_hash(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            0x4196_99ff_a2e1_b3f3
        );
        let v6: Ipv6Addr = "2001:db8::1".parse().expect("literal address");
        assert_eq!(client_hash(IpAddr::V6(v6)), 0xbed3_8182_b567_cef9);
        // The word-wise feeding equals hashing the address bytes as one message.
        assert_eq!(client_hash(IpAddr::V6(v6)), sip13(CLIENT_KEY, &v6.octets()));
        let v4 = Ipv4Addr::new(203, 0, 113, 9);
        assert_eq!(client_hash(IpAddr::V4(v4)), sip13(CLIENT_KEY, &v4.octets()));
        assert_eq!(permutation("a", 65_537), (60_802, 17_061));
        assert_eq!(permutation("e", 65_537), (16_825, 33_250));
    }

    #[test]
    fn word_feeding_equals_hashing_the_octets() {
        let mut rng = crate::core::balance::SplitMix64::new(42);
        for _ in 0..1000 {
            let bits = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
            let v6 = Ipv6Addr::from_bits(bits);
            let v4 = Ipv4Addr::from_bits(bits as u32);
            assert_eq!(client_hash(IpAddr::V6(v6)), sip13(CLIENT_KEY, &v6.octets()));
            assert_eq!(client_hash(IpAddr::V4(v4)), sip13(CLIENT_KEY, &v4.octets()));
        }
    }

    #[test]
    fn mapped_v6_hashes_as_v4() {
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(
            client_hash(IpAddr::V4(v4)),
            client_hash(IpAddr::V6(v4.to_ipv6_mapped()))
        );
        // A v4-compatible (not mapped) address is a different client.
        let compat = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0xc000, 0x0207);
        assert_ne!(client_hash(IpAddr::V4(v4)), client_hash(IpAddr::V6(compat)));
    }

    #[test]
    fn permutation_ranges_hold_for_tiny_tables() {
        for m in [0, 1, 2, 3, 7, 65_537] {
            for name in ["", "a", "backend-1"] {
                let (offset, skip) = permutation(name, m);
                let m = m.max(2);
                assert!(offset < m && (1..m).contains(&skip));
            }
        }
    }
}
