//! The admin API's HTTP server: `tiny_http` on threads of its own (never a worker), on a Unix
//! socket and optionally on TCP.
//!
//! Routes: `GET /` (also `/index.html`: the live stats page, HTML that polls `/api/show`),
//! `GET /api/show`, `POST /api/backends/{state,weight,add,remove}`,
//! `POST /api/listeners/enabled`, `POST /api/reload`, `GET /health`,
//! `GET /metrics`. Bodies are JSON; every error is a 4xx/5xx with `{"error": REASON}`.
//!
//! # Socket rules at start
//! - A socket file left by a process that died (connecting is refused) is replaced.
//! - The default path held by a live process (connecting succeeds), or not usable at all (no
//!   permission for `/run/ringlb`): ringlb starts without the admin socket and warns, so that
//!   several instances can run on one host.
//! - A path given in the file or with `--admin-socket` that cannot be bound: startup error.
//!
//! The socket is created with mode 0600 and removed when the server stops. On TCP, when a
//! token is configured, requests must carry `Authorization: Bearer TOKEN`, all but the stats
//! page itself: it holds no data, and a browser cannot send the token when it opens a page
//! (the page reads it from `#token=TOKEN` in its URL and sends it on its reads).

mod routes;
mod socket;

use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Request, Server};

use super::handover::{self, Handing};
use super::health;
use super::report::REPORT_TIMEOUT;
use super::{Control, ControlError, ReloadOutcome, Reports};
use crate::config::Admin;
use crate::engine::notify;
use crate::engine::signal::Shutdown;
use routes::{error_body, fail, into_response, json_reply, public, route};
use socket::{SocketFile, bind_tcp, bind_unix, staged};

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("admin socket {0}: another running process holds it")]
    Held(PathBuf),
    #[error("admin socket {0}: the file exists and is not a socket")]
    NotSocket(PathBuf),
    #[error("admin listen {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("admin server: {0}")]
    Server(String),
}

/// Largest request body read.
const MAX_BODY: u64 = 64 * 1024;
/// Requests handled at once; beyond it, 503.
const MAX_IN_FLIGHT: usize = 32;
/// How often the server threads look at the stop flag, and how often removals are checked.
const POLL: Duration = Duration::from_millis(200);
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Which socket a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Unix,
    Tcp,
}

/// What every handler shares.
#[derive(Debug)]
struct Context {
    control: Mutex<Control>,
    shutdown: Shutdown,
    token: Option<String>,
    in_flight: AtomicUsize,
    /// Set once a binary upgrade took over: the socket paths are the new process's now.
    handed_over: AtomicBool,
}

impl Context {
    fn control(&self) -> MutexGuard<'_, Control> {
        // Every operation leaves the truth consistent before it can panic (it publishes
        // last), so a poisoned lock still guards a usable value.
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ask the workers for their counters (without holding the lock while waiting), finish
    /// any removal they show to be drained, and return them with the lock held again.
    fn reports(&self) -> (MutexGuard<'_, Control>, Reports) {
        let (links, changes) = {
            let control = self.control();
            (control.links().to_vec(), control.changes())
        };
        let reports = Reports::collect(&links, changes, REPORT_TIMEOUT);
        let mut control = self.control();
        for (pool, backend) in control.forget_drained(&reports) {
            tracing::info!(
                pool,
                backend,
                "removed backend forgotten: no connections left"
            );
        }
        (control, reports)
    }

    /// Reload the configuration (SIGHUP, `POST /api/reload`), telling systemd, and log what
    /// came of it.
    fn reload(&self) -> Result<ReloadOutcome, ControlError> {
        // systemd hears of reloads between READY and STOPPING only.
        let tell = self.shutdown.is_up() && !self.shutdown.requested();
        if tell {
            notify::reloading();
        }
        let result = self.control().reload();
        if tell {
            notify::ready();
        }
        match &result {
            Ok(outcome) => {
                tracing::info!(
                    applied = ?outcome.applied,
                    restart_needed = ?outcome.restart_needed,
                    "configuration reloaded"
                );
                for setting in &outcome.restart_needed {
                    tracing::warn!("reload: not applied, {setting}");
                }
            }
            Err(e) => tracing::error!("reload refused; the running configuration stays: {e}"),
        }
        result
    }
}

