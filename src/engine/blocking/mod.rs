//! The blocking engine (placeholder while it is being written).

use super::EngineError;
use crate::config::Config;

/// Run the blocking data plane.
pub fn run(config: Config) -> Result<(), EngineError> {
    let _ = config;
    Err(EngineError::NotBuilt("blocking"))
}
