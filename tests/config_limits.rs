//! The process-wide `max_connections` (HAProxy's `maxconn`) and its check against
//! `RLIMIT_NOFILE` (issue 10, item 7): the key, its flag, the per-worker table's new flag, and
//! located errors.

use ringlb::config::fd_budget::FdBudget;
use ringlb::config::*;

/// Two CPUs, so two workers with `workers = "auto"`.
const MASK: &[usize] = &[0, 1];

const BASE: &str = r#"
engine = "epoll"

[[listener]]
bind = "0.0.0.0:8080"
pool = "web"
mode = "copy"

[[pool]]
name = "web"

[[pool.backend]]
address = "127.0.0.1:9001"
"#;

fn host(soft: u64) -> Host<'static> {
    Host {
        cpus: MASK,
        fd_limit: FdLimit { soft, hard: soft },
    }
}

fn load(text: &str, soft: u64, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str_on(text, "t.toml", overrides, &host(soft))
}

/// The line and column where `needle` starts in `text`, as errors print them.
fn at(text: &str, needle: &str) -> String {
    let start = text.find(needle).expect("needle in text");
    let line = text[..start].matches('\n').count() + 1;
    let column = start - text[..start].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("t.toml:{line}:{column}")
}

#[test]
fn without_the_key_the_limit_is_derived_from_rlimit_nofile() {
    let config = load(BASE, 1024, &Overrides::default()).expect("valid");
    let c = config.connections;
    // 32 for the process, 2 workers × (8 + 1 listener); 2 per connection; epoll: no race.
    assert_eq!(
        c.budget,
        FdBudget {
            reserve: 50,
            per_connection: 2,
            overshoot: 0
        }
    );
    assert_eq!(c.max_connections, (1024 - 50) / 2);
    assert_eq!(c.origin, LimitOrigin::FdLimit);
    assert!(c.fds_needed() <= 1024);
    // The per-worker table keeps its own key, default and meaning.
    assert_eq!(config.tuning.max_connections, 65_536);
}

#[test]
fn the_top_level_key_is_process_wide() {
    let text = format!("max_connections = 100\n{BASE}");
    let config = load(&text, 1024, &Overrides::default()).expect("valid");
    assert_eq!(config.connections.max_connections, 100);
    assert_eq!(config.connections.origin, LimitOrigin::Configured);
    let summary = config.summary_in(MASK);
    for part in [
        "max_connections: 100 in the whole process (configured), 65536 per worker",
        "file descriptors: 250 needed at the limit",
        "RLIMIT_NOFILE 1024 (hard limit 1024)",
    ] {
        assert!(summary.contains(part), "{part:?} missing from\n{summary}");
    }
    // Two workers of 30 slots hold fewer than 100.
    let text = format!("max_connections = 100\n{BASE}\n[tuning]\nmax_connections = 30\n");
    let config = load(&text, 1024, &Overrides::default()).expect("valid");
    assert_eq!(config.connections.max_connections, 60);
    assert_eq!(config.connections.origin, LimitOrigin::WorkerTables);
}

#[test]
fn the_flags_set_the_process_limit_and_the_worker_table() {
    let overrides = Overrides {
        max_connections: Some(7),
        send_proxy: None,
        worker_max_connections: Some(5),
        ..Overrides::default()
    };
    let config = load(BASE, 1024, &overrides).expect("valid");
    assert_eq!(config.connections.max_connections, 7);
    assert_eq!(config.tuning.max_connections, 5);
    let bad = Overrides {
        max_connections: Some(0),
        send_proxy: None,
        ..Overrides::default()
    };
    let message = load(BASE, 1024, &bad).expect_err("0").to_string();
    assert!(
        message.starts_with("command line: max_connections (--max-connections): must be between 1"),
        "{message}"
    );
    let bad = Overrides {
        worker_max_connections: Some(0),
        ..Overrides::default()
    };
    let message = load(BASE, 1024, &bad).expect_err("0").to_string();
    assert!(
        message.starts_with(
            "command line: tuning.max_connections (--worker-max-connections): must be between 1"
        ),
        "{message}"
    );
}

#[test]
fn an_out_of_range_value_points_at_the_key() {
    let text = format!("max_connections = 0\n{BASE}");
    let message = load(&text, 1024, &Overrides::default())
        .expect_err("0")
        .to_string();
    let expected = format!("{}: max_connections: must be between 1 and", at(&text, "0"));
    assert!(message.starts_with(&expected), "{message}");
}

#[test]
fn a_value_that_cannot_fit_rlimit_nofile_is_a_located_error() {
    let text = format!("max_connections = 5000\n{BASE}");
    let message = load(&text, 1024, &Overrides::default())
        .expect_err("too many for 1024 fds")
        .to_string();
    let expected = format!("{}: max_connections: ", at(&text, "5000"));
    assert!(message.starts_with(&expected), "{message}");
    for part in [
        "5000 connections need 10050 file descriptors",
        "RLIMIT_NOFILE is 1024 (hard limit 1024)",
        "ulimit -n",
        "LimitNOFILE=",
        "lower max_connections to at most 487",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    // The same value fits a larger limit.
    assert!(load(&text, 1 << 16, &Overrides::default()).is_ok());
}

#[test]
fn splicing_reserves_the_idle_pipes_and_io_uring_its_race() {
    let text = BASE
        .replace("engine = \"epoll\"", "engine = \"uring\"")
        .replace("mode = \"copy\"", "mode = \"auto\"");
    let text = format!("{text}\n[tuning]\npipe_pool = 10\n");
    let config = load(&text, 4096, &Overrides::default()).expect("valid");
    // 50 as above, plus 2 workers × 10 idle pipes × 2 ends; io_uring: one client per
    // listener and worker may arrive in a race.
    let budget = config.connections.budget;
    assert_eq!((budget.reserve, budget.overshoot), (50 + 40, 2));
    assert_eq!(config.connections.max_connections, (4096 - 90) / 2 - 2);
}
