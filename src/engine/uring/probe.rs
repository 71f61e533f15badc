//! What the running kernel's io_uring offers.

use crate::engine::EngineError;

/// A readable report for `ringlb doctor`.
pub fn report() -> Result<String, EngineError> {
    Err(EngineError::NotBuilt("uring"))
}
