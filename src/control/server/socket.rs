//! The admin Unix socket, bound by the rules in the [`super`] module documentation.

use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::AdminError;
use crate::config::AdminSocket;

/// A socket file this process made, and its inode: removed at exit only while it is still
/// ours. A binary upgrade binds its files at a staged path first and moves them to their own
/// once it runs, so that a new process that fails to start leaves the old one its files.
#[derive(Debug)]
pub(super) struct SocketFile {
    pub path: PathBuf,
    /// Where it is bound until [`SocketFile::publish`] (a binary upgrade).
    pub staged: Option<PathBuf>,
    pub inode: u64,
}

impl SocketFile {
    /// The file `bound` (at `path`, or staged), with its inode.
    pub fn new(path: PathBuf, staged: Option<PathBuf>) -> io::Result<SocketFile> {
        let at = staged.as_ref().unwrap_or(&path);
        let inode = std::fs::symlink_metadata(at)?.ino();
        Ok(SocketFile {
            path,
            staged,
            inode,
        })
    }

    /// Where it is bound now.
    pub fn bound(&self) -> &Path {
        self.staged.as_ref().unwrap_or(&self.path)
    }

    /// Remove it, from wherever it is, if it is still ours.
    pub fn remove(&self) {
        for path in std::iter::once(&self.path).chain(self.staged.as_ref()) {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == self.inode) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Where a binary upgrade binds `path` until it runs.
pub(super) fn staged(path: &Path) -> PathBuf {
    let mut staged = path.as_os_str().to_owned();
    staged.push(".next");
    PathBuf::from(staged)
}

/// The admin API's TCP listener, with `SO_REUSEPORT` so that a binary upgrade can listen on it
/// too while the old process still does (the old one stops once the new one runs).
pub(super) fn bind_tcp(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// The Unix listener for `socket`, by the rules in the module documentation, and where it is
/// bound: with `take_over` (a binary upgrade), at its staged path (see [`SocketFile`]).
pub(super) fn bind_unix(
    socket: &AdminSocket,
    take_over: bool,
) -> Result<Option<(UnixListener, SocketFile)>, AdminError> {
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
    let staged_at = take_over.then(|| staged(path));
    let bound = bind_replacing_stale(staged_at.as_deref().unwrap_or(path));
    let with_file = |listener| {
        SocketFile::new(path.clone(), staged_at.clone())
            .map(|file| Some((listener, file)))
            .map_err(|source| AdminError::Socket {
                path: path.clone(),
                source,
            })
    };
    match bound {
        Ok(listener) => with_file(listener),
        Err(e) if default => {
            tracing::warn!("starting without the admin socket: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Bind `path` with mode 0600, replacing a socket file whose process has died.
///
/// The check and the replacement run under an exclusive `flock` on the socket's directory:
/// two instances starting together over one stale file would otherwise both remove it, and
/// the second would remove the socket the first had just bound.
fn bind_replacing_stale(path: &Path) -> Result<UnixListener, AdminError> {
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
