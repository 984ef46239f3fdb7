//! Ownership tests on the memory lease store with a manual clock: fair spread, failover
//! within two lease periods, release on shutdown, and fencing of a paused dispatcher.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::engine::publish::Holder;
use crate::engine::EngineError;
use crate::memory::{ManualClock, MemoryPublisher, MemoryStore};
use crate::outbox::OutboxStatus;
use crate::ports::Store;
use crate::testkit::command;
use crate::Engine;

const T0: Timestamp = Timestamp(1_709_596_800_000);
const LEASE: Millis = Millis(30_000);

fn parts(n: usize) -> Vec<Partition> {
    (0..n)
        .map(|i| Partition::parse(&format!("t{i}#202403")).unwrap())
        .collect()
}

fn owner(name: &str, store: &MemoryStore, clock: &ManualClock) -> PartitionOwner {
    PartitionOwner::new(
        name,
        Arc::new(store.clone()),
        Arc::new(clock.clone()),
        OwnershipConfig {
            lease_duration: LEASE,
            skew_margin: Millis(2_000),
        },
    )
}

async fn rounds(
    owners: &mut [PartitionOwner],
    candidates: &[Partition],
    clock: &ManualClock,
    n: usize,
) {
    for _ in 0..n {
        for o in owners.iter_mut() {
            o.rebalance(candidates).await.unwrap();
        }
        clock.advance(Millis(LEASE.0 / 3));
    }
}

fn held(o: &PartitionOwner) -> BTreeSet<Partition> {
    o.fences().into_iter().map(|f| f.partition).collect()
}

fn assert_exclusive_and_complete(owners: &[PartitionOwner], candidates: &[Partition]) {
    let mut all = BTreeSet::new();
    for o in owners {
        for p in held(o) {
            assert!(all.insert(p.clone()), "{p} held twice");
        }
    }
    assert_eq!(
        all,
        candidates.iter().cloned().collect(),
        "every partition owned"
    );
}

#[tokio::test]
async fn three_dispatchers_spread_nine_partitions_evenly() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let candidates = parts(9);
    let mut owners: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| owner(n, &store, &clock))
        .collect();
    rounds(&mut owners, &candidates, &clock, 4).await;
    for o in &owners {
        assert_eq!(held(o).len(), 3, "{} holds {:?}", o.id(), held(o));
    }
    assert_exclusive_and_complete(&owners, &candidates);
}

#[tokio::test]
async fn a_dead_dispatchers_partitions_are_taken_within_two_lease_periods() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let candidates = parts(6);
    let mut owners: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| owner(n, &store, &clock))
        .collect();
    rounds(&mut owners, &candidates, &clock, 4).await;
    let dead = owners.pop().unwrap(); // dropped without releasing
    let orphaned = held(&dead);
    let dead_epochs: Vec<u64> = dead.fences().iter().map(|f| f.epoch).collect();
    assert_eq!(orphaned.len(), 2);
    let died_at = clock.now();
    let mut taken_at = None;
    for _ in 0..12 {
        for o in owners.iter_mut() {
            o.rebalance(&candidates).await.unwrap();
        }
        if owners.iter().map(|o| held(o).len()).sum::<usize>() == 6 {
            taken_at = Some(clock.now());
            break;
        }
        clock.advance(Millis(LEASE.0 / 3));
    }
    let taken_at = taken_at.expect("the orphaned partitions were taken over");
    assert!(
        taken_at.since(died_at) <= Millis(2 * LEASE.0),
        "took {:?}",
        taken_at.since(died_at)
    );
    assert_exclusive_and_complete(&owners, &candidates);
    // Each takeover raised the epoch.
    for (p, old) in orphaned.into_iter().zip(dead_epochs) {
        let l = store.lease(&p).await.unwrap().unwrap();
        assert_eq!(l.epoch, old + 1, "{p}");
        assert_ne!(l.owner.as_deref(), Some("c"));
    }
}

#[tokio::test]
async fn released_partitions_are_taken_at_once() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let candidates = parts(4);
    let mut owners: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| owner(n, &store, &clock))
        .collect();
    rounds(&mut owners, &candidates, &clock, 3).await;
    let mut b = owners.pop().unwrap();
    assert_eq!(b.release_all().await.len(), 2);
    // No waiting for expiry: a's next round takes everything.
    owners[0].rebalance(&candidates).await.unwrap();
    assert_eq!(held(&owners[0]).len(), 4);
}

