//! Validation of what applies to every connection: `[timeouts]` and `[tcp]`.

use std::time::Duration;

use super::defaults::*;
use super::duration::parse_duration;
use super::error::{ConfigError, Source};
use super::limits::*;
use super::raw::{RawTcp, RawTimeouts, Spanned};
use super::validate::int;
use super::{Keepalive, KeepaliveProbes, SocketOptions, Tcp, Timeouts};

type Result<T> = std::result::Result<T, ConfigError>;

/// Whether a duration of zero is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Zero {
    Allowed,
    Refused,
}

/// A duration field parsed from its text, or `default` when absent.
pub(super) fn duration(
    value: Option<&Spanned<String>>,
    default: Duration,
    zero: Zero,
    field: &str,
    src: &Source<'_>,
) -> Result<Duration> {
    let Some(value) = value else {
        return Ok(default);
    };
    let d = parse_duration(value.get_ref())
        .map_err(|e| src.invalid(value.span(), field, e.to_string()))?;
    if d.is_zero() && zero == Zero::Refused {
        return Err(src.invalid(value.span(), field, "must be longer than zero"));
    }
    Ok(d)
}

pub(super) fn timeouts(raw: &RawTimeouts, src: &Source<'_>) -> Result<Timeouts> {
    let idle = duration(
        raw.idle.as_ref(),
        DEFAULT_IDLE_TIMEOUT,
        Zero::Refused,
        "timeouts.idle",
        src,
    )?;
    Ok(Timeouts {
        connect: duration(
            raw.connect.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
            Zero::Refused,
            "timeouts.connect",
            src,
        )?,
        idle,
        // Left out, the half-closed limits are the idle timeout (see `defaults`).
        client_fin: duration(
            raw.client_fin.as_ref(),
            idle,
            Zero::Refused,
            "timeouts.client_fin",
            src,
        )?,
        server_fin: duration(
            raw.server_fin.as_ref(),
            idle,
            Zero::Refused,
            "timeouts.server_fin",
            src,
        )?,
        // Zero is meaningful here: close everything at once on shutdown.
        shutdown_grace: duration(
            raw.shutdown_grace.as_ref(),
            DEFAULT_SHUTDOWN_GRACE,
            Zero::Allowed,
            "timeouts.shutdown_grace",
            src,
        )?,
    })
}

/// A keepalive time: whole seconds (the kernel counts them so), 1 s to 32767 s.
fn keepalive_secs(
    value: Option<&Spanned<String>>,
    default: Duration,
    field: &str,
    src: &Source<'_>,
) -> Result<Duration> {
    let d = duration(value, default, Zero::Refused, field, src)?;
    let ok = d.subsec_nanos() == 0 && (1..=MAX_KEEPALIVE_SECS).contains(&d.as_secs());
    match value {
        Some(value) if !ok => Err(src.invalid(
            value.span(),
            field,
            format!(
                "must be a whole number of seconds from 1s to {MAX_KEEPALIVE_SECS}s (the \
                 kernel counts keepalive times in seconds), got {:?}",
                value.get_ref()
            ),
        )),
        _ => Ok(d),
    }
}

pub(super) fn tcp(raw: &RawTcp, src: &Source<'_>) -> Result<Tcp> {
    let probes = KeepaliveProbes {
        idle: keepalive_secs(
            raw.keepalive_idle.as_ref(),
            DEFAULT_KEEPALIVE_IDLE,
            "tcp.keepalive_idle",
            src,
        )?,
        interval: keepalive_secs(
            raw.keepalive_interval.as_ref(),
            DEFAULT_KEEPALIVE_INTERVAL,
            "tcp.keepalive_interval",
            src,
        )?,
        count: int(
            raw.keepalive_count.as_ref(),
            DEFAULT_KEEPALIVE_COUNT,
            1,
            MAX_KEEPALIVE_COUNT.into(),
            "tcp.keepalive_count",
            src,
        )?,
    };
    let keepalive = |on: Option<bool>, default: bool| {
        if on.unwrap_or(default) {
            Keepalive::On(probes)
        } else {
            Keepalive::Off
        }
    };
    // Zero leaves the kernel's behaviour.
    let user_timeout = |value: Option<&Spanned<String>>, field: &str| {
        duration(value, DEFAULT_USER_TIMEOUT, Zero::Allowed, field, src)
            .map(|d| (!d.is_zero()).then_some(d))
    };
    Ok(Tcp {
        client: SocketOptions {
            keepalive: keepalive(raw.client_keepalive, DEFAULT_CLIENT_KEEPALIVE),
            user_timeout: user_timeout(
                raw.client_user_timeout.as_ref(),
                "tcp.client_user_timeout",
            )?,
        },
        server: SocketOptions {
            keepalive: keepalive(raw.server_keepalive, DEFAULT_SERVER_KEEPALIVE),
            user_timeout: user_timeout(
                raw.server_user_timeout.as_ref(),
                "tcp.server_user_timeout",
            )?,
        },
    })
}
