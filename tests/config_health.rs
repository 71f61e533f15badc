//! `[pool.health]` and the health flags: defaults, each check, located errors, the quick form,
//! overrides of a file, and the `ringlb check` summary line.

use std::time::Duration;

use ringlb::config::defaults::*;
use ringlb::config::*;

const MASK: &[usize] = &[0, 1];

/// `[pool.health]` written after it is on line 9, its first key on line 10.
const BASE: &str = r#"
[[listener]]
bind = "127.0.0.1:8080"
pool = "web"
[[pool]]
name = "web"
[[pool.backend]]
address = "127.0.0.1:9001"
"#;

fn load_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str_with(text, "t.toml", overrides, MASK)
}

/// The first pool's health, with `body` as its `[pool.health]` table.
fn health(body: &str) -> Health {
    let text = format!("{BASE}[pool.health]\n{body}");
    match load_with(&text, &Overrides::default()) {
        Ok(config) => config.pools[0].health.clone().expect("a [pool.health]"),
        Err(e) => panic!("{body:?} should be valid: {e}"),
    }
}

/// The error for `body` as the `[pool.health]` table.
fn error(body: &str) -> String {
    let text = format!("{BASE}[pool.health]\n{body}");
    match load_with(&text, &Overrides::default()) {
        Ok(config) => panic!(
            "{body:?}: expected an error, got {:?}",
            config.pools[0].health
        ),
        Err(e) => e.to_string(),
    }
}

/// Asserts the error for `body` starts with `t.toml:LINE:COL: FIELD: ` and contains `part`.
fn assert_error(body: &str, line: usize, col: usize, field: &str, part: &str) {
    let message = error(body);
    let prefix = format!("t.toml:{line}:{col}: pool[0].health.{field}: ");
    assert!(message.starts_with(&prefix), "{body:?}: {message}");
    assert!(message.contains(part), "{body:?}: {message}");
}

fn defaults(check: Check) -> Health {
    Health {
        check,
        interval: DEFAULT_HEALTH_INTERVAL,
        timeout: DEFAULT_HEALTH_TIMEOUT,
        rise: DEFAULT_HEALTH_RISE,
        fall: DEFAULT_HEALTH_FALL,
        port: None,
    }
}

fn http(path: &str, expect: StatusMatch) -> Check {
    Check::Http {
        path: path.to_owned(),
        expect,
    }
}

#[test]
fn left_out_there_is_no_check() {
    let config = load_with(BASE, &Overrides::default()).expect("valid");
    assert_eq!(config.pools[0].health, None);
    let summary = config.summary_in(MASK);
    assert!(summary.contains("\n    health: none\n"), "{summary}");
}

