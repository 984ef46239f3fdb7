//! Engine tests of the store round trips: the record intake hands to the first
//! publication (no read), the dispatch grace that keeps dispatchers off an entry its
//! writer is publishing, and the sweeper's request to list a long-overdue entry again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::*;
use crate::ids::{OutboxId, Partition};
use crate::job::JobStatus;
use crate::memory::{ManualClock, MemoryPublisher, MemoryStore};
use crate::outbox::{OutboxEntry, OutboxStatus};
use crate::ports::{CreateOutcome, EndedJob, OutboxQuery, Store};
use crate::record::NewJob;
use crate::revision::Revision;
use crate::step::StepStatus;
use crate::testkit::command;

const T0: Timestamp = Timestamp(1_709_596_800_000);

/// A memory store that counts `load_job` calls and records `index_pending` calls.
#[derive(Clone, Default)]
struct Recording {
    inner: MemoryStore,
    loads: Arc<AtomicUsize>,
    indexed: Arc<Mutex<Vec<OutboxId>>>,
}

impl Recording {
    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    fn indexed(&self) -> Vec<OutboxId> {
        self.indexed.lock().unwrap().clone()
    }
}

#[async_trait]
impl Store for Recording {
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        self.inner.create_job(new).await
    }
    async fn load_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_job(id).await
    }
    async fn commit(&self, changes: Changes) -> Result<Changes, StoreError> {
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
        self.inner.active_jobs(p, after, limit).await
    }
    async fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        self.inner.partitions().await
    }
    async fn retire_partition(&self, p: &Partition) -> Result<bool, StoreError> {
        self.inner.retire_partition(p).await
    }
    async fn ended_jobs(&self, by: Timestamp, limit: usize) -> Result<Vec<EndedJob>, StoreError> {
        self.inner.ended_jobs(by, limit).await
    }
    async fn purge_job(&self, id: &JobId, revision: &Revision) -> Result<(), StoreError> {
        self.inner.purge_job(id, revision).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn index_pending(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.indexed.lock().unwrap().push(entry.id.clone());
        Ok(())
    }
}

struct Rig {
    engine: Engine,
    store: Recording,
    bus: MemoryPublisher,
    clock: ManualClock,
}

fn rig() -> Rig {
    let store = Recording::default();
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

async fn submit(r: &Rig, key: &str) -> Outcome<Submission> {
    r.engine.submit(command("acme", key, 0)).await.unwrap()
}

#[tokio::test]
async fn the_publication_after_submit_plans_on_the_created_record_without_a_read() {
    let r = rig();
    let sub = submit(&r, "k").await;
    assert_eq!(r.store.loads(), 0, "intake reads nothing back");
    let out = r.engine.publish(&sub.to_publish[0]).await.unwrap();
    assert_eq!(out, PublishOutcome::Sent);
    assert_eq!(r.store.loads(), 0, "the publication read nothing");
    assert_eq!(r.bus.drain().len(), 1);
    let rec = r.engine.job(&sub.value.job_id).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::InProgress);
    assert_eq!(rec.steps[0].status, StepStatus::Initiated);
    assert_eq!(rec.outbox[0].status, OutboxStatus::Sent);
    // The record is taken once: publishing again reads the job and finds it sent.
    let before = r.store.loads();
    let again = r.engine.publish(&sub.to_publish[0]).await.unwrap();
    assert_eq!(again, PublishOutcome::NotPending);
    assert_eq!(r.store.loads(), before + 1);
    assert!(r.bus.is_empty());
}

#[tokio::test]
async fn a_pull_claim_after_submit_also_plans_on_the_created_record() {
    let r = rig();
    let sub = submit(&r, "k").await;
    let got = r.engine.claim_due(&PullFilter::any(), 1).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(r.store.loads(), 0, "the claim read nothing");
    let rec = r.engine.job(&sub.value.job_id).await.unwrap();
    assert_eq!(rec.outbox[0].status, OutboxStatus::Sent);
}

/// Another process's engine over the same store (its own hand-off, its own bus).
fn other_node(r: &Rig) -> Engine {
    Engine::new(
        Arc::new(r.store.inner.clone()),
        Arc::new(MemoryPublisher::new()),
        Arc::new(r.clock.clone()),
    )
}

#[tokio::test]
async fn a_handed_off_record_gone_stale_costs_a_reload_not_a_wrong_write() {
    let r = rig();
    let sub = submit(&r, "k").await;
    let id = sub.to_publish[0].clone();
    // Another node's admin retry rewrites the entry (still PENDING) before this node's
    // publication runs.
    other_node(&r).retry_outbox(&id).await.unwrap();
    let before = r.store.loads();
    let out = r.engine.publish(&id).await.unwrap();
    assert_eq!(out, PublishOutcome::Sent);
    assert_eq!(
        r.store.loads(),
        before + 1,
        "the commit planned on the stale record conflicted and was planned again"
    );
    assert_eq!(r.bus.drain().len(), 1, "published once");
    let rec = r.engine.job(&sub.value.job_id).await.unwrap();
    assert_eq!(rec.outbox[0].status, OutboxStatus::Sent);
    assert_eq!(rec.outbox[0].publish_attempts, 0);
    assert_eq!(rec.steps[0].status, StepStatus::Initiated);
    assert_eq!(rec.job.status, JobStatus::InProgress);
}