/// The running admin server. [`AdminServer::stop`] ends it and removes its socket.
#[derive(Debug)]
pub struct AdminServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Socket files made (the admin socket, the handover socket): one replaced by a newer
    /// process is left alone at exit.
    files: Vec<SocketFile>,
    context: Arc<Context>,
}

impl AdminServer {
    /// Socket files bound at a staged path (a binary upgrade), with the path each belongs at:
    /// moved there once this process runs.
    pub fn staged(&self) -> Vec<(PathBuf, PathBuf)> {
        self.files
            .iter()
            .filter_map(|f| f.staged.clone().map(|s| (s, f.path.clone())))
            .collect()
    }

    /// The Unix socket it listens on, if any.
    pub fn socket(&self) -> Option<&Path> {
        // The admin socket comes first.
        self.files.first().map(SocketFile::bound)
    }

    /// Stop serving, wait for the server threads, and remove the socket file if it is still
    /// the one this server created.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        // After a handover the paths are the new process's, even when the files it made
        // there got the inode numbers ours had.
        if self.context.handed_over.load(Ordering::Relaxed) {
            return;
        }
        for file in &self.files {
            file.remove();
        }
    }
}

/// Bind the admin sockets of `admin` and start serving `control`. `shutdown` tells whether
/// the workers accept (for `/health`). With `take_over` (a binary upgrade), the admin socket
/// of the process being replaced is taken over. Beside the admin socket, the handover socket
/// serves the next upgrade (see [`crate::control::handover`]).
pub fn start(
    admin: &Admin,
    control: Control,
    shutdown: Shutdown,
    take_over: bool,
) -> Result<AdminServer, AdminError> {
    let unix = bind_unix(&admin.socket, take_over)?;
    let tcp = match admin.listen {
        None => None,
        Some(addr) => Some(bind_tcp(addr).map_err(|source| AdminError::Tcp { addr, source })?),
    };
    let context = Arc::new(Context {
        control: Mutex::new(control),
        shutdown,
        token: admin.token.clone(),
        in_flight: AtomicUsize::new(0),
        handed_over: AtomicBool::new(false),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut files = Vec::new();
    if let Some((listener, file)) = unix {
        let server =
            Server::from_listener(listener, None).map_err(|e| AdminError::Server(e.to_string()))?;
        tracing::info!(socket = %file.bound().display(), "admin API listening");
        threads.push(spawn_server(
            "ringlb-admin",
            server,
            Transport::Unix,
            &context,
            &stop,
        )?);
        let path = handover::path_for(&file.path);
        let staged_at = file.staged.as_ref().map(|_| staged(&path));
        files.push(file);
        handover::serve(
            staged_at.as_ref().unwrap_or(&path),
            Arc::clone(&context) as Arc<dyn Handing>,
        )
        .map_err(|e| AdminError::Server(e.to_string()))?;
        files.push(
            SocketFile::new(path.clone(), staged_at)
                .map_err(|source| AdminError::Socket { path, source })?,
        );
    }
    if let Some(listener) = tcp {
        let addr = listener.local_addr().ok();
        let server =
            Server::from_listener(listener, None).map_err(|e| AdminError::Server(e.to_string()))?;
        tracing::info!(listen = ?addr, token = context.token.is_some(), "admin API listening");
        threads.push(spawn_server(
            "ringlb-admin-tcp",
            server,
            Transport::Tcp,
            &context,
            &stop,
        )?);
    }
    threads.push(
        health::spawn(
            Arc::clone(&context) as Arc<dyn health::Sink>,
            Arc::clone(&stop),
        )
        .map_err(|e| AdminError::Server(e.to_string()))?,
    );
    let (housekeeping_context, housekeeping_stop) = (Arc::clone(&context), Arc::clone(&stop));
    threads.push(
        std::thread::Builder::new()
            .name("ringlb-control".into())
            .spawn(move || housekeeping(&housekeeping_context, &housekeeping_stop))
            .map_err(|e| AdminError::Server(e.to_string()))?,
    );
    Ok(AdminServer {
        stop,
        threads,
        files,
        context,
    })
}

/// Where the health checker gets its backends and leaves its results.
impl health::Sink for Context {
    fn targets(&self) -> Vec<health::Target> {
        self.control().check_targets()
    }

    fn record(&self, target: &health::Target, result: Result<(), String>) {
        self.control().record_check(target, result);
    }
}

/// What a binary upgrade takes from this process, and what it does once taken.
impl Handing for Context {
    fn sockets(&self) -> Vec<(SocketAddr, Vec<socket2::Socket>)> {
        let links = self.control().links().to_vec();
        let mut by_listener = super::report::listening_sockets(&links, REPORT_TIMEOUT);
        let control = self.control();
        control
            .listeners()
            .iter()
            .enumerate()
            .filter_map(|(i, l)| by_listener.remove(&i).map(|sockets| (l.bind, sockets)))
            .collect()
    }

    fn handed_over(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
        self.shutdown.request();
    }
}

fn spawn_server(
    name: &str,
    server: Server,
    transport: Transport,
    context: &Arc<Context>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>, AdminError> {
    let (context, stop) = (Arc::clone(context), Arc::clone(stop));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            serve(&server, transport, &context, &stop);
            if transport == Transport::Unix {
                // tiny_http's drop connects to the socket's path and removes it, whoever's it
                // is by then (after a handover, the new process's): `AdminServer::stop`
                // removes it only while it is ours. This process is about to exit.
                let _kept = std::mem::ManuallyDrop::new(server);
            }
        })
        .map_err(|e| AdminError::Server(e.to_string()))
}

/// Take requests until `stop`; each is handled on a thread of its own, so that a slow client
/// (or a read waiting for the workers) holds up no other.
fn serve(server: &Server, transport: Transport, context: &Arc<Context>, stop: &AtomicBool) {
    // After a handover the new process answers on the same paths and port.
    while !stop.load(Ordering::Relaxed) && !context.handed_over.load(Ordering::Relaxed) {
        let request = match server.recv_timeout(POLL) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("admin API: {e}");
                continue;
            }
        };
        if context.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            context.in_flight.fetch_sub(1, Ordering::AcqRel);
            let _ = request.respond(json_reply(503, &error_body("too many admin requests")));
            continue;
        }
        let context = Arc::clone(context);
        let spawned = std::thread::Builder::new()
            .name("ringlb-admin-req".into())
            .spawn(move || {
                handle(request, transport, &context);
                context.in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            tracing::warn!("admin API: cannot start a request thread: {e}");
        }
    }
}

