//! How many Table requests one accepted command and one dispatched directive cost, per
//! mode (the numbers `docs/storage.md` states).

mod support;

use std::sync::Arc;

use lucius_core::engine::PublishOutcome;
use lucius_core::memory::{ManualClock, MemoryPublisher};
use lucius_core::testkit::command;
use lucius_core::{Engine, Partition, Store, TenantId, Timestamp};
use lucius_table::{Mode, RequestCounts};

const T0: Timestamp = Timestamp(1_709_596_800_000);

struct Costs {
    submit: RequestCounts,
    publish: RequestCounts,
    dispatch: RequestCounts,
}

async fn measure(mode: Mode) -> Costs {
    let store = support::store(mode).await;
    let bus = MemoryPublisher::new();
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(store.clone()) as Arc<dyn Store>,
        Arc::new(bus.clone()),
        Arc::new(clock.clone()),
    );
    // One accepted command: intake, then the inline publication of its first directive.
    let c0 = store.request_counts();
    let sub = engine.submit(command("acme", "count-1", 0)).await.unwrap();
    let c1 = store.request_counts();
    assert_eq!(
        engine.publish(&sub.to_publish[0]).await.unwrap(),
        PublishOutcome::Sent
    );
    let c2 = store.request_counts();
    // One directive left to the dispatcher (its inline publication never happened).
    engine.submit(command("acme", "count-2", 0)).await.unwrap();
    let partition = Partition::of(&TenantId::parse("acme").unwrap(), T0);
    let c3 = store.request_counts();
    let report = engine.dispatch(&partition).await.unwrap();
    let c4 = store.request_counts();
    assert_eq!((report.due, report.published), (1, 1), "{mode:?}");
    assert_eq!(bus.len(), 2);
    Costs {
        submit: c1.since(&c0),
        publish: c2.since(&c1),
        dispatch: c4.since(&c3),
    }
}

fn counts(
    insert: u64,
    update: u64,
    upsert: u64,
    delete: u64,
    get: u64,
    query: u64,
    batch: u64,
) -> RequestCounts {
    RequestCounts {
        insert,
        update,
        upsert,
        delete,
        get,
        query,
        batch,
        create_table: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_mode_round_trips() {
    let c = measure(Mode::Ledger).await;
    eprintln!(
        "ledger: submit {:?}\npublish {:?}\ndispatch {:?}",
        c.submit, c.publish, c.dispatch
    );
    // Intake: the ledger batch (claim, job, steps, directive) and the index batch.
    assert_eq!(c.submit, counts(0, 0, 0, 0, 0, 0, 2), "submit");
    assert_eq!(c.submit.total() + c.publish.total(), 5, "accepted command");
    // Publication: the engine loads the job once (one query: the job is one partition)
    // and plans its write on that read, one batch, then the directive's index row is
    // dropped.
    assert_eq!(c.publish, counts(0, 0, 0, 1, 0, 1, 1), "publish");
    // Dispatch: the index query, the ledger check of the candidate, then as publish.
    assert_eq!(c.dispatch, counts(0, 0, 0, 1, 1, 2, 1), "dispatch");
    assert_eq!(c.dispatch.total(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_mode_round_trips() {
    let c = measure(Mode::Table).await;
    eprintln!(
        "table: submit {:?}\npublish {:?}\ndispatch {:?}",
        c.submit, c.publish, c.dispatch
    );
    // Intake: claim, job, steps (one batch), index (one batch), directive.
    assert_eq!(c.submit, counts(3, 0, 0, 0, 0, 0, 2), "submit");
    assert_eq!(c.submit.total() + c.publish.total(), 11, "accepted command");
    // Publication: one load (get job + query steps + query outbox), then update step,
    // entry and job.
    assert_eq!(c.publish, counts(0, 3, 0, 0, 1, 2, 0), "publish");
    // Dispatch: one outbox query, then as publish.
    assert_eq!(c.dispatch, counts(0, 3, 0, 0, 1, 3, 0), "dispatch");
    assert_eq!(c.dispatch.total(), 7);
}
