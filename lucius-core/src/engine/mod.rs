//! The [`Engine`]: intake, publication, dispatch, worker calls, sweeps, cancellation and
//! admin retries, written against the ports. Each operation reads `now` once, loads the
//! job, computes the next rows with the pure state machines, and commits them guarded by
//! revisions; a lost race reloads and recomputes (never overwrites).
//!
//! Directives that must be published after a commit are returned as data
//! ([`Outcome::to_publish`]), so the caller decides when: the HTTP front end answers first
//! and publishes in the background, the quickstart publishes inline.

mod admin;
mod consequences;
mod dispatch;
mod handoff;
mod intake;
mod observe;
pub(crate) mod publish;
mod pull;
mod retention;
mod sweep;
mod worker;

use std::sync::Arc;

pub use dispatch::DispatchReport;
pub use intake::{build_new_job, Submission};
pub use observe::{NoopObserver, Observer};
pub use publish::PublishOutcome;
pub use pull::PullFilter;
pub use retention::PurgeReport;
pub use sweep::{derived_status, SweepReport};
pub use worker::WorkerCall;

use crate::ids::{JobId, OutboxId};
use crate::outbox::PublishRetryPolicy;
use crate::ports::{Clock, Publisher, Store, StoreError, StoreErrorKind};
use crate::protocol::ProtocolRegistry;
use crate::record::{Changes, JobRecord};
use crate::time::{Millis, Timestamp};
use crate::transition::TransitionError;
use crate::validation::InvalidCommand;

/// Engine settings (the binaries fill them from `LUCIUS_*` variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Bound on one publication (`LUCIUS_OUTBOX_PUBLISH_TIMEOUT`, default 2 s).
    pub publish_timeout: Millis,
    /// Backoff and attempts for failed publications (`LUCIUS_OUTBOX_RETRY_DELAY`,
    /// default 30 s; `LUCIUS_OUTBOX_MAX_ATTEMPTS`, default 3).
    pub publish_retry: PublishRetryPolicy,
    /// Entries one dispatch or retry round handles (`LUCIUS_OUTBOX_RETRY_BATCH_SIZE`, default 100).
    pub batch_size: usize,
    /// Times a write that lost a race is recomputed before giving up (default 8).
    pub conflict_retries: u32,
    /// How long a job whose intake was interrupted (some step rows missing: the client got
    /// no `202`) waits for the client's retry to complete it before the sweeper fails it
    /// (default 10 min).
    pub intake_grace: Millis,
    /// How long a finished job is kept, with every row of it and its idempotency claim,
    /// before [`Engine::purge_ended`] deletes it (`LUCIUS_RETENTION`, default 7 days;
    /// `None` keeps them forever). The idempotency window: a key reused after its job was
    /// purged creates a new job.
    pub retention: Option<Millis>,
    /// How long a new `PENDING` entry is left to the publication its writer makes inline
    /// (the runtime publishes every directive an engine call writes right after the call)
    /// before [`Engine::dispatch`], [`Engine::dispatch_fenced`] and
    /// [`Engine::retry_pending`] take it (`LUCIUS_DISPATCH_GRACE`, default 5 s): they list
    /// entries due by `now - dispatch_grace`, so the two do not race and publish one
    /// directive twice. The default is well above the publish timeout (2 s) plus a commit.
    /// Workers that pull ([`Engine::claim_due`]) are not held back: nothing publishes
    /// inline for them.
    pub dispatch_grace: Millis,
    /// How long a `QUEUED` step's `PENDING` entry may stay due for dispatchers (past
    /// `nextAttemptAt` plus [`dispatch_grace`](EngineConfig::dispatch_grace)) before the
    /// sweeper asks the store to list it again ([`crate::Store::index_pending`], default
    /// 60 s). Dispatchers publish a listed entry within a round or two, so one this
    /// overdue while they run is most likely missing from the store's outbox index (a
    /// crash between the entry's write and its index write). A bus that refuses the
    /// entry does not trigger this: each failed publication moves `nextAttemptAt` on.
    pub reindex_after: Millis,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            publish_timeout: Millis(2_000),
            publish_retry: PublishRetryPolicy {
                delay: Millis(30_000),
                max_attempts: 3,
            },
            batch_size: 100,
            conflict_retries: 8,
            intake_grace: Millis(600_000),
            retention: Some(Millis(7 * 24 * 3600 * 1000)),
            dispatch_grace: Millis(5_000),
            reindex_after: Millis(60_000),
        }
    }
}

/// Why an engine operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The command was refused by validation.
    #[error(transparent)]
    Invalid(#[from] InvalidCommand),
    /// The idempotency key was used for a different request.
    #[error("idempotency key {key:?} of tenant {tenant} was already used for a different request (job {job_id})")]
    IdempotencyConflict {
        /// The tenant.
        tenant: String,
        /// The key.
        key: String,
        /// The job the key created.
        job_id: JobId,
    },
    /// No such job.
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// No such step in the job.
    #[error("job {job_id} has no step {step_id:?}")]
    StepNotFound {
        /// The job.
        job_id: JobId,
        /// The step asked for.
        step_id: String,
    },
    /// No such outbox entry.
    #[error("outbox entry {0} not found")]
    OutboxNotFound(OutboxId),
    /// The event is not allowed now (illegal, stale, another worker's lease…).
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Writers kept racing for the same job; retry later.
    #[error("job {0} is changing too fast; try again")]
    Contention(JobId),
    /// The dispatcher's partition lease was lost (expired or taken over): it must stop.
    #[error("dispatcher {owner} lost partition {partition} (its epoch {epoch} was superseded)")]
    Fenced {
        /// The partition.
        partition: crate::ids::Partition,
        /// The dispatcher.
        owner: String,
        /// Its stale epoch.
        epoch: u64,
    },
}

