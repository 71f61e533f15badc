//! Ranges of loopback source addresses that client sockets are bound to, round-robin.
//!
//! Binding to many 127.x addresses emulates many clients (so hash-based balancing sees
//! variety) and multiplies the ephemeral ports available towards one target.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Why a source range string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceRangeError {
    /// A part of the range is not an IPv4 address.
    #[error("not an IPv4 address: {0:?}")]
    BadAddress(String),
    /// The prefix length after `/` is not a number in 8..=32.
    #[error("bad prefix length {0:?} (expected 8..=32)")]
    BadPrefix(String),
    /// The range leaves 127.0.0.0/8; traffic must stay on loopback.
    #[error("source range must lie within 127.0.0.0/8: {0}")]
    NotLoopback(String),
    /// The first address of a `a-b` range is after the last.
    #[error("empty range: {0}")]
    Empty(String),
}

/// An inclusive range of IPv4 loopback addresses.
///
/// Parses `127.1.0.1-127.1.0.250`, a CIDR block such as `127.2.0.0/24` (network and
/// broadcast addresses excluded for prefixes up to /30), or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRange {
    first: u32,
    count: u32,
}

impl SourceRange {
    /// A range of `count` addresses starting at `first`; `None` if it is empty or leaves
    /// 127.0.0.0/8.
    pub fn new(first: Ipv4Addr, count: u32) -> Option<Self> {
        let start = u32::from(first);
        let last = start.checked_add(count.checked_sub(1)?)?;
        (is_loopback(start) && is_loopback(last)).then_some(Self {
            first: start,
            count,
        })
    }

    /// The number of addresses in the range (at least 1).
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Always false: a range holds at least one address (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `index`-th address, wrapping around so any index is valid (round-robin).
    pub fn get(&self, index: u64) -> Ipv4Addr {
        let off = u32::try_from(index % u64::from(self.count)).unwrap_or(0);
        Ipv4Addr::from(self.first + off)
    }
}

fn is_loopback(ip: u32) -> bool {
    ip >> 24 == 127
}

fn parse_ip(s: &str) -> Result<u32, SourceRangeError> {
    Ipv4Addr::from_str(s.trim())
        .map(u32::from)
        .map_err(|_| SourceRangeError::BadAddress(s.to_string()))
}

impl FromStr for SourceRange {
    type Err = SourceRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (first, last) = if let Some((a, b)) = s.split_once('-') {
            (parse_ip(a)?, parse_ip(b)?)
        } else if let Some((a, p)) = s.split_once('/') {
            let base = parse_ip(a)?;
            let prefix: u32 = p
                .trim()
                .parse()
                .ok()
                .filter(|p| (8..=32).contains(p))
                .ok_or_else(|| SourceRangeError::BadPrefix(p.to_string()))?;
            let host_bits = 32 - prefix;
            let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
            let net = base & mask;
            let bcast = net | !mask;
            // Skip network and broadcast addresses where the block has room for hosts.
            if host_bits >= 2 {
                (net + 1, bcast - 1)
            } else {
                (net, bcast)
            }
        } else {
            let ip = parse_ip(s)?;
            (ip, ip)
        };
        if !is_loopback(first) || !is_loopback(last) {
            return Err(SourceRangeError::NotLoopback(s.to_string()));
        }
        if first > last {
            return Err(SourceRangeError::Empty(s.to_string()));
        }
        Ok(Self {
            first,
            count: last - first + 1,
        })
    }
}

impl fmt::Display for SourceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = Ipv4Addr::from(self.first + (self.count - 1));
        write!(f, "{}-{}", Ipv4Addr::from(self.first), last)
    }
}

impl Serialize for SourceRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let r: SourceRange = "127.1.0.1-127.1.0.250".parse().unwrap();
        assert_eq!(r.len(), 250);
        assert_eq!(r.get(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(r.get(250), Ipv4Addr::new(127, 1, 0, 1));
        let c: SourceRange = "127.2.0.0/24".parse().unwrap();
        assert_eq!(c.len(), 254);
        assert_eq!(c.get(0), Ipv4Addr::new(127, 2, 0, 1));
        assert_eq!(c.to_string(), "127.2.0.1-127.2.0.254");
        let one: SourceRange = "127.0.0.9".parse().unwrap();
        assert_eq!(one.len(), 1);
        let slash32: SourceRange = "127.0.0.9/32".parse().unwrap();
        assert_eq!(slash32, one);
    }

    #[test]
    fn rejects_bad_input() {
        assert!("10.0.0.1-10.0.0.5".parse::<SourceRange>().is_err());
        assert!("127.0.0.5-127.0.0.1".parse::<SourceRange>().is_err());
        assert!("127.0.0.0/4".parse::<SourceRange>().is_err());
        assert!("127.0.0.0/x".parse::<SourceRange>().is_err());
        assert!("nonsense".parse::<SourceRange>().is_err());
        assert!("127.255.255.255-128.0.0.1".parse::<SourceRange>().is_err());
        assert!(SourceRange::new(Ipv4Addr::new(127, 255, 255, 255), 2).is_none());
        assert!(SourceRange::new(Ipv4Addr::new(127, 0, 0, 1), 0).is_none());
    }
}
