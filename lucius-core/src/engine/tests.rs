//! Engine tests: the flow over the memory adapters, and mocked ports where the test is
//! about the calls the engine makes.

use std::sync::Arc;

use async_trait::async_trait;
use mockall::mock;
use mockall::predicate::always;
use serde_json::json;

use super::*;
use crate::directive::Directive;
use crate::job::JobStatus;
use crate::memory::{Fault, ManualClock, MemoryPublisher, MemoryStore};
use crate::outbox::OutboxStatus;
use crate::ports::{CreateOutcome, OutboxQuery, PublishError, Publisher, Store};
use crate::record::NewJob;
use crate::step::{Failure, StepStatus};
use crate::testkit::{command, HangingPublisher};
use crate::time::Millis;

mock! {
    pub Pub {}
    #[async_trait]
    impl Publisher for Pub {
        async fn publish(&self, directive: &Directive) -> Result<(), PublishError>;
    }
}

mock! {
    pub St {}
    #[async_trait]
    impl Store for St {
        async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError>;
        async fn load_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError>;
        async fn commit(&self, changes: Changes) -> Result<Changes, StoreError>;
        async fn outbox(&self, query: &OutboxQuery) -> Result<Vec<crate::outbox::OutboxEntry>, StoreError>;
        async fn active_jobs(&self, partition: &crate::ids::Partition, after: Option<JobId>, limit: usize) -> Result<Vec<JobId>, StoreError>;
        async fn partitions(&self) -> Result<Vec<crate::ids::Partition>, StoreError>;
        async fn retire_partition(&self, partition: &crate::ids::Partition) -> Result<bool, StoreError>;
        async fn ended_jobs(&self, ended_by: Timestamp, limit: usize) -> Result<Vec<crate::ports::EndedJob>, StoreError>;
        async fn purge_job(&self, id: &JobId, revision: &crate::revision::Revision) -> Result<(), StoreError>;
        async fn ping(&self) -> Result<(), StoreError>;
    }
}

const T0: Timestamp = Timestamp(1_709_596_800_000);

struct Rig {
    engine: Engine,
    store: MemoryStore,
    bus: MemoryPublisher,
    clock: ManualClock,
}

fn rig() -> Rig {
    let store = MemoryStore::new();
    let bus = MemoryPublisher::new();
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(bus.clone()),
        Arc::new(clock.clone()),
    );
    Rig {
        engine,
        store,
        bus,
        clock,
    }
}

fn call<'a>(job: &'a JobId, step: &'a str, attempt: u32) -> WorkerCall<'a> {
    WorkerCall {
        job_id: job,
        step_id: step,
        attempt,
        worker_id: Some("w1"),
    }
}

#[tokio::test]
async fn a_job_runs_to_success_through_every_step() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    assert!(sub.value.created);
    assert_eq!(r.engine.publish_all(&sub.to_publish).await, 1);
    let job = sub.value.job_id;
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::InProgress);
    assert_eq!(rec.steps[0].status, StepStatus::Initiated);
    for (i, step) in ["ocr", "embed", "index"].into_iter().enumerate() {
        let d = r.bus.drain();
        assert_eq!(d.len(), 1, "one directive for {step}");
        assert_eq!(&*d[0].step_id, step);
        assert_eq!(d[0].attempt, 1);
        if i > 0 {
            assert_eq!(
                d[0].input,
                Some(json!({"from": i - 1}).into()),
                "previous result is the input"
            );
        }
        r.engine.ack(call(&job, step, 1)).await.unwrap();
        r.clock.advance(Millis(10));
        let out = r
            .engine
            .complete(call(&job, step, 1), json!({"from": i}))
            .await
            .unwrap();
        r.engine.publish_all(&out.to_publish).await;
    }
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Succeeded);
    assert!(rec.steps.iter().all(|s| s.status == StepStatus::Succeeded));
    assert!(rec.outbox.iter().all(|e| e.status == OutboxStatus::Sent));
    // A repeated completion is answered, not refused, and changes nothing.
    let again = r
        .engine
        .complete(call(&job, "index", 1), json!({"from": 2}))
        .await
        .unwrap();
    assert!(again.to_publish.is_empty());
}

#[tokio::test]
async fn idempotent_replay_and_conflict() {
    let r = rig();
    let a = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let b = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    assert_eq!(a.value.job_id, b.value.job_id);
    assert!(!b.value.created);
    let err = r.engine.submit(command("acme", "k", 1)).await.unwrap_err();
    assert!(
        matches!(err, EngineError::IdempotencyConflict { .. }),
        "{err}"
    );
    assert_eq!(r.store.job_count(), 1);
}

