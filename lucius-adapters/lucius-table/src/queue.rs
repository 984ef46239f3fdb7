//! What the background loops read, in both layouts: the due-ordered queue of `PENDING`
//! entries, the `DEAD` entries, and the registry of partitions. Each is one key range, so
//! no loop reads a whole table or filters on a non-key property across partitions; each
//! reads what is live, not what is history.
//!
//! | rows | table (`table` / `ledger`) | PartitionKey | RowKey |
//! |---|---|---|---|
//! | queue | job index / ledger | `tenant_YYYYMM` / `IDX_tenant_YYYYMM` | `Q_<nextAttemptAt:020>_<outboxId>` |
//! | dead | job index / ledger | same | `D_<outboxId>` |
//! | registry | job index / ledger | `PARTITIONS` | `tenant_YYYYMM` |
//!
//! A queue row carries a copy of its entry as it was when the row was written: a pending
//! listing is one `$top`-bounded key-range query per partition, in due order, with no
//! read of the entries themselves. The queue is kept a *superset* of the `PENDING`
//! entries: a queue row is written before the write that makes its entry pending (or
//! moves its due time), and deleted only after the entry is sent, dead or due at another
//! time. Those deletes are not sent one by one: they wait in this process for the next
//! request to the same partition (an intake's index batch carries them), or for the next
//! listing of the partition, which sends them first as one batch.
//!
//! A queue row can therefore be stale (its entry sent, dead, due at another time, or
//! gone): a listing may return an entry that is no longer pending. Every reader acts on
//! an entry only after loading its job, so a stale row costs one load, and that load
//! repairs it: the rows a listing handed out are remembered, and [`TableStore::repair_listed`]
//! deletes those the loaded job shows to be stale (a row whose entry does not exist yet
//! only after [`INDEX_GRACE`]: its commit may be between its queue row and its entry).
//!
//! A partition is registered (one upsert, remembered by this process) before its first
//! queue row. A partition whose month is over is registered again after every queue row
//! written to it, and retired only an hour after its month ended, after checking that it
//! holds no live job and no queue row, and checking again after the registry row is
//! deleted: a write racing the retirement registers the partition again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use lucius_core::ids::{JobId, OutboxId, Partition};
use lucius_core::{
    Changes, Job, JobIndexEntry, JobRecord, OutboxEntry, OutboxQuery, OutboxStatus, Revision,
    StoreError, StoreErrorKind, Timestamp,
};

use crate::client::BatchOp;
use crate::entity::{
    literal, partition_from_key, partition_key, text, time_key, Row, MAX_BATCH_OPS,
};
use crate::ledger::index_row_expired;
use crate::rows::{outbox_row, read_outbox, sort_entries};
use crate::{Mode, TableStore};

/// The partition of the registry rows (job ids are UUIDs, dispatch partitions end in
/// `_YYYYMM`, ledger index partitions start with `IDX_`, ended rows are under `ENDED`).
pub(crate) const REGISTRY: &str = "PARTITIONS";

/// How long after its month ended a partition may retire: longer than any write that
/// began while the month was not over can take, and than any clock skew between writers.
const RETIRE_AFTER: i64 = 3_600_000;

/// Bounds on what this process remembers (cleared when exceeded: each is an
/// optimisation, never needed for correctness).
const MAX_REMEMBERED: usize = 50_000;

/// Pending listings across partitions read this many partitions at once.
const PARTITIONS_AT_ONCE: usize = 8;

/// The queue row key of `id` due at `at`.
pub(crate) fn queue_key(at: Timestamp, id: &OutboxId) -> String {
    format!("Q_{}_{id}", time_key(at))
}

/// The dead row key of `id`.
pub(crate) fn dead_key(id: &OutboxId) -> String {
    dead_key_prefix(id.as_str())
}

/// The dead row key of an id, or of a prefix of ids.
pub(crate) fn dead_key_prefix(id: &str) -> String {
    format!("D_{id}")
}

