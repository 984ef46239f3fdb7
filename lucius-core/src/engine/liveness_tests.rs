//! Engine tests for liveness and publication under concurrency: a `DEAD` directive ends
//! its step's attempt, concurrent publishers count one failure per failure, fenced
//! dispatchers never start a publication their lease would not outlive nor record one
//! after losing it, unfenced publishers leave owned entries alone, and one failing
//! partition or entry never stops the others.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::publish::PublishOutcome;
use super::*;
use crate::directive::Directive;
use crate::ids::Partition;
use crate::job::JobStatus;
use crate::memory::{ManualClock, MemoryStore};
use crate::outbox::{OutboxEntry, OutboxStatus};
use crate::ownership::{OwnershipConfig, PartitionOwner};
use crate::ports::{CreateOutcome, LeaseStore, OutboxQuery, PublishError, Publisher, Store};
use crate::record::NewJob;
use crate::step::StepStatus;
use crate::testkit::command;
use crate::time::Millis;

const T0: Timestamp = Timestamp(1_709_596_800_000);

type Reply = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>;
type Hook = Arc<dyn Fn(Directive, usize) -> Reply + Send + Sync>;

/// A publisher whose every call runs a hook (given the call's number, from 1).
#[derive(Clone, Default)]
struct HookPub {
    hook: Arc<Mutex<Option<Hook>>>,
    calls: Arc<AtomicUsize>,
}

