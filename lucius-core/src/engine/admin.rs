//! Admin operations on the outbox: list entries, retry one, retry many.

use crate::ids::OutboxId;
use crate::outbox::{OutboxEntry, OutboxStatus};
use crate::ports::OutboxQuery;
use crate::record::Changes;
use crate::transition::{Event, TransitionError};

use super::{Engine, EngineError, Outcome};

impl Engine {
    /// Outbox entries matching `query`.
    pub async fn list_outbox(&self, query: &OutboxQuery) -> Result<Vec<OutboxEntry>, EngineError> {
        Ok(self.store.outbox(query).await?)
    }

    /// Moves a `DEAD` or `PENDING` entry to `PENDING`, due now, with its publish attempts
    /// reset; it is returned in `to_publish`. An entry whose step no longer waits for it
    /// cannot be revived.
    pub async fn retry_outbox(&self, id: &OutboxId) -> Result<Outcome<OutboxEntry>, EngineError> {
        let job_id = id.job_id();
        let entry = self
            .update_job(&job_id, |rec, now| {
                let e = rec
                    .entry(id)
                    .ok_or_else(|| EngineError::OutboxNotFound(id.clone()))?;
                let step_waits = !rec.job.status.is_terminal()
                    && rec
                        .steps
                        .get(e.step_index as usize)
                        .is_some_and(|s| s.attempt == e.attempt && s.status.awaits_directive());
                if !step_waits && e.status != OutboxStatus::Sent {
                    return Err(TransitionError::Illegal {
                        machine: "outbox entry",
                        from: "SUPERSEDED",
                        event: Event::AdminRetry,
                    }
                    .into());
                }
                let next = e.on_admin_retry(now)?;
                let mut c = Changes::default();
                c.put_outbox(next.clone());
                Ok((c, next))
            })
            .await
            .map_err(|e| match e {
                EngineError::JobNotFound(_) => EngineError::OutboxNotFound(id.clone()),
                other => other,
            })?;
        Ok(Outcome {
            to_publish: vec![entry.id.clone()],
            value: entry,
        })
    }

    /// Retries every `DEAD` and `PENDING` entry matching `query` (status and partition
    /// filters apply; at most `limit`). Entries that cannot be revived are skipped.
    pub async fn retry_outbox_matching(
        &self,
        query: &OutboxQuery,
    ) -> Result<Outcome<usize>, EngineError> {
        let entries = self.store.outbox(query).await?;
        let mut out = Outcome {
            value: 0,
            to_publish: Vec::new(),
        };
        for e in entries.iter().filter(|e| e.status != OutboxStatus::Sent) {
            if let Ok(o) = self.retry_outbox(&e.id).await {
                out.value += 1;
                out.to_publish.extend(o.to_publish);
            }
        }
        Ok(out)
    }
}
