//! The half-closed timeouts (`[timeouts] client_fin`, `server_fin`) and the TCP socket options
//! (`[tcp]`): defaults, keys, flags, located errors and the summary.

use std::time::Duration;

use ringlb::config::defaults::*;
use ringlb::config::*;

const MASK: &[usize] = &[0, 1];

const BASE: &str = r#"
[[listener]]
bind = "0.0.0.0:8080"
pool = "web"

[[pool]]
name = "web"

[[pool.backend]]
address = "127.0.0.1:9001"
"#;

fn load_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str_with(text, "t.toml", overrides, MASK)
}

fn load(text: &str) -> Config {
    load_with(text, &Overrides::default()).expect("valid")
}

/// Asserts the error for `text` points at `needle`'s `t.toml:LINE:COL`, names `field` and
/// mentions `words`.
fn assert_error(text: &str, needle: &str, field: &str, words: &[&str]) {
    let message = load_with(text, &Overrides::default())
        .expect_err("invalid")
        .to_string();
    let offset = text.find(needle).expect("needle in text");
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let expected = format!("t.toml:{line}:{column}: {field}: ");
    assert!(
        message.starts_with(&expected),
        "{message:?} vs {expected:?}"
    );
    for word in words {
        assert!(
            message.contains(word),
            "{message:?} should mention {word:?}"
        );
    }
}

fn probes(idle: u64, interval: u64, count: u32) -> Keepalive {
    Keepalive::On(KeepaliveProbes {
        idle: Duration::from_secs(idle),
        interval: Duration::from_secs(interval),
        count,
    })
}

#[test]
fn defaults_follow_the_idle_timeout_and_keepalive_is_on() {
    let config = load(BASE);
    let t = config.timeouts;
    assert_eq!((t.client_fin, t.server_fin), (t.idle, t.idle));
    assert_eq!(t.idle, DEFAULT_IDLE_TIMEOUT);
    let on = SocketOptions {
        keepalive: probes(60, 10, 6),
        user_timeout: None,
    };
    assert_eq!(
        config.tcp,
        Tcp {
            client: on,
            server: on
        }
    );
    assert_eq!(config.tcp, Tcp::default());
    // A different idle timeout carries the fin timeouts along.
    let config = load(&format!("[timeouts]\nidle = \"42s\"\n{BASE}"));
    assert_eq!(config.timeouts.client_fin, Duration::from_secs(42));
    assert_eq!(config.timeouts.server_fin, Duration::from_secs(42));
}

#[test]
fn every_key_is_read() {
    let text = format!(
        "[timeouts]\nclient_fin = \"3s\"\nserver_fin = \"1.5s\"\n\
         [tcp]\nclient_keepalive = false\nserver_keepalive = true\nkeepalive_idle = \"2m\"\n\
         keepalive_interval = \"5s\"\nkeepalive_count = 3\nclient_user_timeout = \"30s\"\n\
         server_user_timeout = \"0s\"\n{BASE}"
    );
    let config = load(&text);
    assert_eq!(config.timeouts.client_fin, Duration::from_secs(3));
    assert_eq!(config.timeouts.server_fin, Duration::from_millis(1500));
    assert_eq!(config.timeouts.idle, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(
        config.tcp,
        Tcp {
            client: SocketOptions {
                keepalive: Keepalive::Off,
                user_timeout: Some(Duration::from_secs(30)),
            },
            server: SocketOptions {
                keepalive: probes(120, 5, 3),
                user_timeout: None,
            },
        }
    );
    let summary = config.summary_in(MASK);
    for part in [
        "client_fin 3s, server_fin 1500ms",
        "tcp: client keepalive off, user_timeout 30s; \
         server keepalive idle 2m interval 5s count 3, user_timeout kernel default",
    ] {
        assert!(summary.contains(part), "{part:?} missing from\n{summary}");
    }
}

#[test]
fn bad_values_are_located() {
    for (key, value, words) in [
        (
            "[timeouts]\nclient_fin",
            "\"0s\"",
            &["longer than zero"][..],
        ),
        ("[timeouts]\nserver_fin", "\"soon\"", &[][..]),
        (
            "[tcp]\nkeepalive_idle",
            "\"1500ms\"",
            &["whole number of seconds"][..],
        ),
        ("[tcp]\nkeepalive_idle", "\"10h\"", &["32767s"][..]),
        (
            "[tcp]\nkeepalive_interval",
            "\"0s\"",
            &["longer than zero"][..],
        ),
        ("[tcp]\nkeepalive_count", "0", &["between 1 and 127"][..]),
        ("[tcp]\nkeepalive_count", "128", &["between 1 and 127"][..]),
        ("[tcp]\nclient_user_timeout", "\"-1s\"", &[][..]),
        (
            "[tcp]\nserver_user_timeout",
            "5",
            &["expected a string"][..],
        ),
    ] {
        let text = format!("{key} = {value}\n{BASE}");
        let section = if key.starts_with("[tcp]") {
            "tcp"
        } else {
            "timeouts"
        };
        let name = key.rsplit('\n').next().expect("key");
        assert_error(&text, value, &format!("{section}.{name}"), words);
    }
    let text = format!("[tcp]\nkeepalive = true\n{BASE}");
    assert_error(&text, "keepalive", "tcp.keepalive", &["unknown field"]);
}

#[test]
fn flags_override_the_file_and_errors_name_them() {
    let text = format!("[timeouts]\nclient_fin = \"3s\"\n[tcp]\nkeepalive_count = 3\n{BASE}");
    let overrides = Overrides {
        client_fin: Some("1s".into()),
        server_fin: Some("2s".into()),
        no_keepalive: true,
        client_user_timeout: Some("20s".into()),
        ..Overrides::default()
    };
    let config = load_with(&text, &overrides).expect("valid");
    assert_eq!(config.timeouts.client_fin, Duration::from_secs(1));
    assert_eq!(config.timeouts.server_fin, Duration::from_secs(2));
    assert_eq!(config.tcp.client.keepalive, Keepalive::Off);
    assert_eq!(config.tcp.server.keepalive, Keepalive::Off);
    assert_eq!(
        config.tcp.client.user_timeout,
        Some(Duration::from_secs(20))
    );
    let overrides = Overrides {
        keepalive_idle: Some("30s".into()),
        keepalive_interval: Some("3s".into()),
        keepalive_count: Some(4),
        ..Overrides::default()
    };
    let config = load_with(BASE, &overrides).expect("valid");
    assert_eq!(config.tcp.client.keepalive, probes(30, 3, 4));
    for (overrides, flag) in [
        (
            Overrides {
                client_fin: Some("never".into()),
                ..Overrides::default()
            },
            "timeouts.client_fin (--client-fin)",
        ),
        (
            Overrides {
                server_fin: Some("0s".into()),
                ..Overrides::default()
            },
            "timeouts.server_fin (--server-fin)",
        ),
        (
            Overrides {
                keepalive_idle: Some("0.5s".into()),
                ..Overrides::default()
            },
            "tcp.keepalive_idle (--keepalive-idle)",
        ),
        (
            Overrides {
                keepalive_count: Some(500),
                ..Overrides::default()
            },
            "tcp.keepalive_count (--keepalive-count)",
        ),
        (
            Overrides {
                server_user_timeout: Some("x".into()),
                ..Overrides::default()
            },
            "tcp.server_user_timeout (--server-user-timeout)",
        ),
    ] {
        let message = load_with(BASE, &overrides)
            .expect_err("invalid")
            .to_string();
        assert!(
            message.starts_with(&format!("command line: {flag}: ")),
            "{message}"
        );
    }
}
