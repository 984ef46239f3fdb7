//! The [`Job`] and its state machine:
//! `ACCEPTED → IN_PROGRESS → SUCCEEDED | FAILED | CANCELLED`, `ACCEPTED → CANCELLED | FAILED`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, Partition, TenantId};
use crate::json::Json;
use crate::revision::Revision;
use crate::time::Timestamp;
use crate::transition::{Event, TransitionError};

/// A job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Persisted; no step has started yet.
    Accepted,
    /// At least one step directive was published.
    InProgress,
    /// Every step succeeded.
    Succeeded,
    /// A step failed for good.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl JobStatus {
    /// All statuses, for iteration.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Accepted,
        JobStatus::InProgress,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// Whether no transition leaves this status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The wire name (`IN_PROGRESS`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Accepted => "ACCEPTED",
            JobStatus::InProgress => "IN_PROGRESS",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }
}

/// A job: one accepted command, executed as an ordered list of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Derived from tenant + idempotency key.
    pub id: JobId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The protocol's request type.
    pub request_type: Arc<str>,
    /// The client's idempotency key.
    pub idempotency_key: Arc<str>,
    /// Optional correlation id, passed to every directive.
    pub correlation_id: Option<Arc<str>>,
    /// Hash of the request, for idempotent replay.
    pub request_hash: crate::idempotency::RequestHash,
    /// The command-level payload.
    pub payload: Json,
    /// Dispatch partition (tenant + creation month).
    pub partition: Partition,
    /// Number of steps.
    pub step_count: u32,
    /// Current status.
    pub status: JobStatus,
    /// Why the job failed or was cancelled.
    pub error: Option<Arc<str>>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last change.
    pub updated_at: Timestamp,
    /// Optimistic-concurrency token.
    #[serde(skip)]
    pub revision: Revision,
}

impl Job {
    fn illegal(&self, event: Event) -> TransitionError {
        TransitionError::Illegal {
            machine: "job",
            from: self.status.as_str(),
            event,
        }
    }

    fn with(&self, status: JobStatus, now: Timestamp) -> Job {
        Job {
            status,
            updated_at: now,
            ..self.clone()
        }
    }

    /// A step was published or acknowledged: `ACCEPTED → IN_PROGRESS` (no change if already in progress).
    pub fn on_start(&self, now: Timestamp) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Accepted => Ok(self.with(JobStatus::InProgress, now)),
            JobStatus::InProgress => Ok(self.clone()),
            _ => Err(self.illegal(Event::Start)),
        }
    }

    /// The last step succeeded: `IN_PROGRESS → SUCCEEDED`.
    pub fn on_succeeded(&self, now: Timestamp) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::InProgress => Ok(self.with(JobStatus::Succeeded, now)),
            _ => Err(self.illegal(Event::Succeed)),
        }
    }

    /// A step failed for good: `ACCEPTED | IN_PROGRESS → FAILED`.
    pub fn on_failed(&self, reason: &str, now: Timestamp) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Accepted | JobStatus::InProgress => Ok(Job {
                error: Some(reason.into()),
                ..self.with(JobStatus::Failed, now)
            }),
            _ => Err(self.illegal(Event::Fail)),
        }
    }

    /// Cancellation: `ACCEPTED | IN_PROGRESS → CANCELLED`.
    pub fn on_cancel(&self, reason: &str, now: Timestamp) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Accepted | JobStatus::InProgress => Ok(Job {
                error: Some(reason.into()),
                ..self.with(JobStatus::Cancelled, now)
            }),
            _ => Err(self.illegal(Event::Cancel)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn job(status: JobStatus) -> Job {
        let tenant = TenantId::parse("t1").unwrap();
        Job {
            id: JobId::derive(&tenant, "k"),
            partition: Partition::of(&tenant, Timestamp(0)),
            tenant_id: tenant,
            request_type: "r".into(),
            idempotency_key: "k".into(),
            correlation_id: None,
            request_hash: crate::idempotency::RequestHash::from_bytes([0; 32]),
            payload: Json::null(),
            step_count: 1,
            status,
            error: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            revision: Revision::NEW,
        }
    }

    #[test]
    fn start_moves_accepted_to_in_progress_once() {
        let j = job(JobStatus::Accepted).on_start(Timestamp(5)).unwrap();
        assert_eq!(j.status, JobStatus::InProgress);
        assert_eq!(j.updated_at, Timestamp(5));
        assert_eq!(j.on_start(Timestamp(6)).unwrap(), j);
    }

    #[test]
    fn success_needs_in_progress() {
        assert!(job(JobStatus::Accepted).on_succeeded(Timestamp(1)).is_err());
        let j = job(JobStatus::InProgress)
            .on_succeeded(Timestamp(1))
            .unwrap();
        assert_eq!(j.status, JobStatus::Succeeded);
    }

    #[test]
    fn fail_and_cancel_record_reason() {
        let j = job(JobStatus::Accepted)
            .on_failed("boom", Timestamp(1))
            .unwrap();
        assert_eq!(
            (j.status, j.error.as_deref()),
            (JobStatus::Failed, Some("boom"))
        );
        let j = job(JobStatus::InProgress)
            .on_cancel("bye", Timestamp(1))
            .unwrap();
        assert_eq!(
            (j.status, j.error.as_deref()),
            (JobStatus::Cancelled, Some("bye"))
        );
    }

    #[test]
    fn terminal_states_refuse_everything() {
        for s in [
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            let j = job(s);
            let err = j.on_start(Timestamp(1)).unwrap_err();
            assert!(matches!(
                err,
                TransitionError::Illegal { machine: "job", .. }
            ));
            assert!(j.on_succeeded(Timestamp(1)).is_err());
            assert!(j.on_failed("x", Timestamp(1)).is_err());
            assert!(j.on_cancel("x", Timestamp(1)).is_err());
        }
    }
}
