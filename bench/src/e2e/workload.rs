//! The workloads: which backend each needs and how loadgen is invoked for it.

use std::net::SocketAddr;
use std::time::Duration;

use super::iperf3;
use super::opts::Plan;
use super::peers::Peers;
use super::wrk;

/// Source addresses for connection-rate runs (past the ephemeral-port limit of one address).
const CONNECT_SOURCES: &str = "127.1.0.0/16";
/// Source addresses for idle runs.
const IDLE_SOURCES: &str = "127.2.0.0/16";
/// Concurrent connect slots of the connection-rate workload.
const CONNECT_SLOTS: u32 = 32;
/// Source addresses of the UDP flows (one address per flow for up to 65,534 flows).
const UDP_SOURCES: &str = "127.4.0.0/16";
/// Sockets of the UDP stream workload.
pub const UDP_STREAM_SOCKETS: u32 = 4;
/// Datagram size of the UDP stream workload (fills a 1,500-byte MTU).
pub const UDP_STREAM_SIZE: u64 = 1_472;
/// Datagram size of the UDP request/response workloads.
pub const UDP_RR_SIZE: u64 = 64;
/// The total request rate of `rr-64-paced` (all connections together), one every row
/// reaches so that rows are compared at the same load. Measured on the 2-CPU machine (proxy
/// on CPU 1; loadgen and echo on CPU 0; shared with other work, so per CPU-second of the
/// proxy): unpaced rr-64 ran 63,000-86,000 req/s direct, and ringlb uring, HAProxy and
/// nginx stream forwarded 70,000-77,000 req/s per proxy CPU-second, but ringlb's blocking
/// engine (a thread per connection) only 17,000-27,000, and at 10,000 req/s paced it once
/// reached 9,300 with half a CPU. The example, 20,000, would need all of a CPU on
/// the blocking row; 8,000 needs under half of one on every row.
pub const RR_PACED_RATE: u64 = 8_000;
/// The share of a paced workload's offered rate a row must reach, else the run fails (its
/// CPU per unit would not be comparable).
pub const PACED_MIN_SHARE: f64 = 0.95;
/// How long a UDP flow may stay silent in the proxies (ringlb `--udp-idle-timeout`, nginx
/// `proxy_timeout`): longer than a run, so that no flow ends mid-run.
pub const UDP_IDLE_TIMEOUT: &str = "10s";

/// One kind of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Workload {
    /// `n` upload streams into a sink (throughput).
    Stream(u32),
    /// 64-byte request/response over `n` persistent connections against echo.
    Rr(u32),
    /// [`Workload::Rr`] at a fixed total rate of [`RR_PACED_RATE`] requests per second.
    RrPaced(u32),
    /// A new connection per 64-byte echo (connection rate).
    Connect,
    /// Many idle connections (memory per connection).
    Idle,
    /// 64-byte UDP request/response over `n` flows (sockets) against a UDP echo; the proxies
    /// end a flow after its one answer (`udp_responses` / `proxy_responses` 1, as for DNS).
    UdpRr(u32),
    /// 1,472-byte UDP datagrams from `n` sockets, as fast as loadgen can send, into a UDP sink.
    UdpStream(u32),
    /// `iperf3 -c -P streams`: TCP upload streams into an iperf3 server, as fast as they go
    /// or (`paced`) at [`iperf3::TCP_PACED_RATE`] in total.
    Iperf3Tcp {
        /// Parallel streams (`-P`).
        streams: u32,
        /// Offered at a fixed rate (`-b`).
        paced: bool,
    },
    /// `wrk` HTTP requests over [`wrk::CONNECTIONS`] connections into an nginx HTTP backend:
    /// keep-alive, or (`close`) `Connection: close`, a new connection per request.
    Wrk {
        /// Every request on a new connection.
        close: bool,
    },
    /// `iperf3 -u`: one stream of 1,400-byte datagrams at a fixed rate into an iperf3 server,
    /// with its TCP control connection to the same port.
    Iperf3Udp,
}

