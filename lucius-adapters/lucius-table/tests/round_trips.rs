//! How many Table requests one accepted command and one dispatched directive cost, per
//! mode (the numbers `docs/storage.md` states).

mod support;

use std::sync::Arc;

use lucius_core::engine::PublishOutcome;
use lucius_core::memory::{ManualClock, MemoryPublisher};
use lucius_core::testkit::command;
use lucius_core::{Engine, Millis, Partition, Store, TenantId, Timestamp};
use lucius_table::{Mode, RequestCounts};

const T0: Timestamp = Timestamp(1_709_596_800_000);

struct Costs {
    submit: RequestCounts,
    publish: RequestCounts,
    dispatch: RequestCounts,
    round: RequestCounts,
    cleanup: RequestCounts,
}

/// Directives one dispatch round publishes in [`measure`].
const ROUND: u64 = 100;

async fn measure(mode: Mode) -> Costs {
    let store = support::store(mode).await;
    let bus = MemoryPublisher::new();
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(store.clone()) as Arc<dyn Store>,
        Arc::new(bus.clone()),
        Arc::new(clock.clone()),
    );
    // The first command of a partition in a process also registers the partition (one
    // upsert); the costs below are those of every later one.
    let first = engine.submit(command("acme", "count-0", 0)).await.unwrap();
    engine.publish(&first.to_publish[0]).await.unwrap();
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
    clock.advance(Millis::from_secs(60));
    let c3 = store.request_counts();
    let report = engine.dispatch(&partition).await.unwrap();
    let c4 = store.request_counts();
    assert_eq!((report.due, report.published), (1, 1), "{mode:?}");
    assert_eq!(bus.len(), 3);
    // A round of ROUND directives, then the next round, which finds none.
    for k in 0..ROUND {
        engine
            .submit(command("acme", &format!("round-{k}"), 0))
            .await
            .unwrap();
    }
    clock.advance(Millis::from_secs(60));
    let c5 = store.request_counts();
    let report = engine.dispatch(&partition).await.unwrap();
    let c6 = store.request_counts();
    assert_eq!(report.published as u64, ROUND, "{mode:?}: {report:?}");
    let report = engine.dispatch(&partition).await.unwrap();
    let c7 = store.request_counts();
    assert_eq!(report.due, 0, "{mode:?}: {report:?}");
    Costs {
        submit: c1.since(&c0),
        publish: c2.since(&c1),
        dispatch: c4.since(&c3),
        round: c6.since(&c5),
        cleanup: c7.since(&c6),
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
        "ledger: submit {:?}\npublish {:?}\ndispatch {:?}\nround of {ROUND} {:?}\nnext round {:?}",
        c.submit, c.publish, c.dispatch, c.round, c.cleanup
    );
    // Intake: the ledger batch (claim, job, steps, directive) and the index batch (live
    // row, queue row, and the deletes of queue rows of entries sent since).
    assert_eq!(c.submit, counts(0, 0, 0, 0, 0, 0, 2), "submit");
    // Publication: planned on the rows intake wrote (their revisions came back with
    // them), so no load: one batch. The queue row's delete waits for the next request to
    // the partition.
    assert_eq!(c.publish, counts(0, 0, 0, 0, 0, 0, 1), "publish");
    assert_eq!(c.submit.total() + c.publish.total(), 3, "accepted command");
    // Dispatch: the queue query, a load (one query: the job is one partition), a batch.
    assert_eq!(c.dispatch, counts(0, 0, 0, 0, 0, 2, 1), "dispatch");
    // A round: one queue query, then a load and a batch per directive; the queue rows of
    // the directives sent go in one batch once a hundred wait.
    assert_eq!(
        c.round,
        counts(0, 0, 0, 0, 0, 1 + ROUND, ROUND + 1),
        "round"
    );
    assert_eq!(c.cleanup, counts(0, 0, 0, 0, 0, 1, 0), "next round");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_mode_round_trips() {
    let c = measure(Mode::Table).await;
    eprintln!(
        "table: submit {:?}\npublish {:?}\ndispatch {:?}\nround of {ROUND} {:?}\nnext round {:?}",
        c.submit, c.publish, c.dispatch, c.round, c.cleanup
    );
    // Intake: claim, job, steps (one batch), index (one batch: live row, queue row, the
    // deletes of queue rows of entries sent since), directive.
    assert_eq!(c.submit, counts(3, 0, 0, 0, 0, 0, 2), "submit");
    // Publication: planned on the rows intake wrote, so no load: update step, entry and
    // job.
    assert_eq!(c.publish, counts(0, 3, 0, 0, 0, 0, 0), "publish");
    assert_eq!(c.submit.total() + c.publish.total(), 8, "accepted command");
    // Dispatch: one queue query, a load (get job + query steps + query outbox), then the
    // three updates.
    assert_eq!(c.dispatch, counts(0, 3, 0, 0, 1, 3, 0), "dispatch");
    assert_eq!(
        c.round,
        counts(0, 3 * ROUND, 0, 0, ROUND, 1 + 2 * ROUND, 1),
        "round"
    );
    assert_eq!(c.cleanup, counts(0, 0, 0, 0, 0, 1, 0), "next round");
}
