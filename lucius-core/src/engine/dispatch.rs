//! The dispatcher: publish the due `PENDING` entries of one partition, or of all.

use crate::ids::Partition;
use crate::lease::Fence;
use crate::outbox::OutboxStatus;
use crate::ports::{LeaseStore, OutboxQuery};

use super::publish::{Holder, PublishOutcome};
use super::{Engine, EngineError};

/// What a dispatch round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Entries that were due.
    pub due: usize,
    /// Published and recorded.
    pub published: usize,
    /// Failed; retried later.
    pub retrying: usize,
    /// Failed for good (`DEAD`).
    pub dead: usize,
    /// Settled without publishing (their step moved on) or settled by another writer.
    pub skipped: usize,
    /// Entries whose publication could not be recorded (store errors, contention).
    pub errors: usize,
    /// Set when the round stopped because the lease would not outlive one more
    /// publication (it is renewed by the owner's next round).
    pub deferred: usize,
}

impl Engine {
    /// Publishes up to `batch_size` due `PENDING` entries of `partition`, oldest first.
    /// An entry is due for a dispatcher [`EngineConfig::dispatch_grace`] after its
    /// `nextAttemptAt`: until then it is left to the publication its writer makes inline.
    ///
    /// [`EngineConfig::dispatch_grace`]: super::EngineConfig::dispatch_grace
    pub async fn dispatch(&self, partition: &Partition) -> Result<DispatchReport, EngineError> {
        self.dispatch_query(OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: Some(partition.clone()),
            due_by: Some(self.dispatch_due_by()),
            after: None,
            limit: self.config.batch_size,
        })
        .await
    }

    /// Publishes up to `batch_size` due `PENDING` entries of any partition (the
    /// orchestrator's outbox retry loop), due as for [`Engine::dispatch`].
    pub async fn retry_pending(&self) -> Result<DispatchReport, EngineError> {
        self.dispatch_query(OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: None,
            due_by: Some(self.dispatch_due_by()),
            after: None,
            limit: self.config.batch_size,
        })
        .await
    }

    /// Dispatches `fence.partition` as the holder of its lease. A publication starts only
    /// while the lease will outlive it (publish timeout plus skew margin; the lease row is
    /// read again when the fence does not say so), and the lease is checked again before
    /// its result is recorded. A lease found lost stops the round with
    /// [`EngineError::Fenced`]; a lease still held but too close to its expiry stops it
    /// quietly ([`DispatchReport::deferred`]) until the owner renews it. Entries are due as
    /// for [`Engine::dispatch`].
    pub async fn dispatch_fenced(
        &self,
        fence: &Fence,
        leases: &dyn LeaseStore,
    ) -> Result<DispatchReport, EngineError> {
        let q = OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: Some(fence.partition.clone()),
            due_by: Some(self.dispatch_due_by()),
            after: None,
            limit: self.config.batch_size,
        };
        let mut holder = Holder {
            fence: fence.clone(),
            leases,
        };
        self.dispatch_entries(q, Some(&mut holder)).await
    }

    /// The `due_by` of a dispatcher's listing: entries whose `nextAttemptAt` is at least
    /// the dispatch grace old, so an inline publication in flight is not raced.
    fn dispatch_due_by(&self) -> crate::time::Timestamp {
        self.clock.now().minus(self.config.dispatch_grace)
    }

    async fn dispatch_query(&self, q: OutboxQuery) -> Result<DispatchReport, EngineError> {
        self.dispatch_entries(q, None).await
    }

    /// Publishes the entries `q` finds, page after page, until `batch_size` of them were
    /// acted on (published, failed, settled) or [`MAX_PAGES`] pages were read: entries
    /// that keep erroring, or that belong to someone else, do not hide the ones behind them.
    async fn dispatch_entries(
        &self,
        mut q: OutboxQuery,
        mut holder: Option<&mut Holder<'_>>,
    ) -> Result<DispatchReport, EngineError> {
        let budget = q.limit.max(1);
        q.limit = budget;
        let mut r = DispatchReport::default();
        let mut acted = 0;
        for _ in 0..MAX_PAGES {
            let entries = self.store.outbox(&q).await?;
            let full = entries.len() >= q.limit;
            q.after = entries.last().map(|e| (e.next_attempt_at, e.id.clone()));
            r.due += entries.len();
            for e in entries {
                if acted >= budget {
                    return Ok(r);
                }
                match self.publish_as(&e.id, holder.as_deref_mut()).await {
                    Err(fenced @ EngineError::Fenced { .. }) => return Err(fenced),
                    Ok(PublishOutcome::Deferred) => {
                        r.deferred += 1;
                        return Ok(r);
                    }
                    Ok(PublishOutcome::Sent) => r.published += 1,
                    Ok(PublishOutcome::Retrying) => r.retrying += 1,
                    Ok(PublishOutcome::Dead) => r.dead += 1,
                    Ok(PublishOutcome::Superseded) => r.skipped += 1,
                    Ok(
                        PublishOutcome::NotPending | PublishOutcome::NotDue | PublishOutcome::Owned,
                    ) => {
                        r.skipped += 1;
                        continue;
                    }
                    Err(_) => {
                        r.errors += 1;
                        continue;
                    }
                }
                acted += 1;
            }
            if !full || acted >= budget {
                break;
            }
        }
        Ok(r)
    }
}

/// Pages one dispatch round reads at most, so a partition full of entries that cannot be
/// acted on costs a bounded round.
const MAX_PAGES: usize = 10;
