//! The engine publishing through the Service Bus publisher to the fake endpoint: where
//! the outbox entry ends for a success, a transient and a permanent failure (design §2).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fake, Fault, KEY, KEY_NAME};
use lucius_core::engine::PublishOutcome;
use lucius_core::testkit::command;
use lucius_core::{Engine, JobStatus, Millis, OutboxEntry, OutboxStatus, StepStatus};
use lucius_servicebus::ServiceBusPublisher;

struct Run {
    engine: Engine,
    clock: lucius_core::memory::ManualClock,
    outcome: PublishOutcome,
    entry: OutboxEntry,
    step: StepStatus,
    job: JobStatus,
}

async fn submit_and_publish(conn: &str, adapter_timeout: Duration, engine_timeout: Millis) -> Run {
    let publisher = ServiceBusPublisher::new(conn, adapter_timeout).unwrap();
    let (engine, _store, clock) = common::engine(Arc::new(publisher), engine_timeout);
    let out = engine.submit(command("acme", "key-1", 0)).await.unwrap();
    let [id] = out.to_publish.as_slice() else {
        panic!("one directive to publish, got {:?}", out.to_publish)
    };
    let outcome = engine.publish(id).await.unwrap();
    let rec = engine.job(&out.value.job_id).await.unwrap();
    Run {
        entry: rec.entry(id).unwrap().clone(),
        step: rec.steps[0].status,
        job: rec.job.status,
        engine,
        clock,
        outcome,
    }
}

#[tokio::test]
async fn a_published_directive_is_sent_and_its_step_initiated() {
    let fake = Fake::start().await;
    let run = submit_and_publish(&fake.connection(), Duration::from_secs(5), Millis(5_000)).await;
    assert_eq!(run.outcome, PublishOutcome::Sent);
    assert_eq!(run.entry.status, OutboxStatus::Sent);
    assert_eq!(run.entry.publish_attempts, 0);
    assert_eq!(run.step, StepStatus::Initiated);
    assert_eq!(run.job, JobStatus::InProgress);
    let msgs = fake.ready("lucius.ocr");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].broker["MessageId"], run.entry.id.as_str());
    assert_eq!(msgs[0].broker["SessionId"], run.entry.job_id.as_str());
}

#[tokio::test]
async fn a_server_error_leaves_the_entry_pending_and_the_retry_sends_it() {
    let fake = Fake::start().await;
    fake.fault("/messages", Fault::Status(500));
    let run = submit_and_publish(&fake.connection(), Duration::from_secs(5), Millis(5_000)).await;
    assert_eq!(run.outcome, PublishOutcome::Retrying);
    assert_eq!(run.entry.status, OutboxStatus::Pending);
    assert_eq!(run.entry.publish_attempts, 1);
    assert!(run.entry.last_error.as_deref().unwrap().contains("500"));
    assert!(run.entry.next_attempt_at > run.engine.now());
    assert_eq!(run.step, StepStatus::Queued);
    assert_eq!(run.job, JobStatus::Accepted);

    // When the backoff has passed, the retry loop publishes it.
    run.clock.advance(Millis(3_600_000));
    let report = run.engine.retry_pending().await.unwrap();
    let rec = run.engine.job(&run.entry.job_id).await.unwrap();
    assert_eq!(
        rec.entry(&run.entry.id).unwrap().status,
        OutboxStatus::Sent,
        "{report:?}"
    );
    assert_eq!(fake.ready("lucius.ocr").len(), 1);
}

#[tokio::test]
async fn throttling_is_transient() {
    let fake = Fake::start().await;
    fake.fault("/messages", Fault::Status(429));
    let run = submit_and_publish(&fake.connection(), Duration::from_secs(5), Millis(5_000)).await;
    assert_eq!(run.outcome, PublishOutcome::Retrying);
    assert_eq!(run.entry.status, OutboxStatus::Pending);
    assert_eq!(run.entry.publish_attempts, 1);
}

#[tokio::test]
async fn a_refused_signature_makes_the_entry_dead() {
    let fake = Fake::start().await;
    let conn = fake.connection_with(KEY_NAME, "d3Jvbmc=");
    let run = submit_and_publish(&conn, Duration::from_secs(5), Millis(5_000)).await;
    assert_eq!(run.outcome, PublishOutcome::Dead);
    assert_eq!(run.entry.status, OutboxStatus::Dead);
    assert_eq!(run.entry.publish_attempts, 1);
    assert!(run.entry.last_error.as_deref().unwrap().contains("401"));
    assert_eq!(run.step, StepStatus::Queued);
    assert_eq!(fake.seen()[0].status, 401);
}

#[tokio::test]
async fn a_missing_entity_makes_the_entry_dead() {
    let fake = Fake::start().await;
    fake.fault("/messages", Fault::Status(404));
    let run = submit_and_publish(&fake.connection(), Duration::from_secs(5), Millis(5_000)).await;
    assert_eq!(run.entry.status, OutboxStatus::Dead);
    assert!(run.entry.last_error.as_deref().unwrap().contains("404"));
}

#[tokio::test]
async fn a_slow_broker_is_cut_by_the_adapter_timeout() {
    let fake = Fake::start().await;
    fake.fault("/messages", Fault::Delay(Duration::from_secs(3)));
    let run = submit_and_publish(
        &fake.connection(),
        Duration::from_millis(200),
        Millis(5_000),
    )
    .await;
    assert_eq!(run.outcome, PublishOutcome::Retrying);
    assert_eq!(run.entry.status, OutboxStatus::Pending);
    assert_eq!(run.entry.publish_attempts, 1);
    assert!(run
        .entry
        .last_error
        .as_deref()
        .unwrap()
        .contains("timed out"));
}

#[tokio::test]
async fn a_slow_broker_is_cut_by_the_engine_timeout_too() {
    let fake = Fake::start().await;
    fake.fault("/messages", Fault::Delay(Duration::from_secs(3)));
    let run = submit_and_publish(&fake.connection(), Duration::from_secs(10), Millis(200)).await;
    assert_eq!(run.outcome, PublishOutcome::Retrying);
    assert_eq!(run.entry.publish_attempts, 1);
    assert!(run
        .entry
        .last_error
        .as_deref()
        .unwrap()
        .contains("timed out after 200 ms"));
}

#[tokio::test]
async fn connection_refused_leaves_the_entry_pending() {
    let port = common::refused_port().await;
    let conn = format!(
        "Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY};UseDevelopmentEmulator=true"
    );
    let run = submit_and_publish(&conn, Duration::from_secs(5), Millis(5_000)).await;
    assert_eq!(run.outcome, PublishOutcome::Retrying);
    assert_eq!(run.entry.status, OutboxStatus::Pending);
    assert_eq!(run.entry.publish_attempts, 1);
}

#[tokio::test]
async fn transient_failures_end_dead_after_max_attempts() {
    let fake = Fake::start().await;
    for _ in 0..3 {
        fake.fault("/messages", Fault::Status(503));
    }
    let run = submit_and_publish(&fake.connection(), Duration::from_secs(5), Millis(5_000)).await;
    assert_eq!(run.entry.publish_attempts, 1);
    for _ in 0..2 {
        run.clock.advance(Millis(3_600_000));
        run.engine.retry_pending().await.unwrap();
    }
    let rec = run.engine.job(&run.entry.job_id).await.unwrap();
    let entry = rec.entry(&run.entry.id).unwrap();
    assert_eq!(entry.publish_attempts, 3);
    assert_eq!(entry.status, OutboxStatus::Dead);
    assert!(fake.ready("lucius.ocr").is_empty());
}
