//! The control side: the truth about pools, backends and listeners while ringlb runs, the
//! admin API that changes and reads it, and `ringlb ctl`, its client.
//!
//! [`Control`] is built from the [`Config`] and one [`WorkerLink`] per worker. Every change
//! builds one new [`PoolSnapshot`] and sends it to every worker ([`Message::Pool`]); reads ask
//! every worker for its counters ([`Message::Report`]) and sum what comes back within a
//! timeout, so a worker that does not answer shows as missing data, never as a hang.
//!
//! A pool's backend list only grows while the process runs: workers count connections per
//! [`BackendId`] index, so ids must never shift under open connections. An added backend is
//! appended; a removed one drains, and once no worker reports a connection to it, it becomes a
//! tombstone (Down, hidden). What changes here is not written back to the configuration file:
//! a restart starts from the file again.
//!
//! [`BackendId`]: crate::core::backend::BackendId

#![forbid(unsafe_code)]

pub mod client;
pub mod ctl;
pub mod handover;
pub mod health;
pub mod metrics;
mod reload;
pub mod report;
pub mod server;
mod state;
pub mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use reload::{Outcome as ReloadOutcome, Source as ReloadSource};
pub use report::Reports;
pub use state::{Accepting, AdminState, Backend, Change, Checked, Life, Listener, Ramp};

use crate::config::limits::{MAX_BACKENDS_PER_POOL, MAX_WEIGHT};
use crate::config::{BackendSpec, Config, backend_from_spec};
use crate::core::backend::BackendInfo;
use crate::core::balance::{Algorithm, PoolSnapshot};
use crate::engine::inbox::{Message, WorkerLink};

/// Why a change was refused. Each kind maps to one HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("unknown pool {0:?}")]
    UnknownPool(String),
    #[error("pool {pool:?} has no backend {backend:?}")]
    UnknownBackend { pool: String, backend: String },
    #[error("unknown listener {0:?}")]
    UnknownListener(String),
    /// The request itself is wrong (a bad SPEC, weight or state).
    #[error("{0}")]
    Invalid(String),
    /// The request is fine but clashes with the current state (a duplicate name).
    #[error("{0}")]
    Conflict(String),
}

impl ControlError {
    /// The HTTP status the admin API answers with.
    pub fn status(&self) -> u16 {
        match self {
            ControlError::UnknownPool(_)
            | ControlError::UnknownBackend { .. }
            | ControlError::UnknownListener(_) => 404,
            ControlError::Invalid(_) => 400,
            ControlError::Conflict(_) => 409,
        }
    }
}

type Result<T> = std::result::Result<T, ControlError>;

/// One pool: its backends (append-only) and the snapshot the workers were last sent.
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    /// Indexed by [`BackendId`]; tombstones included.
    pub backends: Vec<Backend>,
    snapshot: Arc<PoolSnapshot>,
    /// Left out of the file by a reload: its backends drain, and it is not shown.
    pub retired: bool,
}

impl Pool {
    /// The snapshot the workers balance over (the last one sent).
    pub fn snapshot(&self) -> &Arc<PoolSnapshot> {
        &self.snapshot
    }

    /// The visible backend called `name`.
    fn find(&self, name: &str) -> Option<usize> {
        self.backends
            .iter()
            .position(|b| b.life.visible() && b.name == name)
    }

    /// A snapshot built afresh from the backend list (for a new backend or a new weight; a
    /// state change uses [`PoolSnapshot::with_state`] instead).
    fn rebuild(&self) -> PoolSnapshot {
        let infos = self
            .backends
            .iter()
            .map(|b| BackendInfo {
                name: b.hashed_as.clone(),
                addr: b.addr,
                weight: b.balancing_weight(),
                max_connections: b.max_connections,
                send_proxy: b.send_proxy,
            })
            .collect();
        let states = self.backends.iter().map(Backend::core_state).collect();
        PoolSnapshot::new(self.algorithm, infos, states)
    }
}

/// The truth about pools and listeners, and the links to the workers it is published to.
#[derive(Debug)]
pub struct Control {
    pools: Vec<Pool>,
    listeners: Vec<Listener>,
    links: Vec<WorkerLink>,
    /// Changes sent to the workers so far.
    changes: u64,
    /// The configuration the workers run with (after reloads: pools and listeners in this
    /// side's order).
    config: Arc<Config>,
    /// Where a reload reads the file from; `None` (the quick form): nothing to reload.
    source: Option<ReloadSource>,
}

