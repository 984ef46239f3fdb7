//! Where a [`crate::Worker`] gets its directives and sends its calls: the
//! [`DirectiveSource`] trait, and the in-process source of a node without a bus.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lucius_core::engine::WorkerCall;
use lucius_core::ports::PublishError;
use lucius_core::step::Failure;
use lucius_core::{Directive, EngineError, JobId, Publisher};
use tokio::sync::Notify;

use crate::handle::Lucius;

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
}

/// The in-process queue a [`Lucius`] built without a publisher publishes to.
#[derive(Clone, Default)]
pub(crate) struct InProcessBus {
    queue: Arc<Queue>,
}

#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<Directive>>,
    ready: Notify,
}

impl InProcessBus {
    pub(crate) fn new() -> InProcessBus {
        InProcessBus::default()
    }

    fn push(&self, d: Directive) {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(d);
        self.queue.ready.notify_one();
    }

    async fn pop(&self) -> Directive {
        loop {
            // Register interest before looking, so a push in between is not missed.
            let ready = self.queue.ready.notified();
            if let Some(d) = self
                .queue
                .items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return d;
            }
            ready.await;
        }
    }

    fn len(&self) -> usize {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[async_trait]
impl Publisher for InProcessBus {
    async fn publish(&self, directive: &Directive) -> Result<(), PublishError> {
        self.push(directive.clone());
        Ok(())
    }
}

/// The in-process directive source ([`Lucius::in_process`]): directives the handle
/// publishes, and calls straight into the engine. At-least-once like any bus: a directive
/// lost with the process is republished from the store by the dispatcher and the sweeper.
#[derive(Clone)]
pub struct InProcess {
    lucius: Lucius,
    bus: InProcessBus,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("queued", &self.bus.len())
            .finish_non_exhaustive()
    }
}

impl InProcess {
    pub(crate) fn new(lucius: Lucius, bus: InProcessBus) -> InProcess {
        InProcess { lucius, bus }
    }

    /// Directives waiting for a worker.
    pub fn queued(&self) -> usize {
        self.bus.len()
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
        Some(self.bus.pop().await)
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
