use std::time::UNIX_EPOCH;

use super::*;
use crate::core::conn::Failure;

fn record(reason: CloseReason, connected: bool) -> Record<'static> {
    Record {
        end: UNIX_EPOCH + Duration::from_millis(1_764_875_149_123),
        client: "127.0.0.7:40000".parse().expect("literal"),
        listener: "web",
        pool: "app",
        backend: Some("a"),
        wait: None,
        connect: connected.then_some(Duration::from_millis(3)),
        total: Duration::from_millis(1250),
        bytes_in: 100,
        bytes_out: 2048,
        reason,
    }
}

#[test]
fn termination_letters_follow_haproxy() {
    let cases = [
        (CloseReason::Done, true, "--"),
        (CloseReason::NoBackend, false, "SC"),
        (CloseReason::ClientFailed(Failure::Os(104)), true, "CD"),
        (CloseReason::ClientFailed(Failure::Os(104)), false, "CC"),
        (CloseReason::BackendFailed(Failure::ZeroWrite), true, "SD"),
        (CloseReason::IdleTimeout, true, "cD"),
        (CloseReason::FinTimeout(Side::Client), true, "cD"),
        (CloseReason::FinTimeout(Side::Backend), true, "sD"),
        (CloseReason::Aborted, true, "KD"),
        (CloseReason::Local, false, "RC"),
    ];
    for (reason, connected, letters) in cases {
        let t = Termination::of(reason, connected);
        assert_eq!(format!("{}{}", t.by, t.at), letters, "{reason:?}");
    }
}

#[test]
fn a_text_line_has_every_field() {
    let mut out = String::new();
    record(CloseReason::Done, true).write(Format::Text, &mut out);
    assert_eq!(
        out,
        "2025-12-04T19:05:49.123Z 127.0.0.7:40000 web app/a -1/3/1250 100 2048 --\n"
    );
}

#[test]
fn a_json_line_parses_back() {
    let mut out = String::new();
    record(CloseReason::BackendFailed(Failure::Os(104)), false).write(Format::Json, &mut out);
    assert!(out.ends_with('\n') && out.matches('\n').count() == 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["client"], "127.0.0.7:40000");
    assert_eq!(v["backend"], "a");
    assert_eq!(v["connect_ms"], serde_json::Value::Null);
    assert_eq!(v["total_ms"], 1250);
    assert_eq!(v["bytes_out"], 2048);
    assert_eq!(v["termination"], "SC");
    assert_eq!(v["reason"], "backend_reset");
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringlb-access-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join("access.log")
}

#[test]
fn every_line_of_every_worker_reaches_the_file_and_reopen_follows_a_rename() {
    let path = temp_path("reopen");
    let reopen = Reopen::default();
    let log =
        AccessLog::start(Target::File(path.clone()), Format::Text, reopen.clone()).expect("start");
    let (mut a, mut b) = (log.worker(), log.worker());
    for _ in 0..3 {
        a.log(&record(CloseReason::Done, true));
        b.log(&record(CloseReason::IdleTimeout, true));
    }
    a.flush();
    b.flush();
    // logrotate moves the file away, then signals.
    let rotated = path.with_extension("log.1");
    // Let the writer take the first batches before the rename.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&path).map_or(0, |t| t.lines().count()) < 6
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::rename(&path, &rotated).expect("rotate");
    reopen.request();
    a.log(&record(CloseReason::Aborted, true));
    drop(a);
    drop(b);
    log.finish();
    let old = std::fs::read_to_string(&rotated).expect("rotated file");
    let new = std::fs::read_to_string(&path).expect("reopened file");
    assert_eq!(old.lines().count(), 6, "{old}");
    assert_eq!(old.lines().filter(|l| l.ends_with(" cD")).count(), 3);
    assert_eq!(new.lines().count(), 1, "{new}");
    assert!(new.ends_with(" KD\n"));
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[test]
fn a_writer_that_falls_behind_costs_lines_not_memory() {
    // A channel nobody reads, with room for one batch.
    let (sender, _receiver) = mpsc::sync_channel(1);
    let mut log = WorkerLog {
        sender,
        format: Format::Text,
        line: String::new(),
        batch: Vec::new(),
        lines: 0,
        dropped: 0,
    };
    for turn in 0..10 {
        for _ in 0..5 {
            log.log(&record(CloseReason::Done, true));
        }
        log.flush();
        assert!(log.batch.is_empty(), "turn {turn}: nothing kept back");
    }
    // The first batch was taken; the other nine were dropped and counted.
    assert_eq!(log.dropped(), 45);
}
