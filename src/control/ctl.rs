//! `ringlb ctl`: each command as one admin API request, and the tables it prints.
//!
//! The exit status is the contract: [`run`] returns the text for stdout on success, and the
//! reason for stderr on any failure (the API unreachable, an HTTP error status, bad input).

use std::fmt::Write as _;

use serde_json::json;

use super::client::{Endpoint, request};
use super::view::{AffinityView, QueueView, Show};
use super::{AdminState, ReloadOutcome};

/// What `ringlb ctl` can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtlCommand {
    /// Listeners, pools, backends and workers; raw JSON with `json`.
    Show {
        json: bool,
    },
    /// Every client waiting in a queue; raw JSON with `json`.
    ShowQueue {
        json: bool,
    },
    /// The sticky-session tables; raw JSON with `json`.
    ShowAffinity {
        json: bool,
    },
    SetState {
        target: String,
        state: AdminState,
    },
    SetWeight {
        target: String,
        weight: u32,
    },
    Add {
        pool: String,
        spec: String,
    },
    Remove {
        target: String,
    },
    Listener {
        listener: String,
        enabled: bool,
    },
    Reload,
    Health,
}

/// `POOL/BACKEND`, split at the first `/` (a backend name may hold more).
pub fn split_target(target: &str) -> Result<(&str, &str), String> {
    match target.split_once('/') {
        Some((pool, backend)) if !pool.is_empty() && !backend.is_empty() => Ok((pool, backend)),
        _ => Err(format!(
            "bad backend {target:?}: expected POOL/BACKEND, such as backends/127.0.0.1:9001"
        )),
    }
}

/// Run `command` against the API at `endpoint`: stdout text, or the reason it failed.
pub fn run(
    endpoint: &Endpoint,
    token: Option<&str>,
    command: &CtlCommand,
) -> Result<String, String> {
    let (method, path, body) = match command {
        CtlCommand::Show { .. } => ("GET", "/api/show", None),
        CtlCommand::ShowQueue { .. } => ("GET", "/api/queue", None),
        CtlCommand::ShowAffinity { .. } => ("GET", "/api/affinity", None),
        CtlCommand::Health => ("GET", "/health", None),
        CtlCommand::Reload => ("POST", "/api/reload", Some(json!({}))),
        CtlCommand::SetState { target, state } => {
            let (pool, backend) = split_target(target)?;
            let body = json!({ "pool": pool, "backend": backend, "state": state });
            ("POST", "/api/backends/state", Some(body))
        }
        CtlCommand::SetWeight { target, weight } => {
            let (pool, backend) = split_target(target)?;
            let body = json!({ "pool": pool, "backend": backend, "weight": weight });
            ("POST", "/api/backends/weight", Some(body))
        }
        CtlCommand::Add { pool, spec } => (
            "POST",
            "/api/backends/add",
            Some(json!({ "pool": pool, "spec": spec })),
        ),
        CtlCommand::Remove { target } => {
            let (pool, backend) = split_target(target)?;
            let body = json!({ "pool": pool, "backend": backend });
            ("POST", "/api/backends/remove", Some(body))
        }
        CtlCommand::Listener { listener, enabled } => (
            "POST",
            "/api/listeners/enabled",
            Some(json!({ "listener": listener, "enabled": enabled })),
        ),
    };
    let answer = request(endpoint, token, method, path, body.as_ref())?;
    if !(200..300).contains(&answer.status) {
        return Err(format!("{} ({})", answer.reason(), answer.status));
    }
    Ok(match command {
        CtlCommand::Show { json: true }
        | CtlCommand::ShowQueue { json: true }
        | CtlCommand::ShowAffinity { json: true } => answer.text(),
        CtlCommand::ShowAffinity { json: false } => {
            let view: AffinityView = serde_json::from_slice(&answer.body)
                .map_err(|e| format!("bad answer to show affinity: {e}"))?;
            affinity_table(&view)
        }
        CtlCommand::ShowQueue { json: false } => {
            let queue: QueueView = serde_json::from_slice(&answer.body)
                .map_err(|e| format!("bad answer to show queue: {e}"))?;
            queue_table(&queue)
        }
        CtlCommand::Show { json: false } => {
            let show: Show = serde_json::from_slice(&answer.body)
                .map_err(|e| format!("bad answer to show: {e}"))?;
            tables(&show)
        }
        CtlCommand::Health => "ok\n".to_owned(),
        CtlCommand::SetState { target, state } => {
            format!("{target}: state {}\n", state.as_str())
        }
        CtlCommand::SetWeight { target, weight } => format!("{target}: weight {weight}\n"),
        CtlCommand::Add { pool, .. } => {
            let name = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v.get("backend").and_then(|b| b.as_str()).map(str::to_owned))
                .unwrap_or_default();
            format!("{pool}/{name}: added, ready\n")
        }
        CtlCommand::Remove { target } => {
            format!("{target}: removing (drains, then is forgotten)\n")
        }
        CtlCommand::Listener { listener, enabled } => {
            let state = if *enabled { "enabled" } else { "disabled" };
            format!("listener {listener}: {state}\n")
        }
        CtlCommand::Reload => reloaded(&answer.body),
    })
}