impl HookPub {
    fn set(&self, hook: impl Fn(Directive, usize) -> Reply + Send + Sync + 'static) {
        *self.hook.lock().unwrap() = Some(Arc::new(hook));
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Publisher for HookPub {
    async fn publish(&self, d: &Directive) -> Result<(), PublishError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let hook = self.hook.lock().unwrap().clone();
        match hook {
            Some(h) => h(d.clone(), n).await,
            None => Ok(()),
        }
    }
}

fn fails_with(e: PublishError) -> impl Fn(Directive, usize) -> Reply + Send + Sync {
    move |_, _| {
        let e = e.clone();
        Box::pin(async move { Err(e) })
    }
}

/// A memory store that fails reads of chosen partitions and jobs.
#[derive(Clone, Default)]
struct Faulty {
    inner: MemoryStore,
    bad_partitions: Arc<Mutex<HashSet<Partition>>>,
    bad_jobs: Arc<Mutex<HashSet<JobId>>>,
    /// The next commit writes its steps only, then fails (`Partial`), as a Table-mode
    /// commit whose later group conflicted.
    tear_next: Arc<Mutex<bool>>,
}

#[async_trait]
impl Store for Faulty {
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        self.inner.create_job(new).await
    }
    async fn load_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        if self.bad_jobs.lock().unwrap().contains(id) {
            return Err(StoreError::transient(format!("cannot read job {id}")));
        }
        self.inner.load_job(id).await
    }
    async fn commit(&self, changes: Changes) -> Result<Changes, StoreError> {
        if std::mem::take(&mut *self.tear_next.lock().unwrap()) && !changes.steps.is_empty() {
            let steps = Changes {
                steps: changes.steps,
                ..Changes::default()
            };
            self.inner.commit(steps).await?;
            return Err(StoreError::partial(
                "steps written; the outbox group conflicted",
            ));
        }
        self.inner.commit(changes).await
    }
    async fn outbox(&self, q: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox(q).await
    }
    async fn active_jobs(
        &self,
        p: &Partition,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        if self.bad_partitions.lock().unwrap().contains(p) {
            return Err(StoreError::transient(format!("cannot read partition {p}")));
        }
        self.inner.active_jobs(p, after, limit).await
    }
    async fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        self.inner.partitions().await
    }
    async fn retire_partition(&self, p: &Partition) -> Result<bool, StoreError> {
        self.inner.retire_partition(p).await
    }
    async fn ended_jobs(
        &self,
        ended_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<crate::ports::EndedJob>, StoreError> {
        self.inner.ended_jobs(ended_by, limit).await
    }
    async fn purge_job(
        &self,
        id: &JobId,
        revision: &crate::revision::Revision,
    ) -> Result<(), StoreError> {
        self.inner.purge_job(id, revision).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

struct Rig {
    engine: Engine,
    store: Faulty,
    bus: HookPub,
    clock: ManualClock,
}

fn rig() -> Rig {
    let store = Faulty::default();
    let bus = HookPub::default();
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

async fn first_entry(engine: &Engine, job: &JobId) -> OutboxEntry {
    engine.job(job).await.unwrap().outbox[0].clone()
}

#[tokio::test]
async fn a_dead_directive_ends_its_attempt_and_at_last_the_job_without_an_operator() {
    let r = rig();
    r.bus.set(fails_with(PublishError::Permanent(
        "401 unauthorized".into(),
    )));
    let delay = r.engine.config().publish_retry.delay;
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let job = sub.value.job_id.clone();
    let mut ids = sub.to_publish;
    for attempt in 1..=3u32 {
        assert_eq!(ids.len(), 1, "attempt {attempt}: one directive to publish");
        assert_eq!(
            r.engine.publish(&ids[0]).await.unwrap(),
            PublishOutcome::Dead
        );
        // Within the backoff the step still waits on its dead directive, and an admin
        // may still revive it.
        let out = r.engine.sweep_job(&job).await.unwrap();
        assert_eq!((out.value.retried, out.value.failed), (0, 0));
        let rec = r.engine.job(&job).await.unwrap();
        assert_eq!(
            (rec.steps[0].status, rec.steps[0].attempt),
            (StepStatus::Queued, attempt)
        );
        r.clock.advance(delay);
        let out = r.engine.sweep_job(&job).await.unwrap();
        ids = out.to_publish;
        if attempt < 3 {
            assert_eq!(out.value.retried, 1, "attempt {attempt}");
            let rec = r.engine.job(&job).await.unwrap();
            assert_eq!(rec.steps[0].attempt, attempt + 1);
            let next = rec.entry(&ids[0]).unwrap();
            assert_eq!(
                (next.status, next.attempt),
                (OutboxStatus::Pending, attempt + 1)
            );
        } else {
            assert_eq!(out.value.failed, 1);
        }
    }
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Failed);
    assert_eq!(rec.steps[0].status, StepStatus::Failed);
    let reason = rec.steps[0].error.as_deref().unwrap();
    assert!(reason.contains("401 unauthorized"), "{reason}");
    assert!(rec.outbox.iter().all(|e| e.status != OutboxStatus::Pending));
    assert_eq!(r.bus.calls(), 3);
}

#[tokio::test]
async fn an_admin_may_revive_a_dead_directive_while_its_step_waits() {
    let mut r = rig();
    let mut config = EngineConfig::default();
    config.publish_retry.delay = Millis::from_secs(10);
    r.engine = r.engine.with_config(config);
    r.bus.set(fails_with(PublishError::Permanent(
        "404 no such queue".into(),
    )));
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let id = sub.to_publish[0].clone();
    assert_eq!(r.engine.publish(&id).await.unwrap(), PublishOutcome::Dead);
    r.bus.set(|_, _| Box::pin(async { Ok(()) }));
    let revived = r.engine.retry_outbox(&id).await.unwrap();
    assert_eq!(
        r.engine.publish(&revived.to_publish[0]).await.unwrap(),
        PublishOutcome::Sent
    );
    r.clock.advance(Millis::from_secs(15));
    // Past the dead directive's backoff, within the ACK timeout: the entry is SENT now,
    // so the sweeper does not end the attempt it belongs to.
    let out = r.engine.sweep_job(&sub.value.job_id).await.unwrap();
    assert_eq!(out.value.retried, 0);
    let rec = r.engine.job(&sub.value.job_id).await.unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Initiated);
}

#[tokio::test]
async fn concurrent_publishers_of_one_entry_record_one_failure() {
    // The first publication's call runs a second publisher of the same entry to its end
    // (it loads the entry as the first one did, fails and records); then the first one
    // fails too. One outage, one failure.
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let id = sub.to_publish[0].clone();
    let other = r.engine.clone();
    let inner = Arc::new(Mutex::new(None));
    let seen = inner.clone();
    r.bus.set(move |d, n| {
        let other = other.clone();
        let seen = seen.clone();
        Box::pin(async move {
            if n == 1 {
                let id = OutboxId::parse(&d.directive_id).unwrap().0;
                let outcome = other.publish(&id).await;
                *seen.lock().unwrap() = Some(outcome);
            }
            Err(PublishError::Transient("503 server busy".into()))
        })
    });
    let outer = r.engine.publish(&id).await.unwrap();
    assert_eq!(
        inner.lock().unwrap().clone(),
        Some(Ok(PublishOutcome::Retrying))
    );
    assert_eq!(outer, PublishOutcome::NotPending);
    let e = first_entry(&r.engine, &sub.value.job_id).await;
    assert_eq!((e.status, e.publish_attempts), (OutboxStatus::Pending, 1));
}

fn owned_rig(r: &Rig, me: &str) -> PartitionOwner {
    PartitionOwner::new(
        me,
        Arc::new(r.store.inner.clone()),
        Arc::new(r.clock.clone()),
        OwnershipConfig::default(),
    )
}

#[tokio::test]
async fn a_dispatcher_does_not_start_a_publication_its_lease_would_not_outlive() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let p = sub.value.partition.clone();
    let mut owner = owned_rig(&r, "d1");
    owner.rebalance(std::slice::from_ref(&p)).await.unwrap();
    let fence = owner.fences().remove(0);
    let lease = r.store.inner.lease(&p).await.unwrap().unwrap();
    // 3.5 s before expiry: inside the 2 s skew margin plus the 2 s publish timeout.
    r.clock.set(Timestamp(lease.expires_at.0 - 3_500));
    let report = r
        .engine
        .dispatch_fenced(&fence, &r.store.inner)
        .await
        .unwrap();
    assert_eq!((report.deferred, report.published), (1, 0));
    assert_eq!(r.bus.calls(), 0);
    // Renewed, the same dispatcher publishes.
    owner.rebalance(std::slice::from_ref(&p)).await.unwrap();
    let fence = owner.fences().remove(0);
    let report = r
        .engine
        .dispatch_fenced(&fence, &r.store.inner)
        .await
        .unwrap();
    assert_eq!((report.deferred, report.published), (0, 1));
}

