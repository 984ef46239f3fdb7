//! Tests on drifted records: rows a non-atomic store left half-written (or a lost write
//! left behind) are built directly in the memory store, or handed to the pure planning
//! functions, and the repair each one calls for is checked: what the sweeper writes and
//! counts, what a finished step implies for its job, and the status a job's steps imply.

use std::sync::Arc;

use serde_json::json;

use super::consequences::{apply_step, mark_delivered};
use super::*;
use crate::job::JobStatus;
use crate::memory::{Fault, ManualClock, MemoryPublisher, MemoryStore};
use crate::outbox::{OutboxEntry, OutboxStatus};
use crate::step::{Failure, Step, StepStatus};
use crate::testkit::command;
use crate::time::Millis;

const T0: Timestamp = Timestamp(1_709_596_800_000);

struct Rig {
    engine: Engine,
    store: MemoryStore,
    clock: ManualClock,
}

fn rig() -> Rig {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(MemoryPublisher::new()),
        Arc::new(clock.clone()),
    );
    Rig {
        engine,
        store,
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

impl Rig {
    /// A job submitted (its first directive `PENDING`, never published).
    async fn submitted(&self, key: &str) -> JobId {
        let sub = self.engine.submit(command("acme", key, 0)).await.unwrap();
        sub.value.job_id
    }

    /// Writes rows as a store that lost (or half-applied) some other write would hold
    /// them; each row keeps the revision it was loaded with.
    async fn drift(
        &self,
        steps: Vec<Step>,
        outbox: Vec<OutboxEntry>,
        job: Option<crate::job::Job>,
    ) {
        self.store
            .commit(Changes { steps, outbox, job })
            .await
            .unwrap();
    }

    /// Publishes, acknowledges and completes `step` at `attempt`, publishing what follows.
    async fn run_step(&self, job: &JobId, step: &str, attempt: u32) {
        let rec = self.engine.job(job).await.unwrap();
        let s = rec.step(step).unwrap();
        self.engine.publish(&s.outbox_id()).await.unwrap();
        self.engine.ack(call(job, step, attempt)).await.unwrap();
        let out = self
            .engine
            .complete(call(job, step, attempt), json!({"done": step}))
            .await
            .unwrap();
        assert_eq!(
            self.engine.publish_all(&out.to_publish).await,
            out.to_publish.len()
        );
    }
}

fn failure(error: &str, retryable: bool) -> Failure {
    Failure {
        error: error.into(),
        retryable,
    }
}

#[tokio::test]
async fn a_retry_gets_its_directive_even_when_an_earlier_step_took_as_many_attempts() {
    // ocr needed two attempts; embed's retry is its attempt 2 too. The retry is recognised
    // by comparing with embed's own attempt, not with another step's.
    let r = rig();
    let job = r.submitted("two-twos").await;
    let rec = r.engine.job(&job).await.unwrap();
    r.engine.publish(&rec.steps[0].outbox_id()).await.unwrap();
    let out = r
        .engine
        .fail(call(&job, "ocr", 1), failure("flaky", true))
        .await
        .unwrap();
    r.engine.publish_all(&out.to_publish).await;
    r.engine.ack(call(&job, "ocr", 2)).await.unwrap();
    let out = r
        .engine
        .complete(call(&job, "ocr", 2), json!({"text": "t"}))
        .await
        .unwrap();
    r.engine.publish_all(&out.to_publish).await;
    r.engine.ack(call(&job, "embed", 1)).await.unwrap();
    let out = r
        .engine
        .fail(call(&job, "embed", 1), failure("gpu busy", true))
        .await
        .unwrap();
    assert_eq!(
        (out.value.status, out.value.attempt),
        (StepStatus::Queued, 2)
    );
    assert_eq!(out.to_publish, vec![OutboxId::for_attempt(&job, 1, 2)]);
    let rec = r.engine.job(&job).await.unwrap();
    let e = rec
        .entry(&out.to_publish[0])
        .expect("the retry's directive");
    assert_eq!(e.status, OutboxStatus::Pending);
    assert_eq!(e.directive.input, Some(json!({"text": "t"}).into()));
}

#[tokio::test]
async fn a_step_succeeding_before_its_successor_rows_exist_does_not_end_the_job() {
    // An interrupted intake wrote ocr's row only: ocr succeeding is not the job's end.
    let r = rig();
    let job = r.submitted("short").await;
    let mut rec = r.engine.job(&job).await.unwrap();
    rec.steps.truncate(1);
    rec.steps[0].status = StepStatus::Running;
    let mut done = rec.steps[0].clone();
    done.status = StepStatus::Succeeded;
    done.result = Some(json!({"text": "t"}).into());
    let mut c = Changes::default();
    let ids = apply_step(&rec, &mut c, done, T0.plus(Millis(5)));
    assert!(ids.is_empty(), "{ids:?}");
    assert_eq!(
        c.job.map(|j| j.status),
        Some(JobStatus::InProgress),
        "started, not succeeded"
    );
    assert_eq!(c.steps.len(), 1);
}

#[tokio::test]
async fn the_last_step_succeeding_settles_stale_entries_and_records_its_own_as_sent() {
    let r = rig();
    let job = r.submitted("last").await;
    r.run_step(&job, "ocr", 1).await;
    r.run_step(&job, "embed", 1).await;
    let mut rec = r.engine.job(&job).await.unwrap();
    // `index` is RUNNING at attempt 2. Its attempt 1 entry is still PENDING (the write
    // that superseded it was lost), and so is its attempt 2 entry (the send was never
    // recorded; the ACK that would have recorded it was lost too).
    let first = OutboxId::for_attempt(&job, 2, 1);
    let current = OutboxId::for_attempt(&job, 2, 2);
    let mut stale = rec.entry(&first).unwrap().clone();
    stale.status = OutboxStatus::Pending;
    stale.sent_at = None;
    let mut mine = stale.clone();
    mine.id = current.clone();
    mine.attempt = 2;
    rec.outbox.retain(|e| e.id != first);
    rec.outbox.push(stale);
    rec.outbox.push(mine);
    rec.steps[2].attempt = 2;
    rec.steps[2].status = StepStatus::Running;
    let mut done = rec.steps[2].clone();
    done.status = StepStatus::Succeeded;
    let now = T0.plus(Millis(50));
    let mut c = Changes::default();
    assert!(apply_step(&rec, &mut c, done, now).is_empty());
    assert_eq!(c.job.as_ref().map(|j| j.status), Some(JobStatus::Succeeded));
    let written = |id: &OutboxId| c.outbox.iter().find(|e| &e.id == id).cloned();
    assert_eq!(
        written(&current).map(|e| e.status),
        Some(OutboxStatus::Sent)
    );
    let settled = written(&first).expect("the stale entry is settled");
    assert_eq!(settled.status, OutboxStatus::Dead);
    assert!(
        settled
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("job succeeded"),
        "{:?}",
        settled.last_error
    );
    assert_eq!(
        c.outbox.len(),
        2,
        "SENT entries are left alone: {:?}",
        c.outbox
    );
}

#[tokio::test]
async fn marking_a_step_delivered_touches_only_its_own_entry() {
    let r = rig();
    let job = r.submitted("own-entry").await;
    let rec = r.engine.job(&job).await.unwrap();
    let now = T0.plus(Millis(5));
    // The changes already hold another step's new directive.
    let mut other = rec.outbox[0].clone();
    other.id = OutboxId::for_attempt(&job, 1, 1);
    other.step_index = 1;
    let mut c = Changes::default();
    c.put_outbox(other.clone());
    let mut initiated = rec.steps[0].clone();
    initiated.status = StepStatus::Initiated;
    mark_delivered(&rec, &mut c, &initiated, now);
    assert_eq!(c.outbox.len(), 2, "{:?}", c.outbox);
    assert_eq!(c.outbox[0], other, "the other entry is untouched");
    assert_eq!(
        (c.outbox[1].id.clone(), c.outbox[1].status),
        (rec.outbox[0].id.clone(), OutboxStatus::Sent)
    );
}

#[tokio::test]
async fn a_terminal_job_gets_its_live_steps_cancelled_and_counted() {
    let r = rig();
    let job = r.submitted("cancelled-live").await;
    let rec = r.engine.job(&job).await.unwrap();
    r.engine.publish(&rec.outbox[0].id).await.unwrap();
    // The job row says CANCELLED; the step writes were lost (no entry is PENDING).
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.outbox[0].status, OutboxStatus::Sent);
    let cancelled = rec.job.on_cancel("client asked", T0).unwrap();
    r.drift(vec![], vec![], Some(cancelled)).await;
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(out.value.repaired, 3, "{:?}", out.value);
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Cancelled);
    assert!(
        rec.steps.iter().all(|s| s.status == StepStatus::Cancelled),
        "{:?}",
        rec.steps.iter().map(|s| s.status).collect::<Vec<_>>()
    );
    assert_eq!(rec.outbox[0].status, OutboxStatus::Sent);
}

