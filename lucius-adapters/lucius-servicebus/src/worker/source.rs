//! [`ServiceBusSource`]: the Service Bus receiver as a [`DirectiveSource`], so the runtime's
//! [`lucius_runtime::Worker`] (typed handlers, heartbeats, concurrency, shutdown) runs on
//! a queue or subscription exactly as it runs on the in-process source.
//!
//! Each received message stays locked while its directive is worked on: a heartbeat also
//! renews the lock; [`Settlement::Done`] deletes the message (the orchestrator knows the
//! outcome, or the directive is obsolete), [`Settlement::Release`] unlocks it for
//! redelivery and makes the next receive wait (backoff), so an unreachable orchestrator is
//! not hammered. A body that is not a directive is unlocked at once (the broker
//! dead-letters it after the entity's max delivery count). A permanent receive error (bad
//! signature, missing entity) closes the source: [`ServiceBusSource::error`] says why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lucius_core::{Directive, Failure};
use lucius_runtime::{CallError, DirectiveSource, Settlement};
use serde_json::Value;

use super::{next_backoff, parse, settle, Answer, Delivery, Orchestrator, Receiver, WorkerConfig};
use super::{Worker, WorkerError};

/// A queue or subscription, and the orchestrator's worker routes, as a directive source.
#[derive(Debug)]
pub struct ServiceBusSource {
    receiver: Receiver,
    api: Orchestrator,
    receive_wait: Duration,
    idle_pause: Duration,
    held: Mutex<HashMap<Arc<str>, Arc<Delivery>>>,
    backoff: Mutex<Duration>,
    error: Mutex<Option<WorkerError>>,
}

impl ServiceBusSource {
    /// A source for this configuration (nothing is contacted yet). The runtime worker
    /// retries calls itself, so `report_attempts` and `heartbeat_interval` are not used;
    /// the worker id sent on every call is `config.worker_id`: give the runtime worker the
    /// same id.
    pub fn new(config: WorkerConfig) -> Result<ServiceBusSource, WorkerError> {
        Ok(ServiceBusSource::of(Worker::new(config)?))
    }

    /// The source of an existing worker's receiver and orchestrator client.
    pub(super) fn of(w: Worker) -> ServiceBusSource {
        ServiceBusSource {
            receiver: w.receiver,
            api: w.api,
            receive_wait: w.receive_wait,
            idle_pause: w.idle_pause,
            held: Mutex::default(),
            backoff: Mutex::new(Duration::ZERO),
            error: Mutex::default(),
        }
    }

    /// Why the source closed, if a permanent error closed it.
    pub fn error(&self) -> Option<WorkerError> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Messages received and not yet settled.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn delivery(&self, d: &Directive) -> Option<Arc<Delivery>> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&d.directive_id)
            .cloned()
    }

    fn pause(&self) -> Duration {
        *self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_backoff(&self, failed: bool) {
        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        *b = if failed {
            next_backoff(*b)
        } else {
            Duration::ZERO
        };
    }
}

/// An orchestrator answer as a worker call's outcome: `404`/`409` is a refusal (the
/// directive is obsolete); a permanent error (refused key, malformed call) is fatal.
fn outcome(r: Result<Answer, WorkerError>) -> Result<(), CallError> {
    match r {
        Ok(Answer::Accepted) => Ok(()),
        Ok(Answer::Obsolete { status, message }) => {
            Err(CallError::Refused(format!("{status}: {message}")))
        }
        Err(e) if e.is_permanent() => Err(CallError::Fatal(e.to_string())),
        Err(e) => Err(CallError::Unavailable(e.to_string())),
    }
}

#[async_trait]
impl DirectiveSource for ServiceBusSource {
    async fn next(&self) -> Option<Directive> {
        loop {
            if self
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
            {
                return None;
            }
            let pause = self.pause();
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            match self.receiver.receive(self.receive_wait).await {
                Ok(Some(delivery)) => match parse(delivery.body()) {
                    Ok(d) => {
                        self.held
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(d.directive_id.clone(), Arc::new(delivery));
                        return Some(d);
                    }
                    Err(reason) => {
                        tracing::warn!(message_id = ?delivery.message_id(), %reason, "unreadable message; unlocking it");
                        settle(&delivery, false).await;
                    }
                },
                Ok(None) => tokio::time::sleep(self.idle_pause).await,
                Err(e) if e.is_permanent() => {
                    tracing::error!(error = %e, "receiving failed for good; the source is closed");
                    *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    return None;
                }
                Err(e) => {
                    self.set_backoff(true);
                    tracing::warn!(error = %e, retry_in_ms = self.pause().as_millis() as u64, "receive failed");
                }
            }
        }
    }

    async fn ack(&self, d: &Directive, _worker: &str) -> Result<(), CallError> {
        outcome(self.api.ack(d).await)
    }

    async fn heartbeat(&self, d: &Directive, _worker: &str) -> Result<(), CallError> {
        if let Some(delivery) = self.delivery(d) {
            if let Err(e) = delivery.renew().await {
                tracing::warn!(directive = %d.directive_id, error = %e, "lock renewal failed");
            }
        }
        outcome(self.api.heartbeat(d).await)
    }

    async fn complete(&self, d: &Directive, _worker: &str, result: Value) -> Result<(), CallError> {
        match self.api.complete(d, &result).await {
            // The orchestrator refused the result itself (too large, malformed): the step
            // cannot succeed with it, so say so rather than redeliver forever.
            Err(e) if e.is_permanent() => {
                let f = Failure {
                    error: format!("the orchestrator refused the result: {e}"),
                    retryable: false,
                };
                outcome(self.api.fail(d, &f).await)?;
                Err(CallError::Refused(f.error))
            }
            other => outcome(other),
        }
    }

    async fn fail(&self, d: &Directive, _worker: &str, failure: Failure) -> Result<(), CallError> {
        outcome(self.api.fail(d, &failure).await)
    }

    async fn settle(&self, d: &Directive, settlement: Settlement) {
        let delivery = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&d.directive_id);
        if let Some(delivery) = delivery {
            let done = settlement == Settlement::Done;
            settle(&delivery, done).await;
            self.set_backoff(!done);
        }
    }
}
