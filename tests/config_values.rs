//! Command-line values (overrides, the quick form, `--backend` specs), the value parsers
//! (durations, sizes), and robustness: no input panics.

use std::time::Duration;

use proptest::prelude::*;
use ringlb::config::duration::{DurationError, format_duration, parse_duration};
use ringlb::config::quick::SpecError;
use ringlb::config::raw::{AlgorithmName, EngineName, ModeName, RawWorkers};
use ringlb::config::size::parse_size;
use ringlb::config::{BackendSpec, Config, ConfigError, EngineKind, Mode, Overrides, Workers};
use ringlb::core::balance::Algorithm;

/// The CPUs the tests pretend are in the affinity mask.
const MASK: &[usize] = &[0, 1, 2, 3];

/// Two pools, so that per-pool overrides can be seen to reach both.
const BASE: &str = r#"
[[listener]]
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

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with(text, "t.toml", &Overrides::default(), MASK)
}

#[test]
fn overrides_replace_file_values() {
    let overrides = Overrides {
        engine: Some(EngineName::Blocking),
        workers: Some(RawWorkers::Count(1)),
        mode: Some(ModeName::Copy),
        algorithm: Some(AlgorithmName::LeastConnections),
        retries: Some(0),
        idle_timeout: Some("30s".into()),
        no_send_bundle: true,
        pipe_size: Some("64KiB".into()),
        send_rings: Some(0),
        ..Overrides::default()
    };
    let config = Config::from_toml_str_with(BASE, "t.toml", &overrides, MASK).expect("valid");
    assert_eq!(config.engine, EngineKind::Blocking);
    assert_eq!(config.workers, Workers::Count(1));
    assert_eq!(config.listeners[0].mode, Mode::Copy);
    assert!(
        config
            .pools
            .iter()
            .all(|p| p.algorithm == Algorithm::LeastConnections && p.retries == 0)
    );
    assert_eq!(config.timeouts.idle, Duration::from_secs(30));
    assert!(!config.features.send_bundle && config.features.multishot);
    assert_eq!(config.tuning.pipe_size, 64 * 1024);
    assert_eq!(config.tuning.send_rings, 0);
    // A bad flag value is reported against the flag, not the file.
    let bad = Overrides {
        connect_timeout: Some("soon".into()),
        ..Overrides::default()
    };
    let message = Config::from_toml_str_with(BASE, "t.toml", &bad, MASK)
        .expect_err("bad duration")
        .to_string();
    assert!(
        message.starts_with("command line: timeouts.connect (--connect-timeout): "),
        "{message}"
    );
}

#[test]
fn ring_entries_flag_is_checked_like_the_key() {
    let with = |entries: i64| Overrides {
        ring_entries: Some(entries),
        ..Overrides::default()
    };
    let config = Config::from_toml_str_with(BASE, "t.toml", &with(2), MASK).expect("valid");
    assert_eq!(config.tuning.ring_entries, 2);
    for (entries, words) in [
        (
            1,
            "must be between 2 and 32768, got 1 (a connect and its timeout",
        ),
        (65_536, "must be between 2 and 32768, got 65536"),
        (12, "must be a power of two such as 8 or 16, got 12"),
    ] {
        let message = Config::from_toml_str_with(BASE, "t.toml", &with(entries), MASK)
            .expect_err("bad ring size")
            .to_string();
        let expected = format!("command line: tuning.ring_entries (--ring-entries): {words}");
        assert!(message.starts_with(&expected), "{message}");
    }
}

