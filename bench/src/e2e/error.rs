//! The harness's error type.

use std::io;

/// Why the harness (or one step of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An operating-system call failed; `what` says which step.
    #[error("{what}: {source}")]
    Io {
        /// The step that failed.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A setup step failed (explained in the message).
    #[error("{0}")]
    Setup(String),
    /// SIGINT or SIGTERM arrived; the harness stops and kills its children.
    #[error("interrupted by a signal")]
    Interrupted,
}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, BenchError>;

/// A closure turning an [`io::Error`] into [`BenchError::Io`] labelled with `what`.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}
