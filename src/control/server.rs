//! The admin API's HTTP server: `tiny_http` on threads of its own (never a worker), on a Unix
//! socket and optionally on TCP.
//!
//! Routes: `GET /api/show`, `POST /api/backends/{state,weight,add,remove}`,
//! `POST /api/listeners/enabled`, `POST /api/reload` (501 for now), `GET /health`,
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
//! token is configured, requests must carry `Authorization: Bearer TOKEN`.

use std::io::{self, Cursor, Read as _};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tiny_http::{Header, Method, Request, Response, Server};

use super::report::REPORT_TIMEOUT;
use super::view::Show;
use super::{AdminState, Control, ControlError, Reports, metrics};
use crate::config::{Admin, AdminSocket};
use crate::engine::signal::Shutdown;

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
        let links = self.control().links().to_vec();
        let reports = Reports::collect(&links, REPORT_TIMEOUT);
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
}

/// The running admin server. [`AdminServer::stop`] ends it and removes its socket.
#[derive(Debug)]
pub struct AdminServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    socket: Option<(PathBuf, u64)>,
}

impl AdminServer {
    /// The Unix socket it listens on, if any.
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_ref().map(|(path, _)| path.as_path())
    }

    /// Stop serving, wait for the server threads, and remove the socket file if it is still
    /// the one this server created.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        if let Some((path, inode)) = &self.socket {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == *inode) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Bind the admin sockets of `admin` and start serving `control`. `shutdown` tells whether
