//! The end-to-end benchmark harness behind `cargo run --release -p ringlb-bench --bin e2e`.
//!
//! Every row (a proxy configuration: none, ringlb on each engine and mode, HAProxy with and
//! without splice, nginx stream) runs the same workloads (streams, request/response, connection
//! rate, idle connections) against the same backends on loopback. The load side (loadgen and
//! backend, separate processes) is pinned to the load CPUs and the proxy to the proxy CPUs.
//! While a run goes, the proxy's CPU time, context switches, threads, io-wq workers and RSS are
//! read from `/proc`, and its system calls are counted with `perf stat`. Each figure is the
//! median of the runs; a row whose backend did not receive what loadgen sent fails loudly.
//!
//! Modules: [`opts`] (flags, timing plan), [`app`] (the whole run), [`runner`] (rows and
//! workloads), [`interleave`] (rows in turns), [`paired`] (round-by-round ratios), [`measure`] (one run), [`backend`] (the backends), [`proxy`] (rows and proxy
//! processes), [`peers`] (HAProxy, nginx, iperf3, wrk, perf), [`workload`], [`iperf3`] and
//! [`wrk`] (their arguments and reports), [`figures`]
//! (medians), [`verify`] (did the row forward), [`report`] (markdown), [`client_tables`] (the fixed-rate and client tables), [`targets`],
//! [`charts`] and [`svg`] (charts), [`procfs`],
//! [`child`] (process guards), [`error`].

pub mod app;
pub mod backend;
pub mod charts;
pub mod child;
pub mod client_tables;
pub mod error;
pub mod figures;
pub mod interleave;
pub mod iperf3;
pub mod measure;
pub mod opts;
pub mod paired;
pub mod peers;
pub mod procfs;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod svg;
pub mod targets;
pub mod verify;
pub mod workload;
pub mod wrk;

pub use app::run;
pub use error::BenchError;
pub use opts::Options;
