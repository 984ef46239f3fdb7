//! Retention on Table Storage: the index of finished jobs (`ENDED` rows, one per job a
//! commit made terminal, read in end order by [`TableStore::ended_jobs`]) and the purge of
//! a finished job in each mode.
//!
//! | table | PartitionKey | RowKey | properties |
//! |---|---|---|---|
//! | job index (`table`) or ledger (`ledger`) | `ENDED` | `<endedAt:020>_<jobId>` | `JobId`, `Partition`, `After` |
//!
//! An ended row is upserted **before** the write that makes its job terminal, so a crash
//! leaves at worst a row too many, never a finished job without one. `After` is the job
//! revision that write replaces: while the job row still has it, the write may be in
//! flight and the row is kept (for [`crate::ledger::INDEX_GRACE`] at most); once the job row moved on
//! and does not end at the row's time, the row is stale and is deleted when read.

use lucius_core::ids::JobId;
use lucius_core::ports::EndedJob;
use lucius_core::{Job, StoreError, StoreErrorKind, Timestamp};

use crate::client::BatchOp;
use crate::entity::{literal, partition_from_key, partition_key, text, time_key, Row};
use crate::ledger::index_row_expired;
use crate::{Mode, TableStore};

/// The partition of the ended rows (in both modes: job ids are UUIDs, dispatch partitions
/// end in `_YYYYMM`, ledger index partitions start with `IDX_`, so nothing else uses it).
pub(crate) const ENDED: &str = "ENDED";

/// How many ended rows are checked against their job rows at once.
const CHECK_CHUNK: usize = 8;

/// The RowKey of `id`'s ended row: end time first, so RowKey order is end order.
pub(crate) fn ended_rk(at: Timestamp, id: &JobId) -> String {
    format!("{}_{id}", time_key(at))
}

/// The ended row of `job`, which a commit is about to write as terminal over its current
/// revision (`job.revision`).
pub(crate) fn ended_row(job: &Job) -> Row {
    let mut r = Row::new();
    r.insert("PartitionKey".into(), ENDED.into());
    r.insert("RowKey".into(), ended_rk(job.updated_at, &job.id).into());
    r.insert("Kind".into(), "ENDED".into());
    r.insert("JobId".into(), job.id.as_str().into());
    r.insert("Partition".into(), partition_key(&job.partition).into());
    if let Some(t) = job.revision.token() {
        r.insert("After".into(), t.into());
    }
    r
}

