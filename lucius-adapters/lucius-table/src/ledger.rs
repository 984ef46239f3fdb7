//! Ledger mode: one table, one partition per job (`PartitionKey` = job id; RowKeys `CLAIM`,
//! `JOB`, `STEP_<index:010>_<stepId>`, `OUTBOX_<outboxId>`), every change one entity group
//! transaction; plus index partitions `IDX_<tenant>_<YYYYMM>` (RowKeys `JOB_<jobId>` for
//! live jobs, and the queue and dead rows of `queue.rs`) so the dispatcher and the
//! sweepers never scan.
//!
//! The ledger is the truth; the index is kept a *superset* of it for what the dispatcher
//! and the sweepers must find: a row that makes a job or an entry visible is written before
//! the ledger batch, a row that hides one (`SENT`, `DEAD`, a finished job) after it. A
//! crash between the two leaves an index row too many, never one too few; readers check
//! what they read against the ledger, and stale rows are deleted.

use lucius_core::ids::{JobId, Partition};
use lucius_core::{
    Changes, CreateOutcome, Job, JobRecord, NewJob, OutboxEntry, OutboxQuery, OutboxStatus,
    Revision, StoreError, StoreErrorKind,
};

use crate::client::BatchOp;
use crate::entity::{literal, partition_key, text, time_key, Row, MAX_BATCH_OPS};
use crate::queue::{dead_key_prefix, dead_row, queue_row};
use crate::retention::{ended_rk, ended_row, purge_gone, refuse_purge, ENDED};
use crate::rows::*;
use crate::TableStore;

const CLAIM: &str = "CLAIM";
const JOB: &str = "JOB";

fn step_rk(index: u32, step_id: &str) -> String {
    format!("STEP_{index:010}_{step_id}")
}

fn outbox_rk(id: &str) -> String {
    format!("OUTBOX_{id}")
}

pub(crate) fn index_pk(p: &Partition) -> String {
    format!("IDX_{}", partition_key(p))
}

pub(crate) fn index_job_row(job: &Job) -> Row {
    let mut r = Row::new();
    r.insert("PartitionKey".into(), index_pk(&job.partition).into());
    r.insert("RowKey".into(), format!("JOB_{}", job.id).into());
    r.insert("Kind".into(), "IDXJOB".into());
    r.insert("JobId".into(), job.id.as_str().into());
    r
}