#[tokio::test]
async fn publish_timeout_keeps_the_entry_pending() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(HangingPublisher),
        Arc::new(clock.clone()),
    );
    let sub = engine.submit(command("acme", "k", 0)).await.unwrap();
    let out = engine.publish(&sub.to_publish[0]).await.unwrap();
    assert_eq!(out, PublishOutcome::Retrying);
    let rec = engine.job(&sub.value.job_id).await.unwrap();
    let e = &rec.outbox[0];
    assert_eq!((e.status, e.publish_attempts), (OutboxStatus::Pending, 1));
    assert!(
        e.last_error.as_deref().unwrap_or("").contains("timed out"),
        "{:?}",
        e.last_error
    );
    assert!(e.next_attempt_at >= clock.now().plus(Millis(30_000)));
    assert_eq!(rec.steps[0].status, StepStatus::Queued);
    assert_eq!(rec.job.status, JobStatus::Accepted);
}

#[tokio::test]
async fn publish_failures_are_counted_then_dead_and_permanent_is_dead_at_once() {
    let mut p = MockPub::new();
    p.expect_publish()
        .with(always())
        .times(3)
        .returning(|_| Err(PublishError::Transient("503".into())));
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(p),
        Arc::new(clock.clone()),
    );
    let sub = engine.submit(command("acme", "k", 0)).await.unwrap();
    let id = sub.to_publish[0].clone();
    assert_eq!(engine.publish(&id).await.unwrap(), PublishOutcome::Retrying);
    // Backed off: not published again before it is due (the mock allows three calls).
    assert_eq!(engine.publish(&id).await.unwrap(), PublishOutcome::NotDue);
    clock.advance(Millis::from_secs(37));
    assert_eq!(engine.publish(&id).await.unwrap(), PublishOutcome::Retrying);
    clock.advance(Millis::from_secs(37));
    assert_eq!(engine.publish(&id).await.unwrap(), PublishOutcome::Dead);
    assert_eq!(
        engine.publish(&id).await.unwrap(),
        PublishOutcome::NotPending
    );

    let mut p = MockPub::new();
    p.expect_publish()
        .times(1)
        .returning(|_| Err(PublishError::Permanent("401".into())));
    let engine = Engine::new(Arc::new(MemoryStore::new()), Arc::new(p), Arc::new(clock));
    let sub = engine.submit(command("acme", "k", 0)).await.unwrap();
    assert_eq!(
        engine.publish(&sub.to_publish[0]).await.unwrap(),
        PublishOutcome::Dead
    );
}

#[tokio::test]
async fn the_directive_published_carries_the_outbox_id() {
    let mut p = MockPub::new();
    p.expect_publish()
        .withf(|d: &Directive| {
            d.directive_id.ends_with(".0.1") && &*d.step_id == "ocr" && d.attempt == 1
        })
        .times(1)
        .returning(|_| Ok(()));
    let engine = Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(p),
        Arc::new(ManualClock::new(T0)),
    );
    let sub = engine.submit(command("acme", "k", 0)).await.unwrap();
    assert_eq!(
        engine.publish(&sub.to_publish[0]).await.unwrap(),
        PublishOutcome::Sent
    );
}

#[tokio::test]
async fn lost_races_are_recomputed_then_reported_as_contention() {
    let real = MemoryStore::new();
    let new = crate::testkit::new_job("acme", "k", 0, T0);
    real.create_job(new.clone()).await.unwrap();
    let rec = real.load_job(&new.job.id).await.unwrap();
    let mut st = MockSt::new();
    st.expect_load_job().returning(move |_| Ok(rec.clone()));
    st.expect_commit()
        .times(3)
        .returning(|_| Err(StoreError::conflict("raced")));
    let engine = Engine::new(
        Arc::new(st),
        Arc::new(MemoryPublisher::new()),
        Arc::new(ManualClock::new(T0)),
    )
    .with_config(EngineConfig {
        conflict_retries: 2,
        ..EngineConfig::default()
    });
    let err = engine.ack(call(&new.job.id, "ocr", 1)).await.unwrap_err();
    assert_eq!(err, EngineError::Contention(new.job.id.clone()));
}

