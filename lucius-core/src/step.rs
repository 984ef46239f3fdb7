//! The [`Step`] and its state machine:
//! `PENDING → QUEUED → INITIATED → RUNNING → SUCCEEDED | FAILED`, with retries and cancellation.
//!
//! Retries: `INITIATED` past its ACK deadline, `RUNNING` past its lease, or a retryable
//! `fail` go back to `QUEUED` with `attempt + 1`, unless the step is at `maxAttempts`,
//! in which case it is `FAILED`. An ACK is also accepted in `QUEUED` (the directive
//! evidently arrived before its publication was recorded). Every worker event names
//! the attempt it acts on; an event for another attempt is [`TransitionError::StaleAttempt`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, OutboxId, StepId};
use crate::json::Json;
use crate::revision::Revision;
use crate::time::{Millis, Timestamp};
use crate::transition::{Event, TransitionError};

/// A step's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    /// Not reached yet.
    Pending,
    /// Its directive is in the outbox.
    Queued,
    /// Its directive was published; an ACK is due by `ackDeadline`.
    Initiated,
    /// A worker acknowledged it and holds a lease until `leaseExpiresAt`.
    Running,
    /// Done.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Cancelled with its job.
    Cancelled,
}

impl StepStatus {
    /// All statuses, for iteration.
    pub const ALL: [StepStatus; 7] = [
        StepStatus::Pending,
        StepStatus::Queued,
        StepStatus::Initiated,
        StepStatus::Running,
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Cancelled,
    ];

    /// Whether no transition leaves this status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Failed | StepStatus::Cancelled
        )
    }

    /// Whether a directive for the current attempt is expected to be live.
    pub fn awaits_directive(self) -> bool {
        matches!(self, StepStatus::Queued | StepStatus::Initiated)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "PENDING",
            StepStatus::Queued => "QUEUED",
            StepStatus::Initiated => "INITIATED",
            StepStatus::Running => "RUNNING",
            StepStatus::Succeeded => "SUCCEEDED",
            StepStatus::Failed => "FAILED",
            StepStatus::Cancelled => "CANCELLED",
        }
    }
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The job.
    pub job_id: JobId,
    /// Position in the protocol, from 0.
    pub index: u32,
    /// The protocol's step id.
    pub step_id: StepId,
    /// Where its directives are published.
    pub topic: Arc<str>,
    /// Current status.
    pub status: StepStatus,
    /// Current attempt: 0 until queued, then 1, 2, …
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Time a worker has to ACK a published directive.
    pub ack_timeout: Millis,
    /// Lease granted by an ACK or heartbeat.
    pub lease_duration: Millis,
    /// The step's payload from the command.
    pub payload: Json,
    /// When an ACK is due (`INITIATED`).
    pub ack_deadline: Option<Timestamp>,
    /// When the lease ends (`RUNNING`).
    pub lease_expires_at: Option<Timestamp>,
    /// The worker holding the lease.
    pub worker_id: Option<Arc<str>>,
    /// The worker's result (`SUCCEEDED`).
    pub result: Option<Json>,
    /// The last error reported or recorded.
    pub error: Option<Arc<str>>,
    /// Time of the last change.
    pub updated_at: Timestamp,
    /// Optimistic-concurrency token.
    #[serde(skip)]
    pub revision: Revision,
}

