//! Two shards sharing one capacity: limits across workers, FIFO grants posted between them,
//! queue overflow and timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::backend::{BackendInfo, BackendState};
use crate::core::balance::{Algorithm, PoolSnapshot};
use crate::core::capacity::{Capacity, Grant, Post, QueuePolicy, RatePolicy};
use crate::core::conn::{Action, CloseReason, ConnParams, Event, Mode};
use crate::core::shard::{ListenerPolicy, Shard};
use crate::core::slot::SlotKey;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Grants posted to other workers, to be delivered by the test.
#[derive(Debug, Default)]
struct Mailbox(Mutex<Vec<Grant>>);

impl Post for Arc<Mailbox> {
    fn post(&self, grant: Grant) {
        self.0.lock().expect("mailbox").push(grant);
    }
}

fn policy(queue_size: usize, admission: Option<RatePolicy>) -> ListenerPolicy {
    ListenerPolicy {
        pool: 0,
        candidates: 1,
        queue: QueuePolicy {
            size: queue_size,
            timeout: TIMEOUT,
            reset: true,
        },
        admission,
        affinity: None,
        inspect: None,
        params: ConnParams {
            connect_timeout: None,
            idle_timeout: Duration::from_secs(60),
            client_fin: Duration::from_secs(60),
            server_fin: Duration::from_secs(60),
            mode: Mode::Copy,
            copy_high_water: 1 << 16,
            splice_capacity: 1 << 16,
            full_receipt: 1 << 14,
            loopback_copy: false,
        },
    }
}

fn pool(limit: Option<u32>) -> Arc<PoolSnapshot> {
    Arc::new(PoolSnapshot::new(
        Algorithm::RoundRobin,
        vec![BackendInfo {
            name: "a".into(),
            addr: "127.0.0.1:1".parse().expect("literal"),
            weight: 1,
            max_connections: limit,
            send_proxy: None,
        }],
        vec![BackendState::Up],
    ))
}

struct Pair {
    shards: [Shard<()>; 2],
    mailbox: Arc<Mailbox>,
}

impl Pair {
    fn new(now: Instant, policy: ListenerPolicy, limit: Option<u32>) -> Self {
        let mailbox = Arc::new(Mailbox::default());
        let capacity = Arc::new(Capacity::new(Box::new(Arc::clone(&mailbox)), 1));
        let shard = |worker| {
            Shard::new(now, vec![policy.clone()], vec![pool(limit)], 1000, worker)
                .with_capacity(Arc::clone(&capacity))
        };
        Pair {
            shards: [shard(0), shard(1)],
            mailbox,
        }
    }

    fn accept(&mut self, now: Instant, worker: usize, port: u16) -> SlotKey {
        let client = SocketAddr::from(([127, 0, 0, 2], port));
        self.shards[worker]
            .accept(now, 0, client, ())
            .expect("room in the shard")
    }

    /// Deliver posted grants to their workers, and those that posts in turn.
    fn deliver(&mut self, now: Instant) {
        loop {
            let grants = std::mem::take(&mut *self.mailbox.0.lock().expect("mailbox"));
            if grants.is_empty() {
                return;
            }
            for grant in grants {
                self.shards[grant.worker].admit(now, grant);
            }
        }
    }
}

/// Every action the shard has now: connects by key, and closes by key.
fn actions(shard: &mut Shard<()>) -> (Vec<SlotKey>, Vec<(SlotKey, CloseReason, bool)>) {
    let (mut connects, mut closes) = (Vec::new(), Vec::new());
    while let Some((key, action)) = shard.poll_action() {
        match action {
            Action::Connect { .. } => connects.push(key),
            Action::Close { reason, reset } => closes.push((key, reason, reset)),
            _ => {}
        }
    }
    (connects, closes)
}

/// End connection `key` of `shard` (its backend reset it) and release it.
fn finish(shard: &mut Shard<()>, now: Instant, key: SlotKey) {
    let failure = crate::core::conn::Failure::Os(104);
    shard.handle_event(
        now,
        key,
        Event::Failed {
            side: crate::core::conn::Side::Backend,
            failure,
        },
    );
    actions(shard);
    shard.release(key).expect("current");
}

