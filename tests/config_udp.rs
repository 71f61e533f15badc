//! UDP listeners (`protocol = "udp"`) and their pools' flow keys (`udp_idle_timeout`,
//! `udp_responses`, `udp_max_flows`). Every error names file:line:col and the field.

use std::time::Duration;

use ringlb::config::defaults::{
    DEFAULT_UDP_IDLE_TIMEOUT, DEFAULT_UDP_MAX_FLOWS, DEFAULT_UDP_RCVBUF,
};
use ringlb::config::raw::{ModeName, ProtocolName, ProxyName};
use ringlb::config::*;

/// The CPUs the tests pretend are in the affinity mask, so results do not depend on the host.
const MASK: &[usize] = &[0, 1, 2, 3];

/// An open file limit that every configuration here fits, so results do not depend on the
/// host's either.
const FDS: FdLimit = FdLimit {
    soft: 1 << 20,
    hard: 1 << 20,
};

const BASE: &str = r#"
[[listener]]
name = "web"
bind = "0.0.0.0:8080"
pool = "web"

[[listener]]
name = "dns"
bind = "127.0.0.1:5353"
pool = "dns"
protocol = "udp"

[[pool]]
name = "web"

[[pool.backend]]
address = "127.0.0.1:9001"

[[pool]]
name = "dns"

[[pool.backend]]
address = "127.0.0.1:5301"

[[pool.backend]]
address = "127.0.0.1:5302"
"#;

/// `BASE` with `keys` written into its UDP listener.
fn with_udp_listener(keys: &str) -> String {
    BASE.replace(
        "protocol = \"udp\"\n",
        &format!("protocol = \"udp\"\n{keys}\n"),
    )
}

/// `BASE` with `keys` written into the UDP listener's pool, `dns`.
fn with_dns_pool(keys: &str) -> String {
    BASE.replace(
        "name = \"dns\"\n\n[[pool.backend]]",
        &format!("name = \"dns\"\n{keys}\n\n[[pool.backend]]"),
    )
}

fn host() -> Host<'static> {
    Host {
        cpus: MASK,
        fd_limit: FDS,
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    load_with(text, &Overrides::default())
}

fn load_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str_on(text, "t.toml", overrides, &host())
}

