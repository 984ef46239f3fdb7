//! Worker calls (`ack`, `heartbeat`, `complete`, `fail`) and cancellation.

use crate::ids::JobId;
use crate::job::JobStatus;
use crate::record::{Changes, JobRecord};
use crate::step::{Failure, Step};
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
    /// same completion is answered with the step as it is; repeating it with another result
    /// is [`TransitionError::AlreadyApplied`].
    pub async fn complete(
        &self,
        call: WorkerCall<'_>,
        result: impl Into<crate::json::Json> + Send,
    ) -> Result<Outcome<Step>, EngineError> {
        let result = result.into();
        self.worker_op(&call, |s, now| {
            s.on_complete(call.attempt, call.worker_id, result.clone(), now)
        })
        .await
    }

    /// The worker failed the step: retried with a new directive, or failed for good (and
    /// the job with it). Repeating the same failure of an attempt it ended is answered with
    /// the step as it is; repeating it with another error or flag is
    /// [`TransitionError::AlreadyApplied`].
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::json::Json;
    use crate::memory::{ManualClock, MemoryPublisher, MemoryStore};
    use crate::step::StepStatus;
    use crate::testkit::command;
    use crate::time::Timestamp;

    const T0: Timestamp = Timestamp(1_709_596_800_000);

    /// An engine over the memory adapters with one job whose `ocr` step was published.
    async fn published_job() -> (Engine, JobId) {
        let engine = Engine::new(
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryPublisher::new()),
            Arc::new(ManualClock::new(T0)),
        );
        let sub = engine.submit(command("acme", "k", 0)).await.unwrap();
        engine.publish_all(&sub.to_publish).await;
        (engine, sub.value.job_id)
    }

    fn call<'a>(job: &'a JobId, attempt: u32, worker_id: Option<&'a str>) -> WorkerCall<'a> {
        WorkerCall {
            job_id: job,
            step_id: "ocr",
            attempt,
            worker_id,
        }
    }

    fn refusal<T: std::fmt::Debug>(r: Result<T, EngineError>) -> TransitionError {
        match r {
            Err(EngineError::Transition(t)) => t,
            other => panic!("expected a refused transition, found {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_anonymous_call_leaves_a_step_leased_to_a_named_worker_alone() {
        let (engine, job) = published_job().await;
        engine.ack(call(&job, 1, Some("w1"))).await.unwrap();
        let before = engine.job(&job).await.unwrap();
        let e = refusal(engine.complete(call(&job, 1, None), json!({"x": 1})).await);
        assert!(
            matches!(&e, TransitionError::LeaseHeldByOther { holder, caller: None, .. } if holder == "w1"),
            "{e:?}"
        );
        let e = refusal(engine.ack(call(&job, 1, None)).await);
        assert!(
            matches!(e, TransitionError::LeaseHeldByOther { .. }),
            "{e:?}"
        );
        assert_eq!(engine.job(&job).await.unwrap(), before);
    }

    #[tokio::test]
    async fn a_repeated_complete_writes_nothing_and_a_different_one_is_refused() {
        let (engine, job) = published_job().await;
        engine.ack(call(&job, 1, Some("w1"))).await.unwrap();
        let first = engine
            .complete(call(&job, 1, Some("w1")), json!({"pages": 3}))
            .await
            .unwrap();
        assert_eq!(first.to_publish.len(), 1, "embed's directive");
        let after = engine.job(&job).await.unwrap();
        // The same result, even from another worker: the step as it is, nothing written.
        let again = engine
            .complete(call(&job, 1, Some("w2")), json!({"pages": 3}))
            .await
            .unwrap();
        assert_eq!(
            (&again.value, again.to_publish),
            (after.step("ocr").unwrap(), Vec::new())
        );
        let e = refusal(
            engine
                .complete(call(&job, 1, Some("w1")), json!({"pages": 4}))
                .await,
        );
        assert!(
            matches!(e, TransitionError::AlreadyApplied { attempt: 1, .. }),
            "{e:?}"
        );
        let now = engine.job(&job).await.unwrap();
        assert_eq!(now, after);
        assert_eq!(
            now.step("ocr").unwrap().result,
            Some(Json::from(json!({"pages": 3})))
        );
    }

    #[tokio::test]
    async fn a_repeated_retryable_fail_issues_no_second_directive() {
        let (engine, job) = published_job().await;
        let gpu = || Failure {
            error: "gpu busy".into(),
            retryable: true,
        };
        let first = engine.fail(call(&job, 1, Some("w1")), gpu()).await.unwrap();
        assert_eq!(
            (
                first.value.status,
                first.value.attempt,
                first.to_publish.len()
            ),
            (StepStatus::Queued, 2, 1)
        );
        let after = engine.job(&job).await.unwrap();
        let again = engine.fail(call(&job, 1, Some("w1")), gpu()).await.unwrap();
        assert_eq!(
            (&again.value, again.to_publish),
            (after.step("ocr").unwrap(), Vec::new())
        );
        let e = refusal(
            engine
                .fail(
                    call(&job, 1, Some("w1")),
                    Failure {
                        error: "gpu busy".into(),
                        retryable: false,
                    },
                )
                .await,
        );
        assert!(
            matches!(e, TransitionError::AlreadyApplied { attempt: 1, .. }),
            "{e:?}"
        );
        assert_eq!(engine.job(&job).await.unwrap(), after);
    }
}
