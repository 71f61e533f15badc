use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::core::backend::{BackendInfo, BackendState};
use crate::core::balance::{Algorithm, PoolSnapshot};
use crate::core::slot::Slab;

fn pool(limits: &[Option<u32>]) -> PoolSnapshot {
    let backends = limits
        .iter()
        .enumerate()
        .map(|(i, &max_connections)| BackendInfo {
            name: format!("b{i}"),
            addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
            weight: 1,
            max_connections,
            send_proxy: None,
        })
        .collect();
    PoolSnapshot::new(Algorithm::RoundRobin, backends, Vec::new())
}

fn keys(n: usize) -> Vec<SlotKey> {
    let mut slab = Slab::new();
    (0..n).map(|i| slab.insert(i)).collect()
}

fn arrival(worker: usize, key: SlotKey, since: Instant) -> Arrival {
    Arrival {
        worker,
        key,
        listener: 0,
        client: SocketAddr::from(([127, 0, 0, 2], 40000)),
        since,
        eligible: Eligible::Any,
        bucket: None,
    }
}

#[test]
fn a_limit_holds_across_threads() {
    let snapshot = Arc::new(pool(&[Some(10)]));
    let room = Arc::new(Room::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (room, snapshot) = (Arc::clone(&room), Arc::clone(&snapshot));
            std::thread::spawn(move || {
                (0..100)
                    .filter(|_| room.try_take(&snapshot, BackendId(0)) == Slot::Taken)
                    .count()
            })
        })
        .collect();
    let taken: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(taken, 10);
    assert_eq!(room.in_use(BackendId(0)), 10);
}

#[test]
fn unlimited_backends_are_not_counted() {
    let snapshot = pool(&[None, Some(1)]);
    let room = Room::new(0);
    assert_eq!(room.try_take(&snapshot, BackendId(0)), Slot::Unlimited);
    assert_eq!(room.try_take(&snapshot, BackendId(1)), Slot::Taken);
    assert_eq!(room.try_take(&snapshot, BackendId(1)), Slot::Full);
    assert_eq!(room.in_use(BackendId(0)), 0);
}

#[test]
fn freed_slots_go_to_the_oldest_waiter_whatever_its_worker() {
    let t0 = Instant::now();
    let snapshot = pool(&[Some(1)]);
    let room = Room::new(0);
    assert_eq!(room.try_take(&snapshot, BackendId(0)), Slot::Taken);
    let keys = keys(6);
    let mut grants = Vec::new();
    for (i, &key) in keys.iter().enumerate() {
        let ticket = room
            .enqueue(arrival(i % 2, key, t0), 100, &snapshot, t0, &mut grants)
            .expect("room in the queue");
        assert_eq!(ticket, i as u64);
    }
    assert!(grants.is_empty(), "the only slot is taken");
    assert_eq!(room.len(), 6);
    let mut order = Vec::new();
    for _ in 0..6 {
        room.release(&snapshot, BackendId(0), t0, &mut grants);
        assert_eq!(grants.len(), 1, "one slot, one grant");
        let grant = grants.pop().expect("grant");
        assert_eq!((grant.backend, grant.counted), (Some(BackendId(0)), true));
        assert_eq!(grant.worker, grant.ticket as usize % 2);
        order.push(grant.key);
        assert_eq!(
            room.in_use(BackendId(0)),
            1,
            "the slot passed on, never freed"
        );
    }
    assert_eq!(order, keys);
    assert!(room.is_empty());
    room.release(&snapshot, BackendId(0), t0, &mut grants);
    assert_eq!(room.in_use(BackendId(0)), 0);
}

#[test]
fn a_full_queue_turns_clients_away_and_removal_makes_room() {
    let t0 = Instant::now();
    let snapshot = pool(&[Some(1)]);
    let room = Room::new(0);
    assert_eq!(room.try_take(&snapshot, BackendId(0)), Slot::Taken);
    let keys = keys(3);
    let mut grants = Vec::new();
    let first = room
        .enqueue(arrival(0, keys[0], t0), 2, &snapshot, t0, &mut grants)
        .expect("room");
    room.enqueue(arrival(0, keys[1], t0), 2, &snapshot, t0, &mut grants)
        .expect("room");
    assert_eq!(
        room.enqueue(arrival(0, keys[2], t0), 2, &snapshot, t0, &mut grants),
        Err(QueueFull)
    );
    assert!(room.remove(first));
    assert!(!room.remove(first), "gone already");
    let views = room.waiters();
    assert_eq!(views.len(), 1);
    assert_eq!((views[0].position, views[0].ticket), (1, 1));
}

#[test]
fn a_client_bound_to_a_full_backend_does_not_hold_back_the_others() {
    let t0 = Instant::now();
    let snapshot = pool(&[Some(1), Some(1)]);
    let room = Room::new(0);
    assert_eq!(room.try_take(&snapshot, BackendId(0)), Slot::Taken);
    assert_eq!(room.try_take(&snapshot, BackendId(1)), Slot::Taken);
    let keys = keys(2);
    let mut grants = Vec::new();
    let mut bound = arrival(0, keys[0], t0);
    bound.eligible = Eligible::listed(&[BackendId(0)]);
    room.enqueue(bound, 10, &snapshot, t0, &mut grants)
        .expect("room");
    room.enqueue(arrival(1, keys[1], t0), 10, &snapshot, t0, &mut grants)
        .expect("room");
    room.release(&snapshot, BackendId(1), t0, &mut grants);
    assert_eq!(grants.len(), 1);
    assert_eq!(
        (grants[0].key, grants[0].backend),
        (keys[1], Some(BackendId(1)))
    );
    grants.clear();
    room.release(&snapshot, BackendId(0), t0, &mut grants);
    assert_eq!(
        (grants[0].key, grants[0].backend),
        (keys[0], Some(BackendId(0)))
    );
}

