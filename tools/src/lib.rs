//! Load generator and test backends for ringlb's tests, demo and benchmarks.
//!
//! - [`backend`]: echo, sink, source, HTTP and hello servers ([`backend::spawn`]).
//! - [`loadgen`]: a non-blocking, epoll-driven load generator ([`loadgen::run`]).
//! - [`source`]: loopback source-address ranges for spreading client connections.
//!
//! Everything refuses non-loopback addresses: these tools only ever talk to 127.0.0.0/8 or ::1.

pub mod backend;
pub mod loadgen;
pub mod pattern;
pub mod source;

mod slab;
mod sys;

pub use sys::raise_nofile_limit;