#[tokio::test]
async fn a_job_cancelled_elsewhere_before_its_publication_stays_cancelled() {
    let r = rig();
    let sub = submit(&r, "k").await;
    other_node(&r)
        .cancel(&sub.value.job_id, "changed my mind")
        .await
        .unwrap();
    // The handed-off record still shows the entry PENDING: the directive may leave (a
    // worker's calls for it are refused), but nothing of the cancelled job is rewritten.
    let out = r.engine.publish(&sub.to_publish[0]).await.unwrap();
    assert_eq!(out, PublishOutcome::NotPending);
    let rec = r.engine.job(&sub.value.job_id).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Cancelled);
    assert_eq!(rec.steps[0].status, StepStatus::Cancelled);
    assert_eq!(rec.outbox[0].status, OutboxStatus::Dead);
}

#[tokio::test]
async fn a_change_through_this_engine_drops_the_record_so_nothing_is_sent_twice() {
    let r = rig();
    let sub = submit(&r, "k").await;
    // A worker got the directive (another publication of it) and acknowledged before this
    // publication ran: the ACK's commit drops the record, so the publication reads the job
    // and finds the entry sent.
    let call = WorkerCall {
        job_id: &sub.value.job_id,
        step_id: "ocr",
        attempt: 1,
        worker_id: Some("w1"),
    };
    r.engine.ack(call).await.unwrap();
    let before = r.store.loads();
    let out = r.engine.publish(&sub.to_publish[0]).await.unwrap();
    assert_eq!(out, PublishOutcome::NotPending);
    assert_eq!(r.store.loads(), before + 1);
    assert!(r.bus.is_empty(), "not sent twice");
}

#[tokio::test]
async fn a_record_older_than_the_dispatch_grace_is_not_used() {
    let r = rig();
    let sub = submit(&r, "k").await;
    r.clock.set(T0.plus(r.engine.config().dispatch_grace));
    let out = r.engine.publish(&sub.to_publish[0]).await.unwrap();
    assert_eq!(out, PublishOutcome::Sent);
    assert_eq!(
        r.store.loads(),
        1,
        "past the grace a dispatcher may have published it: the job is read"
    );
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

#[tokio::test]
async fn the_sweeper_asks_the_store_to_list_a_long_overdue_entry_again() {
    let r = rig();
    let cfg = r.engine.config().clone();
    let overdue = submit(&r, "overdue").await;
    let sent = submit(&r, "sent").await;
    r.engine.publish(&sent.to_publish[0]).await.unwrap();
    // Due for dispatchers after the grace, overdue `reindex_after` later.
    r.clock
        .set(T0.plus(Millis(cfg.dispatch_grace.0 + cfg.reindex_after.0 - 1)));
    submit(&r, "fresh").await;
    let p = overdue.value.partition.clone();
    let s = r.engine.sweep_partition(&p).await.unwrap();
    assert_eq!(s.value.reindexed, 0, "not overdue yet");
    assert!(r.store.indexed().is_empty());
    r.clock.advance(Millis(1));
    let s = r.engine.sweep_partition(&p).await.unwrap();
    assert_eq!(s.value.reindexed, 1);
    assert_eq!(
        r.store.indexed(),
        vec![overdue.to_publish[0].clone()],
        "only the overdue PENDING entry: not the fresh one, not the SENT one"
    );
    // The entry itself is left as it was.
    let rec = r.engine.job(&overdue.value.job_id).await.unwrap();
    assert_eq!(rec.outbox[0].status, OutboxStatus::Pending);
    assert_eq!(rec.outbox[0].next_attempt_at, T0);
}

#[tokio::test]
async fn an_entry_a_failing_bus_keeps_pushing_back_is_not_reindexed() {
    let r = rig();
    let engine = Engine::new(
        Arc::new(r.store.clone()),
        Arc::new(crate::testkit::HangingPublisher),
        Arc::new(r.clock.clone()),
    );
    let sub = engine.submit(command("acme", "k", 0)).await.unwrap();
    let cfg = engine.config().clone();
    // Each timed-out publication moves nextAttemptAt on by the retry delay.
    let out = engine.publish(&sub.to_publish[0]).await.unwrap();
    assert_eq!(out, PublishOutcome::Retrying);
    r.clock
        .advance(Millis(cfg.dispatch_grace.0 + cfg.reindex_after.0));
    let s = engine.sweep_job(&sub.value.job_id).await.unwrap();
    assert_eq!(s.value.reindexed, 0, "its nextAttemptAt moved on");
    assert!(r.store.indexed().is_empty());
}
