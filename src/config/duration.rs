//! Durations written as text: `"500ms"`, `"2s"`, `"1.5s"`, `"5m"`, `"1h"`.
//!
//! A number (with an optional decimal fraction) followed directly by one unit: `ms`, `s`, `m`
//! or `h`. A unit is always required, so `"30"` is rejected rather than guessed. Values are
//! exact to the nanosecond, and bounded by [`MAX_DURATION`].

use std::time::Duration;

/// The longest duration accepted: 7 days. Far beyond any sensible timeout, and it keeps
/// `Instant + timeout` arithmetic in the engines far away from overflow (which panics).
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a duration text was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("empty duration; expected a number and a unit, such as \"2s\" or \"500ms\"")]
    Empty,
    /// No unit after the number.
    #[error("{0:?} has no unit; expected one of ms, s, m, h (such as \"{0}s\")")]
    MissingUnit(String),
    /// An unknown unit.
    #[error("{text:?} has an unknown unit {unit:?}; expected one of ms, s, m, h")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// The number part is malformed.
    #[error("{0:?} is not a duration; expected a number and a unit, such as \"2s\" or \"1.5s\"")]
    BadNumber(String),
    /// More than [`MAX_DURATION`].
    #[error("{0:?} is too long; at most 7 days (\"168h\")")]
    TooLong(String),
}

/// Parses a duration such as `"500ms"` or `"1.5s"`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let unit_start = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(unit_start);
    if number.is_empty() {
        return Err(DurationError::BadNumber(trimmed.to_owned()));
    }
    let nanos_per_unit: u128 = match unit {
        "" => return Err(DurationError::MissingUnit(trimmed.to_owned())),
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3600 * 1_000_000_000,
        other => {
            return Err(DurationError::UnknownUnit {
                text: trimmed.to_owned(),
                unit: other.trim().to_owned(),
            });
        }
    };
    let bad = || DurationError::BadNumber(trimmed.to_owned());
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_ok(whole) || !digits_ok(fraction) {
        return Err(bad());
    }
    if number.ends_with('.') {
        return Err(bad());
    }
    let too_long = || DurationError::TooLong(trimmed.to_owned());
    // Anything above 7 days has at most 6 significant integer digits in any unit, so longer
    // digit strings are too long; this also keeps the u128 arithmetic below from overflowing.
    let whole = whole.trim_start_matches('0');
    if whole.len() > 12 {
        return Err(too_long());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    // Keep at most 18 fractional digits: finer than a nanosecond in every unit.
    let fraction = &fraction[..fraction.len().min(18)];
    let mut nanos = whole * nanos_per_unit;
    if !fraction.is_empty() {
        let numerator: u128 = fraction.parse().map_err(|_| bad())?;
        let denominator = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| bad())?);
        nanos += numerator * nanos_per_unit / denominator;
    }
    if nanos > MAX_DURATION.as_nanos() {
        return Err(too_long());
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    let subsec = u32::try_from(nanos % 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, subsec))
}

/// Writes a duration the way it would be written in the configuration, such as `"2s"`,
/// `"500ms"` or `"5m"`; the largest unit that represents it exactly is used.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let units: [(u128, &str); 4] = [
        (3600 * 1_000_000_000, "h"),
        (60 * 1_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (size, name) in units {
        if nanos % size == 0 {
            return format!("{}{name}", nanos / size);
        }
    }
    // Sub-millisecond precision: only reachable through "1.0000001s"-like text.
    format!("{}s", duration.as_secs_f64())
}
