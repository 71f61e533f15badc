//! Configuration parsing and validation: every error names file:line:col and the field.

use std::net::SocketAddr;
use std::time::Duration;

use ringlb::config::defaults::*;
use ringlb::config::limits::*;
use ringlb::config::*;
use ringlb::core::balance::Algorithm;

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
            loopback_copy: false,
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

#[test]
fn duplicate_listener_name() {
    let text =
        format!("{BASE}\n[[listener]]\nname = \"web\"\nbind = \"0.0.0.0:8081\"\npool = \"api\"\n");
    assert_error(
        &text,
        "\"web\"",
        3,
        "listener[1].name",
        &["duplicate listener name \"web\"", "t.toml:3:8"],
    );
}

#[test]
fn unknown_pool() {
    let text =
        format!("{BASE}\n[[listener]]\nname = \"x\"\nbind = \"0.0.0.0:8081\"\npool = \"nope\"\n");
    assert_error(
        &text,
        "\"nope\"",
        0,
        "listener[1].pool",
        &["unknown pool \"nope\" (defined pools: web, api)"],
    );
}

#[test]
fn zero_weight() {
    let text = BASE.replace("name = \"b\"", "name = \"b\"\nweight = 0");
    assert_error(
        &text,
        "0\n",
        0,
        "pool[0].backend[1].weight",
        &["between 1 and 65535", "got 0"],
    );
}

#[test]
fn bad_address() {
    let text = BASE.replace("127.0.0.1:9002", "localhost:9002");
    assert_error(
        &text,
        "\"localhost",
        0,
        "pool[0].backend[1].address",
        &["bad address", "IP:port"],
    );
    let text = BASE.replace("127.0.0.1:9002", "127.0.0.1:0");
    assert_error(
        &text,
        "\"127.0.0.1:0\"",
        0,
        "pool[0].backend[1].address",
        &["port 0"],
    );
    let text = BASE.replace("0.0.0.0:8080", "0.0.0.0");
    assert_error(
        &text,
        "\"0.0.0.0\"",
        0,
        "listener[0].bind",
        &["bad address"],
    );
}

#[test]
fn unknown_key() {
    let text = BASE.replace("name = \"b\"", "name = \"b\"\nwieght = 2");
    assert_error(
        &text,
        "wieght",
        0,
        "pool[0].backend[1].wieght",
        &["unknown field `wieght`", "weight"],
    );
    let text = format!("colour = \"blue\"\n{BASE}");
    assert_error(&text, "colour", 0, "colour", &["unknown field"]);
    let text = format!("[tuning]\nring_entry = 8\n{BASE}");
    assert_error(
        &text,
        "ring_entry",
        0,
        "tuning.ring_entry",
        &["unknown field"],
    );
}

#[test]
fn wrong_types_name_the_field() {
    let text = BASE.replace("name = \"b\"", "name = \"b\"\nweight = \"heavy\"");
    assert_error(
        &text,
        "\"heavy\"",
        0,
        "pool[0].backend[1].weight",
        &["expected an integer"],
    );
    let text = format!("[features]\nmultishot = \"yes\"\n{BASE}");
    assert_error(
        &text,
        "\"yes\"",
        0,
        "features.multishot",
        &["true or false"],
    );
    let text = format!("engine = \"nope\"\n{BASE}");
    assert_error(
        &text,
        "\"nope\"",
        0,
        "engine",
        &["uring", "epoll", "blocking"],
    );
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nalgorithm = \"fastest\"");
    assert_error(
        &text,
        "\"fastest\"",
        0,
        "pool[1].algorithm",
        &["round-robin", "source-hash"],
    );
    let text = BASE.replace("pool = \"web\"", "pool = \"web\"\nmode = \"teleport\"");
    assert_error(
        &text,
        "\"teleport\"",
        0,
        "listener[0].mode",
        &["copy", "splice", "auto"],
    );
}

#[test]
fn missing_required_field() {
    let text = BASE.replace("bind = \"0.0.0.0:8080\"\n", "");
    let message = error(&text);
    assert!(message.starts_with("t.toml:"), "{message}");
    assert!(
        message.contains("listener[0]") && message.contains("missing field `bind`"),
        "{message}"
    );
}

