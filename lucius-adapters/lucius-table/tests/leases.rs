//! Partition leases on Azurite, in both modes: the core lease checks, then several
//! `PartitionOwner`s (one `TableStore` connection each, as separate processes would have)
//! over the same tables with a manual clock — fair spread, failover of a killed dispatcher
//! within two lease periods, fencing of a paused one, nothing lost — and the request cost
//! of ownership that `docs/storage.md` states. Mirrors `lucius-core/src/ownership/tests.rs`.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use lucius_core::engine::EngineError;
use lucius_core::memory::{ManualClock, MemoryPublisher};
use lucius_core::ownership::{OwnershipConfig, PartitionOwner};
use lucius_core::testkit::command;
use lucius_core::testkit::conformance::run_lease_checks;
use lucius_core::{
    Clock, Engine, EngineConfig, LeaseStore, Millis, OutboxQuery, OutboxStatus, Partition, Store,
    Timestamp,
};
use lucius_table::{Mode, RequestCounts, TableConfig, TableStore, MEMBER_RETENTION};

const T0: Timestamp = Timestamp(1_709_596_800_000);
const LEASE: Millis = Millis(30_000);
/// The round interval: a third of the lease, the longest the binaries allow.
const ROUND: Millis = Millis(LEASE.0 / 3);
const MODES: [Mode; 2] = [Mode::Table, Mode::Ledger];

fn parts(n: usize) -> Vec<Partition> {
    (0..n)
        .map(|i| Partition::parse(&format!("t{i}#202403")).unwrap())
        .collect()
}

fn owner(name: &str, store: &TableStore, clock: &ManualClock) -> PartitionOwner {
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

/// `n` connections to the same fresh tables.
async fn connections(config: &TableConfig, n: usize) -> Vec<TableStore> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(support::connect_with(config.clone()).await);
    }
    v
}

