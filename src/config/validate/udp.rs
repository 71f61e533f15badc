//! Validation of UDP: a listener's `protocol`, what a UDP listener may hold (`name`, `bind`,
//! `pool`; every other listener key is TCP's), and a pool's flow keys (`udp_idle_timeout`,
//! `udp_responses`, `udp_max_flows`), which only UDP listeners read, and the `send_proxy` a
//! pool a UDP listener uses may have (`"v2"`, not `"v1"`).

use std::ops::Range;

use super::super::connection::{Zero, duration};
use super::super::defaults::*;
use super::super::duration::format_duration;
use super::super::limits::*;
use super::super::raw::*;
use super::super::{Source, UdpFlows, UdpListener};
use super::{Result, int};

/// Whether listener `l` is a UDP listener (`protocol = "udp"`; left out, TCP).
pub(super) fn is_udp(l: &RawListener) -> bool {
    l.protocol
        .as_ref()
        .is_some_and(|p| *p.get_ref() == ProtocolName::Udp)
}

/// Pool `p`'s `udp_idle_timeout` (above zero, at most [`MAX_UDP_IDLE_TIMEOUT`]),
/// `udp_responses` (1 to [`MAX_UDP_RESPONSES`]; left out, no limit) and `udp_max_flows` (1
/// to [`MAX_UDP_MAX_FLOWS`]). Read whether or not a UDP listener uses the pool, so that a
/// bad value is an error before it matters. `at` turns a key into its field path
/// (`pool[0].KEY`).
pub(super) fn flows(
    p: &RawPool,
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<UdpFlows> {
    let idle_timeout = duration(
        p.udp_idle_timeout.as_ref(),
        DEFAULT_UDP_IDLE_TIMEOUT,
        Zero::Refused,
        &at("udp_idle_timeout"),
        src,
    )?;
    if let Some(value) = p
        .udp_idle_timeout
        .as_ref()
        .filter(|_| idle_timeout > MAX_UDP_IDLE_TIMEOUT)
    {
        return Err(src.invalid(
            value.span(),
            at("udp_idle_timeout"),
            format!(
                "must be at most {}, got {:?}",
                format_duration(MAX_UDP_IDLE_TIMEOUT),
                value.get_ref()
            ),
        ));
    }
    let responses = p
        .udp_responses
        .as_ref()
        .map(|n| {
            int(
                Some(n),
                0u32,
                1,
                MAX_UDP_RESPONSES.into(),
                &at("udp_responses"),
                src,
            )
        })
        .transpose()
        .map_err(|e| super::with_hint(e, "leave udp_responses out for no limit on the replies"))?;
    let max_flows = int(
        p.udp_max_flows.as_ref(),
        DEFAULT_UDP_MAX_FLOWS,
        1,
        MAX_UDP_MAX_FLOWS.into(),
        &at("udp_max_flows"),
        src,
    )?;
    Ok(UdpFlows {
        idle_timeout,
        responses,
        max_flows,
    })
}

/// The keys of a `[[listener]]` that only a TCP listener reads, each with where it was
/// written, in the order of the text.
fn tcp_only_keys(l: &RawListener) -> Vec<(&'static str, Range<usize>)> {
    let span = |value: Option<Range<usize>>, key: &'static str| value.map(|s| (key, s));
    let mut keys: Vec<_> = [
        span(l.mode.as_ref().map(Spanned::span), "mode"),
        span(l.backlog.as_ref().map(Spanned::span), "backlog"),
        span(
            l.admission_rate.as_ref().map(Spanned::span),
            "admission_rate",
        ),
        span(
            l.admission_burst.as_ref().map(Spanned::span),
            "admission_burst",
        ),
        span(l.accept_proxy.as_ref().map(Spanned::span), "accept_proxy"),
        span(
            l.inspect_timeout.as_ref().map(Spanned::span),
            "inspect_timeout",
        ),
        span(l.sni_fallback.as_ref().map(Spanned::span), "sni_fallback"),
        span(l.routes.first().map(Spanned::span), "route"),
    ]
    .into_iter()
    .flatten()
    .collect();
    keys.sort_by_key(|(_, span)| span.start);
    keys
}

/// The UDP listener `l` on `bind`, named `name`, to pool index `pool`: an error at the first
/// key it holds that only TCP listeners read. `at` turns a key into its field path
/// (`listener[0].KEY`).
pub(super) fn listener(
    l: &RawListener,
    name: String,
    bind: std::net::SocketAddr,
    pool: usize,
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<UdpListener> {
    if let Some((key, span)) = tcp_only_keys(l).into_iter().next() {
        let written = if key == "route" {
            "[[listener.route]]".to_owned()
        } else {
            format!("`{key}`")
        };
        return Err(src.invalid(
            span,
            at(key),
            format!(
                "{written} is for TCP listeners; this listener has protocol = \"udp\" (a UDP \
                 listener takes name, bind, pool, protocol, rcvbuf and freebind, and its pool's udp_* \
                 keys)"
            ),
        ));
    }
    let rcvbuf = super::tuning::size(
        l.rcvbuf.as_ref(),
        DEFAULT_UDP_RCVBUF,
        MIN_UDP_RCVBUF,
        MAX_UDP_RCVBUF,
        &at("rcvbuf"),
        src,
    )?;
    Ok(UdpListener {
        name,
        bind,
        pool,
        rcvbuf,
        freebind: l.freebind.as_ref().is_some_and(|f| *f.get_ref()),
    })
}

/// An error when pool `p` (index `i`), used by the UDP listener `user`, or any of its
/// backends has `send_proxy = "v1"`: v1 is a line of text that names TCP only (`TCP4`,
/// `TCP6`) and has no form for datagrams. `"v2"` is allowed: its header names UDP (DGRAM)
/// and goes ahead of every datagram.
pub(super) fn no_send_proxy_v1(p: &RawPool, i: usize, user: &str, src: &Source<'_>) -> Result<()> {
    let v1 = |v: &&Spanned<ProxyName>| *v.get_ref() == ProxyName::V1;
    let written = p
        .send_proxy
        .as_ref()
        .filter(v1)
        .map(|v| (v.span(), format!("pool[{i}].send_proxy")))
        .or_else(|| {
            p.backends.iter().enumerate().find_map(|(j, b)| {
                b.get_ref()
                    .send_proxy
                    .as_ref()
                    .filter(v1)
                    .map(|v| (v.span(), format!("pool[{i}].backend[{j}].send_proxy")))
            })
        });
    match written {
        None => Ok(()),
        Some((span, field)) => Err(src.invalid(
            span,
            field,
            format!(
                "send_proxy \"v1\" has no form for UDP: pool {:?} is used by the UDP listener \
                 {user:?}; use \"v2\", whose header names UDP and goes ahead of every datagram, \
                 or give that listener a pool of its own",
                p.name.get_ref().trim()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_defaults_pass_their_own_checks() {
        assert!(!DEFAULT_UDP_IDLE_TIMEOUT.is_zero());
        assert!(DEFAULT_UDP_IDLE_TIMEOUT <= MAX_UDP_IDLE_TIMEOUT);
        assert!((1..=MAX_UDP_MAX_FLOWS).contains(&DEFAULT_UDP_MAX_FLOWS));
        assert_eq!(
            UdpFlows::default(),
            UdpFlows {
                idle_timeout: DEFAULT_UDP_IDLE_TIMEOUT,
                responses: None,
                max_flows: DEFAULT_UDP_MAX_FLOWS,
            }
        );
    }
}
