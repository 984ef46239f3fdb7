//! The sweepers: steps whose ACK never came or whose lease expired are retried (or fail),
//! and jobs that drifted from their steps are repaired.
//!
//! Drift, and its repair, in the order a non-atomic store can leave it (steps, then
//! outbox, then job):
//! 1. a `QUEUED` step with no directive for its attempt → write the directive;
//! 2. a `QUEUED` step whose directive is `SENT` → `INITIATED` (ACK due from `sentAt`);
//!    one whose directive is `DEAD` (it could not be published) → once the publish retry
//!    delay has passed since it died, the attempt ends as if its ACK had not come: retry
//!    with a new directive, or `FAILED` with the publication error;
//! 3. a `SUCCEEDED` step whose successor is still `PENDING` → queue the successor;
//! 4. a job whose status differs from the one its steps imply → move it there (a terminal
//!    job instead cancels any step still live).

use crate::ids::{JobId, Partition};
use crate::job::JobStatus;
use crate::outbox::{OutboxEntry, OutboxStatus};
use crate::record::{Changes, JobRecord};
use crate::step::{Step, StepStatus};
use crate::time::Timestamp;

use super::consequences::{apply_step, end_job, mark_delivered, previous_result};
use super::intake::directive_entry;
use super::{Engine, EngineConfig, EngineError, Outcome};

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Jobs examined.
    pub jobs: usize,
    /// Steps sent back to `QUEUED` for another attempt.
    pub retried: usize,
    /// Steps failed for good.
    pub failed: usize,
    /// Drift repairs made.
    pub repaired: usize,
    /// Jobs that could not be swept (store errors, contention).
    pub errors: usize,
    /// Partitions retired: their month was over and they held nothing live.
    pub retired: usize,
    /// `PENDING` entries so long overdue that the store was asked to list them again
    /// ([`crate::Store::index_pending`]; see [`EngineConfig::reindex_after`]).
    pub reindexed: usize,
}

impl SweepReport {
    fn add(&mut self, o: SweepReport) {
        self.jobs += o.jobs;
        self.retried += o.retried;
        self.failed += o.failed;
        self.repaired += o.repaired;
        self.errors += o.errors;
        self.retired += o.retired;
        self.reindexed += o.reindexed;
    }
}

/// The status a job's steps imply.
pub fn derived_status(rec: &JobRecord) -> JobStatus {
    let s = &rec.steps;
    if s.iter().any(|x| x.status == StepStatus::Failed) {
        JobStatus::Failed
    } else if !s.is_empty() && s.iter().all(|x| x.status == StepStatus::Succeeded) {
        JobStatus::Succeeded
    } else if s.iter().any(|x| x.status == StepStatus::Cancelled) {
        JobStatus::Cancelled
    } else if s.iter().any(|x| {
        matches!(
            x.status,
            StepStatus::Initiated | StepStatus::Running | StepStatus::Succeeded
        )
    }) {
        JobStatus::InProgress
    } else {
        JobStatus::Accepted
    }
}

impl Engine {
    /// Sweeps one job at the clock's time. A `QUEUED` step's `PENDING` entry the sweep
    /// leaves alone that has been due for dispatchers longer than
    /// [`EngineConfig::reindex_after`] is handed to [`crate::Store::index_pending`], so a
    /// store whose outbox index lost it lists it again; a failure there is left to the
    /// next sweep.
    pub async fn sweep_job(&self, id: &JobId) -> Result<Outcome<SweepReport>, EngineError> {
        let (mut out, overdue) = self
            .update_job(id, |rec, now| {
                let (c, out) = plan_sweep(rec, now, &self.config);
                let overdue = overdue_entries(rec, &c, now, &self.config);
                Ok((c, (out, overdue)))
            })
            .await?;
        for e in &overdue {
            if self.store.index_pending(e).await.is_ok() {
                out.value.reindexed += 1;
            }
        }
        Ok(out)
    }

    /// Sweeps every live job of a partition, reading their ids `batch_size` at a time.
    pub async fn sweep_partition(
        &self,
        partition: &Partition,
    ) -> Result<Outcome<SweepReport>, EngineError> {
        let mut total = Outcome {
            value: SweepReport::default(),
            to_publish: Vec::new(),
        };
        let batch = self.config.batch_size.max(1);
        let mut after: Option<JobId> = None;
        loop {
            let ids = self
                .store
                .active_jobs(partition, after.clone(), batch)
                .await?;
            for id in &ids {
                match self.sweep_job(id).await {
                    Ok(o) => {
                        total.value.add(o.value);
                        total.to_publish.extend(o.to_publish);
                    }
                    Err(_) => total.value.errors += 1,
                }
            }
            if ids.len() < batch {
                return Ok(total);
            }
            after = ids.into_iter().last();
        }
    }

