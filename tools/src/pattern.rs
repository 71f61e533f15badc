//! The deterministic byte pattern that the source backend writes and load payloads are cut from.

use std::sync::OnceLock;

/// The pattern repeats every `PERIOD` bytes; a prime, so it never lines up with buffer sizes.
pub const PERIOD: usize = 251;

/// The largest slice [`slice_at`] returns, and so the largest single write from the pattern.
pub const CHUNK: usize = 64 * 1024;

/// The byte at stream offset `offset`.
pub fn byte_at(offset: u64) -> u8 {
    // The remainder is below PERIOD (251), so it always fits in a u8.
    u8::try_from(offset % PERIOD as u64).unwrap_or(0)
}

/// A slice of up to `max` (capped at [`CHUNK`]) pattern bytes that starts at stream offset
/// `offset`, so a writer can send the pattern without copying it.
pub fn slice_at(offset: u64, max: usize) -> &'static [u8] {
    static BUF: OnceLock<Vec<u8>> = OnceLock::new();
    // One period longer than a chunk so that any start offset has a full chunk after it.
    let buf = BUF.get_or_init(|| (0..(PERIOD + CHUNK) as u64).map(byte_at).collect());
    let start = usize::try_from(offset % PERIOD as u64).unwrap_or(0);
    &buf[start..start + max.min(CHUNK)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_agree_with_bytes() {
        for off in [0u64, 1, 250, 251, 1_000_003] {
            let s = slice_at(off, 600);
            assert_eq!(s.len(), 600);
            for (i, b) in s.iter().enumerate() {
                assert_eq!(*b, byte_at(off + i as u64));
            }
        }
        assert_eq!(slice_at(7, usize::MAX).len(), CHUNK);
    }
}
