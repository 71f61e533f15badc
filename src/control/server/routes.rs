//! The route table and one handler per route. Bodies are JSON (but for the stats page and
//! `/metrics`); every error is a 4xx/5xx with `{"error": REASON}`.

use std::io::Cursor;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tiny_http::{Header, Method, Response};

use super::Context;
use crate::control::view::{AffinityView, QueueView, Show};
use crate::control::{AdminState, ControlError, metrics};

/// An answer: status, content type, headers beyond those two, body.
pub(super) struct Reply {
    status: u16,
    content_type: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Vec<u8>,
}

/// The live stats page, `GET /`: one self-contained file that polls `GET /api/show`.
const STATS_PAGE: &str = include_str!("../stats.html");

/// The stats page's headers. The policy lets it load nothing but itself and reach nothing but
/// this origin, so the browser enforces that it stays self-contained (and works offline).
const STATS_PAGE_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-cache"),
];

/// Whether `path` answers without the bearer token: only the stats page, which holds no data
/// (a browser cannot send the token when it navigates; the page sends it on its reads).
pub(super) fn public(method: &Method, url: &str) -> bool {
    let path = url.split('?').next().unwrap_or(url);
    *method == Method::Get && matches!(path, "/" | "/index.html")
}

pub(super) fn error_body(reason: &str) -> serde_json::Value {
    serde_json::json!({ "error": reason })
}

pub(super) fn json_reply(status: u16, value: &serde_json::Value) -> Response<Cursor<Vec<u8>>> {
    into_response(Reply {
        status,
        content_type: "application/json",
        headers: &[],
        body: json_bytes(value),
    })
}

fn json_bytes(value: &impl serde::Serialize) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    body
}

pub(super) fn into_response(reply: Reply) -> Response<Cursor<Vec<u8>>> {
    let mut response = Response::from_data(reply.body)
        .with_status_code(reply.status)
        // One Content-Length, never chunked: clients read exactly the body.
        .with_chunked_threshold(usize::MAX);
    let content_type = ("Content-Type", reply.content_type);
    for (field, value) in std::iter::once(&content_type).chain(reply.headers) {
        if let Ok(header) = Header::from_bytes(field.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    response
}

pub(super) fn fail(status: u16, reason: impl AsRef<str>) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        headers: &[],
        body: json_bytes(&error_body(reason.as_ref())),
    }
}

