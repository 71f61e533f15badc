//! Validation of what a listener reads from a client before it picks a backend: a PROXY
//! protocol header (`accept_proxy`), the TLS server name (`[[listener.route]]` and
//! `sni_fallback`), and how long the client may take to send them (`inspect_timeout`).

use std::net::IpAddr;
use std::time::Duration;

use super::super::connection::{Zero, duration};
use super::super::defaults::*;
use super::super::duration::format_duration;
use super::super::limits::*;
use super::super::raw::*;
use super::super::{Pool, Route, SniFallback, Source};
use super::{Result, Seen, pool_index};

/// The longest host name: RFC 1035's 255 bytes on the wire, 253 written with dots.
const MAX_NAME_LEN: usize = 253;
/// The longest label of a host name (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// A listener's inspect settings, validated.
pub(super) struct Inspect {
    pub(super) accept_proxy: bool,
    pub(super) inspect_timeout: Duration,
    pub(super) routes: Vec<Route>,
    pub(super) sni_fallback: SniFallback,
}

/// Listener `l`'s `accept_proxy` (default off), `inspect_timeout` (above zero, at most
/// [`MAX_INSPECT_TIMEOUT`]), `[[listener.route]]` tables and `sni_fallback` (only with
/// routes: without them the ClientHello is not read, so it would never apply). `at` turns a
/// key into its field path (`listener[0].KEY`).
pub(super) fn inspect(
    l: &RawListener,
    pools: &[Pool],
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<Inspect> {
    let inspect_timeout = duration(
        l.inspect_timeout.as_ref(),
        DEFAULT_INSPECT_TIMEOUT,
        Zero::Refused,
        &at("inspect_timeout"),
        src,
    )?;
    if let Some(value) = l
        .inspect_timeout
        .as_ref()
        .filter(|_| inspect_timeout > MAX_INSPECT_TIMEOUT)
    {
        return Err(src.invalid(
            value.span(),
            at("inspect_timeout"),
            format!(
                "must be at most {}, got {:?}",
                format_duration(MAX_INSPECT_TIMEOUT),
                value.get_ref()
            ),
        ));
    }
    let routes = routes(&l.routes, pools, at, src)?;
    let sni_fallback = match &l.sni_fallback {
        None => SniFallback::default(),
        Some(written) if routes.is_empty() => {
            return Err(src.invalid(
                written.span(),
                at("sni_fallback"),
                "sni_fallback applies only to a listener with [[listener.route]] tables: \
                 without routes the ClientHello is not read, and every client goes to the \
                 listener's pool",
            ));
        }
        Some(written) => sni_fallback(*written.get_ref()),
    };
    Ok(Inspect {
        accept_proxy: l.accept_proxy.as_ref().is_some_and(|v| *v.get_ref()),
        inspect_timeout,
        routes,
        sni_fallback,
    })
}

/// The model's fallback for a written name.
fn sni_fallback(name: SniFallbackName) -> SniFallback {
    match name {
        SniFallbackName::Default => SniFallback::Default,
        SniFallbackName::Close => SniFallback::Close,
    }
}

/// The `[[listener.route]]` tables of one listener: each `sni` a server name (stored in lower
/// case, unique within the listener), each `pool` a defined pool.
fn routes(
    raw: &[Spanned<RawRoute>],
    pools: &[Pool],
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<Vec<Route>> {
    let mut names = Seen::new(src);
    let mut routes = Vec::with_capacity(raw.len());
    for (j, route) in raw.iter().enumerate() {
        let route = route.get_ref();
        let field = |leaf: &str| at(&format!("route[{j}].{leaf}"));
        let sni = server_name(route.sni.get_ref())
            .map_err(|message| src.invalid(route.sni.span(), field("sni"), message))?;
        names.insert(sni.clone(), route.sni.span(), &field("sni"), "sni")?;
        let pool = pool_index(&route.pool, pools, &field("pool"), src)?;
        routes.push(Route { sni, pool });
    }
    Ok(routes)
}

/// `sni` as it is matched: in lower case, checked to be a host name a client can send in its
/// ClientHello (RFC 6066: ASCII, no trailing dot, no IP address), or `*.` followed by one for
/// every name under a domain. The reason otherwise.
///
/// A wildcard is held to the 253 bytes of a name as a whole: the shortest name it matches
/// (`a.` and its domain) is as long as it is.
pub(super) fn server_name(text: &str) -> std::result::Result<String, String> {
    let bad = |why: &str| Err(format!("bad server name {text:?}: {why}"));
    if text.is_empty() {
        return Err(
            "must not be empty; expected a host name such as \"api.example.com\" or a \
             wildcard such as \"*.example.com\""
                .to_owned(),
        );
    }
    if !text.is_ascii() {
        return bad(
            "not ASCII; write an internationalized name in its ASCII form (\"xn--\" labels), \
             as clients send it",
        );
    }
    let name = text.to_ascii_lowercase();
    let (wildcard, host) = match name.strip_prefix("*.") {
        Some(domain) => (true, domain),
        None => (false, name.as_str()),
    };
    if host.contains('*') {
        return bad(
            "a wildcard is \"*.\" followed by a domain, such as \"*.example.com\"; \"*\" is \
             allowed nowhere else",
        );
    }
    if wildcard && host.is_empty() {
        return bad("\"*.\" must be followed by a domain, such as \"*.example.com\"");
    }
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() {
        return bad(
            "an IP address, which a ClientHello never carries (RFC 6066): a client that \
             connects by address sends no server name",
        );
    }
    if host.ends_with('.') {
        return bad("ends with \".\"; write it without the trailing dot, as clients send it");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!(
            "{} bytes long; a host name is at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return bad("has an empty label (\"..\" or a leading \".\")");
        }
        if label.len() > MAX_LABEL_LEN {
            return bad(&format!(
                "the label {label:?} is {} bytes long; a label is at most {MAX_LABEL_LEN}",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return bad(&format!(
                "{c:?} is not allowed; a host name has letters, digits, \"-\" and \".\" \
                 between labels"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad(&format!("the label {label:?} starts or ends with \"-\""));
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str, why: &str) {
        let message = server_name(text).expect_err(text);
        assert!(message.contains(why), "{text:?}: {message}");
    }

    #[test]
    fn host_names_and_wildcards_are_lower_cased() {
        for (text, stored) in [
            ("API.Example.COM", "api.example.com"),
            ("localhost", "localhost"),
            ("a-b.x1.example", "a-b.x1.example"),
            ("*.Example.com", "*.example.com"),
            ("*.com", "*.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("1.2.3", "1.2.3"),
        ] {
            assert_eq!(server_name(text).as_deref(), Ok(stored), "{text}");
        }
    }

    #[test]
    fn lengths_are_bounded() {
        let label = "a".repeat(MAX_LABEL_LEN);
        assert!(server_name(&format!("{label}.example")).is_ok());
        refused(&format!("a{label}.example"), "at most 63");
        // 4 labels of 63 and 3 dots: 255.
        let long = [label.as_str(); 4].join(".");
        refused(&long, "at most 253");
        let longest = &long[..MAX_NAME_LEN];
        assert!(server_name(longest).is_ok(), "253 bytes");
        refused(&format!("*.{}", &long[..MAX_NAME_LEN - 1]), "at most 253");
    }

    #[test]
    fn what_is_not_a_host_name_is_refused() {
        refused("", "must not be empty");
        refused("bücher.example", "not ASCII");
        refused("example.com.", "trailing dot");
        refused("a..example", "empty label");
        refused(".example", "empty label");
        refused("-a.example", "starts or ends with");
        refused("a-.example", "starts or ends with");
        refused("a_b.example", "'_' is not allowed");
        refused("a b.example", "' ' is not allowed");
        refused("example.com:443", "':' is not allowed");
        refused("10.0.0.1", "an IP address");
        refused("::1", "an IP address");
        refused("[2001:db8::1]", "an IP address");
        refused("*.10.0.0.1", "an IP address");
    }

    #[test]
    fn a_wildcard_is_only_a_leading_label() {
        for text in [
            "*",
            "*example.com",
            "a*.example.com",
            "a.*.example.com",
            "*.*.example.com",
        ] {
            refused(text, "\"*\" is allowed nowhere else");
        }
        refused("*.", "must be followed by a domain");
        refused("*..example", "empty label");
    }

    #[test]
    fn the_inspect_defaults_pass_their_own_checks() {
        assert!(!DEFAULT_INSPECT_TIMEOUT.is_zero());
        assert!(DEFAULT_INSPECT_TIMEOUT <= MAX_INSPECT_TIMEOUT);
        assert_eq!(
            SniFallback::default(),
            sni_fallback(SniFallbackName::Default)
        );
    }
}
