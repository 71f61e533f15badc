//! The self-contained demo (`ringlb demo`): local backends, ringlb in front, a short bounded load.

use std::time::Duration;

use crate::config::{EngineKind, Mode};

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub engine: EngineKind,
    pub mode: Mode,
    /// How long the load runs.
    pub duration: Duration,
    /// Concurrent client connections.
    pub clients: u32,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo needs the data plane, which is not built yet")]
    NotBuilt,
}

/// Run the demo and print what it saw.
pub fn run(options: DemoOptions) -> Result<(), DemoError> {
    let _ = options;
    Err(DemoError::NotBuilt)
}