#[tokio::test]
async fn a_dispatcher_paused_past_its_lease_records_nothing() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let p = sub.value.partition.clone();
    // Dispatchers take the entry once the dispatch grace is over.
    r.clock.advance(r.engine.config().dispatch_grace);
    let mut owner = owned_rig(&r, "d1");
    owner.rebalance(std::slice::from_ref(&p)).await.unwrap();
    let fence = owner.fences().remove(0);
    // The process pauses in the middle of the publication; meanwhile its lease expires
    // and another dispatcher takes the partition over.
    let successor = Arc::new(Mutex::new(Some(owned_rig(&r, "d2"))));
    let (clock, next, part) = (r.clock.clone(), successor.clone(), p.clone());
    r.bus.set(move |_, _| {
        let (clock, next, part) = (clock.clone(), next.clone(), part.clone());
        Box::pin(async move {
            clock.advance(Millis::from_secs(60));
            let mut d2 = next.lock().unwrap().take().expect("one publication");
            d2.rebalance(&[part]).await.unwrap();
            Ok(())
        })
    });
    let err = r
        .engine
        .dispatch_fenced(&fence, &r.store.inner)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Fenced { epoch: 1, .. }), "{err}");
    let e = first_entry(&r.engine, &sub.value.job_id).await;
    assert_eq!((e.status, e.fence), (OutboxStatus::Pending, 0));
    let lease = r.store.inner.lease(&p).await.unwrap().unwrap();
    assert_eq!((lease.epoch, lease.owner.as_deref()), (2, Some("d2")));
}