#[tokio::test]
async fn a_terminal_job_gets_a_pending_directive_settled_even_with_no_live_step() {
    let r = rig();
    let job = r.submitted("cancelled-pending").await;
    let rec = r.engine.job(&job).await.unwrap();
    // Steps and job were written CANCELLED; the write settling the directive was lost.
    let steps = rec.steps.iter().map(|s| s.on_cancel(T0).unwrap()).collect();
    let cancelled = rec.job.on_cancel("client asked", T0).unwrap();
    r.drift(steps, vec![], Some(cancelled)).await;
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(out.value.repaired, 0, "{:?}", out.value);
    assert!(out.to_publish.is_empty());
    let rec = r.engine.job(&job).await.unwrap();
    let e = &rec.outbox[0];
    assert_eq!(e.status, OutboxStatus::Dead);
    assert!(
        e.last_error
            .as_deref()
            .unwrap_or("")
            .contains("job is CANCELLED"),
        "{:?}",
        e.last_error
    );
}

#[tokio::test]
async fn a_queued_step_whose_directive_was_sent_is_initiated() {
    // The publication's step write was lost; its entry says SENT.
    let r = rig();
    let job = r.submitted("sent-queued").await;
    let rec = r.engine.job(&job).await.unwrap();
    let sent_at = T0.plus(Millis(5));
    let sent = rec.outbox[0].on_sent(sent_at).unwrap();
    r.drift(vec![], vec![sent], None).await;
    r.clock.advance(Millis(10));
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(
        (out.value.repaired, out.value.retried, out.value.failed),
        (1, 0, 0),
        "{:?}",
        out.value
    );
    assert!(out.to_publish.is_empty());
    let rec = r.engine.job(&job).await.unwrap();
    let s = &rec.steps[0];
    assert_eq!(s.status, StepStatus::Initiated);
    assert_eq!(
        s.ack_deadline,
        Some(sent_at.plus(s.ack_timeout)),
        "due from sentAt"
    );
    assert_eq!(rec.job.status, JobStatus::InProgress);
}

