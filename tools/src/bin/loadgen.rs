//! `loadgen`: drives stream, rr, connect, idle, udp-rr or udp-stream load at a loopback
//! target.
//!
//! With `--json` it prints the report as one JSON object on stdout; otherwise a short summary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ringlb_tools::loadgen::{self, Direction, LoadConfig, Mode, Report};
use ringlb_tools::source::SourceRange;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Stream,
    Rr,
    Connect,
    Idle,
    UdpRr,
    UdpStream,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DirArg {
    Upload,
    Download,
}

/// Load generator for ringlb (loopback only).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Kind of load.
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// Loopback address to load.
    #[arg(long)]
    target: SocketAddr,
    /// Connections (concurrent slots in connect mode; UDP: flows, one socket each).
    #[arg(long, default_value_t = 1)]
    connections: u32,
    /// Time limit in seconds (idle mode: limit of the opening phase).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Request or datagram size in bytes [default: 64; udp-stream: 1472].
    #[arg(long)]
    size: Option<usize>,
    /// Source addresses, e.g. 127.1.0.1-127.1.0.250 or 127.2.0.0/24.
    #[arg(long)]
    sources: Option<SourceRange>,
    /// Event-loop threads.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Stop after this many requests (rr, connect, udp-rr) or datagrams (udp-stream).
    #[arg(long)]
    max_requests: Option<u64>,
    /// Stream direction.
    #[arg(long, value_enum, default_value = "upload")]
    direction: DirArg,
    /// Stream bytes per connection (default: until the time limit).
    #[arg(long)]
    bytes_per_conn: Option<u64>,
    /// Idle mode: seconds to hold the connections open.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Most connects in flight per thread.
    #[arg(long, default_value_t = 256)]
    max_connecting: u32,
    /// udp-stream: datagrams per second, all sockets together; rr: requests per second, all
    /// connections together, paced per thread (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// udp-rr: seconds to wait for an answer before counting the request lost and sending
    /// another.
    #[arg(long, default_value_t = loadgen::DEFAULT_UDP_TIMEOUT.as_secs_f64())]
    udp_timeout: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|e| format!("bad --{name} {v}: {e}"))
}

fn config(a: &Args) -> Result<LoadConfig, String> {
    let size = a.size.unwrap_or(64);
    let mode = match a.mode {
        ModeArg::Stream => Mode::Stream {
            direction: match a.direction {
                DirArg::Upload => Direction::Upload,
                DirArg::Download => Direction::Download,
            },
            bytes_per_conn: a.bytes_per_conn,
        },
        ModeArg::Rr => Mode::Rr { size },
        ModeArg::Connect => Mode::Connect { size },
        ModeArg::UdpRr => Mode::UdpRr {
            size,
            timeout: secs("udp-timeout", a.udp_timeout)?,
        },
        ModeArg::UdpStream => Mode::UdpStream {
            size: a.size.unwrap_or(loadgen::DEFAULT_UDP_STREAM_SIZE),
            rate: a.rate,
        },
        ModeArg::Idle => Mode::Idle {
            hold: secs("hold", a.hold)?,
        },
    };
    let mut c = LoadConfig::new(a.target, mode);
    c.connections = a.connections;
    c.duration = secs("seconds", a.seconds)?;
    c.max_requests = a.max_requests;
    c.sources = a.sources;
    c.threads = a.threads;
    c.max_connecting = a.max_connecting;
    if let ModeArg::Rr = a.mode {
        c.rate = a.rate;
    }
    Ok(c)
}

fn summary(r: &Report) -> String {
    let mut s = format!(
        "{} -> {}: {:.2}s, {} conns opened ({} connect errors, {} io errors, {} short reads, \
         {} verify errors)\n",
        r.mode,
        r.target,
        r.elapsed_secs,
        r.connections_opened,
        r.connect_errors,
        r.io_errors,
        r.short_reads,
        r.verify_errors
    );
    s += &format!(
        "requests {} ({:.0}/s), connections {:.0}/s, sent {} B, received {} B, {:.3} Gbit/s, \
         open peak {}, open at end {}\n",
        r.requests,
        r.requests_per_sec,
        r.connections_per_sec,
        r.bytes_sent,
        r.bytes_received,
        r.gbit_per_sec,
        r.open_peak,
        r.open_at_end
    );
    if r.mode.starts_with("udp") {
        s += &format!(
            "datagrams sent {} ({:.0}/s), received {}, lost {}, late {}, abandoned {}\n",
            r.datagrams_sent,
            r.datagrams_per_sec,
            r.datagrams_received,
            r.lost,
            r.late,
            r.abandoned
        );
    }
    if let Some(l) = &r.latency_us {
        s += &format!(
            "latency us: p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}\n",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        );
    }
    s
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match loadgen::run(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("loadgen: cannot serialise report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", summary(&report));
    }
    ExitCode::SUCCESS
}