#[test]
fn duplicate_backend_names() {
    let text = BASE.replace("name = \"b\"", "name = \"a\"");
    assert_error(
        &text,
        "\"a\"",
        1,
        "pool[0].backend[1].name",
        &["duplicate backend name \"a\""],
    );
    // Defaulted names collide when the address repeats.
    let text = format!("{BASE}\n[[pool.backend]]\naddress = \"127.0.0.1:9101\"\n");
    assert_error(
        &text,
        "\"127.0.0.1:9101\"",
        1,
        "pool[1].backend[1].name",
        &["duplicate backend name"],
    );
}

#[test]
fn duplicate_pool_names() {
    let text = BASE.replace("name = \"api\"", "name = \"web\"");
    assert_error(
        &text,
        "\"web\"",
        3,
        "pool[1].name",
        &["duplicate pool name \"web\""],
    );
}

#[test]
fn retries_too_large() {
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nretries = 8");
    assert_error(
        &text,
        "8\n",
        0,
        "pool[1].retries",
        &["between 0 and 7", "8 candidates"],
    );
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nretries = -1");
    assert_error(&text, "-1", 0, "pool[1].retries", &["between 0 and 7"]);
}

#[test]
fn workers_zero_and_bad() {
    let text = format!("workers = 0\n{BASE}");
    assert_error(&text, "0\n", 0, "workers", &["\"auto\" or between 1 and"]);
    let text = format!("workers = \"many\"\n{BASE}");
    assert_error(&text, "\"many\"", 0, "workers", &["\"auto\" or an integer"]);
    let text = format!("workers = 3\n{BASE}");
    assert_eq!(load(&text).expect("valid").workers, Workers::Count(3));
}

#[test]
fn bad_durations() {
    for bad in [
        "\"2\"",
        "\"2 parsecs\"",
        "\"\"",
        "\"-1s\"",
        "\"1..5s\"",
        "\"169h\"",
        "\"0s\"",
    ] {
        let text = format!("[timeouts]\nconnect = {bad}\n{BASE}");
        assert_error(&text, bad, 0, "timeouts.connect", &[]);
    }
    let text = format!("[timeouts]\nidle = 300\n{BASE}");
    assert_error(&text, "300", 0, "timeouts.idle", &["expected a string"]);
    // Zero is allowed only for the shutdown grace.
    let text = format!("[timeouts]\nshutdown_grace = \"0s\"\n{BASE}");
    assert_eq!(
        load(&text).expect("valid").timeouts.shutdown_grace,
        Duration::ZERO
    );
}

#[test]
fn pool_without_backends() {
    let text = format!("{BASE}\n[[pool]]\nname = \"empty\"\n");
    let message = error(&text);
    let line = BASE.lines().count() + 2;
    assert!(message.starts_with(&format!("t.toml:{line}:")), "{message}");
    assert!(
        message.contains("pool[2].backend: pool \"empty\" has no backends"),
        "{message}"
    );
}

#[test]
fn duplicate_bind_addresses() {
    let text = format!(
        "{BASE}\n[[listener]]\nname = \"other\"\nbind = \"0.0.0.0:8080\"\npool = \"api\"\n"
    );
    assert_error(
        &text,
        "\"0.0.0.0:8080\"",
        1,
        "listener[1].bind",
        &["duplicate bind address"],
    );
}

#[test]
fn no_listener() {
    let message = error("[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"127.0.0.1:1\"\n");
    assert_eq!(
        message,
        "t.toml: listener: no [[listener]] is defined; at least one is needed"
    );
}

#[test]
fn tuning_checks() {
    let text = format!("[tuning]\nring_entries = 3000\n{BASE}");
    assert_error(
        &text,
        "3000",
        0,
        "tuning.ring_entries",
        &["power of two such as 2048 or 4096"],
    );
    // One entry cannot hold a connect and its linked timeout; the kernel takes at most 32768.
    for (n, bound) in [("1", "2"), ("65536", "32768")] {
        let text = format!("[tuning]\nring_entries = {n}\n{BASE}");
        let words = ["between 2 and 32768", "queued together as 2 entries", bound];
        assert_error(&text, n, 0, "tuning.ring_entries", &words);
    }
    let text = format!("[tuning]\nbuffer_count = 65536\n{BASE}");
    assert_error(
        &text,
        "65536",
        0,
        "tuning.buffer_count",
        &["between 1 and 32768"],
    );
    let text = format!("[tuning]\npipe_size = \"256KB\"\n{BASE}");
    assert_error(&text, "\"256KB\"", 0, "tuning.pipe_size", &["unknown unit"]);
    let text = format!("[tuning]\npipe_size = 100\n{BASE}");
    assert_error(&text, "100", 0, "tuning.pipe_size", &["between 4096"]);
    let text = format!("[tuning]\nbuffer_count = 32768\nbuffer_size = \"64KiB\"\n{BASE}");
    assert_error(&text, "\"64KiB\"", 0, "tuning.buffer_size", &["at most"]);
    let text = format!("[tuning]\nsend_rings = 5000\n{BASE}");
    assert_error(
        &text,
        "5000",
        0,
        "tuning.send_rings",
        &["between 0 and 4096"],
    );
}

