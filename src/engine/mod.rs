//! Engines: thin shells that turn core actions into system calls.

pub mod op;

use crate::config::Config;

/// Why an engine could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the {0} engine is not built yet")]
    NotBuilt(&'static str),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Run the data plane described by `config` until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), EngineError> {
    let _ = config;
    Err(EngineError::NotBuilt("uring"))
}

/// A human-readable report of the kernel features ringlb probes and what it will use.
pub fn doctor() -> Result<String, EngineError> {
    Err(EngineError::NotBuilt("uring"))
}