#[tokio::test]
async fn a_partition_sweep_visits_every_live_job_not_just_the_first_batch() {
    // Seven jobs, pages of three: a sweep that read only the first page would leave four
    // lost ACKs unretried for ever.
    let mut r = rig();
    r.engine = r.engine.with_config(EngineConfig {
        batch_size: 3,
        ..EngineConfig::default()
    });
    let mut jobs = Vec::new();
    for k in 0..7 {
        let sub = r
            .engine
            .submit(command("acme", &format!("k{k}"), 0))
            .await
            .unwrap();
        r.engine.publish_all(&sub.to_publish).await;
        jobs.push(sub.value);
    }
    r.clock.advance(Millis::from_secs(31));
    let out = r.engine.sweep_partition(&jobs[0].partition).await.unwrap();
    assert_eq!((out.value.jobs, out.value.retried), (7, 7));
    for j in &jobs {
        let rec = r.engine.job(&j.job_id).await.unwrap();
        assert_eq!(rec.steps[0].attempt, 2, "{}", j.job_id);
    }
}

#[tokio::test]
async fn missing_acks_are_retried_then_fail_the_job() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    r.engine.publish_all(&sub.to_publish).await;
    let job = sub.value.job_id;
    for attempt in 1..=3u32 {
        let rec = r.engine.job(&job).await.unwrap();
        assert_eq!(rec.steps[0].attempt, attempt);
        // Not due yet: nothing happens.
        assert_eq!(r.engine.sweep_job(&job).await.unwrap().value.retried, 0);
        r.clock.advance(Millis::from_secs(31));
        let out = r.engine.sweep_job(&job).await.unwrap();
        if attempt < 3 {
            assert_eq!(out.value.retried, 1);
            assert_eq!(out.to_publish.len(), 1);
            r.engine.publish_all(&out.to_publish).await;
        } else {
            assert_eq!(out.value.failed, 1);
        }
    }
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Failed);
    assert_eq!(rec.steps[0].status, StepStatus::Failed);
    assert_eq!(rec.steps[1].status, StepStatus::Cancelled);
    // The late worker of attempt 1 is refused as stale.
    let err = r.engine.ack(call(&job, "ocr", 1)).await.unwrap_err();
    assert!(matches!(err, EngineError::Transition(_)), "{err}");
}

#[tokio::test]
async fn expired_leases_are_retried_and_stale_workers_refused() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    r.engine.publish_all(&sub.to_publish).await;
    let job = sub.value.job_id;
    r.engine.ack(call(&job, "ocr", 1)).await.unwrap();
    r.clock.advance(Millis::from_secs(121));
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(out.value.retried, 1);
    let err = r
        .engine
        .complete(call(&job, "ocr", 1), json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EngineError::Transition(TransitionError::StaleAttempt { current: 2, got: 1 })
    );
}

#[tokio::test]
async fn retryable_failure_requeues_and_fatal_failure_fails_the_job() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let job = sub.value.job_id;
    r.engine.publish_all(&sub.to_publish).await;
    let f = |retryable| Failure {
        error: "boom".into(),
        retryable,
    };
    let out = r.engine.fail(call(&job, "ocr", 1), f(true)).await.unwrap();
    assert_eq!(
        (out.value.status, out.value.attempt),
        (StepStatus::Queued, 2)
    );
    assert_eq!(out.to_publish.len(), 1);
    r.engine.publish_all(&out.to_publish).await;
    let out = r.engine.fail(call(&job, "ocr", 2), f(false)).await.unwrap();
    assert_eq!(out.value.status, StepStatus::Failed);
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Failed);
    assert!(rec.job.error.as_deref().unwrap_or("").contains("boom"));
}

#[tokio::test]
async fn cancel_settles_pending_directives_and_refuses_twice() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let job = sub.value.job_id;
    let rec = r.engine.cancel(&job, "client asked").await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Cancelled);
    assert_eq!(rec.outbox[0].status, OutboxStatus::Dead);
    assert!(r.engine.cancel(&job, "again").await.is_err());
    // The dispatcher publishes nothing for it.
    let d = r.engine.dispatch(&sub.value.partition).await.unwrap();
    assert_eq!(d.published, 0);
    assert!(r.bus.is_empty());
    // And an admin cannot revive its directive.
    assert!(r.engine.retry_outbox(&sub.to_publish[0]).await.is_err());
}

#[tokio::test]
async fn dispatcher_publishes_what_intake_could_not() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    // The orchestrator crashed before publishing: once the dispatch grace (left to that
    // publication) is over, the dispatcher finds the entry.
    let d = r.engine.dispatch(&sub.value.partition).await.unwrap();
    assert_eq!(d.due, 0, "within the grace");
    r.clock.advance(r.engine.config().dispatch_grace);
    let d = r.engine.dispatch(&sub.value.partition).await.unwrap();
    assert_eq!((d.due, d.published), (1, 1));
    assert_eq!(r.bus.drain().len(), 1);
    let d = r.engine.dispatch(&sub.value.partition).await.unwrap();
    assert_eq!(d.due, 0);
}

