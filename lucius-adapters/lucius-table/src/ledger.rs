//! Ledger mode: one table, one partition per job (`PartitionKey` = job id; RowKeys `CLAIM`,
//! `JOB`, `STEP_<index:010>_<stepId>`, `OUTBOX_<outboxId>`), every change one entity group
//! transaction; plus index partitions `IDX_<tenant>_<YYYYMM>` (RowKeys `PARTITION`,
//! `JOB_<jobId>` for live jobs, `OUTBOX_<outboxId>` for `PENDING`/`DEAD` entries) so the
//! dispatcher and the sweepers never scan.
//!
//! The ledger is the truth; the index is kept a *superset* of it for what the dispatcher
//! must find: a row that makes an entry visible (`PENDING`) is written before the ledger
//! batch, a row that hides one (`SENT`, `DEAD`, a finished job) after it. A crash between
//! the two leaves an index row too many, never one too few; readers verify index rows
//! against the ledger and delete the stale ones.

use std::collections::BTreeMap;

use lucius_core::ids::{JobId, Partition};
use lucius_core::{
    Changes, CreateOutcome, Job, JobRecord, NewJob, OutboxEntry, OutboxQuery, OutboxStatus,
    Revision, StoreError, StoreErrorKind,
};
use serde_json::Value;

use crate::client::BatchOp;
use crate::entity::{
    literal, partition_from_key, partition_key, text, time_key, Row, MAX_BATCH_OPS,
};
use crate::retention::{ended_rk, ended_row, purge_gone, refuse_purge, ENDED};
use crate::rows::*;
use crate::TableStore;

const CLAIM: &str = "CLAIM";
const JOB: &str = "JOB";
const MARKER: &str = "PARTITION";

fn step_rk(index: u32, step_id: &str) -> String {
    format!("STEP_{index:010}_{step_id}")
}

fn outbox_rk(id: &str) -> String {
    format!("OUTBOX_{id}")
}

fn index_pk(p: &Partition) -> String {
    format!("IDX_{}", partition_key(p))
}

/// Index partitions sort between these two bounds (`` ` `` follows `_`).
const INDEX_FROM: &str = "IDX_";
const INDEX_TO: &str = "IDX`";

fn marker_row(p: &Partition) -> Row {
    let mut r = Row::new();
    r.insert("PartitionKey".into(), index_pk(p).into());
    r.insert("RowKey".into(), MARKER.into());
    r.insert("Kind".into(), "PARTITION".into());
    r.insert("Partition".into(), partition_key(p).into());
    r
}

fn index_job_row(job: &Job) -> Row {
    let mut r = Row::new();
    r.insert("PartitionKey".into(), index_pk(&job.partition).into());
    r.insert("RowKey".into(), format!("JOB_{}", job.id).into());
    r.insert("Kind".into(), "IDXJOB".into());
    r.insert("JobId".into(), job.id.as_str().into());
    r
}

