//! Active health checks. The checker (`checker.rs`, a thread of its own) runs them; this side
//! turns their results into backend states with rise and fall (`core::health`) and publishes
//! a change like any other: one new snapshot to every worker, the Maglev table kept, so that
//! only the clients of the backend that changed move (with `slow_start`, a backend that comes
//! back is ramped through a few rebuilt snapshots instead: see `ramp.rs`).
//!
//! A checked backend is trusted until its checks say otherwise (it starts up). Down, it takes
//! no new connection whatever its admin state; its open connections go on. Admin states and
//! health are separate: `ready` and down shows as `down`; `maint` stays `maint`.

mod checker;
mod passive;
mod probe;
mod ramp;

pub use checker::{REFRESH, Sink, Target, spawn};

use std::net::SocketAddr;

use super::{Change, Control, Life};
use crate::core::backend::BackendState;
use crate::core::health::Health;

impl Control {
    /// Whether pool `p` has active checks.
    pub fn checks(&self, p: usize) -> bool {
        self.config.pools.get(p).is_some_and(|c| c.health.is_some())
    }

    /// Every backend to check now: the serving backends (ready or draining) of every pool
    /// that has `[pool.health]`.
    pub fn check_targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for (p, pool) in self.pools.iter().enumerate() {
            let health = self.config.pools.get(p).and_then(|c| c.health.as_ref());
            let Some(health) = health.filter(|_| !pool.retired) else {
                continue;
            };
            for (b, backend) in pool.backends.iter().enumerate() {
                if !matches!(backend.life, Life::Serving(_)) {
                    continue;
                }
                let port = health.port.unwrap_or(backend.addr.port());
                targets.push(Target {
                    pool: p,
                    backend: b,
                    addr: SocketAddr::new(backend.addr.ip(), port),
                    health: health.clone(),
                });
            }
        }
        targets
    }

    /// After a reload: a backend that is down by checks its pool no longer has (no
    /// `[pool.health]`, no `max_fails`) is up again, since nothing else would ever bring it
    /// back.
    pub(in crate::control) fn release_unchecked(&mut self) {
        for p in 0..self.pools.len() {
            let pool = self.config.pools.get(p);
            if pool.is_some_and(|c| c.health.is_some() || c.max_fails > 0) {
                continue;
            }
            for b in 0..self.pools[p].backends.len() {
                let checked = &mut self.pools[p].backends[b].checked;
                if checked.tracker.state() == Health::Down {
                    checked.tracker.force(Health::Up);
                    checked.passive_until = None;
                    self.pools[p].backends[b].changed = Change::now("up: its checks were removed");
                    self.publish_state(p, b, BackendState::Down);
                }
            }
        }
    }

    /// One finished check of `target`. When rise or fall flips the backend, the change is
    /// logged with its reason and published.
    pub fn record_check(&mut self, target: &Target, result: Result<(), String>) {
        let (p, b) = (target.pool, target.backend);
        // Begun before a reload that removed the pool's checks.
        if !self.checks(p) {
            return;
        }
        let Some(pool) = self.pools.get_mut(p) else {
            return;
        };
        let pool_name = pool.name.clone();
        let Some(entry) = pool.backends.get_mut(b) else {
            return;
        };
        // A backend removed (or moved by a reload) since the check began: not its result.
        if entry.addr.ip() != target.addr.ip() || !matches!(entry.life, Life::Serving(_)) {
            return;
        }
        let checked = &mut entry.checked;
        checked.checks += 1;
        match &result {
            Ok(()) => checked.last_failure = None,
            Err(reason) => {
                checked.failures += 1;
                checked.last_failure = Some(reason.clone());
            }
        }
        let (rise, fall) = (target.health.rise, target.health.fall);
        let Some(flipped) = checked.tracker.record(result.is_ok(), rise, fall) else {
            return;
        };
        let name = entry.name.clone();
        let reason = match (flipped, result) {
            (Health::Down, Err(reason)) => {
                checked.downs += 1;
                tracing::warn!(
                    pool = pool_name,
                    backend = name,
                    reason,
                    fall,
                    "backend down"
                );
                format!("down: {fall} checks failed, the last with {reason}")
            }
            (Health::Down, Ok(())) => format!("down: {fall} checks failed"),
            (Health::Up, _) => {
                tracing::info!(pool = pool_name, backend = name, rise, "backend up");
                format!("up: {rise} checks passed")
            }
        };
        entry.changed = Change::now(reason);
        let before = match flipped {
            Health::Up => BackendState::Down,
            Health::Down => BackendState::Up,
        };
        self.publish_state(p, b, before);
        let any_up = self.pools[p]
            .backends
            .iter()
            .any(|b| b.core_state() == BackendState::Up);
        if flipped == Health::Down && !any_up {
            tracing::error!(pool = pool_name, "no backend of the pool is up");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::{Check, Config, Overrides};
    use crate::control::view::Show;
    use crate::control::{Reports, metrics};
    use crate::core::backend::BackendId;
    use crate::core::balance::PoolSnapshot;
    use crate::engine::inbox::{self, Inbox, Message};

    fn setup() -> (Control, Vec<Inbox>) {
        setup_with(|_| {})
    }

    fn setup_with(adjust: impl FnOnce(&mut crate::config::Pool)) -> (Control, Vec<Inbox>) {
        let specs =
            ["127.0.0.1:9001,name=a", "127.0.0.1:9002,name=b"].map(|s| s.parse().expect("spec"));
        let mut config =
            Config::from_quick_with("127.0.0.1:8080", &specs, &Overrides::default(), &[0])
                .expect("valid");
        config.pools[0].health = Some(crate::config::Health {
            check: Check::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            port: Some(9100),
        });
        adjust(&mut config.pools[0]);
        let (links, inboxes) = inbox::pairs(1).expect("inboxes");
        (Control::new(&config, links), inboxes)
    }

    fn snapshots(inbox: &Inbox) -> Vec<Arc<PoolSnapshot>> {
        inbox
            .drain()
            .filter_map(|m| match m {
                Message::Pool { snapshot, .. } => Some(snapshot),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fall_takes_a_backend_down_and_rise_brings_it_back() {
        let (mut control, inboxes) = setup();
        let targets = control.check_targets();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].addr.port(), 9100, "the check's own port");
        let b = &targets[1];
        for _ in 0..2 {
            control.record_check(b, Err("connect: refused".into()));
        }
        assert!(
            snapshots(&inboxes[0]).is_empty(),
            "two failures of three: no change"
        );
        control.record_check(b, Err("connect: refused".into()));
        let sent = snapshots(&inboxes[0]);
        assert_eq!(sent.len(), 1, "one snapshot for the flip");
        assert_eq!(sent[0].state(BackendId(1)), BackendState::Down);
        assert_eq!(sent[0].state(BackendId(0)), BackendState::Up);

        let show = Show::build(&control, &Reports::default());
        let shown = &show.pools[0].backends[1];
        assert_eq!(shown.state, "down");
        assert_eq!(shown.effective_weight, 0);
        let check = shown.check.as_ref().expect("checked");
        assert_eq!((check.checks, check.failures, check.downs), (3, 3, 1));
        assert_eq!(check.last_failure.as_deref(), Some("connect: refused"));
        assert!(shown.last_change.reason.contains("3 checks failed"));
        let text = metrics::render(&show);
        assert!(
            text.contains("ringlb_backend_up{pool=\"backends\",backend=\"b\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("ringlb_backend_check_up_down_total{pool=\"backends\",backend=\"b\"} 1")
        );

        control.record_check(b, Ok(()));
        assert!(snapshots(&inboxes[0]).is_empty(), "one pass of two");
        control.record_check(b, Ok(()));
        let sent = snapshots(&inboxes[0]);
        assert_eq!(sent[0].state(BackendId(1)), BackendState::Up);
        let show = Show::build(&control, &Reports::default());
        assert_eq!(show.pools[0].backends[1].state, "ready");
    }

    #[test]
    fn an_admin_state_stays_what_it_is_under_health() {
        let (mut control, inboxes) = setup();
        control
            .set_state("backends", "a", crate::control::AdminState::Maint)
            .expect("maint");
        let targets = control.check_targets();
        assert_eq!(
            targets.len(),
            2,
            "maint backends are checked too (they are serving)"
        );
        for _ in 0..3 {
            control.record_check(&targets[0], Err("timeout".into()));
        }
        let show = Show::build(&control, &Reports::default());
        assert_eq!(show.pools[0].backends[0].state, "maint");
        inboxes[0].drain().for_each(drop);
        control
            .set_state("backends", "a", crate::control::AdminState::Ready)
            .expect("ready");
        let sent = snapshots(&inboxes[0]);
        assert_eq!(
            sent[0].state(BackendId(0)),
            BackendState::Down,
            "ready again, but its checks still fail"
        );
        assert!(control.health(true).is_ok(), "b is up");
    }

    #[test]
    fn a_backend_that_comes_back_ramps_its_weight_over_slow_start() {
        let slow_start = Duration::from_secs(10);
        let (mut control, inboxes) = setup_with(|pool| {
            pool.slow_start = slow_start;
            pool.backends[1].weight = 50;
        });
        let b = control.check_targets()[1].clone();
        for _ in 0..3 {
            control.record_check(&b, Err("refused".into()));
        }
        inboxes[0].drain().for_each(drop);
        control.record_check(&b, Ok(()));
        control.record_check(&b, Ok(()));
        let started = control.pools()[0].backends[1].ramp.expect("ramping").since;
        let weight = |s: &PoolSnapshot| s.backends()[1].weight;
        let sent = snapshots(&inboxes[0]);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].state(BackendId(1)), BackendState::Up);
        assert_eq!(weight(&sent[0]), 5, "a tenth of its weight to begin with");
        let show = Show::build(&control, &Reports::default());
        assert_eq!(show.pools[0].backends[1].effective_weight, 5);

        control.step_ramps(started + Duration::from_millis(500));
        assert!(
            snapshots(&inboxes[0]).is_empty(),
            "the same step: nothing sent"
        );
        control.step_ramps(started + Duration::from_secs(5));
        assert_eq!(weight(&snapshots(&inboxes[0])[0]), 30);
        control.step_ramps(started + slow_start);
        assert_eq!(
            weight(&snapshots(&inboxes[0])[0]),
            50,
            "its own weight at the end"
        );
        control.step_ramps(started + slow_start * 2);
        assert!(snapshots(&inboxes[0]).is_empty(), "over");
    }

    /// Reports in which backend 1 has `failures` failed connects so far.
    fn reports(failures: u64) -> Reports {
        reports_with(failures, 0)
    }

    /// Reports in which backend 1 has `failures` failed connects and `resets` resets so far.
    fn reports_with(failures: u64, resets: u64) -> Reports {
        let mut counters = vec![crate::core::stats::BackendCounters::default(); 2];
        counters[1].connect_failures = failures;
        counters[1].resets = resets;
        Reports {
            asked: 1,
            answers: vec![crate::engine::inbox::WorkerReport {
                backends: vec![counters],
                ..Default::default()
            }],
            after_changes: 0,
        }
    }

    #[test]
    fn max_fails_within_fail_timeout_take_a_backend_down_until_it_is_over() {
        let (mut control, inboxes) = setup_with(|pool| {
            pool.health = None;
            pool.max_fails = 3;
            pool.fail_timeout = Duration::from_secs(10);
        });
        assert!(control.passive());
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        control.observe_failures(&reports(100), at(0));
        control.observe_failures(&reports(101), at(1));
        control.observe_failures(&reports(102), at(2));
        // Spread out: two failures in the window at most.
        control.observe_failures(&reports(103), at(13));
        assert!(snapshots(&inboxes[0]).is_empty(), "never 3 within 10 s");
        control.observe_failures(&reports(104), at(14));
        control.observe_failures(&reports(105), at(15));
        let sent = snapshots(&inboxes[0]);
        assert_eq!(sent.len(), 1, "3 failures within 10 s");
        assert_eq!(sent[0].state(BackendId(1)), BackendState::Down);
        let show = Show::build(&control, &Reports::default());
        assert_eq!(show.pools[0].backends[1].state, "down");
        control.observe_failures(&reports(105), at(24));
        assert!(snapshots(&inboxes[0]).is_empty(), "fail_timeout not over");
        control.observe_failures(&reports(105), at(25));
        let sent = snapshots(&inboxes[0]);
        assert_eq!(sent[0].state(BackendId(1)), BackendState::Up, "tried again");
    }

    #[test]
    fn resets_count_as_failures_too() {
        let (mut control, inboxes) = setup_with(|pool| {
            pool.health = None;
            pool.max_fails = 3;
            pool.fail_timeout = Duration::from_secs(10);
        });
        let t0 = std::time::Instant::now();
        control.observe_failures(&reports_with(0, 0), t0);
        control.observe_failures(&reports_with(1, 1), t0 + Duration::from_secs(1));
        assert!(snapshots(&inboxes[0]).is_empty(), "two so far");
        control.observe_failures(&reports_with(1, 2), t0 + Duration::from_secs(2));
        let sent = snapshots(&inboxes[0]);
        assert_eq!(sent.len(), 1, "a failed connect and two resets within 10 s");
        assert_eq!(sent[0].state(BackendId(1)), BackendState::Down);
    }
}