/// Deletes whatever is there, tolerating rows already gone.
pub(crate) async fn delete_all(
    store: &TableStore,
    table: &str,
    pk: &str,
    rks: Vec<String>,
) -> Result<(), StoreError> {
    for chunk in rks.chunks(crate::entity::MAX_BATCH_OPS) {
        if let [one] = chunk {
            store.client.delete(table, pk, one).await?;
            continue;
        }
        let ops: Vec<_> = chunk.iter().cloned().map(BatchOp::Delete).collect();
        match store.client.batch(table, pk, &ops).await {
            Ok(_) => {}
            // A row already gone fails the whole batch (an interrupted purge): one by one.
            Err(e) if e.kind == StoreErrorKind::NotFound => {
                for rk in chunk {
                    store.client.delete(table, pk, rk).await?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl TableStore {
    /// The table holding the ended rows: the job index (table mode) or the ledger.
    pub(crate) fn ended_table(&self) -> &str {
        match self.config.mode {
            Mode::Table => &self.config.job_index_table,
            Mode::Ledger => &self.config.ledger_table,
        }
    }

    /// `id`'s job row, as stored (one get).
    async fn stored_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let table = match self.config.mode {
            Mode::Table => &self.config.jobs_table,
            Mode::Ledger => &self.config.ledger_table,
        };
        let row = self.client.get(table, id.as_str(), "JOB").await?;
        row.as_ref().map(crate::rows::read_job).transpose()
    }

    /// See [`lucius_core::Store::ended_jobs`]: one key-range query of the `ENDED` partition
    /// (another page only when rows were left out) and one get per row, which yields the
    /// revision and drops rows that are stale.
    pub(crate) async fn retention_ended_jobs(
        &self,
        ended_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<EndedJob>, StoreError> {
        let table = self.ended_table().to_owned();
        // Every row that ended at or before `ended_by` sorts before the next millisecond.
        let upto = literal(&time_key(Timestamp(ended_by.0.saturating_add(1))));
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        while out.len() < limit {
            let want = limit - out.len();
            let mut f = format!("PartitionKey eq {} and RowKey lt {upto}", literal(ENDED));
            if let Some(a) = &after {
                f.push_str(&format!(" and RowKey gt {}", literal(a)));
            }
            let top = u32::try_from(want.min(1000)).unwrap_or(1000);
            let rows = self.client.query_limit(&table, &f, Some(top), want).await?;
            for chunk in rows.chunks(CHECK_CHUNK) {
                let checked =
                    futures::future::try_join_all(chunk.iter().map(|r| self.check_ended(r)))
                        .await?;
                out.extend(checked.into_iter().flatten());
            }
            if rows.len() < want {
                break;
            }
            after = rows
                .last()
                .and_then(|r| text(r, "RowKey"))
                .map(str::to_owned);
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The finished job an ended row names, if its job row ends at the row's time; a stale
    /// row is deleted (see the module docs), and one whose job is gone finishes the purge
    /// that was interrupted after deleting the job row.
    async fn check_ended(&self, row: &Row) -> Result<Option<EndedJob>, StoreError> {
        let (Some(rk), Some(id)) = (text(row, "RowKey"), text(row, "JobId")) else {
            return Ok(None);
        };
        let id = JobId::parse(id).map_err(|e| StoreError::permanent(e.to_string()))?;
        let ended_at = rk
            .get(..20)
            .and_then(|t| t.parse::<i64>().ok())
            .map(Timestamp)
            .ok_or_else(|| StoreError::permanent(format!("ended row {rk:?} has no end time")))?;
        let etag = text(row, "odata.etag").unwrap_or_default();
        match self.stored_job(&id).await? {
            Some(job) if job.status.is_terminal() && job.updated_at == ended_at => {
                Ok(Some(EndedJob {
                    job_id: id,
                    ended_at,
                    revision: job.revision,
                }))
            }
            Some(job) => {
                // The write this row was made for may still land while the job row has
                // the revision it replaces.
                let may_land = text(row, "After") == job.revision.token();
                if !may_land || index_row_expired(row, std::time::SystemTime::now()) {
                    if !job.status.is_terminal() {
                        // It ended and runs again: a commit cannot tell that from any
                        // other without reading the row it replaces, so its live-index
                        // row, hidden when it ended, is restored here.
                        self.restore_live_index(&job).await?;
                    }
                    self.client
                        .delete_if(self.ended_table(), ENDED, rk, etag)
                        .await?;
                }
                Ok(None)
            }
            None => {
                // No commit can make this row true again (it would have to update a job
                // row at a revision that no longer exists); what is left is the purge's
                // tail.
                if self.config.mode == Mode::Ledger {
                    let p = partition_from_key(text(row, "Partition").unwrap_or_default())?;
                    let idx = self.ledger_index_rows_of(&id, &p).await?;
                    // Rows read before this check belong to the purged job: a job made
                    // again under the same id writes its index rows after its ledger row.
                    if !idx.is_empty() && self.stored_job(&id).await?.is_none() {
                        self.delete_index_rows(idx).await?;
                    }
                }
                self.client
                    .delete_if(self.ended_table(), ENDED, rk, etag)
                    .await?;
                Ok(None)
            }
        }
    }
}

impl TableStore {
    /// Writes the index rows that make a running `job` visible to the sweepers.
    async fn restore_live_index(&self, job: &Job) -> Result<(), StoreError> {
        match self.config.mode {
            Mode::Table => self.table_restore_live_index(job).await,
            Mode::Ledger => self.ledger_restore_live_index(job).await,
        }
    }
}

/// Why a purge refuses `job` at `revision`: another revision, or a job still running.
pub(crate) fn refuse_purge(job: &Job, revision: &lucius_core::Revision) -> Result<(), StoreError> {
    if &job.revision != revision {
        return Err(StoreError::conflict(format!(
            "job {} changed: expected revision {}, found {}",
            job.id,
            revision.token().unwrap_or("?"),
            job.revision.token().unwrap_or("?")
        )));
    }
    if !job.status.is_terminal() {
        return Err(StoreError::conflict(format!(
            "job {} is {}, not finished",
            job.id,
            job.status.as_str()
        )));
    }
    Ok(())
}

/// The job `id` is gone.
pub(crate) fn purge_gone(id: &JobId) -> StoreError {
    StoreError::not_found(format!("job {id} does not exist"))
}