#[tokio::test]
async fn a_succeeded_step_whose_entry_is_still_pending_gets_it_marked_sent() {
    let r = rig();
    let job = r.submitted("succeeded-pending").await;
    r.run_step(&job, "ocr", 1).await;
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.steps[1].status, StepStatus::Initiated);
    let mut lost = rec.outbox[0].clone();
    assert_eq!(lost.status, OutboxStatus::Sent);
    lost.status = OutboxStatus::Pending;
    lost.sent_at = None;
    r.drift(vec![], vec![lost], None).await;
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(out.value.repaired, 1, "{:?}", out.value);
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.outbox[0].status, OutboxStatus::Sent);
    assert_eq!(rec.steps[1].status, StepStatus::Initiated, "left alone");
}

#[tokio::test]
async fn a_retry_by_the_sweeper_is_not_also_counted_as_a_repair() {
    // ocr RUNNING with its entry still PENDING (the write marking it SENT was lost), and
    // its lease expires: the retry settles the old entry; nothing is repaired twice.
    let r = rig();
    let job = r.submitted("retry-not-repair").await;
    r.engine.ack(call(&job, "ocr", 1)).await.unwrap();
    let rec = r.engine.job(&job).await.unwrap();
    let mut lost = rec.outbox[0].clone();
    lost.status = OutboxStatus::Pending;
    lost.sent_at = None;
    r.drift(vec![], vec![lost], None).await;
    r.clock.advance(Millis::from_secs(121));
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(
        (out.value.retried, out.value.repaired),
        (1, 0),
        "{:?}",
        out.value
    );
    let rec = r.engine.job(&job).await.unwrap();
    let old = rec.entry(&OutboxId::for_attempt(&job, 0, 1)).unwrap();
    assert_eq!(old.status, OutboxStatus::Dead);
    assert_eq!(out.to_publish, vec![OutboxId::for_attempt(&job, 0, 2)]);
}

