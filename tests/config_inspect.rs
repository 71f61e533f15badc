//! A listener's inspect keys: `accept_proxy`, `inspect_timeout`, `[[listener.route]]` and
//! `sni_fallback`. Every error names file:line:col and the field.

use std::time::Duration;

use ringlb::config::defaults::DEFAULT_INSPECT_TIMEOUT;
use ringlb::config::*;

/// The CPUs the tests pretend are in the affinity mask, so results do not depend on the host.
const MASK: &[usize] = &[0, 1, 2, 3];

const BASE: &str = r#"
[[listener]]
name = "web"
bind = "0.0.0.0:8080"
pool = "web"

[[pool]]
name = "web"

[[pool.backend]]
address = "127.0.0.1:9001"

[[pool]]
name = "api"

[[pool.backend]]
address = "127.0.0.1:9101"
"#;

/// `BASE` with `keys` (lines of keys, then any `[[listener.route]]` tables) written into its
/// listener.
fn with_listener(keys: &str) -> String {
    BASE.replace("pool = \"web\"\n", &format!("pool = \"web\"\n{keys}\n"))
}

/// A `[[listener.route]]` table.
fn route(sni: &str, pool: &str) -> String {
    format!("[[listener.route]]\nsni = \"{sni}\"\npool = \"{pool}\"\n")
}

fn load(text: &str) -> Result<Config, ConfigError> {
    load_with(text, &Overrides::default())
}

fn load_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str_with(text, "t.toml", overrides, MASK)
}