#[test]
fn cpus_are_checked_against_the_mask() {
    let text = format!("cpus = [0, 9]\n{BASE}");
    assert_error(
        &text,
        "9",
        0,
        "cpus[1]",
        &["CPU 9 is not in this process's affinity mask (available: 0-3)"],
    );
    let text = format!("workers = 3\ncpus = [0, 1]\n{BASE}");
    assert_error(
        &text,
        "[0, 1]",
        0,
        "cpus",
        &["lists 2 CPUs but workers = 3"],
    );
    let text = format!("cpus = [1, 1]\n{BASE}");
    assert_error(&text, "1]", 0, "cpus[1]", &["duplicate CPU"]);
    let text = format!("cpus = []\n{BASE}");
    assert_error(&text, "[]", 0, "cpus", &["at least one"]);
    // auto with a list: one worker per listed CPU.
    let text = format!("cpus = [2, 0]\n{BASE}");
    assert_eq!(load(&text).expect("valid").worker_cpus_in(MASK), vec![2, 0]);
    // A fixed count beyond the mask wraps around it.
    let text = format!("workers = 3\n{BASE}");
    assert_eq!(
        load(&text).expect("valid").worker_cpus_in(&[5, 7]),
        vec![5, 7, 5]
    );
}

#[test]
fn syntax_error_has_a_position() {
    let message = error("engine = \n");
    assert!(message.starts_with("t.toml:1:"), "{message}");
    assert!(message.contains("invalid TOML"), "{message}");
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

#[test]
fn queue_admission_and_backend_limits_default() {
    let config = load(BASE).expect("valid");
    for pool in &config.pools {
        assert_eq!(
            pool.queue,
            Queue {
                size: DEFAULT_QUEUE_SIZE,
                timeout: DEFAULT_QUEUE_TIMEOUT,
                close: QueueClose::Reset,
            }
        );
        assert!(pool.backends.iter().all(|b| b.max_connections.is_none()));
    }
    assert_eq!(config.listeners[0].admission, None);
    assert_eq!(DEFAULT_QUEUE_TIMEOUT, Duration::from_secs(2));
}

#[test]
fn queue_keys_parse() {
    let text = with_keys(
        "",
        "queue_size = 0\nqueue_timeout = \"500ms\"\nqueue_close = \"fin\"",
        "",
    );
    let config = load(&text).expect("valid");
    assert_eq!(
        config.pools[0].queue,
        Queue {
            size: 0,
            timeout: Duration::from_millis(500),
            close: QueueClose::Fin,
        }
    );
    // The other pool keeps the defaults.
    assert_eq!(config.pools[1].queue, Queue::default());
    let max =
        format!("queue_size = {MAX_QUEUE_SIZE}\nqueue_timeout = \"1h\"\nqueue_close = \"reset\"");
    let config = load(&with_keys("", &max, "")).expect("valid");
    assert_eq!(
        config.pools[0].queue,
        Queue {
            size: MAX_QUEUE_SIZE,
            timeout: MAX_QUEUE_TIMEOUT,
            close: QueueClose::Reset,
        }
    );
}

#[test]
fn queue_bounds_name_the_field() {
    let too_many = format!("queue_size = {}", u64::from(MAX_QUEUE_SIZE) + 1);
    for (line, words) in [
        ("queue_size = -1", &["between 0 and 1048576, got -1"][..]),
        (too_many.as_str(), &["between 0 and 1048576"][..]),
        ("queue_timeout = \"0s\"", &["longer than zero"][..]),
        ("queue_timeout = \"61m\"", &["at most 1h", "\"61m\""][..]),
        ("queue_timeout = \"soon\"", &[][..]),
        ("queue_timeout = 2", &["expected a string"][..]),
        ("queue_close = \"drop\"", &["reset", "fin"][..]),
    ] {
        let text = with_keys("", line, "");
        let field = format!("pool[0].{}", line.split_once(" = ").expect("key").0);
        assert_value_error(&text, line, &field, words);
    }
}

#[test]
fn admission_keys_parse() {
    let config = load(&with_keys("admission_rate = 1000", "", "")).expect("valid");
    // Left out, the burst is a tenth of the rate.
    assert_eq!(
        config.listeners[0].admission,
        Some(AdmissionRate {
            rate: 1000,
            burst: 1000 / DEFAULT_ADMISSION_BURST_DIVISOR,
        })
    );
    // ... and never below 1.
    let config = load(&with_keys("admission_rate = 5", "", "")).expect("valid");
    assert_eq!(
        config.listeners[0].admission,
        Some(AdmissionRate { rate: 5, burst: 1 })
    );
    let config = load(&with_keys(
        "admission_rate = 1\nadmission_burst = 50",
        "",
        "",
    ))
    .expect("valid");
    assert_eq!(
        config.listeners[0].admission,
        Some(AdmissionRate { rate: 1, burst: 50 })
    );
    let max =
        format!("admission_rate = {MAX_ADMISSION_RATE}\nadmission_burst = {MAX_ADMISSION_RATE}");
    let config = load(&with_keys(&max, "", "")).expect("valid");
    assert_eq!(
        config.listeners[0].admission,
        Some(AdmissionRate {
            rate: MAX_ADMISSION_RATE,
            burst: MAX_ADMISSION_RATE,
        })
    );
}

#[test]
fn admission_bounds_name_the_field() {
    let over = u64::from(MAX_ADMISSION_RATE) + 1;
    let rate_over = format!("admission_rate = {over}");
    let burst_over = format!("admission_burst = {over}");
    for (rate, line) in [
        ("", "admission_rate = 0"),
        ("", rate_over.as_str()),
        ("", "admission_rate = -5"),
        ("admission_rate = 100\n", "admission_burst = 0"),
        ("admission_rate = 100\n", burst_over.as_str()),
    ] {
        let text = with_keys(&format!("{rate}{line}"), "", "");
        let field = format!("listener[0].{}", line.split_once(" = ").expect("key").0);
        assert_value_error(&text, line, &field, &["between 1 and 10000000"]);
    }
    let text = with_keys("admission_rate = \"fast\"", "", "");
    assert_value_error(
        &text,
        "admission_rate = \"fast\"",
        "listener[0].admission_rate",
        &["expected an integer"],
    );
}

#[test]
fn admission_burst_needs_a_rate() {
    let text = with_keys("admission_burst = 10", "", "");
    assert_value_error(
        &text,
        "admission_burst = 10",
        "listener[0].admission_burst",
        &["needs admission_rate"],
    );
}

#[test]
fn backend_max_connections_parse_and_are_bounded() {
    let config = load(&with_keys("", "", "max_connections = 100")).expect("valid");
    let backends = &config.pools[0].backends;
    assert_eq!(
        (backends[0].max_connections, backends[1].max_connections),
        (Some(100), None)
    );
    let max = format!("max_connections = {MAX_PROCESS_CONNECTIONS}");
    let config = load(&with_keys("", "", &max)).expect("valid");
    assert_eq!(
        config.pools[0].backends[0].max_connections,
        Some(MAX_PROCESS_CONNECTIONS)
    );
    let over = format!(
        "max_connections = {}",
        u64::from(MAX_PROCESS_CONNECTIONS) + 1
    );
    for line in ["max_connections = 0", "max_connections = -1", over.as_str()] {
        let text = with_keys("", "", line);
        assert_value_error(
            &text,
            line,
            "pool[0].backend[0].max_connections",
            &["between 1 and 1073741824"],
        );
    }
}

#[test]
fn backend_spec_takes_max_connections() {
    use ringlb::config::quick::SpecError;
    let spec = |s: &str| s.parse::<BackendSpec>();
    assert_eq!(
        spec("127.0.0.1:9001,weight=2,max_connections=100"),
        Ok(BackendSpec {
            address: "127.0.0.1:9001".into(),
            weight: Some(2),
            name: None,
            max_connections: Some(100),
        })
    );
    assert_eq!(
        spec("127.0.0.1:9001, max_connections = 7 ,name=a").map(|s| s.max_connections),
        Ok(Some(7))
    );
    assert_eq!(
        spec("127.0.0.1:9001,max_connections=x"),
        Err(SpecError::BadMaxConnections("x".into()))
    );
    assert_eq!(
        spec("127.0.0.1:9001,max_connections=1,max_connections=2"),
        Err(SpecError::Repeated("max_connections"))
    );
    let unknown = spec("127.0.0.1:9001,max_conns=1")
        .expect_err("unknown key")
        .to_string();
    assert!(
        unknown.contains("weight, name or max_connections"),
        "{unknown}"
    );

    // The quick form validates it as a file would.
    let backends: Vec<BackendSpec> = ["127.0.0.1:9001,max_connections=100", "127.0.0.1:9002"]
        .iter()
        .map(|s| s.parse().expect("valid spec"))
        .collect();
    let config = Config::from_quick_with("127.0.0.1:8080", &backends, &Overrides::default(), MASK)
        .expect("valid");
    let b = &config.pools[0].backends;
    assert_eq!(
        (b[0].max_connections, b[1].max_connections),
        (Some(100), None)
    );
    for bad in ["max_connections=0", "max_connections=1073741825"] {
        let zero: BackendSpec = format!("127.0.0.1:9001,{bad}").parse().expect("splits");
        let message = Config::from_quick_with("127.0.0.1:80", &[zero], &Overrides::default(), MASK)
            .expect_err(bad)
            .to_string();
        assert!(
            message.starts_with(
                "command line: pool[0].backend[0].max_connections (--backend): must be between \
                 1 and 1073741824"
            ),
            "{message}"
        );
    }

    // And so does the admin API's `add POOL SPEC`.
    let added = backend_from_spec(&spec("127.0.0.1:9003,max_connections=5").expect("splits"))
        .expect("valid");
    assert_eq!(added.max_connections, Some(5));
    let refused = backend_from_spec(&spec("127.0.0.1:9003,max_connections=0").expect("splits"))
        .expect_err("zero");
    assert!(
        refused.starts_with("max_connections: must be between 1 and 1073741824"),
        "{refused}"
    );
}

#[test]
fn summary_shows_an_empty_queue_and_no_admission() {
    let config = load(&with_keys("", "queue_size = 0\nqueue_close = \"fin\"", "")).expect("valid");
    let summary = config.summary_in(MASK);
    for line in [
        "  web on 0.0.0.0:8080 -> pool web (mode auto, backlog 4096)\n",
        "    queue: none (turned away at once, close fin)\n",
        "    a: 127.0.0.1:9001 weight 1\n",
    ] {
        assert!(summary.contains(line), "{line:?} missing from\n{summary}");
    }
}

fn load_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str_with(text, "t.toml", overrides, MASK)
}