/// What `ctl reload` prints: each change applied, then each setting that waits for a restart.
fn reloaded(body: &[u8]) -> String {
    let outcome: ReloadOutcome = serde_json::from_slice(body).unwrap_or_default();
    let mut out = String::from("reloaded\n");
    if outcome.applied.is_empty() {
        out.push_str("  nothing changed\n");
    }
    for line in &outcome.applied {
        out.push_str(&format!("  applied: {line}\n"));
    }
    for line in &outcome.restart_needed {
        out.push_str(&format!("  needs a restart: {line}\n"));
    }
    out
}

/// Left-aligned columns, two spaces apart.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn cells<const N: usize>(items: [&dyn std::fmt::Display; N]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

/// `show queue` as a table: one line per waiting client, by pool, in line order.
pub fn queue_table(queue: &QueueView) -> String {
    let mut out = String::new();
    if queue.waiting.is_empty() {
        out.push_str("nobody is waiting\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:<40} {:<24} {:>6} {:>10}",
        "POOL", "POSITION", "CLIENT", "LISTENER", "WORKER", "WAITED"
    );
    for w in &queue.waiting {
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:<40} {:<24} {:>6} {:>8}ms",
            w.pool, w.position, w.client, w.listener, w.worker, w.waited_ms
        );
    }
    out
}

/// `show affinity` as tables: per pool, its counters, then one line per remembered client.
pub fn affinity_table(view: &AffinityView) -> String {
    let mut out = String::new();
    if view.pools.is_empty() {
        out.push_str("no pool has affinity\n");
        return out;
    }
    for pool in &view.pools {
        let _ = writeln!(
            out,
            "pool {}: {} entries, ttl {} ms, {} hits, {} misses, {} evictions",
            pool.pool, pool.entries, pool.ttl_ms, pool.hits, pool.misses, pool.evictions
        );
        let mut rows = vec![cells([&"CLIENT", &"BACKEND", &"IDLE_MS"])];
        for c in &pool.clients {
            rows.push(cells([&c.client, &c.backend, &c.idle_ms]));
        }
        table(&mut out, &rows);
        out.push('\n');
    }
    out
}

/// `show` as tables: listeners, backends by pool, workers.
pub fn tables(show: &Show) -> String {
    let mut out = String::new();
    if !show.workers_missing.is_empty() {
        let _ = writeln!(
            out,
            "warning: workers {:?} of {} did not answer; their counters are missing\n",
            show.workers_missing, show.workers_asked
        );
    }
    let mut rows = vec![cells([
        &"LISTENER",
        &"BIND",
        &"POOL",
        &"ENABLED",
        &"ACTIVE",
        &"ACCEPTED",
        &"REFUSED",
        &"WAITING",
        &"QUEUED",
        &"QUEUE_FULL",
        &"QUEUE_TIMEOUT",
    ])];
    for l in &show.listeners {
        let enabled = if l.enabled { "yes" } else { "no" };
        rows.push(cells([
            &l.name,
            &l.bind,
            &l.pool,
            &enabled,
            &l.active,
            &l.accepted,
            &l.refused,
            &l.queue.waiting,
            &l.queue.queued,
            &l.queue.full,
            &l.queue.timeout,
        ]));
    }
    table(&mut out, &rows);
    out.push('\n');
    let mut rows = vec![cells([
        &"BACKEND",
        &"ADDRESS",
        &"STATE",
        &"WEIGHT",
        &"EFFECTIVE",
        &"ACTIVE",
        &"MAX",
        &"TOTAL",
        &"BYTES_IN",
        &"BYTES_OUT",
        &"FAILED",
        &"CHECK",
        &"CHANGED",
        &"REASON",
    ])];
    for pool in &show.pools {
        for b in &pool.backends {
            let name = format!("{}/{}", pool.name, b.name);
            let ago = format!("{}s ago", b.last_change.seconds_ago);
            let check = b.check.as_ref().map_or_else(
                || "-".to_owned(),
                |c| match &c.last_failure {
                    None => format!("{} ({} ok)", c.status, c.checks - c.failures),
                    Some(why) => format!("{}: {why}", c.status),
                },
            );
            let max = b
                .max_connections
                .map_or_else(|| "-".to_owned(), |n| n.to_string());
            rows.push(cells([
                &name,
                &b.address,
                &b.state,
                &b.weight,
                &b.effective_weight,
                &b.active,
                &max,
                &b.connections,
                &b.bytes_in,
                &b.bytes_out,
                &b.connect_failures,
                &check,
                &ago,
                &b.last_change.reason,
            ]));
        }
    }
    table(&mut out, &rows);
    out.push('\n');
    let mut rows = vec![cells([
        &"WORKER",
        &"CONNECTIONS",
        &"LOOP_TURNS",
        &"BUFFERS",
        &"PIPES",
    ])];
    for w in &show.workers {
        rows.push(cells([
            &w.worker,
            &w.connections,
            &w.loop_turns,
            &w.buffers_in_use,
            &w.pipes_in_use,
        ]));
    }
    table(&mut out, &rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_first_slash() {
        assert_eq!(split_target("web/a"), Ok(("web", "a")));
        assert_eq!(split_target("web/a/b"), Ok(("web", "a/b")));
        assert!(split_target("web").is_err());
        assert!(split_target("/a").is_err());
        assert!(split_target("web/").is_err());
    }

    #[test]
    fn tables_align_columns() {
        let mut out = String::new();
        table(&mut out, &[cells([&"A", &"BB"]), cells([&"longer", &"x"])]);
        assert_eq!(out, "A       BB\nlonger  x\n");
    }
}
