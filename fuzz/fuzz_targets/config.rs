//! The configuration file path (`Config::from_toml_str_on`: TOML, serde, validation) on
//! arbitrary text.
//!
//! Whatever the text, the result is a `Config` or a `ConfigError`, never a panic, and:
//! - an error points into the text: its line exists and its column is at most one past that
//!   line's end; with no command-line flags given it never blames the command line;
//! - a `Config` has a summary and at least one worker CPU.
//!
//! Each text is validated for two hosts, so that the CPU and file-descriptor checks see
//! both a roomy machine and a tight one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::config::{Config, ConfigError, FdLimit, Host, Location, Overrides};

const ORIGIN: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let hosts = [
        Host {
            cpus: &[0, 1, 2, 3],
            fd_limit: FdLimit::UNLIMITED,
        },
        Host {
            cpus: &[1, 3],
            fd_limit: FdLimit {
                soft: 1024,
                hard: 4096,
            },
        },
    ];
    for host in &hosts {
        match Config::from_toml_str_on(text, ORIGIN, &Overrides::default(), host) {
            Ok(config) => {
                assert!(!config.worker_cpus_in(host.cpus).is_empty());
                let _ = config.summary_in(host.cpus);
            }
            Err(error) => points_into(text, &error),
        }
    }
});

/// `error` names a place in `text`.
fn points_into(text: &str, error: &ConfigError) {
    let message = error.to_string();
    match error.location() {
        Some(Location::Text {
            origin,
            line,
            column,
        }) => {
            assert_eq!(origin, ORIGIN);
            assert!(
                message.starts_with(&format!("{ORIGIN}:{line}:{column}: ")),
                "{message}"
            );
            let Some(at) = line.checked_sub(1).and_then(|i| text.split('\n').nth(i)) else {
                panic!(
                    "line {line} of {} lines: {message}",
                    text.split('\n').count()
                );
            };
            let width = at.chars().count();
            assert!(
                *column >= 1 && *column <= width + 1,
                "column {column} of a line of {width}: {message}"
            );
        }
        Some(Location::Origin(origin)) => assert_eq!(origin, ORIGIN, "{message}"),
        Some(Location::CommandLine) => panic!("no flags given, yet: {message}"),
        None => panic!("a text that was read, yet: {message}"),
    }
}