#[tokio::test]
async fn a_paused_dispatcher_that_lost_its_lease_publishes_nothing() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let bus_a = MemoryPublisher::new();
    let bus_b = MemoryPublisher::new();
    let engine = |bus: &MemoryPublisher| {
        Engine::new(
            Arc::new(store.clone()),
            Arc::new(bus.clone()),
            Arc::new(clock.clone()),
        )
    };
    let (ea, eb) = (engine(&bus_a), engine(&bus_b));
    // Two pending directives in one partition, never published by intake.
    let s1 = ea.submit(command("acme", "k1", 0)).await.unwrap();
    ea.submit(command("acme", "k2", 0)).await.unwrap();
    let p = s1.value.partition.clone();
    let candidates = vec![p.clone()];

    let mut a = owner("a", &store, &clock);
    a.rebalance(&candidates).await.unwrap();
    let fence_a = a.fences().pop().unwrap();
    assert_eq!(fence_a.epoch, 1);

    // a is paused (GC, SIGSTOP, partition) past its lease; b takes over.
    clock.advance(Millis(LEASE.0 + 1));
    let mut b = owner("b", &store, &clock);
    b.rebalance(&candidates).await.unwrap();
    let fence_b = b.fences().pop().unwrap();
    assert_eq!(fence_b.epoch, 2);

    // a wakes up and resumes the round it had started: it must stop at once.
    let err = ea.dispatch_fenced(&fence_a, &store).await.unwrap_err();
    assert!(matches!(err, EngineError::Fenced { epoch: 1, .. }), "{err}");
    assert!(bus_a.is_empty(), "the fenced dispatcher published");

    // b dispatches both, stamping its epoch.
    let r = eb.dispatch_fenced(&fence_b, &store).await.unwrap();
    assert_eq!(r.published, 2);
    let sent = store
        .outbox(&crate::ports::OutboxQuery {
            status: Some(OutboxStatus::Sent),
            partition: Some(p.clone()),
            due_by: None,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter().all(|e| e.fence == 2),
        "{:?}",
        sent.iter().map(|e| e.fence).collect::<Vec<_>>()
    );
    assert_eq!(bus_b.len(), 2);
}

#[tokio::test]
async fn a_stale_fence_cannot_write_an_entry_a_newer_epoch_stamped() {
    use crate::engine::PublishOutcome;
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(MemoryPublisher::new()),
        Arc::new(clock.clone()),
    );
    let s = engine.submit(command("acme", "k1", 0)).await.unwrap();
    let id = s.to_publish[0].clone();
    // Stamp the entry with epoch 5 as if a newer owner had written it.
    let rec = engine.job(&s.value.job_id).await.unwrap();
    let mut e = rec.outbox[0].clone();
    e.fence = 5;
    store
        .commit(crate::record::Changes {
            outbox: vec![e],
            ..Default::default()
        })
        .await
        .unwrap();
    let old = Fence {
        partition: s.value.partition.clone(),
        owner: "old".into(),
        epoch: 4,
        valid_until: Timestamp(i64::MAX),
        skew_margin: Millis(0),
    };
    let mut h = Holder {
        fence: old.clone(),
        leases: &store,
    };
    let err = engine.publish_as(&id, Some(&mut h)).await.unwrap_err();
    assert!(matches!(err, EngineError::Fenced { epoch: 4, .. }));
    let mut h = Holder {
        fence: Fence { epoch: 5, ..old },
        leases: &store,
    };
    assert_eq!(
        engine.publish_as(&id, Some(&mut h)).await.unwrap(),
        PublishOutcome::Sent
    );
}

#[tokio::test]
async fn a_restarted_process_with_the_same_id_gets_a_new_epoch() {
    // Two processes named "d" (a pod restarted under the same name, or pid 1 in two
    // containers): the second must not share the first's epoch, or fencing between them
    // would be disabled.
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let p = parts(1);
    let mut first = owner("d", &store, &clock);
    first.rebalance(&p).await.unwrap();
    assert_eq!(first.fences()[0].epoch, 1);
    clock.advance(Millis(1_000));
    let mut second = owner("d", &store, &clock);
    let r = second.rebalance(&p).await.unwrap();
    assert_eq!(r.acquired, p);
    assert_eq!(second.fences()[0].epoch, 2);
    // The first process finds its lease lost at its next round and holds nothing under
    // the old epoch.
    clock.advance(Millis(1_000));
    let r = first.rebalance(&p).await.unwrap();
    assert!(r.lost.contains(&p[0]), "{r:?}");
    assert!(first.fences().iter().all(|f| f.epoch != 1));
}
