//! The inspect phase's reads: the client's first bytes, read into a buffer the engine gives
//! and handed to the shard (`Shard::inspected`), before a backend is picked. Every engine
//! classifies a read's result here.

use std::io;

use crate::core::conn::{Dir, Event, Side};

/// What one inspect read gave.
#[derive(Debug)]
pub enum Inspected {
    /// This many bytes (> 0): hand them to the shard.
    Bytes(usize),
    /// Nothing yet (a non-blocking socket): read again once it is readable.
    Wait,
    /// An event for the shard: the client ended its side, or its socket failed.
    Event(Event),
}

/// Classify a read's result (bytes, 0 at end of stream, or an error).
pub fn classify(result: io::Result<usize>) -> Inspected {
    match result {
        Ok(0) => Inspected::Event(Event::Eof { dir: Dir::Upstream }),
        Ok(n) => Inspected::Bytes(n),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Inspected::Wait
        }
        Err(err) => {
            tracing::debug!(%err, "inspect read failed");
            Inspected::Event(Event::Failed {
                side: Side::Client,
                failure: super::os_failure(&err),
            })
        }
    }
}

/// Classify a completion's result (bytes, 0 at end of stream, or `-errno`).
pub fn classify_cqe(result: i32) -> Inspected {
    classify(super::preamble::result(result))
}

/// The buffer an inspect read of at most `room` bytes reads into.
pub fn buffer(room: usize) -> Box<[u8]> {
    vec![0; room.max(1)].into_boxed_slice()
}
