//! Backends as the core sees them: identity, address, weight and administrative state.

use std::net::SocketAddr;

/// Index of a backend inside its pool's [`PoolSnapshot`]. Stable for the snapshot's lifetime, and
/// across snapshots derived with [`PoolSnapshot::with_state`].
///
/// [`PoolSnapshot`]: crate::core::balance::PoolSnapshot
/// [`PoolSnapshot::with_state`]: crate::core::balance::PoolSnapshot::with_state
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

impl BackendId {
    /// The index into the pool's backend vector.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A backend's administrative / health state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendState {
    /// Takes new connections.
    #[default]
    Up,
    /// Takes nothing; existing connections are left to the engine (they usually fail anyway).
    Down,
    /// Takes no new connections; existing ones continue until they end.
    Draining,
}

impl BackendState {
    /// Whether a backend in this state may be picked for a new connection: only when Up.
    pub fn takes_new_connections(self) -> bool {
        self == Self::Up
    }
}

/// One backend of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// Stable identity used for hashing; defaults to the address written as text.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative weight, at least 1.
    pub weight: u32,
    /// Most connections open to it at once, across every worker (`None`: no limit). Clients
    /// beyond it wait in the pool's queue.
    pub max_connections: Option<u32>,
    /// Send it a PROXY protocol header of this version before the client's bytes
    /// (`send_proxy`).
    pub send_proxy: Option<crate::core::proxy_header::ProxyVersion>,
}
