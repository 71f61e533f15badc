//! `backend`: runs one test backend until SIGINT/SIGTERM or `--seconds`.
//!
//! Prints the bound address on the first line (so scripts can listen on port 0), and the
//! final counters as one JSON object when it stops.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ringlb_tools::backend::{self, BackendConfig, BackendKind, DEFAULT_HTTP_BODY_SIZE};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Echo,
    Sink,
    Source,
    Http,
    Hello,
    UdpEcho,
    UdpSink,
}

/// A test backend for ringlb: echo, sink, source, http or hello (TCP); udp-echo or udp-sink.
///
/// SIGUSR1 prints the counters so far as one JSON line (the e2e harness reads them around
/// each run).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// What to serve.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Loopback address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Name: the greeting of `hello`, the X-Backend header of `http`.
    #[arg(long)]
    name: Option<String>,
    /// Response body size of `http`.
    #[arg(long, default_value_t = DEFAULT_HTTP_BODY_SIZE)]
    body_size: usize,
    /// Bytes per connection for `source` (default: unlimited).
    #[arg(long)]
    bytes: Option<u64>,
    /// Event-loop threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop by itself after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let kind = match args.kind {
        Kind::Echo => BackendKind::Echo,
        Kind::Sink => BackendKind::Sink,
        Kind::Source => BackendKind::Source { bytes: args.bytes },
        Kind::Http => BackendKind::Http {
            body_size: args.body_size,
        },
        Kind::Hello => BackendKind::Hello(args.name.clone().unwrap_or_else(|| "hello".into())),
        Kind::UdpEcho => BackendKind::UdpEcho,
        Kind::UdpSink => BackendKind::UdpSink,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("backend: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let report = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&report)) {
        eprintln!("backend: cannot install signal handler: {e}");
        return ExitCode::FAILURE;
    }
    let _ = ringlb_tools::raise_nofile_limit();
    let mut config = BackendConfig::new(kind, args.listen);
    config.threads = args.threads.max(1);
    config.name = args.name;
    let mut handle = match backend::spawn_with(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("backend: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("{}", handle.local_addr());
    let deadline = match args.seconds.map(Duration::try_from_secs_f64) {
        None => None,
        Some(Ok(d)) => Some(Instant::now() + d),
        Some(Err(e)) => {
            eprintln!("backend: bad --seconds: {e}");
            return ExitCode::FAILURE;
        }
    };
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        if report.swap(false, Ordering::SeqCst) {
            print_stats(&handle);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.stop();
    print_stats(&handle);
    ExitCode::SUCCESS
}

/// Prints the counters as one JSON line (flushed: stdout may be a file).
fn print_stats(handle: &backend::BackendHandle) {
    match serde_json::to_string(&handle.stats()) {
        Ok(s) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{s}");
            let _ = out.flush();
        }
        Err(e) => eprintln!("backend: cannot serialise stats: {e}"),
    }
}
