//! Unit tests of the inspect phase's intake: a connection keeps the inspect policy it was
//! accepted with.

use super::*;
use crate::core::backend::{BackendInfo, BackendState};
use crate::core::balance::{Algorithm, PoolSnapshot};
use crate::core::conn::{Action, ConnParams, Mode};
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

fn policy(accept_proxy: bool) -> ListenerPolicy {
    let idle = Duration::from_secs(60);
    ListenerPolicy {
        pool: 0,
        candidates: 1,
        queue: Default::default(),
        admission: None,
        affinity: None,
        inspect: accept_proxy.then(|| {
            Arc::new(Inspect {
                policy: InspectPolicy {
                    accept_proxy: true,
                    timeout: TIMEOUT,
                    sni: None,
                },
                routes: Vec::new(),
            })
        }),
        params: ConnParams {
            connect_timeout: None,
            idle_timeout: idle,
            client_fin: idle,
            server_fin: idle,
            mode: Mode::Copy,
            copy_high_water: 1 << 16,
            splice_capacity: 1 << 16,
            full_receipt: 1 << 14,
            loopback_copy: false,
        },
    }
}

fn shard(now: Instant) -> Shard<()> {
    let pool = Arc::new(PoolSnapshot::new(
        Algorithm::RoundRobin,
        vec![BackendInfo {
            name: "a".into(),
            addr: "127.0.0.1:1".parse().expect("literal address"),
            weight: 1,
            max_connections: None,
            send_proxy: None,
        }],
        vec![BackendState::Up],
    ));
    Shard::new(now, vec![policy(true)], vec![pool], 16, 1)
}

fn actions(shard: &mut Shard<()>) -> Vec<Action> {
    std::iter::from_fn(|| shard.poll_action().map(|(_, a)| a)).collect()
}

const HEADER: &[u8] = b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 80\r\n";

/// A client half-way through its PROXY header when a reload drops `accept_proxy`: before,
/// its next read found no policy, was dropped on the floor, and the connection hung until its
/// idle timeout. It now finishes with the policy it was accepted with.
#[test]
fn a_reload_mid_header_does_not_strand_the_client() {
    let now = Instant::now();
    let mut shard = shard(now);
    let key = shard
        .accept(now, 0, "127.0.0.2:1000".parse().expect("literal"), ())
        .expect("room");
    assert_eq!(actions(&mut shard), vec![Action::Inspect]);
    assert!(shard.inspected(now, key, &HEADER[..10]));
    assert_eq!(actions(&mut shard), vec![Action::Inspect]);

    shard.set_listeners(vec![policy(false)]);
    assert!(shard.inspected(now, key, &HEADER[10..]));
    let next = actions(&mut shard);
    assert!(
        matches!(next.as_slice(), [Action::Connect { .. }]),
        "expected a connect, got {next:?}"
    );
    assert_eq!(
        shard.client_addr(key),
        Some("192.0.2.7:4711".parse().expect("literal")),
        "the header's client, read by the policy the client came with"
    );
}

/// The same client, when the reload also removed its listener: it is closed, not left.
#[test]
fn a_client_whose_listener_went_away_mid_read_is_closed() {
    let now = Instant::now();
    let mut shard = shard(now);
    let key = shard
        .accept(now, 0, "127.0.0.2:1000".parse().expect("literal"), ())
        .expect("room");
    let _ = actions(&mut shard);
    shard.set_listeners(Vec::new());
    assert!(shard.inspected(now, key, HEADER));
    let next = actions(&mut shard);
    assert!(
        matches!(
            next.as_slice(),
            [Action::Close {
                reason: CloseReason::Local,
                ..
            }]
        ),
        "expected a close, got {next:?}"
    );
}

/// A broken header is still refused by the policy the client came with after a reload that
/// turned `accept_proxy` off.
#[test]
fn a_broken_header_is_refused_by_the_policy_it_was_read_with() {
    let now = Instant::now();
    let mut shard = shard(now);
    let key = shard
        .accept(now, 0, "127.0.0.2:1000".parse().expect("literal"), ())
        .expect("room");
    let _ = actions(&mut shard);
    shard.set_listeners(vec![policy(false)]);
    assert!(shard.inspected(now, key, b"PROXY TCP4 nonsense\n"));
    let next = actions(&mut shard);
    assert!(
        matches!(
            next.as_slice(),
            [Action::Close {
                reason: CloseReason::Inspect(Refusal::ProxyHeader),
                ..
            }]
        ),
        "expected a refusal, got {next:?}"
    );
}