#[tokio::test]
async fn admin_retry_revives_dead_entries() {
    let mut p = MockPub::new();
    let mut seq = mockall::Sequence::new();
    p.expect_publish()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(PublishError::Permanent("403".into())));
    p.expect_publish()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let engine = Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(p),
        Arc::new(ManualClock::new(T0)),
    );
    let sub = engine.submit(command("acme", "k", 0)).await.unwrap();
    assert_eq!(
        engine.publish(&sub.to_publish[0]).await.unwrap(),
        PublishOutcome::Dead
    );
    let out = engine
        .retry_outbox_matching(&OutboxQuery {
            status: Some(OutboxStatus::Dead),
            limit: 10,
            ..OutboxQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(out.value, 1);
    assert_eq!(engine.publish_all(&out.to_publish).await, 1);
    let rec = engine.job(&sub.value.job_id).await.unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Initiated);
}

#[tokio::test]
async fn drift_after_torn_writes_is_repaired() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let job = sub.value.job_id;
    r.engine.publish_all(&sub.to_publish).await;
    r.engine.ack(call(&job, "ocr", 1)).await.unwrap();
    // complete(ocr) writes: ocr SUCCEEDED, embed QUEUED, embed's directive, (job unchanged).
    // Crash after the first write: ocr succeeded, its successor never queued.
    r.store.inject(Fault::Tear(1));
    assert!(r
        .engine
        .complete(call(&job, "ocr", 1), json!({"text": "t"}))
        .await
        .is_err());
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Succeeded);
    assert_eq!(rec.steps[1].status, StepStatus::Pending);
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(out.value.repaired, 1);
    assert_eq!(out.to_publish.len(), 1);
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.steps[1].status, StepStatus::Queued);
    assert_eq!(
        rec.entry(&out.to_publish[0])
            .map(|e| e.directive.input.clone()),
        Some(Some(json!({"text": "t"}).into()))
    );
    // Publication torn after the step write: step INITIATED, entry still PENDING.
    r.store.inject(Fault::Tear(1));
    assert!(r.engine.publish(&out.to_publish[0]).await.is_err());
    // The dispatcher takes the entry once the dispatch grace is over.
    r.clock.advance(r.engine.config().dispatch_grace);
    let d = r.engine.dispatch(&sub.value.partition).await.unwrap();
    assert_eq!(d.published + d.skipped, 1, "{d:?}");
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(
        rec.entry(&out.to_publish[0]).map(|e| e.status),
        Some(OutboxStatus::Sent)
    );
    assert_eq!(rec.steps[1].status, StepStatus::Initiated);
}

#[tokio::test]
async fn queued_step_without_directive_gets_one() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let job = sub.value.job_id;
    r.engine.publish_all(&sub.to_publish).await;
    let f = Failure {
        error: "flaky".into(),
        retryable: true,
    };
    // fail writes: ocr QUEUED (attempt 2), then its new directive. Crash in between.
    r.store.inject(Fault::Tear(1));
    assert!(r.engine.fail(call(&job, "ocr", 1), f).await.is_err());
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(
        (rec.steps[0].status, rec.steps[0].attempt),
        (StepStatus::Queued, 2)
    );
    assert!(rec.entry(&rec.steps[0].outbox_id()).is_none());
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!((out.value.repaired, out.to_publish.len()), (1, 1));
    assert_eq!(r.engine.publish_all(&out.to_publish).await, 1);
}

#[tokio::test]
async fn job_status_follows_its_steps() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let job = sub.value.job_id;
    // Publication torn after step and entry: the job stayed ACCEPTED.
    r.store.inject(Fault::Tear(2));
    assert!(r.engine.publish(&sub.to_publish[0]).await.is_err());
    assert_eq!(
        r.engine.job(&job).await.unwrap().job.status,
        JobStatus::Accepted
    );
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(out.value.repaired, 1);
    assert_eq!(
        r.engine.job(&job).await.unwrap().job.status,
        JobStatus::InProgress
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let r = rig();
    let ghost = JobId::derive(&crate::ids::TenantId::parse("t").unwrap(), "x");
    assert_eq!(
        r.engine.job(&ghost).await.unwrap_err(),
        EngineError::JobNotFound(ghost.clone())
    );
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let err = r
        .engine
        .ack(call(&sub.value.job_id, "nope", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::StepNotFound { .. }));
    let bad = OutboxId::for_attempt(&ghost, 0, 1);
    assert_eq!(
        r.engine.retry_outbox(&bad).await.unwrap_err(),
        EngineError::OutboxNotFound(bad)
    );
}

