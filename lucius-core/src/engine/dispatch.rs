//! The dispatcher: publish the due `PENDING` entries of one partition, or of all.

use crate::ids::Partition;
use crate::lease::Fence;
use crate::outbox::OutboxStatus;
use crate::ports::{LeaseStore, OutboxQuery};

use super::publish::PublishOutcome;
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
}

impl Engine {
    /// Publishes up to `batch_size` due `PENDING` entries of `partition`, oldest first.
    pub async fn dispatch(&self, partition: &Partition) -> Result<DispatchReport, EngineError> {
        self.dispatch_query(OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: Some(partition.clone()),
            due_by: Some(self.clock.now()),
            after: None,
            limit: self.config.batch_size,
        })
        .await
    }

    /// Publishes up to `batch_size` due `PENDING` entries of any partition (the
    /// orchestrator's outbox retry loop).
    pub async fn retry_pending(&self) -> Result<DispatchReport, EngineError> {
        self.dispatch_query(OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: None,
            due_by: Some(self.clock.now()),
            after: None,
            limit: self.config.batch_size,
        })
        .await
    }

    /// Dispatches `fence.partition` as the holder of its lease. Past `fence.valid_until`
    /// the lease is read again before each publication; if it was lost, the round stops
    /// with [`EngineError::Fenced`] and nothing more is published or written.
    pub async fn dispatch_fenced(
        &self,
        fence: &Fence,
        leases: &dyn LeaseStore,
    ) -> Result<DispatchReport, EngineError> {
        let q = OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: Some(fence.partition.clone()),
            due_by: Some(self.clock.now()),
            after: None,
            limit: self.config.batch_size,
        };
        self.dispatch_entries(q, Some((fence, leases))).await
    }

    async fn dispatch_query(&self, q: OutboxQuery) -> Result<DispatchReport, EngineError> {
        self.dispatch_entries(q, None).await
    }

    async fn dispatch_entries(
        &self,
        q: OutboxQuery,
        fence: Option<(&Fence, &dyn LeaseStore)>,
    ) -> Result<DispatchReport, EngineError> {
        let entries = self.store.outbox(&q).await?;
        let mut r = DispatchReport {
            due: entries.len(),
            ..DispatchReport::default()
        };
        for e in entries {
            if let Some((f, leases)) = fence {
                if self.clock.now() >= f.valid_until {
                    let lease = leases.lease(&f.partition).await?;
                    let held = lease.is_some_and(|l| {
                        l.epoch == f.epoch && l.is_held_by(&f.owner, self.clock.now())
                    });
                    if !held {
                        return Err(EngineError::Fenced {
                            partition: f.partition.clone(),
                            owner: f.owner.clone(),
                            epoch: f.epoch,
                        });
                    }
                }
            }
            let published = match fence {
                Some((f, _)) => self.publish_fenced(&e.id, Some(f)).await,
                None => self.publish(&e.id).await,
            };
            match published {
                Err(fenced @ EngineError::Fenced { .. }) => return Err(fenced),
                Ok(PublishOutcome::Sent) => r.published += 1,
                Ok(PublishOutcome::Retrying) => r.retrying += 1,
                Ok(PublishOutcome::Dead) => r.dead += 1,
                Ok(PublishOutcome::NotPending | PublishOutcome::Superseded) => r.skipped += 1,
                Err(_) => r.errors += 1,
            }
        }
        Ok(r)
    }
}
