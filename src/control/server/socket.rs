//! The admin Unix socket, bound by the rules in the [`super`] module documentation.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::AdminError;
use crate::config::AdminSocket;

/// The Unix listener for `socket`, by the rules in the module documentation; with
/// `take_over` (a binary upgrade), a socket held by the live process being replaced is
/// replaced too.
pub(super) fn bind_unix(
    socket: &AdminSocket,
    take_over: bool,
) -> Result<Option<(UnixListener, PathBuf)>, AdminError> {
    let (path, default) = match socket {
        AdminSocket::Off => return Ok(None),
        AdminSocket::Default(path) => (path, true),
        AdminSocket::Given(path) => (path, false),
    };
    if default {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent);
            if let Err(e) = made {
                tracing::warn!(
                    "starting without the admin socket: cannot create {}: {e}",
                    parent.display()
                );
                return Ok(None);
            }
        }
    }
    match bind_replacing_stale(path, take_over) {
        Ok(listener) => Ok(Some((listener, path.clone()))),
        Err(e) if default => {
            tracing::warn!("starting without the admin socket: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Bind `path` with mode 0600, replacing a socket file whose process has died (or, with
/// `take_over`, any socket file).
///
/// The check and the replacement run under an exclusive `flock` on the socket's directory:
/// two instances starting together over one stale file would otherwise both remove it, and
/// the second would remove the socket the first had just bound.
fn bind_replacing_stale(path: &Path, take_over: bool) -> Result<UnixListener, AdminError> {
    let failed = |source| AdminError::Socket {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = std::fs::File::open(dir).map_err(failed)?;
    rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| failed(e.into()))?;
    // Released when `dir` is closed, at the end of this function.
    let listener = match UnixListener::bind(path) {
        Ok(listener) => listener,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket = std::fs::symlink_metadata(path)
                .map_err(failed)?
                .file_type()
                .is_socket();
            if !is_socket {
                return Err(AdminError::NotSocket(path.to_owned()));
            }
            match UnixStream::connect(path) {
                Ok(_) if take_over => {
                    tracing::info!(socket = %path.display(), "taking the admin socket over");
                    std::fs::remove_file(path).map_err(failed)?;
                    UnixListener::bind(path).map_err(failed)?
                }
                Ok(_) => return Err(AdminError::Held(path.to_owned())),
                Err(c) if c.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "replacing a stale admin socket");
                    std::fs::remove_file(path).map_err(failed)?;
                    UnixListener::bind(path).map_err(failed)?
                }
                Err(_) => return Err(failed(e)),
            }
        }
        Err(e) => return Err(failed(e)),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    Ok(listener)
}
