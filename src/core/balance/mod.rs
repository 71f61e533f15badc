//! Load balancing: choosing a backend, and fallbacks, for each new connection.
//!
//! Two halves, so that the hot path shares nothing between workers:
//! - [`PoolSnapshot`]: immutable, one per pool, shared by all workers through an `Arc`. Holds the
//!   backends, their states and what is precomputed from them (the Up list, the Maglev table).
//!   Rebuilt off the hot path whenever a backend is added, removed, goes down, comes back or
//!   drains; workers take the new one between batches with [`Balancer::update`].
//! - [`Balancer`]: mutable, one per worker and pool. Owns the rotation, the random generator and
//!   the active connection counts.
//!
//! A [`Pick`] names the chosen backend and up to `MAX_CANDIDATES - 1` distinct fallbacks for
//! connect retries. Only Up backends are ever picked.
//!
//! The algorithms live one per file: [`round_robin`] (smooth weighted), [`least_conn`]
//! (weighted), [`random_two`] (power of two choices) and [`maglev`] with [`hash`] (consistent
//! source-IP hashing, stable across processes, builds and CPUs).

mod balancer;
pub mod hash;
pub mod least_conn;
pub mod maglev;
mod pick;
pub mod random_two;
pub mod round_robin;
mod snapshot;

pub use balancer::Balancer;
pub use maglev::{BuildWork, MaglevTable, table_size_for};
pub use pick::{MAX_CANDIDATES, Pick};
pub use random_two::SplitMix64;
pub use snapshot::PoolSnapshot;

/// Which algorithm a pool uses to pick a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Weighted least connections (active / weight), ties broken in rotation.
    LeastConnections,
    /// Power of two random choices over least connections.
    RandomTwo,
    /// Consistent source-IP hashing through a Maglev lookup table.
    SourceHash,
}
