//! Intake: a validated command becomes a job, its steps, an idempotency claim, an index
//! row and the first step's directive, or the job an earlier identical request created.

use crate::directive::{Directive, DIRECTIVE_SCHEMA_VERSION};
use crate::ids::{JobId, OutboxId, Partition};
use crate::job::{Job, JobStatus};
use crate::outbox::{OutboxEntry, OutboxStatus};
use crate::ports::CreateOutcome;
use crate::record::{IdempotencyRecord, JobIndexEntry, NewJob};
use crate::revision::Revision;
use crate::step::{Step, StepStatus};
use crate::time::Timestamp;
use crate::validation::{validate_command, ValidatedCommand};

use super::{observe, Engine, EngineError, Outcome};

/// The answer to a submitted command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The job (new, or the one the key already created).
    pub job_id: JobId,
    /// Its current status.
    pub status: JobStatus,
    /// Its dispatch partition.
    pub partition: Partition,
    /// False when this was an idempotent replay.
    pub created: bool,
}

impl Engine {
    /// Validates a raw command body (`header_key` is the `Idempotency-Key` header) and
    /// submits it.
    pub async fn submit_bytes(
        &self,
        body: &[u8],
        header_key: Option<&str>,
    ) -> Result<Outcome<Submission>, EngineError> {
        let cmd = validate_command(&self.protocols, body, header_key)?;
        self.submit(cmd).await
    }

    /// Persists a validated command: claim, job, steps, index and the first directive
    /// (`PENDING`, returned in `to_publish`). The job as the store wrote it is kept for
    /// that directive's publication ([`Engine::publish`]), which then needs no read of its
    /// own. The same tenant + key with the same request
    /// returns the existing job; with another request it is
    /// [`EngineError::IdempotencyConflict`].
    pub async fn submit(&self, cmd: ValidatedCommand) -> Result<Outcome<Submission>, EngineError> {
        let now = self.clock.now();
        let new = build_new_job(&cmd, now);
        // The store takes the rows (a copy would be ~40 reference counts); keep what the
        // answer and the metrics need.
        let created = observe::NewRows::of(&new);
        let value = Submission {
            job_id: new.job.id.clone(),
            status: new.job.status,
            partition: new.job.partition.clone(),
            created: true,
        };
        let first = new.outbox.id.clone();
        let request_hash = new.claim.request_hash;
        match self.store.create_job(new).await? {
            CreateOutcome::Created(rec) => {
                created.report(self.observer.as_ref());
                // The publication the caller makes next plans on the rows as written
                // instead of reading them again (see `handoff`).
                if let Some(e) = rec.entry(&first) {
                    let until = e.next_attempt_at.plus(self.config.dispatch_grace);
                    self.handoff.leave(first.clone(), rec, until);
                }
                Ok(Outcome {
                    value,
                    to_publish: vec![first],
                })
            }
            CreateOutcome::Existing(claim) => {
                if claim.request_hash != request_hash {
                    return Err(EngineError::IdempotencyConflict {
                        tenant: claim.tenant_id.to_string(),
                        key: claim.key.to_string(),
                        job_id: claim.job_id,
                    });
                }
                let rec = self.job(&claim.job_id).await?;
                // A replay of a request whose first directive never left gets it published.
                let to_publish = rec
                    .outbox
                    .iter()
                    .filter(|e| e.status == OutboxStatus::Pending && e.publish_attempts == 0)
                    .map(|e| e.id.clone())
                    .collect();
                Ok(Outcome {
                    value: Submission {
                        job_id: rec.job.id,
                        status: rec.job.status,
                        partition: rec.job.partition,
                        created: false,
                    },
                    to_publish,
                })
            }
        }
    }
}

/// The rows of a new job created at `now`.
pub fn build_new_job(cmd: &ValidatedCommand, now: Timestamp) -> NewJob {
    let job_id = JobId::derive(&cmd.tenant_id, &cmd.idempotency_key);
    let partition = Partition::of(&cmd.tenant_id, now);
    let job = Job {
        id: job_id.clone(),
        tenant_id: cmd.tenant_id.clone(),
        request_type: cmd.protocol.shared_request_type(),
        idempotency_key: cmd.idempotency_key.clone(),
        correlation_id: cmd.correlation_id.clone(),
        request_hash: cmd.request_hash,
        payload: cmd.payload.clone(),
        partition: partition.clone(),
        step_count: cmd.protocol.steps.len() as u32,
        status: JobStatus::Accepted,
        error: None,
        created_at: now,
        updated_at: now,
        revision: Revision::NEW,
    };
    let mut steps: Vec<Step> = cmd
        .protocol
        .steps
        .iter()
        .zip(&cmd.step_payloads)
        .enumerate()
        .map(|(i, (s, payload))| Step {
            job_id: job_id.clone(),
            index: i as u32,
            step_id: s.step_id.clone(),
            topic: s.topic.clone(),
            status: StepStatus::Pending,
            attempt: 0,
            max_attempts: s.max_attempts,
            ack_timeout: s.ack_timeout,
            lease_duration: s.lease_duration,
            payload: payload.clone(),
            ack_deadline: None,
            lease_expires_at: None,
            worker_id: None,
            result: None,
            error: None,
            updated_at: now,
            revision: Revision::NEW,
        })
        .collect();
    // A protocol has at least one step (checked when it is compiled).
    let first = steps[0]
        .on_queue(now)
        .unwrap_or_else(|_| unreachable!("a new step is PENDING"));
    steps[0] = first;
    let outbox = directive_entry(&job, &steps[0], None, now);
    NewJob {
        claim: IdempotencyRecord {
            tenant_id: cmd.tenant_id.clone(),
            key: cmd.idempotency_key.clone(),
            request_hash: cmd.request_hash,
            job_id: job_id.clone(),
            created_at: now,
        },
        index: JobIndexEntry {
            job_id,
            partition,
            request_type: job.request_type.clone(),
            created_at: now,
        },
        job,
        steps,
        outbox,
    }
}

/// The outbox entry (`PENDING`, due now) for a step's current attempt.
pub(super) fn directive_entry(
    job: &Job,
    step: &Step,
    input: Option<crate::json::Json>,
    now: Timestamp,
) -> OutboxEntry {
    let id = OutboxId::for_attempt(&job.id, step.index, step.attempt);
    OutboxEntry {
        directive: std::sync::Arc::new(Directive {
            schema_version: DIRECTIVE_SCHEMA_VERSION,
            directive_id: id.shared(),
            job_id: job.id.shared(),
            tenant_id: job.tenant_id.shared(),
            request_type: job.request_type.clone(),
            correlation_id: job.correlation_id.clone(),
            step_id: step.step_id.shared(),
            step_index: step.index,
            step_count: job.step_count,
            attempt: step.attempt,
            max_attempts: step.max_attempts,
            topic: step.topic.clone(),
            ack_timeout_ms: step.ack_timeout.0,
            lease_duration_ms: step.lease_duration.0,
            issued_at: now,
            payload: step.payload.clone(),
            command: job.payload.clone(),
            input,
        }),
        id,
        job_id: job.id.clone(),
        partition: job.partition.clone(),
        step_index: step.index,
        attempt: step.attempt,
        status: OutboxStatus::Pending,
        publish_attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
        updated_at: now,
        sent_at: None,
        fence: 0,
        revision: Revision::NEW,
    }
}