/// Reload when SIGHUP asked (within [`POLL`]), move slow starts on (every [`POLL`]), and
/// every [`HOUSEKEEPING`] while a backend drains to be removed or a pool counts failed
/// connects, read the workers' reports: to finish removals, and for passive checks.
fn housekeeping(context: &Context, stop: &AtomicBool) {
    let mut next = Instant::now() + HOUSEKEEPING;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        if context.shutdown.take_reload() {
            // Logged either way; nobody else waits for the answer.
            let _ = context.reload();
        }
        context.control().step_ramps(Instant::now());
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + HOUSEKEEPING;
        let wanted = {
            let control = context.control();
            control.removing() || control.passive()
        };
        if wanted {
            let (mut control, reports) = context.reports();
            control.observe_failures(&reports, Instant::now());
        }
    }
}

fn handle(mut request: Request, transport: Transport, context: &Context) {
    let open = public(request.method(), request.url());
    let reply = if !open && !authorized(&request, transport, context) {
        fail(
            401,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)",
        )
    } else {
        let mut body = Vec::new();
        let read = request
            .as_reader()
            .take(MAX_BODY + 1)
            .read_to_end(&mut body);
        match read {
            Err(e) => fail(400, format!("reading the request body: {e}")),
            Ok(_) if body.len() as u64 > MAX_BODY => {
                fail(413, format!("request body over {MAX_BODY} bytes"))
            }
            Ok(_) => route(request.method(), request.url(), &body, context),
        }
    };
    let _ = request.respond(into_response(reply));
}

/// Unix socket: its file mode is the guard. TCP: the token, when one is configured.
fn authorized(request: &Request, transport: Transport, context: &Context) -> bool {
    let Some(token) = &context.token else {
        return true;
    };
    if transport == Transport::Unix {
        return true;
    }
    let expected = format!("Bearer {token}");
    request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Authorization"))
        .any(|h| constant_time_eq(h.value.as_str().as_bytes(), expected.as_bytes()))
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
