//! Retention: finished jobs are purged, with every row of them, a while after they ended
//! (`LUCIUS_RETENTION`). The purge reads the store's index of finished jobs, oldest end
//! first, and deletes one job per store call, each guarded by the revision it was listed
//! at: a job redriven in between is left alone.

use crate::ports::StoreErrorKind;
use crate::time::Timestamp;

use super::{Engine, EngineError};

/// What one purge call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Finished jobs listed (at most the batch size: fewer means none are left).
    pub listed: usize,
    /// Jobs deleted with their rows.
    pub purged: usize,
    /// Jobs that changed since they were listed (redriven, or purged by another
    /// process): left as they are.
    pub skipped: usize,
}

impl Engine {
    /// Purges up to a batch (`batch_size`) of jobs that ended more than the retention ago.
    /// With no retention (`None`, `LUCIUS_RETENTION=0`) it does nothing.
    pub async fn purge_ended(&self) -> Result<PurgeReport, EngineError> {
        let Some(retention) = self.config.retention else {
            return Ok(PurgeReport::default());
        };
        let now = self.clock.now();
        let cutoff = Timestamp(
            now.0
                .saturating_sub(retention.0.min(i64::MAX as u64) as i64),
        );
        let ended = self
            .store
            .ended_jobs(cutoff, self.config.batch_size.max(1))
            .await?;
        let mut report = PurgeReport {
            listed: ended.len(),
            ..PurgeReport::default()
        };
        for e in ended {
            if e.ended_at > cutoff {
                // A store that lists too much does not shorten anyone's retention.
                report.skipped += 1;
                continue;
            }
            match self.store.purge_job(&e.job_id, &e.revision).await {
                Ok(()) => report.purged += 1,
                Err(err)
                    if matches!(
                        err.kind,
                        StoreErrorKind::Conflict | StoreErrorKind::NotFound
                    ) =>
                {
                    report.skipped += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(report)
    }
}
