//! The open file limit (`RLIMIT_NOFILE`): raised from its soft value to the hard one, as
//! HAProxy does, because a proxy holds two sockets per connection.

use std::io;
use std::sync::OnceLock;

use crate::config::FdLimit;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit. Returns the limit as it is afterwards
/// (`u64::MAX` stands for unlimited).
pub fn raise_nofile() -> io::Result<FdLimit> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        limit.current = Some(hard);
        setrlimit(Resource::Nofile, limit).map_err(io::Error::from)?;
    }
    Ok(FdLimit {
        soft: limit.current.unwrap_or(u64::MAX),
        hard: limit.maximum.unwrap_or(u64::MAX),
    })
}

/// The limit as it is now, without changing it.
pub fn nofile() -> FdLimit {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    FdLimit {
        soft: limit.current.unwrap_or(u64::MAX),
        hard: limit.maximum.unwrap_or(u64::MAX),
    }
}

/// The limit after raising it once for the life of the process: what configurations are
/// checked against, in `check` and in `run`. A refused raise (a sandbox that forbids
/// `setrlimit`) leaves the soft limit as it was, and that is what counts.
pub fn raised_nofile() -> FdLimit {
    static RAISED: OnceLock<FdLimit> = OnceLock::new();
    *RAISED.get_or_init(|| match raise_nofile() {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(%err, "could not raise RLIMIT_NOFILE to its hard limit");
            nofile()
        }
    })
}
