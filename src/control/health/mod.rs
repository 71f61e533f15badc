//! Active health checks. The checker (`checker.rs`, a thread of its own) runs them; this side
//! turns their results into backend states with rise and fall (`core::health`) and publishes
//! a change like any other: one new snapshot to every worker, the Maglev table kept, so that
//! only the clients of the backend that changed move.
//!
//! A checked backend is trusted until its checks say otherwise (it starts up). Down, it takes
//! no new connection whatever its admin state; its open connections go on. Admin states and
//! health are separate: `ready` and down shows as `down`; `maint` stays `maint`.

mod checker;
mod probe;

pub use checker::{REFRESH, Sink, Target, spawn};

use std::net::SocketAddr;

use super::{Change, Control, Life};
use crate::core::backend::{BackendId, BackendState};
use crate::core::health::Health;

impl Control {
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

    /// One finished check of `target`. When rise or fall flips the backend, the change is
    /// logged with its reason and published.
    pub fn record_check(&mut self, target: &Target, result: Result<(), String>) {
        let (p, b) = (target.pool, target.backend);
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
        let state = entry.core_state();
        // Indices fit: lists are capped at MAX_BACKENDS_PER_POOL entries.
        let snapshot = self.pools[p]
            .snapshot
            .with_state(BackendId(b as u32), state);
        self.publish(p, snapshot);
        let any_up = self.pools[p]
            .backends
            .iter()
            .any(|b| b.core_state() == BackendState::Up);
        if flipped == Health::Down && !any_up {
            tracing::error!(pool = pool_name, "no backend of the pool is up");
        }
    }
}
