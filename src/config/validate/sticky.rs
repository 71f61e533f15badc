//! Validation of sticky sessions: a pool's `affinity` (`"none"` or `"source"`), and the keys
//! of its table, `affinity_ttl` and `affinity_max_entries`.
//!
//! (Not to be confused with [`super::super::affinity`], the process's CPU affinity mask.)

use super::super::connection::{Zero, duration};
use super::super::defaults::*;
use super::super::duration::format_duration;
use super::super::limits::*;
use super::super::raw::*;
use super::super::{Affinity, Source};
use super::{Result, int};

/// Pool `p`'s sticky sessions, if it has them: `affinity = "source"` with `affinity_ttl`
/// (above zero, at most [`MAX_AFFINITY_TTL`]) and `affinity_max_entries` (1 to
/// [`MAX_AFFINITY_MAX_ENTRIES`]). Either key without `affinity = "source"` is an error rather
/// than ignored, so that a file never looks sticky when it is not; `at` turns a key into its
/// field path (`pool[0].KEY`).
pub(super) fn affinity(
    p: &RawPool,
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<Option<Affinity>> {
    let written = p.affinity.as_ref().map(|a| *a.get_ref());
    if written != Some(AffinityName::Source) {
        let stray = [
            ("affinity_ttl", p.affinity_ttl.as_ref().map(Spanned::span)),
            (
                "affinity_max_entries",
                p.affinity_max_entries.as_ref().map(Spanned::span),
            ),
        ];
        if let Some((key, span)) = stray
            .into_iter()
            .find_map(|(key, span)| span.map(|s| (key, s)))
        {
            let why = if written.is_some() {
                "affinity is \"none\""
            } else {
                "affinity is left out (\"none\")"
            };
            return Err(src.invalid(
                span,
                at(key),
                format!("needs affinity = \"source\": {why}, so no client is remembered"),
            ));
        }
        return Ok(None);
    }
    let ttl = duration(
        p.affinity_ttl.as_ref(),
        DEFAULT_AFFINITY_TTL,
        Zero::Refused,
        &at("affinity_ttl"),
        src,
    )?;
    if let Some(value) = p.affinity_ttl.as_ref().filter(|_| ttl > MAX_AFFINITY_TTL) {
        return Err(src.invalid(
            value.span(),
            at("affinity_ttl"),
            format!(
                "must be at most {}, got {:?}",
                format_duration(MAX_AFFINITY_TTL),
                value.get_ref()
            ),
        ));
    }
    let max_entries = int(
        p.affinity_max_entries.as_ref(),
        DEFAULT_AFFINITY_MAX_ENTRIES,
        1,
        MAX_AFFINITY_MAX_ENTRIES.into(),
        &at("affinity_max_entries"),
        src,
    )?;
    Ok(Some(Affinity { ttl, max_entries }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pool `keys` (lines of TOML after its name and one backend) validated as `pool[0]`.
    fn pool(keys: &str) -> std::result::Result<Option<Affinity>, String> {
        let text = format!("name = \"web\"\n{keys}\n[[backend]]\naddress = \"127.0.0.1:9001\"\n");
        let raw: RawPool = toml::from_str(&text).expect("a pool table");
        let src = Source {
            origin: "t.toml",
            text: &text,
        };
        affinity(&raw, &|leaf| format!("pool[0].{leaf}"), &src).map_err(|e| e.to_string())
    }

    #[test]
    fn the_affinity_defaults_pass_their_own_checks() {
        assert!(!DEFAULT_AFFINITY_TTL.is_zero());
        assert!(DEFAULT_AFFINITY_TTL <= MAX_AFFINITY_TTL);
        const { assert!(1 <= DEFAULT_AFFINITY_MAX_ENTRIES) };
        const { assert!(DEFAULT_AFFINITY_MAX_ENTRIES <= MAX_AFFINITY_MAX_ENTRIES) };
        assert_eq!(format_duration(MAX_AFFINITY_TTL), "24h");
    }

    #[test]
    fn source_fills_in_the_defaults_and_none_is_off() {
        let defaults = Affinity {
            ttl: DEFAULT_AFFINITY_TTL,
            max_entries: DEFAULT_AFFINITY_MAX_ENTRIES,
        };
        assert_eq!(pool("affinity = \"source\""), Ok(Some(defaults)));
        assert_eq!(pool("affinity = \"none\""), Ok(None));
        assert_eq!(pool(""), Ok(None));
        let both = "affinity = \"source\"\naffinity_ttl = \"24h\"\naffinity_max_entries = 1";
        assert_eq!(
            pool(both),
            Ok(Some(Affinity {
                ttl: MAX_AFFINITY_TTL,
                max_entries: 1,
            }))
        );
    }

    #[test]
    fn the_table_keys_need_source_and_are_bounded() {
        for (keys, expected) in [
            (
                "affinity_ttl = \"5m\"",
                "t.toml:2:16: pool[0].affinity_ttl: needs affinity = \"source\": affinity is \
                 left out",
            ),
            (
                "affinity = \"none\"\naffinity_max_entries = 10",
                "t.toml:3:24: pool[0].affinity_max_entries: needs affinity = \"source\": \
                 affinity is \"none\"",
            ),
            (
                "affinity = \"source\"\naffinity_ttl = \"0s\"",
                "t.toml:3:16: pool[0].affinity_ttl: must be longer than zero",
            ),
            (
                "affinity = \"source\"\naffinity_ttl = \"25h\"",
                "t.toml:3:16: pool[0].affinity_ttl: must be at most 24h, got \"25h\"",
            ),
            (
                "affinity = \"source\"\naffinity_max_entries = 0",
                "t.toml:3:24: pool[0].affinity_max_entries: must be between 1 and 16777216",
            ),
        ] {
            let message = pool(keys).expect_err(keys);
            assert!(message.starts_with(expected), "{message:?}");
        }
    }
}