fn index_outbox_row(e: &OutboxEntry) -> Row {
    let mut r = Row::new();
    r.insert("PartitionKey".into(), index_pk(&e.partition).into());
    r.insert("RowKey".into(), outbox_rk(e.id.as_str()).into());
    r.insert("Kind".into(), "IDXOUTBOX".into());
    r.insert("JobId".into(), e.job_id.as_str().into());
    r.insert("OutboxId".into(), e.id.as_str().into());
    r.insert("Status".into(), e.status.as_str().into());
    r.insert("NextAttemptAt".into(), time_key(e.next_attempt_at).into());
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

    /// Writes index rows of one index partition: one request for one row, a batch for more.
    async fn index_write(&self, pk: &str, ops: Vec<BatchOp>) -> Result<(), StoreError> {
        match ops.as_slice() {
            [] => Ok(()),
            [BatchOp::Upsert(r)] => self.client.upsert(self.ledger(), r).await,
            [BatchOp::Delete(rk)] => self.client.delete(self.ledger(), pk, rk).await,
            _ => match self.client.batch(self.ledger(), pk, &ops).await {
                Ok(_) => Ok(()),
                // A delete of a row already gone fails the whole batch: do them one by one.
                Err(e) if e.kind == StoreErrorKind::NotFound => {
                    for op in ops {
                        match op {
                            BatchOp::Upsert(r) => self.client.upsert(self.ledger(), &r).await?,
                            BatchOp::Delete(rk) => {
                                self.client.delete(self.ledger(), pk, &rk).await?
                            }
                            _ => {}
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
        }
    }

    /// The index rows a stored job needs: marker, live job, visible entries.
    async fn index_job(&self, rec: &JobRecord) -> Result<(), StoreError> {
        let pk = index_pk(&rec.job.partition);
        let mut ops = vec![BatchOp::Upsert(marker_row(&rec.job.partition))];
        if !rec.job.status.is_terminal() {
            ops.push(BatchOp::Upsert(index_job_row(&rec.job)));
        }
        for e in &rec.outbox {
            if e.status != OutboxStatus::Sent {
                ops.push(BatchOp::Upsert(index_outbox_row(e)));
            }
        }
        self.index_write(&pk, ops).await
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
                self.index_job(&rec).await?;
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
        if claim.request_hash != new.claim.request_hash || claim.job_id != new.job.id {
            return Ok(CreateOutcome::Existing(claim));
        }
        if loaded.job.as_ref().is_some_and(|j| j.status.is_terminal()) {
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
        self.index_job(&JobRecord { job, steps, outbox }).await?;
        Ok(CreateOutcome::Existing(claim))
    }

    pub(crate) async fn ledger_commit(&self, mut changes: Changes) -> Result<Changes, StoreError> {
        let Some(id) = changes.job_id().cloned() else {
            return Ok(changes);
        };
        let pk = id.as_str();
        // 1. Make new PENDING entries visible before they exist.
        let mut before: BTreeMap<String, Vec<BatchOp>> = BTreeMap::new();
        for e in changes
            .outbox
            .iter()
            .filter(|e| e.status == OutboxStatus::Pending)
        {
            before
                .entry(index_pk(&e.partition))
                .or_default()
                .push(BatchOp::Upsert(index_outbox_row(e)));
        }
        for (ipk, ops) in before {
            self.index_write(&ipk, ops).await?;
        }
        // 2. The change itself: one entity group transaction.
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
        // A job this change finishes gets its ended row first, like any row that makes
        // something findable: a crash leaves a row too many, never a finished job without.
        if let Some(j) = changes.job.as_ref().filter(|j| j.status.is_terminal()) {
            self.client.upsert(self.ledger(), &ended_row(j)).await?;
        }
        let revs = self.client.batch(self.ledger(), pk, &ops).await?;
        changes.assign_revisions(revs);
        // 3. Hide what is no longer pending. The change is committed: a failure here only
        // leaves stale index rows, which readers verify and remove.
        let mut after: BTreeMap<String, Vec<BatchOp>> = BTreeMap::new();
        for e in &changes.outbox {
            let op = match e.status {
                OutboxStatus::Sent => BatchOp::Delete(outbox_rk(e.id.as_str())),
                OutboxStatus::Dead => BatchOp::Upsert(index_outbox_row(e)),
                OutboxStatus::Pending => continue,
            };
            after.entry(index_pk(&e.partition)).or_default().push(op);
        }
        if let Some(j) = changes.job.as_ref().filter(|j| j.status.is_terminal()) {
            after
                .entry(index_pk(&j.partition))
                .or_default()
                .push(BatchOp::Delete(format!("JOB_{}", j.id)));
        }
        for (ipk, ops) in after {
            if let Err(e) = self.index_write(&ipk, ops).await {
                tracing::warn!(error = %e, job = %id, "ledger index update failed; readers will repair it");
            }
        }
        Ok(changes)
    }

    pub(crate) async fn ledger_outbox(
        &self,
        q: &OutboxQuery,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        match q.status {
            Some(status @ (OutboxStatus::Pending | OutboxStatus::Dead)) => {
                self.indexed_outbox(q, status).await
            }
            _ => {
                // SENT (or any) entries are not indexed: an admin listing scans the ledger.
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
                let rows = self
                    .client
                    .query(self.ledger(), &f.join(" and "), None)
                    .await?;
                let mut v = rows
                    .iter()
                    .map(read_outbox)
                    .collect::<Result<Vec<_>, _>>()?;
                sort_entries(&mut v);
                past_cursor(&mut v, q);
                v.truncate(q.limit);
                Ok(v)
            }
        }
    }

    async fn indexed_outbox(
        &self,
        q: &OutboxQuery,
        status: OutboxStatus,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut f = match &q.partition {
            Some(p) => vec![format!("PartitionKey eq {}", literal(&index_pk(p)))],
            None => vec![format!(
                "PartitionKey ge {} and PartitionKey lt {}",
                literal(INDEX_FROM),
                literal(INDEX_TO)
            )],
        };
        f.push("Kind eq 'IDXOUTBOX'".into());
        f.push(format!("Status eq {}", literal(status.as_str())));
        if let Some(t) = q.due_by {
            f.push(format!("NextAttemptAt le {}", literal(&time_key(t))));
        }
        // Index rows due before the cursor are skipped unread; verification below applies
        // the exact `(nextAttemptAt, id)` cursor to the entries themselves.
        f.extend(cursor_filter(q));
        let mut candidates = self
            .client
            .query(self.ledger(), &f.join(" and "), None)
            .await?;
        candidates.sort_by(|a, b| {
            (text(a, "NextAttemptAt"), rk(a)).cmp(&(text(b, "NextAttemptAt"), rk(b)))
        });
        let mut out = Vec::new();
        // Verify against the ledger, a few at a time, until the limit is reached.
        for chunk in candidates.chunks(8) {
            let verified =
                futures::future::try_join_all(chunk.iter().map(|row| self.verify(row, q, status)))
                    .await?;
            out.extend(verified.into_iter().flatten());
            if out.len() >= q.limit {
                break;
            }
        }
        sort_entries(&mut out);
        out.truncate(q.limit);
        Ok(out)
    }

    /// The ledger entry an index row names, if it still matches the query; repairs the
    /// index row when it is stale (see [`INDEX_GRACE`] for a row whose entry is missing).
    async fn verify(
        &self,
        idx: &Row,
        q: &OutboxQuery,
        status: OutboxStatus,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        let (Some(job), Some(id), Some(ipk)) = (
            text(idx, "JobId"),
            text(idx, "OutboxId"),
            text(idx, "PartitionKey"),
        ) else {
            return Ok(None);
        };
        let row = self.client.get(self.ledger(), job, &outbox_rk(id)).await?;
        let entry = row.as_ref().map(read_outbox).transpose()?;
        let stale = match &entry {
            None => true,
            Some(e) => {
                e.status == OutboxStatus::Sent
                    || index_pk(&e.partition) != ipk
                    || text(idx, "Status") != Some(e.status.as_str())
                    || text(idx, "NextAttemptAt") != Some(time_key(e.next_attempt_at).as_str())
            }
        };
        if stale {
            let repair = match &entry {
                Some(e) if e.status != OutboxStatus::Sent && index_pk(&e.partition) == ipk => {
                    self.client
                        .upsert(self.ledger(), &index_outbox_row(e))
                        .await
                }
                // No entry yet: a commit may be between its index write and its ledger
                // batch. Deleting the row now would hide the entry once the batch lands,
                // so a missing entry's row is removed only once it is older than any
                // commit can take, and only if nobody rewrote it since it was read.
                None if !index_row_expired(idx, std::time::SystemTime::now()) => Ok(()),
                None => match text(idx, "odata.etag") {
                    Some(etag) => {
                        self.client
                            .delete_if(self.ledger(), ipk, &outbox_rk(id), etag)
                            .await
                    }
                    None => Ok(()),
                },
                Some(_) => self.client.delete(self.ledger(), ipk, &outbox_rk(id)).await,
            };
            if let Err(e) = repair {
                tracing::warn!(error = %e, entry = id, "could not repair a stale ledger index row");
            }
        }
        Ok(entry.filter(|e| {
            e.status == status
                && q.partition.as_ref().is_none_or(|p| &e.partition == p)
                && q.due_by.is_none_or(|t| e.next_attempt_at <= t)
                && q.after
                    .as_ref()
                    .is_none_or(|(at, id)| (e.next_attempt_at, &e.id) > (*at, id))
        }))
    }

    /// The index rows of job `id` in its index partition: its `JOB_` row and the `OUTBOX_`
    /// rows of its entries (whose ids start with the job id): one key-range query.
    pub(crate) async fn ledger_index_rows_of(
        &self,
        id: &JobId,
        p: &Partition,
    ) -> Result<Vec<Row>, StoreError> {
        let f = format!(
            "PartitionKey eq {} and (RowKey eq {} or (RowKey ge {} and RowKey lt {}))",
            literal(&index_pk(p)),
            literal(&format!("JOB_{id}")),
            literal(&outbox_rk(&format!("{id}."))),
            literal(&outbox_rk(&format!("{id}/")))
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
        let ops = vec![
            BatchOp::Upsert(marker_row(&job.partition)),
            BatchOp::Upsert(index_job_row(job)),
        ];
        self.index_write(&index_pk(&job.partition), ops).await
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
            "PartitionKey eq {} and Kind eq 'IDXJOB'",
            literal(&index_pk(p))
        );
        self.job_ids_page(self.ledger(), f, "JOB_", "JobId", after, limit)
            .await
    }

    pub(crate) async fn ledger_partitions(&self) -> Result<Vec<Partition>, StoreError> {
        let f = format!(
            "PartitionKey ge {} and PartitionKey lt {} and Kind eq 'PARTITION'",
            literal(INDEX_FROM),
            literal(INDEX_TO)
        );
        let rows = self.client.query(self.ledger(), &f, None).await?;
        rows.iter()
            .filter_map(|r| r.get("Partition").and_then(Value::as_str))
            .map(partition_from_key)
            .collect()
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
