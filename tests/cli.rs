//! The `ringlb` binary's command line: exit statuses and messages scripts rely on.

use std::path::PathBuf;
use std::process::{Command, Output};

fn ringlb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .args(args)
        .env_remove("RINGLB_LOG")
        .output()
        .expect("the ringlb binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs ringlb with `args`, which must fail with `expected` on stderr; the whole stderr.
fn refused(args: &[&str], expected: &str) -> String {
    let out = ringlb(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(expected), "{stderr}");
    stderr
}

fn example() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringlb.toml").to_owned()
}

/// A file in a fresh temporary directory, removed with it when the test ends.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ringlb-cli-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("temporary file");
        TempFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn check_example_prints_the_summary() {
    let out = ringlb(&["check", "--config", &example()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    for part in [
        "engine: uring",
        "client_fin 5m, server_fin 5m",
        "tcp: client keepalive idle 1m interval 10s count 6, user_timeout kernel default",
        "workers:",
        "listeners (2):",
        "web on 0.0.0.0:8080",
        "a: 127.0.0.1:9001 weight 1",
        "    queue: 1024 waiting, timeout 2s, close reset",
        "    affinity: none",
        "admin: socket /run/ringlb/admin.sock, no tcp",
        "access log: /var/log/ringlb/access.log (text)",
        "configuration is valid",
    ] {
        assert!(stdout.contains(part), "{part:?} missing from\n{stdout}");
    }
}

#[test]
fn check_bad_file_reports_file_line_col() {
    let file = TempFile::new(
        "bad.toml",
        "[[listener]]\nname = \"web\"\nbind = \"0.0.0.0:8080\"\npool = \"nope\"\n\n\
         [[pool]]\nname = \"web\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n",
    );
    let out = ringlb(&["check", "--config", file.path()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let expected = format!(
        "{}:4:8: listener[0].pool: unknown pool \"nope\" (defined pools: web)",
        file.path()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn check_missing_file_fails() {
    let out = ringlb(&["check", "--config", "/nonexistent/ringlb.toml"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/ringlb.toml: cannot read"));
}

#[test]
fn check_applies_overrides() {
    let out = ringlb(&[
        "check",
        "--config",
        &example(),
        "--engine",
        "epoll",
        "--idle-timeout",
        "30s",
        "--no-multishot",
        "--client-fin",
        "2s",
        "--no-keepalive",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("client_fin 2s, server_fin 5m"), "{stdout}");
    assert!(stdout.contains("client keepalive off"), "{stdout}");
    assert!(stdout.contains("engine: epoll"), "{stdout}");
    assert!(stdout.contains("idle 30s"), "{stdout}");
    assert!(stdout.contains("multishot off"), "{stdout}");
    let out = ringlb(&["check", "--config", &example(), "--connect-timeout", "3"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("command line: timeouts.connect (--connect-timeout)"));
}

#[test]
fn check_applies_queue_and_admission_flags() {
    let out = ringlb(&[
        "check",
        "--config",
        &example(),
        "--queue-size",
        "5",
        "--queue-timeout",
        "3s",
        "--admission-rate",
        "100",
        "--admission-burst",
        "20",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("(mode auto, backlog 4096, admission 100/s burst 20)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    queue: 5 waiting, timeout 3s, close"),
        "{stdout}"
    );
    refused(
        &["check", "--config", &example(), "--queue-timeout", "2h"],
        "command line: pool[0].queue_timeout (--queue-timeout): must be at most 1h",
    );
    refused(
        &[
            "run",
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2,max_connections=0",
        ],
        "command line: pool[0].backend[0].max_connections (--backend)",
    );
}

#[test]
fn check_applies_the_affinity_ttl_flag() {
    let out = ringlb(&["check", "--config", &example()]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("    affinity: none\n"));
    let out = ringlb(&["check", "--config", &example(), "--affinity-ttl", "5m"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .matches("    affinity: source, ttl 5m, at most 100000 clients\n")
            .count(),
        2,
        "both pools of the example: {stdout}"
    );
    refused(
        &["check", "--config", &example(), "--affinity-ttl", "2d"],
        "command line: pool[0].affinity_ttl (--affinity-ttl): ",
    );
    refused(
        &[
            "run",
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
            "--affinity-ttl",
            "25h",
        ],
        "command line: pool[0].affinity_ttl (--affinity-ttl): must be at most 24h, got \"25h\"",
    );
}

#[test]
fn check_applies_the_accept_proxy_and_inspect_timeout_flags() {
    let out = ringlb(&[
        "check",
        "--config",
        &example(),
        "--accept-proxy",
        "--inspect-timeout",
        "2s",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .matches(", accept_proxy on, inspect_timeout 2s)\n")
            .count(),
        2,
        "both listeners of the example: {stdout}"
    );
    refused(
        &["check", "--config", &example(), "--inspect-timeout", "0s"],
        "command line: listener[0].inspect_timeout (--inspect-timeout): must be longer than zero",
    );
}

#[test]
fn unknown_engine_is_a_clear_error() {
    let stderr = refused(
        &[
            "run",
            "--engine",
            "nope",
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
        ],
        "invalid value 'nope' for '--engine",
    );
    assert!(stderr.contains("uring, epoll, blocking"), "{stderr}");
}

#[test]
fn unknown_mode_is_a_clear_error() {
    let out = ringlb(&["demo", "--mode", "teleport"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("copy, splice, auto"));
}

#[test]
fn run_needs_exactly_one_source() {
    let out = ringlb(&["run"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--config <FILE>|--listen <ADDR>"));
    let out = ringlb(&[
        "run",
        "--config",
        &example(),
        "--listen",
        "127.0.0.1:1",
        "--backend",
        "127.0.0.1:2",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot be used with"));
    let out = ringlb(&["run", "--listen", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--backend"));
}

#[test]
fn bad_backend_spec_is_rejected_by_the_parser() {
    let out = ringlb(&[
        "run",
        "--listen",
        "127.0.0.1:1",
        "--backend",
        "127.0.0.1:2,wait=3",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown key \"wait\""));
}

#[test]
fn quick_form_errors_name_the_flag() {
    let out = ringlb(&[
        "run",
        "--listen",
        "127.0.0.1:1",
        "--backend",
        "127.0.0.1:2,weight=0",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("command line: pool[0].backend[0].weight (--backend)"));
    let out = ringlb(&[
        "run",
        "--listen",
        "127.0.0.1:1",
        "--backend",
        "127.0.0.1:2",
        "--workers",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("workers (--workers)"));
}

#[test]
fn help_lists_subcommands_and_flags() {
    let out = ringlb(&["--help"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for sub in ["check", "run", "doctor", "demo"] {
        assert!(stdout.contains(sub), "{sub} missing from\n{stdout}");
    }
    let out = ringlb(&["run", "--help"]);
    let stdout = text(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--backend",
        "--algorithm",
        "--engine",
        "--mode",
        "--workers",
        "--connect-timeout",
        "--idle-timeout",
        "--retries",
        "--no-multishot",
        "--no-buffer-ring",
        "--no-send-bundle",
        "--no-defer-taskrun",
        "--shutdown-grace",
        "--cpus",
        "--pipe-size",
        "--buffer-size",
        "--max-connections",
        "--max-pipes",
        "--ring-entries",
        "--client-fin",
        "--server-fin",
        "--no-keepalive",
        "--keepalive-idle",
        "--keepalive-interval",
        "--keepalive-count",
        "--client-user-timeout",
        "--server-user-timeout",
        "--affinity-ttl",
        "--queue-size",
        "--queue-timeout",
        "--admission-rate",
        "--admission-burst",
        "--accept-proxy",
        "--inspect-timeout",
    ] {
        assert!(stdout.contains(flag), "{flag} missing from\n{stdout}");
    }
    let out = ringlb(&["demo", "--help"]);
    let stdout = text(&out.stdout);
    for flag in ["--engine", "--mode", "--seconds", "--clients"] {
        assert!(stdout.contains(flag), "{flag} missing from\n{stdout}");
    }
}

/// `ringlb demo` prints its report alone: the engine's log lines (such as each worker's
/// `self.counters=Counters { … }` as it stops) used to be mixed into it at the default level.
/// RINGLB_LOG brings them back on request.
#[test]
fn demo_prints_its_report_without_engine_logs() {
    let args = ["demo", "--seconds", "1", "--clients", "8"];
    let out = ringlb(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if stderr.contains("io_uring is unavailable") {
        eprintln!("SKIP: {stderr}");
        return;
    }
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for part in ["ringlb demo:", "requests", "latency", "errors      0"] {
        assert!(stdout.contains(part), "{part:?} missing from\n{stdout}");
    }
    for line in stdout.lines().chain(stderr.lines()) {
        assert!(
            !line.contains("Counters {") && !line.contains(" INFO "),
            "engine log line without RINGLB_LOG: {line}"
        );
    }
    assert!(stderr.is_empty(), "stderr without RINGLB_LOG:\n{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .args(args)
        .env("RINGLB_LOG", "info")
        .output()
        .expect("the ringlb binary runs");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("worker stopped"),
        "RINGLB_LOG=info shows the engine's logs:\n{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("worker stopped"));
}

/// `check` raises RLIMIT_NOFILE to its hard limit and fails, naming the numbers, when the
/// configured `max_connections` cannot fit (run under `prlimit`, skipped where it is missing).
#[test]
fn check_fails_when_max_connections_cannot_fit_rlimit_nofile() {
    let run = |limit: &str, max: &str| {
        Command::new("prlimit")
            .arg(format!("--nofile={limit}"))
            .arg(env!("CARGO_BIN_EXE_ringlb"))
            .args(["check", "--config", &example(), "--max-connections", max])
            .args(["--mode", "copy", "--workers", "2"])
            .env_remove("RINGLB_LOG")
            .output()
    };
    let Ok(out) = run("256:256", "1000") else {
        eprintln!("SKIP: prlimit is not installed");
        return;
    };
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for part in [
        "command line: max_connections (--max-connections): 1000 connections",
        "RLIMIT_NOFILE is 256 (hard limit 256)",
        "ulimit -n",
        "or lower max_connections to at most",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from {stderr}");
    }
    // The soft limit is raised to the hard one before the check: 1000 fit 4096.
    let out = run("256:4096", "1000").expect("prlimit ran before");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        stdout.contains("max_connections: 1000 in the whole process (configured)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("RLIMIT_NOFILE 4096 (hard limit 4096)"),
        "{stdout}"
    );
}

#[test]
fn the_udp_flags_are_validated_as_the_file_keys() {
    fn quick<'a>(more: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "run",
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
            "--protocol",
            "udp",
        ];
        args.extend_from_slice(more);
        args
    }
    refused(
        &quick(&["--mode", "splice"]),
        "command line: listener[0].mode (--mode): `mode` is for TCP listeners",
    );
    refused(
        &quick(&["--send-proxy", "v1"]),
        "command line: pool[0].send_proxy (--send-proxy): send_proxy \"v1\" has no form for UDP",
    );

    refused(
        &quick(&["--udp-responses", "0"]),
        "command line: pool[0].udp_responses (--udp-responses): must be between 1 and",
    );
    refused(
        &quick(&["--udp-idle-timeout", "0s"]),
        "command line: pool[0].udp_idle_timeout (--udp-idle-timeout): must be longer than zero",
    );
    refused(
        &["run", "--listen", "127.0.0.1:1", "--protocol", "sctp"],
        "sctp",
    );
    // Over a file: every listener becomes UDP, and the example's TCP keys are refused there.
    refused(
        &["check", "--config", &example(), "--protocol", "udp"],
        "listener[0].mode: `mode` is for TCP listeners",
    );
    let out = ringlb(&[
        "check",
        "--config",
        &example(),
        "--udp-max-flows",
        "64",
        "--udp-responses",
        "1",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    refused(
        &["check", "--config", &example(), "--udp-max-flows", "0"],
        "command line: pool[0].udp_max_flows (--udp-max-flows): must be between 1 and",
    );
}
