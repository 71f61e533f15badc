//! Hitless reload: read the file again, validate it, and apply the difference to the running
//! workers through their inboxes, without closing a connection or refusing a client.
//!
//! What a reload applies, and how things are matched between the old and the new file:
//! - **Pools**, by name. A new pool is appended (workers append a balancer); a pool left out
//!   of the file is retired: its backends drain and are forgotten, and it is no longer shown.
//!   Algorithm and retries follow the file.
//! - **Backends**, by name within their pool. A backend in both keeps its id (its counters and
//!   its connections) and takes the file's weight and state `ready`: runtime changes made
//!   through the admin API are lost, as with HAProxy's runtime API. A new name is appended; a
//!   name left out drains and is forgotten; a name whose address changed is both (the old one
//!   drains, the new one is appended).
//! - **Listeners**, by bind address: name, pool, mode, and the timeouts apply to connections
//!   accepted from then on, and every listener is enabled again. A new address gets one
//!   `SO_REUSEPORT` socket per worker, bound here before anything else changes (a bind that
//!   fails refuses the file) and handed to each worker through its inbox; an address left out
//!   is closed on every worker, its accepted connections going on. Listener indices, like
//!   backend ids, are never reused.
//!
//! - **UDP listeners** cannot change yet: a file whose UDP listeners differ from the running
//!   ones (by name, bind address or pool name) is refused as a whole, with a message saying
//!   to restart. Their pools' keys (backends, `udp_*`) change as any pool's do.
//!
//! Settings that cannot change in a running process (engine, workers, CPUs, tuning, features,
//! `max_connections`, TCP options, `[admin]`, `[access_log]`, a listener's backlog) are listed
//! as needing a restart; everything else is applied anyway.
//!
//! A file that does not validate changes nothing: the error, located, goes to the log and to
//! whoever asked (`ringlb ctl reload`).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use socket2::Socket;

use super::{
    Accepting, AdminState, Backend, Change, Checked, Control, ControlError, Life, Listener, Pool,
};
use crate::config::limits::MAX_BACKENDS_PER_POOL;
use crate::config::{Config, Overrides};
use crate::core::backend::{BackendInfo, BackendState};
use crate::core::balance::PoolSnapshot;
use crate::engine::inbox::Message;
use crate::engine::socket;

/// Where a reload reads the configuration from: the file given at start, with the flags that
/// overrode it then.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub overrides: Overrides,
}

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// One line per change applied.
    pub applied: Vec<String>,
    /// One line per setting that differs in the file but takes effect only at a restart.
    pub restart_needed: Vec<String>,
}

impl Control {
    /// Reload from `source` from now on (`ringlb run --config FILE`).
    pub fn reload_from(&mut self, source: Source) {
        self.source = Some(source);
    }

    /// Read and validate the file again, and apply it ([`Self::apply`]). A file that does not
    /// validate changes nothing.
    pub fn reload(&mut self) -> Result<Outcome, ControlError> {
        let Some(source) = &self.source else {
            return Err(ControlError::Conflict(
                "nothing to reload: ringlb was started without --config".to_owned(),
            ));
        };
        let config = Config::from_file_with(&source.path, &source.overrides)
            .map_err(|e| ControlError::Invalid(format!("the new configuration is invalid: {e}")))?;
        self.apply(&config)
    }

    /// Apply `new`, a validated configuration, to the running process. Sockets for new
    /// listeners are bound first: one that cannot be bound refuses the whole file.
    pub fn apply(&mut self, new: &Config) -> Result<Outcome, ControlError> {
        check_udp_listeners(&self.config, new)?;
        self.check_room(new)?;
        let added = self.bind_added(new)?;
        let mut outcome = Outcome {
            restart_needed: restart_needed(&self.config, new),
            ..Outcome::default()
        };
        let order = self.apply_pools(new, &mut outcome);
        let closed = self.apply_listeners(new, &order, &mut outcome);
        let first_added = self.listeners.len();
        for (l, _) in &added {
            self.listeners.push(Listener {
                name: l.name.clone(),
                bind: l.bind,
                pool: order[l.pool],
                accepting: Accepting::Enabled,
            });
            outcome
                .applied
                .push(format!("listener {:?} ({}) added", l.name, l.bind));
        }
        let effective = Arc::new(self.effective(new, &order));
        self.config = Arc::clone(&effective);
        self.release_unchecked();
        self.broadcast(|| Message::Reconfigure(Arc::clone(&effective)));
        // Each worker its own socket of each new listener, after the policies.
        for (i, (_, sockets)) in added.into_iter().enumerate() {
            for (link, socket) in self.links.iter().zip(sockets) {
                let message = Message::AddListener {
                    listener: first_added + i,
                    socket,
                };
                if let Err(e) = link.send(message) {
                    tracing::warn!("new listener not delivered: {e}");
                }
            }
        }
        for listener in closed {
            self.broadcast(|| Message::CloseListener { listener });
        }
        Ok(outcome)
    }

