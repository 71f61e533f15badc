//! Reload against the control side alone: real inboxes, drained and inspected by the test.

use std::sync::Arc;

use super::*;
use crate::config::Overrides;
use crate::core::balance::Algorithm;
use crate::engine::inbox::{self, Inbox};

const BEFORE: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:8080"
pool = "web"
[[pool]]
name = "web"
[[pool.backend]]
address = "127.0.0.1:9001"
name = "a"
[[pool.backend]]
address = "127.0.0.1:9002"
name = "b"
[[pool.backend]]
address = "127.0.0.1:9003"
name = "c"
"#;

/// `a` re-weighted, `b` left out, `c` moved to another address, `d` new; the listener sends to
/// a new pool `api`; the idle timeout and the engine changed.
const AFTER: &str = r#"
engine = "epoll"
[timeouts]
idle = "7s"
[[listener]]
name = "front"
bind = "127.0.0.1:8080"
pool = "api"
mode = "splice"
[[pool]]
name = "api"
algorithm = "least-connections"
retries = 0
[[pool.backend]]
address = "127.0.0.1:9101"
[[pool]]
name = "web"
[[pool.backend]]
address = "127.0.0.1:9001"
name = "a"
weight = 5
[[pool.backend]]
address = "127.0.0.1:9033"
name = "c"
[[pool.backend]]
address = "127.0.0.1:9004"
name = "d"
"#;

fn config(text: &str) -> Config {
    Config::from_toml_str_with(text, "t.toml", &Overrides::default(), &[0, 1]).expect("valid")
}

fn setup() -> (Control, Vec<Inbox>) {
    let (links, inboxes) = inbox::pairs(2).expect("inboxes");
    (Control::new(&config(BEFORE), links), inboxes)
}

/// Pool snapshots sent, with their pool index.
type Snapshots = Vec<(usize, Arc<PoolSnapshot>)>;

/// Every message of one inbox, as (pool snapshots by pool, the last reconfiguration).
fn messages(inbox: &Inbox) -> (Snapshots, Option<Arc<Config>>) {
    let mut pools = Vec::new();
    let mut reconfigured = None;
    for m in inbox.drain() {
        match m {
            Message::Pool { pool, snapshot } => {
                assert!(
                    reconfigured.is_none(),
                    "pools are sent before the configuration"
                );
                pools.push((pool, snapshot));
            }
            Message::Reconfigure(config) => reconfigured = Some(config),
            Message::Accepting { .. }
            | Message::Report(_)
            | Message::AddListener { .. }
            | Message::CloseListener { .. }
            | Message::Sockets(_)
            | Message::Admit(_) => {}
        }
    }
    (pools, reconfigured)
}

fn names(snapshot: &PoolSnapshot) -> Vec<(&str, u32, BackendState)> {
    snapshot
        .backends()
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let id = crate::core::backend::BackendId(i as u32);
            (b.name.as_str(), b.weight, snapshot.state(id))
        })
        .collect()
}

