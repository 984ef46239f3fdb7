//! Table mode: five tables, written in the port's order so a crash between any two
//! requests leaves a state the drift sweeper (or the client's retry) repairs.
//!
//! | table | PartitionKey | RowKey |
//! |---|---|---|
//! | idempotency | job id (a hash of tenant + key) | `CLAIM` |
//! | jobs | job id | `JOB` |
//! | steps | job id | `<index:010>_<stepId>` |
//! | outbox | dispatch partition `tenant_YYYYMM` | outbox id |
//! | job index | dispatch partition `tenant_YYYYMM` | `A_<jobId>` (live jobs), `Q_…`/`D_…` (`queue.rs`) |
//! | job index | `PARTITIONS` / `ENDED` | the registry (`queue.rs`) / ended rows (`retention.rs`) |

use lucius_core::ids::{JobId, Partition};
use lucius_core::{
    Changes, CreateOutcome, JobIndexEntry, JobRecord, NewJob, OutboxEntry, OutboxQuery,
    OutboxStatus, Revision, Step, StoreError, StoreErrorKind,
};
use serde_json::Value;

use crate::client::BatchOp;
use crate::entity::{encode, literal, partition_key, text, time_key, Row};
use crate::queue::queue_row;
use crate::retention::{delete_all, ended_rk, ended_row, purge_gone, refuse_purge, ENDED};
use crate::rows::*;
use crate::TableStore;

const CLAIM: &str = "CLAIM";
const JOB: &str = "JOB";
/// Set on a job row a purge has started on (see `table_purge`): a new intake of the same
/// key that finds it replaces it.
const PURGING: &str = "Purging";

/// The outbox entries of job `id`: ids are `<jobId>.<index>.<attempt>`, a RowKey range in
/// the job's partition.
fn entries_filter(id: &JobId, p: &Partition) -> String {
    format!(
        "PartitionKey eq {} and RowKey ge {} and RowKey lt {}",
        literal(&partition_key(p)),
        literal(&format!("{id}.")),
        literal(&format!("{id}/"))
    )
}

fn row_keys(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| text(r, "RowKey"))
        .map(str::to_owned)
        .collect()
}

fn step_rk(s: &Step) -> String {
    format!("{:010}_{}", s.index, s.step_id)
}

/// Conflicts on inserts are fine where another writer of the same claim got there first.
/// An insert's revision; `None` if the row was already there (a concurrent writer's).
fn inserted(r: Result<Revision, StoreError>) -> Result<Option<Revision>, StoreError> {
    match r {
        Ok(rev) => Ok(Some(rev)),
        Err(e) if e.kind == StoreErrorKind::Conflict => Ok(None),
        Err(e) => Err(e),
    }
}

fn tolerate_conflict<T>(r: Result<T, StoreError>) -> Result<(), StoreError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.kind == StoreErrorKind::Conflict => Ok(()),
        Err(e) => Err(e),
    }
}

/// A commit group's failure as the caller must see it: the error itself when no earlier
/// group landed, else [`StoreErrorKind::Partial`] naming what landed and what failed.
fn after_groups(e: StoreError, landed: &[&str], failed: &str, id: &JobId) -> StoreError {
    if landed.is_empty() {
        return e;
    }
    StoreError::partial(format!(
        "commit of job {id} wrote its {} and then failed to write its {failed}: {e}",
        landed.join(" and ")
    ))
}

/// The RowKey of a live job's row in its partition's index.
fn live_key(id: &JobId) -> String {
    format!("A_{id}")
}

impl TableStore {
    /// The index row that lists a live job for the sweepers.
    pub(crate) fn live_row(&self, entry: &JobIndexEntry) -> Result<Row, StoreError> {
        encode(
            &self.queue_pk(&entry.partition),
            &live_key(&entry.job_id),
            &format!("index row of job {}", entry.job_id),
            entry,
            &[
                ("Kind", "LIVE".into()),
                ("JobId", entry.job_id.as_str().into()),
            ],
        )
    }

