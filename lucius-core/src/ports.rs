//! The ports: [`Store`], [`Publisher`] and [`Clock`]. Adapters implement them; the engine
//! only talks to them.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use crate::directive::Directive;
use crate::ids::{JobId, Partition};
use crate::lease::Lease;
use crate::outbox::{OutboxEntry, OutboxStatus};
use crate::record::{Changes, IdempotencyRecord, JobRecord, NewJob};
use crate::revision::Revision;
use crate::time::{Millis, Timestamp};

/// The kind of a store failure, which decides what the engine does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// A compare-and-swap or insert lost a race: reload and retry.
    Conflict,
    /// A row the write depends on does not exist.
    NotFound,
    /// Worth retrying later (throttling, timeouts, unavailability).
    Transient,
    /// A row exceeds what the backend can hold.
    TooLarge,
    /// Not worth retrying (bad configuration, permissions, corrupt data).
    Permanent,
    /// A store that cannot commit atomically applied a prefix of the writes in contract
    /// order (steps, then outbox entries, then the job; see [`Changes`]) and then failed.
    /// The first written group is durable: the caller's transition happened, and what is
    /// missing is drift the sweeper repairs. Never returned when nothing was written.
    Partial,
}

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct StoreError {
    /// What kind of failure.
    pub kind: StoreErrorKind,
    /// What was expected and what was found.
    pub message: String,
}

impl StoreError {
    /// A lost race.
    pub fn conflict(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Conflict,
            message: message.into(),
        }
    }

    /// A missing row.
    pub fn not_found(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::NotFound,
            message: message.into(),
        }
    }

    /// A passing failure.
    pub fn transient(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Transient,
            message: message.into(),
        }
    }

    /// A row too large for the backend.
    pub fn too_large(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::TooLarge,
            message: message.into(),
        }
    }

    /// A commit applied in part (see [`StoreErrorKind::Partial`]).
    pub fn partial(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Partial,
            message: message.into(),
        }
    }

    /// A lasting failure.
    pub fn permanent(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Permanent,
            message: message.into(),
        }
    }
}

/// What [`Store::create_job`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// The claim was new and every row of the job is written: here they are as stored —
    /// the job, its steps and its first outbox entry, with the revisions the store gave
    /// them — so a commit planned on this record succeeds without reading the job again
    /// (it equals what [`Store::load_job`] returns right after).
    Created(Box<JobRecord>),
    /// The key was already claimed; this is the claim. If it names the same request, the
    /// store has completed any rows a crashed earlier attempt left unwritten.
    Existing(IdempotencyRecord),
}

/// Which outbox entries to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxQuery {
    /// Only this status.
    pub status: Option<OutboxStatus>,
    /// Only this partition.
    pub partition: Option<Partition>,
    /// Only entries due by this time (with `status: Pending`, what a dispatcher wants).
    pub due_by: Option<Timestamp>,
    /// Only entries after this `(nextAttemptAt, id)` position, exclusive: the last entry of
    /// the previous page, so a round can read past entries that keep failing instead of
    /// being handed the same ones again.
    pub after: Option<(Timestamp, crate::ids::OutboxId)>,
    /// At most this many.
    pub limit: usize,
}

/// A finished job, as [`Store::ended_jobs`] lists it for the purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedJob {
    /// The job.
    pub job_id: JobId,
    /// When it ended: the `updatedAt` of its terminal job row.
    pub ended_at: Timestamp,
    /// Its job row's revision when listed; [`Store::purge_job`] is guarded by it.
    pub revision: Revision,
}

/// Durable storage of jobs, steps, outbox entries, idempotency claims and the job index.
///
/// Every write is guarded by the row's [`crate::Revision`]: a lost race is a
/// [`StoreErrorKind::Conflict`], never an overwrite. Run the conformance suite
/// (`lucius_core::testkit::conformance`, feature `testkit`) against every implementation.
#[async_trait]
pub trait Store: Send + Sync {
    /// Writes a new job: the idempotency claim first (insert-if-absent), then job, steps,
    /// index and first directive. If the claim exists, writes nothing new for another
    /// request and returns [`CreateOutcome::Existing`]; for the same request (same hash),
    /// first completes any rows missing after a crash, as the interrupted intake would have
    /// written them (the stored job's time and partition, or the claim's if only the claim
    /// landed) — unless the stored job is already terminal (an interrupted intake the
    /// sweeper gave up on stays as it is). A new job is returned as written
    /// ([`CreateOutcome::Created`]).
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError>;