#[test]
fn an_empty_table_is_a_tcp_check_with_the_defaults() {
    assert_eq!(health(""), defaults(Check::Tcp));
    assert_eq!(health("check = \"tcp\"\n"), defaults(Check::Tcp));
    assert_eq!(
        (DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!((DEFAULT_HEALTH_RISE, DEFAULT_HEALTH_FALL), (2, 3));
}

#[test]
fn every_key_of_a_tcp_check() {
    let h = health(
        "check = \"tcp\"\ninterval = \"5s\"\ntimeout = \"500ms\"\nrise = 1\nfall = 100\n\
         port = 8081\n",
    );
    assert_eq!(
        h,
        Health {
            check: Check::Tcp,
            interval: Duration::from_secs(5),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 100,
            port: Some(8081),
        }
    );
}

#[test]
fn a_short_interval_alone_shortens_the_default_timeout() {
    let h = health("interval = \"500ms\"\n");
    assert_eq!(h.interval, Duration::from_millis(500));
    assert_eq!(h.timeout, Duration::from_millis(500));
    let h = health("interval = \"100ms\"\ntimeout = \"100ms\"\n");
    assert_eq!(
        (h.interval, h.timeout),
        (Duration::from_millis(100), h.interval)
    );
}

#[test]
fn send_expect_checks() {
    let h = health("check = \"send-expect\"\nsend = \"PING\\r\\n\"\nexpect = \"+PONG\"\n");
    assert_eq!(
        h.check,
        Check::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec(),
        }
    );
    // Nothing to send: a banner is awaited.
    for body in [
        "check = \"send-expect\"\nexpect = \"SSH-2.0\"\n",
        "check = \"send-expect\"\nsend = \"\"\nexpect = \"SSH-2.0\"\n",
    ] {
        assert_eq!(
            health(body).check,
            Check::SendExpect {
                send: Vec::new(),
                expect: b"SSH-2.0".to_vec(),
            }
        );
    }
}

#[test]
fn http_checks() {
    assert_eq!(
        health("check = \"http\"\n").check,
        http(DEFAULT_HEALTH_PATH, StatusMatch::Class(2))
    );
    assert_eq!(DEFAULT_HEALTH_PATH, "/");
    assert_eq!(
        health("check = \"http\"\npath = \"/healthz?full=1\"\nexpect = \"204\"\n").check,
        http("/healthz?full=1", StatusMatch::Exact(204))
    );
    assert_eq!(
        health("check = \"http\"\nexpect = \"3xx\"\n").check,
        http("/", StatusMatch::Class(3))
    );
}

#[test]
fn unknown_keys_and_checks_are_rejected() {
    let message = error("chek = \"tcp\"\n");
    assert!(
        message.starts_with("t.toml:10:1: pool[0].health.chek: "),
        "{message}"
    );
    assert!(message.contains("unknown field `chek`"), "{message}");
    assert_error(
        "check = \"ping\"\n",
        10,
        9,
        "check",
        "unknown variant `ping`",
    );
    assert_error("rise = \"two\"\n", 10, 8, "rise", "expected an integer");
}

#[test]
fn interval_and_timeout_errors_are_located() {
    assert_error(
        "interval = \"50ms\"\n",
        10,
        12,
        "interval",
        "at least 100ms",
    );
    assert_error("interval = \"2\"\n", 10, 12, "interval", "no unit");
    assert_error(
        "interval = \"0s\"\n",
        10,
        12,
        "interval",
        "longer than zero",
    );
    assert_error("timeout = \"0s\"\n", 10, 11, "timeout", "longer than zero");
    assert_error(
        "timeout = \"3s\"\n",
        10,
        11,
        "timeout",
        "must be at most the interval (2s), got \"3s\"",
    );
    assert_error(
        "interval = \"1s\"\ntimeout = \"1.5s\"\n",
        11,
        11,
        "timeout",
        "at most the interval (1s)",
    );
}

#[test]
fn rise_fall_and_port_errors_are_located() {
    assert_error("rise = 0\n", 10, 8, "rise", "between 1 and 100, got 0");
    assert_error("fall = 101\n", 10, 8, "fall", "between 1 and 100, got 101");
    assert_error("port = 0\n", 10, 8, "port", "between 1 and 65535, got 0");
    assert_error(
        "port = 65536\n",
        10,
        8,
        "port",
        "between 1 and 65535, got 65536",
    );
}

#[test]
fn a_key_of_another_check_is_an_error_naming_it() {
    assert_error(
        "send = \"PING\"\n",
        10,
        8,
        "send",
        "send is only for check = \"send-expect\", and this check is \"tcp\" (the default)",
    );
    assert_error(
        "check = \"tcp\"\nexpect = \"2xx\"\n",
        11,
        10,
        "expect",
        "this check is \"tcp\"",
    );
    assert_error(
        "check = \"http\"\nsend = \"x\"\n",
        11,
        8,
        "send",
        "this check is \"http\"",
    );
    assert_error(
        "check = \"send-expect\"\nexpect = \"x\"\npath = \"/\"\n",
        12,
        8,
        "path",
        "path is only for check = \"http\", and this check is \"send-expect\"",
    );
}

#[test]
fn send_expect_errors_are_located() {
    // Missing: at the table.
    let message = error("check = \"send-expect\"\nsend = \"PING\"\n");
    assert!(
        message.starts_with("t.toml:9:1: pool[0].health.expect: "),
        "{message}"
    );
    assert!(message.contains("needs expect"), "{message}");
    assert_error(
        "check = \"send-expect\"\nexpect = \"\"\n",
        11,
        10,
        "expect",
        "must be 1 to 1024 bytes",
    );
    let long = "x".repeat(4097);
    assert_error(
        &format!("check = \"send-expect\"\nsend = \"{long}\"\nexpect = \"x\"\n"),
        11,
        8,
        "send",
        "4097 bytes long; at most 4096",
    );
}

#[test]
fn http_errors_are_located() {
    for (path, part) in [
        ("healthz", "must start with \"/\""),
        ("/a b", "without spaces"),
        ("/a\\tb", "control characters"),
        ("/é", "visible ASCII"),
    ] {
        assert_error(
            &format!("check = \"http\"\npath = \"{path}\"\n"),
            11,
            8,
            "path",
            part,
        );
    }
    for expect in ["200 OK", "6xx", "2x", "099", "ok"] {
        assert_error(
            &format!("check = \"http\"\nexpect = \"{expect}\"\n"),
            11,
            10,
            "expect",
            "a status class such as \"2xx\"",
        );
    }
}

#[test]
fn the_table_belongs_to_the_pool_above_it() {
    let text = format!(
        "{BASE}[pool.health]\ncheck = \"http\"\n\n[[pool]]\nname = \"api\"\n\
         [[pool.backend]]\naddress = \"127.0.0.1:9101\"\n[pool.health]\nfall = 0\n"
    );
    let message = load_with(&text, &Overrides::default())
        .expect_err("fall = 0")
        .to_string();
    assert!(
        message.starts_with("t.toml:17:8: pool[1].health.fall: "),
        "{message}"
    );
}

fn quick(overrides: &Overrides) -> Result<Config, ConfigError> {
    let backend: BackendSpec = "127.0.0.1:9001".parse().expect("spec");
    Config::from_quick_with("127.0.0.1:8080", &[backend], overrides, MASK)
}

fn spec(text: &str) -> HealthCheckSpec {
    text.parse().expect("a check spec")
}

#[test]
fn health_check_specs_parse() {
    assert_eq!(spec("tcp"), HealthCheckSpec::Tcp);
    assert_eq!(spec("http"), HealthCheckSpec::Http { path: "/".into() });
    assert_eq!(
        spec("http:/healthz"),
        HealthCheckSpec::Http {
            path: "/healthz".into()
        }
    );
    for bad in ["", "udp", "send-expect", "https:/x"] {
        let message = bad.parse::<HealthCheckSpec>().expect_err(bad);
        assert!(
            message.contains("expected tcp, http or http:/PATH"),
            "{message}"
        );
    }
}

#[test]
fn quick_flags_build_the_check() {
    let config = quick(&Overrides::default()).expect("valid");
    assert_eq!(config.pools[0].health, None);
    let overrides = Overrides {
        health_check: Some(spec("http:/healthz")),
        health_interval: Some("1s".into()),
        rise: Some(5),
        fall: Some(1),
        ..Overrides::default()
    };
    let config = quick(&overrides).expect("valid");
    assert_eq!(
        config.pools[0].health,
        Some(Health {
            check: http("/healthz", StatusMatch::Class(2)),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 5,
            fall: 1,
            port: None,
        })
    );
}

#[test]
fn interval_rise_or_fall_alone_turn_on_tcp_checks() {
    for overrides in [
        Overrides {
            health_interval: Some("3s".into()),
            ..Overrides::default()
        },
        Overrides {
            rise: Some(2),
            ..Overrides::default()
        },
        Overrides {
            fall: Some(3),
            ..Overrides::default()
        },
    ] {
        let health = quick(&overrides).expect("valid").pools[0]
            .health
            .clone()
            .expect("a check");
        assert_eq!(health.check, Check::Tcp);
    }
}

#[test]
fn flag_errors_name_the_flag() {
    let cases = [
        (
            Overrides {
                health_interval: Some("10ms".into()),
                ..Overrides::default()
            },
            "command line: pool[0].health.interval (--health-interval): must be at least 100ms",
        ),
        (
            Overrides {
                health_check: Some(spec("http:healthz")),
                ..Overrides::default()
            },
            "command line: pool[0].health.path (--health-check): must start with \"/\"",
        ),
        (
            Overrides {
                rise: Some(0),
                ..Overrides::default()
            },
            "command line: pool[0].health.rise (--rise): must be between 1 and 100",
        ),
        (
            Overrides {
                fall: Some(1000),
                ..Overrides::default()
            },
            "command line: pool[0].health.fall (--fall): must be between 1 and 100",
        ),
    ];
    for (overrides, expected) in cases {
        let message = quick(&overrides).expect_err(expected).to_string();
        assert!(message.starts_with(expected), "{message}");
    }
}

#[test]
fn flags_override_every_pool_of_a_file() {
    let text = format!(
        "{BASE}[pool.health]\ncheck = \"send-expect\"\nsend = \"PING\"\nexpect = \"PONG\"\n\
         port = 7000\n\n[[pool]]\nname = \"api\"\n[[pool.backend]]\naddress = \"127.0.0.1:9101\"\n\
         [pool.health]\ncheck = \"http\"\nexpect = \"204\"\npath = \"/old\"\n\n\
         [[pool]]\nname = \"bare\"\n[[pool.backend]]\naddress = \"127.0.0.1:9201\"\n"
    );
    let overrides = Overrides {
        health_check: Some(spec("http:/new")),
        fall: Some(4),
        ..Overrides::default()
    };
    let config = load_with(&text, &overrides).expect("valid");
    let checks: Vec<&Health> = config
        .pools
        .iter()
        .map(|p| p.health.as_ref().expect("every pool is checked"))
        .collect();
    // send-expect replaced: its send and expect go; its port stays.
    assert_eq!(checks[0].check, http("/new", StatusMatch::Class(2)));
    assert_eq!(checks[0].port, Some(7000));
    // http over http: the file's expect stays, the path is the flag's.
    assert_eq!(checks[1].check, http("/new", StatusMatch::Exact(204)));
    // A pool without the table gets one.
    assert_eq!(checks[2].check, http("/new", StatusMatch::Class(2)));
    assert!(
        checks
            .iter()
            .all(|h| h.fall == 4 && h.rise == DEFAULT_HEALTH_RISE)
    );

    // --health-check tcp drops the keys a tcp check does not take.
    let overrides = Overrides {
        health_check: Some(HealthCheckSpec::Tcp),
        ..Overrides::default()
    };
    let config = load_with(&text, &overrides).expect("valid");
    assert!(
        config
            .pools
            .iter()
            .all(|p| p.health.as_ref().is_some_and(|h| h.check == Check::Tcp))
    );
}

#[test]
fn the_summary_has_one_health_line_per_pool() {
    let text = format!(
        "{BASE}[pool.health]\ncheck = \"http\"\npath = \"/healthz\"\nport = 8081\n\n\
         [[pool]]\nname = \"redis\"\n[[pool.backend]]\naddress = \"127.0.0.1:6379\"\n\
         [pool.health]\ncheck = \"send-expect\"\nsend = \"PING\\r\\n\"\nexpect = \"+PONG\"\n\
         interval = \"500ms\"\nrise = 1\nfall = 2\n\n\
         [[pool]]\nname = \"db\"\n[[pool.backend]]\naddress = \"127.0.0.1:5432\"\n\
         [pool.health]\n"
    );
    let summary = load_with(&text, &Overrides::default())
        .expect("valid")
        .summary_in(MASK);
    for line in [
        "    health: http GET /healthz expect 2xx every 2s timeout 1s rise 2 fall 3 (port 8081)\n",
        "    health: send-expect send \"PING\\r\\n\" expect \"+PONG\" every 500ms timeout 500ms \
         rise 1 fall 2\n",
        "    health: tcp every 2s timeout 1s rise 2 fall 3\n",
    ] {
        assert!(summary.contains(line), "{line:?} missing from\n{summary}");
    }
}

#[test]
fn the_example_file_checks_a_pool() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringlb.toml");
    let text = std::fs::read_to_string(path).expect("the example ships with the crate");
    let config = load_with(&text, &Overrides::default()).expect("examples/ringlb.toml is valid");
    assert!(
        config.pools.iter().any(|p| p.health.is_some()),
        "the example documents [pool.health] on a pool"
    );
}

