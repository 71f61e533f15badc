//! The access log: one line per finished connection, written off the workers.
//!
//! Each worker formats its lines into a buffer of its own ([`WorkerLog`]) and, once per loop turn,
//! hands the buffer to the writer thread over a bounded channel; the writer writes each batch with
//! one `write` to the log file or to stderr. A worker never blocks on the log: when the writer
//! falls behind (a slow disk, a full pipe on stderr) and the channel is full, the batch is dropped
//! and its lines counted ([`WorkerLog::dropped`]), never queued without bound.
//!
//! The writer reopens the file when asked ([`Reopen::request`], on SIGUSR1), so that logrotate
//! can move it away (`postrotate kill -USR1`), as with nginx.
//!
//! Lines follow HAProxy's tcplog in spirit: the time the connection ended, the client, the
//! listener, `pool/backend`, the times waited / to connect / in total (ms), bytes from the client
//! and to it, and a two-letter termination state (see [`Termination`]).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::core::conn::{CloseReason, Refusal, Side};

/// Batches that may wait for the writer, per process, before workers drop lines.
pub const QUEUED_BATCHES: usize = 256;
/// A worker hands its buffer over once it holds this much, even within a loop turn.
const BATCH_BYTES: usize = 64 * 1024;

/// Where the log goes, and how a line is written: the configuration's own types.
pub use crate::config::{LogFormat as Format, LogTarget as Target};

/// Who or what ended a connection, and how far it had got: HAProxy's two termination letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Termination {
    /// `-` normal end; `C` the client aborted or failed; `S` the backend did (or none could be
    /// connected); `c` / `s` a timeout on the client / backend side; `K` killed by a stop;
    /// `R` a resource of ringlb's ran out.
    pub by: char,
    /// `R` while its first bytes were inspected (a PROXY header, a ClientHello: HAProxy's
    /// "waiting for the request"); `Q` while waiting in the queue; `C` while connecting to a backend; `D` once data could
    /// flow; `-` after a normal end.
    pub at: char,
}

impl Termination {
    /// The letters for a connection closed for `reason`, connected to a backend or not.
    pub fn of(reason: CloseReason, connected: bool) -> Termination {
        let stage = if connected { 'D' } else { 'C' };
        let (by, at) = match reason {
            CloseReason::Done => ('-', '-'),
            CloseReason::NoBackend => ('S', 'C'),
            CloseReason::ClientFailed(_) => ('C', stage),
            CloseReason::BackendFailed(_) => ('S', stage),
            CloseReason::IdleTimeout | CloseReason::FinTimeout(Side::Client) => ('c', stage),
            CloseReason::FinTimeout(Side::Backend) => ('s', stage),
            CloseReason::Aborted => ('K', stage),
            CloseReason::Local => ('R', stage),
            CloseReason::QueueTimeout => ('s', 'Q'),
            CloseReason::QueueFull => ('R', 'Q'),
            CloseReason::Inspect(Refusal::Timeout) => ('c', 'R'),
            CloseReason::Inspect(_) => ('C', 'R'),
        };
        Termination { by, at }
    }
}

/// One finished connection.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// When it ended.
    pub end: SystemTime,
    pub client: SocketAddr,
    pub listener: &'a str,
    pub pool: &'a str,
    /// The backend it was connected (or last tried to connect) to, if any was picked.
    pub backend: Option<&'a str>,
    /// Time waiting for a backend slot (`None`: it did not wait; there is no queue yet).
    pub wait: Option<Duration>,
    /// From accept to the backend connection established (`None`: never established).
    pub connect: Option<Duration>,
    /// From accept to close.
    pub total: Duration,
    /// Bytes from the client (sent on to the backend).
    pub bytes_in: u64,
    /// Bytes to the client (received from the backend).
    pub bytes_out: u64,
    pub reason: CloseReason,
}

impl Record<'_> {
    fn termination(&self) -> Termination {
        Termination::of(self.reason, self.connect.is_some())
    }

    /// Append this record as one line in `format`.
    pub fn write(&self, format: Format, out: &mut String) {
        let time = humantime::format_rfc3339_millis(self.end);
        let ms = |d: Option<Duration>| d.map_or(-1, |d| d.as_millis() as i64);
        let t = self.termination();
        let backend = self.backend.unwrap_or("-");
        // Writing to a String cannot fail.
        let _ = match format {
            Format::Text => writeln!(
                out,
                "{time} {} {} {}/{backend} {}/{}/{} {} {} {}{}",
                self.client,
                self.listener,
                self.pool,
                ms(self.wait),
                ms(self.connect),
                self.total.as_millis(),
                self.bytes_in,
                self.bytes_out,
                t.by,
                t.at,
            ),
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "time": time.to_string(),
                    "client": self.client.to_string(),
                    "listener": self.listener,
                    "pool": self.pool,
                    "backend": self.backend,
                    "wait_ms": self.wait.map(|d| d.as_millis() as u64),
                    "connect_ms": self.connect.map(|d| d.as_millis() as u64),
                    "total_ms": self.total.as_millis() as u64,
                    "bytes_in": self.bytes_in,
                    "bytes_out": self.bytes_out,
                    "termination": format!("{}{}", t.by, t.at),
                    "reason": reason_name(self.reason),
                })
            ),
        };
    }
}