#[test]
fn a_job_whose_steps_all_succeeded_is_succeeded() {
    let rec = |statuses: &[StepStatus]| {
        let new = crate::testkit::new_job("acme", "derived", 0, T0);
        let mut steps = new.steps.clone();
        steps.truncate(statuses.len());
        for (s, &status) in steps.iter_mut().zip(statuses) {
            s.status = status;
        }
        JobRecord {
            job: new.job,
            steps,
            outbox: vec![],
        }
    };
    use StepStatus::*;
    assert_eq!(
        derived_status(&rec(&[Succeeded, Succeeded, Succeeded])),
        JobStatus::Succeeded
    );
    assert_eq!(
        derived_status(&rec(&[Succeeded, Running, Pending])),
        JobStatus::InProgress
    );
    assert_eq!(derived_status(&rec(&[])), JobStatus::Accepted);
    assert_eq!(
        derived_status(&rec(&[Succeeded, Failed, Cancelled])),
        JobStatus::Failed
    );
    assert_eq!(
        derived_status(&rec(&[Succeeded, Cancelled, Cancelled])),
        JobStatus::Cancelled
    );
}

#[tokio::test]
async fn a_lost_job_write_after_the_last_step_succeeded_is_repaired() {
    let r = rig();
    let job = r.submitted("last-write-lost").await;
    r.run_step(&job, "ocr", 1).await;
    r.run_step(&job, "embed", 1).await;
    r.engine.ack(call(&job, "index", 1)).await.unwrap();
    // complete writes the step, then the job: only the step lands.
    r.store.inject(Fault::Tear(1));
    assert!(r
        .engine
        .complete(call(&job, "index", 1), json!({"ok": true}))
        .await
        .is_err());
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(
        (rec.steps[2].status, rec.job.status),
        (StepStatus::Succeeded, JobStatus::InProgress)
    );
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(out.value.repaired, 1, "{:?}", out.value);
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_queued_step_whose_directive_is_only_backing_off_is_not_retried() {
    // Publication keeps failing transiently: the entry stays PENDING (not DEAD), so the
    // step's attempt has not ended, however long it waits.
    let r = rig();
    let job = r.submitted("backing-off").await;
    let delay = r.engine.config().publish_retry.delay;
    r.clock.advance(Millis(delay.0 + 1_000));
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(
        (out.value.retried, out.value.failed, out.value.repaired),
        (0, 0, 0),
        "{:?}",
        out.value
    );
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(
        (rec.steps[0].status, rec.steps[0].attempt),
        (StepStatus::Queued, 1)
    );
    assert_eq!(rec.outbox[0].status, OutboxStatus::Pending);
}

#[tokio::test]
async fn a_job_whose_job_write_was_lost_follows_its_steps_after_a_retry() {
    // The publication wrote the step and the entry, not the job (still ACCEPTED); then
    // the ACK never came. After the retry the job's status is the one its steps imply.
    let r = rig();
    let job = r.submitted("torn-then-retried").await;
    let rec = r.engine.job(&job).await.unwrap();
    r.store.inject(Fault::Tear(2));
    assert!(r.engine.publish(&rec.outbox[0].id).await.is_err());
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(
        (rec.steps[0].status, rec.outbox[0].status, rec.job.status),
        (
            StepStatus::Initiated,
            OutboxStatus::Sent,
            JobStatus::Accepted
        )
    );
    r.clock.advance(Millis::from_secs(31));
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(
        (out.value.retried, out.value.repaired),
        (1, 0),
        "{:?}",
        out.value
    );
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.steps[0].attempt, 2);
    assert_eq!(rec.job.status, derived_status(&rec));
}

#[tokio::test]
async fn a_lost_job_write_after_a_fatal_failure_fails_the_job_with_the_steps_error() {
    let r = rig();
    let job = r.submitted("fatal-torn").await;
    let rec = r.engine.job(&job).await.unwrap();
    r.engine.publish(&rec.outbox[0].id).await.unwrap();
    // fail writes ocr FAILED, embed and index CANCELLED, then the job: only ocr lands.
    r.store.inject(Fault::Tear(1));
    assert!(r
        .engine
        .fail(call(&job, "ocr", 1), failure("corrupt pdf", false))
        .await
        .is_err());
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(
        (rec.steps[0].status, rec.steps[1].status, rec.job.status),
        (
            StepStatus::Failed,
            StepStatus::Pending,
            JobStatus::InProgress
        )
    );
    let out = r.engine.sweep_job(&job).await.unwrap();
    assert_eq!(out.value.repaired, 1, "{:?}", out.value);
    let rec = r.engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Failed);
    let reason = rec.job.error.as_deref().unwrap_or("");
    assert!(reason.contains("corrupt pdf"), "{reason}");
    assert!(rec.steps[1..]
        .iter()
        .all(|s| s.status == StepStatus::Cancelled));
}