#[test]
fn a_reload_appends_drains_and_reweighs_keeping_ids() {
    let (mut control, inboxes) = setup();
    control
        .set_state("web", "a", AdminState::Maint)
        .expect("maint");
    for inbox in &inboxes {
        inbox.drain().for_each(drop);
    }
    let outcome = control.apply(&config(AFTER)).expect("applied");

    for inbox in &inboxes {
        let (pools, reconfigured) = messages(inbox);
        let web: Vec<_> = pools.iter().filter(|(p, _)| *p == 0).collect();
        let api: Vec<_> = pools.iter().filter(|(p, _)| *p == 1).collect();
        assert_eq!(web.len(), 1, "one snapshot for the changed pool");
        assert_eq!(api.len(), 1, "the new pool is sent one past the last");
        // Ids 0..3 stay where they were; the new ones come after.
        let web = &web[0].1;
        assert_eq!(
            names(web),
            vec![
                ("a", 5, BackendState::Up),
                ("b", 1, BackendState::Draining),
                ("\u{1}removed:2:c", 1, BackendState::Draining),
                ("c", 1, BackendState::Up),
                ("d", 1, BackendState::Up),
            ],
            "a is ready again (runtime changes are lost), b and the old c drain"
        );
        assert_eq!(web.algorithm(), Algorithm::RoundRobin);
        assert_eq!(api[0].1.algorithm(), Algorithm::LeastConnections);
        let reconfigured = reconfigured.expect("a configuration for the workers");
        assert_eq!(
            reconfigured.pools[0].name, "web",
            "pool order never changes"
        );
        assert_eq!(reconfigured.pools[1].name, "api");
        assert_eq!(reconfigured.pools[1].retries, 0);
        let listener = &reconfigured.listeners[0];
        assert_eq!((listener.name.as_str(), listener.pool), ("front", 1));
        assert_eq!(listener.mode, crate::config::Mode::Splice);
        assert_eq!(reconfigured.timeouts.idle.as_secs(), 7);
        assert_eq!(
            reconfigured.engine,
            crate::config::EngineKind::Uring,
            "what needs a restart stays as it runs"
        );
    }
    assert!(
        outcome
            .restart_needed
            .iter()
            .any(|s| s.starts_with("engine")),
        "{outcome:?}"
    );
    for line in [
        "pool \"api\" added",
        "web/a: weight 5",
        "web/b: removed",
        "web/d: added",
    ] {
        assert!(
            outcome.applied.iter().any(|a| a.contains(line)),
            "{line:?} in {outcome:?}"
        );
    }
    // The backends left out finish their removal like any other.
    assert!(control.removing());
}

#[test]
fn route_pools_are_indices_of_the_running_pools() {
    let (mut control, inboxes) = setup();
    // The file lists api before web; the running side has web first and appends api.
    let after = AFTER.replace(
        "mode = \"splice\"\n",
        "mode = \"splice\"\n[[listener.route]]\nsni = \"web.example\"\npool = \"web\"\n\
         [[listener.route]]\nsni = \"api.example\"\npool = \"api\"\n",
    );
    let new = config(&after);
    assert_eq!(new.pools[0].name, "api", "the file's order");
    control.apply(&new).expect("applied");
    for inbox in &inboxes {
        let (_, reconfigured) = messages(inbox);
        let reconfigured = reconfigured.expect("a configuration for the workers");
        let routes: Vec<_> = reconfigured.listeners[0]
            .routes
            .iter()
            .map(|r| (r.sni.as_str(), reconfigured.pools[r.pool].name.as_str()))
            .collect();
        assert_eq!(routes, [("web.example", "web"), ("api.example", "api")]);
    }
    // AFTER's engine needs a restart; its listener's routes do not.
    let outcome = control.apply(&new).expect("again");
    assert!(
        outcome
            .restart_needed
            .iter()
            .all(|s| !s.contains("listener")),
        "{outcome:?}"
    );
}

#[test]
fn the_same_file_again_changes_nothing_and_a_pool_left_out_retires() {
    let (mut control, inboxes) = setup();
    let outcome = control.apply(&config(BEFORE)).expect("applied");
    assert!(outcome.applied.is_empty(), "{outcome:?}");
    assert!(outcome.restart_needed.is_empty(), "{outcome:?}");
    for inbox in &inboxes {
        inbox.drain().for_each(drop);
    }

    control.apply(&config(AFTER)).expect("applied");
    let only_api = AFTER
        .split("[[pool]]\nname = \"web\"")
        .next()
        .expect("api part");
    let outcome = control.apply(&config(only_api)).expect("applied");
    assert!(
        outcome.applied.iter().any(|a| a == "pool \"web\" removed"),
        "{outcome:?}"
    );
    assert!(control.pools()[0].retired);
    assert!(
        control.pools()[0]
            .backends
            .iter()
            .all(|b| !matches!(b.life, Life::Serving(_))),
        "every backend of a retired pool drains"
    );
    assert_eq!(
        control.health(true),
        Ok(()),
        "a retired pool does not count"
    );
    assert!(matches!(
        control.set_state("web", "a", AdminState::Drain),
        Err(ControlError::UnknownPool(_))
    ));
    // Back in the file: the same pool, its index kept.
    control.apply(&config(AFTER)).expect("applied");
    assert!(!control.pools()[0].retired);
    assert_eq!(control.pools()[0].name, "web");
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    probe.local_addr().expect("address").port()
}

