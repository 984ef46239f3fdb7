//! Worker calls (`ack`, `heartbeat`, `complete`, `fail`) and cancellation.

use crate::ids::JobId;
use crate::job::JobStatus;
use crate::record::{Changes, JobRecord};
use crate::step::{Failure, Step, StepStatus};
use crate::transition::TransitionError;

use super::consequences::{apply_step, end_job};
use super::{Engine, EngineError, Outcome};

/// Who calls and for which attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCall<'a> {
    /// The job.
    pub job_id: &'a JobId,
    /// The step id.
    pub step_id: &'a str,
    /// The attempt the worker acts on (from the directive).
    pub attempt: u32,
    /// The worker's id, if it gives one.
    pub worker_id: Option<&'a str>,
}

fn step_of<'r>(rec: &'r JobRecord, call: &WorkerCall<'_>) -> Result<&'r Step, EngineError> {
    rec.step(call.step_id)
        .ok_or_else(|| EngineError::StepNotFound {
            job_id: call.job_id.clone(),
            step_id: call.step_id.to_owned(),
        })
}

impl Engine {
    /// A worker acknowledges a step: it is `RUNNING` under the worker's lease.
    pub async fn ack(&self, call: WorkerCall<'_>) -> Result<Step, EngineError> {
        self.worker_op(&call, |s, now| s.on_ack(call.attempt, call.worker_id, now))
            .await
            .map(|o| o.value)
    }

    /// The lease holder extends its lease.
    pub async fn heartbeat(&self, call: WorkerCall<'_>) -> Result<Step, EngineError> {
        self.worker_op(&call, |s, now| {
            s.on_heartbeat(call.attempt, call.worker_id, now)
        })
        .await
        .map(|o| o.value)
    }

    /// The worker finished the step with `result`; the next step's directive is written
    /// (returned in `to_publish`), or the job succeeds after the last step. Repeating the
    /// same completion is answered with the step as it is.
    pub async fn complete(
        &self,
        call: WorkerCall<'_>,
        result: impl Into<crate::json::Json> + Send,
    ) -> Result<Outcome<Step>, EngineError> {
        let result = result.into();
        self.worker_op(&call, |s, now| {
            if s.status == StepStatus::Succeeded && s.attempt == call.attempt {
                return Ok(s.clone());
            }
            s.on_complete(call.attempt, call.worker_id, result.clone(), now)
        })
        .await
    }

    /// The worker failed the step: retried with a new directive, or failed for good (and
    /// the job with it).
    pub async fn fail(
        &self,
        call: WorkerCall<'_>,
        failure: Failure,
    ) -> Result<Outcome<Step>, EngineError> {
        self.worker_op(&call, |s, now| {
            s.on_fail(call.attempt, call.worker_id, &failure, now)
        })
        .await
    }

    /// Cancels a job that has not finished: every live step is cancelled and pending
    /// directives are settled.
    pub async fn cancel(&self, job_id: &JobId, reason: &str) -> Result<JobRecord, EngineError> {
        self.update_job(job_id, |rec, now| {
            if rec.job.status.is_terminal() {
                return Err(rec.job.on_cancel(reason, now).err().map_or(
                    EngineError::JobNotFound(job_id.clone()),
                    EngineError::Transition,
                ));
            }
            let mut c = Changes::default();
            end_job(rec, &mut c, JobStatus::Cancelled, reason, None, now);
            Ok((c, ()))
        })
        .await?;
        self.job(job_id).await
    }

    async fn worker_op<F>(
        &self,
        call: &WorkerCall<'_>,
        transition: F,
    ) -> Result<Outcome<Step>, EngineError>
    where
        F: Fn(&Step, crate::time::Timestamp) -> Result<Step, TransitionError> + Send + Sync,
    {
        self.update_job(call.job_id, |rec, now| {
            let step = step_of(rec, call)?;
            let next = transition(step, now)?;
            let mut c = Changes::default();
            if &next == step {
                return Ok((
                    c,
                    Outcome {
                        value: next,
                        to_publish: Vec::new(),
                    },
                ));
            }
            let to_publish = apply_step(rec, &mut c, next.clone(), now);
            Ok((
                c,
                Outcome {
                    value: next,
                    to_publish,
                },
            ))
        })
        .await
    }
}
