//! The queue, admission and per-backend limit keys: defaults, bounds, flags, the summary and
//! the example.

use super::*;

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
