//! From a validated [`Config`] to what each worker needs: listener policies and pool snapshots.

use std::sync::Arc;

use crate::config::{Config, Mode};
use crate::core::backend::BackendState;
use crate::core::balance::PoolSnapshot;
use crate::core::conn::ConnParams;
use crate::core::shard::ListenerPolicy;

/// Copy mode pauses a direction's receives once this many buffers wait to be sent.
pub const COPY_HIGH_WATER_BUFFERS: u64 = 4;

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

/// One policy per listener, in config order. `engine_connect_timeout` is true for engines that
/// enforce the connect timeout themselves (io_uring's linked timeout, a blocking connect with a
/// timeout); the core's deadline is then left unset.
pub fn listener_policies(config: &Config, engine_connect_timeout: bool) -> Vec<ListenerPolicy> {
    config
        .listeners
        .iter()
        .map(|listener| {
            let pool = &config.pools[listener.pool];
            ListenerPolicy {
                pool: listener.pool,
                candidates: pool.retries as usize + 1,
                params: conn_params(config, listener.mode, engine_connect_timeout),
            }
        })
        .collect()
}

/// The per-connection limits for a listener in `mode`.
pub fn conn_params(config: &Config, mode: Mode, engine_connect_timeout: bool) -> ConnParams {
    let buffer = u64::from(config.tuning.buffer_size);
    ConnParams {
        connect_timeout: (!engine_connect_timeout).then_some(config.timeouts.connect),
        idle_timeout: config.timeouts.idle,
        mode,
        copy_high_water: buffer * COPY_HIGH_WATER_BUFFERS,
        splice_capacity: u64::from(config.tuning.pipe_size),
        full_receipt: buffer,
    }
}