fn quick(overrides: &Overrides) -> Result<Config, ConfigError> {
    let backends = ["127.0.0.1:5301".parse().expect("spec")];
    Config::from_quick_on("127.0.0.1:5353", &backends, overrides, &host())
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
fn a_udp_listener_is_kept_apart_from_the_tcp_ones() {
    let config = load(BASE).expect("valid");
    assert_eq!(config.listeners.len(), 1, "TCP listeners only");
    assert_eq!(config.listeners[0].name, "web");
    assert_eq!(
        config.udp_listeners,
        [UdpListener {
            name: "dns".into(),
            bind: "127.0.0.1:5353".parse().expect("literal"),
            pool: 1,
            rcvbuf: DEFAULT_UDP_RCVBUF,
            freebind: false,
        }]
    );
    // `protocol = "tcp"` is the default, written or not.
    let text = BASE.replace(
        "pool = \"web\"\n\n[[listener]]",
        "pool = \"web\"\nprotocol = \"tcp\"\n\n[[listener]]",
    );
    assert_eq!(load(&text).expect("valid"), config);
    // A UDP listener's name defaults to its address, as a TCP listener's.
    let text = BASE.replace("name = \"dns\"\nbind", "bind");
    assert_eq!(
        load(&text).expect("valid").udp_listeners[0].name,
        "127.0.0.1:5353"
    );
    // UDP listeners only: no TCP listener is needed.
    let text = BASE.replace(
        "[[listener]]\nname = \"web\"\nbind = \"0.0.0.0:8080\"\npool = \"web\"\n",
        "",
    );
    let config = load(&text).expect("valid");
    assert!(config.listeners.is_empty());
    assert_eq!(config.udp_listeners.len(), 1);
}

#[test]
fn the_flow_keys_default_and_parse() {
    let config = load(BASE).expect("valid");
    for pool in &config.pools {
        assert_eq!(
            pool.udp,
            UdpFlows {
                idle_timeout: DEFAULT_UDP_IDLE_TIMEOUT,
                responses: None,
                max_flows: DEFAULT_UDP_MAX_FLOWS,
            }
        );
    }
    assert_eq!(DEFAULT_UDP_IDLE_TIMEOUT, Duration::from_secs(30));
    assert_eq!(DEFAULT_UDP_MAX_FLOWS, 4096);
    let text = with_dns_pool("udp_idle_timeout = \"5s\"\nudp_responses = 1\nudp_max_flows = 100");
    let config = load(&text).expect("valid");
    assert_eq!(
        config.pools[1].udp,
        UdpFlows {
            idle_timeout: Duration::from_secs(5),
            responses: Some(1),
            max_flows: 100,
        }
    );
    // In a pool no UDP listener uses, they are read and checked, and unused.
    let text = BASE.replace(
        "name = \"web\"\n\n[[pool.backend]]",
        "name = \"web\"\nudp_max_flows = 7\n\n[[pool.backend]]",
    );
    assert_eq!(load(&text).expect("valid").pools[0].udp.max_flows, 7);
}

#[test]
fn a_protocol_typo_names_the_field_and_the_choices() {
    let text = BASE.replace("protocol = \"udp\"", "protocol = \"udpp\"");
    assert_error(
        &text,
        "\"udpp\"",
        0,
        "listener[1].protocol",
        &["udpp", "tcp", "udp"],
    );
    let text = BASE.replace("protocol = \"udp\"", "protocol = 17");
    assert_error(&text, "17", 0, "listener[1].protocol", &[]);
}

#[test]
fn each_tcp_only_key_on_a_udp_listener_is_an_error_at_the_key() {
    for (key, line, needle) in [
        ("mode", "mode = \"copy\"", "\"copy\""),
        ("backlog", "backlog = 128", "128"),
        ("admission_rate", "admission_rate = 100", "100"),
        (
            "admission_burst",
            "admission_rate = 100\nadmission_burst = 10",
            "100",
        ),
        ("accept_proxy", "accept_proxy = false", "false"),
        ("inspect_timeout", "inspect_timeout = \"1s\"", "\"1s\""),
        ("sni_fallback", "sni_fallback = \"close\"", "\"close\""),
    ] {
        let text = with_udp_listener(line);
        // The first key written is the one named (admission_rate before admission_burst).
        let named = if key == "admission_burst" {
            "admission_rate"
        } else {
            key
        };
        assert_error(
            &text,
            needle,
            0,
            &format!("listener[1].{named}"),
            &[
                &format!("`{named}` is for TCP listeners"),
                "protocol = \"udp\"",
            ],
        );
    }
    // The burst alone.
    let text = with_udp_listener("admission_burst = 10");
    assert_error(
        &text,
        "10\n",
        0,
        "listener[1].admission_burst",
        &["`admission_burst` is for TCP listeners"],
    );
    // A route table, at its header.
    let text = with_udp_listener("[[listener.route]]\nsni = \"a.example\"\npool = \"web\"");
    assert_error(
        &text,
        "[[listener.route]]",
        0,
        "listener[1].route",
        &["[[listener.route]] is for TCP listeners"],
    );
}

#[test]
fn rcvbuf_sizes_a_udp_listener_and_is_an_error_on_a_tcp_one() {
    let config = load(&with_udp_listener("rcvbuf = \"1MiB\"")).expect("valid");
    assert_eq!(config.udp_listeners[0].rcvbuf, 1 << 20);
    let config = load(&with_udp_listener("rcvbuf = 65536")).expect("valid");
    assert_eq!(config.udp_listeners[0].rcvbuf, 65_536);
    for (value, words) in [
        ("\"1KiB\"", "between 4096 and"),
        ("\"1GiB\"", "between 4096 and"),
        ("\"lots\"", ""),
    ] {
        let text = with_udp_listener(&format!("rcvbuf = {value}"));
        assert_error(&text, value, 0, "listener[1].rcvbuf", &[words]);
    }
    let text = BASE.replace(
        "pool = \"web\"\n\n[[listener]]",
        "pool = \"web\"\nrcvbuf = \"1MiB\"\n\n[[listener]]",
    );
    assert_error(
        &text,
        "\"1MiB\"",
        0,
        "listener[0].rcvbuf",
        &["for UDP listeners", "autotuning"],
    );
}

#[test]
fn freebind_is_read_on_tcp_and_udp_listeners_and_shown_by_check() {
    let config = load(BASE).expect("valid");
    assert!(!config.listeners[0].freebind, "off by default");
    assert!(!config.udp_listeners[0].freebind, "off by default");
    let text = with_udp_listener("freebind = true").replace(
        "pool = \"web\"\n\n[[listener]]",
        "pool = \"web\"\nfreebind = true\n\n[[listener]]",
    );
    let config = load(&text).expect("valid");
    assert!(config.listeners[0].freebind);
    assert!(config.udp_listeners[0].freebind);
    let summary = config.summary_in(&[0]);
    assert_eq!(summary.matches(", freebind").count(), 2, "{summary}");
    let text = with_udp_listener("freebind = \"yes\"");
    assert_error(&text, "\"yes\"", 0, "listener[1].freebind", &[""]);
}

#[test]
fn names_are_unique_across_protocols_and_binds_within_one() {
    // A TCP and a UDP listener may share an address and port.
    let text = BASE.replace("127.0.0.1:5353", "0.0.0.0:8080");
    let config = load(&text).expect("valid");
    assert_eq!(config.listeners[0].bind, config.udp_listeners[0].bind);
    // Two UDP listeners may not.
    let text = format!(
        "{BASE}\n[[listener]]\nname = \"dns2\"\nbind = \"127.0.0.1:5353\"\npool = \"dns\"\n\
         protocol = \"udp\"\n"
    );
    assert_error(
        &text,
        "\"127.0.0.1:5353\"",
        1,
        "listener[2].bind",
        &["duplicate UDP bind address"],
    );
    // Names are shared: a UDP listener may not take a TCP listener's name.
    let text = BASE.replace("name = \"dns\"\nbind", "name = \"web\"\nbind");
    assert_error(
        &text,
        "\"web\"",
        2,
        "listener[1].name",
        &["duplicate listener name \"web\""],
    );
}

#[test]
fn zero_flows_or_responses_are_errors() {
    let text = with_dns_pool("udp_responses = 0");
    assert_error(
        &text,
        "0\n",
        0,
        "pool[1].udp_responses",
        &["must be between 1 and", "leave udp_responses out"],
    );
    let text = with_dns_pool("udp_max_flows = 0");
    assert_error(
        &text,
        "0\n",
        0,
        "pool[1].udp_max_flows",
        &["must be between 1 and"],
    );
    let text = with_dns_pool("udp_max_flows = -3");
    assert_error(&text, "-3", 0, "pool[1].udp_max_flows", &["got -3"]);
    let text = with_dns_pool("udp_idle_timeout = \"0s\"");
    assert_error(
        &text,
        "\"0s\"",
        0,
        "pool[1].udp_idle_timeout",
        &["longer than zero"],
    );
    let text = with_dns_pool("udp_idle_timeout = \"5\"");
    assert_error(&text, "\"5\"", 0, "pool[1].udp_idle_timeout", &["unit"]);
    let text = with_dns_pool("udp_idle_timeout = \"2h\"");
    assert_error(
        &text,
        "\"2h\"",
        0,
        "pool[1].udp_idle_timeout",
        &["at most 1h"],
    );
    let text = with_dns_pool("udp_responses = \"one\"");
    assert_error(&text, "\"one\"", 0, "pool[1].udp_responses", &["integer"]);
}

#[test]
fn send_proxy_v2_serves_udp_pools_and_v1_is_an_error_at_its_key() {
    use ringlb::core::proxy_header::ProxyVersion::{V1, V2};
    let sent = |c: &Config, pool: usize| -> Vec<_> {
        c.pools[pool]
            .backends
            .iter()
            .map(|b| b.send_proxy)
            .collect()
    };
    // v2, on the pool (every backend) or on a backend (that one), shown by `check`.
    let config = load(&with_dns_pool("send_proxy = \"v2\"")).expect("valid");
    assert_eq!(sent(&config, 1), [Some(V2), Some(V2)]);
    let summary = config.summary_in(MASK);
    assert!(
        summary.contains("5302 weight 1, send_proxy v2"),
        "{summary}"
    );
    let one = BASE.replace("5302\"", "5302\"\nsend_proxy = \"v2\"");
    assert_eq!(sent(&load(&one).expect("valid"), 1), [None, Some(V2)]);
    // v1 has no datagram form: an error at the value, on the pool or on a backend (under
    // the pool's v2 too).
    let words = [
        "\"v1\" has no form for UDP",
        "UDP listener \"dns\"",
        "use \"v2\"",
    ];
    let text = with_dns_pool("send_proxy = \"v1\"");
    assert_error(&text, "\"v1\"", 0, "pool[1].send_proxy", &words);
    let text = one.replace("\"v2\"", "\"v1\"");
    assert_error(&text, "\"v1\"", 0, "pool[1].backend[1].send_proxy", &words);
    let text = text.replace("\"dns\"\n\n", "\"dns\"\nsend_proxy = \"v2\"\n\n");
    assert_error(&text, "\"v1\"", 0, "pool[1].backend[1].send_proxy", &words);
    // A pool only TCP listeners use keeps v1; so does --send-proxy, which sets only those.
    let text = BASE.replace("9001\"", "9001\"\nsend_proxy = \"v1\"");
    assert_eq!(sent(&load(&text).expect("valid"), 0), [Some(V1)]);
    let flags = Overrides {
        send_proxy: Some(ProxyName::V1),
        ..Overrides::default()
    };
    let config = load_with(BASE, &flags).expect("valid");
    assert_eq!(
        (sent(&config, 0), sent(&config, 1)),
        (vec![Some(V1)], vec![None, None])
    );
    // The quick form: --send-proxy v2 with --protocol udp.
    let flags = Overrides {
        protocol: Some(ProtocolName::Udp),
        send_proxy: Some(ProxyName::V2),
        ..Overrides::default()
    };
    assert_eq!(sent(&quick(&flags).expect("valid"), 0), [Some(V2)]);
}

#[test]
fn tcp_flags_set_the_tcp_listeners_of_a_file() {
    let flags = Overrides {
        mode: Some(ModeName::Splice),
        accept_proxy: true,
        inspect_timeout: Some("1s".into()),
        admission_rate: Some(10),
        ..Overrides::default()
    };
    let config = load_with(BASE, &flags).expect("valid");
    assert_eq!(config.listeners[0].mode, Mode::Splice);
    assert!(config.listeners[0].accept_proxy);
    assert_eq!(config.udp_listeners.len(), 1);
}

#[test]
fn the_quick_form_builds_a_udp_listener() {
    let flags = Overrides {
        protocol: Some(ProtocolName::Udp),
        udp_responses: Some(1),
        udp_idle_timeout: Some("5s".into()),
        ..Overrides::default()
    };
    let config = quick(&flags).expect("valid");
    assert!(config.listeners.is_empty());
    assert_eq!(
        config.udp_listeners,
        [UdpListener {
            name: quick::QUICK_LISTENER_NAME.into(),
            bind: "127.0.0.1:5353".parse().expect("literal"),
            pool: 0,
            rcvbuf: DEFAULT_UDP_RCVBUF,
            freebind: false,
        }]
    );
    assert_eq!(
        config.pools[0].udp,
        UdpFlows {
            idle_timeout: Duration::from_secs(5),
            responses: Some(1),
            max_flows: DEFAULT_UDP_MAX_FLOWS,
        }
    );
    let flags = Overrides {
        udp_max_flows: Some(64),
        ..flags
    };
    assert_eq!(quick(&flags).expect("valid").pools[0].udp.max_flows, 64);
    // --protocol tcp is the default quick form.
    let flags = Overrides {
        protocol: Some(ProtocolName::Tcp),
        ..Overrides::default()
    };
    let config = quick(&flags).expect("valid");
    assert_eq!(config, quick(&Overrides::default()).expect("valid"));
    assert_eq!(config.listeners.len(), 1);
    assert!(config.udp_listeners.is_empty());
}

#[test]
fn tcp_flags_with_protocol_udp_are_errors_naming_the_flag() {
    let udp = || Overrides {
        protocol: Some(ProtocolName::Udp),
        ..Overrides::default()
    };
    for (flags, field, words) in [
        (
            Overrides {
                mode: Some(ModeName::Splice),
                ..udp()
            },
            "listener[0].mode (--mode)",
            "`mode` is for TCP listeners",
        ),
        (
            Overrides {
                accept_proxy: true,
                ..udp()
            },
            "listener[0].accept_proxy (--accept-proxy)",
            "`accept_proxy` is for TCP listeners",
        ),
        (
            Overrides {
                inspect_timeout: Some("1s".into()),
                ..udp()
            },
            "listener[0].inspect_timeout (--inspect-timeout)",
            "`inspect_timeout` is for TCP listeners",
        ),
        (
            Overrides {
                admission_rate: Some(5),
                ..udp()
            },
            "listener[0].admission_rate (--admission-rate)",
            "`admission_rate` is for TCP listeners",
        ),
        (
            Overrides {
                send_proxy: Some(ProxyName::V1),
                ..udp()
            },
            "pool[0].send_proxy (--send-proxy)",
            "send_proxy \"v1\" has no form for UDP",
        ),
        (
            Overrides {
                udp_responses: Some(0),
                ..udp()
            },
            "pool[0].udp_responses (--udp-responses)",
            "must be between 1 and",
        ),
        (
            Overrides {
                udp_max_flows: Some(0),
                ..udp()
            },
            "pool[0].udp_max_flows (--udp-max-flows)",
            "must be between 1 and",
        ),
        (
            Overrides {
                udp_idle_timeout: Some("0s".into()),
                ..udp()
            },
            "pool[0].udp_idle_timeout (--udp-idle-timeout)",
            "longer than zero",
        ),
    ] {
        let message = quick(&flags).expect_err(field).to_string();
        assert_located(&message, "command line", field, &[words]);
    }
}

#[test]
fn check_summary_shows_udp_listeners_and_their_pools_flow_keys() {
    let summary = load(BASE).expect("valid").summary_in(MASK);
    for line in [
        "listeners (1):\n",
        "udp listeners (1):\n",
        "  udp listener dns 127.0.0.1:5353 -> pool dns, rcvbuf 4MiB\n",
        "    udp: udp_idle_timeout 30s, udp_responses unlimited, udp_max_flows 4096",
    ] {
        assert!(summary.contains(line), "{line:?} missing from\n{summary}");
    }
    assert!(!summary.contains("(used by no listener)"), "{summary}");
    // Only the pool a UDP listener uses shows them.
    assert_eq!(summary.matches("    udp: ").count(), 1, "{summary}");
    let text = with_dns_pool("udp_idle_timeout = \"5s\"\nudp_responses = 1\nudp_max_flows = 100");
    let summary = load(&text).expect("valid").summary_in(MASK);
    assert!(
        summary.contains("    udp: udp_idle_timeout 5s, udp_responses 1, udp_max_flows 100"),
        "{summary}"
    );
    // Without UDP listeners, no UDP section.
    let text = BASE.replace("protocol = \"udp\"\n", "");
    let summary = load(&text).expect("valid").summary_in(MASK);
    assert!(!summary.contains("udp"), "{summary}");
}

#[test]
fn the_fd_budget_grows_with_udp_max_flows() {
    let reserve = |text: &str| load(text).expect("valid").connections.budget.reserve;
    let tcp_only = reserve(&BASE.replace("protocol = \"udp\"\n", "mode = \"copy\"\n"));
    let small = reserve(&with_dns_pool("udp_max_flows = 10"));
    let large = reserve(&with_dns_pool("udp_max_flows = 1000"));
    // 4 workers (the mask), each with the listener's socket and its flows. The UDP listener
    // counts for one socket per worker either way, as the TCP listener it replaces did.
    assert_eq!(small - tcp_only, 4 * 10);
    assert_eq!(large - small, 4 * 990);
    // A limit the flows do not fit is an error that names them.
    let text = with_dns_pool("udp_max_flows = 100000");
    let host = Host {
        cpus: MASK,
        fd_limit: FdLimit {
            soft: 65_536,
            hard: 65_536,
        },
    };
    let message = Config::from_toml_str_on(&text, "t.toml", &Overrides::default(), &host)
        .expect_err("400004 descriptors for UDP alone")
        .to_string();
    for part in ["max_connections", "400004 of them for UDP", "udp_max_flows"] {
        assert!(message.contains(part), "{part:?} missing from {message}");
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

/// The example shows `protocol` and the flow keys at their defaults, and its commented-out
/// UDP listener and its pool validate once uncommented, to the values the comments promise.
#[test]
fn the_example_documents_the_udp_keys() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringlb.toml");
    let text = std::fs::read_to_string(path).expect("the example ships with the crate");
    let config = load(&text).expect("examples/ringlb.toml is valid");
    assert!(config.udp_listeners.is_empty());
    assert!(config.pools.iter().all(|p| p.udp == UdpFlows::default()));
    for line in [
        "protocol = \"tcp\"\n",
        "udp_idle_timeout = \"30s\"\n",
        "udp_max_flows = 4096\n",
    ] {
        assert!(text.contains(&format!("\n{line}")), "{line:?} not shown");
    }
    let listener: &[&str] = &[
        "[[listener]]",
        "name = \"dns\"",
        "bind = \"127.0.0.1:5353\"",
        "pool = \"dns\"",
        "protocol = \"udp\"",
    ];
    let rcvbuf: &[&str] = &["rcvbuf = \"4MiB\""];
    let pool: &[&str] = &[
        "[[pool]]",
        "name = \"dns\"",
        "udp_idle_timeout = \"5s\"",
        "udp_responses = 1",
        "udp_max_flows = 1024",
        "[[pool.backend]]",
        "address = \"127.0.0.1:5301\"",
    ];
    let uncommented = uncomment(&text, &[listener, rcvbuf, pool]);
    let config = load(&uncommented).expect("valid once uncommented");
    assert_eq!(config.listeners.len(), 2, "the TCP listeners as they were");
    let dns = &config.udp_listeners[0];
    assert_eq!(
        (dns.name.as_str(), config.pools[dns.pool].name.as_str()),
        ("dns", "dns")
    );
    assert_eq!(dns.rcvbuf, DEFAULT_UDP_RCVBUF, "the default, as written");
    assert_eq!(
        config.pools[dns.pool].udp,
        UdpFlows {
            idle_timeout: Duration::from_secs(5),
            responses: Some(1),
            max_flows: 1024,
        }
    );
    // The first pool's commented-out udp_responses, uncommented.
    let web = uncommented.replacen("\n# udp_responses = 1\n", "\nudp_responses = 1\n", 1);
    assert_eq!(load(&web).expect("valid").pools[0].udp.responses, Some(1));
}