#[test]
fn queue_and_admission_flags_override_the_file() {
    let text = with_keys(
        "admission_rate = 100\nadmission_burst = 50",
        "queue_size = 10\nqueue_timeout = \"1s\"\nqueue_close = \"fin\"",
        "",
    );
    let flags = Overrides {
        queue_size: Some(20),
        queue_timeout: Some("5s".into()),
        admission_rate: Some(1000),
        ..Overrides::default()
    };
    let config = load_with(&text, &flags).expect("valid");
    // Every pool, the one without queue keys too; the file's queue_close stays.
    assert_eq!(
        config.pools[0].queue,
        Queue {
            size: 20,
            timeout: Duration::from_secs(5),
            close: QueueClose::Fin,
        }
    );
    assert_eq!(
        config.pools[1].queue,
        Queue {
            size: 20,
            timeout: Duration::from_secs(5),
            close: QueueClose::Reset,
        }
    );
    // The file's burst stays with the flag's rate.
    assert_eq!(
        config.listeners[0].admission,
        Some(AdmissionRate {
            rate: 1000,
            burst: 50,
        })
    );
    let flags = Overrides {
        admission_burst: Some(7),
        ..Overrides::default()
    };
    let config = load_with(&text, &flags).expect("valid");
    assert_eq!(
        config.listeners[0].admission,
        Some(AdmissionRate {
            rate: 100,
            burst: 7
        })
    );
    // Every listener, in the quick form too.
    let backends = ["127.0.0.1:9001".parse().expect("spec")];
    let flags = Overrides {
        admission_rate: Some(30),
        queue_size: Some(0),
        ..Overrides::default()
    };
    let config = Config::from_quick_with("127.0.0.1:8080", &backends, &flags, MASK).expect("valid");
    assert_eq!(
        config.listeners[0].admission,
        Some(AdmissionRate { rate: 30, burst: 3 })
    );
    assert_eq!(config.pools[0].queue.size, 0);
}