#[tokio::test]
async fn unfenced_publishers_leave_entries_a_dispatcher_has_written() {
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    // Once the dispatch grace is over, a dispatcher (another process) stamps the entry.
    r.clock.advance(r.engine.config().dispatch_grace);
    let mut e = first_entry(&r.engine, &sub.value.job_id).await;
    e.fence = 3;
    r.store
        .commit(Changes {
            outbox: vec![e],
            ..Changes::default()
        })
        .await
        .unwrap();
    assert_eq!(
        r.engine.publish(&sub.to_publish[0]).await.unwrap(),
        PublishOutcome::Owned
    );
    let report = r.engine.retry_pending().await.unwrap();
    assert_eq!((report.published, report.skipped), (0, 1));
    assert_eq!(r.bus.calls(), 0);
}

#[tokio::test]
async fn one_failing_partition_does_not_stop_the_sweep_of_the_others() {
    let r = rig();
    let mut jobs = Vec::new();
    for tenant in ["acme", "globex"] {
        let sub = r.engine.submit(command(tenant, "k", 0)).await.unwrap();
        r.engine.publish_all(&sub.to_publish).await;
        jobs.push(sub.value);
    }
    // The first partition in the store's order fails to list its jobs.
    let first = r.store.partitions().await.unwrap()[0].clone();
    r.store.bad_partitions.lock().unwrap().insert(first.clone());
    r.clock.advance(Millis::from_secs(31));
    let out = r.engine.sweep_all().await.unwrap();
    assert_eq!((out.value.retried, out.value.errors), (1, 1));
    for j in &jobs {
        let rec = r.engine.job(&j.job_id).await.unwrap();
        let expect = if j.partition == first { 1 } else { 2 };
        assert_eq!(rec.steps[0].attempt, expect, "{}", j.partition);
    }
}

#[tokio::test]
async fn entries_that_keep_failing_do_not_starve_the_rest_of_a_partition() {
    let mut r = rig();
    r.engine = r.engine.with_config(EngineConfig {
        batch_size: 2,
        ..EngineConfig::default()
    });
    let mut subs = Vec::new();
    for k in 0..3 {
        subs.push(
            r.engine
                .submit(command("acme", &format!("k{k}"), 0))
                .await
                .unwrap(),
        );
        r.clock.advance(Millis(1));
    }
    // The two oldest entries cannot be loaded, round after round.
    for s in &subs[..2] {
        r.store
            .bad_jobs
            .lock()
            .unwrap()
            .insert(s.value.job_id.clone());
    }
    // Dispatchers take the entry once the dispatch grace is over.
    r.clock.advance(r.engine.config().dispatch_grace);
    let report = r.engine.dispatch(&subs[0].value.partition).await.unwrap();
    assert_eq!((report.errors, report.published), (2, 1));
    let e = first_entry(&r.engine, &subs[2].value.job_id).await;
    assert_eq!(e.status, OutboxStatus::Sent);
}

#[tokio::test]
async fn a_commit_applied_in_part_is_a_transition_that_happened() {
    // A retryable failure moves the step to attempt 2; the store writes the step, then
    // fails on the outbox group. The worker is told it worked (not 409 for a step that
    // moved), and the engine writes the missing directive at once.
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    r.engine.publish_all(&sub.to_publish).await;
    let job = sub.value.job_id.clone();
    let call = WorkerCall {
        job_id: &job,
        step_id: "ocr",
        attempt: 1,
        worker_id: Some("w1"),
    };
    r.engine.ack(call.clone()).await.unwrap();
    *r.store.tear_next.lock().unwrap() = true;
    let failure = crate::step::Failure {
        error: "flaky".into(),
        retryable: true,
    };
    let out = r.engine.fail(call, failure).await.unwrap();
    assert_eq!(
        (out.value.status, out.value.attempt),
        (StepStatus::Queued, 2)
    );
    let rec = r.engine.job(&job).await.unwrap();
    let next = rec
        .entry(&out.to_publish[0])
        .expect("the repair wrote the directive");
    assert_eq!((next.status, next.attempt), (OutboxStatus::Pending, 2));
    assert_eq!(
        r.engine.publish(&next.id).await.unwrap(),
        PublishOutcome::Sent
    );
}

