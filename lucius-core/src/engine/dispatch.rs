//! The dispatcher: publish the due `PENDING` entries of one partition, or of all.

use crate::ids::Partition;
use crate::outbox::OutboxStatus;
use crate::ports::OutboxQuery;

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
            limit: self.config.batch_size,
        })
        .await
    }

    async fn dispatch_query(&self, q: OutboxQuery) -> Result<DispatchReport, EngineError> {
        let entries = self.store.outbox(&q).await?;
        let mut r = DispatchReport {
            due: entries.len(),
            ..DispatchReport::default()
        };
        for e in entries {
            match self.publish(&e.id).await {
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