#[tokio::test]
async fn interrupted_intake_waits_for_the_retry_then_fails_after_the_grace() {
    let r = rig();
    // Crash after claim + job + first step: the client got no 202.
    r.store.inject(Fault::Tear(3));
    assert!(r.engine.submit(command("acme", "k", 0)).await.is_err());
    let job = JobId::derive(&crate::ids::TenantId::parse("acme").unwrap(), "k");
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.steps.len(), 1);
    // The sweeper leaves it alone within the grace period...
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(
        (out.value.repaired, out.value.failed, out.to_publish.len()),
        (0, 0, 0)
    );
    // ...and the client's retry completes it.
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    assert_eq!(sub.value.job_id, job);
    assert_eq!(r.engine.job(&job).await.unwrap().steps.len(), 3);

    // Another interrupted intake whose client never comes back is failed after the grace.
    r.store.inject(Fault::Tear(2));
    assert!(r.engine.submit(command("acme", "k2", 0)).await.is_err());
    let job2 = JobId::derive(&crate::ids::TenantId::parse("acme").unwrap(), "k2");
    r.clock.advance(Millis(600_000));
    assert_eq!(r.engine.sweep_job(&job2).await.unwrap().value.failed, 1);
    assert_eq!(
        r.engine.job(&job2).await.unwrap().job.status,
        JobStatus::Failed
    );
    // A very late retry sees the failed job and adds no rows under it.
    let late = r.engine.submit(command("acme", "k2", 0)).await.unwrap();
    assert_eq!(late.value.status, JobStatus::Failed);
    assert!(r.engine.job(&job2).await.unwrap().steps.is_empty());
}

#[tokio::test]
async fn accessors_and_readiness_report_the_engine_as_built() {
    let mut st = MockSt::new();
    st.expect_ping()
        .times(1)
        .returning(|| Err(StoreError::transient("store down")));
    let cfg = EngineConfig {
        batch_size: 7,
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        Arc::new(st),
        Arc::new(MemoryPublisher::new()),
        Arc::new(ManualClock::new(T0)),
    )
    .with_config(cfg.clone());
    assert_eq!(engine.config(), &cfg);
    assert_eq!(engine.protocols().len(), ProtocolRegistry::demo().len());
    assert!(!engine.protocols().is_empty());
    assert!(
        engine.ready().await.is_err(),
        "a store that is down is not ready"
    );
    assert!(rig().engine.ready().await.is_ok());
}

#[tokio::test]
async fn the_first_send_starts_the_job_and_a_retry_gets_its_predecessors_result() {
    let r = rig();
    let sub = r
        .engine
        .submit(command("acme", "retry-input", 0))
        .await
        .unwrap();
    let job = sub.value.job_id.clone();
    assert_eq!(
        r.engine.job(&job).await.unwrap().job.status,
        JobStatus::Accepted
    );
    // The first directive leaving starts the job.
    r.engine.publish_all(&sub.to_publish).await;
    assert_eq!(
        r.engine.job(&job).await.unwrap().job.status,
        JobStatus::InProgress
    );
    let d0 = r.bus.drain().remove(0);
    assert_eq!(d0.input, None, "the first step has no predecessor");
    r.engine.ack(call(&job, "ocr", 1)).await.unwrap();
    let page = json!({"text": "page one"});
    let out = r
        .engine
        .complete(call(&job, "ocr", 1), page.clone())
        .await
        .unwrap();
    r.engine.publish_all(&out.to_publish).await;
    let d1 = r.bus.drain().remove(0);
    assert_eq!(d1.input, Some(page.clone().into()));
    r.engine.ack(call(&job, "embed", 1)).await.unwrap();
    r.engine
        .fail(
            call(&job, "embed", 1),
            Failure {
                error: "flaky".into(),
                retryable: true,
            },
        )
        .await
        .unwrap();
    let rec = r.engine.job(&job).await.unwrap();
    let retry = rec
        .outbox
        .iter()
        .find(|e| e.step_index == 1 && e.attempt == 2)
        .expect("the retry's directive");
    assert_eq!(
        retry.directive.input,
        Some(page.into()),
        "the retry works on the same input"
    );
}