/// Keys in `[prefix_, prefix`)`: `` ` `` follows `_`.
fn range(prefix: &str) -> String {
    format!(
        "RowKey ge {} and RowKey lt {}",
        literal(&format!("{prefix}_")),
        literal(&format!("{prefix}`"))
    )
}

pub(crate) fn queue_row(pk: &str, e: &OutboxEntry) -> Result<Row, StoreError> {
    let mut r = outbox_row(pk, &queue_key(e.next_attempt_at, &e.id), e)?;
    r.insert("Kind".into(), "QUEUE".into());
    r.insert("OutboxId".into(), e.id.as_str().into());
    Ok(r)
}

pub(crate) fn dead_row(pk: &str, e: &OutboxEntry) -> Result<Row, StoreError> {
    let mut r = outbox_row(pk, &dead_key(&e.id), e)?;
    r.insert("Kind".into(), "DEAD".into());
    r.insert("OutboxId".into(), e.id.as_str().into());
    Ok(r)
}

fn registry_row(p: &Partition) -> Row {
    let mut r = Row::new();
    r.insert("PartitionKey".into(), REGISTRY.into());
    r.insert("RowKey".into(), partition_key(p).into());
    r.insert("Kind".into(), "PARTITION".into());
    r.insert("Partition".into(), partition_key(p).into());
    r
}

/// An entry as its queue or dead row copied it. It has no revision: a commit planned on
/// it conflicts, so only a loaded entry is ever written.
fn copied_entry(row: &Row) -> Result<OutboxEntry, StoreError> {
    let mut e = read_outbox(row)?;
    e.revision = Revision::NEW;
    Ok(e)
}

fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The RowKey an index operation writes.
fn op_key(op: &BatchOp) -> Option<String> {
    match op {
        BatchOp::Delete(k) => Some(k.clone()),
        BatchOp::Upsert(r) => text(r, "RowKey").map(str::to_owned),
        _ => None,
    }
}

/// A queue row a listing handed out, kept until its job is loaded.
#[derive(Debug, Clone)]
struct Listed {
    pk: String,
    due: Timestamp,
    id: OutboxId,
    /// The row's service `Timestamp` alone (what the grace is judged by).
    stamp: Row,
}

/// What one process remembers about the queue (shared by the clones of a store).
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The due time of `PENDING` entries as this process last read or wrote them, so a
    /// commit that moves or ends one knows which queue row it leaves behind.
    dues: HashMap<OutboxId, Timestamp>,
    /// Queue rows listings handed out, by job, for [`TableStore::repair_listed`].
    listed: HashMap<JobId, Vec<Listed>>,
    /// Index writes waiting for a request to their partition, by partition key, then
    /// RowKey: queue rows to delete (`None`), dead rows to write.
    deferred: HashMap<String, BTreeMap<String, Option<Row>>>,
    /// Partitions this process registered.
    registered: HashSet<String>,
    /// Jobs this process last read or wrote finished: a commit that makes one live again
    /// lists it again.
    ended: HashSet<JobId>,
}

