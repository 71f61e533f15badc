//! The listening sockets, bound before the workers start: one `SO_REUSEPORT` socket per
//! listener per worker, each worker accepting on its own. They are bound here, or taken over
//! from the process this one replaces (a binary upgrade: see `control::handover`), so that the
//! clients waiting in their accept queues are never reset. The control side keeps duplicates
//! of them for the next handover.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use socket2::Socket;

use super::{EngineError, socket};
use crate::config::Config;

/// Sockets taken over from another process, by the address they are bound to.
pub type Inherited = BTreeMap<SocketAddr, Vec<Socket>>;

/// Every listener's sockets (in configuration order), one per worker (in worker order).
#[derive(Debug, Default)]
pub struct Sockets(pub Vec<Vec<Socket>>);

impl Sockets {
    /// The sockets of `config`'s listeners for `workers` workers: the `inherited` ones for an
    /// address first (set to this configuration's backlog), bound afresh for the rest.
    /// Inherited sockets beyond the worker count, or for an address no longer configured,
    /// are closed: clients queued on them are reset unless `net.ipv4.tcp_migrate_req` is 1.
    pub fn bind(
        config: &Config,
        workers: usize,
        mut inherited: Inherited,
    ) -> Result<Sockets, EngineError> {
        let mut all = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let backlog = i32::try_from(listener.backlog).unwrap_or(i32::MAX);
            let mut sockets = inherited.remove(&listener.bind).unwrap_or_default();
            if !sockets.is_empty() {
                tracing::info!(
                    listener = %listener.bind,
                    inherited = sockets.len(),
                    workers,
                    "listening sockets taken over"
                );
            }
            if sockets.len() > workers {
                tracing::warn!(
                    listener = %listener.bind,
                    extra = sockets.len() - workers,
                    "more sockets taken over than workers: the extra ones close (set \
                     net.ipv4.tcp_migrate_req = 1 so that their queued clients move on)"
                );
                sockets.truncate(workers);
            }
            for socket in &sockets {
                socket
                    .listen(backlog)
                    .map_err(|e| EngineError::io(format!("listening on {}", listener.bind), e))?;
            }
            while sockets.len() < workers {
                let socket = socket::listener(
                    listener.bind,
                    listener.backlog,
                    true,
                    &config.tcp.client,
                    listener.freebind,
                )
                .map_err(|e| EngineError::io(format!("listening on {}", listener.bind), e))?;
                sockets.push(socket);
            }
            all.push(sockets);
        }
        for (addr, sockets) in inherited {
            tracing::warn!(
                listener = %addr,
                sockets = sockets.len(),
                "taken over but not in the configuration: closed"
            );
        }
        Ok(Sockets(all))
    }

    /// Duplicates of every socket (the control side keeps them for a handover).
    pub fn try_clone(&self) -> std::io::Result<Sockets> {
        self.0
            .iter()
            .map(|sockets| sockets.iter().map(Socket::try_clone).collect())
            .collect::<std::io::Result<_>>()
            .map(Sockets)
    }

    /// By worker: each worker's socket of every listener, in listener order.
    pub fn by_worker(self, workers: usize) -> Vec<Vec<Socket>> {
        let mut by_worker: Vec<Vec<Socket>> = (0..workers).map(|_| Vec::new()).collect();
        for sockets in self.0 {
            for (worker, socket) in sockets.into_iter().enumerate() {
                if let Some(list) = by_worker.get_mut(worker) {
                    list.push(socket);
                }
            }
        }
        by_worker
    }
}
