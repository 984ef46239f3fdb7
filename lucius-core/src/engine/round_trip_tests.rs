//! Engine tests of the store round trips: the dispatch grace that keeps dispatchers off
//! an entry its writer is publishing.

use std::sync::Arc;

use super::*;
use crate::memory::{ManualClock, MemoryPublisher, MemoryStore};
use crate::outbox::OutboxStatus;
use crate::testkit::command;

const T0: Timestamp = Timestamp(1_709_596_800_000);

struct Rig {
    engine: Engine,
    bus: MemoryPublisher,
    clock: ManualClock,
}

fn rig() -> Rig {
    let bus = MemoryPublisher::new();
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(bus.clone()),
        Arc::new(clock.clone()),
    );
    Rig { engine, bus, clock }
}

async fn submit(r: &Rig, key: &str) -> Outcome<Submission> {
    r.engine.submit(command("acme", key, 0)).await.unwrap()
}

#[tokio::test]
async fn dispatchers_leave_a_new_entry_to_its_inline_publication_for_the_grace() {
    let r = rig();
    let grace = r.engine.config().dispatch_grace;
    assert_eq!(grace, Millis(5_000), "the documented default");
    let sub = submit(&r, "k").await;
    let p = sub.value.partition.clone();
    r.clock.advance(Millis(grace.0 - 1));
    for d in [
        r.engine.dispatch(&p).await.unwrap(),
        r.engine.retry_pending().await.unwrap(),
    ] {
        assert_eq!((d.due, d.published), (0, 0), "younger than the grace");
    }
    assert!(r.bus.is_empty());
    r.clock.advance(Millis(1));
    let d = r.engine.dispatch(&p).await.unwrap();
    assert_eq!((d.due, d.published), (1, 1), "due once the grace is over");
    assert_eq!(r.bus.drain().len(), 1);
    // The orchestrator's retry loop waits the same grace.
    let later = submit(&r, "k2").await;
    assert_eq!(r.engine.retry_pending().await.unwrap().due, 0);
    r.clock.advance(grace);
    let d = r.engine.retry_pending().await.unwrap();
    assert_eq!((d.due, d.published), (1, 1));
    let rec = r.engine.job(&later.value.job_id).await.unwrap();
    assert_eq!(rec.outbox[0].status, OutboxStatus::Sent);
}

#[tokio::test]
async fn a_fenced_dispatcher_waits_the_grace_too() {
    use crate::lease::Fence;
    let r = rig();
    let sub = submit(&r, "k").await;
    let leases = MemoryStore::new();
    let fence = Fence {
        partition: sub.value.partition.clone(),
        owner: "d1".into(),
        epoch: 1,
        valid_until: T0.plus(Millis(60_000)),
        skew_margin: Millis(0),
    };
    let d = r.engine.dispatch_fenced(&fence, &leases).await.unwrap();
    assert_eq!((d.due, d.published), (0, 0));
    r.clock.advance(r.engine.config().dispatch_grace);
    let d = r.engine.dispatch_fenced(&fence, &leases).await.unwrap();
    assert_eq!((d.due, d.published), (1, 1));
}

#[tokio::test]
async fn pulling_workers_get_a_new_directive_at_once() {
    let r = rig();
    submit(&r, "k").await;
    // No dispatcher runs in pull mode and nothing publishes inline: no grace.
    let got = r.engine.claim_due(&PullFilter::any(), 5).await.unwrap();
    assert_eq!(got.len(), 1);
}