    /// Sweeps every partition. A partition that cannot be read counts one error and the
    /// sweep goes on with the next: one failing partition never stops the others. A
    /// partition whose month is over and that held no live job is retired
    /// ([`crate::Store::retire_partition`]): no more sweeps, dispatch or leases for it.
    pub async fn sweep_all(&self) -> Result<Outcome<SweepReport>, EngineError> {
        let mut total = Outcome {
            value: SweepReport::default(),
            to_publish: Vec::new(),
        };
        let now = self.clock.now();
        for p in self.store.partitions().await? {
            match self.sweep_partition(&p).await {
                Ok(o) => {
                    let idle = o.value.jobs == 0 && o.value.errors == 0;
                    total.value.add(o.value);
                    total.to_publish.extend(o.to_publish);
                    if idle && p.is_over(now) {
                        match self.store.retire_partition(&p).await {
                            Ok(true) => total.value.retired += 1,
                            Ok(false) => {}
                            Err(_) => total.value.errors += 1,
                        }
                    }
                }
                Err(_) => total.value.errors += 1,
            }
        }
        Ok(total)
    }
}

/// The next state of `s` if its attempt has ended: past its ACK deadline or lease, or
/// (`QUEUED`) with its directive `DEAD` for longer than the publish retry delay.
fn ended_attempt(rec: &JobRecord, s: &Step, now: Timestamp, config: &EngineConfig) -> Option<Step> {
    if s.deadline().is_some_and(|d| now >= d) {
        return s.on_timeout(now).ok();
    }
    let dead = rec
        .entry(&s.outbox_id())
        .filter(|e| s.status == StepStatus::Queued && e.status == OutboxStatus::Dead)?;
    let error = dead.last_error.as_deref().unwrap_or("no error recorded");
    s.on_directive_dead(
        s.attempt,
        error,
        dead.updated_at,
        config.publish_retry.delay,
        now,
    )
    .ok()
}

/// The `PENDING` entries of `QUEUED` steps in `rec` that have been due for dispatchers
/// (`nextAttemptAt` plus the dispatch grace) for [`EngineConfig::reindex_after`] or longer
/// at `now`, leaving out those whose step or entry `planned` writes.
fn overdue_entries(
    rec: &JobRecord,
    planned: &Changes,
    now: Timestamp,
    config: &EngineConfig,
) -> Vec<OutboxEntry> {
    if rec.job.status.is_terminal() {
        return Vec::new();
    }
    let overdue_at = |e: &OutboxEntry| {
        e.next_attempt_at
            .plus(config.dispatch_grace)
            .plus(config.reindex_after)
    };
    rec.steps
        .iter()
        .filter(|s| s.status == StepStatus::Queued)
        .filter(|s| !planned.steps.iter().any(|x| x.index == s.index))
        .filter_map(|s| rec.entry(&s.outbox_id()))
        .filter(|e| e.status == OutboxStatus::Pending && now >= overdue_at(e))
        .filter(|e| !planned.outbox.iter().any(|x| x.id == e.id))
        .cloned()
        .collect()
}

