//! From a validated [`Config`] to what each worker needs: listener policies and pool snapshots.

use std::sync::Arc;

use crate::config::{self, Config, Listener, Mode, Pool, QueueClose};
use crate::core::affinity::AffinityPolicy;
use crate::core::backend::BackendState;
use crate::core::balance::PoolSnapshot;
use crate::core::capacity::{QueuePolicy, RatePolicy};
use crate::core::conn::ConnParams;
use crate::core::inspect::{InspectPolicy, Routes, SniFallback, SniPolicy};
use crate::core::shard::{Inspect, ListenerPolicy, RouteTarget};

/// What differs between engines in how the core should drive them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineTraits {
    /// The engine enforces the connect timeout itself (io_uring's linked timeout, a blocking
    /// connect with a timeout); the core's deadline is then left unset.
    pub enforces_connect_timeout: bool,
    /// Copy mode: how many buffers of one direction may wait to be sent before receiving
    /// pauses. An engine with one buffer per direction says 1; the io_uring engine, which
    /// sends several queued buffers in one `sendmsg`, allows more in flight.
    pub copy_buffers: u64,
}

/// Immutable snapshots of every pool, all backends up; shared by all workers.
pub fn pool_snapshots(config: &Config) -> Vec<Arc<PoolSnapshot>> {
    config
        .pools
        .iter()
        .map(|pool| {
            Arc::new(PoolSnapshot::new(
                pool.algorithm,
                pool.backends.clone(),
                vec![BackendState::Up; pool.backends.len()],
            ))
        })
        .collect()
}

/// One policy per listener, in config order, for an engine with `traits`.
pub fn listener_policies(config: &Config, traits: &EngineTraits) -> Vec<ListenerPolicy> {
    config
        .listeners
        .iter()
        .map(|listener| {
            let pool = &config.pools[listener.pool];
            ListenerPolicy {
                pool: listener.pool,
                candidates: pool.retries as usize + 1,
                params: conn_params(config, listener.mode, traits),
                queue: queue(pool),
                admission: listener.admission.map(|a| RatePolicy {
                    rate: a.rate,
                    burst: a.burst,
                }),
                affinity: affinity(pool),
                inspect: inspect(config, listener),
            }
        })
        .collect()
}

fn affinity(pool: &Pool) -> Option<AffinityPolicy> {
    pool.affinity.map(|a| AffinityPolicy {
        ttl: a.ttl,
        max_entries: a.max_entries as usize,
    })
}

fn queue(pool: &Pool) -> QueuePolicy {
    QueuePolicy {
        size: pool.queue.size as usize,
        timeout: pool.queue.timeout,
        reset: pool.queue.close == QueueClose::Reset,
    }
}

/// What `listener` reads before picking a backend (`None`: nothing, it connects at once).
fn inspect(config: &Config, listener: &Listener) -> Option<Arc<Inspect>> {
    if !listener.accept_proxy && listener.routes.is_empty() {
        return None;
    }
    let sni = (!listener.routes.is_empty()).then(|| SniPolicy {
        routes: Routes::new(
            listener
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.sni.as_str(), i)),
        ),
        fallback: match listener.sni_fallback {
            config::SniFallback::Default => SniFallback::Default,
            config::SniFallback::Close => SniFallback::Close,
        },
    });
    let routes = listener
        .routes
        .iter()
        .map(|r| {
            let pool = &config.pools[r.pool];
            RouteTarget {
                pool: r.pool,
                candidates: pool.retries as usize + 1,
                queue: queue(pool),
                affinity: affinity(pool),
            }
        })
        .collect();
    Some(Arc::new(Inspect {
        policy: InspectPolicy {
            accept_proxy: listener.accept_proxy,
            timeout: listener.inspect_timeout,
            sni,
        },
        routes,
    }))
}

/// The per-connection limits for a listener in `mode`.
pub fn conn_params(config: &Config, mode: Mode, traits: &EngineTraits) -> ConnParams {
    let buffer = u64::from(config.tuning.buffer_size);
    ConnParams {
        connect_timeout: (!traits.enforces_connect_timeout).then_some(config.timeouts.connect),
        idle_timeout: config.timeouts.idle,
        client_fin: config.timeouts.client_fin,
        server_fin: config.timeouts.server_fin,
        mode,
        copy_high_water: buffer * traits.copy_buffers.max(1),
        splice_capacity: u64::from(config.tuning.pipe_size),
        full_receipt: buffer,
        loopback_copy: config.features.loopback_copy,
    }
}

/// The UDP listeners every worker runs, in config order (see [`crate::engine::udp`]).
pub fn udp_plans(config: &Config) -> Vec<crate::engine::udp::UdpPlan> {
    config
        .udp_listeners
        .iter()
        .map(|listener| {
            let udp = config.pools[listener.pool].udp;
            crate::engine::udp::UdpPlan {
                bind: listener.bind,
                pool: listener.pool,
                rcvbuf: listener.rcvbuf as usize,
                freebind: listener.freebind,
                policy: crate::core::udp::FlowPolicy {
                    idle_timeout: udp.idle_timeout,
                    responses: udp.responses,
                    max_flows: udp.max_flows as usize,
                },
            }
        })
        .collect()
}