    /// The listeners of `new` whose bind address no open listener has, each with one bound
    /// socket per worker.
    fn bind_added<'a>(
        &self,
        new: &'a Config,
    ) -> Result<Vec<(&'a crate::config::Listener, Vec<Socket>)>, ControlError> {
        let mut added = Vec::new();
        for l in &new.listeners {
            if self.open_listener(l.bind).is_some() {
                continue;
            }
            let sockets = (0..self.links.len())
                // Every engine keeps its listeners non-blocking (the blocking one polls first).
                .map(|_| {
                    socket::listener(l.bind, l.backlog, true, &self.config.tcp.client, l.freebind)
                })
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| {
                    ControlError::Conflict(format!(
                        "listener {:?}: cannot listen on {}: {e}; nothing was changed",
                        l.name, l.bind
                    ))
                })?;
            added.push((l, sockets));
        }
        Ok(added)
    }

    /// The index of the listener on `bind` that is not closed.
    fn open_listener(&self, bind: std::net::SocketAddr) -> Option<usize> {
        self.listeners
            .iter()
            .position(|l| l.bind == bind && l.accepting != Accepting::Closed)
    }

    /// Refuse, before changing anything, a file that would grow a pool's backend list (which
    /// only grows while running) past [`MAX_BACKENDS_PER_POOL`].
    fn check_room(&self, new: &Config) -> Result<(), ControlError> {
        for pool in &new.pools {
            let Some(old) = self.pools.iter().find(|p| p.name == pool.name) else {
                continue;
            };
            let appended = pool
                .backends
                .iter()
                .filter(|b| {
                    old.find(&b.name)
                        .is_none_or(|i| old.backends[i].addr != b.addr)
                })
                .count();
            if old.backends.len() + appended > MAX_BACKENDS_PER_POOL {
                return Err(ControlError::Conflict(format!(
                    "pool {:?} would have had more than {MAX_BACKENDS_PER_POOL} backends, \
                     removed ones included; restart to apply this file",
                    pool.name
                )));
            }
        }
        Ok(())
    }

    /// Pools by name; returns, for each pool of `new`, its index here.
    fn apply_pools(&mut self, new: &Config, outcome: &mut Outcome) -> Vec<usize> {
        let mut order = Vec::with_capacity(new.pools.len());
        for pool in &new.pools {
            let index = match self.pools.iter().position(|p| p.name == pool.name) {
                Some(p) => {
                    self.update_pool(p, pool, outcome);
                    p
                }
                None => {
                    self.add_pool(pool, outcome);
                    self.pools.len() - 1
                }
            };
            order.push(index);
        }
        for p in 0..self.pools.len() {
            if !order.contains(&p) && !self.pools[p].retired {
                self.retire_pool(p, outcome);
            }
        }
        order
    }

    fn add_pool(&mut self, pool: &crate::config::Pool, outcome: &mut Outcome) {
        let backends = pool
            .backends
            .iter()
            .map(|b| Backend::configured(b, "added by a reload"))
            .collect();
        let states = vec![BackendState::Up; pool.backends.len()];
        let snapshot = PoolSnapshot::new(pool.algorithm, pool.backends.clone(), states);
        self.pools.push(Pool {
            name: pool.name.clone(),
            algorithm: pool.algorithm,
            backends,
            snapshot: Arc::new(snapshot.clone()),
            retired: false,
        });
        // Workers append a pool sent one past their last.
        self.publish(self.pools.len() - 1, snapshot);
        outcome.applied.push(format!("pool {:?} added", pool.name));
    }

    fn update_pool(&mut self, p: usize, pool: &crate::config::Pool, outcome: &mut Outcome) {
        let name = &pool.name;
        if self.pools[p].retired {
            self.pools[p].retired = false;
            outcome.applied.push(format!("pool {name:?} back in use"));
        }
        if self.pools[p].algorithm != pool.algorithm {
            self.pools[p].algorithm = pool.algorithm;
            outcome
                .applied
                .push(format!("pool {name:?}: algorithm changed"));
        }
        let mut removed = Vec::new();
        for (i, entry) in self.pools[p].backends.iter_mut().enumerate() {
            if !entry.life.visible() {
                continue;
            }
            match pool.backends.iter().find(|b| b.name == entry.name) {
                Some(b) if b.addr == entry.addr => {
                    // Back in the file: it hashes as itself again (a reload that moved it away
                    // and back had given its name to the entry at the other address).
                    entry.hashed_as.clone_from(&entry.name);
                    if entry.weight != b.weight {
                        entry.weight = b.weight;
                        outcome
                            .applied
                            .push(format!("{name}/{}: weight {}", entry.name, b.weight));
                    }
                    if entry.max_connections != b.max_connections {
                        entry.max_connections = b.max_connections;
                        let limit = b
                            .max_connections
                            .map_or_else(|| "none".to_owned(), |n| n.to_string());
                        outcome
                            .applied
                            .push(format!("{name}/{}: max_connections {limit}", entry.name));
                    }
                    if entry.life != Life::Serving(AdminState::Ready) {
                        entry.life = Life::Serving(AdminState::Ready);
                        entry.changed = Change::now("set to ready by a reload");
                        outcome
                            .applied
                            .push(format!("{name}/{}: ready", entry.name));
                    }
                }
                replaced @ (Some(_) | None) => {
                    if entry.life != Life::Removing {
                        entry.life = Life::Removing;
                        entry.changed = Change::now("left out of the file: removed by a reload");
                        outcome
                            .applied
                            .push(format!("{name}/{}: removed", entry.name));
                    }
                    if replaced.is_some() {
                        // Its name goes to the backend at the new address (names in a
                        // snapshot are unique); it keeps its id, so its counts stay with it.
                        entry.hashed_as = format!("\u{1}removed:{i}:{}", entry.name);
                    }
                    removed.push(i);
                }
            }
        }
        for b in &pool.backends {
            let kept = self.pools[p]
                .backends
                .iter()
                .any(|e| e.life.visible() && e.life != Life::Removing && e.name == b.name);
            if !kept {
                self.pools[p]
                    .backends
                    .push(Backend::configured(b, "added by a reload"));
                outcome.applied.push(format!("{name}/{}: added", b.name));
            }
        }
        let snapshot = self.pools[p].rebuild();
        self.publish(p, snapshot);
        for i in removed {
            self.pools[p].backends[i].removal_change = self.changes;
        }
    }

    /// A pool left out of the file: its backends drain and are forgotten.
    fn retire_pool(&mut self, p: usize, outcome: &mut Outcome) {
        self.pools[p].retired = true;
        for b in 0..self.pools[p].backends.len() {
            if self.pools[p].backends[b].life.visible() {
                self.change_life(p, b, Life::Removing, "its pool was removed by a reload");
                self.pools[p].backends[b].removal_change = self.changes;
            }
        }
        outcome
            .applied
            .push(format!("pool {:?} removed", self.pools[p].name));
    }

    /// Listeners by bind address: name and pool follow the file, and each is enabled again;
    /// those left out are closed. Returns the indices of those to close.
    fn apply_listeners(
        &mut self,
        new: &Config,
        order: &[usize],
        outcome: &mut Outcome,
    ) -> Vec<usize> {
        let mut closed = Vec::new();
        for (index, listener) in self.listeners.clone().iter().enumerate() {
            if listener.accepting == Accepting::Closed {
                continue;
            }
            let Some(l) = new.listeners.iter().find(|l| l.bind == listener.bind) else {
                self.listeners[index].accepting = Accepting::Closed;
                closed.push(index);
                outcome.applied.push(format!(
                    "listener {:?} ({}) removed: its connections go on",
                    listener.name, listener.bind
                ));
                continue;
            };
            let entry = &mut self.listeners[index];
            let pool = order[l.pool];
            if entry.name != l.name || entry.pool != pool {
                outcome.applied.push(format!(
                    "listener {:?} ({}): name {:?}, pool {:?}",
                    entry.name, entry.bind, l.name, self.pools[pool].name
                ));
                entry.name.clone_from(&l.name);
                entry.pool = pool;
            }
            if entry.accepting == Accepting::Disabled {
                entry.accepting = Accepting::Enabled;
                self.broadcast(|| Message::Accepting {
                    listener: index,
                    on: true,
                });
                outcome
                    .applied
                    .push(format!("listener {:?}: enabled", l.name));
            }
            let old = self.config.listeners.get(index);
            if old.is_some_and(|o| o.backlog != l.backlog) {
                outcome
                    .restart_needed
                    .push(format!("listener {:?}: backlog", l.name));
            }
        }
        closed
    }

    /// `new` as the workers must see it: pools and listeners in this side's order (which only
    /// grows), listener pools as indices here; what the file left out keeps its last settings.
    fn effective(&self, new: &Config, order: &[usize]) -> Config {
        let mut pools = self.config.pools.clone();
        for (i, pool) in new.pools.iter().enumerate() {
            let at = order[i];
            if at < pools.len() {
                pools[at] = pool.clone();
            } else {
                pools.push(pool.clone());
            }
        }
        let listeners = self
            .listeners
            .iter()
            .enumerate()
            .map(|(index, known)| {
                let open = known.accepting != Accepting::Closed;
                let mut listener = match new.listeners.iter().find(|l| open && l.bind == known.bind)
                {
                    Some(l) => {
                        let mut l = l.clone();
                        // Route pools, like the listener's own, as indices here.
                        for route in &mut l.routes {
                            route.pool = order[route.pool];
                        }
                        l
                    }
                    None => self
                        .config
                        .listeners
                        .get(index)
                        .cloned()
                        .unwrap_or_else(|| self.config.listeners[0].clone()),
                };
                listener.pool = known.pool;
                listener
            })
            .collect();
        Config {
            pools,
            listeners,
            timeouts: new.timeouts,
            ..(*self.config).clone()
        }
    }
}