impl QueueState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the due times of the entries (pending ones; others are forgotten).
    pub(crate) fn saw(&self, entries: &[OutboxEntry]) {
        let mut g = self.lock();
        if g.dues.len() > MAX_REMEMBERED {
            g.dues.clear();
        }
        for e in entries {
            if e.status == OutboxStatus::Pending {
                g.dues.insert(e.id.clone(), e.next_attempt_at);
            } else {
                g.dues.remove(&e.id);
            }
        }
    }

    /// Remembers whether `job` is finished.
    pub(crate) fn saw_job(&self, job: &Job) {
        let mut g = self.lock();
        if job.status.is_terminal() {
            if g.ended.len() > MAX_REMEMBERED {
                g.ended.clear();
            }
            g.ended.insert(job.id.clone());
        } else {
            g.ended.remove(&job.id);
        }
    }

    /// Defers a write of row `rk` of partition `pk` (`None`: a delete); returns whether the
    /// partition has a whole batch waiting.
    fn defer(&self, pk: &str, rk: String, row: Option<Row>) -> bool {
        let mut g = self.lock();
        let waiting = g.deferred.entry(pk.to_owned()).or_default();
        waiting.insert(rk, row);
        waiting.len() >= MAX_BATCH_OPS
    }

    /// Up to `room` deferred writes of `pk`, in RowKey order (a dead row before the queue
    /// row it replaces), leaving out the rows in `skip`.
    fn take(&self, pk: &str, room: usize, skip: &[String]) -> Vec<BatchOp> {
        let mut g = self.lock();
        let Some(waiting) = g.deferred.get_mut(pk) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < room {
            match waiting.pop_first() {
                Some((k, _)) if skip.contains(&k) => {}
                Some((k, None)) => out.push(BatchOp::Delete(k)),
                Some((_, Some(row))) => out.push(BatchOp::Upsert(row)),
                None => break,
            }
        }
        if waiting.is_empty() {
            g.deferred.remove(pk);
        }
        out
    }

    /// Puts deferred writes back (their request failed).
    fn restore(&self, pk: &str, ops: Vec<BatchOp>) {
        for op in ops {
            match op {
                BatchOp::Delete(k) => {
                    self.defer(pk, k, None);
                }
                BatchOp::Upsert(r) => {
                    if let Some(k) = text(&r, "RowKey").map(str::to_owned) {
                        self.defer(pk, k, Some(r));
                    }
                }
                _ => {}
            }
        }
    }
}

/// The index writes a commit needs around its own write.
#[derive(Default)]
pub(crate) struct QueuePlan {
    /// Queue rows to upsert before the commit, by partition key.
    pub(crate) before: HashMap<String, Vec<BatchOp>>,
    /// Partitions to register before the commit (after its queue rows), with the time of
    /// the write.
    pub(crate) register: Vec<(Partition, Timestamp)>,
    /// Index writes after the commit, deferred (see the module docs): the queue rows it
    /// leaves stale (`None`, deleted) and the dead rows of entries it kills, by partition
    /// key and RowKey.
    pub(crate) stale: Vec<(String, String, Option<Row>)>,
}

impl TableStore {
    /// The table holding queue, dead and registry rows.
    pub(crate) fn queue_table(&self) -> &str {
        match self.config.mode {
            Mode::Table => &self.config.job_index_table,
            Mode::Ledger => &self.config.ledger_table,
        }
    }

    /// The partition key of `p`'s queue, dead and live-job rows.
    pub(crate) fn queue_pk(&self, p: &Partition) -> String {
        match self.config.mode {
            Mode::Table => partition_key(p),
            Mode::Ledger => format!("IDX_{}", partition_key(p)),
        }
    }

    /// The row that lists `job` as live for the sweepers.
    pub(crate) fn live_index_row(&self, job: &Job) -> Result<Row, StoreError> {
        match self.config.mode {
            Mode::Table => self.live_row(&JobIndexEntry {
                job_id: job.id.clone(),
                partition: job.partition.clone(),
                request_type: job.request_type.clone(),
                created_at: job.created_at,
            }),
            Mode::Ledger => Ok(crate::ledger::index_job_row(job)),
        }
    }