/// A stable word for each close reason (the JSON format's `reason`).
pub fn reason_name(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Done => "done",
        CloseReason::NoBackend => "no_backend",
        CloseReason::ClientFailed(f) if f.peer_reset() => "client_reset",
        CloseReason::ClientFailed(_) => "client_error",
        CloseReason::BackendFailed(f) if f.peer_reset() => "backend_reset",
        CloseReason::BackendFailed(_) => "backend_error",
        CloseReason::IdleTimeout => "idle_timeout",
        CloseReason::FinTimeout(Side::Client) => "client_fin_timeout",
        CloseReason::FinTimeout(Side::Backend) => "server_fin_timeout",
        CloseReason::Aborted => "shutdown",
        CloseReason::Local => "local",
        CloseReason::QueueFull => "queue_full",
        CloseReason::QueueTimeout => "queue_timeout",
        CloseReason::Inspect(Refusal::ProxyHeader) => "bad_proxy_header",
        CloseReason::Inspect(Refusal::Timeout) => "inspect_timeout",
        CloseReason::Inspect(Refusal::NoServerName) => "no_server_name",
    }
}

/// Asks the writer to reopen its file before its next write (SIGUSR1). Cloneable.
#[derive(Clone, Debug, Default)]
pub struct Reopen(Arc<AtomicBool>);

impl Reopen {
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// The writer thread and the handles workers log through.
#[derive(Debug)]
pub struct AccessLog {
    sender: SyncSender<Vec<u8>>,
    format: Format,
    writer: JoinHandle<()>,
}

impl AccessLog {
    /// Open `target` (a file is created if missing) and start the writer thread, which
    /// reopens the file when `reopen` is requested.
    pub fn start(target: Target, format: Format, reopen: Reopen) -> io::Result<AccessLog> {
        let sink = Sink::open(target)?;
        let (sender, receiver) = mpsc::sync_channel(QUEUED_BATCHES);
        let asked = reopen.clone();
        let writer = std::thread::Builder::new()
            .name("ringlb-access-log".into())
            .spawn(move || write_batches(sink, &receiver, &asked))?;
        Ok(AccessLog {
            sender,
            format,
            writer,
        })
    }

    /// A worker's end.
    pub fn worker(&self) -> WorkerLog {
        WorkerLog {
            sender: self.sender.clone(),
            format: self.format,
            line: String::new(),
            batch: Vec::new(),
            lines: 0,
            dropped: 0,
        }
    }

    /// Wait for the writer to write everything handed over, once every [`WorkerLog`] is
    /// dropped (their last batches flushed).
    pub fn finish(self) {
        drop(self.sender);
        let _ = self.writer.join();
    }
}

/// One worker's buffer of lines not yet handed to the writer.
#[derive(Debug)]
pub struct WorkerLog {
    sender: SyncSender<Vec<u8>>,
    format: Format,
    /// Scratch for formatting one record.
    line: String,
    batch: Vec<u8>,
    /// Lines in `batch`.
    lines: u64,
    /// Lines dropped because the writer was behind.
    dropped: u64,
}

impl WorkerLog {
    /// Format `record` into the buffer; hand the buffer over if it is large.
    pub fn log(&mut self, record: &Record<'_>) {
        self.line.clear();
        record.write(self.format, &mut self.line);
        self.batch.extend_from_slice(self.line.as_bytes());
        self.lines += 1;
        if self.batch.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Hand what is buffered to the writer without waiting: once per loop turn. When the
    /// writer is behind, the lines are dropped and counted.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        match self.sender.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(mut batch) | TrySendError::Disconnected(mut batch)) => {
                self.dropped += self.lines;
                batch.clear();
                self.batch = batch;
            }
        }
        self.lines = 0;
    }

    /// Lines dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Drop for WorkerLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Where the writer writes.
enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(target: Target) -> io::Result<Sink> {
        Ok(match target {
            Target::Stderr => Sink::Stderr,
            Target::File(path) => Sink::File {
                file: open_append(&path)?,
                path,
            },
        })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stderr => io::stderr().lock().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    /// Reopen the file by its path (after logrotate moved it); the old file stays in use if
    /// the new one cannot be opened.
    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match open_append(path) {
                Ok(new) => *file = new,
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "cannot reopen the access log");
                }
            }
        }
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// The writer thread: each batch with one write, until every sender is gone.
fn write_batches(mut sink: Sink, batches: &Receiver<Vec<u8>>, reopen: &Reopen) {
    let mut failures = 0u64;
    for batch in batches {
        if reopen.take() {
            sink.reopen();
        }
        if let Err(err) = sink.write(&batch) {
            failures += 1;
            if failures.is_power_of_two() {
                tracing::warn!(%err, failures, "cannot write the access log");
            }
        }
    }
}

#[cfg(test)]
mod tests;
