//! ringlb: an L4 TCP load balancer for Linux on io_uring.
//!
//! The crate is split the way the data plane runs:
//! - [`core`]: balancing, backend state and the per-connection state machine. Pure: no I/O, no
//!   clock reads, no `unsafe`. Engines feed it events and the current time and carry out the
//!   actions it returns.
//! - [`config`]: TOML and command-line configuration, validated into a [`config::Config`].
//! - [`engine`]: thin shells (io_uring, epoll, blocking) that turn core actions into syscalls.
//! - [`sys`]: the few raw system calls that no crate wraps (pipes, splice, socket options).

pub mod config;
pub mod control;
pub mod core;
pub mod demo;
pub mod engine;
pub mod sys;