#[test]
fn a_moved_listener_is_added_with_a_socket_per_worker_and_the_old_one_closed() {
    let (mut control, inboxes) = setup();
    let port = free_port();
    let moved = BEFORE.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let outcome = control.apply(&config(&moved)).expect("applied");
    assert!(outcome.restart_needed.is_empty(), "{outcome:?}");
    assert_eq!(control.listeners().len(), 2, "indices are never reused");
    assert_eq!(control.listeners()[0].accepting, Accepting::Closed);
    assert_eq!(control.listeners()[1].accepting, Accepting::Enabled);
    for inbox in &inboxes {
        let mut order = Vec::new();
        for m in inbox.drain() {
            match m {
                Message::Reconfigure(c) => {
                    assert_eq!(c.listeners.len(), 2);
                    assert_eq!(c.listeners[1].bind.port(), port);
                    order.push("reconfigure");
                }
                Message::AddListener { listener, socket } => {
                    assert_eq!(listener, 1);
                    let addr = socket.local_addr().expect("bound").as_socket().expect("ip");
                    assert_eq!(addr.port(), port);
                    order.push("add");
                }
                Message::CloseListener { listener } => {
                    assert_eq!(listener, 0);
                    order.push("close");
                }
                Message::Pool { .. }
                | Message::Accepting { .. }
                | Message::Report(_)
                | Message::Sockets(_)
                | Message::Admit(_) => {}
            }
        }
        assert_eq!(
            order,
            ["reconfigure", "add", "close"],
            "policies before sockets"
        );
    }
    // The closed listener is gone from the operator's view and commands.
    assert!(
        control.set_listener("web", false).is_ok(),
        "the new one has the name"
    );
    assert_eq!(control.listeners()[1].accepting, Accepting::Disabled);
}

#[test]
fn a_listener_that_cannot_be_bound_refuses_the_whole_file() {
    let (mut control, inboxes) = setup();
    // Held without SO_REUSEPORT: nobody else may bind it.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("holder");
    let taken = holder.local_addr().expect("address");
    let text = format!(
        "{}[[listener]]\nname = \"more\"\nbind = \"{taken}\"\npool = \"web\"\n",
        BEFORE.replace("name = \"a\"", "name = \"a\"\nweight = 9")
    );
    let e = control.apply(&config(&text)).expect_err("cannot bind");
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_eq!(control.listeners().len(), 1);
    assert_eq!(control.pools()[0].backends[0].weight, 1, "the weight stays");
    for inbox in &inboxes {
        assert_eq!(inbox.drain().count(), 0, "nothing sent");
    }
}

#[test]
fn reload_without_a_file_is_refused() {
    let (mut control, _inboxes) = setup();
    let e = control.reload().expect_err("no file");
    assert!(e.to_string().contains("without --config"), "{e}");
}