#[tokio::test]
async fn an_admin_retry_is_refused_once_the_step_got_past_its_dead_directive() {
    let r = rig();
    r.bus.set(fails_with(PublishError::Permanent(
        "401 unauthorized".into(),
    )));
    let sub = r
        .engine
        .submit(command("acme", "got-past", 0))
        .await
        .unwrap();
    r.engine.publish_all(&sub.to_publish).await;
    let job = sub.value.job_id.clone();
    let dead = first_entry(&r.engine, &job).await;
    assert_eq!(dead.status, OutboxStatus::Dead);
    // While the step still waits on it, the operator may retry it…
    assert!(r.engine.job(&job).await.unwrap().steps[0]
        .status
        .awaits_directive());
    // …but once the directive arrived anyway (a copy sent before the failure was known)
    // and the worker took the step, the entry is superseded.
    let call = WorkerCall {
        job_id: &job,
        step_id: "ocr",
        attempt: 1,
        worker_id: Some("w"),
    };
    r.engine.ack(call).await.unwrap();
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Running);
    assert_eq!(rec.outbox[0].status, OutboxStatus::Dead);
    let err = r.engine.retry_outbox(&dead.id).await.unwrap_err();
    assert!(err.to_string().contains("SUPERSEDED"), "{err}");
}

#[tokio::test]
async fn a_dispatch_round_counts_each_outcome_once() {
    let r = rig();
    r.bus.set(fails_with(PublishError::Transient("503".into())));
    let mut jobs = Vec::new();
    for key in ["sent", "retrying", "dead"] {
        let sub = r.engine.submit(command("acme", key, 0)).await.unwrap();
        r.engine.publish_all(&sub.to_publish).await;
        jobs.push((sub.value.job_id.clone(), sub.value.partition.clone()));
    }
    let (sent, retrying) = (jobs[0].0.to_string(), jobs[1].0.to_string());
    r.bus.set(move |d, _| {
        let job = d.job_id.to_string();
        let reply = if job == sent {
            Ok(())
        } else if job == retrying {
            Err(PublishError::Transient("503".into()))
        } else {
            Err(PublishError::Permanent("404 no such queue".into()))
        };
        Box::pin(async move { reply })
    });
    r.clock.advance(Millis(120_000));
    let report = r.engine.dispatch(&jobs[0].1).await.unwrap();
    assert_eq!(
        (
            report.due,
            report.published,
            report.retrying,
            report.dead,
            report.skipped,
            report.errors
        ),
        (3, 1, 1, 1, 0, 0),
        "{report:?}"
    );
}