#[test]
fn one_slot_serves_clients_of_both_workers_in_arrival_order() {
    let t0 = Instant::now();
    let mut pair = Pair::new(t0, policy(100, None), Some(1));
    let first = pair.accept(t0, 0, 1);
    assert_eq!(
        actions(&mut pair.shards[0]).0,
        vec![first],
        "the slot was free"
    );
    let mut queued = Vec::new();
    for i in 0..6 {
        let worker = (i + 1) % 2;
        let key = pair.accept(t0, worker, 2 + i as u16);
        let (connects, closes) = actions(&mut pair.shards[worker]);
        assert!(connects.is_empty() && closes.is_empty(), "client {i} waits");
        queued.push((worker, key));
    }
    assert_eq!(pair.shards[0].queue(0).len(), 6);
    assert_eq!(pair.shards[0].waiting(), &[3]);
    let mut holder = (0, first);
    for (i, &expected) in queued.iter().enumerate() {
        let now = t0 + Duration::from_millis(10 * (i as u64 + 1));
        finish(&mut pair.shards[holder.0], now, holder.1);
        pair.deliver(now);
        let mut admitted = Vec::new();
        for worker in 0..2 {
            for key in actions(&mut pair.shards[worker]).0 {
                admitted.push((worker, key));
            }
        }
        assert_eq!(
            admitted,
            vec![expected],
            "grant {i} went to the oldest client"
        );
        holder = expected;
    }
    let stats = pair.shards[1].listener_counters()[0];
    assert_eq!((stats.queued, stats.admitted), (3, 3));
    assert_eq!(stats.queue_wait.count(), 3);
}

#[test]
fn a_full_queue_and_a_long_wait_turn_clients_away() {
    let t0 = Instant::now();
    let mut pair = Pair::new(t0, policy(1, None), Some(1));
    pair.accept(t0, 0, 1);
    actions(&mut pair.shards[0]);
    let waiting = pair.accept(t0, 1, 2);
    assert!(actions(&mut pair.shards[1]).1.is_empty());
    let overflow = pair.accept(t0, 0, 3);
    assert_eq!(
        actions(&mut pair.shards[0]).1,
        vec![(overflow, CloseReason::QueueFull, true)]
    );
    let shard = &mut pair.shards[1];
    shard.handle_timeouts(t0 + TIMEOUT - Duration::from_millis(1));
    assert!(actions(shard).1.is_empty(), "not yet");
    let late = t0 + TIMEOUT;
    assert!(shard.next_timeout().is_some_and(|at| at <= late));
    shard.handle_timeouts(late);
    assert_eq!(
        actions(shard).1,
        vec![(waiting, CloseReason::QueueTimeout, true)]
    );
    assert!(shard.queue(0).is_empty());
    assert_eq!(shard.waiting(), &[0]);
}

#[test]
fn a_grant_for_a_client_gone_passes_its_slot_on() {
    let t0 = Instant::now();
    let mut pair = Pair::new(t0, policy(10, None), Some(1));
    let first = pair.accept(t0, 0, 1);
    actions(&mut pair.shards[0]);
    let gone = pair.accept(t0, 1, 2);
    let next = pair.accept(t0, 0, 3);
    // The slot frees and is posted to worker 1, whose client closes before it arrives.
    finish(&mut pair.shards[0], t0, first);
    pair.shards[1].abort_all();
    actions(&mut pair.shards[1]);
    pair.shards[1].release(gone).expect("current");
    pair.deliver(t0);
    assert_eq!(actions(&mut pair.shards[0]).0, vec![next]);
}

#[test]
fn a_rate_lets_a_burst_through_then_one_client_per_token() {
    let t0 = Instant::now();
    let rate = RatePolicy { rate: 10, burst: 2 };
    let mut pair = Pair::new(t0, policy(100, Some(rate)), None);
    let keys: Vec<SlotKey> = (0..5).map(|i| pair.accept(t0, 0, i)).collect();
    assert_eq!(actions(&mut pair.shards[0]).0.len(), 2, "the burst");
    let shard = &mut pair.shards[0];
    let due = shard.next_timeout().expect("a token is due");
    assert_eq!(due, t0 + Duration::from_millis(100));
    shard.handle_timeouts(due);
    assert_eq!(actions(shard).0, vec![keys[2]]);
    shard.handle_timeouts(due + Duration::from_millis(100));
    assert_eq!(actions(shard).0, vec![keys[3]]);
}
