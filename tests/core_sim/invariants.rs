//! Checks between turns and at the end of a seed.

use std::net::Ipv4Addr;
use std::time::Duration;

use ringlb::core::backend::BackendId;
use ringlb::core::conn::Dir;
use ringlb::core::shard::Refused;

use crate::state::*;

impl Sim {
    pub(crate) fn check_settled(&self) {
        let params = &self.setup.params;
        let mut active = vec![0u32; self.setup.backends];
        for &c in &self.live {
            let conn = &self.conns[c];
            assert_eq!(conn.stage, Stage::Live);
            if !conn.open() {
                continue;
            }
            assert!(
                conn.failed.is_empty() && !conn.aborted,
                "a failure or abort did not close the connection"
            );
            if let Some(attempt) = conn.attempts.last()
                && matches!(
                    attempt.state,
                    AttemptState::Pending | AttemptState::Connected
                )
            {
                active[attempt.backend.index()] += 1;
            }
            if conn.established_at.is_none() {
                assert!(
                    conn.attempts
                        .last()
                        .is_some_and(|a| a.state == AttemptState::Pending),
                    "connecting with no connect outstanding"
                );
                continue;
            }
            for dir in Dir::BOTH {
                let flow = &conn.flows[dir.index()];
                // Memory stays bounded: a receive stays armed only below the limit, so at most
                // the receipt that crossed it and one racing the cancel come on top.
                assert!(
                    flow.copy_len <= params.copy_high_water + 2 * params.full_receipt,
                    "{dir:?}: {} bytes in buffers",
                    flow.copy_len
                );
                assert!(flow.pipe_len <= params.splice_capacity);
                if let Some(op) = flow.recv
                    && !op.cancel
                {
                    assert!(
                        flow.held() < limit(params, op.via),
                        "{dir:?}: receive left armed with {} bytes held",
                        flow.held()
                    );
                }
                // Nothing stalls: an unfinished direction always has an operation out.
                assert!(
                    flow.shut || flow.recv.is_some() || flow.send.is_some(),
                    "{dir:?} stalled: {flow:?}"
                );
            }
        }
        assert_eq!(self.shard.len(), self.live.len(), "slot table out of step");
        let balancer = self.shard.balancer(0).expect("pool 0");
        for (i, expected) in active.iter().enumerate() {
            assert_eq!(
                balancer.active(BackendId(i as u32)),
                *expected,
                "active count of backend {i}"
            );
        }
    }

    pub(crate) fn check_end(&mut self) {
        assert_eq!(self.shard.len(), 0);
        assert!(self.shard.is_empty());
        assert!(self.shard.keys().is_empty());
        let balancer = self.shard.balancer(0).expect("pool 0");
        for i in 0..self.setup.backends {
            assert_eq!(
                balancer.active(BackendId(i as u32)),
                0,
                "backend {i} leaked"
            );
        }
        let stats = self.shard.stats();
        let accepted = self
            .conns
            .iter()
            .filter(|c| c.stage == Stage::Released)
            .count() as u64;
        assert_eq!(stats.accepted, accepted);
        assert_eq!(stats.refused, self.refused_full);
        assert_eq!(
            [
                stats.closed,
                stats.closed_no_backend,
                stats.closed_idle,
                stats.closed_failed
            ],
            self.expect_closed
        );
        assert_eq!(stats.closed, accepted, "every connection closed once");
        let resets = stats.resets;
        assert_eq!(
            [resets.client_reset, resets.backend_reset, resets.shutdown],
            self.expect_resets,
            "resets counted by cause"
        );
        assert_eq!(resets.total(), self.expect_resets.iter().sum::<u64>());
        assert_eq!(stats.stale_events, self.stale_delivered);
        assert_eq!(
            [stats.bytes_upstream, stats.bytes_downstream],
            self.expect_bytes
        );
        // Leftover timers of freed connections fire into nothing.
        self.shard
            .handle_timeouts(self.now + Duration::from_secs(3600));
        assert_eq!(self.shard.poll_action(), None);
        assert!(
            self.shard
                .accept(self.now, 1, (Ipv4Addr::LOCALHOST, 1).into(), usize::MAX)
                .is_err_and(|(why, io)| why == Refused::UnknownListener && io == usize::MAX)
        );
        self.cov.refused_full += self.refused_full;
    }
}
