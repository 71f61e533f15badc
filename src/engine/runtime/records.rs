//! Turning the shard's records of finished connections into access-log lines, the same way in
//! every engine: once per loop turn, off the forwarding path, into the worker's own buffer.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::Config;
use crate::core::shard::{Finished, Shard};
use crate::engine::access_log::{AccessLog, Record, WorkerLog};

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

impl Names {
    /// The names `config` gives.
    pub fn of(config: &Config) -> Self {
        Names {
            listeners: config.listeners.iter().map(|l| l.name.clone()).collect(),
            pools: config.pools.iter().map(|p| p.name.clone()).collect(),
        }
    }
}

/// One worker's access logging, or none: engines call [`Logging::write`] every loop turn
/// either way, and it costs nothing when the log is off.
#[derive(Debug)]
pub struct Logging {
    log: Option<WorkerLog>,
    names: Arc<Names>,
    taken: Vec<Finished>,
}

impl Logging {
    /// One worker's end of `log`, its lines naming listeners and pools by `names`.
    pub fn new(log: &AccessLog, names: Arc<Names>) -> Self {
        Logging {
            log: Some(log.worker()),
            names,
            taken: Vec::new(),
        }
    }

    /// No access log.
    pub fn off() -> Self {
        Logging {
            log: None,
            names: Arc::default(),
            taken: Vec::new(),
        }
    }

    /// Name listeners and pools by `names` from now on (a reload).
    pub fn rename(&mut self, names: Arc<Names>) {
        self.names = names;
    }

    /// `shard`, keeping the records this logging needs.
    pub fn fit<Io>(&self, shard: Shard<Io>) -> Shard<Io> {
        if self.log.is_some() {
            shard.keep_records()
        } else {
            shard
        }
    }

    /// Log every connection `shard` finished since the last call and hand the lines to the
    /// writer; `now` dates them. Once per loop turn, and once more when the worker stops.
    pub fn write<Io>(&mut self, shard: &mut Shard<Io>, now: Instant) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
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
                wait: finished.wait(),
                connect: finished.connect_time(),
                total: finished.total(),
                bytes_in: finished.bytes_in,
                bytes_out: finished.bytes_out,
                reason: finished.reason,
            };
            log.log(&record);
        }
        log.flush();
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.log.as_ref().map_or(0, WorkerLog::dropped)
    }
}