#[test]
fn queue_and_admission_flag_errors_name_the_flag() {
    for (flags, expected) in [
        (
            Overrides {
                queue_size: Some(-1),
                ..Overrides::default()
            },
            "command line: pool[0].queue_size (--queue-size): must be between 0 and 1048576",
        ),
        (
            Overrides {
                queue_timeout: Some("2h".into()),
                ..Overrides::default()
            },
            "command line: pool[0].queue_timeout (--queue-timeout): must be at most 1h",
        ),
        (
            Overrides {
                queue_timeout: Some("0s".into()),
                ..Overrides::default()
            },
            "command line: pool[0].queue_timeout (--queue-timeout): must be longer than zero",
        ),
        (
            Overrides {
                admission_rate: Some(0),
                ..Overrides::default()
            },
            "command line: listener[0].admission_rate (--admission-rate): must be between 1 \
             and 10000000",
        ),
        (
            Overrides {
                admission_rate: Some(10),
                admission_burst: Some(10_000_001),
                ..Overrides::default()
            },
            "command line: listener[0].admission_burst (--admission-burst): must be between 1 \
             and 10000000",
        ),
        (
            Overrides {
                admission_burst: Some(5),
                ..Overrides::default()
            },
            "command line: listener[0].admission_burst (--admission-burst): needs \
             admission_rate",
        ),
    ] {
        let message = load_with(BASE, &flags).expect_err(expected).to_string();
        assert!(message.starts_with(expected), "{message}");
    }
}

