//! The [`Step`] and its state machine:
//! `PENDING → QUEUED → INITIATED → RUNNING → SUCCEEDED | FAILED`, with retries and cancellation.
//!
//! Retries: `INITIATED` past its ACK deadline, `RUNNING` past its lease, or a retryable
//! `fail` go back to `QUEUED` with `attempt + 1`, unless the step is at `maxAttempts`,
//! in which case it is `FAILED`. An ACK is also accepted in `QUEUED` (the directive
//! evidently arrived before its publication was recorded). Every worker event names
//! the attempt it acts on; an event for another attempt is [`TransitionError::StaleAttempt`].
//! While a named worker's lease runs, only that worker may act on the step (another worker
//! or a call naming none is [`TransitionError::LeaseHeldByOther`]). A repeated `complete` or
//! `fail` of an attempt it ended is answered with the step unchanged when it says the same,
//! and is [`TransitionError::AlreadyApplied`] when it does not.

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

    /// Checks the caller may act on a running step's lease. While the lease runs, a step
    /// leased to a named worker answers only that worker: another worker, and a call that
    /// names none, are refused. A step acked anonymously (no holder named) or whose lease
    /// has expired answers anyone.
    fn check_holder(&self, worker: Option<&str>, now: Timestamp) -> Result<(), TransitionError> {
        let (Some(holder), Some(until)) = (&self.worker_id, self.lease_expires_at) else {
            return Ok(());
        };
        if now >= until || worker == Some(&**holder) {
            return Ok(());
        }
        Err(TransitionError::LeaseHeldByOther {
            step: self.step_id.to_string(),
            holder: holder.to_string(),
            caller: worker.map(str::to_owned),
            until,
        })
    }

    /// What a worker's `fail` of `attempt` records as the step's `error`: the worker's text
    /// verbatim after a prefix naming the attempt and whether it may be retried. Each
    /// (attempt, flag, text) gives another record, and none looks like a timeout's
    /// (`attempt n: …`), so a repeated `fail` can be recognised exactly.
    fn failure_record(&self, attempt: u32, failure: &Failure) -> String {
        let kind = match (failure.retryable, attempt >= self.max_attempts) {
            (false, _) => "not retryable",
            (true, false) => "retryable",
            (true, true) => "retryable, no attempts left",
        };
        format!(
            "{} ({kind}): {}",
            Self::failure_prefix(attempt, self.max_attempts),
            failure.error
        )
    }

    fn failure_prefix(attempt: u32, max_attempts: u32) -> String {
        format!("worker failed attempt {attempt} of {max_attempts}")
    }

    /// Whether attempt `attempt` ended with a worker's `fail` whose record is still the
    /// step's `error`: the step is `FAILED` at that attempt, or was retried into the next one
    /// and nothing has ended that one yet.
    fn failed_by_worker_at(&self, attempt: u32) -> bool {
        let ended = match self.status {
            StepStatus::Failed => self.attempt == attempt,
            _ => attempt.checked_add(1) == Some(self.attempt),
        };
        let prefix = Self::failure_prefix(attempt, self.max_attempts) + " (";
        ended
            && self
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with(&prefix))
    }

    /// A `complete` or `fail` for an attempt that already ended: the step as it is when
    /// `same` says the call repeats what ended it, else [`TransitionError::AlreadyApplied`].
    fn repeat(&self, event: Event, attempt: u32, same: bool) -> Result<Step, TransitionError> {
        if same {
            return Ok(self.clone());
        }
        Err(TransitionError::AlreadyApplied {
            step: self.step_id.to_string(),
            event,
            attempt,
        })
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
    /// from the lease holder renews the lease; another worker, or a call naming none, may
    /// take over a named holder's lease only once it has expired.
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
                    // The caller holds the lease now; an anonymous ACK leaves no holder named
                    // (one that takes over an expired lease must not keep the old name, or its
                    // own later calls would be refused).
                    worker_id: worker.map(Arc::from),
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

    /// The worker finished: `RUNNING → SUCCEEDED` with its result. Repeating the completion
    /// of an attempt that succeeded returns the step as it is when the result is the same
    /// (whoever repeats it), and is [`TransitionError::AlreadyApplied`] when it differs.
    pub fn on_complete(
        &self,
        attempt: u32,
        worker: Option<&str>,
        result: Json,
        now: Timestamp,
    ) -> Result<Step, TransitionError> {
        if self.status == StepStatus::Succeeded && self.attempt == attempt {
            let same = self.result.as_ref() == Some(&result);
            return self.repeat(Event::Complete, attempt, same);
        }
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
    /// retryable and attempts remain, else `FAILED`. The step's `error` records the failure
    /// (see `failure_record`), so repeating the `fail` of an attempt it ended returns the
    /// step as it is when the error text and retryable flag are the same, and is
    /// [`TransitionError::AlreadyApplied`] when they differ.
    pub fn on_fail(
        &self,
        attempt: u32,
        worker: Option<&str>,
        failure: &Failure,
        now: Timestamp,
    ) -> Result<Step, TransitionError> {
        if self.failed_by_worker_at(attempt) {
            let record = self.failure_record(attempt, failure);
            let same = self.error.as_deref() == Some(record.as_str());
            return self.repeat(Event::Fail, attempt, same);
        }
        self.check_live(attempt, Event::Fail)?;
        if self.status == StepStatus::Running {
            self.check_holder(worker, now)?;
        }
        let record = self.failure_record(attempt, failure);
        if failure.retryable && attempt < self.max_attempts {
            Ok(self.retry_or_fail(record, now))
        } else {
            Ok(self.failed(record, now))
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
        assert_eq!(
            s.error.as_deref(),
            Some("worker failed attempt 2 of 2 (retryable, no attempts left): x")
        );
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

    fn held_by_w1() -> Step {
        step(3)
            .on_queue(t(0))
            .unwrap()
            .on_ack(1, Some("w1"), t(0))
            .unwrap()
    }

    fn failure(error: &str, retryable: bool) -> Failure {
        Failure {
            error: error.into(),
            retryable,
        }
    }

    #[test]
    fn a_call_naming_no_worker_cannot_act_on_a_named_lease() {
        let s = held_by_w1();
        let refused = Err(TransitionError::LeaseHeldByOther {
            step: "ocr".into(),
            holder: "w1".into(),
            caller: None,
            until: t(1000),
        });
        assert_eq!(s.on_ack(1, None, t(999)), refused);
        assert_eq!(s.on_heartbeat(1, None, t(999)), refused);
        assert_eq!(s.on_complete(1, None, Json::null(), t(999)), refused);
        assert_eq!(s.on_fail(1, None, &failure("x", false), t(999)), refused);
        // The holder itself still may.
        assert!(s.on_heartbeat(1, Some("w1"), t(999)).is_ok());
    }

    #[test]
    fn an_anonymous_takeover_of_an_expired_lease_names_no_holder() {
        let taken = held_by_w1().on_ack(1, None, t(1000)).unwrap();
        assert_eq!(
            (taken.worker_id.as_deref(), taken.lease_expires_at),
            (None, Some(t(2000)))
        );
        // So the taker's own calls are accepted, and so are the old holder's: the step is
        // held by nobody named, as after any anonymous ACK.
        assert!(taken.on_heartbeat(1, None, t(1001)).is_ok());
        assert!(taken.on_complete(1, None, Json::null(), t(1001)).is_ok());
        assert!(taken
            .on_complete(1, Some("w1"), Json::null(), t(1001))
            .is_ok());
    }

    #[test]
    fn a_step_acked_anonymously_answers_anyone() {
        let s = step(3)
            .on_queue(t(0))
            .unwrap()
            .on_ack(1, None, t(0))
            .unwrap();
        assert!(s.on_heartbeat(1, Some("w2"), t(10)).is_ok());
        assert!(s.on_complete(1, None, Json::null(), t(10)).is_ok());
        assert_eq!(
            s.on_ack(1, Some("w2"), t(10)).unwrap().worker_id.as_deref(),
            Some("w2")
        );
    }

    #[test]
    fn a_repeated_complete_is_answered_when_the_result_is_the_same() {
        let result = |v| Json::from(serde_json::json!({ "pages": v }));
        let done = held_by_w1()
            .on_complete(1, Some("w1"), result(3), t(5))
            .unwrap();
        // Same result, from the holder, another worker or none: the step as it is.
        for who in [Some("w1"), Some("w2"), None] {
            assert_eq!(done.on_complete(1, who, result(3), t(6)), Ok(done.clone()));
        }
        assert_eq!(
            done.on_complete(1, Some("w1"), result(4), t(6)),
            Err(TransitionError::AlreadyApplied {
                step: "ocr".into(),
                event: Event::Complete,
                attempt: 1,
            })
        );
        // Another attempt is still another attempt.
        assert!(matches!(
            done.on_complete(2, Some("w1"), result(3), t(6)),
            Err(TransitionError::Illegal { .. })
        ));
    }

    #[test]
    fn a_repeated_final_fail_is_answered_when_error_and_flag_are_the_same() {
        let failed = held_by_w1()
            .on_fail(1, Some("w1"), &failure("corrupt pdf", false), t(5))
            .unwrap();
        assert_eq!(failed.status, StepStatus::Failed);
        assert_eq!(
            failed.error.as_deref(),
            Some("worker failed attempt 1 of 3 (not retryable): corrupt pdf")
        );
        let again = |f: &Failure| failed.on_fail(1, None, f, t(6));
        assert_eq!(again(&failure("corrupt pdf", false)), Ok(failed.clone()));
        let refused = Err(TransitionError::AlreadyApplied {
            step: "ocr".into(),
            event: Event::Fail,
            attempt: 1,
        });
        assert_eq!(again(&failure("corrupt", false)), refused);
        assert_eq!(again(&failure("corrupt pdf", true)), refused);
    }

    #[test]
    fn a_repeated_retryable_fail_is_answered_while_its_record_stands() {
        let gpu = failure("gpu busy", true);
        let retried = held_by_w1().on_fail(1, Some("w1"), &gpu, t(5)).unwrap();
        assert_eq!((retried.status, retried.attempt), (StepStatus::Queued, 2));
        assert_eq!(
            retried.on_fail(1, Some("w1"), &gpu, t(6)),
            Ok(retried.clone())
        );
        assert_eq!(
            retried.on_fail(1, Some("w1"), &failure("gpu busy", false), t(6)),
            Err(TransitionError::AlreadyApplied {
                step: "ocr".into(),
                event: Event::Fail,
                attempt: 1,
            })
        );
        // Attempt 2 runs under another worker: the repeat changes nothing and is answered.
        let running = retried.on_ack(2, Some("w2"), t(7)).unwrap();
        assert_eq!(
            running.on_fail(1, Some("w1"), &gpu, t(8)),
            Ok(running.clone())
        );
        // Once attempt 2 has ended too, attempt 1 is simply stale.
        let third = running.on_fail(2, Some("w2"), &gpu, t(9)).unwrap();
        assert_eq!(
            third.on_fail(1, Some("w1"), &gpu, t(10)),
            Err(TransitionError::StaleAttempt { current: 3, got: 1 })
        );
        // The last attempt: retryable, but nothing left.
        let last = third.on_fail(3, None, &gpu, t(11)).unwrap();
        assert_eq!(
            (last.status, last.error.as_deref()),
            (
                StepStatus::Failed,
                Some("worker failed attempt 3 of 3 (retryable, no attempts left): gpu busy")
            )
        );
        assert_eq!(last.on_fail(3, None, &gpu, t(12)), Ok(last.clone()));
    }

    #[test]
    fn the_largest_attempt_number_is_stale_not_a_panic() {
        let s = step(3).on_queue(t(0)).unwrap();
        assert_eq!(
            s.on_fail(u32::MAX, None, &failure("x", true), t(1)),
            Err(TransitionError::StaleAttempt {
                current: 1,
                got: u32::MAX
            })
        );
    }

    #[test]
    fn a_timeout_is_not_taken_for_a_worker_failure() {
        let s = step(3)
            .on_queue(t(0))
            .unwrap()
            .on_published(1, t(0))
            .unwrap()
            .on_timeout(t(100))
            .unwrap();
        let f = failure(s.error.as_deref().unwrap(), true);
        assert_eq!(
            s.on_fail(1, None, &f, t(101)),
            Err(TransitionError::StaleAttempt { current: 2, got: 1 })
        );
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