impl Backend {
    /// A backend as the file describes it: ready.
    pub(super) fn configured(info: &BackendInfo, reason: &str) -> Backend {
        Backend {
            name: info.name.clone(),
            addr: info.addr,
            weight: info.weight,
            max_connections: info.max_connections,
            send_proxy: info.send_proxy,
            life: Life::Serving(AdminState::Ready),
            changed: Change::now(reason),
            hashed_as: info.name.clone(),
            removal_change: 0,
            checked: Checked::default(),
            ramp: None,
        }
    }
}

/// Refuse, before changing anything, a file whose UDP listeners differ from the running
/// ones: the workers cannot open or close them, nor move one to another pool, while running.
/// The running side keeps its own [`Config::udp_listeners`] (their pool indices stay valid,
/// since pools are matched by name and only appended).
fn check_udp_listeners(old: &Config, new: &Config) -> Result<(), ControlError> {
    fn described(config: &Config) -> Vec<String> {
        let mut listeners: Vec<String> = config
            .udp_listeners
            .iter()
            .map(|l| {
                let pool = config.pools.get(l.pool).map_or("?", |p| p.name.as_str());
                format!("{:?} on {} to pool {pool:?}", l.name, l.bind)
            })
            .collect();
        listeners.sort();
        listeners
    }
    let (running, file) = (described(old), described(new));
    if running == file {
        return Ok(());
    }
    let list = |l: &[String]| {
        if l.is_empty() {
            "none".to_owned()
        } else {
            l.join(", ")
        }
    };
    Err(ControlError::Conflict(format!(
        "UDP listeners cannot change in a reload yet: restart ringlb (running: {}; in the \
         file: {}); nothing was changed",
        list(&running),
        list(&file)
    )))
}

/// The settings of `new` that differ from `old` and apply only at a restart.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let checks: [(&str, bool); 10] = [
        ("engine", old.engine != new.engine),
        ("workers", old.workers != new.workers),
        ("cpus", old.cpus != new.cpus),
        ("tuning", old.tuning != new.tuning),
        ("features", old.features != new.features),
        (
            "max_connections",
            old.connections.max_connections != new.connections.max_connections,
        ),
        ("tcp", old.tcp != new.tcp),
        ("admin", old.admin != new.admin),
        ("access_log", old.access_log != new.access_log),
        (
            "timeouts.shutdown_grace",
            old.timeouts.shutdown_grace != new.timeouts.shutdown_grace,
        ),
    ];
    checks
        .iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| format!("{name}: takes effect at a restart"))
        .collect()
}

#[cfg(test)]
mod tests;