/// The example shows the queue keys at their defaults, and its commented-out admission and
/// backend limit keys validate once uncommented, to the values the comments promise.
#[test]
fn the_example_documents_the_queue_keys() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringlb.toml");
    let text = std::fs::read_to_string(path).expect("the example ships with the crate");
    let config = load(&text).expect("examples/ringlb.toml is valid");
    assert!(config.pools.iter().all(|p| p.queue == Queue::default()));
    assert!(config.listeners.iter().all(|l| l.admission.is_none()));
    for line in [
        "queue_size = 1024\n",
        "queue_timeout = \"2s\"\n",
        "queue_close = \"reset\"\n",
    ] {
        assert!(text.contains(&format!("\n{line}")), "{line:?} not shown");
    }
    let uncommented = uncomment(
        &text,
        &[
            "admission_rate = 1000\n",
            "admission_burst = 100\n",
            "max_connections = 100\n",
        ],
    );
    let config = load(&uncommented).expect("valid once uncommented");
    assert_eq!(
        config.listeners[0].admission,
        Some(AdmissionRate {
            rate: 1000,
            burst: 100,
        })
    );
    assert_eq!(config.pools[0].backends[0].max_connections, Some(100));
    // The burst shown is the default for the rate shown.
    let text = uncommented.replace("\nadmission_burst = 100\n", "\n");
    assert_eq!(
        load(&text).expect("valid").listeners[0].admission,
        config.listeners[0].admission
    );
}

#[test]
fn affinity_is_off_by_default_and_source_fills_in_the_defaults() {
    let config = load(BASE).expect("valid");
    assert!(config.pools.iter().all(|p| p.affinity.is_none()));
    let config = load(&with_keys("", "affinity = \"none\"", "")).expect("valid");
    assert_eq!(config.pools[0].affinity, None);
    let config = load(&with_keys("", "affinity = \"source\"", "")).expect("valid");
    assert_eq!(
        config.pools[0].affinity,
        Some(Affinity {
            ttl: DEFAULT_AFFINITY_TTL,
            max_entries: DEFAULT_AFFINITY_MAX_ENTRIES,
        })
    );
    // The other pool stays without.
    assert_eq!(config.pools[1].affinity, None);
    assert_eq!(DEFAULT_AFFINITY_TTL, Duration::from_secs(30 * 60));
    assert_eq!(DEFAULT_AFFINITY_MAX_ENTRIES, 100_000);
}