#[test]
fn a_file_that_does_not_validate_changes_nothing() {
    let (mut control, inboxes) = setup();
    let dir = std::env::temp_dir().join(format!("ringlb-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        BEFORE.replace("address = \"127.0.0.1:9002\"", "address = \"nope\""),
    )
    .expect("write");
    control.reload_from(Source {
        path: path.clone(),
        overrides: Overrides::default(),
    });
    let e = control.reload().expect_err("invalid");
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("bad.toml:12:"), "{e}");
    for inbox in &inboxes {
        assert_eq!(inbox.drain().count(), 0, "nothing sent");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_sets_and_lifts_backend_limits_in_the_snapshots() {
    let (mut control, inboxes) = setup();
    let limited = BEFORE.replace("name = \"b\"\n", "name = \"b\"\nmax_connections = 5\n");
    let outcome = control.apply(&config(&limited)).expect("applied");
    assert!(
        outcome
            .applied
            .iter()
            .any(|a| a == "web/b: max_connections 5"),
        "{outcome:?}"
    );
    let (pools, _) = messages(&inboxes[0]);
    let (_, snapshot) = pools.last().expect("a snapshot of web");
    assert!(snapshot.limited());
    let id = |name| snapshot.id_of(name).expect("backend");
    assert_eq!(
        (snapshot.limit(id("a")), snapshot.limit(id("b"))),
        (None, Some(5))
    );
    // The limit survives a state change's snapshot, and a reload without it lifts it.
    control
        .set_state("web", "a", AdminState::Drain)
        .expect("drain");
    let (pools, _) = messages(&inboxes[0]);
    assert_eq!(pools.last().expect("snapshot").1.limit(id("b")), Some(5));
    let outcome = control.apply(&config(BEFORE)).expect("applied");
    assert!(
        outcome
            .applied
            .iter()
            .any(|a| a == "web/b: max_connections none"),
        "{outcome:?}"
    );
    let (pools, _) = messages(&inboxes[0]);
    assert!(!pools.last().expect("snapshot").1.limited());
}

/// `BEFORE` with a UDP listener `dns` on `bind` to the pool `pool` (with few flows, so that
/// the file fits any open file limit), and `pool_keys` in that pool.
fn with_udp(bind: &str, pool: &str, pool_keys: &str) -> String {
    format!(
        "{BEFORE}\n[[listener]]\nname = \"dns\"\nbind = \"{bind}\"\npool = \"{pool}\"\n\
         protocol = \"udp\"\n[[pool]]\nname = \"{pool}\"\nudp_max_flows = 16\n{pool_keys}\n\
         [[pool.backend]]\naddress = \"127.0.0.1:5301\"\n"
    )
}

#[test]
fn udp_listeners_cannot_change_but_their_pools_can() {
    let running = with_udp("127.0.0.1:5353", "dns", "");
    let (links, inboxes) = inbox::pairs(2).expect("inboxes");
    let mut control = Control::new(&config(&running), links);
    for inbox in &inboxes {
        inbox.drain().for_each(drop);
    }
    // A listener moved, renamed, sent to another pool, left out, or added: refused whole.
    let moved = with_udp("127.0.0.1:5354", "dns", "");
    let renamed = with_udp("127.0.0.1:5353", "dns", "").replace("name = \"dns\"\nbind", "bind");
    let repooled = with_udp("127.0.0.1:5353", "dns2", "");
    let added = format!(
        "{running}\n[[listener]]\nname = \"dns-b\"\nbind = \"127.0.0.1:5355\"\npool = \"dns\"\n\
         protocol = \"udp\"\n"
    );
    for refused in [moved.as_str(), &renamed, &repooled, BEFORE, &added] {
        // Even with other changes in the file.
        let refused = refused.replace("name = \"b\"", "name = \"b2\"");
        let e = control.apply(&config(&refused)).expect_err("refused");
        assert!(matches!(e, ControlError::Conflict(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains("UDP listeners cannot change in a reload yet: restart ringlb"),
            "{e}"
        );
        for inbox in &inboxes {
            assert_eq!(inbox.drain().count(), 0, "nothing sent");
        }
    }
    // The pool's backends and udp_* keys change as any pool's do; the listener stays.
    let changed = with_udp("127.0.0.1:5353", "dns", "udp_responses = 1")
        .replace("127.0.0.1:5301", "127.0.0.1:5302");
    let outcome = control.apply(&config(&changed)).expect("applied");
    assert!(
        outcome
            .applied
            .iter()
            .any(|a| a.contains("dns/127.0.0.1:5302: added")),
        "{outcome:?}"
    );
    for inbox in &inboxes {
        let (_, reconfigured) = messages(inbox);
        let reconfigured = reconfigured.expect("a configuration for the workers");
        let l = &reconfigured.udp_listeners[0];
        assert_eq!((l.name.as_str(), l.bind.port()), ("dns", 5353));
        let pool = &reconfigured.pools[l.pool];
        assert_eq!(pool.name, "dns");
        assert_eq!(pool.udp.responses, Some(1));
    }
    // A TCP listener added alongside is a TCP change like any other.
    let tcp_too = format!(
        "{changed}\n[[listener]]\nname = \"dns-tcp\"\nbind = \"127.0.0.1:{}\"\npool = \"dns\"\n",
        free_port()
    );
    control.apply(&config(&tcp_too)).expect("applied");
}
