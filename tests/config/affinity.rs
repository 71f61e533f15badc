//! The affinity keys: defaults, bounds, the flag, the summary and the example.

use super::*;

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

#[test]
/// The example's commented-out affinity keys validate once uncommented, to the defaults the
/// comments promise; left commented, no pool is sticky.
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