async fn owners(
    names: &[&str],
    config: &TableConfig,
    clock: &ManualClock,
) -> (Vec<PartitionOwner>, Vec<TableStore>) {
    let stores = connections(config, names.len()).await;
    let owners = names
        .iter()
        .zip(&stores)
        .map(|(n, s)| owner(n, s, clock))
        .collect();
    (owners, stores)
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
        clock.advance(ROUND);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_pass_the_lease_checks() {
    for mode in MODES {
        run_lease_checks(Arc::new(support::store(mode).await)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_rows_change_only_under_their_etag() {
    let store = support::store(Mode::Ledger).await;
    let p = parts(1).remove(0);
    let a = lucius_core::Lease::acquire(None, &p, "a", LEASE, T0).unwrap();
    let a = store.put_lease(a).await.unwrap();
    let renewed = a.renew("a", 1, LEASE, T0.plus(ROUND)).unwrap();
    store.put_lease(renewed.clone()).await.unwrap();
    // The first revision is stale now: a second writer holding it loses.
    let stale = a.release("a", 1, T0.plus(ROUND)).unwrap();
    let err = store.put_lease(stale).await.unwrap_err();
    assert_eq!(err.kind, lucius_core::StoreErrorKind::Conflict, "{err}");
    let now = store.lease(&p).await.unwrap().unwrap();
    assert_eq!(now.expires_at, renewed.expires_at);
    // A released row keeps its epoch and has no owner.
    let released = store
        .put_lease(now.release("a", 1, T0.plus(ROUND)).unwrap())
        .await
        .unwrap();
    let back = store.lease(&p).await.unwrap().unwrap();
    assert_eq!(back, released);
    assert_eq!((back.owner, back.epoch), (None, 1));
    // Dispatcher ids with characters keys forbid still announce and list.
    store.announce("host/1#x?'%", T0).await.unwrap();
    assert_eq!(
        store.members().await.unwrap(),
        vec![("host/1#x?'%".to_owned(), T0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_rows_of_long_gone_dispatchers_are_removed() {
    let store = support::store(Mode::Table).await;
    store.announce("gone-1", T0).await.unwrap();
    store
        .announce("recent-2", T0.plus(Millis(3_600_000)))
        .await
        .unwrap();
    let later = T0.plus(Millis(MEMBER_RETENTION.0 + 1));
    store.announce("live-3", later).await.unwrap();
    let c0 = store.request_counts();
    let mut m = store.members().await.unwrap();
    m.sort();
    let c1 = store.request_counts();
    assert_eq!(
        m,
        vec![
            ("live-3".to_owned(), later),
            ("recent-2".to_owned(), T0.plus(Millis(3_600_000)))
        ]
    );
    assert_eq!(
        c1.since(&c0),
        RequestCounts {
            delete: 1,
            ..counts(0, 0, 0, 0, 1)
        }
    );
    assert_eq!(store.members().await.unwrap().len(), 2);
    assert_eq!(store.request_counts().since(&c1).total(), 1, "removed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_dispatchers_spread_nine_partitions_evenly() {
    for mode in MODES {
        let config = support::config(mode);
        let clock = ManualClock::new(T0);
        let candidates = parts(9);
        let (mut owners, _stores) = owners(&["a", "b", "c"], &config, &clock).await;
        rounds(&mut owners, &candidates, &clock, 4).await;
        for o in &owners {
            assert_eq!(held(o).len(), 3, "{mode:?}: {} holds {:?}", o.id(), held(o));
        }
        assert_exclusive_and_complete(&owners, &candidates);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_spread_and_a_release_is_taken_at_once() {
    for mode in MODES {
        let config = support::config(mode);
        let clock = ManualClock::new(T0);
        let candidates = parts(4);
        let (mut owners, _stores) = owners(&["a", "b"], &config, &clock).await;
        rounds(&mut owners, &candidates, &clock, 3).await;
        assert_eq!(held(&owners[0]).len(), 2, "{mode:?}");
        assert_eq!(held(&owners[1]).len(), 2, "{mode:?}");
        let mut b = owners.pop().unwrap();
        assert_eq!(b.release_all().await.len(), 2, "{mode:?}");
        owners[0].rebalance(&candidates).await.unwrap();
        assert_eq!(held(&owners[0]).len(), 4, "{mode:?}");
    }
}

/// Kills the last of `names` (dropped without releasing) once they spread `m` partitions,
/// and checks the survivors take its partitions within two lease periods, each with its
/// epoch raised by one.
async fn failover(mode: Mode, names: &[&str], m: usize) {
    let config = support::config(mode);
    let clock = ManualClock::new(T0);
    let candidates = parts(m);
    let (mut owners, stores) = owners(names, &config, &clock).await;
    rounds(&mut owners, &candidates, &clock, 4).await;
    assert_exclusive_and_complete(&owners, &candidates);
    let dead = owners.pop().unwrap(); // dropped without releasing
    let orphaned: Vec<_> = dead.fences();
    assert_eq!(orphaned.len(), m / names.len(), "{mode:?}");
    let died_at = clock.now();
    let mut taken_at = None;
    for _ in 0..12 {
        for o in owners.iter_mut() {
            o.rebalance(&candidates).await.unwrap();
        }
        if owners.iter().map(|o| held(o).len()).sum::<usize>() == m {
            taken_at = Some(clock.now());
            break;
        }
        clock.advance(ROUND);
    }
    let taken_at = taken_at.expect("the orphaned partitions were taken over");
    let took = taken_at.since(died_at);
    assert!(took <= Millis(2 * LEASE.0), "{mode:?}: took {took:?}");
    assert_exclusive_and_complete(&owners, &candidates);
    let dead_name = names[names.len() - 1];
    for f in orphaned {
        let l = stores[0].lease(&f.partition).await.unwrap().unwrap();
        assert_eq!(l.epoch, f.epoch + 1, "{mode:?}: {}", f.partition);
        assert!(l.owner.is_some() && l.owner.as_deref() != Some(dead_name));
    }
    eprintln!(
        "{mode:?}: {} dispatchers, {m} partitions: taken over {} ms after the death",
        names.len(),
        took.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dispatchers_partitions_are_taken_within_two_lease_periods() {
    for mode in MODES {
        failover(mode, &["a", "b", "c"], 9).await;
        failover(mode, &["a", "b"], 4).await;
    }
}

/// Three dispatchers with their own engines and buses over one set of tables; `c` is
/// paused past its lease, `a` and `b` take its partitions, `c` wakes and publishes
/// nothing, and every pending entry is published exactly once.
async fn fencing_and_no_loss(mode: Mode) {
    let config = support::config(mode);
    let clock = ManualClock::new(T0);
    let candidates = parts(6);
    let names = ["a", "b", "c"];
    let (mut owners, stores) = owners(&names, &config, &clock).await;
    let buses: Vec<MemoryPublisher> = names.iter().map(|_| MemoryPublisher::new()).collect();
    let engines: Vec<Engine> = stores
        .iter()
        .zip(&buses)
        .map(|(s, b)| {
            // The manual clock skips the publish timeout at each publication: keep it
            // short so publications do not eat the lease.
            Engine::new(
                Arc::new(s.clone()) as Arc<dyn Store>,
                Arc::new(b.clone()),
                Arc::new(clock.clone()),
            )
            .with_config(EngineConfig {
                publish_timeout: Millis(10),
                ..EngineConfig::default()
            })
        })
        .collect();
    // Two pending directives per partition, never published by intake.
    let mut submitted = BTreeSet::new();
    for (i, _) in candidates.iter().enumerate() {
        for k in 0..2 {
            let s = engines[0]
                .submit(command(&format!("t{i}"), &format!("k{k}"), 0))
                .await
                .unwrap();
            submitted.insert(s.to_publish[0].clone());
        }
    }
    rounds(&mut owners, &candidates, &clock, 4).await;
    assert_exclusive_and_complete(&owners, &candidates);
    let paused = owners.pop().unwrap();
    let stale = paused.fences();
    assert_eq!(stale.len(), 2, "{mode:?}");

    // c is paused (GC, SIGSTOP, network partition) past its lease while a and b go on
    // with their rounds and take its partitions over.
    let paused_at = clock.now();
    rounds(&mut owners, &candidates, &clock, 4).await;
    assert!(clock.now().since(paused_at) > LEASE);
    assert_exclusive_and_complete(&owners, &candidates);

    // c wakes up and resumes the round it had started: it must stop at once.
    for f in &stale {
        let err = engines[2].dispatch_fenced(f, &stores[2]).await.unwrap_err();
        assert!(
            matches!(err, EngineError::Fenced { epoch, .. } if epoch == f.epoch),
            "{mode:?}: {err}"
        );
    }
    assert!(
        buses[2].is_empty(),
        "{mode:?}: the fenced dispatcher published"
    );

    // a and b go on as the loop does: a round, then a dispatch of each partition held,
    // stamping their epochs.
    let mut dispatched = 0;
    for _ in 0..4 {
        for (i, o) in owners.iter_mut().enumerate() {
            let r = o.rebalance(&candidates).await.unwrap();
            for f in &r.held {
                let d = engines[i].dispatch_fenced(f, &stores[i]).await.unwrap();
                assert_eq!(d.published, d.due, "{mode:?}: {d:?}");
                dispatched += d.published;
            }
        }
        clock.advance(ROUND);
    }
    assert_eq!(dispatched, submitted.len(), "{mode:?}");
    let mut published = BTreeSet::new();
    for bus in &buses[..2] {
        for d in bus.drain() {
            assert!(published.insert(d.directive_id.clone()), "{mode:?}: twice");
        }
    }
    assert_eq!(
        published,
        submitted.iter().map(|id| id.shared()).collect(),
        "{mode:?}: every pending entry published once"
    );
    let held_epochs: Vec<_> = owners.iter().flat_map(PartitionOwner::fences).collect();
    for f in held_epochs {
        let q = |status| OutboxQuery {
            status: Some(status),
            partition: Some(f.partition.clone()),
            due_by: None,
            after: None,
            limit: 10,
        };
        assert!(stores[0]
            .outbox(&q(OutboxStatus::Pending))
            .await
            .unwrap()
            .is_empty());
        let sent = stores[0].outbox(&q(OutboxStatus::Sent)).await.unwrap();
        assert_eq!(sent.len(), 2, "{mode:?}");
        assert!(
            sent.iter().all(|e| e.fence == f.epoch),
            "{mode:?}: {} stamped {:?}, holder epoch {}",
            f.partition,
            sent.iter().map(|e| e.fence).collect::<Vec<_>>(),
            f.epoch
        );
    }
    // The stale fences were of the partitions whose epoch moved on.
    for f in &stale {
        let l = stores[0].lease(&f.partition).await.unwrap().unwrap();
        assert_eq!(l.epoch, f.epoch + 1, "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_dispatcher_that_lost_its_lease_publishes_nothing_and_nothing_is_lost() {
    for mode in MODES {
        fencing_and_no_loss(mode).await;
    }
}

/// The bin's idle schedule: the round interval, doubled per idle poll up to the ceiling.
struct IdleSchedule {
    next: Timestamp,
    wait: Millis,
}

const IDLE_CEILING: Millis = Millis(60_000);

/// Request costs of ownership, measured from the store's counters (the figures of the
/// "Leases" section of `docs/storage.md`).
async fn costs(mode: Mode) -> (RequestCounts, RequestCounts, RequestCounts, RequestCounts) {
    let store = support::store(mode).await;
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(store.clone()) as Arc<dyn Store>,
        Arc::new(MemoryPublisher::new()),
        Arc::new(clock.clone()),
    );
    let candidates = parts(3);
    let mut o = owner("a", &store, &clock);
    // First round: takes 3 leases (inserts).
    let c0 = store.request_counts();
    o.rebalance(&candidates).await.unwrap();
    let first = store.request_counts().since(&c0);
    assert_eq!(held(&o).len(), 3);
    // A steady round: renews 3 leases (If-Match updates).
    clock.advance(ROUND);
    let c1 = store.request_counts();
    o.rebalance(&candidates).await.unwrap();
    let steady = store.request_counts().since(&c1);
    // One poll of an idle partition (inside the lease's trusted window).
    let f = o.fences().remove(0);
    let c2 = store.request_counts();
    let r = engine.dispatch_fenced(&f, &store).await.unwrap();
    assert_eq!(r.due, 0);
    let poll = store.request_counts().since(&c2);
    // The sweep the bin's loop runs after each poll, on the same idle partition.
    let c_sweep = store.request_counts();
    engine.sweep_partition(&f.partition).await.unwrap();
    let sweep = store.request_counts().since(&c_sweep);
    assert_eq!(
        sweep,
        counts(0, 0, 0, 0, 1),
        "{mode:?}: idle sweep {sweep:?}"
    );

    // One hour of a dispatcher holding one idle partition: a round every ROUND, the
    // partition polled on the bin's backoff schedule. A partition nobody leased yet.
    let one = &parts(4)[3..];
    let mut o = owner("solo", &store, &clock);
    o.rebalance(one).await.unwrap(); // takes it (an insert), before counting
    clock.advance(ROUND);
    let start = clock.now();
    let mut sched = IdleSchedule {
        next: start,
        wait: ROUND,
    };
    let mut polls = 0;
    let c3 = store.request_counts();
    while clock.now().since(start) < Millis(3_600_000) {
        let r = o.rebalance(one).await.unwrap();
        assert_eq!(r.held.len(), 1);
        if clock.now() >= sched.next {
            let d = engine.dispatch_fenced(&r.held[0], &store).await.unwrap();
            assert_eq!(d.due, 0);
            polls += 1;
            sched.next = clock.now().plus(sched.wait);
            sched.wait = Millis((sched.wait.0 * 2).min(IDLE_CEILING.0));
        }
        clock.advance(ROUND);
    }
    let hour = store.request_counts().since(&c3);
    eprintln!("{mode:?}: {polls} idle polls in one hour");
    assert_eq!(hour.query, 2 * 360 + polls, "{mode:?}: {hour:?}");
    (first, steady, poll, hour)
}

fn counts(insert: u64, update: u64, upsert: u64, get: u64, query: u64) -> RequestCounts {
    RequestCounts {
        insert,
        update,
        upsert,
        get,
        query,
        ..RequestCounts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_request_costs() {
    for mode in MODES {
        let (first, steady, poll, hour) = costs(mode).await;
        eprintln!(
            "{mode:?}: first round (3 leases taken) {first:?}\nsteady round (3 renewed) \
             {steady:?}\nidle poll {poll:?}\none hour, one idle partition {hour:?} = {}",
            hour.total()
        );
        // A round: announce (upsert) + members (query) + leases (query) + one write per
        // lease taken (insert) or renewed (If-Match update).
        assert_eq!(first, counts(3, 0, 1, 0, 2), "{mode:?}");
        assert_eq!(steady, counts(0, 3, 1, 0, 2), "{mode:?}");
        // An idle partition's poll: the one dispatch query, nothing else.
        assert_eq!(poll, counts(0, 0, 0, 0, 1), "{mode:?}");
        // One hour at a round per 10 s: 360 rounds of 4 requests, plus the idle polls.
        assert_eq!(hour.upsert, 360, "{mode:?}");
        assert_eq!(hour.update, 360, "{mode:?}");
        assert_eq!(hour.insert + hour.get + hour.delete + hour.batch, 0);
    }
}