#[tokio::test]
async fn an_ack_before_the_send_was_recorded_marks_the_entry_sent() {
    let r = rig();
    let sub = r
        .engine
        .submit(command("acme", "early-ack", 0))
        .await
        .unwrap();
    let job = sub.value.job_id.clone();
    // The directive reached a worker before the publisher recorded the send: the ACK
    // records it, and starts the job.
    r.engine.ack(call(&job, "ocr", 1)).await.unwrap();
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.outbox[0].status, OutboxStatus::Sent);
    assert_eq!(rec.job.status, JobStatus::InProgress);
    assert_eq!(
        r.engine.publish(&sub.to_publish[0]).await.unwrap(),
        PublishOutcome::NotPending
    );
    assert!(r.bus.is_empty(), "not sent twice");
}

#[tokio::test]
async fn a_retried_step_supersedes_only_its_own_older_pending_entries() {
    let r = rig();
    let sub = r
        .engine
        .submit(command("acme", "supersede", 0))
        .await
        .unwrap();
    let job = sub.value.job_id.clone();
    let mut rec = r.engine.job(&job).await.unwrap();
    // Another step's pending entry, which the retry must leave alone.
    let mut other = rec.outbox[0].clone();
    other.step_index = 1;
    other.id = OutboxId::for_attempt(&job, 1, 1);
    rec.outbox.push(other.clone());
    let mut retried = rec.steps[0].clone();
    retried.attempt = 2;
    let mut c = Changes::default();
    let ids = consequences::apply_step(&rec, &mut c, retried, T0.plus(Millis(5)));
    let of = |attempt: u32, index: u32| {
        c.outbox
            .iter()
            .find(|e| e.attempt == attempt && e.step_index == index)
            .cloned()
    };
    assert_eq!(of(1, 0).map(|e| e.status), Some(OutboxStatus::Dead));
    let new = of(2, 0).expect("the retry's entry");
    assert_eq!(new.status, OutboxStatus::Pending);
    assert_eq!(ids, vec![new.id.clone()]);
    assert_eq!(of(1, 1), None, "another step's entry is untouched");
}

#[tokio::test]
async fn a_replay_publishes_a_first_directive_only_if_it_never_left() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "replay", 0)).await.unwrap();
    // Never published: the replay hands it out again.
    let again = r.engine.submit(command("acme", "replay", 0)).await.unwrap();
    assert!(!again.value.created);
    assert_eq!(again.to_publish, sub.to_publish);
    // Sent: nothing to publish.
    r.engine.publish_all(&sub.to_publish).await;
    let after = r.engine.submit(command("acme", "replay", 0)).await.unwrap();
    assert!(after.to_publish.is_empty(), "{:?}", after.to_publish);
}

#[tokio::test]
async fn a_partition_sweep_counts_its_failures_and_repairs() {
    let r = rig();
    // Job a: its last attempt's ACK deadline passes during the sweep.
    let a = r.engine.submit(command("acme", "fails", 0)).await.unwrap();
    r.engine.publish_all(&a.to_publish).await;
    for _ in 0..2 {
        r.clock.advance(Millis::from_secs(31));
        let out = r.engine.sweep_job(&a.value.job_id).await.unwrap();
        r.engine.publish_all(&out.to_publish).await;
    }
    r.clock.advance(Millis::from_secs(31));
    // Job b: its publication's commit was torn after the step row; the entry stayed PENDING.
    let b = r.engine.submit(command("acme", "torn", 0)).await.unwrap();
    r.store.inject(Fault::Tear(1));
    assert!(r.engine.publish(&b.to_publish[0]).await.is_err());
    let rec = r.engine.job(&b.value.job_id).await.unwrap();
    assert_eq!(
        (rec.steps[0].status, rec.outbox[0].status),
        (StepStatus::Initiated, OutboxStatus::Pending)
    );
    let out = r.engine.sweep_partition(&a.value.partition).await.unwrap();
    let s = out.value;
    assert_eq!(
        (s.jobs, s.retried, s.failed, s.errors),
        (2, 0, 1, 0),
        "{s:?}"
    );
    // The entry marked SENT, and the job started.
    assert_eq!(s.repaired, 2, "{s:?}");
    let rec = r.engine.job(&b.value.job_id).await.unwrap();
    assert_eq!(rec.outbox[0].status, OutboxStatus::Sent, "repaired");
    assert_eq!(
        r.engine.job(&a.value.job_id).await.unwrap().job.status,
        JobStatus::Failed
    );
}