fn ok(value: serde_json::Value) -> Reply {
    Reply {
        status: 200,
        content_type: "application/json",
        headers: &[],
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
pub(super) fn route(method: &Method, url: &str, body: &[u8], context: &Context) -> Reply {
    let path = url.split('?').next().unwrap_or(url);
    match (method, path) {
        (Method::Get, "/" | "/index.html") => stats_page(),
        (Method::Get, "/api/show") => show(context),
        (Method::Get, "/api/queue") => queue(context),
        (Method::Get, "/api/affinity") => affinity(context),
        (Method::Get, "/metrics") => scrape(context),
        (Method::Get, "/health") => health(context),
        (Method::Post, "/api/backends/state") => set_state(body, context),
        (Method::Post, "/api/backends/weight") => set_weight(body, context),
        (Method::Post, "/api/backends/add") => add(body, context),
        (Method::Post, "/api/backends/remove") => remove(body, context),
        (Method::Post, "/api/listeners/enabled") => set_listener(body, context),
        (Method::Post, "/api/reload") => reload(context),
        (
            _,
            "/"
            | "/index.html"
            | "/api/show"
            | "/api/queue"
            | "/api/affinity"
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

fn stats_page() -> Reply {
    Reply {
        status: 200,
        content_type: "text/html; charset=utf-8",
        headers: STATS_PAGE_HEADERS,
        body: STATS_PAGE.as_bytes().to_vec(),
    }
}

fn show(context: &Context) -> Reply {
    let (control, reports) = context.reports();
    let view = Show::build(&control, &reports);
    Reply {
        status: 200,
        content_type: "application/json",
        headers: &[],
        body: json_bytes(&view),
    }
}

fn queue(context: &Context) -> Reply {
    let view = QueueView::build(&context.control());
    Reply {
        status: 200,
        content_type: "application/json",
        headers: &[],
        body: json_bytes(&view),
    }
}

fn affinity(context: &Context) -> Reply {
    let view = AffinityView::build(&context.control());
    Reply {
        status: 200,
        content_type: "application/json",
        headers: &[],
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
        headers: &[],
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

/// `{"applied": [...], "restart_needed": [...]}`, or the reason nothing changed.
fn reload(context: &Context) -> Reply {
    changed(
        context
            .reload()
            .map(|outcome| serde_json::to_value(outcome).unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::config::{Config, Overrides};
    use crate::control::Control;
    use crate::engine::inbox;
    use crate::engine::signal::Shutdown;

    fn context() -> (Context, Vec<inbox::Inbox>) {
        let backend = "127.0.0.1:9001,name=a".parse().expect("spec");
        let config =
            Config::from_quick_with("127.0.0.1:8080", &[backend], &Overrides::default(), &[0])
                .expect("valid");
        let (links, inboxes) = inbox::pairs(1).expect("inboxes");
        let context = Context {
            control: Mutex::new(Control::new(&config, links)),
            shutdown: Shutdown::default(),
            token: None,
            in_flight: AtomicUsize::new(0),
            handed_over: std::sync::atomic::AtomicBool::new(false),
        };
        (context, inboxes)
    }

    fn call(context: &Context, method: Method, url: &str, body: &str) -> (u16, serde_json::Value) {
        let reply = route(&method, url, body.as_bytes(), context);
        let value = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
        (reply.status, value)
    }

    #[test]
    fn changes_answer_ok_and_reach_the_truth() {
        let (context, _inboxes) = context();
        let body = r#"{"pool": "backends", "backend": "a", "state": "maint"}"#;
        let (status, value) = call(&context, Method::Post, "/api/backends/state", body);
        assert_eq!((status, &value["ok"]), (200, &serde_json::json!(true)));
        let control = context.control();
        assert_eq!(
            control.pools()[0].backends[0].life,
            crate::control::Life::Serving(AdminState::Maint)
        );
    }

    #[test]
    fn bad_requests_get_a_status_and_a_reason() {
        let (context, _inboxes) = context();
        for (method, url, body, status, words) in [
            (Method::Get, "/nope", "", 404, "no such endpoint"),
            (Method::Get, "/api/backends/state", "", 405, "not allowed"),
            (
                Method::Post,
                "/api/backends/state",
                "{",
                400,
                "bad JSON body",
            ),
            (
                Method::Post,
                "/api/backends/state",
                r#"{"pool": "backends", "backend": "a", "state": "up"}"#,
                400,
                "unknown variant",
            ),
            (
                Method::Post,
                "/api/backends/remove",
                r#"{"pool": "backends", "backend": "a", "extra": 1}"#,
                400,
                "unknown field",
            ),
            (
                Method::Post,
                "/api/backends/weight",
                r#"{"pool": "backends", "backend": "a", "weight": -1}"#,
                400,
                "between 1 and 65535",
            ),
            (
                Method::Post,
                "/api/backends/state",
                r#"{"pool": "backends", "backend": "b", "state": "ready"}"#,
                404,
                "no backend \"b\"",
            ),
            (
                Method::Post,
                "/api/backends/add",
                r#"{"pool": "backends", "spec": "127.0.0.1:9002,name=a"}"#,
                409,
                "already exists",
            ),
            (
                Method::Post,
                "/api/reload",
                "{}",
                409,
                "started without --config",
            ),
        ] {
            let (got, value) = call(&context, method, url, body);
            assert_eq!(got, status, "{url} {body}: {value}");
            let reason = value["error"].as_str().unwrap_or_default();
            assert!(reason.contains(words), "{url} {body}: {reason:?}");
        }
    }

    #[test]
    fn the_stats_page_is_html_open_and_get_only() {
        let (context, _inboxes) = context();
        for path in ["/", "/index.html", "/?refresh=1"] {
            let reply = route(&Method::Get, path, b"", &context);
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(reply.content_type, "text/html; charset=utf-8");
            let page = String::from_utf8_lossy(&reply.body);
            assert!(page.starts_with("<!DOCTYPE html>"), "{path}");
            assert!(page.contains("fetch(\"/api/show\""), "it polls the view");
            assert!(public(&Method::Get, path), "{path} needs no token");
        }
        let (status, value) = call(&context, Method::Post, "/", "");
        assert_eq!(status, 405, "{value}");
        assert!(!public(&Method::Post, "/"));
        assert!(
            !public(&Method::Get, "/api/show"),
            "data stays behind the token"
        );
    }

    #[test]
    fn health_follows_the_workers_and_the_backends() {
        let (context, _inboxes) = context();
        let (status, value) = call(&context, Method::Get, "/health", "");
        assert_eq!(status, 503, "workers not up yet");
        assert!(
            value["error"]
                .as_str()
                .unwrap_or_default()
                .contains("not accepting")
        );
        context.shutdown.mark_up();
        assert_eq!(call(&context, Method::Get, "/health", "").0, 200);
        let body = r#"{"pool": "backends", "backend": "a", "state": "drain"}"#;
        assert_eq!(
            call(&context, Method::Post, "/api/backends/state", body).0,
            200
        );
        assert_eq!(call(&context, Method::Get, "/health", "").0, 503);
        context.shutdown.request();
        let body = r#"{"pool": "backends", "backend": "a", "state": "ready"}"#;
        assert_eq!(
            call(&context, Method::Post, "/api/backends/state", body).0,
            200
        );
        assert_eq!(
            call(&context, Method::Get, "/health", "").0,
            503,
            "stopping"
        );
    }
}
