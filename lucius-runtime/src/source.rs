//! Where a [`crate::Worker`] gets its directives and sends its calls: the
//! [`DirectiveSource`] trait, and the in-process source of a node without a bus (pull mode).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lucius_core::engine::{PullFilter, WorkerCall};
use lucius_core::step::Failure;
use lucius_core::{Directive, EngineError, JobId, Millis};

use crate::handle::Lucius;
use crate::pull::PollError;

/// Why a worker call did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The step has moved on (another attempt, another worker's lease, cancelled, already
    /// completed with another result): stop working on this directive.
    #[error("refused: {0}")]
    Refused(String),
    /// The orchestrator could not be reached or its store failed: worth trying again.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This worker cannot act at all (its key or credentials are refused): the directive
    /// is released and the worker stops, reporting why.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl From<EngineError> for CallError {
    fn from(e: EngineError) -> CallError {
        match e {
            EngineError::Store(_) | EngineError::Contention(_) => {
                CallError::Unavailable(e.to_string())
            }
            other => CallError::Refused(other.to_string()),
        }
    }
}

/// What became of a delivered directive, for sources whose deliveries must be settled (a
/// broker's peek-lock). Sources without settlement ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The orchestrator knows the outcome, or the directive is obsolete (another attempt,
    /// another worker, a finished job): the delivery must not come back.
    Done,
    /// The outcome could not be reported, or no handler took it: release the delivery for
    /// redelivery (to this worker or another).
    Release,
}

/// A source of directives and the worker calls on them. The in-process source calls the
/// engine directly; sources over HTTP (pull) or a bus implement the same trait.
#[async_trait]
pub trait DirectiveSource: Send + Sync + 'static {
    /// The next directive; `None` once the source is closed for good.
    async fn next(&self) -> Option<Directive>;
    /// Acknowledges `directive` as `worker`: its step runs under the worker's lease.
    async fn ack(&self, directive: &Directive, worker: &str) -> Result<(), CallError>;
    /// Extends the worker's lease.
    async fn heartbeat(&self, directive: &Directive, worker: &str) -> Result<(), CallError>;
    /// Completes the step with `result`.
    async fn complete(
        &self,
        directive: &Directive,
        worker: &str,
        result: serde_json::Value,
    ) -> Result<(), CallError>;
    /// Fails the step.
    async fn fail(
        &self,
        directive: &Directive,
        worker: &str,
        failure: Failure,
    ) -> Result<(), CallError>;
    /// Settles the delivery of `directive` once the worker is done with it. The default
    /// does nothing (the in-process source has nothing to settle).
    async fn settle(&self, directive: &Directive, settlement: Settlement) {
        let _ = (directive, settlement);
    }
    /// Told by a [`crate::Worker`] without a fallback which steps it handles, before its
    /// first [`DirectiveSource::next`]: a source that can filter (pull) takes only those.
    /// The default ignores it.
    fn handles(&self, steps: &[String]) {
        let _ = steps;
    }
}

/// A shared source is a source (e.g. to keep a handle on it while a worker runs).
#[async_trait]
impl<S: DirectiveSource> DirectiveSource for Arc<S> {
    async fn next(&self) -> Option<Directive> {
        (**self).next().await
    }
    async fn ack(&self, d: &Directive, worker: &str) -> Result<(), CallError> {
        (**self).ack(d, worker).await
    }
    async fn heartbeat(&self, d: &Directive, worker: &str) -> Result<(), CallError> {
        (**self).heartbeat(d, worker).await
    }
    async fn complete(
        &self,
        d: &Directive,
        worker: &str,
        result: serde_json::Value,
    ) -> Result<(), CallError> {
        (**self).complete(d, worker, result).await
    }
    async fn fail(&self, d: &Directive, worker: &str, failure: Failure) -> Result<(), CallError> {
        (**self).fail(d, worker, failure).await
    }
    async fn settle(&self, d: &Directive, settlement: Settlement) {
        (**self).settle(d, settlement).await
    }
    fn handles(&self, steps: &[String]) {
        (**self).handles(steps)
    }
}

/// The in-process directive source of a handle in pull mode ([`Lucius::in_process`]): it
/// polls like a worker over HTTP does (claiming directives from the store's outbox, waking
/// when a call writes one) and calls straight into the engine. At-least-once like any
/// bus: a directive claimed and lost with the process is retried after its ACK deadline.
#[derive(Clone)]
pub struct InProcess {
    lucius: Lucius,
    filter: Arc<Mutex<PullFilter>>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("filter", &self.filter())
            .finish_non_exhaustive()
    }
}

/// How long one in-process poll waits before it looks again (a shutdown ends it sooner).
const POLL_WAIT: Millis = Millis(30_000);

impl InProcess {
    pub(crate) fn new(lucius: Lucius) -> InProcess {
        InProcess {
            lucius,
            filter: Arc::default(),
        }
    }

    /// Takes only the directives `filter` accepts (default: every directive; a
    /// [`crate::Worker`] without a fallback narrows it to the steps it handles).
    #[must_use]
    pub fn with_filter(self, filter: PullFilter) -> InProcess {
        *self.filter.lock().unwrap_or_else(|e| e.into_inner()) = filter;
        self
    }

    /// The filter in force.
    pub fn filter(&self) -> PullFilter {
        self.filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn job_of(d: &Directive) -> Result<JobId, CallError> {
    JobId::parse(&d.job_id)
        .map_err(|e| CallError::Refused(format!("directive {}: {e}", d.directive_id)))
}

fn call<'a>(job: &'a JobId, d: &'a Directive, worker: &'a str) -> WorkerCall<'a> {
    WorkerCall {
        job_id: job,
        step_id: &d.step_id,
        attempt: d.attempt,
        worker_id: Some(worker),
    }
}

#[async_trait]
impl DirectiveSource for InProcess {
    async fn next(&self) -> Option<Directive> {
        loop {
            let filter = self.filter();
            match self.lucius.poll(&filter, 1, POLL_WAIT).await {
                Ok(mut got) if !got.is_empty() => return Some(got.swap_remove(0)),
                // Woken by shutdown, or the wait ran out.
                Ok(_) if self.lucius.pull_closed() => return None,
                Ok(_) => {}
                Err(PollError::Bus) => return None,
                Err(PollError::Engine(e)) => {
                    tracing::warn!(error = %e, "in-process poll failed; trying again");
                    self.lucius.clock().sleep(Millis(1_000)).await;
                }
            }
        }
    }

    fn handles(&self, steps: &[String]) {
        self.filter.lock().unwrap_or_else(|e| e.into_inner()).steps = steps.to_vec();
    }

    async fn ack(&self, d: &Directive, worker: &str) -> Result<(), CallError> {
        let job = job_of(d)?;
        self.lucius.ack(call(&job, d, worker)).await?;
        Ok(())
    }

    async fn heartbeat(&self, d: &Directive, worker: &str) -> Result<(), CallError> {
        let job = job_of(d)?;
        self.lucius.heartbeat(call(&job, d, worker)).await?;
        Ok(())
    }

    async fn complete(
        &self,
        d: &Directive,
        worker: &str,
        result: serde_json::Value,
    ) -> Result<(), CallError> {
        let job = job_of(d)?;
        self.lucius.complete(call(&job, d, worker), result).await?;
        Ok(())
    }

    async fn fail(&self, d: &Directive, worker: &str, failure: Failure) -> Result<(), CallError> {
        let job = job_of(d)?;
        self.lucius.fail(call(&job, d, worker), failure).await?;
        Ok(())
    }
}
