//! Turning the shard's records of finished connections into access-log lines, the same way in
//! every engine: once per loop turn, off the forwarding path, into the worker's own buffer.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::core::shard::{Finished, Shard};
use crate::engine::access_log::{Record, WorkerLog};

/// `names[i]`, or `-`.
fn name(names: &[String], i: usize) -> &str {
    names.get(i).map_or("-", String::as_str)
}

/// The names a line gives listeners and pools (config order).
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub listeners: Vec<String>,
    pub pools: Vec<String>,
}

/// One worker's access logging.
#[derive(Debug)]
pub struct Logging {
    log: WorkerLog,
    names: Arc<Names>,
    taken: Vec<Finished>,
}

impl Logging {
    pub fn new(log: WorkerLog, names: Arc<Names>) -> Self {
        Logging {
            log,
            names,
            taken: Vec::new(),
        }
    }

    /// Log every connection `shard` finished since the last call and hand the lines to the
    /// writer; `now` dates them.
    pub fn write<Io>(&mut self, shard: &mut Shard<Io>, now: Instant) {
        self.taken.extend(shard.take_records());
        if self.taken.is_empty() {
            return;
        }
        let wall = SystemTime::now();
        for finished in self.taken.drain(..) {
            let backend = finished.backend.and_then(|id| {
                shard
                    .balancer(finished.pool)
                    .and_then(|b| b.snapshot().backend(id))
                    .map(|b| b.name.as_str())
            });
            let record = Record {
                end: wall - now.saturating_duration_since(finished.closed),
                client: finished.client,
                listener: name(&self.names.listeners, finished.listener),
                pool: name(&self.names.pools, finished.pool),
                backend,
                wait: None,
                connect: finished.connect_time(),
                total: finished.total(),
                bytes_in: finished.bytes_in,
                bytes_out: finished.bytes_out,
                reason: finished.reason,
            };
            self.log.log(&record);
        }
        self.log.flush();
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.log.dropped()
    }
}