/// The backend a workload needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Discards input.
    Sink,
    /// Echoes input.
    Echo,
    /// Counts datagrams.
    UdpSink,
    /// Echoes datagrams.
    UdpEcho,
    /// An iperf3 server (TCP control connections and UDP datagrams on one port), not the
    /// harness's backend binary: what it received comes in the iperf3 client's report.
    Iperf3,
    /// An nginx HTTP server answering every request with a short body (wrk's backend); it
    /// keeps no counters either: wrk's report says what was answered.
    NginxHttp,
}

impl BackendKind {
    /// The `--kind` argument of the backend binary.
    pub fn arg(self) -> &'static str {
        match self {
            BackendKind::Sink => "sink",
            BackendKind::Echo => "echo",
            BackendKind::UdpSink => "udp-sink",
            BackendKind::UdpEcho => "udp-echo",
            BackendKind::Iperf3 => "iperf3",
            BackendKind::NginxHttp => "nginx-http",
        }
    }
}

/// The standard workloads, in table order.
pub const WORKLOADS: [Workload; 8] = [
    Workload::Stream(1),
    Workload::Stream(4),
    Workload::Stream(8),
    Workload::Rr(64),
    Workload::RrPaced(64),
    Workload::Rr(1024),
    Workload::Connect,
    Workload::Idle,
];

/// The UDP workloads, in table order: run only when named with `--workloads` (they need a
/// ringlb with UDP listeners, and add about 3 minutes to a full run).
pub const UDP_WORKLOADS: [Workload; 4] = [
    Workload::UdpRr(64),
    Workload::UdpRr(1024),
    Workload::UdpStream(UDP_STREAM_SOCKETS),
    Workload::Iperf3Udp,
];

/// The workloads driven by clients nobody here wrote (iperf3 over TCP, wrk), in table order:
/// run only when named with `--workloads` (`clients`: all of them), as they need iperf3, wrk
/// and nginx installed.
pub const CLIENT_WORKLOADS: [Workload; 5] = [
    Workload::Iperf3Tcp {
        streams: 1,
        paced: false,
    },
    Workload::Iperf3Tcp {
        streams: 4,
        paced: false,
    },
    Workload::Iperf3Tcp {
        streams: 1,
        paced: true,
    },
    Workload::Wrk { close: false },
    Workload::Wrk { close: true },
];

/// The program that generates a workload's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The harness's loadgen, which prints its own JSON report.
    Loadgen,
    /// `iperf3 -c`, whose `--json` report [`iperf3::parse_report`] (UDP) or
    /// [`iperf3::parse_tcp_report`] reads.
    Iperf3,
    /// `wrk`, whose text report [`wrk::parse`] reads.
    Wrk,
}

impl Workload {
    /// Its name in tables, JSON and `--workloads`.
    pub fn name(&self) -> String {
        match self {
            Workload::Stream(n) => format!("stream-{n}"),
            Workload::Rr(n) => format!("rr-{n}"),
            Workload::RrPaced(n) => format!("rr-{n}-paced"),
            Workload::Iperf3Tcp { streams, paced } => {
                format!("iperf3-{streams}{}", if *paced { "-paced" } else { "" })
            }
            Workload::Wrk { close: false } => "wrk-keepalive".into(),
            Workload::Wrk { close: true } => "wrk-close".into(),
            Workload::Connect => "connect".into(),
            Workload::Idle => "idle".into(),
            Workload::UdpRr(n) => format!("udp-rr-{n}"),
            Workload::UdpStream(_) => "udp-stream".into(),
            Workload::Iperf3Udp => "iperf3-udp".into(),
        }
    }

    /// Whether it runs over UDP (iperf3's control connection aside).
    pub fn is_udp(&self) -> bool {
        matches!(
            self,
            Workload::UdpRr(_) | Workload::UdpStream(_) | Workload::Iperf3Udp
        )
    }

    /// Whether the proxy needs a TCP listener beside its UDP one, on the same port and to
    /// the same backend (iperf3's control connection).
    pub fn needs_tcp_and_udp(&self) -> bool {
        *self == Workload::Iperf3Udp
    }

    /// What generates its load.
    pub fn client(&self) -> Client {
        match self {
            Workload::Iperf3Udp | Workload::Iperf3Tcp { .. } => Client::Iperf3,
            Workload::Wrk { .. } => Client::Wrk,
            _ => Client::Loadgen,
        }
    }