/// What a worker says when it fails a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Human-readable reason.
    pub error: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl Step {
    /// The directive (outbox) id of the current attempt.
    pub fn outbox_id(&self) -> OutboxId {
        OutboxId::for_attempt(&self.job_id, self.index, self.attempt)
    }

    fn illegal(&self, event: Event) -> TransitionError {
        TransitionError::Illegal {
            machine: "step",
            from: self.status.as_str(),
            event,
        }
    }

    /// Checks the event is for a live step and the current attempt.
    fn check_live(&self, attempt: u32, event: Event) -> Result<(), TransitionError> {
        if self.status.is_terminal() || self.status == StepStatus::Pending {
            return Err(self.illegal(event));
        }
        if attempt != self.attempt {
            return Err(TransitionError::StaleAttempt {
                current: self.attempt,
                got: attempt,
            });
        }
        Ok(())
    }

    /// Checks the caller may act on a running step's lease.
    fn check_holder(&self, worker: Option<&str>, now: Timestamp) -> Result<(), TransitionError> {
        match (&self.worker_id, worker) {
            (Some(holder), Some(caller))
                if **holder != *caller && self.lease_expires_at.is_some_and(|t| now < t) =>
            {
                Err(TransitionError::LeaseHeldByOther {
                    holder: holder.to_string(),
                    caller: caller.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    fn base(&self, status: StepStatus, now: Timestamp) -> Step {
        Step {
            status,
            updated_at: now,
            ..self.clone()
        }
    }

    /// Its directive was written to the outbox: `PENDING → QUEUED` at attempt 1.
    pub fn on_queue(&self, now: Timestamp) -> Result<Step, TransitionError> {
        match self.status {
            StepStatus::Pending => Ok(Step {
                attempt: 1,
                ..self.base(StepStatus::Queued, now)
            }),
            _ => Err(self.illegal(Event::Queue)),
        }
    }

    /// Its directive was published: `QUEUED → INITIATED`, ACK due by `now + ackTimeout`.
    pub fn on_published(&self, attempt: u32, now: Timestamp) -> Result<Step, TransitionError> {
        self.check_live(attempt, Event::Published)?;
        match self.status {
            StepStatus::Queued => Ok(Step {
                ack_deadline: Some(now.plus(self.ack_timeout)),
                ..self.base(StepStatus::Initiated, now)
            }),
            _ => Err(self.illegal(Event::Published)),
        }
    }

    /// A worker acknowledged: `QUEUED | INITIATED → RUNNING` with a lease. A repeated ACK
    /// from the lease holder renews the lease; another worker may take over only once the
    /// lease has expired.
    pub fn on_ack(
        &self,
        attempt: u32,
        worker: Option<&str>,
        now: Timestamp,
    ) -> Result<Step, TransitionError> {
        self.check_live(attempt, Event::Ack)?;
        match self.status {
            StepStatus::Queued | StepStatus::Initiated | StepStatus::Running => {
                if self.status == StepStatus::Running {
                    self.check_holder(worker, now)?;
                }
                Ok(Step {
                    ack_deadline: None,
                    lease_expires_at: Some(now.plus(self.lease_duration)),
                    worker_id: worker.map(Arc::from).or_else(|| self.worker_id.clone()),
                    ..self.base(StepStatus::Running, now)
                })
            }
            _ => Err(self.illegal(Event::Ack)),
        }
    }

    /// The lease holder extends its lease: `RUNNING → RUNNING`.
    pub fn on_heartbeat(
        &self,
        attempt: u32,
        worker: Option<&str>,
        now: Timestamp,
    ) -> Result<Step, TransitionError> {
        self.check_live(attempt, Event::Heartbeat)?;
        if self.status != StepStatus::Running {
            return Err(self.illegal(Event::Heartbeat));
        }
        self.check_holder(worker, now)?;
        Ok(Step {
            lease_expires_at: Some(now.plus(self.lease_duration)),
            ..self.base(StepStatus::Running, now)
        })
    }

    /// The worker finished: `RUNNING → SUCCEEDED` with its result.
    pub fn on_complete(
        &self,
        attempt: u32,
        worker: Option<&str>,
        result: Json,
        now: Timestamp,
    ) -> Result<Step, TransitionError> {
        self.check_live(attempt, Event::Complete)?;
        if self.status != StepStatus::Running {
            return Err(self.illegal(Event::Complete));
        }
        self.check_holder(worker, now)?;
        Ok(Step {
            result: Some(result),
            lease_expires_at: None,
            ..self.base(StepStatus::Succeeded, now)
        })
    }

    /// The worker failed: `QUEUED | INITIATED | RUNNING →` retry (`QUEUED`, attempt + 1) if
    /// retryable and attempts remain, else `FAILED`.
    pub fn on_fail(
        &self,
        attempt: u32,
        worker: Option<&str>,
        failure: &Failure,
        now: Timestamp,
    ) -> Result<Step, TransitionError> {
        self.check_live(attempt, Event::Fail)?;
        if self.status == StepStatus::Running {
            self.check_holder(worker, now)?;
        }
        if failure.retryable {
            Ok(self.retry_or_fail(failure.error.clone(), now))
        } else {
            Ok(self.failed(failure.error.clone(), now))
        }
    }

    /// The sweeper found an `INITIATED` step past its ACK deadline or a `RUNNING` step past
    /// its lease: retry or fail.
    pub fn on_timeout(&self, now: Timestamp) -> Result<Step, TransitionError> {
        let (due, what) = match self.status {
            StepStatus::Initiated => (self.ack_deadline, "no ACK by the deadline"),
            StepStatus::Running => (self.lease_expires_at, "lease expired"),
            _ => return Err(self.illegal(Event::Timeout)),
        };
        let due = due.unwrap_or(Timestamp::EPOCH);
        if now < due {
            return Err(TransitionError::NotDue { due_at: due, now });
        }
        Ok(self.retry_or_fail(format!("attempt {}: {what}", self.attempt), now))
    }

    /// Cancellation: any non-terminal status `→ CANCELLED`.
    pub fn on_cancel(&self, now: Timestamp) -> Result<Step, TransitionError> {
        if self.status.is_terminal() {
            return Err(self.illegal(Event::Cancel));
        }
        Ok(Step {
            ack_deadline: None,
            lease_expires_at: None,
            ..self.base(StepStatus::Cancelled, now)
        })
    }

    /// When the step's current deadline passes, if it has one.
    pub fn deadline(&self) -> Option<Timestamp> {
        match self.status {
            StepStatus::Initiated => self.ack_deadline,
            StepStatus::Running => self.lease_expires_at,
            _ => None,
        }
    }

    /// The directive of `attempt` could not be published: its outbox entry went `DEAD`
    /// at `dead_at` with `error`. Once `backoff` has passed (during which an admin may
    /// still revive the entry), the attempt ends the way a missed ACK does: `QUEUED →`
    /// `QUEUED` at `attempt + 1`, or `FAILED` with the publication error at `maxAttempts`.
    pub fn on_directive_dead(
        &self,
        attempt: u32,
        error: &str,
        dead_at: Timestamp,
        backoff: Millis,
        now: Timestamp,
    ) -> Result<Step, TransitionError> {
        self.check_live(attempt, Event::DirectiveDead)?;
        if self.status != StepStatus::Queued {
            return Err(self.illegal(Event::DirectiveDead));
        }
        let due = dead_at.plus(backoff);
        if now < due {
            return Err(TransitionError::NotDue { due_at: due, now });
        }
        Ok(self.retry_or_fail(
            format!(
                "attempt {}: its directive could not be published: {error}",
                self.attempt
            ),
            now,
        ))
    }

    fn retry_or_fail(&self, error: String, now: Timestamp) -> Step {
        if self.attempt >= self.max_attempts {
            return self.failed(
                format!(
                    "{error} (attempt {} of {})",
                    self.attempt, self.max_attempts
                ),
                now,
            );
        }
        Step {
            attempt: self.attempt + 1,
            ack_deadline: None,
            lease_expires_at: None,
            worker_id: None,
            error: Some(error.into()),
            ..self.base(StepStatus::Queued, now)
        }
    }

    fn failed(&self, error: String, now: Timestamp) -> Step {
        Step {
            ack_deadline: None,
            lease_expires_at: None,
            error: Some(error.into()),
            ..self.base(StepStatus::Failed, now)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids::TenantId;

    pub(crate) fn step(max_attempts: u32) -> Step {
        Step {
            job_id: JobId::derive(&TenantId::parse("t").unwrap(), "k"),
            index: 0,
            step_id: StepId::parse("ocr").unwrap(),
            topic: "ocr".into(),
            status: StepStatus::Pending,
            attempt: 0,
            max_attempts,
            ack_timeout: Millis(100),
            lease_duration: Millis(1000),
            payload: Json::null(),
            ack_deadline: None,
            lease_expires_at: None,
            worker_id: None,
            result: None,
            error: None,
            updated_at: Timestamp(0),
            revision: Revision::NEW,
        }
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    #[test]
    fn happy_path() {
        let s = step(3).on_queue(t(1)).unwrap();
        assert_eq!((s.status, s.attempt), (StepStatus::Queued, 1));
        let s = s.on_published(1, t(2)).unwrap();
        assert_eq!(s.status, StepStatus::Initiated);
        assert_eq!(s.ack_deadline, Some(t(102)));
        let s = s.on_ack(1, Some("w"), t(3)).unwrap();
        assert_eq!(s.status, StepStatus::Running);
        assert_eq!(s.lease_expires_at, Some(t(1003)));
        let s = s.on_heartbeat(1, Some("w"), t(500)).unwrap();
        assert_eq!(s.lease_expires_at, Some(t(1500)));
        let s = s
            .on_complete(
                1,
                Some("w"),
                Json::from(serde_json::json!({"ok": 1})),
                t(600),
            )
            .unwrap();
        assert_eq!(s.status, StepStatus::Succeeded);
        assert_eq!(s.result, Some(Json::from(serde_json::json!({"ok": 1}))));
    }

    #[test]
    fn ack_from_queued_is_accepted() {
        let s = step(3).on_queue(t(1)).unwrap();
        assert_eq!(s.on_ack(1, None, t(2)).unwrap().status, StepStatus::Running);
    }

    #[test]
    fn stale_attempts_are_rejected() {
        let s = step(3)
            .on_queue(t(1))
            .unwrap()
            .on_published(1, t(1))
            .unwrap();
        let s2 = s.on_timeout(t(200)).unwrap();
        assert_eq!((s2.status, s2.attempt), (StepStatus::Queued, 2));
        assert_eq!(
            s2.on_ack(1, Some("w"), t(201)),
            Err(TransitionError::StaleAttempt { current: 2, got: 1 })
        );
    }

    #[test]
    fn timeouts_before_the_deadline_are_not_due() {
        let s = step(3)
            .on_queue(t(1))
            .unwrap()
            .on_published(1, t(1))
            .unwrap();
        assert!(matches!(
            s.on_timeout(t(50)),
            Err(TransitionError::NotDue { .. })
        ));
        let r = s.on_ack(1, Some("w"), t(50)).unwrap();
        assert!(matches!(
            r.on_timeout(t(1049)),
            Err(TransitionError::NotDue { .. })
        ));
        assert_eq!(r.on_timeout(t(1050)).unwrap().attempt, 2);
    }

    #[test]
    fn attempts_run_out_into_failed() {
        let mut s = step(2).on_queue(t(0)).unwrap();
        let f = Failure {
            error: "x".into(),
            retryable: true,
        };
        s = s.on_fail(1, None, &f, t(1)).unwrap();
        assert_eq!((s.status, s.attempt), (StepStatus::Queued, 2));
        s = s.on_fail(2, None, &f, t(2)).unwrap();
        assert_eq!((s.status, s.attempt), (StepStatus::Failed, 2));
    }

    #[test]
    fn non_retryable_failure_fails_at_once() {
        let s = step(5).on_queue(t(0)).unwrap();
        let f = Failure {
            error: "bad input".into(),
            retryable: false,
        };
        assert_eq!(
            s.on_fail(1, None, &f, t(1)).unwrap().status,
            StepStatus::Failed
        );
    }

    #[test]
    fn leases_protect_the_holder_until_they_expire() {
        let s = step(3)
            .on_queue(t(0))
            .unwrap()
            .on_ack(1, Some("a"), t(0))
            .unwrap();
        assert!(matches!(
            s.on_complete(1, Some("b"), Json::null(), t(10)),
            Err(TransitionError::LeaseHeldByOther { .. })
        ));
        assert!(s.on_ack(1, Some("b"), t(10)).is_err());
        let taken = s.on_ack(1, Some("b"), t(1000)).unwrap();
        assert_eq!(taken.worker_id.as_deref(), Some("b"));
    }

    #[test]
    fn a_dead_directive_ends_its_attempt_after_the_backoff() {
        let s = step(2).on_queue(t(0)).unwrap();
        assert_eq!(
            s.on_directive_dead(1, "401", t(10), Millis(30), t(39)),
            Err(TransitionError::NotDue {
                due_at: t(40),
                now: t(39)
            })
        );
        let r = s
            .on_directive_dead(1, "401", t(10), Millis(30), t(40))
            .unwrap();
        assert_eq!((r.status, r.attempt), (StepStatus::Queued, 2));
        assert!(r.error.as_deref().unwrap().contains("401"), "{:?}", r.error);
        assert_eq!(
            r.on_directive_dead(1, "401", t(10), Millis(30), t(99)),
            Err(TransitionError::StaleAttempt { current: 2, got: 1 })
        );
        let f = r
            .on_directive_dead(2, "503", t(50), Millis(30), t(80))
            .unwrap();
        assert_eq!(f.status, StepStatus::Failed);
        assert!(f.error.as_deref().unwrap().contains("503"), "{:?}", f.error);
        let running = step(2)
            .on_queue(t(0))
            .unwrap()
            .on_ack(1, Some("w"), t(1))
            .unwrap();
        assert!(matches!(
            running.on_directive_dead(1, "x", t(0), Millis(0), t(5)),
            Err(TransitionError::Illegal {
                from: "RUNNING",
                ..
            })
        ));
    }

    #[test]
    fn cancel_and_terminal_states() {
        let s = step(3).on_queue(t(0)).unwrap().on_cancel(t(1)).unwrap();
        assert_eq!(s.status, StepStatus::Cancelled);
        assert!(s.on_cancel(t(2)).is_err());
        assert!(matches!(
            s.on_complete(1, None, Json::null(), t(2)),
            Err(TransitionError::Illegal {
                from: "CANCELLED",
                ..
            })
        ));
        assert!(step(3).on_published(0, t(0)).is_err());
    }
}
