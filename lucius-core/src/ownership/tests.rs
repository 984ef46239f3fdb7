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
async fn a_restarted_process_with_the_same_id_waits_for_the_expiry_and_gets_a_new_epoch() {
    // Two processes named "d" (a pod restarted under the same name, or pid 1 in two
    // containers): the second neither shares the first's epoch (that would disable fencing
    // between them) nor takes the lease while the first may still publish under it.
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let p = parts(1);
    let mut first = owner("d", &store, &clock);
    first.rebalance(&p).await.unwrap();
    assert_eq!(first.fences()[0].epoch, 1);
    clock.advance(Millis(1_000));
    let mut second = owner("d", &store, &clock);
    let r = second.rebalance(&p).await.unwrap();
    assert!(r.acquired.is_empty() && second.fences().is_empty(), "{r:?}");
    // The first process dies; once its lease expires the second takes it at epoch 2.
    clock.advance(LEASE);
    let r = second.rebalance(&p).await.unwrap();
    assert_eq!(r.acquired, p);
    assert_eq!(second.fences()[0].epoch, 2);
    // Had the first merely paused, it finds the lease lost and holds nothing.
    let r = first.rebalance(&p).await.unwrap();
    assert!(r.lost.contains(&p[0]), "{r:?}");
    assert!(first.fences().is_empty());
}

#[tokio::test]
async fn a_round_reports_members_and_shares_and_drops_what_is_no_longer_a_candidate() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let mut a = owner("a", &store, &clock);
    let mut b = owner("b", &store, &clock);
    assert_eq!(a.id(), "a");
    let p = parts(4);
    let r = a.rebalance(&p).await.unwrap();
    assert_eq!((r.members, r.target, r.acquired.len()), (1, 4, 4));
    let r = b.rebalance(&p).await.unwrap();
    assert_eq!((r.members, r.target), (2, 2));
    // Only two partitions remain candidates: a gives up the other two at once.
    let r = a.rebalance(&p[..2]).await.unwrap();
    assert_eq!((r.members, r.target), (2, 1));
    let kept = held(&a);
    assert!(!kept.contains(&p[2]) && !kept.contains(&p[3]), "{kept:?}");
    assert!(
        r.released.contains(&p[2]) && r.released.contains(&p[3]),
        "{r:?}"
    );
}

#[tokio::test]
async fn partitions_that_are_no_longer_candidates_are_released_even_within_the_share() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let mut a = owner("a", &store, &clock);
    let p = parts(4);
    a.rebalance(&p).await.unwrap();
    // Alone, with a share of 2: the two that stay candidates are kept, whatever their
    // order, and the two others released.
    let r = a.rebalance(&p[2..]).await.unwrap();
    assert_eq!(held(&a), p[2..].iter().cloned().collect::<BTreeSet<_>>());
    assert!(
        r.released.contains(&p[0]) && r.released.contains(&p[1]),
        "{r:?}"
    );
}

/// A lease store whose writes fail while `fail` is set: as conflicts (another writer won)
/// when `conflict` is set too, otherwise with an unknown outcome.
struct FlakyLeases {
    inner: MemoryStore,
    fail: std::sync::atomic::AtomicBool,
    conflict: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl LeaseStore for FlakyLeases {
    async fn lease(&self, p: &Partition) -> Result<Option<Lease>, StoreError> {
        self.inner.lease(p).await
    }
    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.inner.leases().await
    }
    async fn put_lease(&self, lease: Lease) -> Result<Lease, StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            if self.conflict.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::conflict("the lease row changed"));
            }
            return Err(StoreError::transient("timed out: outcome unknown"));
        }
        self.inner.put_lease(lease).await
    }
    async fn announce(&self, member: &str, until: Timestamp) -> Result<(), StoreError> {
        self.inner.announce(member, until).await
    }
    async fn members(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.inner.members().await
    }
}

#[tokio::test]
async fn a_renewal_with_an_unknown_outcome_keeps_the_lease_and_reports_the_error() {
    let clock = ManualClock::new(T0);
    let leases = Arc::new(FlakyLeases {
        inner: MemoryStore::new(),
        fail: std::sync::atomic::AtomicBool::new(false),
        conflict: std::sync::atomic::AtomicBool::new(false),
    });
    let mut a = PartitionOwner::new(
        "a",
        leases.clone(),
        Arc::new(clock.clone()),
        OwnershipConfig::default(),
    );
    let p = parts(1);
    a.rebalance(&p).await.unwrap();
    leases.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    clock.advance(Millis(1_000));
    assert!(a.rebalance(&p).await.is_err());
    assert!(held(&a).contains(&p[0]), "not counted as lost");
}

#[tokio::test]
async fn a_renewal_that_loses_a_race_counts_the_lease_as_lost() {
    let clock = ManualClock::new(T0);
    let leases = Arc::new(FlakyLeases {
        inner: MemoryStore::new(),
        fail: std::sync::atomic::AtomicBool::new(false),
        conflict: std::sync::atomic::AtomicBool::new(true),
    });
    let mut a = PartitionOwner::new(
        "a",
        leases.clone(),
        Arc::new(clock.clone()),
        OwnershipConfig::default(),
    );
    let p = parts(1);
    a.rebalance(&p).await.unwrap();
    leases.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    clock.advance(Millis(1_000));
    let r = a.rebalance(&p).await.unwrap();
    assert_eq!(r.lost, p);
    assert!(held(&a).is_empty());
}

#[tokio::test]
async fn an_acquisition_that_loses_a_race_moves_on_and_one_with_an_unknown_outcome_fails() {
    let clock = ManualClock::new(T0);
    let leases = Arc::new(FlakyLeases {
        inner: MemoryStore::new(),
        fail: std::sync::atomic::AtomicBool::new(true),
        conflict: std::sync::atomic::AtomicBool::new(true),
    });
    let mut a = PartitionOwner::new(
        "a",
        leases.clone(),
        Arc::new(clock.clone()),
        OwnershipConfig::default(),
    );
    let p = parts(3);
    // Every insert loses its race: the round goes on and ends with nothing held.
    let r = a.rebalance(&p).await.unwrap();
    assert!(r.acquired.is_empty() && held(&a).is_empty(), "{r:?}");
    // An insert whose outcome is unknown stops the round with the error.
    leases
        .conflict
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(a.rebalance(&p).await.is_err());
}

#[test]
fn dispatchers_start_their_acquisitions_at_spread_offsets() {
    let names: Vec<String> = (0..16).map(|i| format!("dispatcher-{i}")).collect();
    for n in [1, 2, 7, 100] {
        let offsets: BTreeSet<usize> = names.iter().map(|m| offset(m, n)).collect();
        assert!(offsets.iter().all(|o| *o < n), "{n}: {offsets:?}");
        assert!(offsets.len() >= n.min(16) / 2, "{n}: {offsets:?}");
    }
    assert_eq!(offset("dispatcher-3", 100), offset("dispatcher-3", 100));
}

#[tokio::test]
async fn an_owner_shows_its_name_and_the_partitions_it_holds_when_debugged() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let mut o = owner("d7", &store, &clock);
    let ps = parts(2);
    o.rebalance(&ps).await.unwrap();
    let shown = format!("{o:?}");
    assert!(shown.starts_with("PartitionOwner {"), "{shown}");
    assert!(shown.contains("\"d7\""), "{shown}");
    for p in &ps {
        assert!(
            shown.contains(&format!("{p:?}")),
            "{p} missing from {shown}"
        );
    }
}