/// `tuning.max_pipes` and `--max-pipes`: default, key, flag over key, bounds with the
/// value's location (file) or the flag (command line), and the summary.
#[test]
fn max_pipes_key_and_flag() {
    use ringlb::config::defaults::DEFAULT_MAX_PIPES;
    let config =
        Config::from_toml_str_with(BASE, "t.toml", &Overrides::default(), MASK).expect("valid");
    assert_eq!(config.tuning.max_pipes, DEFAULT_MAX_PIPES);
    let text = format!("[tuning]\nmax_pipes = 0\n{BASE}");
    let config =
        Config::from_toml_str_with(&text, "t.toml", &Overrides::default(), MASK).expect("valid");
    assert_eq!(
        config.tuning.max_pipes, 0,
        "0 is allowed: every direction copies"
    );
    assert!(
        config.summary_in(MASK).contains("max_pipes 0,"),
        "{}",
        config.summary_in(MASK)
    );
    let flag = Overrides {
        max_pipes: Some(2),
        ..Overrides::default()
    };
    let config = Config::from_toml_str_with(&text, "t.toml", &flag, MASK).expect("valid");
    assert_eq!(config.tuning.max_pipes, 2, "the flag replaces the key");
    let text = format!("[tuning]\nmax_pipes = -1\n{BASE}");
    let message = Config::from_toml_str_with(&text, "t.toml", &Overrides::default(), MASK)
        .expect_err("negative")
        .to_string();
    assert!(
        message.starts_with("t.toml:2:13: tuning.max_pipes: must be between 0 and 1048576, got -1"),
        "{message}"
    );
    let flag = Overrides {
        max_pipes: Some(1 << 21),
        ..Overrides::default()
    };
    let message = Config::from_toml_str_with(BASE, "t.toml", &flag, MASK)
        .expect_err("too many")
        .to_string();
    assert!(
        message.starts_with(
            "command line: tuning.max_pipes (--max-pipes): must be between 0 and 1048576"
        ),
        "{message}"
    );
}

#[test]
fn quick_form_builds_the_same_config() {
    let backends: Vec<BackendSpec> = ["127.0.0.1:9001,weight=3,name=a", "[::1]:9002"]
        .iter()
        .map(|s| s.parse().expect("valid spec"))
        .collect();
    let config = Config::from_quick_with("[::]:8080", &backends, &Overrides::default(), MASK)
        .expect("valid");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(
        config.listeners[0].bind,
        "[::]:8080".parse().expect("literal")
    );
    let pool = &config.pools[0];
    assert_eq!(
        (pool.backends[0].name.as_str(), pool.backends[0].weight),
        ("a", 3)
    );
    assert_eq!(pool.backends[1].name, "[::1]:9002");
    let zero: BackendSpec = "127.0.0.1:9001,weight=0".parse().expect("splits");
    let message = Config::from_quick_with("0.0.0.0:80", &[zero], &Overrides::default(), MASK)
        .expect_err("zero weight")
        .to_string();
    assert!(
        message.starts_with("command line: pool[0].backend[0].weight (--backend): "),
        "{message}"
    );
    let message = Config::from_quick_with("nowhere", &backends, &Overrides::default(), MASK)
        .expect_err("bad listen")
        .to_string();
    assert!(message.contains("(--listen): bad address"), "{message}");
}

#[test]
fn backend_spec_edge_cases() {
    let spec = |s: &str| s.parse::<BackendSpec>();
    assert_eq!(
        spec("127.0.0.1:9001"),
        Ok(BackendSpec {
            address: "127.0.0.1:9001".into(),
            weight: None,
            name: None,
            max_connections: None
        })
    );
    assert_eq!(
        spec("[::1]:9001,name=x,weight=7"),
        Ok(BackendSpec {
            address: "[::1]:9001".into(),
            weight: Some(7),
            name: Some("x".into()),
            max_connections: None
        })
    );
    assert_eq!(
        spec(" 10.0.0.1:1 , weight = 2 ").map(|s| s.weight),
        Ok(Some(2))
    );
    assert_eq!(spec(""), Err(SpecError::MissingAddress));
    assert_eq!(spec(",weight=1"), Err(SpecError::MissingAddress));
    assert_eq!(
        spec("a:1,weight"),
        Err(SpecError::NotKeyValue("weight".into()))
    );
    assert_eq!(spec("a:1,"), Err(SpecError::NotKeyValue(String::new())));
    assert_eq!(
        spec("a:1,colour=red"),
        Err(SpecError::UnknownKey("colour".into()))
    );
    assert_eq!(
        spec("a:1,weight=1,weight=2"),
        Err(SpecError::Repeated("weight"))
    );
    assert_eq!(spec("a:1,name=x,name=y"), Err(SpecError::Repeated("name")));
    assert_eq!(
        spec("a:1,weight=heavy"),
        Err(SpecError::BadWeight("heavy".into()))
    );
    assert_eq!(spec("a:1,name="), Err(SpecError::EmptyName));
    // The address itself is checked by validation, like one from a file.
    assert!(spec("not-an-address,weight=1").is_ok());
}