#[test]
fn slow_start_and_passive_checks_default_off_and_parse() {
    let base =
        "[[listener]]\nbind = \"127.0.0.1:8080\"\npool = \"web\"\n[[pool]]\nname = \"web\"\n";
    let backend = "[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n";
    let config = Config::from_toml_str_with(
        &format!("{base}{backend}"),
        "t.toml",
        &Overrides::default(),
        &[0],
    )
    .expect("valid");
    let pool = &config.pools[0];
    assert_eq!(pool.slow_start, std::time::Duration::ZERO);
    assert_eq!(pool.max_fails, 0);
    assert_eq!(pool.fail_timeout, std::time::Duration::from_secs(10));
    assert!(
        config
            .summary_in(&[0])
            .contains("recovery: no slow start, no passive checks")
    );

    let text =
        format!("{base}slow_start = \"30s\"\nmax_fails = 3\nfail_timeout = \"5s\"\n{backend}");
    let config =
        Config::from_toml_str_with(&text, "t.toml", &Overrides::default(), &[0]).expect("valid");
    let pool = &config.pools[0];
    assert_eq!(pool.slow_start, std::time::Duration::from_secs(30));
    assert_eq!((pool.max_fails, pool.fail_timeout.as_secs()), (3, 5));
    assert!(config.summary_in(&[0]).contains(
        "recovery: slow_start 30s, passive checks: 3 failed connects within 5s take a backend down"
    ));

    for (bad, field) in [
        ("fail_timeout = \"0s\"", "pool[0].fail_timeout"),
        ("max_fails = -1", "pool[0].max_fails"),
        ("slow_start = \"soon\"", "pool[0].slow_start"),
    ] {
        let text = format!("{base}{bad}\n{backend}");
        let e = Config::from_toml_str_with(&text, "t.toml", &Overrides::default(), &[0])
            .expect_err(bad)
            .to_string();
        assert!(e.contains("t.toml:6:"), "{e}");
        assert!(e.contains(field), "{e}");
    }
}