    /// Why it cannot run here, if it cannot (a program it needs is missing).
    pub fn unavailable(&self, peers: &Peers) -> Option<String> {
        match self.client() {
            Client::Iperf3 => peers.iperf3.as_ref().err().cloned(),
            Client::Wrk => peers
                .wrk
                .as_ref()
                .err()
                .or(peers.nginx_http.as_ref().err())
                .cloned(),
            Client::Loadgen => None,
        }
    }

    /// How many datagrams the proxy's UDP flows may answer before they end (`None`: no
    /// limit, the flow lasts until it is idle for [`UDP_IDLE_TIMEOUT`]); `None` for TCP too.
    pub fn udp_responses(&self) -> Option<u32> {
        match self {
            Workload::UdpRr(_) => Some(1),
            _ => None,
        }
    }

    /// The backend it runs against.
    pub fn backend(&self) -> BackendKind {
        match self {
            Workload::Stream(_) => BackendKind::Sink,
            Workload::UdpStream(_) => BackendKind::UdpSink,
            Workload::UdpRr(_) => BackendKind::UdpEcho,
            Workload::Iperf3Udp | Workload::Iperf3Tcp { .. } => BackendKind::Iperf3,
            Workload::Wrk { .. } => BackendKind::NginxHttp,
            _ => BackendKind::Echo,
        }
    }

    /// Whether each run gets a fresh proxy (idle: so RSS growth is measured from a clean start).
    pub fn fresh_proxy_per_run(&self) -> bool {
        *self == Workload::Idle
    }

    /// Whether syscalls are counted with perf during the run.
    pub fn counts_syscalls(&self) -> bool {
        *self != Workload::Idle
    }

    /// How long the load runs: the plan's run, or for iperf3 and wrk (which take whole
    /// seconds) that rounded up.
    pub fn run_length(&self, plan: &Plan) -> Duration {
        match self.client() {
            Client::Iperf3 | Client::Wrk => Duration::from_secs(whole_secs(plan)),
            Client::Loadgen => plan.run,
        }
    }

    /// The rate a paced workload offers, in its unit (requests/s, bits/s); `None` unpaced.
    pub fn offered_rate(&self) -> Option<f64> {
        match self {
            Workload::RrPaced(_) => Some(RR_PACED_RATE as f64),
            Workload::Iperf3Tcp { paced: true, .. } => Some(iperf3::TCP_PACED_BPS),
            _ => None,
        }
    }

    /// The most a run may take before it is declared hung.
    pub fn time_limit(&self, plan: &Plan) -> Duration {
        let base = match self {
            Workload::Idle => plan.idle_open_limit + plan.idle_hold,
            _ => self.run_length(plan),
        };
        base + Duration::from_secs(20)
    }

    /// The client's arguments (see [`Workload::client`]) for one run against `target`.
    pub fn client_args(&self, target: SocketAddr, plan: &Plan, threads: usize) -> Vec<String> {
        let secs = |d: Duration| format!("{:.3}", d.as_secs_f64());
        let mut a: Vec<String> = vec!["--target".into(), target.to_string()];
        let mut push = |k: &str, v: String| {
            a.push(k.into());
            a.push(v);
        };
        match self {
            Workload::Stream(n) => {
                push("--mode", "stream".into());
                push("--direction", "upload".into());
                push("--connections", n.to_string());
                push("--seconds", secs(plan.run));
            }
            Workload::Rr(n) | Workload::RrPaced(n) => {
                push("--mode", "rr".into());
                push("--size", "64".into());
                push("--connections", n.to_string());
                push("--seconds", secs(plan.run));
                if let Workload::RrPaced(_) = self {
                    push("--rate", RR_PACED_RATE.to_string());
                }
            }
            Workload::Connect => {
                push("--mode", "connect".into());
                push("--size", "64".into());
                push("--connections", CONNECT_SLOTS.to_string());
                push("--sources", CONNECT_SOURCES.into());
                push("--seconds", secs(plan.run));
            }
            Workload::Idle => {
                push("--mode", "idle".into());
                push("--connections", plan.idle_connections.to_string());
                push("--sources", IDLE_SOURCES.into());
                push("--seconds", secs(plan.idle_open_limit));
                push("--hold", secs(plan.idle_hold));
            }
            Workload::UdpRr(n) => {
                push("--mode", "udp-rr".into());
                push("--size", UDP_RR_SIZE.to_string());
                push("--connections", n.to_string());
                push("--sources", UDP_SOURCES.into());
                push("--seconds", secs(plan.run));
            }
            Workload::UdpStream(n) => {
                push("--mode", "udp-stream".into());
                push("--size", UDP_STREAM_SIZE.to_string());
                push("--connections", n.to_string());
                push("--sources", UDP_SOURCES.into());
                push("--seconds", secs(plan.run));
            }
            Workload::Iperf3Udp => return iperf3::client_args(target, whole_secs(plan)),
            Workload::Iperf3Tcp { streams, paced } => {
                let rate = paced.then_some(iperf3::TCP_PACED_RATE);
                return iperf3::tcp_client_args(target, whole_secs(plan), *streams, rate);
            }
            Workload::Wrk { close } => {
                return wrk::args(target, whole_secs(plan), threads, *close);
            }
        }
        push("--threads", threads.max(1).to_string());
        a.push("--json".into());
        a
    }
}