#[test]
fn duration_parsing() {
    let ok = |s: &str| parse_duration(s).expect(s);
    assert_eq!(ok("500ms"), Duration::from_millis(500));
    assert_eq!(ok("2s"), Duration::from_secs(2));
    assert_eq!(ok("1.5s"), Duration::from_millis(1500));
    assert_eq!(ok("0.25m"), Duration::from_secs(15));
    assert_eq!(ok("5m"), Duration::from_secs(300));
    assert_eq!(ok("1h"), Duration::from_secs(3600));
    assert_eq!(ok("168h"), Duration::from_secs(7 * 24 * 3600));
    assert_eq!(ok(" 007s "), Duration::from_secs(7));
    assert_eq!(ok("0.0000000001s"), Duration::ZERO);
    assert_eq!(parse_duration(""), Err(DurationError::Empty));
    assert!(matches!(
        parse_duration("30"),
        Err(DurationError::MissingUnit(_))
    ));
    assert!(matches!(
        parse_duration("3d"),
        Err(DurationError::UnknownUnit { .. })
    ));
    assert!(matches!(
        parse_duration("2S"),
        Err(DurationError::UnknownUnit { .. })
    ));
    for bad in ["s", ".5s", "5.s", "1..2s", "-1s", "1e3ms", "1.2.3s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
    assert!(matches!(
        parse_duration("168.001h"),
        Err(DurationError::TooLong(_))
    ));
    assert!(matches!(
        parse_duration("99999999999999999999999h"),
        Err(DurationError::TooLong(_))
    ));
    for d in ["2s", "500ms", "5m", "1h", "90s"] {
        assert_eq!(format_duration(ok(d)), d);
    }
}

#[test]
fn size_parsing() {
    assert_eq!(parse_size("262144"), Ok(262_144));
    assert_eq!(parse_size("256KiB"), Ok(262_144));
    assert_eq!(parse_size("1MiB"), Ok(1 << 20));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert_eq!(parse_size("512B"), Ok(512));
    assert!(parse_size("256KB").is_err());
    assert!(parse_size("KiB").is_err());
    assert!(parse_size("99999999999999999999GiB").is_err());
    assert!(parse_size("17179869184GiB").is_err());
}

proptest! {
    #[test]
    fn never_panics_on_random_text(text in "\\PC{0,200}") {
        let _ = load(&text);
    }

    #[test]
    fn never_panics_on_toml_like_text(
        text in "(\\[\\[?(listener|pool|pool\\.backend|tuning|timeouts|features)\\]\\]?\n|(name|bind|pool|address|weight|workers|cpus|retries|engine|connect|idle|ring_entries|pipe_size|mode|algorithm) = (\"[a-z0-9:.\\[\\]]{0,12}\"|-?[0-9]{1,12}|\\[[0-9, ]{0,8}\\]|true)\n){0,30}"
    ) {
        let _ = load(&text);
    }

    #[test]
    fn never_panics_on_mangled_example(cut in 0usize..4000, insert in "\\PC{0,3}") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringlb.toml");
        let mut text = std::fs::read_to_string(path).expect("the example ships with the crate");
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &insert);
        let _ = load(&text);
    }

    #[test]
    fn never_panics_on_random_durations_and_specs(text in "\\PC{0,40}") {
        let _ = parse_duration(&text);
        let _ = parse_size(&text);
        let _ = text.parse::<BackendSpec>();
    }
}