    /// The RowKey prefix of live-job rows (`A_<jobId>` / `JOB_<jobId>`).
    pub(crate) fn live_prefix(&self) -> &'static str {
        match self.config.mode {
            Mode::Table => "A",
            Mode::Ledger => "JOB",
        }
    }

    /// Plans the index rows of a commit: the queue rows of its entries, and the live row
    /// of a job it makes live again (one this process last saw finished: a commit is
    /// planned on a job read through this store).
    pub(crate) fn plan_queue(&self, changes: &Changes) -> Result<QueuePlan, StoreError> {
        let mut plan = QueuePlan::default();
        let entries = &changes.outbox;
        if let Some(j) = changes.job.as_ref().filter(|j| !j.status.is_terminal()) {
            if self.queue.lock().ended.contains(&j.id) {
                let pk = self.queue_pk(&j.partition);
                plan.before
                    .entry(pk)
                    .or_default()
                    .push(BatchOp::Upsert(self.live_index_row(j)?));
                plan.register.push((j.partition.clone(), j.updated_at));
            }
        }
        let dues: Vec<Option<Timestamp>> = {
            let g = self.queue.lock();
            entries.iter().map(|e| g.dues.get(&e.id).copied()).collect()
        };
        for (e, known) in entries.iter().zip(dues) {
            let pk = self.queue_pk(&e.partition);
            match e.status {
                OutboxStatus::Pending => {
                    plan.before
                        .entry(pk.clone())
                        .or_default()
                        .push(BatchOp::Upsert(queue_row(&pk, e)?));
                    if !plan.register.iter().any(|(p, _)| p == &e.partition) {
                        plan.register.push((e.partition.clone(), e.updated_at));
                    }
                    if let Some(d) = known.filter(|d| *d != e.next_attempt_at) {
                        plan.stale.push((pk, queue_key(d, &e.id), None));
                    }
                }
                status => {
                    // Sent and dead keep the due time they were pending at. A dead entry's
                    // dead row is written with the delete of its queue row.
                    let d = known.unwrap_or(e.next_attempt_at);
                    if status == OutboxStatus::Dead {
                        plan.stale
                            .push((pk.clone(), dead_key(&e.id), Some(dead_row(&pk, e)?)));
                    }
                    plan.stale.push((pk, queue_key(d, &e.id), None));
                }
            }
        }
        Ok(plan)
    }

    /// Writes the plan's queue rows and registrations (before the commit).
    pub(crate) async fn queue_before(&self, plan: &QueuePlan) -> Result<(), StoreError> {
        for (pk, ops) in &plan.before {
            self.index_batch(pk, ops.clone()).await?;
        }
        for (p, at) in &plan.register {
            self.register(p, Some(*at)).await?;
        }
        Ok(())
    }

    /// After the commit: its deferred index writes (see [`QueuePlan::stale`]).
    pub(crate) async fn queue_after(&self, plan: QueuePlan, changes: &Changes) {
        self.queue.saw(&changes.outbox);
        if let Some(j) = &changes.job {
            self.queue.saw_job(j);
        }
        let mut full = Vec::new();
        for (pk, rk, row) in plan.stale {
            if self.queue.defer(&pk, rk, row) && !full.contains(&pk) {
                full.push(pk);
            }
        }
        for pk in full {
            self.flush_deferred(&pk).await;
        }
    }

    /// Writes `ops` to the index partition `pk` in one request, with as many of the
    /// partition's waiting deletes as fit in the same entity group transaction.
    pub(crate) async fn index_batch(&self, pk: &str, ops: Vec<BatchOp>) -> Result<(), StoreError> {
        let table = self.queue_table().to_owned();
        let keys: Vec<String> = ops.iter().filter_map(op_key).collect();
        let deferred = self
            .queue
            .take(pk, MAX_BATCH_OPS.saturating_sub(ops.len()), &keys);
        if deferred.is_empty() {
            return match ops.as_slice() {
                [] => Ok(()),
                [BatchOp::Upsert(r)] => self.client.upsert(&table, r).await,
                [BatchOp::Delete(rk)] => self.client.delete(&table, pk, rk).await,
                _ => self.batch_tolerant(&table, pk, ops).await,
            };
        }
        let mut all = ops.clone();
        all.extend(deferred.iter().cloned());
        match self.client.batch(&table, pk, &all).await {
            Ok(_) => Ok(()),
            // A delete of a row already gone fails the whole batch: the writes alone, then
            // the deferred ones.
            Err(e) if e.kind == StoreErrorKind::NotFound => {
                self.batch_tolerant(&table, pk, ops).await?;
                self.batch_tolerant(&table, pk, deferred).await
            }
            Err(e) => {
                self.queue.restore(pk, deferred);
                Err(e)
            }
        }
    }

    /// A batch of upserts and deletes whose deletes may find their rows gone.
    async fn batch_tolerant(
        &self,
        table: &str,
        pk: &str,
        ops: Vec<BatchOp>,
    ) -> Result<(), StoreError> {
        match ops.as_slice() {
            [] => return Ok(()),
            [BatchOp::Upsert(r)] => return self.client.upsert(table, r).await,
            [BatchOp::Delete(rk)] => return self.client.delete(table, pk, rk).await,
            _ => {}
        }
        match self.client.batch(table, pk, &ops).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == StoreErrorKind::NotFound => {
                for op in ops {
                    match op {
                        BatchOp::Upsert(r) => self.client.upsert(table, &r).await?,
                        BatchOp::Delete(rk) => self.client.delete(table, pk, &rk).await?,
                        _ => {}
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Sends the deferred index writes of partition `pk` (a failure leaves stale queue
    /// rows to the repair at load).
    pub(crate) async fn flush_deferred(&self, pk: &str) {
        let table = self.queue_table().to_owned();
        loop {
            let ops = self.queue.take(pk, MAX_BATCH_OPS, &[]);
            if ops.is_empty() {
                return;
            }
            if let Err(e) = self.batch_tolerant(&table, pk, ops).await {
                tracing::warn!(error = %e, partition = pk, "deferred index writes failed; readers will repair the rows");
                return;
            }
        }
    }

    /// Lists `p` in the registry for a write made at `at` (by the writer's clock): once per
    /// process while the month runs at `at`, every time once it is over, and every time
    /// for `None` (a repair). See the module docs.
    pub(crate) async fn register(
        &self,
        p: &Partition,
        at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let key = partition_key(p);
        let cached = at.is_some_and(|t| !p.is_over(t));
        if cached && self.queue.lock().registered.contains(&key) {
            return Ok(());
        }
        self.client
            .upsert(self.queue_table(), &registry_row(p))
            .await?;
        let mut g = self.queue.lock();
        if g.registered.len() > MAX_REMEMBERED {
            g.registered.clear();
        }
        g.registered.insert(key);
        Ok(())
    }

    /// Every registered partition: one read of the registry partition.
    pub(crate) async fn registered_partitions(&self) -> Result<Vec<Partition>, StoreError> {
        let f = format!("PartitionKey eq {}", literal(REGISTRY));
        let rows = self.client.query(self.queue_table(), &f, None).await?;
        let mut v = rows
            .iter()
            .filter_map(|r| text(r, "Partition"))
            .map(partition_from_key)
            .collect::<Result<Vec<_>, _>>()?;
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Whether `p` holds a live job or a queue row (one query, at most one row).
    async fn holds_live_rows(&self, p: &Partition) -> Result<bool, StoreError> {
        let pk = self.queue_pk(p);
        self.flush_deferred(&pk).await;
        let f = format!(
            "PartitionKey eq {} and (({}) or ({}))",
            literal(&pk),
            range(self.live_prefix()),
            range("Q")
        );
        let rows = self
            .client
            .query_limit(self.queue_table(), &f, Some(1), 1)
            .await?;
        Ok(!rows.is_empty())
    }

    /// See [`lucius_core::Store::retire_partition`] and the module docs.
    pub(crate) async fn retire(&self, p: &Partition) -> Result<bool, StoreError> {
        if !p.is_over(Timestamp(system_ms().saturating_sub(RETIRE_AFTER))) {
            return Ok(false);
        }
        if self.holds_live_rows(p).await? {
            return Ok(false);
        }
        let key = partition_key(p);
        let table = self.queue_table().to_owned();
        let Some(row) = self.client.get(&table, REGISTRY, &key).await? else {
            return Ok(false);
        };
        let etag = text(&row, "odata.etag").unwrap_or_default().to_owned();
        // A row changed since (registered again) is left alone; the check below decides.
        self.client.delete_if(&table, REGISTRY, &key, &etag).await?;
        self.queue.lock().registered.remove(&key);
        if self.holds_live_rows(p).await? {
            self.client.upsert(&table, &registry_row(p)).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// `PENDING` entries as the queue rows list them (see the module docs).
    pub(crate) async fn list_pending(
        &self,
        q: &OutboxQuery,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        use futures::stream::{StreamExt, TryStreamExt};
        let parts = match &q.partition {
            Some(p) => vec![p.clone()],
            None => self.registered_partitions().await?,
        };
        let pages: Vec<Vec<(String, Row)>> = futures::stream::iter(parts)
            .map(|p| self.pending_page(p, q))
            .buffer_unordered(PARTITIONS_AT_ONCE)
            .try_collect()
            .await?;
        let mut v = Vec::new();
        for (pk, row) in pages.into_iter().flatten() {
            let e = copied_entry(&row)?;
            v.push((pk, row, e));
        }
        v.sort_by(|a, b| (a.2.next_attempt_at, &a.2.id).cmp(&(b.2.next_attempt_at, &b.2.id)));
        v.truncate(q.limit);
        let mut g = self.queue.lock();
        if g.listed.len() > MAX_REMEMBERED {
            g.listed.clear();
        }
        let mut out = Vec::with_capacity(v.len());
        for (pk, row, e) in v {
            let rows = g.listed.entry(e.job_id.clone()).or_default();
            if !rows
                .iter()
                .any(|l| l.id == e.id && l.due == e.next_attempt_at)
            {
                let mut stamp = Row::new();
                if let Some(t) = row.get("Timestamp") {
                    stamp.insert("Timestamp".into(), t.clone());
                }
                rows.push(Listed {
                    pk,
                    due: e.next_attempt_at,
                    id: e.id.clone(),
                    stamp,
                });
            }
            out.push(e);
        }
        Ok(out)
    }

    /// The first queue rows of one partition the query selects, in due order.
    async fn pending_page(
        &self,
        p: Partition,
        q: &OutboxQuery,
    ) -> Result<Vec<(String, Row)>, StoreError> {
        let pk = self.queue_pk(&p);
        self.flush_deferred(&pk).await;
        let from = match &q.after {
            Some((at, id)) => format!("RowKey gt {}", literal(&queue_key(*at, id))),
            None => format!("RowKey ge {}", literal("Q_")),
        };
        let to = match q.due_by {
            // Every row due at or before `t` sorts before the next millisecond's rows.
            Some(t) => format!(
                "RowKey lt {}",
                literal(&format!(
                    "Q_{}_",
                    time_key(Timestamp(t.0.saturating_add(1)))
                ))
            ),
            None => format!("RowKey lt {}", literal("Q`")),
        };
        let f = format!("PartitionKey eq {} and {from} and {to}", literal(&pk));
        let top = u32::try_from(q.limit.min(1000)).unwrap_or(1000);
        let rows = self
            .client
            .query_limit(self.queue_table(), &f, Some(top), q.limit)
            .await?;
        Ok(rows.into_iter().map(|r| (pk.clone(), r)).collect())
    }

    /// `DEAD` entries as the dead rows list them: one key-range query per partition.
    pub(crate) async fn list_dead(&self, q: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        let parts = match &q.partition {
            Some(p) => vec![p.clone()],
            None => self.registered_partitions().await?,
        };
        let mut v = Vec::new();
        for p in parts {
            let pk = self.queue_pk(&p);
            self.flush_deferred(&pk).await;
            let f = format!("PartitionKey eq {} and {}", literal(&pk), range("D"));
            for row in self.client.query(self.queue_table(), &f, None).await? {
                let e = copied_entry(&row)?;
                let due = q.due_by.is_none_or(|t| e.next_attempt_at <= t);
                let past = q
                    .after
                    .as_ref()
                    .is_none_or(|(at, id)| (e.next_attempt_at, &e.id) > (*at, id));
                if due && past {
                    v.push(e);
                }
            }
        }
        sort_entries(&mut v);
        v.truncate(q.limit);
        Ok(v)
    }

    /// After a load of job `id` (`rec`, `None` if it does not exist): remembers its
    /// entries' due times, and deletes (later) the queue rows listings handed out for it
    /// that the load shows stale.
    pub(crate) fn repair_listed(&self, id: &JobId, rec: Option<&JobRecord>) {
        let listed = {
            let mut g = self.queue.lock();
            g.listed.remove(id).unwrap_or_default()
        };
        if let Some(r) = rec {
            self.queue.saw(&r.outbox);
            self.queue.saw_job(&r.job);
        }
        let now = std::time::SystemTime::now();
        for l in listed {
            let entry = rec.and_then(|r| r.outbox.iter().find(|e| e.id == l.id));
            let stale = match entry {
                Some(e) => {
                    e.status != OutboxStatus::Pending
                        || e.next_attempt_at != l.due
                        || self.queue_pk(&e.partition) != l.pk
                }
                // Its commit may still be between the queue row and the entry.
                None => index_row_expired(&l.stamp, now),
            };
            if stale {
                // A dead entry's dead row, which its commit defers with this delete, may
                // have been lost with the process that deferred them.
                if let Some(e) = entry.filter(|e| e.status == OutboxStatus::Dead) {
                    if let Ok(row) = dead_row(&l.pk, e) {
                        self.queue.defer(&l.pk, dead_key(&e.id), Some(row));
                    }
                }
                self.queue.defer(&l.pk, queue_key(l.due, &l.id), None);
            }
        }
    }

    /// See [`lucius_core::Store::index_pending`]: writes the queue row of a `PENDING`
    /// entry again (an upsert: a row already there is rewritten as it was).
    pub(crate) async fn queue_index_pending(&self, e: &OutboxEntry) -> Result<(), StoreError> {
        if e.status != OutboxStatus::Pending {
            return Ok(());
        }
        let pk = self.queue_pk(&e.partition);
        self.index_batch(&pk, vec![BatchOp::Upsert(queue_row(&pk, e)?)])
            .await?;
        self.register(&e.partition, None).await
    }

    /// The index rows of `entries` a purge deletes: the queue rows of pending and dead
    /// ones (at their due time, and at the one this process last knew if it differs; a
    /// dead entry's queue row stays if the process that killed it died before its
    /// deferred writes went out) and the dead rows of dead ones. Queue rows of sent
    /// entries are gone or waiting in this process's deferred writes (the purge sends
    /// those first); any other stale one is removed by the repair at load.
    pub(crate) fn index_keys_of(&self, entries: &[OutboxEntry]) -> Vec<String> {
        let g = self.queue.lock();
        let mut v = Vec::new();
        for e in entries {
            match e.status {
                OutboxStatus::Pending => v.push(queue_key(e.next_attempt_at, &e.id)),
                OutboxStatus::Dead => {
                    v.push(queue_key(e.next_attempt_at, &e.id));
                    v.push(dead_key(&e.id));
                }
                OutboxStatus::Sent => {}
            }
            if let Some(d) = g.dues.get(&e.id).filter(|d| **d != e.next_attempt_at) {
                v.push(queue_key(*d, &e.id));
            }
        }
        v
    }

    /// Deletes index rows of partition `pk` one by one (each may be gone already), after
    /// the partition's waiting deletes.
    pub(crate) async fn delete_index_keys(
        &self,
        pk: &str,
        keys: Vec<String>,
    ) -> Result<(), StoreError> {
        self.flush_deferred(pk).await;
        for k in keys {
            self.client.delete(self.queue_table(), pk, &k).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_sort_in_due_then_id_order() {
        let id = |k: &str| {
            lucius_core::testkit::new_job("acme", k, 0, Timestamp(0))
                .outbox
                .id
        };
        let (a, b) = {
            let (x, y) = (id("a"), id("b"));
            if x < y {
                (x, y)
            } else {
                (y, x)
            }
        };
        let mut keys = [
            queue_key(Timestamp(1_000), &b),
            queue_key(Timestamp(999), &b),
            queue_key(Timestamp(1_000), &a),
            queue_key(Timestamp(10_000), &a),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                queue_key(Timestamp(999), &b),
                queue_key(Timestamp(1_000), &a),
                queue_key(Timestamp(1_000), &b),
                queue_key(Timestamp(10_000), &a),
            ]
        );
        // The bound a listing due by 1 000 ms uses keeps every row due then, and no later.
        let bound = format!("Q_{}_", time_key(Timestamp(1_001)));
        assert!(keys[..3].iter().all(|k| k < &bound));
        assert!(keys[3] > bound);
    }
}