#[tokio::test]
async fn an_entry_whose_step_moved_on_is_settled_by_the_dispatcher_not_published() {
    let r = rig();
    let mut entries = Vec::new();
    for key in ["retried", "taken-later", "arrived", "cancelled"] {
        let sub = r.engine.submit(command("acme", key, 0)).await.unwrap();
        let rec = r.engine.job(&sub.value.job_id).await.unwrap();
        let mut step = rec.steps[0].clone();
        let mut job = None;
        match key {
            // A retry's step write landed; its entry writes did not.
            "retried" => step.attempt = 2,
            // Then a worker took attempt 2 (its directive was published by another entry).
            "taken-later" => (step.attempt, step.status) = (2, StepStatus::Running),
            // The directive arrived; the write recording the send was lost.
            "arrived" => step.status = StepStatus::Running,
            // Cancelled; the write settling the entry was lost.
            _ => {
                step = step.on_cancel(T0).unwrap();
                job = Some(rec.job.on_cancel("client asked", T0).unwrap());
            }
        }
        r.store
            .commit(Changes {
                steps: vec![step],
                job,
                ..Changes::default()
            })
            .await
            .unwrap();
        entries.push((key, sub.value.job_id.clone(), sub.to_publish[0].clone()));
    }
    // The retry loop takes the entries once the dispatch grace is over.
    r.clock.advance(r.engine.config().dispatch_grace);
    let report = r.engine.retry_pending().await.unwrap();
    assert_eq!(
        (report.due, report.published, report.skipped, report.errors),
        (4, 0, 4, 0),
        "{report:?}"
    );
    assert_eq!(r.bus.calls(), 0, "nothing published");
    for (key, job, id) in entries {
        let rec = r.engine.job(&job).await.unwrap();
        let e = rec.entry(&id).unwrap();
        let error = e.last_error.as_deref().unwrap_or("");
        match key {
            "arrived" => assert_eq!(e.status, OutboxStatus::Sent, "{key}"),
            "cancelled" => {
                assert_eq!(e.status, OutboxStatus::Dead, "{key}");
                assert!(error.contains("step is CANCELLED"), "{key}: {error}");
            }
            _ => {
                assert_eq!(e.status, OutboxStatus::Dead, "{key}");
                assert!(error.contains("step is at attempt 2"), "{key}: {error}");
            }
        }
    }
}

#[tokio::test]
async fn a_failure_is_not_counted_once_an_admin_retried_the_entry_during_the_publication() {
    // The entry had no failure yet; while its publication is in flight an operator retries
    // it (due later than the publication started). The failure belongs to the superseded
    // attempt and is not counted against the revived entry.
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let id = sub.to_publish[0].clone();
    let (other, clock) = (r.engine.clone(), r.clock.clone());
    r.bus.set(move |d, _| {
        let (other, clock) = (other.clone(), clock.clone());
        Box::pin(async move {
            clock.advance(Millis(1));
            let id = OutboxId::parse(&d.directive_id).unwrap().0;
            other.retry_outbox(&id).await.unwrap();
            Err(PublishError::Transient("503 server busy".into()))
        })
    });
    assert_eq!(
        r.engine.publish(&id).await.unwrap(),
        PublishOutcome::NotPending
    );
    let e = first_entry(&r.engine, &sub.value.job_id).await;
    assert_eq!((e.status, e.publish_attempts), (OutboxStatus::Pending, 0));
    assert!(e.next_attempt_at > T0, "due from the admin retry");
}

#[tokio::test]
async fn an_unfenced_publisher_records_nothing_once_a_dispatcher_stamped_the_entry() {
    // While an unfenced publisher's publication is in flight, a partition-owning
    // dispatcher writes the entry: the publisher's result is not recorded over its row.
    let r = rig();
    let sub = r.engine.submit(command("acme", "k", 0)).await.unwrap();
    let (engine, store) = (r.engine.clone(), r.store.clone());
    let job = sub.value.job_id.clone();
    r.bus.set(move |_, _| {
        let (engine, store, job) = (engine.clone(), store.clone(), job.clone());
        Box::pin(async move {
            let mut e = first_entry(&engine, &job).await;
            e.fence = 1;
            store
                .commit(Changes {
                    outbox: vec![e],
                    ..Changes::default()
                })
                .await
                .unwrap();
            Ok(())
        })
    });
    assert_eq!(
        r.engine.publish(&sub.to_publish[0]).await.unwrap(),
        PublishOutcome::Owned
    );
    let rec = r.engine.job(&sub.value.job_id).await.unwrap();
    assert_eq!(
        (rec.outbox[0].status, rec.outbox[0].fence),
        (OutboxStatus::Pending, 1)
    );
    assert_eq!(rec.steps[0].status, StepStatus::Queued);
}