impl Control {
    /// Everything as configured: every backend ready, every listener enabled.
    pub fn new(config: &Config, links: Vec<WorkerLink>) -> Self {
        // The workers start from these very snapshots.
        let snapshots = crate::engine::plan::pool_snapshots(config);
        let pools = config
            .pools
            .iter()
            .zip(snapshots)
            .map(|(p, snapshot)| {
                let backends: Vec<Backend> = p
                    .backends
                    .iter()
                    .map(|b| Backend::configured(b, "configured"))
                    .collect();
                Pool {
                    name: p.name.clone(),
                    algorithm: p.algorithm,
                    backends,
                    snapshot,
                    retired: false,
                }
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .map(|l| Listener {
                name: l.name.clone(),
                bind: l.bind,
                pool: l.pool,
                accepting: Accepting::Enabled,
            })
            .collect();
        Control {
            pools,
            listeners,
            links,
            changes: 0,
            config: Arc::new(config.clone()),
            source: None,
        }
    }

    /// Every pool's waiting room (limits and queue, shared by the workers), by pool index.
    pub fn rooms(&self) -> Vec<Arc<crate::core::capacity::Room>> {
        self.links
            .first()
            .map_or_else(Vec::new, |link| link.capacity().rooms())
    }

    /// The configuration the workers run with (after reloads).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every pool's sticky-session table, by pool index (`None`: no affinity).
    pub fn affinities(&self) -> Vec<Option<Arc<crate::core::affinity::Affinity>>> {
        self.links
            .first()
            .map_or_else(Vec::new, |link| link.capacity().affinities())
    }

    /// The links to the workers, in worker order.
    pub fn links(&self) -> &[WorkerLink] {
        &self.links
    }

    /// How many changes have been sent to the workers: read it with [`Self::links`] before
    /// asking for reports ([`Reports::collect`]).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Every pool, in configuration order.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// Every listener, in configuration order.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    fn pool_index(&self, pool: &str) -> Result<usize> {
        self.pools
            .iter()
            .position(|p| p.name == pool && !p.retired)
            .ok_or_else(|| ControlError::UnknownPool(pool.to_owned()))
    }

    /// The pool and the index of its visible backend `backend`.
    fn locate(&self, pool: &str, backend: &str) -> Result<(usize, usize)> {
        let p = self.pool_index(pool)?;
        let b = self.pools[p]
            .find(backend)
            .ok_or_else(|| ControlError::UnknownBackend {
                pool: pool.to_owned(),
                backend: backend.to_owned(),
            })?;
        Ok((p, b))
    }

    /// Set a backend's state. Only that backend's entry changes in the snapshot (the Maglev
    /// table is shared), so with source hashing only its clients move.
    pub fn set_state(&mut self, pool: &str, backend: &str, state: AdminState) -> Result<()> {
        let (p, b) = self.locate(pool, backend)?;
        let entry = &self.pools[p].backends[b];
        match entry.life {
            Life::Removing => {
                return Err(ControlError::Conflict(format!(
                    "backend {backend:?} is being removed; add it again once it is gone"
                )));
            }
            Life::Serving(now) if now == state => return Ok(()),
            Life::Serving(_) | Life::Removed => {}
        }
        self.change_life(
            p,
            b,
            Life::Serving(state),
            format!("set to {} through the admin API", state.as_str()),
        );
        Ok(())
    }

    /// Set a backend's weight (1 to 65535).
    pub fn set_weight(&mut self, pool: &str, backend: &str, weight: u32) -> Result<()> {
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(ControlError::Invalid(format!(
                "weight must be between 1 and {MAX_WEIGHT}, got {weight}"
            )));
        }
        let (p, b) = self.locate(pool, backend)?;
        if self.pools[p].backends[b].weight == weight {
            return Ok(());
        }
        self.pools[p].backends[b].weight = weight;
        let snapshot = self.pools[p].rebuild();
        self.publish(p, snapshot);
        Ok(())
    }

    /// Add a backend from a `--backend` SPEC (`ADDR[,weight=N][,name=NAME]`), appended to the
    /// pool, ready. Returns its name.
    pub fn add(&mut self, pool: &str, spec: &str) -> Result<String> {
        let p = self.pool_index(pool)?;
        let parsed: BackendSpec = spec
            .parse()
            .map_err(|e| ControlError::Invalid(format!("bad backend {spec:?}: {e}")))?;
        let info = backend_from_spec(&parsed)
            .map_err(|e| ControlError::Invalid(format!("bad backend {spec:?}: {e}")))?;
        if info.name.chars().any(char::is_control) {
            return Err(ControlError::Invalid(
                "a backend name must not contain control characters".to_owned(),
            ));
        }
        let entries = &mut self.pools[p].backends;
        if let Some(live) = entries
            .iter()
            .find(|b| b.life.visible() && b.name == info.name)
        {
            let why = match live.life {
                Life::Removing => "is being removed; add it again once it is gone",
                _ => "already exists",
            };
            return Err(ControlError::Conflict(format!(
                "pool {pool:?}: backend {:?} {why}",
                info.name
            )));
        }
        if entries.len() >= MAX_BACKENDS_PER_POOL {
            return Err(ControlError::Conflict(format!(
                "pool {pool:?} has had {MAX_BACKENDS_PER_POOL} backends, removed ones \
                 included; restart to add more"
            )));
        }
        // A tombstone with this name gives it up, so that names in the snapshot stay unique.
        for (i, old) in entries.iter_mut().enumerate() {
            if old.hashed_as == info.name {
                old.hashed_as = format!("\u{1}removed:{i}:{}", old.name);
            }
        }
        entries.push(Backend::configured(&info, "added through the admin API"));
        let snapshot = self.pools[p].rebuild();
        self.publish(p, snapshot);
        Ok(info.name)
    }

