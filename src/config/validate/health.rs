//! Validation of `[pool.health]`: which check, how often, and the keys that belong to it.
//!
//! `check` left out is `tcp`, as HAProxy's plain `check` is a connect check. A key that
//! belongs to another check than the one chosen is an error naming it, never ignored: a
//! `path` under a tcp check would otherwise look like an HTTP check that is not one.

use super::super::connection::{Zero, duration};
use super::super::defaults::*;
use super::super::duration::format_duration;
use super::super::limits::*;
use super::super::raw::*;
use super::super::{Check, Health, Source, StatusMatch};
use super::{Result, int};
use std::time::Duration;

/// The spelling of a check in the file, for messages and the summary.
fn check_name(check: CheckName) -> &'static str {
    match check {
        CheckName::Tcp => "tcp",
        CheckName::SendExpect => "send-expect",
        CheckName::Http => "http",
    }
}

/// One pool's `[pool.health]`; `at` turns a key into its field path (`pool[0].health.KEY`).
pub(super) fn health(
    raw: &Spanned<RawHealth>,
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<Health> {
    let h = raw.get_ref();
    let kind = h.check.as_ref().map_or(CheckName::Tcp, |c| *c.get_ref());
    foreign_keys(h, kind, at, src)?;
    let interval = duration(
        h.interval.as_ref(),
        DEFAULT_HEALTH_INTERVAL,
        Zero::Refused,
        &at("interval"),
        src,
    )?;
    if let Some(value) = h
        .interval
        .as_ref()
        .filter(|_| interval < MIN_HEALTH_INTERVAL)
    {
        return Err(src.invalid(
            value.span(),
            at("interval"),
            format!(
                "must be at least {}, got {:?}",
                format_duration(MIN_HEALTH_INTERVAL),
                value.get_ref()
            ),
        ));
    }
    // Left out, the timeout never exceeds a short interval: `interval = "500ms"` alone is fine.
    let timeout = duration(
        h.timeout.as_ref(),
        DEFAULT_HEALTH_TIMEOUT.min(interval),
        Zero::Refused,
        &at("timeout"),
        src,
    )?;
    if let Some(value) = h.timeout.as_ref().filter(|_| timeout > interval) {
        return Err(src.invalid(
            value.span(),
            at("timeout"),
            format!(
                "must be at most the interval ({}), got {:?}: a check ends before the next \
                 one begins",
                format_duration(interval),
                value.get_ref()
            ),
        ));
    }
    let max = MAX_HEALTH_RISE_FALL.into();
    let rise = int(
        h.rise.as_ref(),
        DEFAULT_HEALTH_RISE,
        1,
        max,
        &at("rise"),
        src,
    )?;
    let fall = int(
        h.fall.as_ref(),
        DEFAULT_HEALTH_FALL,
        1,
        max,
        &at("fall"),
        src,
    )?;
    let port = h
        .port
        .as_ref()
        .map(|p| int(Some(p), 0u16, 1, u16::MAX.into(), &at("port"), src))
        .transpose()?;
    let check = match kind {
        CheckName::Tcp => Check::Tcp,
        CheckName::SendExpect => send_expect(raw, at, src)?,
        CheckName::Http => Check::Http {
            path: path(h.path.as_ref(), &at("path"), src)?,
            expect: status_match(h.expect.as_ref(), &at("expect"), src)?,
        },
    };
    Ok(Health {
        check,
        interval,
        timeout,
        rise,
        fall,
        port,
    })
}

/// An error at the first key written that the chosen check does not take.
fn foreign_keys(
    h: &RawHealth,
    kind: CheckName,
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<()> {
    use CheckName::*;
    let keys = [
        (
            "send",
            &h.send,
            &[SendExpect][..],
            "check = \"send-expect\"",
        ),
        (
            "expect",
            &h.expect,
            &[SendExpect, Http][..],
            "check = \"send-expect\" or \"http\"",
        ),
        ("path", &h.path, &[Http][..], "check = \"http\""),
    ];
    for (key, value, owners, owners_text) in keys {
        if let Some(value) = value.as_ref().filter(|_| !owners.contains(&kind)) {
            return Err(src.invalid(
                value.span(),
                at(key),
                format!(
                    "{key} is only for {owners_text}, and this check is {:?}{}",
                    check_name(kind),
                    if h.check.is_none() {
                        " (the default)"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// `send` (may be empty or left out: nothing is sent and a banner is awaited) and `expect`
/// (required, a non-empty prefix of a healthy answer).
fn send_expect(
    raw: &Spanned<RawHealth>,
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<Check> {
    let h = raw.get_ref();
    let send = match &h.send {
        None => Vec::new(),
        Some(send) if send.get_ref().len() > MAX_HEALTH_SEND => {
            return Err(src.invalid(
                send.span(),
                at("send"),
                format!(
                    "is {} bytes long; at most {MAX_HEALTH_SEND}",
                    send.get_ref().len()
                ),
            ));
        }
        Some(send) => send.get_ref().as_bytes().to_vec(),
    };
    let Some(expect) = &h.expect else {
        return Err(src.invalid(
            raw.span(),
            at("expect"),
            "a send-expect check needs expect, the text a healthy answer starts with",
        ));
    };
    let len = expect.get_ref().len();
    if len == 0 || len > MAX_HEALTH_EXPECT {
        return Err(src.invalid(
            expect.span(),
            at("expect"),
            format!(
                "must be 1 to {MAX_HEALTH_EXPECT} bytes (the text a healthy answer starts \
                 with), got {len}"
            ),
        ));
    }
    Ok(Check::SendExpect {
        send,
        expect: expect.get_ref().as_bytes().to_vec(),
    })
}

/// An http check's path: it goes into the request line as written, so visible ASCII only.
fn path(value: Option<&Spanned<String>>, field: &str, src: &Source<'_>) -> Result<String> {
    let Some(value) = value else {
        return Ok(DEFAULT_HEALTH_PATH.to_owned());
    };
    let text = value.get_ref();
    let problem = if !text.starts_with('/') {
        "must start with \"/\", such as \"/healthz\""
    } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
        "must be visible ASCII without spaces or control characters (percent-encode others)"
    } else if text.len() > MAX_HEALTH_PATH {
        "is too long (at most 1024 bytes)"
    } else {
        return Ok(text.clone());
    };
    Err(src.invalid(value.span(), field, format!("{problem}, got {text:?}")))
}

/// An http check's `expect`: a class `"2xx"` (1xx to 5xx) or an exact code `"204"`.
fn status_match(
    value: Option<&Spanned<String>>,
    field: &str,
    src: &Source<'_>,
) -> Result<StatusMatch> {
    let parsed = match value {
        None => parse_status_match(DEFAULT_HEALTH_HTTP_EXPECT),
        Some(value) => parse_status_match(value.get_ref()),
    };
    match (parsed, value) {
        (Some(status), _) => Ok(status),
        (None, Some(value)) => Err(src.invalid(
            value.span(),
            field,
            format!(
                "expected a status class such as \"2xx\" (1xx to 5xx) or a status code such \
                 as \"204\" (100 to 599), got {:?}",
                value.get_ref()
            ),
        )),
        // The default parses; a test holds it to that.
        (None, None) => Ok(StatusMatch::Class(2)),
    }
}

/// `"2xx"` → `Class(2)`, `"204"` → `Exact(204)`; anything else `None`.
fn parse_status_match(text: &str) -> Option<StatusMatch> {
    let bytes = text.as_bytes();
    let [first, rest @ ..] = bytes else {
        return None;
    };
    if bytes.len() != 3 || !(b'1'..=b'5').contains(first) {
        return None;
    }
    let hundreds = u16::from(first - b'0');
    if rest.eq_ignore_ascii_case(b"xx") {
        return Some(StatusMatch::Class(hundreds));
    }
    if rest.iter().all(u8::is_ascii_digit) {
        let code = text.parse().ok()?;
        return Some(StatusMatch::Exact(code));
    }
    None
}

/// A pool's keys for backends that fail and come back: `slow_start`, `max_fails` and
/// `fail_timeout`.
pub(super) struct Recovery {
    pub slow_start: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// `slow_start` (zero: off), `max_fails` (0: no passive checks) and `fail_timeout` (above
/// zero) of pool `p`; `at` turns a key into its field path (`pool[0].KEY`).
pub(super) fn recovery(
    p: &RawPool,
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<Recovery> {
    Ok(Recovery {
        slow_start: duration(
            p.slow_start.as_ref(),
            DEFAULT_SLOW_START,
            Zero::Allowed,
            &at("slow_start"),
            src,
        )?,
        max_fails: int(
            p.max_fails.as_ref(),
            DEFAULT_MAX_FAILS,
            0,
            MAX_MAX_FAILS.into(),
            &at("max_fails"),
            src,
        )?,
        fail_timeout: duration(
            p.fail_timeout.as_ref(),
            DEFAULT_FAIL_TIMEOUT,
            Zero::Refused,
            &at("fail_timeout"),
            src,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_matches_parse() {
        for (text, parsed) in [
            ("2xx", StatusMatch::Class(2)),
            ("5XX", StatusMatch::Class(5)),
            ("204", StatusMatch::Exact(204)),
            ("599", StatusMatch::Exact(599)),
            ("100", StatusMatch::Exact(100)),
        ] {
            assert_eq!(parse_status_match(text), Some(parsed), "{text}");
        }
        assert_eq!(
            parse_status_match(DEFAULT_HEALTH_HTTP_EXPECT),
            Some(StatusMatch::Class(2))
        );
        for bad in [
            "", "2", "2x", "6xx", "0xx", "600", "099", "2xxx", "20x", "x2x", "+20",
        ] {
            assert_eq!(parse_status_match(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_default_times_pass_their_own_checks() {
        assert!(MIN_HEALTH_INTERVAL <= DEFAULT_HEALTH_INTERVAL);
        assert!(DEFAULT_HEALTH_TIMEOUT <= DEFAULT_HEALTH_INTERVAL);
    }
}
