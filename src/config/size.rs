//! Byte sizes written as text: `"262144"`, `"512B"`, `"256KiB"`, `"16MiB"`, `"1GiB"`.
//!
//! Only binary units are accepted (`B`, `KiB`, `MiB`, `GiB`), spelt exactly so: the kernel
//! sizes pipes and buffers in powers of two, and `"256KB"` would be ambiguous. A number alone
//! means bytes.

/// Why a size text was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The number part is missing or malformed.
    #[error("{0:?} is not a size; expected bytes such as 262144 or \"256KiB\"")]
    BadNumber(String),
    /// An unknown unit.
    #[error("{text:?} has an unknown unit {unit:?}; expected one of B, KiB, MiB, GiB")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// Does not fit in 64 bits.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a byte size such as `"256KiB"` into bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let trimmed = text.trim();
    let unit_start = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(unit_start);
    if number.is_empty() {
        return Err(SizeError::BadNumber(trimmed.to_owned()));
    }
    let multiplier: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(SizeError::UnknownUnit {
                text: trimmed.to_owned(),
                unit: other.to_owned(),
            });
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| SizeError::TooLarge(trimmed.to_owned()))?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| SizeError::TooLarge(trimmed.to_owned()))
}

/// Writes a byte count with the largest binary unit that represents it exactly, such as
/// `"256KiB"`; counts that are not a whole number of KiB are written as plain bytes.
pub fn format_size(bytes: u64) -> String {
    for (size, unit) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}
