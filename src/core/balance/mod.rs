//! Load-balancing algorithms.

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