#[tokio::test]
async fn a_partition_sweep_reads_pages_until_a_short_one_and_no_further() {
    let tenant = crate::ids::TenantId::parse("acme").unwrap();
    let ids: Vec<JobId> = ["a", "b", "c"]
        .iter()
        .map(|k| JobId::derive(&tenant, k))
        .collect();
    let partition = crate::testkit::new_job("acme", "a", 0, T0).job.partition;
    let mut st = MockSt::new();
    let pages = ids.clone();
    // Two pages: a full one, then a short one. A third read fails the test.
    st.expect_active_jobs()
        .times(2)
        .returning(move |_, after, limit| {
            assert_eq!(limit, 2);
            Ok(match after {
                None => pages[..2].to_vec(),
                Some(last) if last == pages[1] => pages[2..].to_vec(),
                Some(other) => panic!("read after {other}"),
            })
        });
    // Every job vanished meanwhile: each counts as an error.
    st.expect_load_job().times(3).returning(|_| Ok(None));
    let engine = Engine::new(
        Arc::new(st),
        Arc::new(MemoryPublisher::new()),
        Arc::new(ManualClock::new(T0)),
    )
    .with_config(EngineConfig {
        batch_size: 2,
        ..EngineConfig::default()
    });
    let out = engine.sweep_partition(&partition).await.unwrap();
    assert_eq!(
        (out.value.jobs, out.value.errors),
        (0, 3),
        "{:?}",
        out.value
    );
}