#[tokio::test]
async fn a_lease_ending_exactly_when_a_publication_would_is_not_enough() {
    let r = rig();
    let timeout = r.engine.config().publish_timeout;
    let a = r.engine.submit(command("acme", "a", 0)).await.unwrap();
    let p = a.value.partition.clone();
    let mut owner = owned_rig(&r, "d1");
    owner.rebalance(std::slice::from_ref(&p)).await.unwrap();
    let fence = owner.fences().remove(0);
    // One millisecond to spare: the publication starts.
    r.clock
        .set(Timestamp(fence.valid_until.0 - timeout.0 as i64 - 1));
    let report = r
        .engine
        .dispatch_fenced(&fence, &r.store.inner)
        .await
        .unwrap();
    assert_eq!((report.deferred, report.published), (0, 1));
    // None to spare (the lease row, read again, says the same): deferred. (The manual
    // clock's publish timeout moved it on; put it back at the boundary, with an entry
    // written the dispatch grace before, so due for dispatchers there.)
    let boundary = Timestamp(fence.valid_until.0 - timeout.0 as i64);
    r.clock
        .set(boundary.minus(r.engine.config().dispatch_grace));
    let b = r.engine.submit(command("acme", "b", 0)).await.unwrap();
    assert_eq!(b.value.partition, p);
    r.clock.set(boundary);
    let report = r
        .engine
        .dispatch_fenced(&fence, &r.store.inner)
        .await
        .unwrap();
    assert_eq!((report.deferred, report.published), (1, 0));
    assert_eq!(r.bus.calls(), 1);
    assert_eq!(
        first_entry(&r.engine, &b.value.job_id).await.status,
        OutboxStatus::Pending
    );
}

#[tokio::test]
async fn a_dispatch_round_stops_at_its_batch_size() {
    let mut r = rig();
    r.engine = r.engine.with_config(EngineConfig {
        batch_size: 1,
        ..EngineConfig::default()
    });
    let a = r.engine.submit(command("acme", "first", 0)).await.unwrap();
    r.clock.advance(Millis(1));
    let b = r.engine.submit(command("acme", "second", 0)).await.unwrap();
    assert_eq!(a.value.partition, b.value.partition);
    // Dispatchers take both entries once the dispatch grace is over.
    r.clock.advance(r.engine.config().dispatch_grace);
    let report = r.engine.dispatch(&a.value.partition).await.unwrap();
    assert_eq!((report.due, report.published), (1, 1), "{report:?}");
    assert_eq!(r.bus.calls(), 1);
    assert_eq!(
        first_entry(&r.engine, &b.value.job_id).await.status,
        OutboxStatus::Pending,
        "left for the next round"
    );
}

#[tokio::test]
async fn a_job_that_cannot_be_read_counts_one_error_in_its_partitions_sweep_and_in_the_total() {
    let r = rig();
    let mut jobs = Vec::new();
    for key in ["readable", "unreadable"] {
        let sub = r.engine.submit(command("acme", key, 0)).await.unwrap();
        r.engine.publish_all(&sub.to_publish).await;
        jobs.push(sub.value);
    }
    assert_eq!(jobs[0].partition, jobs[1].partition);
    r.store
        .bad_jobs
        .lock()
        .unwrap()
        .insert(jobs[1].job_id.clone());
    r.clock.advance(Millis::from_secs(31));
    let out = r.engine.sweep_partition(&jobs[0].partition).await.unwrap();
    let s = out.value;
    assert_eq!((s.jobs, s.retried, s.errors), (1, 1, 1), "{s:?}");
    let rec = r.engine.job(&jobs[0].job_id).await.unwrap();
    assert_eq!(rec.steps[0].attempt, 2);
    // A sweep of every partition adds up each partition's errors.
    let all = r.engine.sweep_all().await.unwrap().value;
    assert_eq!((all.jobs, all.retried, all.errors), (1, 0, 1), "{all:?}");
}