fn error(text: &str) -> String {
    match load(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

/// `t.toml:LINE:COL` of the `nth` occurrence (0-based) of `needle` in `text`.
fn at(text: &str, needle: &str, nth: usize) -> String {
    let (offset, _) = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("t.toml:{line}:{column}")
}

/// Asserts the error starts with the location of `needle` and names `field`, and mentions
/// each of `words`.
fn assert_error(text: &str, needle: &str, nth: usize, field: &str, words: &[&str]) {
    assert_located(&error(text), &at(text, needle, nth), field, words);
}

/// Asserts `message` starts with `location` and `field`, and mentions each of `words`.
fn assert_located(message: &str, location: &str, field: &str, words: &[&str]) {
    let expected = format!("{location}: {field}: ");
    assert!(
        message.starts_with(&expected),
        "{message:?} should start with {expected:?}"
    );
    for word in words {
        assert!(
            message.contains(word),
            "{message:?} should mention {word:?}"
        );
    }
}

#[test]
fn the_inspect_keys_default_to_nothing_inspected() {
    let config = load(BASE).expect("valid");
    let l = &config.listeners[0];
    assert!(!l.accept_proxy);
    assert_eq!(l.inspect_timeout, DEFAULT_INSPECT_TIMEOUT);
    assert_eq!(l.inspect_timeout, Duration::from_secs(5));
    assert!(l.routes.is_empty());
    assert_eq!(l.sni_fallback, SniFallback::Default);
}

#[test]
fn each_inspect_key_parses() {
    let text = with_listener(&format!(
        "accept_proxy = true\ninspect_timeout = \"750ms\"\nsni_fallback = \"close\"\n{}{}",
        route("api.example.com", "api"),
        route("web.example.com", "web"),
    ));
    let config = load(&text).expect("valid");
    let l = &config.listeners[0];
    assert!(l.accept_proxy);
    assert_eq!(l.inspect_timeout, Duration::from_millis(750));
    assert_eq!(l.sni_fallback, SniFallback::Close);
    assert_eq!(
        l.routes,
        [
            Route {
                sni: "api.example.com".into(),
                pool: 1,
            },
            Route {
                sni: "web.example.com".into(),
                pool: 0,
            },
        ]
    );
    assert_eq!(l.pool, 0, "the listener's own pool stays the default");
    let text = with_listener(&format!(
        "accept_proxy = false\nsni_fallback = \"default\"\n{}",
        route("a.example", "api")
    ));
    let l = &load(&text).expect("valid").listeners[0];
    assert!(!l.accept_proxy);
    assert_eq!(l.sni_fallback, SniFallback::Default);
    // accept_proxy and inspect_timeout need no routes.
    let text = with_listener("accept_proxy = true\ninspect_timeout = \"1h\"");
    let l = &load(&text).expect("valid").listeners[0];
    assert!(l.accept_proxy && l.routes.is_empty());
    assert_eq!(l.inspect_timeout, Duration::from_secs(3600));
}

#[test]
fn route_names_are_stored_in_lower_case_and_wildcards_are_accepted() {
    let text = with_listener(&format!(
        "{}{}{}",
        route("API.Example.COM", "api"),
        route("*.Static.Example.com", "web"),
        route("*.com", "api"),
    ));
    let routes = &load(&text).expect("valid").listeners[0].routes;
    let names: Vec<_> = routes.iter().map(|r| (r.sni.as_str(), r.pool)).collect();
    assert_eq!(
        names,
        [
            ("api.example.com", 1),
            ("*.static.example.com", 0),
            ("*.com", 1),
        ]
    );
}

#[test]
fn routes_belong_to_their_listener() {
    // The same name on two listeners, and a pool name written with spaces as a listener's is.
    let text = format!(
        "{}\n[[listener]]\nname = \"other\"\nbind = \"0.0.0.0:8443\"\npool = \"api\"\n{}",
        with_listener(&route("a.example.com", "api")),
        route("a.example.com", " web "),
    );
    let config = load(&text).expect("valid");
    assert_eq!(config.listeners[0].routes[0].pool, 1);
    assert_eq!(config.listeners[1].routes[0].pool, 0);
    assert!(config.listeners[1].routes[0].sni == config.listeners[0].routes[0].sni);
}

#[test]
fn inspect_timeout_is_above_zero_and_at_most_an_hour() {
    for (value, words) in [
        ("\"0s\"", &["must be longer than zero"][..]),
        ("\"0ms\"", &["must be longer than zero"]),
        ("\"61m\"", &["must be at most 1h", "\"61m\""]),
        ("\"2h\"", &["must be at most 1h"]),
        ("\"5\"", &["has no unit"]),
        ("\"soon\"", &["not a duration"]),
    ] {
        let text = with_listener(&format!("inspect_timeout = {value}"));
        assert_error(&text, value, 0, "listener[0].inspect_timeout", words);
    }
    let text = with_listener("inspect_timeout = 5");
    let message = error(&text);
    assert!(message.contains("listener[0].inspect_timeout"), "{message}");
}

#[test]
fn wrong_types_and_unknown_keys_name_the_field() {
    let text = with_listener("accept_proxy = \"yes\"");
    assert_error(
        &text,
        "\"yes\"",
        0,
        "listener[0].accept_proxy",
        &["true or false"],
    );
    let text = with_listener("sni_fallback = \"drop\"");
    assert_error(
        &text,
        "\"drop\"",
        0,
        "listener[0].sni_fallback",
        &["default", "close"],
    );
    let text = with_listener(&format!("{}weight = 2\n", route("a.example", "api")));
    assert_error(
        &text,
        "weight",
        0,
        "listener[0].route[0].weight",
        &["unknown field `weight`", "sni", "pool"],
    );
    let text = with_listener("[[listener.route]]\nsni = \"a.example\"\n");
    let message = error(&text);
    assert!(message.starts_with("t.toml:"), "{message}");
    assert!(
        message.contains("listener[0].route[0]") && message.contains("missing field `pool`"),
        "{message}"
    );
}

#[test]
fn bad_server_names_are_located() {
    for (sni, words) in [
        ("", &["must not be empty"][..]),
        ("example.com.", &["trailing dot"]),
        ("a..example.com", &["empty label"]),
        ("-a.example.com", &["\"-a\" starts or ends with \"-\""]),
        ("a-.example.com", &["starts or ends with \"-\""]),
        ("a_b.example.com", &["'_' is not allowed"]),
        ("example.com:443", &["':' is not allowed"]),
        ("bücher.example", &["not ASCII", "xn--"]),
        ("10.0.0.1", &["an IP address"]),
        ("2001:db8::1", &["an IP address"]),
        ("[::1]", &["an IP address"]),
        ("*", &["\"*\" is allowed nowhere else"]),
        ("*example.com", &["\"*\" is allowed nowhere else"]),
        ("a.*.example.com", &["\"*\" is allowed nowhere else"]),
        ("api.*", &["\"*\" is allowed nowhere else"]),
        ("*.*.example.com", &["\"*\" is allowed nowhere else"]),
        ("*.", &["must be followed by a domain"]),
    ] {
        let text = with_listener(&route(sni, "api"));
        let value = format!("\"{sni}\"");
        assert_error(&text, &value, 0, "listener[0].route[0].sni", words);
    }
    let long_label = "a".repeat(64);
    let text = with_listener(&route(&format!("{long_label}.example"), "api"));
    assert_error(
        &text,
        &format!("\"{long_label}"),
        0,
        "listener[0].route[0].sni",
        &["64 bytes long", "at most 63"],
    );
    let label = "a".repeat(63);
    let long = [label.as_str(); 4].join(".");
    let text = with_listener(&route(&long, "api"));
    assert_error(
        &text,
        &format!("\"{long}\""),
        0,
        "listener[0].route[0].sni",
        &["255 bytes long", "at most 253"],
    );
    // The error names the route it is in.
    let text = with_listener(&format!(
        "{}{}",
        route("ok.example", "api"),
        route("not ok", "api")
    ));
    assert_error(
        &text,
        "\"not ok\"",
        0,
        "listener[0].route[1].sni",
        &["' ' is not allowed"],
    );
}

#[test]
fn a_repeated_name_is_an_error_at_the_second() {
    let text = with_listener(&format!(
        "{}{}{}",
        route("api.example.com", "api"),
        route("*.example.com", "web"),
        route("API.example.com", "web"),
    ));
    let first = at(&text, "\"api.example.com\"", 0);
    assert_error(
        &text,
        "\"API.example.com\"",
        0,
        "listener[0].route[2].sni",
        &[&format!(
            "duplicate sni \"api.example.com\" (first defined at {first})"
        )],
    );
    let text = with_listener(&format!(
        "{}{}",
        route("*.Example.com", "api"),
        route("*.example.COM", "web"),
    ));
    assert_error(
        &text,
        "\"*.example.COM\"",
        0,
        "listener[0].route[1].sni",
        &["duplicate sni \"*.example.com\""],
    );
}

#[test]
fn a_route_to_an_unknown_pool_lists_the_pools() {
    let text = with_listener(&format!(
        "{}{}",
        route("a.example.com", "api"),
        route("b.example.com", "db"),
    ));
    assert_error(
        &text,
        "\"db\"",
        0,
        "listener[0].route[1].pool",
        &["unknown pool \"db\" (defined pools: web, api)"],
    );
}

#[test]
fn sni_fallback_needs_routes() {
    for value in ["\"close\"", "\"default\""] {
        let text = with_listener(&format!("accept_proxy = true\nsni_fallback = {value}"));
        assert_error(
            &text,
            value,
            0,
            "listener[0].sni_fallback",
            &["sni_fallback applies only to a listener with [[listener.route]] tables"],
        );
    }
    // Routes on another listener do not count.
    let text = format!(
        "{}\n[[listener]]\nbind = \"0.0.0.0:8443\"\npool = \"api\"\nsni_fallback = \"close\"\n",
        with_listener(&route("a.example.com", "api")),
    );
    assert_error(
        &text,
        "\"close\"",
        0,
        "listener[1].sni_fallback",
        &["applies only to a listener with [[listener.route]] tables"],
    );
}

#[test]
fn summary_shows_what_a_listener_inspects() {
    // Nothing inspected: the listener's line is as it was, with no inspect_timeout.
    let summary = load(BASE).expect("valid").summary_in(MASK);
    assert!(
        summary.contains("  web on 0.0.0.0:8080 -> pool web (mode auto, backlog 4096)\n"),
        "{summary}"
    );
    assert!(!summary.contains("inspect_timeout"), "{summary}");
    assert!(!summary.contains("sni_fallback"), "{summary}");
    // accept_proxy alone: its timeout, no routes or fallback.
    let text = with_listener("accept_proxy = true\ninspect_timeout = \"3s\"");
    let summary = load(&text).expect("valid").summary_in(MASK);
    assert!(
        summary.contains(
            "  web on 0.0.0.0:8080 -> pool web (mode auto, backlog 4096, accept_proxy on, \
             inspect_timeout 3s)\n"
        ),
        "{summary}"
    );
    assert!(!summary.contains("sni_fallback"), "{summary}");
    // Routes alone: the timeout, each route, and the fallback.
    let text = with_listener(&format!(
        "{}{}",
        route("API.example.com", "api"),
        route("*.example.com", "web"),
    ));
    let summary = load(&text).expect("valid").summary_in(MASK);
    for line in [
        "  web on 0.0.0.0:8080 -> pool web (mode auto, backlog 4096, inspect_timeout 5s)\n",
        "    route api.example.com -> api\n",
        "    route *.example.com -> web\n",
        "    sni_fallback: default (to pool web)\n",
    ] {
        assert!(summary.contains(line), "{line:?} missing from\n{summary}");
    }
    assert!(!summary.contains("accept_proxy"), "{summary}");
    // A pool only a route leads to is in use.
    assert!(!summary.contains("(used by no listener)"), "{summary}");
    let summary = load(BASE).expect("valid").summary_in(MASK);
    assert!(
        summary.contains("  api: round-robin, retries 2, 1 backend(s) (used by no listener)\n"),
        "{summary}"
    );
    let text = with_listener(&format!(
        "sni_fallback = \"close\"\n{}",
        route("a.example", "api")
    ));
    let summary = load(&text).expect("valid").summary_in(MASK);
    assert!(summary.contains("    sni_fallback: close\n"), "{summary}");
}

#[test]
fn accept_proxy_and_inspect_timeout_flags_set_every_listener() {
    let text = format!(
        "{}\n[[listener]]\nbind = \"0.0.0.0:8443\"\npool = \"api\"\ninspect_timeout = \"1s\"\n",
        with_listener("accept_proxy = true"),
    );
    // No flag: the file's.
    let config = load(&text).expect("valid");
    let set: Vec<_> = config
        .listeners
        .iter()
        .map(|l| (l.accept_proxy, l.inspect_timeout))
        .collect();
    assert_eq!(
        set,
        [
            (true, DEFAULT_INSPECT_TIMEOUT),
            (false, Duration::from_secs(1))
        ]
    );
    // The flags: every listener.
    let flags = Overrides {
        accept_proxy: true,
        inspect_timeout: Some("250ms".into()),
        ..Overrides::default()
    };
    let config = load_with(&text, &flags).expect("valid");
    assert!(config.listeners.iter().all(|l| l.accept_proxy));
    assert!(
        config
            .listeners
            .iter()
            .all(|l| l.inspect_timeout == Duration::from_millis(250))
    );
    // In the quick form too.
    let backends = ["127.0.0.1:9001".parse().expect("spec")];
    let config = Config::from_quick_with("127.0.0.1:8080", &backends, &flags, MASK).expect("valid");
    let l = &config.listeners[0];
    assert!(l.accept_proxy);
    assert_eq!(l.inspect_timeout, Duration::from_millis(250));
    assert!(l.routes.is_empty());
    let summary = config.summary_in(MASK);
    assert!(
        summary.contains("accept_proxy on, inspect_timeout 250ms)\n"),
        "{summary}"
    );
    // Without the flags, the quick form inspects nothing.
    let config = Config::from_quick_with("127.0.0.1:8080", &backends, &Overrides::default(), MASK)
        .expect("valid");
    let l = &config.listeners[0];
    assert!(!l.accept_proxy);
    assert_eq!(l.inspect_timeout, DEFAULT_INSPECT_TIMEOUT);
}

#[test]
fn inspect_timeout_flag_errors_name_the_flag() {
    let backends = ["127.0.0.1:9001".parse().expect("spec")];
    for (timeout, expected) in [
        (
            "0s",
            "command line: listener[0].inspect_timeout (--inspect-timeout): must be longer than \
             zero",
        ),
        (
            "2h",
            "command line: listener[0].inspect_timeout (--inspect-timeout): must be at most 1h, \
             got \"2h\"",
        ),
        (
            "5",
            "command line: listener[0].inspect_timeout (--inspect-timeout): \"5\" has no unit",
        ),
    ] {
        let flags = Overrides {
            inspect_timeout: Some(timeout.into()),
            ..Overrides::default()
        };
        let message = load_with(BASE, &flags).expect_err(expected).to_string();
        assert!(message.starts_with(expected), "{message}");
        let message = Config::from_quick_with("127.0.0.1:8080", &backends, &flags, MASK)
            .expect_err(expected)
            .to_string();
        assert!(message.starts_with(expected), "{message}");
    }
}

/// `text` with each of `blocks` uncommented: a block is lines written one after the other,
/// each commented out (`# line`), which the text must hold exactly once.
fn uncomment(text: &str, blocks: &[&[&str]]) -> String {
    let mut uncommented = text.to_owned();
    for block in blocks {
        let commented: String = block.iter().map(|line| format!("\n# {line}")).collect();
        let plain: String = block.iter().map(|line| format!("\n{line}")).collect();
        let (commented, plain) = (format!("{commented}\n"), format!("{plain}\n"));
        assert_eq!(
            text.matches(&commented).count(),
            1,
            "{block:?} once, commented"
        );
        uncommented = uncommented.replace(&commented, &plain);
    }
    uncommented
}

/// The example's commented-out inspect keys validate once uncommented, to the values its
/// comments promise; left commented, no listener inspects anything.
#[test]
fn the_example_documents_the_inspect_keys() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringlb.toml");
    let text = std::fs::read_to_string(path).expect("the example ships with the crate");
    let config = load(&text).expect("examples/ringlb.toml is valid");
    for l in &config.listeners {
        assert!(!l.accept_proxy && l.routes.is_empty(), "{l:?}");
        assert_eq!(l.inspect_timeout, DEFAULT_INSPECT_TIMEOUT);
    }
    let accept_proxy: &[&str] = &["accept_proxy = true"];
    let inspect_timeout: &[&str] = &["inspect_timeout = \"5s\""];
    let sni_fallback: &[&str] = &["sni_fallback = \"default\""];
    let routes: &[&str] = &[
        "[[listener.route]]",
        "sni = \"api.example.com\"",
        "pool = \"api\"",
        "[[listener.route]]",
        "sni = \"*.api.example.com\"",
        "pool = \"api\"",
    ];
    let uncommented = uncomment(
        &text,
        &[accept_proxy, inspect_timeout, sni_fallback, routes],
    );
    let config = load(&uncommented).expect("valid once uncommented");
    let api = config
        .pools
        .iter()
        .position(|p| p.name == "api")
        .expect("the example has an api pool");
    let l = &config.listeners[0];
    assert!(l.accept_proxy);
    assert_eq!(
        l.inspect_timeout, DEFAULT_INSPECT_TIMEOUT,
        "the default shown"
    );
    assert_eq!(l.sni_fallback, SniFallback::Default, "the default shown");
    assert_eq!(
        l.routes,
        [
            Route {
                sni: "api.example.com".into(),
                pool: api,
            },
            Route {
                sni: "*.api.example.com".into(),
                pool: api,
            },
        ]
    );
    let other = &config.listeners[1];
    assert!(!other.accept_proxy && other.routes.is_empty());
    // The routes alone, accept_proxy alone; sni_fallback without the routes is an error.
    let config = load(&uncomment(&text, &[routes])).expect("routes alone");
    assert_eq!(config.listeners[0].routes.len(), 2);
    let config = load(&uncomment(&text, &[accept_proxy])).expect("accept_proxy alone");
    assert!(config.listeners[0].accept_proxy);
    let stray = uncomment(&text, &[sni_fallback]);
    assert_error(
        &stray,
        "\"default\"\n",
        0,
        "listener[0].sni_fallback",
        &["applies only to a listener with [[listener.route]] tables"],
    );
}
