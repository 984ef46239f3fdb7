//! [`Observer`]: how the engine reports what it did, for metrics. Transitions are found by
//! comparing the rows a commit wrote with the rows it loaded.

use crate::job::JobStatus;
use crate::outbox::OutboxStatus;
use crate::record::{Changes, JobRecord};
use crate::step::StepStatus;
use crate::time::Millis;

/// Receives engine events. Every method has a no-op default.
pub trait Observer: Send + Sync {
    /// A job row changed status (`from` is `None` for a new job).
    fn job_transition(&self, _from: Option<JobStatus>, _to: JobStatus) {}
    /// A step row changed status.
    fn step_transition(&self, _from: Option<StepStatus>, _to: StepStatus) {}
    /// An outbox entry changed status.
    fn outbox_transition(&self, _from: Option<OutboxStatus>, _to: OutboxStatus) {}
    /// A publication finished (by the engine's clock).
    fn published(&self, _ok: bool, _latency: Millis) {}
}

/// Ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

pub(super) fn report(o: &dyn Observer, before: &JobRecord, after: &Changes) {
    for s in &after.steps {
        let from = before
            .steps
            .iter()
            .find(|x| x.index == s.index)
            .map(|x| x.status);
        if from != Some(s.status) {
            o.step_transition(from, s.status);
        }
    }
    for e in &after.outbox {
        let from = before.entry(&e.id).map(|x| x.status);
        if from != Some(e.status) {
            o.outbox_transition(from, e.status);
        }
    }
    if let Some(j) = &after.job {
        if j.status != before.job.status {
            o.job_transition(Some(before.job.status), j.status);
        }
    }
}

/// The statuses of a new job's rows, kept to report them once the store has them.
pub(super) struct NewRows {
    job: JobStatus,
    steps: Vec<StepStatus>,
    outbox: OutboxStatus,
}

impl NewRows {
    pub(super) fn of(new: &crate::record::NewJob) -> NewRows {
        NewRows {
            job: new.job.status,
            steps: new.steps.iter().map(|s| s.status).collect(),
            outbox: new.outbox.status,
        }
    }

    pub(super) fn report(&self, o: &dyn Observer) {
        o.job_transition(None, self.job);
        for &s in &self.steps {
            o.step_transition(None, s);
        }
        o.outbox_transition(None, self.outbox);
    }
}
