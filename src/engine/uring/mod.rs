//! The io_uring engine.

pub mod probe;

use crate::config::Config;

use super::EngineError;

/// Run the io_uring data plane.
pub fn run(config: Config) -> Result<(), EngineError> {
    let _ = config;
    Err(EngineError::NotBuilt("uring"))
}