#[test]
fn a_down_backend_is_never_granted() {
    let t0 = Instant::now();
    let snapshot = pool(&[Some(1), Some(1)]).with_state(BackendId(1), BackendState::Down);
    let room = Room::new(0);
    assert_eq!(room.try_take(&snapshot, BackendId(0)), Slot::Taken);
    let mut grants = Vec::new();
    room.enqueue(arrival(0, keys(1)[0], t0), 10, &snapshot, t0, &mut grants)
        .expect("room");
    assert!(grants.is_empty(), "backend 1 has room but is down");
    let up = snapshot.with_state(BackendId(1), BackendState::Up);
    room.dispatch(&up, t0, &mut grants);
    assert_eq!(grants[0].backend, Some(BackendId(1)));
}

#[test]
fn clients_held_by_a_rate_go_as_tokens_come_in_order() {
    let t0 = Instant::now();
    let snapshot = pool(&[None]);
    let room = Room::new(0);
    let bucket = Arc::new(Bucket::new(10, 1));
    assert!(bucket.try_take(t0), "the burst of one, spent");
    let keys = keys(3);
    let mut grants = Vec::new();
    for &key in &keys {
        let mut a = arrival(0, key, t0);
        a.bucket = Some(Arc::clone(&bucket));
        room.enqueue(a, 10, &snapshot, t0, &mut grants)
            .expect("room");
    }
    assert!(grants.is_empty());
    let next = room.retry_at().expect("a token is due");
    assert_eq!(next, t0 + Duration::from_millis(100));
    room.dispatch(&snapshot, next, &mut grants);
    assert_eq!(grants.len(), 1);
    assert_eq!((grants[0].key, grants[0].backend), (keys[0], None));
    room.dispatch(&snapshot, next + Duration::from_millis(50), &mut grants);
    assert_eq!(grants.len(), 1, "no token yet");
    // A burst of one: one client per 100 ms, however long the gap.
    room.dispatch(&snapshot, next + Duration::from_millis(250), &mut grants);
    room.dispatch(&snapshot, next + Duration::from_millis(350), &mut grants);
    let order: Vec<SlotKey> = grants.iter().map(|g| g.key).collect();
    assert_eq!(order, vec![keys[0], keys[1], keys[2]]);
    assert_eq!(room.retry_at(), None, "nobody waits");
}

#[test]
fn a_rate_held_listener_does_not_hold_back_another() {
    let t0 = Instant::now();
    let snapshot = pool(&[None]);
    let room = Room::new(0);
    let bucket = Arc::new(Bucket::new(1, 1));
    assert!(bucket.try_take(t0));
    let keys = keys(2);
    let mut grants = Vec::new();
    let mut rated = arrival(0, keys[0], t0);
    rated.bucket = Some(bucket);
    room.enqueue(rated, 10, &snapshot, t0, &mut grants)
        .expect("room");
    let mut other = arrival(0, keys[1], t0);
    other.listener = 1;
    room.enqueue(other, 10, &snapshot, t0, &mut grants)
        .expect("room");
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].key, keys[1]);
    assert_eq!(room.len(), 1);
}

#[test]
fn rooms_and_buckets_are_shared_by_index() {
    let capacity = Capacity::local();
    let a = capacity.room(2);
    assert!(Arc::ptr_eq(&a, &capacity.room(2)));
    assert_eq!(capacity.rooms().len(), 3);
    let b = capacity.bucket(1, 100, 10);
    assert!(Arc::ptr_eq(&b, &capacity.bucket(1, 100, 10)));
}

#[test]
fn a_queue_full_of_held_clients_still_lets_through_a_client_that_can_go() {
    let t0 = Instant::now();
    let snapshot = pool(&[None]);
    let room = Room::new(0);
    let bucket = Arc::new(Bucket::new(1, 1));
    assert!(bucket.try_take(t0));
    let keys = keys(3);
    let mut grants = Vec::new();
    for &key in &keys[..2] {
        let mut rated = arrival(0, key, t0);
        rated.bucket = Some(Arc::clone(&bucket));
        room.enqueue(rated, 2, &snapshot, t0, &mut grants)
            .expect("room");
    }
    assert!(grants.is_empty(), "both wait for a token");
    let mut other = arrival(0, keys[2], t0);
    other.listener = 1;
    assert!(
        room.enqueue(other, 2, &snapshot, t0, &mut grants).is_ok(),
        "a full queue refused a client whose listener has no rate"
    );
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].key, keys[2]);
    assert_eq!(room.len(), 2);
    let mut late = arrival(0, keys[0], t0);
    late.bucket = Some(bucket);
    assert_eq!(
        room.enqueue(late, 2, &snapshot, t0, &mut grants),
        Err(QueueFull),
        "one that cannot go is still turned away"
    );
    assert_eq!(room.len(), 2);
}
