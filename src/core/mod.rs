//! The sans-I/O core: everything that decides, nothing that does.
//!
//! No function here performs a system call, reads a clock or uses `unsafe`. Time is always an
//! argument (`now: Instant`), randomness comes from a seeded generator, and results are returned
//! as values for an engine to carry out. That keeps every decision testable on a virtual clock
//! and shared, unchanged, by every engine.
#![forbid(unsafe_code)]

pub mod affinity;
pub mod backend;
pub mod balance;
pub mod capacity;
pub mod conn;
pub mod health;
pub mod inspect;
pub mod proxy_header;
pub mod shard;
pub mod slot;
pub mod stats;
pub mod timer;
pub mod udp;