#[test]
fn affinity_keys_parse() {
    let keys = "affinity = \"source\"\naffinity_ttl = \"10m\"\naffinity_max_entries = 2000";
    let config = load(&with_keys("", keys, "")).expect("valid");
    assert_eq!(
        config.pools[0].affinity,
        Some(Affinity {
            ttl: Duration::from_secs(600),
            max_entries: 2000,
        })
    );
    // Each key alone keeps the other's default.
    let keys = "affinity = \"source\"\naffinity_ttl = \"1.5s\"";
    let config = load(&with_keys("", keys, "")).expect("valid");
    assert_eq!(
        config.pools[0].affinity,
        Some(Affinity {
            ttl: Duration::from_millis(1500),
            max_entries: DEFAULT_AFFINITY_MAX_ENTRIES,
        })
    );
    let keys = "affinity = \"source\"\naffinity_max_entries = 1";
    let config = load(&with_keys("", keys, "")).expect("valid");
    assert_eq!(
        config.pools[0].affinity,
        Some(Affinity {
            ttl: DEFAULT_AFFINITY_TTL,
            max_entries: 1,
        })
    );
    // The bounds themselves are accepted.
    let keys = format!(
        "affinity = \"source\"\naffinity_ttl = \"24h\"\naffinity_max_entries = \
         {MAX_AFFINITY_MAX_ENTRIES}"
    );
    let config = load(&with_keys("", &keys, "")).expect("valid");
    assert_eq!(
        config.pools[0].affinity,
        Some(Affinity {
            ttl: MAX_AFFINITY_TTL,
            max_entries: MAX_AFFINITY_MAX_ENTRIES,
        })
    );
}

#[test]
fn affinity_bounds_name_the_field() {
    let over = format!(
        "affinity_max_entries = {}",
        u64::from(MAX_AFFINITY_MAX_ENTRIES) + 1
    );
    for (line, words) in [
        ("affinity_ttl = \"0s\"", &["longer than zero"][..]),
        ("affinity_ttl = \"25h\"", &["at most 24h", "\"25h\""][..]),
        ("affinity_ttl = \"1441m\"", &["at most 24h"][..]),
        ("affinity_ttl = \"soon\"", &[][..]),
        ("affinity_ttl = 60", &["expected a string"][..]),
        (
            "affinity_max_entries = 0",
            &["between 1 and 16777216, got 0"][..],
        ),
        (
            "affinity_max_entries = -1",
            &["between 1 and 16777216, got -1"][..],
        ),
        (over.as_str(), &["between 1 and 16777216"][..]),
        (
            "affinity_max_entries = \"many\"",
            &["expected an integer"][..],
        ),
    ] {
        let text = with_keys("", &format!("affinity = \"source\"\n{line}"), "");
        let field = format!("pool[0].{}", line.split_once(" = ").expect("key").0);
        assert_value_error(&text, line, &field, words);
    }
    let text = with_keys("", "affinity = \"cookie\"", "");
    assert_value_error(
        &text,
        "affinity = \"cookie\"",
        "pool[0].affinity",
        &["none", "source"],
    );
}

#[test]
fn affinity_table_keys_need_affinity_source() {
    for (affinity, line) in [
        ("", "affinity_ttl = \"5m\""),
        ("", "affinity_max_entries = 10"),
        ("affinity = \"none\"\n", "affinity_ttl = \"5m\""),
        ("affinity = \"none\"\n", "affinity_max_entries = 10"),
    ] {
        let text = with_keys("", &format!("{affinity}{line}"), "");
        let field = format!("pool[0].{}", line.split_once(" = ").expect("key").0);
        assert_value_error(&text, line, &field, &["needs affinity = \"source\""]);
    }
    // Checked before their own bounds: the missing switch is the mistake to fix first.
    let text = with_keys("", "affinity_ttl = \"0s\"", "");
    assert_value_error(
        &text,
        "affinity_ttl = \"0s\"",
        "pool[0].affinity_ttl",
        &["needs affinity = \"source\"", "left out"],
    );
    // On the second pool, the field names it.
    let text = BASE.replace(
        "[[pool]]\nname = \"api\"\n",
        "[[pool]]\nname = \"api\"\naffinity_max_entries = 10\n",
    );
    assert_value_error(
        &text,
        "affinity_max_entries = 10",
        "pool[1].affinity_max_entries",
        &["needs affinity = \"source\"", "affinity is left out"],
    );
}

#[test]
fn summary_shows_each_pools_affinity() {
    let config = load(&with_keys("", "affinity = \"source\"", "")).expect("valid");
    let summary = config.summary_in(MASK);
    for line in [
        "    queue: 1024 waiting, timeout 2s, close reset\n    affinity: source, ttl 30m, at \
         most 100000 clients\n",
        "  api: round-robin, retries 2, 1 backend(s)",
        "    affinity: none\n",
    ] {
        assert!(summary.contains(line), "{line:?} missing from\n{summary}");
    }
    // The pool with affinity comes first, the one without second.
    let web = summary.find("    affinity: source").expect("web's line");
    let api = summary.find("    affinity: none").expect("api's line");
    assert!(web < api, "{summary}");
}