/// A result plus the directives to publish now that it is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    /// The result.
    pub value: T,
    /// Outbox entries written `PENDING` by this operation.
    pub to_publish: Vec<OutboxId>,
}

/// The orchestration engine. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    clock: Arc<dyn Clock>,
    protocols: Arc<ProtocolRegistry>,
    observer: Arc<dyn Observer>,
    config: EngineConfig,
    /// New jobs' records, left by intake for their first publication.
    handoff: Arc<handoff::HandOff>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over these ports, with the demo protocols and default settings; refine it
    /// with the `with_*` methods.
    pub fn new(
        store: Arc<dyn Store>,
        publisher: Arc<dyn Publisher>,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        Engine {
            store,
            publisher,
            clock,
            protocols: Arc::new(ProtocolRegistry::demo()),
            observer: Arc::new(NoopObserver),
            config: EngineConfig::default(),
            handoff: Arc::default(),
        }
    }

    /// Uses these protocols.
    #[must_use]
    pub fn with_protocols(mut self, protocols: ProtocolRegistry) -> Engine {
        self.protocols = Arc::new(protocols);
        self
    }

    /// Uses these settings.
    #[must_use]
    pub fn with_config(mut self, config: EngineConfig) -> Engine {
        self.config = config;
        self
    }

    /// Reports transitions and publications to `observer` (metrics).
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Engine {
        self.observer = observer;
        self
    }

    /// The protocols.
    pub fn protocols(&self) -> &ProtocolRegistry {
        &self.protocols
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock's current time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A job with its steps and outbox entries.
    pub async fn job(&self, id: &JobId) -> Result<JobRecord, EngineError> {
        self.store
            .load_job(id)
            .await?
            .ok_or_else(|| EngineError::JobNotFound(id.clone()))
    }

    /// Whether the store answers.
    pub async fn ready(&self) -> Result<(), EngineError> {
        Ok(self.store.ping().await?)
    }

    /// Loads a job, lets `plan` compute the writes from it at `now`, and commits them;
    /// on a lost race, reloads and plans again.
    async fn update_job<T, F>(&self, id: &JobId, plan: F) -> Result<T, EngineError>
    where
        F: Fn(&JobRecord, Timestamp) -> Result<(Changes, T), EngineError> + Send + Sync,
        T: Send,
    {
        self.commit_planned(id, None, OnPartial::Repair, plan).await
    }

    /// A publisher's [`update_job`](Engine::update_job), planning the first attempt on
    /// `loaded` (a record the caller just read) instead of reading it again: a stale record
    /// costs nothing but a retry (its commit conflicts and the next attempt reloads). A
    /// commit applied in part is left to the sweeper: a publisher writes only the entries
    /// it may (see `docs/operations.md`), and a repair may have to write others.
    async fn update_job_from<T, F>(
        &self,
        id: &JobId,
        loaded: Option<JobRecord>,
        plan: F,
    ) -> Result<T, EngineError>
    where
        F: Fn(&JobRecord, Timestamp) -> Result<(Changes, T), EngineError> + Send + Sync,
        T: Send,
    {
        self.commit_planned(id, loaded, OnPartial::LeaveToSweeper, plan)
            .await
    }

    async fn commit_planned<T, F>(
        &self,
        id: &JobId,
        mut loaded: Option<JobRecord>,
        on_partial: OnPartial,
        plan: F,
    ) -> Result<T, EngineError>
    where
        F: Fn(&JobRecord, Timestamp) -> Result<(Changes, T), EngineError> + Send + Sync,
        T: Send,
    {
        for _ in 0..=self.config.conflict_retries {
            let rec = match loaded.take() {
                Some(rec) => rec,
                None => self.job(id).await?,
            };
            let now = self.clock.now();
            let (changes, value) = plan(&rec, now)?;
            if changes.is_empty() {
                return Ok(value);
            }
            let result = self.store.commit(changes).await;
            // The job changed (or may have): a record intake left for its first
            // publication is stale.
            self.handoff.forget(id);
            match result {
                Ok(written) => {
                    observe::report(self.observer.as_ref(), &rec, &written);
                    return Ok(value);
                }
                Err(e) if e.kind == StoreErrorKind::Conflict => continue,
                Err(e) if e.kind == StoreErrorKind::Partial => {
                    // A prefix of the writes landed in contract order (steps, outbox, job):
                    // the caller's transition happened, and the rest is drift of exactly the
                    // kind the sweeper repairs. Repair it now, best effort: a failure here
                    // is left to the next sweep.
                    if on_partial == OnPartial::Repair {
                        self.repair_once(id).await;
                    }
                    return Ok(value);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contention(id.clone()))
    }

    /// One sweep of a job after a commit that applied in part, ignoring failures (the
    /// next sweep repairs whatever this one could not). The directives it writes are the
    /// ones the interrupted commit meant to write, whose ids the caller already holds.
    async fn repair_once(&self, id: &JobId) {
        let Ok(Some(rec)) = self.store.load_job(id).await else {
            return;
        };
        let now = self.clock.now();
        let (changes, _) = sweep::plan_sweep(&rec, now, &self.config);
        if !changes.is_empty() {
            if let Ok(written) = self.store.commit(changes).await {
                self.handoff.forget(id);
                observe::report(self.observer.as_ref(), &rec, &written);
            }
        }
    }
}

#[cfg(test)]
mod liveness_tests;
/// What to do after a commit that applied in part ([`StoreErrorKind::Partial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnPartial {
    /// Sweep the job once at once.
    Repair,
    /// Leave it to the next sweep.
    LeaveToSweeper,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod drift_tests;

#[cfg(test)]
mod round_trip_tests;
