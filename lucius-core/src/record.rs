//! Stored records beside the state machines: the idempotency claim, the job index row,
//! a job's aggregate ([`JobRecord`]) and the unit of change written to a store ([`Changes`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, OutboxId, Partition, TenantId};
use crate::job::Job;
use crate::outbox::OutboxEntry;
use crate::revision::Revision;
use crate::step::Step;
use crate::time::Timestamp;

/// The claim on a tenant's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyRecord {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The client's key.
    pub key: Arc<str>,
    /// Hash of the request that claimed it.
    pub request_hash: crate::idempotency::RequestHash,
    /// The job it created.
    pub job_id: JobId,
    /// When it was claimed.
    pub created_at: Timestamp,
}

/// The job index row: which partition a job lives in, so jobs can be listed per partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobIndexEntry {
    /// The job.
    pub job_id: JobId,
    /// Its partition.
    pub partition: Partition,
    /// Its request type.
    pub request_type: Arc<str>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Everything intake writes for a new job, in the order of truth: claim, job, steps,
/// index, first directive.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The idempotency claim.
    pub claim: IdempotencyRecord,
    /// The job (`ACCEPTED`).
    pub job: Job,
    /// Its steps, in order (the first `QUEUED`, the rest `PENDING`).
    pub steps: Vec<Step>,
    /// The index row.
    pub index: JobIndexEntry,
    /// The first step's directive (`PENDING`).
    pub outbox: OutboxEntry,
}

impl NewJob {
    /// The rows the original intake of this (replayed) request wrote, or would have:
    /// `self` is the replay's, built at the replay's time. The stored job (else the claim,
    /// intake's first write) fixes the intake's time, so the partition and every
    /// timestamp; the stored job and first step fix what the directive repeats of them (a
    /// retry may carry another correlation id, which the request hash leaves out). Ids stay
    /// derived. Stores complete an interrupted intake with these rows; the conformance
    /// suite checks they do.
    pub fn as_first_written(
        &self,
        claim: &IdempotencyRecord,
        stored_job: Option<&Job>,
        stored_step: Option<&Step>,
    ) -> NewJob {
        let new = self;
        let at = stored_job.map_or(claim.created_at, |j| j.created_at);
        let job = match stored_job {
            Some(j) => j.clone(),
            None => Job {
                partition: Partition::of(&new.job.tenant_id, at),
                created_at: at,
                updated_at: at,
                ..new.job.clone()
            },
        };
        let steps: Vec<Step> = new
            .steps
            .iter()
            .map(|s| Step {
                updated_at: at,
                ..s.clone()
            })
            .collect();
        let entry = &new.outbox;
        let step = stored_step.or_else(|| steps.iter().find(|s| s.index == entry.step_index));
        let mut directive = (*entry.directive).clone();
        directive.tenant_id = job.tenant_id.shared();
        directive.request_type = job.request_type.clone();
        directive.correlation_id = job.correlation_id.clone();
        directive.step_count = job.step_count;
        directive.command = job.payload.clone();
        directive.issued_at = at;
        if let Some(s) = step {
            directive.step_id = s.step_id.shared();
            directive.max_attempts = s.max_attempts;
            directive.topic = s.topic.clone();
            directive.ack_timeout_ms = s.ack_timeout.0;
            directive.lease_duration_ms = s.lease_duration.0;
            directive.payload = s.payload.clone();
        }
        let outbox = OutboxEntry {
            directive: Arc::new(directive),
            partition: job.partition.clone(),
            next_attempt_at: at,
            created_at: at,
            updated_at: at,
            ..entry.clone()
        };
        let index = JobIndexEntry {
            partition: job.partition.clone(),
            request_type: job.request_type.clone(),
            created_at: at,
            ..new.index.clone()
        };
        NewJob {
            claim: new.claim.clone(),
            job,
            steps,
            index,
            outbox,
        }
    }
}

/// A job with its steps (in index order) and its outbox entries (in id order).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job.
    pub job: Job,
    /// Its steps.
    pub steps: Vec<Step>,
    /// Its outbox entries.
    pub outbox: Vec<OutboxEntry>,
}

impl JobRecord {
    /// The step with this id.
    pub fn step(&self, step_id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.step_id.as_str() == step_id)
    }

    /// The outbox entry with this id.
    pub fn entry(&self, id: &OutboxId) -> Option<&OutboxEntry> {
        self.outbox.iter().find(|e| &e.id == id)
    }
}

/// A set of writes to one job's rows. Each row's `revision` says how to write it:
/// [`crate::Revision::NEW`] inserts (conflict if present), anything else replaces only if
/// the stored revision still matches.
///
/// Stores that commit atomically apply all or nothing. A store that cannot must apply the
/// writes in this order: **steps (by index), then outbox entries, then the job** — the
/// order the drift sweeper is written to repair from (see `docs/storage.md`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    /// Steps to write.
    pub steps: Vec<Step>,
    /// Outbox entries to write.
    pub outbox: Vec<OutboxEntry>,
    /// The job, if it changes.
    pub job: Option<Job>,
}

impl Changes {
    /// Stamps the revisions a store returned, in the contract's write order: steps, then
    /// outbox entries, then the job. A missing one leaves `Revision::default()` (new).
    pub fn assign_revisions(&mut self, revisions: impl IntoIterator<Item = Revision>) {
        let mut it = revisions.into_iter();
        for s in &mut self.steps {
            s.revision = it.next().unwrap_or_default();
        }
        for e in &mut self.outbox {
            e.revision = it.next().unwrap_or_default();
        }
        if let Some(j) = &mut self.job {
            j.revision = it.next().unwrap_or_default();
        }
    }

    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.outbox.is_empty() && self.job.is_none()
    }

    /// The job these changes belong to, if any row names one.
    pub fn job_id(&self) -> Option<&JobId> {
        self.job
            .as_ref()
            .map(|j| &j.id)
            .or_else(|| self.steps.first().map(|s| &s.job_id))
            .or_else(|| self.outbox.first().map(|e| &e.job_id))
    }

    /// Adds or replaces a step write.
    pub fn put_step(&mut self, step: Step) {
        match self.steps.iter_mut().find(|s| s.index == step.index) {
            Some(s) => *s = step,
            None => {
                self.steps.reserve_exact(1);
                self.steps.push(step);
                self.steps.sort_by_key(|s| s.index);
            }
        }
    }

    /// Adds or replaces an outbox write.
    pub fn put_outbox(&mut self, entry: OutboxEntry) {
        match self.outbox.iter_mut().find(|e| e.id == entry.id) {
            Some(e) => *e = entry,
            None => {
                // A plan writes one or two entries: a first push would otherwise reserve
                // room for four (1.4 KB, a large-bin request that makes glibc consolidate
                // its fast bins; 9% of the intake path's profile samples, ~3% of its time).
                self.outbox.reserve_exact(1);
                self.outbox.push(entry)
            }
        }
    }
}