/// How long an index row whose ledger entry is missing is kept: longer than the slowest
/// commit (its index write, then its ledger batch, all within one operation budget of
/// [`crate::RetryPolicy::operation_budget`], 20 s by default; the SDK cannot cancel a request
/// the service already holds, and the service works on it for at most its 30 s maximum
/// `timeout`), judged
/// by the service's `Timestamp` of the row against this machine's clock (so also longer
/// than any plausible skew). Until then the entry may still land; after it, the commit
/// that wrote the row has failed for good and the row is removed.
pub(crate) const INDEX_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether an index row is older than [`INDEX_GRACE`] at `now`, by its service `Timestamp`
/// (a row without a readable one is never taken as expired).
pub(crate) fn index_row_expired(row: &Row, now: std::time::SystemTime) -> bool {
    let Some(written) = text(row, "Timestamp").and_then(lucius_core::Timestamp::parse_rfc3339)
    else {
        return false;
    };
    let now_ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let grace_ms = i64::try_from(INDEX_GRACE.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(written.as_millis()) > grace_ms
}

fn rk(row: &Row) -> &str {
    text(row, "RowKey").unwrap_or_default()
}

/// Every row of a job's partition; rows come in RowKey order, so steps are in index
/// order (zero-padded) and entries in id order.
struct Loaded {
    claim: Option<lucius_core::IdempotencyRecord>,
    job: Option<Job>,
    steps: Vec<lucius_core::Step>,
    outbox: Vec<OutboxEntry>,
}

impl Loaded {
    fn record(self) -> Option<JobRecord> {
        let (steps, outbox) = (self.steps, self.outbox);
        self.job.map(|job| JobRecord { job, steps, outbox })
    }
}

impl TableStore {
    fn ledger(&self) -> &str {
        &self.config.ledger_table
    }

    async fn ledger_rows(&self, id: &JobId) -> Result<Loaded, StoreError> {
        let filter = format!("PartitionKey eq {}", literal(id.as_str()));
        let rows = self.client.query(self.ledger(), &filter, None).await?;
        let (mut claim, mut job, mut steps, mut outbox) = (None, None, Vec::new(), Vec::new());
        for row in &rows {
            match rk(row) {
                CLAIM => claim = Some(read_claim(row)?),
                JOB => job = Some(read_job(row)?),
                k if k.starts_with("STEP_") => steps.push(read_step(row)?),
                k if k.starts_with("OUTBOX_") => outbox.push(read_outbox(row)?),
                _ => {}
            }
        }
        Ok(Loaded {
            claim,
            job,
            steps,
            outbox,
        })
    }

    pub(crate) async fn ledger_load(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.ledger_rows(id).await?.record())
    }

    /// The index rows a stored job needs: its live row, and its pending and dead entries'
    /// rows; then its partition's registration (as of `at`, or always for `None`: see
    /// [`TableStore::register`]).
    async fn index_job(
        &self,
        rec: &JobRecord,
        at: Option<lucius_core::Timestamp>,
    ) -> Result<(), StoreError> {
        let pk = index_pk(&rec.job.partition);
        let mut ops = Vec::new();
        if !rec.job.status.is_terminal() {
            ops.push(BatchOp::Upsert(index_job_row(&rec.job)));
        }
        for e in &rec.outbox {
            match e.status {
                OutboxStatus::Pending => ops.push(BatchOp::Upsert(queue_row(&pk, e)?)),
                OutboxStatus::Dead => ops.push(BatchOp::Upsert(dead_row(&pk, e)?)),
                OutboxStatus::Sent => {}
            }
        }
        for chunk in ops.chunks(MAX_BATCH_OPS / 2) {
            self.index_batch(&pk, chunk.to_vec()).await?;
        }
        self.register(&rec.job.partition, at).await
    }

    pub(crate) async fn ledger_create(&self, new: &NewJob) -> Result<CreateOutcome, StoreError> {
        let pk = new.job.id.as_str();
        let mut ops = vec![
            BatchOp::Insert(claim_row(pk, CLAIM, &new.claim)?),
            BatchOp::Insert(job_row(pk, JOB, &new.job)?),
        ];
        for s in &new.steps {
            ops.push(BatchOp::Insert(step_row(
                pk,
                &step_rk(s.index, s.step_id.as_str()),
                s,
            )?));
        }
        ops.push(BatchOp::Insert(outbox_row(
            pk,
            &outbox_rk(new.outbox.id.as_str()),
            &new.outbox,
        )?));
        match self.client.batch(self.ledger(), pk, &ops).await {
            Ok(revs) => {
                // The rows as written, with the revisions the batch returned (one per
                // operation, in order: claim, job, steps, first directive).
                let n = new.steps.len();
                let rec = (revs.len() == n + 3).then(|| JobRecord {
                    job: Job {
                        revision: revs[1].clone(),
                        ..new.job.clone()
                    },
                    steps: new
                        .steps
                        .iter()
                        .zip(&revs[2..n + 2])
                        .map(|(s, r)| lucius_core::Step {
                            revision: r.clone(),
                            ..s.clone()
                        })
                        .collect(),
                    outbox: vec![OutboxEntry {
                        revision: revs[n + 2].clone(),
                        ..new.outbox.clone()
                    }],
                });
                let rec = match rec {
                    Some(rec) => rec,
                    None => self.ledger_load(&new.job.id).await?.ok_or_else(|| {
                        StoreError::conflict(format!("job {pk} vanished as it was written"))
                    })?,
                };
                // The client gets no 202 unless this lands too; its retry completes it.
                self.index_job(&rec, Some(rec.job.created_at)).await?;
                self.queue.saw(&rec.outbox);
                Ok(CreateOutcome::Created(Box::new(rec)))
            }
            // Every row of a job is written with its claim, so a conflict means the claim.
            Err(e) if e.kind == StoreErrorKind::Conflict => self.ledger_replay(new).await,
            Err(e) => Err(e),
        }
    }

    async fn ledger_replay(&self, new: &NewJob) -> Result<CreateOutcome, StoreError> {
        let pk = new.job.id.as_str();
        let loaded = self.ledger_rows(&new.job.id).await?;
        let claim = loaded.claim.ok_or_else(|| {
            StoreError::conflict(format!("job {pk} has rows but no idempotency claim"))
        })?;
        if claim.request_hash != new.claim.request_hash
            || claim.job_id != new.job.id
            || loaded.job.as_ref().is_some_and(|j| j.status.is_terminal())
        {
            return Ok(CreateOutcome::Existing(claim));
        }
        // Complete what an earlier attempt left out (possible only for a NewJob written
        // without some rows: the ledger batch itself is all-or-nothing), as that attempt
        // wrote it, not as of this replay.
        let first_step = loaded
            .steps
            .iter()
            .find(|s| s.index == new.outbox.step_index);
        let new = new.as_first_written(&claim, loaded.job.as_ref(), first_step);
        let job = new.job.clone();
        let mut ops = Vec::new();
        if loaded.job.is_none() {
            ops.push(BatchOp::Insert(job_row(pk, JOB, &new.job)?));
        }
        let mut steps = loaded.steps.clone();
        for s in &new.steps {
            if !loaded.steps.iter().any(|x| x.index == s.index) {
                ops.push(BatchOp::Insert(step_row(
                    pk,
                    &step_rk(s.index, s.step_id.as_str()),
                    s,
                )?));
                steps.push(s.clone());
            }
        }
        let mut outbox = loaded.outbox.clone();
        if !loaded.outbox.iter().any(|e| e.id == new.outbox.id) {
            let e = new.outbox.clone();
            ops.push(BatchOp::Insert(outbox_row(
                pk,
                &outbox_rk(e.id.as_str()),
                &e,
            )?));
            outbox.push(e);
        }
        if !ops.is_empty() {
            match self.client.batch(self.ledger(), pk, &ops).await {
                Ok(_) => {}
                // Another replay completed the rows first.
                Err(e) if e.kind == StoreErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        steps.sort_by_key(|s| s.index);
        // Registered always: its partition may have retired since the torn intake.
        self.index_job(&JobRecord { job, steps, outbox }, None)
            .await?;
        Ok(CreateOutcome::Existing(claim))
    }

    pub(crate) async fn ledger_commit(&self, mut changes: Changes) -> Result<Changes, StoreError> {
        let Some(id) = changes.job_id().cloned() else {
            return Ok(changes);
        };
        let pk = id.as_str();
        // The change itself, one entity group transaction, planned (and checked) first.
        let mut ops = Vec::new();
        for s in &changes.steps {
            if s.job_id != id {
                return Err(StoreError::permanent(format!(
                    "a commit touches one job: step of {} in a change of {id}",
                    s.job_id
                )));
            }
            ops.push(BatchOp::write(
                step_row(pk, &step_rk(s.index, s.step_id.as_str()), s)?,
                &s.revision,
            ));
        }
        for e in &changes.outbox {
            if e.job_id != id {
                return Err(StoreError::permanent(format!(
                    "a commit touches one job: entry {} in a change of {id}",
                    e.id
                )));
            }
            ops.push(BatchOp::write(
                outbox_row(pk, &outbox_rk(e.id.as_str()), e)?,
                &e.revision,
            ));
        }
        if let Some(j) = &changes.job {
            ops.push(BatchOp::write(job_row(pk, JOB, j)?, &j.revision));
        }
        let plan = self.plan_queue(&changes)?;
        // 1. Make pending entries findable before they are pending (queue rows), and a job
        // this change finishes findable by the purge (its ended row): a crash leaves a row
        // too many, never one too few.
        self.queue_before(&plan).await?;
        if let Some(j) = changes.job.as_ref().filter(|j| j.status.is_terminal()) {
            self.client.upsert(self.ledger(), &ended_row(j)).await?;
        }
        // 2. The change.
        let revs = self.client.batch(self.ledger(), pk, &ops).await?;
        changes.assign_revisions(revs);
        // 3. Hide what is no longer live. The change is committed: a failure here only
        // leaves stale index rows, which readers check and remove.
        if let Some(j) = changes.job.as_ref().filter(|j| j.status.is_terminal()) {
            let gone = vec![BatchOp::Delete(format!("JOB_{}", j.id))];
            if let Err(e) = self.index_batch(&index_pk(&j.partition), gone).await {
                tracing::warn!(error = %e, job = %id, "ledger index update failed; the sweeper will skip the row");
            }
        }
        self.queue_after(plan, &changes).await;
        Ok(changes)
    }

    /// `SENT` entries, or entries of any status: not indexed, so an admin listing scans
    /// the ledger. `PENDING` and `DEAD` listings read the queue and dead rows (`queue.rs`).
    pub(crate) async fn ledger_outbox(
        &self,
        q: &OutboxQuery,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut f = vec!["Kind eq 'OUTBOX'".to_owned()];
        if let Some(s) = q.status {
            f.push(format!("Status eq {}", literal(s.as_str())));
        }
        if let Some(p) = &q.partition {
            f.push(format!("Partition eq {}", literal(&partition_key(p))));
        }
        if let Some(t) = q.due_by {
            f.push(format!("NextAttemptAt le {}", literal(&time_key(t))));
        }
        f.extend(cursor_filter(q));
        self.scan_entries(self.ledger(), &f.join(" and "), q).await
    }

    /// The index rows of job `id` in its index partition its id finds: its `JOB_` row and
    /// the dead rows of its entries (whose ids start with the job id): one key-range query.
    /// (Queue rows are keyed by due time first: a purge deletes those of the job's entries
    /// by their keys, and the repair at load any other.)
    pub(crate) async fn ledger_index_rows_of(
        &self,
        id: &JobId,
        p: &Partition,
    ) -> Result<Vec<Row>, StoreError> {
        let f = format!(
            "PartitionKey eq {} and (RowKey eq {} or (RowKey ge {} and RowKey lt {}))",
            literal(&index_pk(p)),
            literal(&format!("JOB_{id}")),
            literal(&dead_key_prefix(&format!("{id}."))),
            literal(&dead_key_prefix(&format!("{id}/")))
        );
        self.client.query(self.ledger(), &f, None).await
    }

    /// Deletes index rows read earlier, each only if nobody rewrote it since.
    pub(crate) async fn delete_index_rows(&self, rows: Vec<Row>) -> Result<(), StoreError> {
        for r in &rows {
            if let (Some(pk), Some(rk), Some(etag)) = (
                text(r, "PartitionKey"),
                text(r, "RowKey"),
                text(r, "odata.etag"),
            ) {
                self.client.delete_if(self.ledger(), pk, rk, etag).await?;
            }
        }
        Ok(())
    }

    /// Marks `job` live in its index partition again (a job that ended and runs again).
    pub(crate) async fn ledger_restore_live_index(&self, job: &Job) -> Result<(), StoreError> {
        let ops = vec![BatchOp::Upsert(index_job_row(job))];
        self.index_batch(&index_pk(&job.partition), ops).await?;
        self.register(&job.partition, None).await
    }

    /// See [`lucius_core::Store::purge_job`]. The job's partition goes in entity group
    /// transactions guarded by its job row (one, unless the job has 100 rows or more), then
    /// its index rows, then its ended row; `docs/storage.md` has the crash analysis.
    pub(crate) async fn ledger_purge(
        &self,
        id: &JobId,
        revision: &Revision,
    ) -> Result<(), StoreError> {
        let pk = id.as_str();
        let filter = format!("PartitionKey eq {}", literal(pk));
        let rows = self.client.query(self.ledger(), &filter, None).await?;
        let job = rows
            .iter()
            .find(|r| rk(r) == JOB)
            .map(read_job)
            .transpose()?
            .ok_or_else(|| purge_gone(id))?;
        refuse_purge(&job, revision)?;
        // Read while the job still exists: a job made again under this id writes its index
        // rows after its ledger batch, and these are deleted only if unchanged since.
        let idx = self.ledger_index_rows_of(id, &job.partition).await?;
        // Its entries' queue rows first, while the job shows which they are.
        let mut entries = Vec::new();
        for r in rows.iter().filter(|r| rk(r).starts_with("OUTBOX_")) {
            entries.push(read_outbox(r)?);
        }
        // (Dead rows are read in 2 and deleted If-Match below.)
        let queued: Vec<String> = self
            .index_keys_of(&entries)
            .into_iter()
            .filter(|k| k.starts_with("Q_"))
            .collect();
        self.delete_index_keys(&index_pk(&job.partition), queued)
            .await?;
        let mut children = Vec::new();
        for r in &rows {
            match rk(r) {
                JOB => {}
                // Another job's claim on this key (ids not derived from keys) stays.
                CLAIM if read_claim(r)?.job_id != *id => {}
                k => children.push(k.to_owned()),
            }
        }
        // Every batch is guarded by the job row: all but the last rewrite it unchanged
        // (If-Match, which moves its revision on), the last deletes it. A crash between
        // two leaves the job, still finished at the same time, listed at its new revision.
        let mut guard = revision.clone();
        let mut rest = children.as_slice();
        let unchanged = job_row(pk, JOB, &job)?;
        while rest.len() >= MAX_BATCH_OPS {
            let (now, later) = rest.split_at(MAX_BATCH_OPS - 1);
            let mut ops = vec![BatchOp::Update(unchanged.clone(), guard.clone())];
            ops.extend(now.iter().cloned().map(BatchOp::Delete));
            let revs = self.client.batch(self.ledger(), pk, &ops).await?;
            guard = revs.into_iter().next().unwrap_or(Revision::NEW);
            rest = later;
        }
        let mut ops = vec![BatchOp::DeleteAt(JOB.to_owned(), guard)];
        ops.extend(rest.iter().cloned().map(BatchOp::Delete));
        self.client.batch(self.ledger(), pk, &ops).await?;
        // The job is gone; the rest is found again from its ended row if this stops here.
        self.delete_index_rows(idx).await?;
        self.client
            .delete(self.ledger(), ENDED, &ended_rk(job.updated_at, id))
            .await
    }

    pub(crate) async fn ledger_active_jobs(
        &self,
        p: &Partition,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        let f = format!(
            "PartitionKey eq {} and RowKey ge 'JOB_' and RowKey lt 'JOB`'",
            literal(&index_pk(p))
        );
        self.job_ids_page(self.ledger(), f, "JOB_", "JobId", after, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn an_index_row_expires_after_the_grace_by_its_service_timestamp() {
        let mut row = Row::new();
        // The service writes seven fractional digits.
        row.insert("Timestamp".into(), "2024-03-05T00:00:00.1234567Z".into());
        let written = UNIX_EPOCH + Duration::from_millis(1_709_596_800_123);
        assert!(!index_row_expired(&row, written));
        assert!(!index_row_expired(&row, written + INDEX_GRACE));
        assert!(index_row_expired(
            &row,
            written + INDEX_GRACE + Duration::from_millis(2)
        ));
        // A row the service wrote "in the future" (skew) is young.
        assert!(!index_row_expired(&row, written - Duration::from_secs(60)));
        row.insert("Timestamp".into(), "not a time".into());
        assert!(!index_row_expired(&row, written + INDEX_GRACE * 10));
        row.remove("Timestamp");
        assert!(!index_row_expired(&row, written + INDEX_GRACE * 10));
    }
}