#[test]
fn affinity_ttl_flag_turns_affinity_on_and_overrides_the_file() {
    // The quick form has no other way to turn it on.
    let backends = ["127.0.0.1:9001".parse().expect("spec")];
    let config = Config::from_quick_with("127.0.0.1:8080", &backends, &Overrides::default(), MASK)
        .expect("valid");
    assert_eq!(config.pools[0].affinity, None);
    let flags = Overrides {
        affinity_ttl: Some("5m".into()),
        ..Overrides::default()
    };
    let config = Config::from_quick_with("127.0.0.1:8080", &backends, &flags, MASK).expect("valid");
    assert_eq!(
        config.pools[0].affinity,
        Some(Affinity {
            ttl: Duration::from_secs(300),
            max_entries: DEFAULT_AFFINITY_MAX_ENTRIES,
        })
    );
    // With a file: every pool, the one with affinity = "none" and the one without the key;
    // the file's ttl is replaced and its affinity_max_entries kept.
    let text = with_keys(
        "",
        "affinity = \"source\"\naffinity_ttl = \"1h\"\naffinity_max_entries = 50",
        "",
    )
    .replace(
        "[[pool]]\nname = \"api\"\n",
        "[[pool]]\nname = \"api\"\naffinity = \"none\"\n",
    );
    let flags = Overrides {
        affinity_ttl: Some("90s".into()),
        ..Overrides::default()
    };
    let config = load_with(&text, &flags).expect("valid");
    assert_eq!(
        config.pools[0].affinity,
        Some(Affinity {
            ttl: Duration::from_secs(90),
            max_entries: 50,
        })
    );
    assert_eq!(
        config.pools[1].affinity,
        Some(Affinity {
            ttl: Duration::from_secs(90),
            max_entries: DEFAULT_AFFINITY_MAX_ENTRIES,
        })
    );
    // A file's affinity_max_entries that lacked affinity = "source" is valid with the flag.
    let text = with_keys("", "affinity_max_entries = 7", "");
    let config = load_with(&text, &flags).expect("valid");
    assert_eq!(
        config.pools[0].affinity,
        Some(Affinity {
            ttl: Duration::from_secs(90),
            max_entries: 7,
        })
    );
}

#[test]
fn affinity_ttl_flag_errors_name_the_flag() {
    for (ttl, expected) in [
        (
            "25h",
            "command line: pool[0].affinity_ttl (--affinity-ttl): must be at most 24h, got \
             \"25h\"",
        ),
        (
            "0s",
            "command line: pool[0].affinity_ttl (--affinity-ttl): must be longer than zero",
        ),
        (
            "soon",
            "command line: pool[0].affinity_ttl (--affinity-ttl): ",
        ),
    ] {
        let flags = Overrides {
            affinity_ttl: Some(ttl.into()),
            ..Overrides::default()
        };
        let message = load_with(BASE, &flags).expect_err(expected).to_string();
        assert!(message.starts_with(expected), "{message}");
    }
}

/// The example's commented-out affinity keys validate once uncommented, to the defaults the
/// comments promise; left commented, no pool is sticky.
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
fn the_example_documents_the_affinity_keys() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringlb.toml");
    let text = std::fs::read_to_string(path).expect("the example ships with the crate");
    let config = load(&text).expect("examples/ringlb.toml is valid");
    assert!(config.pools.iter().all(|p| p.affinity.is_none()));
    let uncommented = uncomment(
        &text,
        &[
            "affinity = \"source\"\n",
            "affinity_ttl = \"30m\"\n",
            "affinity_max_entries = 100000\n",
        ],
    );
    let config = load(&uncommented).expect("valid once uncommented");
    let defaults = Some(Affinity {
        ttl: DEFAULT_AFFINITY_TTL,
        max_entries: DEFAULT_AFFINITY_MAX_ENTRIES,
    });
    assert_eq!(config.pools[0].affinity, defaults);
    assert_eq!(config.pools[1].affinity, None);
    // The values shown are the defaults: `affinity = "source"` alone means the same.
    let text = uncommented
        .replace("\naffinity_ttl = \"30m\"\n", "\n")
        .replace("\naffinity_max_entries = 100000\n", "\n");
    assert_eq!(load(&text).expect("valid").pools[0].affinity, defaults);
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
