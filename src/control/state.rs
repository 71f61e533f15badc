//! What the control side knows of one backend and one listener, beyond the pool snapshot.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::core::backend::BackendState;
use crate::core::health::{Health, Tracker};

/// The state an operator sets on a backend (HAProxy's `set server … state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes new connections.
    Ready,
    /// Takes no new connections; open ones go on until they end.
    Drain,
    /// Maintenance: takes nothing.
    Maint,
}

impl AdminState {
    /// The spelling in the API and in `ringlb ctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

impl std::str::FromStr for AdminState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "ready" => Ok(AdminState::Ready),
            "drain" => Ok(AdminState::Drain),
            "maint" => Ok(AdminState::Maint),
            other => Err(format!(
                "unknown state {other:?}; expected ready, drain or maint"
            )),
        }
    }
}

/// Where a backend is in its life on the control side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// In the pool, in the state the operator set.
    Serving(AdminState),
    /// Removal asked for: draining until no worker has a connection to it.
    Removing,
    /// Forgotten: a tombstone that keeps its id (so the ids after it never shift under open
    /// connections), Down, and hidden from every view.
    Removed,
}

impl Life {
    /// The state the workers' snapshots give it.
    pub fn core(self) -> BackendState {
        match self {
            Life::Serving(AdminState::Ready) => BackendState::Up,
            Life::Serving(AdminState::Drain) | Life::Removing => BackendState::Draining,
            Life::Serving(AdminState::Maint) | Life::Removed => BackendState::Down,
        }
    }

    /// The spelling in views: the admin state, or `removing`.
    pub fn label(self) -> &'static str {
        match self {
            Life::Serving(state) => state.as_str(),
            Life::Removing => "removing",
            Life::Removed => "removed",
        }
    }

    /// Whether views show it and names reach it (every life but [`Life::Removed`]).
    pub fn visible(self) -> bool {
        self != Life::Removed
    }
}

/// When a backend's state last changed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub at: SystemTime,
    pub reason: String,
}

impl Change {
    pub(crate) fn now(reason: impl Into<String>) -> Self {
        Change {
            at: SystemTime::now(),
            reason: reason.into(),
        }
    }
}

/// One backend as the control side keeps it. Its index in the pool's list is its
/// [`crate::core::backend::BackendId`], for as long as the process runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Its name: the configured one, or its address as text.
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Most connections at once, process-wide (`None`: no limit).
    pub max_connections: Option<u32>,
    /// The PROXY protocol header it is sent first, if any.
    pub send_proxy: Option<crate::core::proxy_header::ProxyVersion>,
    pub life: Life,
    pub changed: Change,
    /// The name the snapshot gives it: its own, except for a tombstone whose name was taken
    /// again by a newer backend (names in a snapshot must stay unique, since workers carry
    /// connection counts across snapshots by name).
    pub(crate) hashed_as: String,
    /// While [`Life::Removing`]: the change that started the removal. Only reports asked for
    /// after it may show that no connection is left (an older report could predate a
    /// connection made just before the drain).
    pub(crate) removal_change: u64,
    /// What its pool's active checks found.
    pub checked: Checked,
    /// While its weight ramps up after it came back (`slow_start`).
    pub ramp: Option<Ramp>,
}

/// A backend's slow start: since when, and the weight it balances with now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ramp {
    pub since: std::time::Instant,
    pub weight: u32,
}

impl Backend {
    /// The weight it balances with: its own, or less while it ramps up.
    pub fn balancing_weight(&self) -> u32 {
        self.ramp.map_or(self.weight, |r| r.weight)
    }

    /// The state the workers balance with: its life, and down while its checks fail.
    pub fn core_state(&self) -> BackendState {
        match (self.life, self.checked.tracker.state()) {
            (Life::Serving(_), Health::Down) => BackendState::Down,
            (life, _) => life.core(),
        }
    }

    /// What `ctl show` says of its state: `down` while its checks fail and it would serve.
    pub fn label(&self) -> &'static str {
        match (self.life, self.checked.tracker.state()) {
            (Life::Serving(AdminState::Ready | AdminState::Drain), Health::Down) => "down",
            (life, _) => life.label(),
        }
    }
}

/// A backend's active checks so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub tracker: Tracker,
    /// Checks finished.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
    /// Times it went down.
    pub downs: u64,
    /// The last check's failure, or `None` after a pass.
    pub last_failure: Option<String>,
    /// Passive checks: the workers' summed failed connects, sampled over `fail_timeout`.
    pub failed_connects: std::collections::VecDeque<(std::time::Instant, u64)>,
    /// Taken down by passive checks: until then when no active check can bring it back.
    pub passive_until: Option<std::time::Instant>,
}

/// Whether a listener takes new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepting {
    Enabled,
    Disabled,
    /// Removed by a reload: its sockets are closed; it keeps its index (never reused).
    Closed,
}

/// One listener as the control side keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    /// Index of its pool.
    pub pool: usize,
    pub accepting: Accepting,
}
