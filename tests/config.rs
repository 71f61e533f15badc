//! Configuration parsing and validation: every error names file:line:col and the field.

use std::net::SocketAddr;
use std::time::Duration;

use ringlb::config::defaults::*;
use ringlb::config::limits::*;
use ringlb::config::*;
use ringlb::core::balance::Algorithm;

#[path = "config/affinity.rs"]
mod affinity;
#[path = "config/capacity.rs"]
mod capacity;
#[path = "config/errors.rs"]
mod errors;

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
name = "a"

[[pool.backend]]
address = "127.0.0.1:9002"
name = "b"

[[pool]]
name = "api"

[[pool.backend]]
address = "127.0.0.1:9101"
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with(text, "t.toml", &Overrides::default(), MASK)
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
fn base_parses_with_defaults() {
    let config = load(BASE).expect("the base config is valid");
    assert_eq!(config.engine, EngineKind::Uring);
    assert_eq!(config.workers, Workers::Auto);
    assert_eq!(config.cpus, None);
    assert_eq!(config.timeouts.connect, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(config.timeouts.idle, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(config.timeouts.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
    let f = config.features;
    assert!(f.multishot && f.buffer_ring && f.send_bundle && f.defer_taskrun);
    assert!(f.inline_splice && f.hot_buffers && f.loopback_copy && f.inline_shutdown);
    let t = config.tuning;
    assert_eq!(t.ring_entries, DEFAULT_RING_ENTRIES);
    assert_eq!(t.buffer_count, DEFAULT_BUFFER_COUNT);
    assert_eq!(t.buffer_size, DEFAULT_BUFFER_SIZE);
    assert_eq!(t.pipe_size, DEFAULT_PIPE_SIZE);
    assert_eq!(t.pipe_pool, DEFAULT_PIPE_POOL);
    assert_eq!(t.max_pipes, DEFAULT_MAX_PIPES);
    assert_eq!(t.send_rings, DEFAULT_SEND_RINGS);
    assert_eq!(t.iowq_max_workers, DEFAULT_IOWQ_MAX_WORKERS);
    assert_eq!(t.max_connections, DEFAULT_WORKER_MAX_CONNECTIONS);
    let l = &config.listeners[0];
    assert_eq!(
        (l.mode, l.backlog, l.pool),
        (Mode::Auto, DEFAULT_BACKLOG, 0)
    );
    let p = &config.pools[0];
    assert_eq!(
        (p.algorithm, p.retries),
        (Algorithm::RoundRobin, DEFAULT_RETRIES)
    );
    assert_eq!(p.backends[0].weight, 1);
    // Auto workers: one per CPU of the mask, in order.
    assert_eq!(config.worker_cpus_in(MASK), vec![0, 1, 2, 3]);
}

#[test]
fn full_example_parses_to_the_expected_config() {
    let text = r#"
engine = "epoll"
workers = 2
cpus = [3, 1]
[timeouts]
connect = "500ms"
idle = "1.5m"
shutdown_grace = "0s"
[features]
multishot = false
buffer_ring = false
send_bundle = true
defer_taskrun = false
[tuning]
ring_entries = 1024
buffer_count = 512
buffer_size = 8192
pipe_size = "1MiB"
pipe_pool = 0
max_pipes = 64
send_rings = 16
iowq_max_workers = 2
max_connections = 1000
[[listener]]
name = "v6"
bind = "[::1]:8443"
pool = "api"
mode = "splice"
backlog = 128
admission_rate = 200
admission_burst = 40
[[pool]]
name = "web"
[[pool.backend]]
address = "10.0.0.1:80"
[[pool]]
name = "api"
algorithm = "source-hash"
retries = 7
queue_size = 64
queue_timeout = "250ms"
queue_close = "fin"
affinity = "source"
affinity_ttl = "90s"
affinity_max_entries = 5000
[[pool.backend]]
address = "[2001:db8::1]:443"
weight = 5
name = "east"
max_connections = 500
[[pool.backend]]
address = "10.0.0.2:443"
"#;
    let config = load(text).expect("valid");
    let addr = |s: &str| s.parse::<SocketAddr>().expect("test address");
    let expected = Config {
        engine: EngineKind::Epoll,
        workers: Workers::Count(2),
        cpus: Some(vec![3, 1]),
        listeners: vec![Listener {
            name: "v6".into(),
            bind: addr("[::1]:8443"),
            pool: 1,
            mode: Mode::Splice,
            backlog: 128,
            admission: Some(AdmissionRate {
                rate: 200,
                burst: 40,
            }),
            accept_proxy: false,
            inspect_timeout: ringlb::config::defaults::DEFAULT_INSPECT_TIMEOUT,
            routes: Vec::new(),
            sni_fallback: SniFallback::Default,
            freebind: false,
        }],
        udp_listeners: Vec::new(),
        pools: vec![
            Pool {
                name: "web".into(),
                algorithm: Algorithm::RoundRobin,
                backends: vec![ringlb::core::backend::BackendInfo {
                    name: "10.0.0.1:80".into(),
                    addr: addr("10.0.0.1:80"),
                    weight: 1,
                    max_connections: None,
                    send_proxy: None,
                }],
                retries: DEFAULT_RETRIES,
                health: None,
                slow_start: DEFAULT_SLOW_START,
                max_fails: DEFAULT_MAX_FAILS,
                fail_timeout: DEFAULT_FAIL_TIMEOUT,
                queue: Default::default(),
                affinity: None,
                udp: UdpFlows::default(),
            },
            Pool {
                name: "api".into(),
                algorithm: Algorithm::SourceHash,
                backends: vec![
                    ringlb::core::backend::BackendInfo {
                        name: "east".into(),
                        addr: addr("[2001:db8::1]:443"),
                        weight: 5,
                        max_connections: Some(500),
                        send_proxy: None,
                    },
                    ringlb::core::backend::BackendInfo {
                        name: "10.0.0.2:443".into(),
                        addr: addr("10.0.0.2:443"),
                        weight: 1,
                        max_connections: None,
                        send_proxy: None,
                    },
                ],
                retries: 7,
                health: None,
                slow_start: DEFAULT_SLOW_START,
                max_fails: DEFAULT_MAX_FAILS,
                fail_timeout: DEFAULT_FAIL_TIMEOUT,
                queue: Queue {
                    size: 64,
                    timeout: Duration::from_millis(250),
                    close: QueueClose::Fin,
                },
                affinity: Some(Affinity {
                    ttl: Duration::from_secs(90),
                    max_entries: 5000,
                }),
                udp: UdpFlows::default(),
            },
        ],
        timeouts: Timeouts {
            connect: Duration::from_millis(500),
            idle: Duration::from_secs(90),
            client_fin: Duration::from_secs(90),
            server_fin: Duration::from_secs(90),
            shutdown_grace: Duration::ZERO,
        },
        tcp: Tcp::default(),
        features: Features {
            multishot: false,
            buffer_ring: false,
            send_bundle: true,
            defer_taskrun: false,
            inline_splice: true,
            hot_buffers: true,
            loopback_copy: true,
            inline_shutdown: true,
        },
        tuning: Tuning {
            ring_entries: 1024,
            buffer_count: 512,
            buffer_size: 8192,
            pipe_size: 1 << 20,
            pipe_pool: 0,
            max_pipes: 64,
            send_rings: 16,
            iowq_max_workers: 2,
            max_connections: 1000,
        },
        // Checked in tests/config_limits.rs.
        connections: config.connections,
        admin: Admin::default(),
        access_log: None,
    };
    assert_eq!(config, expected);
    assert_eq!(config.worker_cpus_in(MASK), vec![3, 1]);
    let summary = config.summary_in(MASK);
    for part in [
        "epoll",
        "v6 on [::1]:8443 -> pool api (mode splice, backlog 128, admission 200/s burst 40)\n",
        "east: [2001:db8::1]:443 weight 5, max_connections 500\n",
        "    10.0.0.2:443 weight 1\n",
        "    queue: 64 waiting, timeout 250ms, close fin\n",
        "    queue: 1024 waiting, timeout 2s, close reset\n",
        "    affinity: source, ttl 90s, at most 5000 clients\n",
        "    affinity: none\n",
        "1.5m",
    ] {
        // 1.5m is written back as 90s; everything else appears as written.
        if part == "1.5m" {
            assert!(summary.contains("idle 90s"), "{summary}");
        } else {
            assert!(summary.contains(part), "{part:?} missing from\n{summary}");
        }
    }
}

#[test]
fn shipped_example_validates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringlb.toml");
    let text = std::fs::read_to_string(path).expect("the example ships with the crate");
    let config = load(&text).expect("examples/ringlb.toml is valid");
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(
        config.listeners[1].bind,
        "[::]:8081".parse().expect("literal")
    );
    assert_eq!(config.pools[1].backends[0].name, "[::1]:9101");
    // And through the file path, with the real affinity mask.
    Config::from_file(path).expect("from_file reads the example");
}

#[test]
fn backend_and_listener_names_default_to_the_address() {
    let text = BASE.replace("name = \"web\"\nbind", "bind");
    let config = load(&text).expect("valid");
    assert_eq!(config.listeners[0].name, "0.0.0.0:8080");
    assert_eq!(config.pools[1].backends[0].name, "127.0.0.1:9101");
    // The canonical form: two spellings of one IPv6 address are one identity.
    let text = BASE.replace("127.0.0.1:9101", "[0:0::1]:9101");
    assert_eq!(
        load(&text).expect("valid").pools[1].backends[0].name,
        "[::1]:9101"
    );
}

#[test]
fn ipv6_bind_works() {
    let text = BASE.replace("0.0.0.0:8080", "[::]:8080");
    let config = load(&text).expect("valid");
    assert_eq!(
        config.listeners[0].bind,
        "[::]:8080".parse().expect("literal")
    );
}

/// `BASE` with `listener` written into its listener, `pool` into pool "web" and `backend`
/// into backend "a" (each a line of keys, or empty).
fn with_keys(listener: &str, pool: &str, backend: &str) -> String {
    BASE.replace("pool = \"web\"\n", &format!("pool = \"web\"\n{listener}\n"))
        .replace(
            "[[pool]]\nname = \"web\"\n",
            &format!("[[pool]]\nname = \"web\"\n{pool}\n"),
        )
        .replace("name = \"a\"\n", &format!("name = \"a\"\n{backend}\n"))
}

/// Asserts the error points at the value of `line` (`key = value`, written once in `text`),
/// names `field`, and mentions each of `words`.
fn assert_value_error(text: &str, line: &str, field: &str, words: &[&str]) {
    let (key, _) = line.split_once(" = ").expect("key = value");
    let start = text
        .find(&format!("\n{line}\n"))
        .unwrap_or_else(|| panic!("{line:?} not in the text"));
    let value = start + 1 + key.len() + " = ".len();
    let before = &text[..value];
    let location = format!(
        "t.toml:{}:{}",
        before.matches('\n').count() + 1,
        value - before.rfind('\n').map_or(0, |i| i + 1) + 1
    );
    assert_located(&error(text), &location, field, words);
}

fn load_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str_with(text, "t.toml", overrides, MASK)
}

/// `text` with each of `lines`, which it must hold exactly once commented out (`# line`),
/// uncommented.
fn uncomment(text: &str, lines: &[&str]) -> String {
    let mut uncommented = text.to_owned();
    for line in lines {
        let commented = format!("\n# {line}");
        assert_eq!(
            text.matches(&commented).count(),
            1,
            "{line:?} once, commented"
        );
        uncommented = uncommented.replace(&commented, &format!("\n{line}"));
    }
    uncommented
}

#[test]
fn send_proxy_on_a_backend_wins_over_its_pools_and_the_flag_sets_every_pool() {
    use ringlb::core::proxy_header::ProxyVersion;
    let text = with_keys("", "send_proxy = \"v2\"", "send_proxy = \"v1\"");
    let config = load(&text).expect("valid");
    let web = &config.pools[0];
    let versions: Vec<_> = web.backends.iter().map(|b| b.send_proxy).collect();
    assert_eq!(
        versions,
        [Some(ProxyVersion::V1), Some(ProxyVersion::V2)],
        "a: its own; b: the pool's"
    );
    assert!(
        config.pools[1]
            .backends
            .iter()
            .all(|b| b.send_proxy.is_none())
    );
    let overrides = Overrides {
        send_proxy: Some(ringlb::config::raw::ProxyName::V1),
        ..Overrides::default()
    };
    let config = load_with(BASE, &overrides).expect("valid");
    assert!(
        config
            .pools
            .iter()
            .flat_map(|p| &p.backends)
            .all(|b| b.send_proxy == Some(ProxyVersion::V1))
    );
    let text = with_keys("", "send_proxy = \"v3\"", "");
    let message = error(&text);
    assert!(message.contains("send_proxy"), "{message}");
    assert!(message.starts_with("t.toml:"), "{message}");
}