    /// Lists a job and, if it is pending, its first entry: one batch in the partition's
    /// index (carrying the partition's waiting deletes), then its registration (as of
    /// `at`, or always for `None`: see [`TableStore::register`]).
    async fn index_new(
        &self,
        entry: &JobIndexEntry,
        first: Option<&OutboxEntry>,
        at: Option<lucius_core::Timestamp>,
    ) -> Result<(), StoreError> {
        let pk = self.queue_pk(&entry.partition);
        let mut ops = vec![BatchOp::Upsert(self.live_row(entry)?)];
        if let Some(e) = first.filter(|e| e.status == OutboxStatus::Pending) {
            ops.push(BatchOp::Upsert(queue_row(&pk, e)?));
        }
        self.index_batch(&pk, ops).await?;
        self.register(&entry.partition, at).await
    }

    /// Inserts steps; returns their revisions in order, or `None` when some row was
    /// already there (written by a concurrent replay: its revision is not ours to know).
    async fn insert_steps(&self, steps: &[&Step]) -> Result<Option<Vec<Revision>>, StoreError> {
        let t = &self.config.steps_table;
        let rows = steps
            .iter()
            .map(|s| step_row(s.job_id.as_str(), &step_rk(s), s))
            .collect::<Result<Vec<_>, _>>()?;
        match rows.as_slice() {
            [] => Ok(Some(Vec::new())),
            [one] => Ok(inserted(self.client.insert(t, one).await)?.map(|r| vec![r])),
            _ => {
                let pk = steps[0].job_id.as_str();
                let ops: Vec<_> = rows.iter().cloned().map(BatchOp::Insert).collect();
                match self.client.batch(t, pk, &ops).await {
                    Ok(revs) if revs.len() == rows.len() => Ok(Some(revs)),
                    Ok(_) => Ok(None),
                    // Some were written by a concurrent replay: insert the rest one by one.
                    Err(e) if e.kind == StoreErrorKind::Conflict => {
                        for r in &rows {
                            tolerate_conflict(self.client.insert(t, r).await)?;
                        }
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    pub(crate) async fn table_create(&self, new: &NewJob) -> Result<CreateOutcome, StoreError> {
        let id = new.job.id.as_str();
        let claim = claim_row(id, CLAIM, &new.claim)?;
        // Size checks of every row before the first write.
        let job = job_row(id, JOB, &new.job)?;
        let pk = partition_key(&new.outbox.partition);
        let outbox = outbox_row(&pk, new.outbox.id.as_str(), &new.outbox)?;
        for s in &new.steps {
            step_row(id, &step_rk(s), s)?;
        }
        self.live_row(&new.index)?;
        match self
            .client
            .insert(&self.config.idempotency_table, &claim)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind == StoreErrorKind::Conflict => return self.table_replay(new).await,
            Err(e) => return Err(e),
        }
        // Order of truth: claim, job, steps, index (live row and queue row), first directive.
        let job_rev = self.insert_job(&job).await?;
        let step_revs = self
            .insert_steps(&new.steps.iter().collect::<Vec<_>>())
            .await?;
        self.index_new(&new.index, Some(&new.outbox), Some(new.job.created_at))
            .await?;
        let entry_rev = inserted(self.client.insert(&self.config.outbox_table, &outbox).await)?;
        // The rows as written, with the revisions the writes returned; when a concurrent
        // replay wrote one of them first, its revision is read back instead.
        let rec = match (job_rev, step_revs, entry_rev) {
            (Some(job_rev), Some(step_revs), Some(entry_rev)) => JobRecord {
                job: lucius_core::Job {
                    revision: job_rev,
                    ..new.job.clone()
                },
                steps: new
                    .steps
                    .iter()
                    .zip(step_revs)
                    .map(|(s, revision)| Step {
                        revision,
                        ..s.clone()
                    })
                    .collect(),
                outbox: vec![OutboxEntry {
                    revision: entry_rev,
                    ..new.outbox.clone()
                }],
            },
            _ => self.table_load(&new.job.id).await?.ok_or_else(|| {
                StoreError::conflict(format!("job {id} vanished as it was written"))
            })?,
        };
        self.queue.saw(std::slice::from_ref(&new.outbox));
        Ok(CreateOutcome::Created(Box::new(rec)))
    }

    /// Inserts a new job's row after its claim; returns its revision, or `None` if a
    /// concurrent replay wrote it first. A row already there is a concurrent replay's, or
    /// — marked [`PURGING`] — the row of the job this key named before, whose purge
    /// deleted the claim but not yet the row: that one is replaced.
    async fn insert_job(&self, row: &Row) -> Result<Option<Revision>, StoreError> {
        let t = &self.config.jobs_table;
        match self.client.insert(t, row).await {
            Err(e) if e.kind == StoreErrorKind::Conflict => {}
            r => return r.map(Some),
        }
        let pk = text(row, "PartitionKey").unwrap_or_default();
        let Some(old) = self.client.get(t, pk, JOB).await? else {
            return inserted(self.client.insert(t, row).await);
        };
        if old.get(PURGING) != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        let rev = Revision::stored(text(&old, "odata.etag").unwrap_or_default());
        match self.client.delete_at(t, pk, JOB, &rev).await {
            Ok(()) => {}
            Err(e) if e.kind == StoreErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        inserted(self.client.insert(t, row).await)
    }

    async fn table_replay(&self, new: &NewJob) -> Result<CreateOutcome, StoreError> {
        let id = new.job.id.as_str();
        let claim = self
            .client
            .get(&self.config.idempotency_table, id, CLAIM)
            .await?
            .ok_or_else(|| StoreError::conflict(format!("claim of job {id} vanished")))?;
        let claim = read_claim(&claim)?;
        if claim.request_hash != new.claim.request_hash || claim.job_id != new.job.id {
            return Ok(CreateOutcome::Existing(claim));
        }
        let stored = self.client.get(&self.config.jobs_table, id, JOB).await?;
        let stored = stored.as_ref().map(read_job).transpose()?;
        if stored.as_ref().is_some_and(|j| j.status.is_terminal()) {
            return Ok(CreateOutcome::Existing(claim));
        }
        let have = self.steps_of(&new.job.id).await?;
        // The rows as the interrupted intake wrote them, not as of this replay.
        let first_step = have.iter().find(|s| s.index == new.outbox.step_index);
        let new = new.as_first_written(&claim, stored.as_ref(), first_step);
        if stored.is_none() {
            let row = job_row(id, JOB, &new.job)?;
            tolerate_conflict(self.client.insert(&self.config.jobs_table, &row).await)?;
        }
        let missing: Vec<&Step> = new
            .steps
            .iter()
            .filter(|s| !have.iter().any(|x| x.index == s.index))
            .collect();
        self.insert_steps(&missing).await?;
        let pk = partition_key(&new.outbox.partition);
        let stored = self
            .client
            .get(&self.config.outbox_table, &pk, new.outbox.id.as_str())
            .await?;
        let stored = stored.as_ref().map(read_outbox).transpose()?;
        // The queue row only for an entry still pending (as stored, or about to be).
        // Registered always: its partition may have retired since the torn intake.
        self.index_new(
            &new.index,
            Some(stored.as_ref().unwrap_or(&new.outbox)),
            None,
        )
        .await?;
        if stored.is_none() {
            let row = outbox_row(&pk, new.outbox.id.as_str(), &new.outbox)?;
            tolerate_conflict(self.client.insert(&self.config.outbox_table, &row).await)?;
        }
        Ok(CreateOutcome::Existing(claim))
    }

    async fn steps_of(&self, id: &JobId) -> Result<Vec<Step>, StoreError> {
        let f = format!("PartitionKey eq {}", literal(id.as_str()));
        let rows = self
            .client
            .query(&self.config.steps_table, &f, None)
            .await?;
        rows.iter().map(read_step).collect()
    }

    pub(crate) async fn table_load(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        // The job and its steps are read concurrently; the entries need the job's partition.
        let (row, steps) = futures::future::try_join(
            self.client.get(&self.config.jobs_table, id.as_str(), JOB),
            self.steps_of(id),
        )
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job = read_job(&row)?;
        let f = entries_filter(id, &job.partition);
        let rows = self
            .client
            .query(&self.config.outbox_table, &f, None)
            .await?;
        let outbox = rows
            .iter()
            .map(read_outbox)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(JobRecord { job, steps, outbox }))
    }

    /// Writes rows of one partition under their revisions: one request, or one batch.
    async fn write_group(
        &self,
        table: &str,
        pk: &str,
        rows: Vec<(Row, Revision)>,
    ) -> Result<Vec<Revision>, StoreError> {
        match rows.as_slice() {
            [] => Ok(Vec::new()),
            [(row, rev)] => Ok(vec![self.client.write(table, row, rev).await?]),
            _ => {
                let ops: Vec<_> = rows
                    .iter()
                    .map(|(r, rev)| BatchOp::write(r.clone(), rev))
                    .collect();
                self.client.batch(table, pk, &ops).await
            }
        }
    }

    pub(crate) async fn table_commit(&self, mut changes: Changes) -> Result<Changes, StoreError> {
        let Some(id) = changes.job_id().cloned() else {
            return Ok(changes);
        };
        // Encode everything first: a row too large fails the commit before any write.
        let steps = changes
            .steps
            .iter()
            .map(|s| Ok((step_row(id.as_str(), &step_rk(s), s)?, s.revision.clone())))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let outbox = changes
            .outbox
            .iter()
            .map(|e| {
                let pk = partition_key(&e.partition);
                Ok((outbox_row(&pk, e.id.as_str(), e)?, e.revision.clone()))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let job = changes
            .job
            .as_ref()
            .map(|j| job_row(id.as_str(), JOB, j).map(|r| (r, j.revision.clone())))
            .transpose()?;
        if let Some(p) = changes.outbox.first().map(|e| &e.partition) {
            if changes.outbox.iter().any(|e| &e.partition != p) {
                return Err(StoreError::permanent(format!(
                    "outbox entries of job {id} name more than one partition"
                )));
            }
        }
        let plan = self.plan_queue(&changes)?;
        // A job this change finishes gets its ended row before anything else: a crash
        // leaves a row too many (the purge checks the job row), never a finished job
        // without one. Nothing of the change is applied if it fails.
        if let Some(j) = changes.job.as_ref().filter(|j| j.status.is_terminal()) {
            self.client
                .upsert(&self.config.job_index_table, &ended_row(j))
                .await?;
        }
        // Then the queue rows of entries it makes (or keeps) pending: the queue is a
        // superset of the pending entries.
        self.queue_before(&plan).await?;
        // Steps (by index), then outbox entries, then the job. Each group is one request or
        // one entity group transaction, so it lands whole or not at all; a failure after a
        // group landed is `Partial` (the caller's transition happened), never the bare error.
        let mut landed: Vec<&str> = Vec::new();
        let revs = self
            .write_group(&self.config.steps_table, id.as_str(), steps)
            .await
            .map_err(|e| after_groups(e, &landed, "steps", &id))?;
        if !changes.steps.is_empty() {
            landed.push("steps");
        }
        for (s, r) in changes.steps.iter_mut().zip(revs) {
            s.revision = r;
        }
        let opk = changes
            .outbox
            .first()
            .map(|e| partition_key(&e.partition))
            .unwrap_or_default();
        let revs = self
            .write_group(&self.config.outbox_table, &opk, outbox)
            .await
            .map_err(|e| after_groups(e, &landed, "outbox entries", &id))?;
        if !changes.outbox.is_empty() {
            landed.push("outbox entries");
        }
        for (e, r) in changes.outbox.iter_mut().zip(revs) {
            e.revision = r;
        }
        if let (Some((row, rev)), Some(j)) = (job, changes.job.as_mut()) {
            j.revision = self
                .client
                .write(&self.config.jobs_table, &row, &rev)
                .await
                .map_err(|e| after_groups(e, &landed, "job", &id))?;
            if j.status.is_terminal() {
                // After the job: a crash here leaves the job listed as live; the sweeper
                // loads it, finds it terminal and changes nothing.
                let pk = self.queue_pk(&j.partition);
                let gone = vec![BatchOp::Delete(live_key(&j.id))];
                if let Err(e) = self.index_batch(&pk, gone).await {
                    tracing::warn!(error = %e, job = %j.id, "job index update failed");
                }
            }
        }
        self.queue_after(plan, &changes).await;
        Ok(changes)
    }

    /// Marks `job` live in the job index again (a job that ended and runs again).
    pub(crate) async fn table_restore_live_index(
        &self,
        job: &lucius_core::Job,
    ) -> Result<(), StoreError> {
        let entry = JobIndexEntry {
            job_id: job.id.clone(),
            partition: job.partition.clone(),
            request_type: job.request_type.clone(),
            created_at: job.created_at,
        };
        self.index_new(&entry, None, None).await
    }

    /// See [`lucius_core::Store::purge_job`]. Freezes the job row (a marked rewrite,
    /// If-Match the listed revision), deletes its steps, entries, index row and claim, then
    /// the job row (If-Match the frozen revision), then its ended row; `docs/storage.md`
    /// has the crash analysis.
    pub(crate) async fn table_purge(
        &self,
        id: &JobId,
        revision: &Revision,
    ) -> Result<(), StoreError> {
        let pk = id.as_str();
        let c = &self.config;
        let row = self
            .client
            .get(&c.jobs_table, pk, JOB)
            .await?
            .ok_or_else(|| purge_gone(id))?;
        let job = read_job(&row)?;
        refuse_purge(&job, revision)?;
        // 1. Freeze: no write planned on the listed revision lands on the job row now.
        let mut marked = job_row(pk, JOB, &job)?;
        marked.insert(PURGING.into(), Value::Bool(true));
        let frozen = self.client.update(&c.jobs_table, &marked, revision).await?;
        // 2. The index rows, 3. steps and entries.
        let steps_filter = format!("PartitionKey eq {}", literal(pk));
        let (steps, entries) = futures::future::try_join(
            self.client.query(&c.steps_table, &steps_filter, None),
            self.client
                .query(&c.outbox_table, &entries_filter(id, &job.partition), None),
        )
        .await?;
        let opk = partition_key(&job.partition);
        let indexed = entries
            .iter()
            .map(read_outbox)
            .collect::<Result<Vec<_>, _>>()?;
        // The index rows first, while the entries still show which queue rows are theirs.
        let mut index = vec![live_key(id)];
        index.extend(self.index_keys_of(&indexed));
        self.delete_index_keys(&opk, index).await?;
        delete_all(self, &c.steps_table, pk, row_keys(&steps)).await?;
        delete_all(self, &c.outbox_table, &opk, row_keys(&entries)).await?;
        // 4. The claim, if it is this job's: the key is free from here on (a new intake
        // that finds the frozen row replaces it, see `insert_job`).
        if let Some(claim) = self.client.get(&c.idempotency_table, pk, CLAIM).await? {
            if read_claim(&claim)?.job_id == *id {
                let etag = text(&claim, "odata.etag").unwrap_or_default();
                self.client
                    .delete_if(&c.idempotency_table, pk, CLAIM, etag)
                    .await?;
            }
        }
        // 5. The job row, if still frozen; 6. its ended row, last: until then the next
        // round lists the job again and finishes this.
        self.client
            .delete_at(&c.jobs_table, pk, JOB, &frozen)
            .await?;
        self.client
            .delete(&c.job_index_table, ENDED, &ended_rk(job.updated_at, id))
            .await
    }

    /// Entries of any status, or `SENT` ones: not indexed, so an admin listing scans the
    /// outbox table (a partition of it when the query names one). `PENDING` and `DEAD`
    /// listings read the queue and dead rows instead (see `queue.rs`).
    pub(crate) async fn table_outbox(
        &self,
        q: &OutboxQuery,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut f = Vec::new();
        if let Some(p) = &q.partition {
            f.push(format!("PartitionKey eq {}", literal(&partition_key(p))));
        }
        if let Some(s) = q.status {
            f.push(format!("Status eq {}", literal(s.as_str())));
        }
        if let Some(t) = q.due_by {
            f.push(format!("NextAttemptAt le {}", literal(&time_key(t))));
        }
        f.extend(cursor_filter(q));
        if f.is_empty() {
            f.push("Kind eq 'OUTBOX'".into());
        }
        self.scan_entries(&self.config.outbox_table, &f.join(" and "), q)
            .await
    }

    pub(crate) async fn table_active_jobs(
        &self,
        p: &Partition,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        let f = format!(
            "PartitionKey eq {} and RowKey ge 'A_' and RowKey lt 'A`'",
            literal(&partition_key(p))
        );
        self.job_ids_page(&self.config.job_index_table, f, "A_", "JobId", after, limit)
            .await
    }
}