/// Records what the engine reports, one line an event.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl Observer for Recorder {
    fn job_transition(&self, from: Option<JobStatus>, to: JobStatus) {
        self.0
            .lock()
            .unwrap()
            .push(format!("job {from:?} -> {to:?}"));
    }
    fn step_transition(&self, from: Option<StepStatus>, to: StepStatus) {
        self.0
            .lock()
            .unwrap()
            .push(format!("step {from:?} -> {to:?}"));
    }
    fn outbox_transition(&self, from: Option<OutboxStatus>, to: OutboxStatus) {
        self.0
            .lock()
            .unwrap()
            .push(format!("outbox {from:?} -> {to:?}"));
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn the_observer_hears_each_status_change_once_and_no_rewrite_of_a_status() {
    let recorder = Arc::new(Recorder::default());
    let mut r = rig();
    r.engine = r.engine.with_observer(recorder.clone());
    let sub = r
        .engine
        .submit(command("acme", "observed", 0))
        .await
        .unwrap();
    let job = sub.value.job_id.clone();
    assert_eq!(
        recorder.take(),
        [
            "job None -> Accepted",
            "step None -> Queued",
            "step None -> Pending",
            "step None -> Pending",
            "outbox None -> Pending",
        ]
    );
    r.engine.publish_all(&sub.to_publish).await;
    assert_eq!(
        recorder.take(),
        [
            "step Some(Queued) -> Initiated",
            "outbox Some(Pending) -> Sent",
            "job Some(Accepted) -> InProgress",
        ]
    );
    r.engine.ack(call(&job, "ocr", 1)).await.unwrap();
    assert_eq!(recorder.take(), ["step Some(Initiated) -> Running"]);
    // A heartbeat rewrites the step (a later lease) without changing its status.
    r.clock.advance(Millis(10));
    r.engine.heartbeat(call(&job, "ocr", 1)).await.unwrap();
    assert_eq!(recorder.take(), Vec::<String>::new());
}

#[tokio::test]
async fn the_outbox_listing_returns_the_entries_the_query_matches() {
    let r = rig();
    let a = r.engine.submit(command("acme", "list-a", 0)).await.unwrap();
    let b = r.engine.submit(command("acme", "list-b", 0)).await.unwrap();
    r.engine.publish_all(&a.to_publish).await;
    let engine = &r.engine;
    let listed = |status| async move {
        let q = OutboxQuery {
            status: Some(status),
            limit: 10,
            ..OutboxQuery::default()
        };
        let entries = engine.list_outbox(&q).await.unwrap();
        entries.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    assert_eq!(listed(OutboxStatus::Pending).await, b.to_publish);
    assert_eq!(listed(OutboxStatus::Sent).await, a.to_publish);
}

#[test]
fn an_engine_shows_its_settings_when_debugged() {
    let engine = rig().engine.with_config(EngineConfig {
        batch_size: 7,
        ..EngineConfig::default()
    });
    let shown = format!("{engine:?}");
    assert!(shown.starts_with("Engine {"), "{shown}");
    assert!(shown.contains("batch_size: 7"), "{shown}");
}

#[tokio::test]
async fn finished_jobs_are_purged_after_the_retention_and_not_before() {
    let mut r = rig();
    r.engine = r.engine.with_config(EngineConfig {
        retention: Some(Millis(60_000)),
        batch_size: 2,
        ..EngineConfig::default()
    });
    let mut done = Vec::new();
    for k in ["a", "b", "c"] {
        let sub = r.engine.submit(command("acme", k, 0)).await.unwrap();
        r.engine.cancel(&sub.value.job_id, "done").await.unwrap();
        done.push(sub.value.job_id);
        r.clock.advance(Millis(1_000));
    }
    let live = r.engine.submit(command("acme", "live", 0)).await.unwrap();
    // "a" ended at T0, "c" at T0 + 2 s: at T0 + 60.5 s only "a" is old enough.
    r.clock.set(T0.plus(Millis(60_500)));
    let report = r.engine.purge_ended().await.unwrap();
    assert_eq!((report.listed, report.purged, report.skipped), (1, 1, 0));
    assert_eq!(r.store.load_job(&done[0]).await.unwrap(), None);
    assert!(r.store.load_job(&done[1]).await.unwrap().is_some());
    // Later: a batch of two, then the rest; the running job stays.
    r.clock.set(T0.plus(Millis(3_600_000)));
    let report = r.engine.purge_ended().await.unwrap();
    assert_eq!((report.listed, report.purged), (2, 2));
    let report = r.engine.purge_ended().await.unwrap();
    assert_eq!(report, PurgeReport::default());
    assert_eq!(r.store.job_count(), 1);
    assert!(r
        .store
        .load_job(&live.value.job_id)
        .await
        .unwrap()
        .is_some());
    // The idempotency window is the retention: the key makes a new job.
    let again = r.engine.submit(command("acme", "a", 0)).await.unwrap();
    assert!(again.value.created, "a purged key is free again");
}

#[tokio::test]
async fn without_a_retention_nothing_is_purged() {
    let mut r = rig();
    r.engine = r.engine.with_config(EngineConfig {
        retention: None,
        ..EngineConfig::default()
    });
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    r.engine.cancel(&sub.value.job_id, "done").await.unwrap();
    r.clock.set(T0.plus(Millis(365 * 24 * 3_600_000)));
    assert_eq!(
        r.engine.purge_ended().await.unwrap(),
        PurgeReport::default()
    );
    assert_eq!(r.store.job_count(), 1);
}

#[tokio::test]
async fn a_job_that_changes_after_it_is_listed_is_skipped() {
    let mut store = MockSt::new();
    let listed = JobId::derive(&crate::ids::TenantId::parse("acme").unwrap(), "k");
    store.expect_ended_jobs().returning(move |_, _| {
        Ok(vec![crate::ports::EndedJob {
            job_id: listed.clone(),
            ended_at: T0,
            revision: crate::revision::Revision::counter(3),
        }])
    });
    store
        .expect_purge_job()
        .returning(|_, _| Err(StoreError::conflict("job changed")));
    let engine = Engine::new(
        Arc::new(store),
        Arc::new(MemoryPublisher::new()),
        Arc::new(ManualClock::new(T0.plus(Millis(30 * 24 * 3_600_000)))),
    );
    let report = engine.purge_ended().await.unwrap();
    assert_eq!((report.listed, report.purged, report.skipped), (1, 0, 1));
}

#[tokio::test]
async fn the_sweep_retires_past_months_that_hold_nothing_live() {
    let r = rig();
    // March 2024: one job finished, one still running in another tenant.
    let done = r.engine.submit(command("acme", "done", 0)).await.unwrap();
    r.engine
        .cancel(&done.value.job_id, "finished")
        .await
        .unwrap();
    let live = r.engine.submit(command("globex", "live", 0)).await.unwrap();
    // Still March: nothing retires, even the empty partition.
    let s = r.engine.sweep_all().await.unwrap();
    assert_eq!(s.value.retired, 0);
    assert_eq!(r.store.partitions().await.unwrap().len(), 2);
    // April: the empty March partition retires; the one with a live job stays.
    r.clock.set(Timestamp(1_711_929_600_000)); // 2024-04-01T00:00:00Z
    let s = r.engine.sweep_all().await.unwrap();
    assert_eq!(s.value.retired, 1);
    assert_eq!(
        r.store.partitions().await.unwrap(),
        vec![live.value.partition.clone()]
    );
    // The next sweep does not even look at it.
    let s = r.engine.sweep_all().await.unwrap();
    assert_eq!((s.value.retired, s.value.jobs), (0, 1));
    assert!(r
        .store
        .load_job(&done.value.job_id)
        .await
        .unwrap()
        .is_some());
}