    /// A job with its steps and outbox entries, with current revisions.
    async fn load_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError>;

    /// Applies revision-guarded writes to one job's rows; returns them with their new
    /// revisions. See [`Changes`] for the atomicity and ordering contract.
    async fn commit(&self, changes: Changes) -> Result<Changes, StoreError>;

    /// Outbox entries matching the query, oldest `nextAttemptAt` first.
    async fn outbox(&self, query: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Ids of the non-terminal jobs of a partition (for the sweepers): at most `limit` of
    /// them, in an order the store chooses and keeps (Table Storage: ascending id; memory:
    /// creation), starting after `after`, the last id of the previous page. Paging so
    /// visits every job that stays active, once.
    async fn active_jobs(
        &self,
        partition: &Partition,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError>;

    /// Every partition that holds jobs.
    async fn partitions(&self) -> Result<Vec<Partition>, StoreError>;

    /// Stops listing `partition` in [`Store::partitions`] if it holds no active job and no
    /// `PENDING` entry (checked with the removal); returns whether it did. Any later write
    /// of a job or entry in the partition (an admin redrive) lists it again. The sweep
    /// retires the partitions of months that are over once they are empty, so dispatchers
    /// stop renewing leases on them and polling them.
    async fn retire_partition(&self, partition: &Partition) -> Result<bool, StoreError>;

    /// Terminal jobs that ended at or before `ended_by`, earliest end first (ties in an
    /// order the store keeps), at most `limit`. Read from an index of finished jobs kept
    /// with each job write, never from a scan of every job: the purge's cost follows what
    /// it deletes, not the history kept.
    async fn ended_jobs(
        &self,
        ended_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<EndedJob>, StoreError>;

    /// Deletes a terminal job and every row of it: steps, outbox entries, its idempotency
    /// claim (the key is free again) and its index rows, if its job row still has
    /// `revision`. A job row with another revision, or one that is not terminal, is a
    /// [`StoreErrorKind::Conflict`] and nothing is deleted; a job already gone is
    /// [`StoreErrorKind::NotFound`].
    async fn purge_job(&self, id: &JobId, revision: &Revision) -> Result<(), StoreError>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes sure listings ([`Store::outbox`] with `status: Pending`) find this `PENDING`
    /// entry. A store whose listings read a separate index can, after a crash between a
    /// write and its index write, hold a `PENDING` entry its index does not list; the
    /// sweeper calls this for an entry that stayed due far longer than a dispatcher takes
    /// to publish it (`EngineConfig::reindex_after`). Must be idempotent and must not
    /// change the entry itself. Stores whose listings read the entries themselves need
    /// not implement it: the default does nothing.
    async fn index_pending(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        let _ = entry;
        Ok(())
    }
}

/// Durable partition leases (see [`crate::lease`]). Writes are revision-guarded like
/// every store write: [`crate::Revision::NEW`] inserts, anything else compare-and-swaps.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// The lease of one partition, if it was ever taken.
    async fn lease(&self, partition: &Partition) -> Result<Option<Lease>, StoreError>;
    /// Every lease row (to see who is alive and spread partitions fairly).
    async fn leases(&self) -> Result<Vec<Lease>, StoreError>;
    /// Writes a lease row; returns it with its new revision.
    async fn put_lease(&self, lease: Lease) -> Result<Lease, StoreError>;
    /// Records that dispatcher `member` is alive until `until` (an upsert).
    async fn announce(&self, member: &str, until: Timestamp) -> Result<(), StoreError>;
    /// Every dispatcher that announced itself, with how long it said it lives.
    async fn members(&self) -> Result<Vec<(String, Timestamp)>, StoreError>;
}

/// Why a publication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Worth retrying (throttled, unavailable, timed out).
    #[error("transient publish failure: {0}")]
    Transient(String),
    /// Not worth retrying (unauthorised, entity missing).
    #[error("permanent publish failure: {0}")]
    Permanent(String),
}

/// Publishes directives to the message bus. Must be safe to call twice for one directive:
/// the directive id is the message id brokers deduplicate on.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one directive to its topic.
    async fn publish(&self, directive: &Directive) -> Result<(), PublishError>;
}

/// A boxed future returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The source of time. The engine reads `now` once per operation and bounds waits with
/// `sleep`; the binaries use the system clock, tests a manual one.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// A future that completes after `duration` of this clock's time.
    fn sleep(&self, duration: Millis) -> Sleep;
}