/// The plan's run length in the whole seconds iperf3's `-t` and wrk's `-d` take: rounded
/// up, at least 1 (`-t 0` would run without end).
fn whole_secs(plan: &Plan) -> u64 {
    plan.run.as_secs_f64().ceil().max(1.0) as u64
}

/// A stream workload of `n` connections (the io-wq bound check uses 1,000).
pub fn many_streams(n: u32) -> Workload {
    Workload::Stream(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::opts::{Options, Plan};
    use clap::Parser;

    #[test]
    fn args_are_bounded() {
        let o = Options::parse_from(["e2e", "--quick"]);
        let plan = Plan::from_options(&o).unwrap_or_else(|e| panic!("{e}"));
        let t: SocketAddr = "127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}"));
        for w in WORKLOADS.into_iter().chain(UDP_WORKLOADS) {
            let a = w.client_args(t, &plan, 1);
            let length = if w.client() == Client::Iperf3 {
                "-t"
            } else {
                "--seconds"
            };
            assert!(a.iter().any(|s| s == length), "{}", w.name());
            assert!(a.iter().any(|s| s == "--json"));
        }
        // wrk runs whole seconds too, with no JSON.
        let a = Workload::Wrk { close: true }.client_args(t, &plan, 1);
        assert!(a.contains(&"-d1s".to_string()) && a.contains(&"Connection: close".into()));
        // --quick runs 0.6 s: iperf3 runs a whole second.
        assert_eq!(
            Workload::Iperf3Udp.run_length(&plan),
            Duration::from_secs(1)
        );
        assert!(Workload::Iperf3Udp.needs_tcp_and_udp() && Workload::Iperf3Udp.is_udp());
        assert_eq!(Workload::Rr(64).name(), "rr-64");
        let paced = Workload::RrPaced(64).client_args(t, &plan, 1).join(" ");
        assert!(
            paced.contains("--mode rr") && paced.contains("--rate 8000"),
            "{paced}"
        );
        assert!(
            !Workload::Rr(64)
                .client_args(t, &plan, 1)
                .contains(&"--rate".into())
        );
        let names: Vec<String> = CLIENT_WORKLOADS.iter().map(Workload::name).collect();
        assert_eq!(
            names,
            [
                "iperf3-1",
                "iperf3-4",
                "iperf3-1-paced",
                "wrk-keepalive",
                "wrk-close"
            ]
        );
        assert!(!CLIENT_WORKLOADS.iter().any(Workload::is_udp));
        assert_eq!(
            Workload::Wrk { close: false }.backend(),
            BackendKind::NginxHttp
        );
        assert_eq!(Workload::RrPaced(64).offered_rate(), Some(8_000.0));
        assert_eq!(CLIENT_WORKLOADS[2].offered_rate(), Some(2e9));
        assert_eq!(CLIENT_WORKLOADS[0].offered_rate(), None);
        assert_eq!(many_streams(1000).backend(), BackendKind::Sink);
        assert_eq!(Workload::UdpRr(1024).name(), "udp-rr-1024");
        assert!(UDP_WORKLOADS.iter().all(Workload::is_udp));
        assert!(!WORKLOADS.iter().any(Workload::is_udp));
    }
}