/// the workers accept (for `/health`).
pub fn start(
    admin: &Admin,
    control: Control,
    shutdown: Shutdown,
) -> Result<AdminServer, AdminError> {
    let unix = bind_unix(&admin.socket)?;
    let tcp = match admin.listen {
        None => None,
        Some(addr) => {
            Some(TcpListener::bind(addr).map_err(|source| AdminError::Tcp { addr, source })?)
        }
    };
    let context = Arc::new(Context {
        control: Mutex::new(control),
        shutdown,
        token: admin.token.clone(),
        in_flight: AtomicUsize::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut socket = None;
    if let Some((listener, path)) = unix {
        let inode = std::fs::symlink_metadata(&path)
            .map(|m| m.ino())
            .map_err(|source| AdminError::Socket {
                path: path.clone(),
                source,
            })?;
        let server =
            Server::from_listener(listener, None).map_err(|e| AdminError::Server(e.to_string()))?;
        tracing::info!(socket = %path.display(), "admin API listening");
        threads.push(spawn_server(
            "ringlb-admin",
            server,
            Transport::Unix,
            &context,
            &stop,
        )?);
        socket = Some((path, inode));
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
    let (housekeeping_context, housekeeping_stop) = (Arc::clone(&context), Arc::clone(&stop));
    threads.push(
        std::thread::Builder::new()
            .name("ringlb-admin-removals".into())
            .spawn(move || housekeeping(&housekeeping_context, &housekeeping_stop))
            .map_err(|e| AdminError::Server(e.to_string()))?,
    );
    Ok(AdminServer {
        stop,
        threads,
        socket,
    })
}

/// The Unix listener for `socket`, by the rules in the module documentation.
fn bind_unix(socket: &AdminSocket) -> Result<Option<(UnixListener, PathBuf)>, AdminError> {
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
    match bind_replacing_stale(path) {
        Ok(listener) => Ok(Some((listener, path.clone()))),
        Err(e) if default => {
            tracing::warn!("starting without the admin socket: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Bind `path` with mode 0600, replacing a socket file whose process has died.
fn bind_replacing_stale(path: &Path) -> Result<UnixListener, AdminError> {
    let failed = |source| AdminError::Socket {
        path: path.to_owned(),
        source,
    };
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
        .spawn(move || serve(&server, transport, &context, &stop))
        .map_err(|e| AdminError::Server(e.to_string()))
}

/// Take requests until `stop`; each is handled on a thread of its own, so that a slow client
/// (or a read waiting for the workers) holds up no other.
fn serve(server: &Server, transport: Transport, context: &Arc<Context>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
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

/// Finish removals while nobody reads: every [`HOUSEKEEPING`] while a backend drains to be
/// removed.
fn housekeeping(context: &Context, stop: &AtomicBool) {
    let mut next = Instant::now() + HOUSEKEEPING;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + HOUSEKEEPING;
        if context.control().removing() {
            drop(context.reports());
        }
    }
}

/// An answer: status, content type, body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn error_body(reason: &str) -> serde_json::Value {
    serde_json::json!({ "error": reason })
}

fn json_reply(status: u16, value: &serde_json::Value) -> Response<Cursor<Vec<u8>>> {
    into_response(Reply {
        status,
        content_type: "application/json",
        body: json_bytes(value),
    })
}

fn json_bytes(value: &impl serde::Serialize) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    body
}

fn into_response(reply: Reply) -> Response<Cursor<Vec<u8>>> {
    let mut response = Response::from_data(reply.body)
        .with_status_code(reply.status)
        // One Content-Length, never chunked: clients read exactly the body.
        .with_chunked_threshold(usize::MAX);
    if let Ok(header) = Header::from_bytes(&b"Content-Type"[..], reply.content_type.as_bytes()) {
        response.add_header(header);
    }
    response
}

fn handle(mut request: Request, transport: Transport, context: &Context) {
    let reply = if !authorized(&request, transport, context) {
        Reply {
            status: 401,
            content_type: "application/json",
            body: json_bytes(&error_body(
                "missing or wrong bearer token (Authorization: Bearer TOKEN)",
            )),
        }
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

fn fail(status: u16, reason: impl AsRef<str>) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: json_bytes(&error_body(reason.as_ref())),
    }
}

fn ok(value: serde_json::Value) -> Reply {
    Reply {
        status: 200,
        content_type: "application/json",
        body: json_bytes(&value),
    }
}

fn changed(result: Result<serde_json::Value, ControlError>) -> Reply {
    match result {
        Ok(value) => ok(value),
        Err(e) => fail(e.status(), e.to_string()),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| fail(400, format!("bad JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    pool: String,
    backend: String,
    state: AdminState,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    pool: String,
    backend: String,
    weight: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    pool: String,
    spec: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendBody {
    pool: String,
    backend: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerBody {
    listener: String,
    enabled: bool,
}

/// The route table: a short dispatch to one handler per route.
fn route(method: &Method, url: &str, body: &[u8], context: &Context) -> Reply {
    let path = url.split('?').next().unwrap_or(url);
    match (method, path) {
        (Method::Get, "/api/show") => show(context),
        (Method::Get, "/metrics") => scrape(context),
        (Method::Get, "/health") => health(context),
        (Method::Post, "/api/backends/state") => set_state(body, context),
        (Method::Post, "/api/backends/weight") => set_weight(body, context),
        (Method::Post, "/api/backends/add") => add(body, context),
        (Method::Post, "/api/backends/remove") => remove(body, context),
        (Method::Post, "/api/listeners/enabled") => set_listener(body, context),
        (Method::Post, "/api/reload") => fail(501, "reload is not implemented yet"),
        (
            _,
            "/api/show"
            | "/metrics"
            | "/health"
            | "/api/backends/state"
            | "/api/backends/weight"
            | "/api/backends/add"
            | "/api/backends/remove"
            | "/api/listeners/enabled"
            | "/api/reload",
        ) => fail(405, format!("{method} is not allowed on {path}")),
        _ => fail(404, format!("no such endpoint {path}")),
    }
}

fn show(context: &Context) -> Reply {
    let (control, reports) = context.reports();
    let view = Show::build(&control, &reports);
    Reply {
        status: 200,
        content_type: "application/json",
        body: json_bytes(&view),
    }
}

fn scrape(context: &Context) -> Reply {
    let (control, reports) = context.reports();
    let view = Show::build(&control, &reports);
    drop(control);
    Reply {
        status: 200,
        content_type: metrics::CONTENT_TYPE,
        body: metrics::render(&view).into_bytes(),
    }
}

fn health(context: &Context) -> Reply {
    let accepting = context.shutdown.is_up() && !context.shutdown.requested();
    match context.control().health(accepting) {
        Ok(()) => ok(serde_json::json!({ "status": "ok" })),
        Err(reason) => fail(503, reason),
    }
}

fn set_state(body: &[u8], context: &Context) -> Reply {
    let b: StateBody = match parse(body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    changed(
        context
            .control()
            .set_state(&b.pool, &b.backend, b.state)
            .map(|()| serde_json::json!({ "ok": true, "state": b.state })),
    )
}

fn set_weight(body: &[u8], context: &Context) -> Reply {
    let b: WeightBody = match parse(body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let Ok(weight) = u32::try_from(b.weight) else {
        return fail(
            400,
            format!("weight must be between 1 and 65535, got {}", b.weight),
        );
    };
    changed(
        context
            .control()
            .set_weight(&b.pool, &b.backend, weight)
            .map(|()| serde_json::json!({ "ok": true, "weight": weight })),
    )
}

fn add(body: &[u8], context: &Context) -> Reply {
    let b: AddBody = match parse(body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    changed(
        context
            .control()
            .add(&b.pool, &b.spec)
            .map(|name| serde_json::json!({ "ok": true, "backend": name })),
    )
}

fn remove(body: &[u8], context: &Context) -> Reply {
    let b: BackendBody = match parse(body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    changed(
        context
            .control()
            .remove(&b.pool, &b.backend)
            .map(|()| serde_json::json!({ "ok": true, "state": "removing" })),
    )
}

fn set_listener(body: &[u8], context: &Context) -> Reply {
    let b: ListenerBody = match parse(body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    changed(
        context
            .control()
            .set_listener(&b.listener, b.enabled)
            .map(|()| serde_json::json!({ "ok": true, "enabled": b.enabled })),
    )
}