    /// Start removing a backend: it drains, and is forgotten by [`Self::forget_drained`] once
    /// no worker has a connection to it. Asking again while it drains is not an error.
    pub fn remove(&mut self, pool: &str, backend: &str) -> Result<()> {
        let (p, b) = self.locate(pool, backend)?;
        if self.pools[p].backends[b].life == Life::Removing {
            return Ok(());
        }
        self.change_life(p, b, Life::Removing, "removal asked through the admin API");
        self.pools[p].backends[b].removal_change = self.changes;
        Ok(())
    }

    /// Whether any backend is draining to be removed (then reports should come in, so that
    /// [`Self::forget_drained`] can finish the removal).
    pub fn removing(&self) -> bool {
        self.pools
            .iter()
            .any(|p| p.backends.iter().any(|b| b.life == Life::Removing))
    }

    /// Forget every removed backend that no worker has a connection to, by `reports` (which
    /// must hold every worker's answer, asked for after the removal, or nothing is
    /// forgotten). Returns `(pool, backend)` of each one forgotten.
    pub fn forget_drained(&mut self, reports: &Reports) -> Vec<(String, String)> {
        if !reports.complete() {
            return Vec::new();
        }
        let mut forgotten = Vec::new();
        for p in 0..self.pools.len() {
            for b in 0..self.pools[p].backends.len() {
                let entry = &self.pools[p].backends[b];
                let drained = entry.life == Life::Removing
                    && reports.after_changes >= entry.removal_change
                    && reports.backend(p, b).active == 0;
                if drained {
                    forgotten.push((self.pools[p].name.clone(), entry.name.clone()));
                    self.change_life(p, b, Life::Removed, "removed: no connections left");
                }
            }
        }
        forgotten
    }

    /// Enable or disable a listener, named by its name or its bind address, on every worker.
    pub fn set_listener(&mut self, listener: &str, on: bool) -> Result<()> {
        let open = |l: &&Listener| l.accepting != Accepting::Closed;
        let index = self
            .listeners
            .iter()
            .position(|l| open(&l) && l.name == listener)
            .or_else(|| {
                self.listeners
                    .iter()
                    .position(|l| open(&l) && l.bind.to_string() == listener)
            })
            .ok_or_else(|| ControlError::UnknownListener(listener.to_owned()))?;
        self.listeners[index].accepting = if on {
            Accepting::Enabled
        } else {
            Accepting::Disabled
        };
        self.broadcast(|| Message::Accepting {
            listener: index,
            on,
        });
        Ok(())
    }

    /// Why ringlb should not be sent traffic, if it should not: a listener that should accept
    /// but does not (workers not up yet, or stopping), a listener switched off (`ctl
    /// disable`: its address refuses new clients, so keepalived or BGP should send them to
    /// another node, which is how a node is handed over for maintenance), or a pool without
    /// a ready backend.
    pub fn health(&self, workers_accepting: bool) -> std::result::Result<(), String> {
        if let Some(l) = self
            .listeners
            .iter()
            .find(|l| l.accepting == Accepting::Disabled)
        {
            return Err(format!(
                "listener {:?} is disabled (ringlb ctl enable {} accepts again)",
                l.name, l.name
            ));
        }
        let enabled: Vec<&Listener> = self
            .listeners
            .iter()
            .filter(|l| l.accepting == Accepting::Enabled)
            .collect();
        if !workers_accepting {
            if let Some(l) = enabled.first() {
                return Err(format!(
                    "listener {:?} is not accepting: the workers are starting or stopping",
                    l.name
                ));
            }
        }
        for pool in self.pools.iter().filter(|p| !p.retired) {
            let ready = pool
                .backends
                .iter()
                .any(|b| b.core_state() == crate::core::backend::BackendState::Up);
            if !ready {
                return Err(format!("pool {:?} has no backend ready", pool.name));
            }
        }
        Ok(())
    }

    /// Move backend `b` of pool `p` to `life`, publishing the state change alone.
    fn change_life(&mut self, p: usize, b: usize, life: Life, reason: impl Into<String>) {
        let entry = &mut self.pools[p].backends[b];
        let before = entry.core_state();
        entry.life = life;
        entry.changed = Change::now(reason);
        self.publish_state(p, b, before);
    }

    /// Keep `snapshot` as pool `p`'s and send it to every worker.
    fn publish(&mut self, p: usize, snapshot: PoolSnapshot) {
        let snapshot = Arc::new(snapshot);
        self.pools[p].snapshot = Arc::clone(&snapshot);
        self.broadcast(|| Message::Pool {
            pool: p,
            snapshot: Arc::clone(&snapshot),
        });
    }

    fn broadcast(&mut self, message: impl Fn() -> Message) {
        self.changes += 1;
        for link in &self.links {
            // A stopped worker takes no more connections; what it missed does not matter.
            if let Err(e) = link.send(message()) {
                tracing::warn!("admin change not delivered: {e}");
            }
        }
    }
}