/// The writes a sweep of `rec` at `now` makes.
pub(super) fn plan_sweep(
    rec: &JobRecord,
    now: Timestamp,
    config: &EngineConfig,
) -> (Changes, Outcome<SweepReport>) {
    let intake_grace = config.intake_grace;
    let mut c = Changes::default();
    let mut report = SweepReport {
        jobs: 1,
        ..SweepReport::default()
    };
    let mut to_publish = Vec::new();

    if (rec.steps.len() as u32) < rec.job.step_count && !rec.job.status.is_terminal() {
        // Intake was interrupted: the client got no 202 and its retry will complete the
        // rows. Only once that is unlikely to come is the job failed.
        if now >= rec.job.created_at.plus(intake_grace) {
            let reason = "intake did not complete (some step rows were never written)";
            end_job(rec, &mut c, JobStatus::Failed, reason, None, now);
            report.failed += 1;
        }
        return (
            c,
            Outcome {
                value: report,
                to_publish,
            },
        );
    }

    if rec.job.status.is_terminal() {
        // A terminal job keeps its status; steps still live are cancelled.
        if rec.steps.iter().any(|s| !s.status.is_terminal())
            || rec.outbox.iter().any(|e| e.status == OutboxStatus::Pending)
        {
            let reason = format!("job is {}", rec.job.status.as_str());
            for s in rec.steps.iter().filter(|s| !s.status.is_terminal()) {
                if let Ok(x) = s.on_cancel(now) {
                    c.put_step(x);
                    report.repaired += 1;
                }
            }
            for e in rec
                .outbox
                .iter()
                .filter(|e| e.status == OutboxStatus::Pending)
            {
                if let Ok(x) = e.on_superseded(&reason, now) {
                    c.put_outbox(x);
                }
            }
        }
        return (
            c,
            Outcome {
                value: report,
                to_publish,
            },
        );
    }

    // Attempts that ended first — a deadline passed (no ACK, lease expired) or the
    // directive could not be published — each changing at most one step.
    for s in &rec.steps {
        let Some(next) = ended_attempt(rec, s, now, config) else {
            continue;
        };
        if next.status == StepStatus::Failed {
            report.failed += 1;
        } else {
            report.retried += 1;
        }
        to_publish.extend(apply_step(rec, &mut c, next, now));
        if c.job.as_ref().is_some_and(|j| j.status.is_terminal()) {
            return (
                c,
                Outcome {
                    value: report,
                    to_publish,
                },
            );
        }
    }

    // Drift repairs on the steps the timeouts left alone.
    for s in &rec.steps {
        if c.steps.iter().any(|x| x.index == s.index) {
            continue;
        }
        match s.status {
            StepStatus::Queued => match rec.entry(&s.outbox_id()) {
                None => {
                    let e = directive_entry(&rec.job, s, previous_result(rec, s.index), now);
                    to_publish.push(e.id.clone());
                    c.put_outbox(e);
                    report.repaired += 1;
                }
                Some(e) if e.status == OutboxStatus::Sent => {
                    if let Ok(x) = s.on_published(s.attempt, e.sent_at.unwrap_or(now)) {
                        to_publish.extend(apply_step(rec, &mut c, x, now));
                        report.repaired += 1;
                    }
                }
                Some(_) => {}
            },
            // A step past its directive whose entry is still PENDING: the write that
            // settles it was lost (a commit applied in part). It evidently arrived.
            StepStatus::Initiated | StepStatus::Running
                if rec
                    .entry(&s.outbox_id())
                    .is_some_and(|e| e.status == OutboxStatus::Pending) =>
            {
                mark_delivered(rec, &mut c, s, now);
                report.repaired += 1;
            }
            StepStatus::Succeeded => {
                if rec
                    .entry(&s.outbox_id())
                    .is_some_and(|e| e.status == OutboxStatus::Pending)
                {
                    mark_delivered(rec, &mut c, s, now);
                    report.repaired += 1;
                }
                let next = rec.steps.iter().find(|n| n.index == s.index + 1);
                if next.is_some_and(|n| n.status == StepStatus::Pending) {
                    // Re-applying the success writes the successor's directive.
                    let mut probe = Changes::default();
                    let extra = apply_step(rec, &mut probe, s.clone(), now);
                    for x in probe.steps.into_iter().filter(|x| x.index != s.index) {
                        c.put_step(x);
                    }
                    for e in probe.outbox {
                        c.put_outbox(e);
                    }
                    if probe.job.is_some() && c.job.is_none() {
                        c.job = probe.job;
                    }
                    to_publish.extend(extra);
                    report.repaired += 1;
                }
            }
            _ => {}
        }
    }

    // The job follows its steps.
    let mut view = rec.clone();
    for s in &c.steps {
        if let Some(x) = view.steps.iter_mut().find(|x| x.index == s.index) {
            *x = s.clone();
        }
    }
    let job = c.job.clone().unwrap_or_else(|| rec.job.clone());
    let want = derived_status(&view);
    if want != job.status && !job.status.is_terminal() {
        report.repaired += 1;
        match want {
            JobStatus::InProgress => {
                if let Ok(j) = job.on_start(now) {
                    c.job = Some(j);
                }
            }
            JobStatus::Succeeded => {
                let started = job.on_start(now).unwrap_or(job);
                if let Ok(j) = started.on_succeeded(now) {
                    c.job = Some(j);
                }
            }
            JobStatus::Failed | JobStatus::Cancelled => {
                let reason = view
                    .steps
                    .iter()
                    .find(|s| s.status == StepStatus::Failed)
                    .and_then(|s| s.error.clone())
                    .unwrap_or_else(|| "a step was cancelled".into());
                end_job(&view, &mut c, want, &reason, None, now);
            }
            JobStatus::Accepted => report.repaired -= 1,
        }
    }
    (
        c,
        Outcome {
            value: report,
            to_publish,
        },
    )
}
