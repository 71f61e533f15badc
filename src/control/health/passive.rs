//! Passive checks, as nginx's `max_fails` and `fail_timeout`: `max_fails` failures of a
//! backend within `fail_timeout` (failed connects, connections it reset, and UDP datagrams it
//! refused), counted by the
//! workers and read from their reports about once a second, take it down. Active checks bring it back (with `rise`); a pool without them
//! tries the backend again after `fail_timeout`.

use std::time::Instant;

use super::super::{Change, Control, Life, Reports};
use crate::core::backend::BackendState;
use crate::core::health::Health;

impl Control {
    /// Whether any pool counts failed connects: then reports should come in regularly.
    pub fn passive(&self) -> bool {
        self.config.pools.iter().any(|p| p.max_fails > 0)
    }

    /// Take the failed connects of `reports` (every worker's answer) into account at `now`.
    pub fn observe_failures(&mut self, reports: &Reports, now: Instant) {
        if !reports.complete() {
            return;
        }
        for p in 0..self.pools.len() {
            let Some(pool) = self.config.pools.get(p) else {
                continue;
            };
            let (max_fails, window) = (u64::from(pool.max_fails), pool.fail_timeout);
            let active = pool.health.is_some();
            if max_fails == 0 || self.pools[p].retired {
                continue;
            }
            let pool_name = self.pools[p].name.clone();
            for b in 0..self.pools[p].backends.len() {
                let entry = &mut self.pools[p].backends[b];
                if !matches!(entry.life, Life::Serving(_)) {
                    continue;
                }
                let counted = reports.backend(p, b);
                // A UDP flow's refusal (ICMP port unreachable) is its failed connect.
                let total = counted.connect_failures + counted.resets + reports.udp_refusals(p, b);
                let checked = &mut entry.checked;
                checked.failed_connects.push_back((now, total));
                // Keep one sample at or before the window's start as the baseline.
                while checked
                    .failed_connects
                    .get(1)
                    .is_some_and(|&(at, _)| now.saturating_duration_since(at) >= window)
                {
                    checked.failed_connects.pop_front();
                }
                let since = checked.failed_connects.front().map_or(total, |&(_, t)| t);
                let failed = total.saturating_sub(since);
                match checked.tracker.state() {
                    Health::Up if failed >= max_fails => {
                        checked.tracker.force(Health::Down);
                        checked.downs += 1;
                        checked.passive_until = Some(now + window);
                        checked.failed_connects.clear();
                        let reason =
                            format!("{failed} failed connects or resets within {window:?}");
                        tracing::warn!(
                            pool = pool_name,
                            backend = entry.name,
                            reason,
                            "backend down (passive check)"
                        );
                        entry.changed = Change::now(format!("down: {reason}"));
                        self.publish_state(p, b, BackendState::Up);
                    }
                    Health::Down if !active && checked.passive_until.is_some_and(|t| now >= t) => {
                        checked.tracker.force(Health::Up);
                        checked.passive_until = None;
                        tracing::info!(
                            pool = pool_name,
                            backend = entry.name,
                            "backend tried again after fail_timeout"
                        );
                        entry.changed = Change::now("up: fail_timeout over");
                        self.publish_state(p, b, BackendState::Down);
                    }
                    Health::Up | Health::Down => {}
                }
            }
        }
    }
}
