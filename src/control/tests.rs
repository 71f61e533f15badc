//! The control side's truth, with real inboxes drained by the test and fake workers that
//! answer reports.

use std::sync::Arc;
use std::time::Duration;

use super::view::Show;
use super::*;
use crate::config::Overrides;
use crate::core::backend::{BackendId, BackendState};
use crate::core::stats::{BackendCounters, ListenerCounters};
use crate::engine::inbox::{self, Inbox, WorkerReport};

const CONFIG: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:8080"
pool = "web"
[[listener]]
bind = "127.0.0.1:8081"
pool = "web"
[[pool]]
name = "web"
algorithm = "source-hash"
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

/// A control side with two workers, and the workers' inboxes.
fn setup() -> (Control, Vec<Inbox>) {
    let config =
        crate::config::Config::from_toml_str_with(CONFIG, "t.toml", &Overrides::default(), &[0, 1])
            .expect("valid config");
    let (links, inboxes) = inbox::pairs(2).expect("inboxes");
    (Control::new(&config, links), inboxes)
}

/// The pool snapshots each inbox holds, in order; panics on any other message.
fn pool_messages(inbox: &Inbox) -> Vec<(usize, Arc<PoolSnapshot>)> {
    inbox
        .drain()
        .map(|m| match m {
            Message::Pool { pool, snapshot } => (pool, snapshot),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// The one snapshot every worker got for `pool`, checked to be the same on both.
fn published(inboxes: &[Inbox], pool: usize) -> Arc<PoolSnapshot> {
    let mut got = inboxes.iter().map(|i| {
        let mut messages = pool_messages(i);
        assert_eq!(messages.len(), 1, "one snapshot per change");
        let (p, snapshot) = messages.remove(0);
        assert_eq!(p, pool);
        snapshot
    });
    let first = got.next().expect("two workers");
    for other in got {
        assert!(
            Arc::ptr_eq(&first, &other),
            "every worker gets the same snapshot"
        );
    }
    first
}

fn names(snapshot: &PoolSnapshot) -> Vec<&str> {
    snapshot
        .backends()
        .iter()
        .map(|b| b.name.as_str())
        .collect()
}

#[test]
fn state_changes_publish_one_snapshot_sharing_the_maglev_table() {
    let (mut control, inboxes) = setup();
    let before = Arc::clone(control.pools()[0].snapshot());
    let table = |s: &PoolSnapshot| s.maglev().map(|t| t as *const _).expect("source hash");

    control
        .set_state("web", "b", AdminState::Drain)
        .expect("drain");
    let drained = published(&inboxes, 0);
    assert_eq!(
        drained.states(),
        &[BackendState::Up, BackendState::Draining]
    );
    assert_eq!(
        table(&drained),
        table(&before),
        "the Maglev table is shared"
    );
    assert_eq!(names(&drained), vec!["a", "b"]);

    control
        .set_state("web", "b", AdminState::Maint)
        .expect("maint");
    assert_eq!(
        published(&inboxes, 0).states(),
        &[BackendState::Up, BackendState::Down]
    );
    control
        .set_state("web", "b", AdminState::Ready)
        .expect("ready");
    let ready = published(&inboxes, 0);
    assert_eq!(ready.states(), &[BackendState::Up, BackendState::Up]);
    assert_eq!(table(&ready), table(&before));

    // Setting the state it has already sends nothing.
    control
        .set_state("web", "b", AdminState::Ready)
        .expect("same");
    assert!(inboxes.iter().all(|i| i.drain().count() == 0));
    let b = &control.pools()[0].backends[1];
    assert_eq!(b.life, Life::Serving(AdminState::Ready));
    assert!(b.changed.reason.contains("ready"), "{:?}", b.changed);
}

#[test]
fn unknown_names_are_errors_and_change_nothing() {
    let (mut control, inboxes) = setup();
    let err = control
        .set_state("web", "zzz", AdminState::Drain)
        .expect_err("unknown backend");
    assert_eq!(
        err,
        ControlError::UnknownBackend {
            pool: "web".into(),
            backend: "zzz".into()
        }
    );
    assert_eq!(err.status(), 404);
    let err = control
        .set_weight("nope", "a", 2)
        .expect_err("unknown pool");
    assert_eq!(err, ControlError::UnknownPool("nope".into()));
    let err = control.set_listener("nope", false).expect_err("unknown");
    assert_eq!(err, ControlError::UnknownListener("nope".into()));
    assert!(inboxes.iter().all(|i| i.drain().count() == 0));
}

#[test]
fn added_backends_are_appended_so_ids_never_shift() {
    let (mut control, inboxes) = setup();
    let name = control
        .add("web", "127.0.0.1:9003,weight=4,name=c")
        .expect("add");
    assert_eq!(name, "c");
    let snapshot = published(&inboxes, 0);
    assert_eq!(names(&snapshot), vec!["a", "b", "c"]);
    assert_eq!(snapshot.backend(BackendId(2)).map(|b| b.weight), Some(4));
    assert_eq!(snapshot.state(BackendId(2)), BackendState::Up);
    // A backend without a name is named by its address.
    let name = control.add("api", "127.0.0.1:9102").expect("add");
    assert_eq!(name, "127.0.0.1:9102");
    assert_eq!(
        names(&published(&inboxes, 1)),
        vec!["127.0.0.1:9101", "127.0.0.1:9102"]
    );
}

#[test]
fn bad_and_duplicate_backends_are_rejected() {
    let (mut control, inboxes) = setup();
    let err = control
        .add("web", "127.0.0.1:9009,name=a")
        .expect_err("duplicate name");
    assert_eq!(err.status(), 409);
    assert!(err.to_string().contains("already exists"), "{err}");
    // Named by its address, which is already a backend's name.
    let err = control.add("api", "127.0.0.1:9101").expect_err("duplicate");
    assert_eq!(err.status(), 409);
    for (spec, words) in [
        ("127.0.0.1:9009,weight=0", "weight"),
        ("localhost:80", "bad address"),
        ("127.0.0.1:9009,colour=red", "unknown key"),
        ("127.0.0.1:0", "port 0"),
    ] {
        let err = control.add("web", spec).expect_err(spec);
        assert_eq!(err.status(), 400, "{spec}");
        assert!(err.to_string().contains(words), "{spec}: {err}");
    }
    assert!(inboxes.iter().all(|i| i.drain().count() == 0));
}

#[test]
fn weight_changes_rebuild_the_snapshot() {
    let (mut control, inboxes) = setup();
    control.set_weight("web", "a", 7).expect("weight");
    let snapshot = published(&inboxes, 0);
    assert_eq!(snapshot.backend(BackendId(0)).map(|b| b.weight), Some(7));
    assert_eq!(snapshot.up_weight(), 8);
    let err = control.set_weight("web", "a", 0).expect_err("zero");
    assert_eq!(err.status(), 400);
    assert!(control.set_weight("web", "a", 65_536).is_err());
    assert!(inboxes.iter().all(|i| i.drain().count() == 0));
}

/// Reports asked for after `changes` changes, saying pool `pool`'s backend `backend` has
/// `active` connections on each worker.
fn reports_at(changes: u64, active: &[u64], pool: usize, backend: usize) -> Reports {
    let answers = active
        .iter()
        .enumerate()
        .map(|(worker, &n)| {
            let mut backends = vec![Vec::new(); pool + 1];
            backends[pool] = vec![BackendCounters::default(); backend + 1];
            backends[pool][backend].active = n;
            WorkerReport {
                worker,
                backends,
                ..WorkerReport::default()
            }
        })
        .collect();
    Reports {
        asked: 2,
        answers,
        after_changes: changes,
    }
}

#[test]
fn removed_backends_drain_then_become_hidden_tombstones() {
    let (mut control, inboxes) = setup();
    // Reports asked for before the removal could predate a last connection.
    let early = reports_at(control.changes(), &[0, 0], 0, 0);
    control.remove("web", "a").expect("remove");
    assert!(control.forget_drained(&early).is_empty());
    let after = control.changes();
    let reports_with = |active: &[u64], pool, backend| reports_at(after, active, pool, backend);
    assert_eq!(
        published(&inboxes, 0).states(),
        &[BackendState::Draining, BackendState::Up]
    );
    assert!(control.removing());
    // Still connections on worker 1; then worker 1 does not answer: nothing is forgotten.
    assert!(
        control
            .forget_drained(&reports_with(&[0, 2], 0, 0))
            .is_empty()
    );
    let mut partial = reports_with(&[0, 0], 0, 0);
    partial.answers.pop();
    assert!(control.forget_drained(&partial).is_empty());
    assert!(inboxes.iter().all(|i| i.drain().count() == 0));
    let err = control
        .set_state("web", "a", AdminState::Ready)
        .expect_err("removing");
    assert_eq!(err.status(), 409);

    let forgotten = control.forget_drained(&reports_with(&[0, 0], 0, 0));
    assert_eq!(forgotten, vec![("web".to_owned(), "a".to_owned())]);
    let snapshot = published(&inboxes, 0);
    assert_eq!(snapshot.states(), &[BackendState::Down, BackendState::Up]);
    assert_eq!(names(&snapshot), vec!["a", "b"], "the id is kept");
    assert!(!control.removing());
    // Hidden from views and from names.
    let view = Show::build(&control, &Reports::default());
    let shown: Vec<&str> = view.pools[0]
        .backends
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(shown, vec!["b"]);
    assert!(control.set_weight("web", "a", 3).is_err());

    // The name can be used again: a new id, and the tombstone gives the name up.
    control.add("web", "127.0.0.1:9011,name=a").expect("re-add");
    let snapshot = published(&inboxes, 0);
    assert_eq!(snapshot.len(), 3);
    assert_eq!(snapshot.id_of("a"), Some(BackendId(2)));
    assert_eq!(snapshot.state(BackendId(0)), BackendState::Down);
    let mut unique = names(&snapshot);
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 3, "names in a snapshot stay unique");
}

#[test]
fn a_backend_being_removed_cannot_be_added_again_yet() {
    let (mut control, _inboxes) = setup();
    control.remove("web", "b").expect("remove");
    let err = control
        .add("web", "127.0.0.1:9002,name=b")
        .expect_err("busy");
    assert_eq!(err.status(), 409);
    assert!(err.to_string().contains("being removed"), "{err}");
}

#[test]
fn listeners_are_switched_on_every_worker_by_name_or_address() {
    let (mut control, inboxes) = setup();
    control.set_listener("web", false).expect("by name");
    control
        .set_listener("127.0.0.1:8081", false)
        .expect("by bind");
    for inbox in &inboxes {
        let got: Vec<(usize, bool)> = inbox
            .drain()
            .map(|m| match m {
                Message::Accepting { listener, on } => (listener, on),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(got, vec![(0, false), (1, false)]);
    }
    assert_eq!(control.listeners()[0].accepting, Accepting::Disabled);
}

#[test]
fn health_needs_accepting_workers_and_a_ready_backend_per_pool() {
    let (mut control, _inboxes) = setup();
    assert_eq!(control.health(true), Ok(()));
    let reason = control.health(false).expect_err("not up");
    assert!(reason.contains("not accepting"), "{reason}");
    control
        .set_state("api", "127.0.0.1:9101", AdminState::Drain)
        .expect("drain");
    let reason = control.health(true).expect_err("no ready backend");
    assert!(reason.contains("\"api\""), "{reason}");
}

/// A listener switched off refuses new clients: keepalived and BGP should take the address
/// elsewhere, so health fails until it is switched on again.
#[test]
fn health_fails_while_a_listener_is_disabled() {
    let (mut control, _inboxes) = setup();
    assert_eq!(control.health(true), Ok(()));
    control.set_listener("web", false).expect("by name");
    let reason = control.health(true).expect_err("disabled");
    assert!(reason.contains("\"web\" is disabled"), "{reason}");
    control.set_listener("web", true).expect("by name");
    assert_eq!(control.health(true), Ok(()));
}

/// A worker thread that answers every report with `report`, until its links are dropped.
fn fake_worker(inbox: Inbox, report: WorkerReport) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            for message in inbox.drain() {
                if let Message::Report(reply) = message {
                    let _ = reply.send(report.clone());
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn counters(active: u64, connections: u64) -> BackendCounters {
    BackendCounters {
        active,
        connections,
        connect_failures: 1,
        bytes_in: 100,
        bytes_out: 1000,
        ..BackendCounters::default()
    }
}

#[test]
fn reports_from_every_worker_are_summed() {
    let (control, inboxes) = setup();
    let mut workers = Vec::new();
    for (worker, inbox) in inboxes.into_iter().enumerate() {
        let n = worker as u64 + 1;
        let report = WorkerReport {
            worker,
            backends: vec![
                vec![counters(n, 10 * n), counters(0, 1)],
                vec![counters(0, 0)],
            ],
            listeners: vec![ListenerCounters {
                active: n,
                accepted: 5 * n,
                refused: n,
                ..Default::default()
            }],
            connections: n,
            loop_turns: 1000 * n,
            buffers_in_use: 2,
            pipes_in_use: 0,
            ..WorkerReport::default()
        };
        workers.push(fake_worker(inbox, report));
    }
    let reports = Reports::collect(control.links(), control.changes(), Duration::from_secs(2));
    assert!(reports.complete());
    assert!(reports.missing().is_empty());
    let a = reports.backend(0, 0);
    assert_eq!((a.active, a.connections, a.bytes_out), (3, 30, 2000));
    // Indices no worker knows count zero.
    assert_eq!(reports.backend(0, 9), BackendCounters::default());
    assert_eq!(reports.listener(0).accepted, 15);
    assert_eq!(reports.listener(1), ListenerCounters::default());

    let view = Show::build(&control, &reports);
    let a = &view.pools[0].backends[0];
    assert_eq!((a.active, a.connections, a.connect_failures), (3, 30, 2));
    assert_eq!(
        (a.state.as_str(), a.weight, a.effective_weight),
        ("ready", 1, 1)
    );
    assert_eq!(view.workers.len(), 2);
    assert_eq!(view.workers[1].loop_turns, 2000);

    let text = metrics::render(&view);
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let value = |name: &str, label: (&str, &str)| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value("ringlb_backend_sessions_total", ("backend", "a")),
        Some(30.0)
    );
    assert_eq!(
        value("ringlb_backend_current_sessions", ("backend", "a")),
        Some(3.0)
    );
    assert_eq!(value("ringlb_backend_up", ("backend", "b")), Some(1.0));
    assert_eq!(
        value(
            "ringlb_listener_accepted_total",
            ("listener", "127.0.0.1:8080")
        ),
        Some(15.0)
    );
    assert_eq!(
        value("ringlb_worker_loop_turns_total", ("worker", "1")),
        Some(2000.0)
    );
    for worker in workers {
        worker.join().expect("fake worker");
    }
}

#[test]
fn a_worker_that_does_not_answer_is_missing_not_a_hang() {
    let (control, mut inboxes) = setup();
    let _silent = inboxes.pop().expect("worker 1");
    let answering = inboxes.pop().expect("worker 0");
    let worker = fake_worker(answering, WorkerReport::default());
    let started = std::time::Instant::now();
    let reports = Reports::collect(
        control.links(),
        control.changes(),
        Duration::from_millis(300),
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!reports.complete());
    assert_eq!(reports.missing(), vec![1]);
    worker.join().expect("fake worker");
}

#[test]
fn requests_dropped_unanswered_end_the_wait_at_once() {
    let (control, inboxes) = setup();
    let droppers: Vec<_> = inboxes
        .into_iter()
        .map(|inbox| {
            std::thread::spawn(move || {
                // Take the request and drop it, as a worker that does not answer reports
                // (or stops) does.
                for _ in 0..200 {
                    if inbox.drain().count() > 0 {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let reports = Reports::collect(control.links(), control.changes(), Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(reports.missing(), vec![0, 1]);
    for d in droppers {
        d.join().expect("dropper");
    }
}
