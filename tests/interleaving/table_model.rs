//! [`TableModel`]: a store with Table Storage semantics, written for the simulation.
//!
//! * A commit is applied in groups in the contract's order — steps, then outbox entries,
//!   then the job — each group revision-checked on its own (one `MemoryStore` commit), with
//!   a yield between groups so other actors interleave. A group that fails or conflicts
//!   after an earlier one applied makes the commit return `Partial`; when nothing was
//!   applied the plain error is returned.
//! * Pending and dead entries are found through a separate outbox index, as in ledger
//!   mode: rows that make an entry visible are written before the entries' group, rows
//!   that hide it after (so the index is a superset); at intake the index is written after
//!   the rows. The outbox query reads the index, verifies each candidate against its row
//!   and repairs stale index rows on the way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use lucius::memory::{Fault, MemoryStore};
use lucius::{
    Changes, CreateOutcome, NewJob, OutboxEntry, OutboxId, OutboxQuery, OutboxStatus, Partition,
    Store, StoreError, Timestamp,
};
use rand::Rng;

use crate::store::{after_groups, check_write, injected_failure};
use crate::world::{lock, now_or_never, yield_now, Shared};

/// One index row: the entry's status and due time as last written to the index.
type IndexRow = (OutboxStatus, Timestamp);

/// The Table-semantics store.
pub(crate) struct TableModel {
    sim: Shared,
    rows: MemoryStore,
    index: Arc<Mutex<BTreeMap<Partition, BTreeMap<OutboxId, IndexRow>>>>,
}

impl TableModel {
    pub(crate) fn new(sim: Shared, rows: MemoryStore) -> TableModel {
        TableModel {
            sim,
            rows,
            index: Arc::default(),
        }
    }

    fn index(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<Partition, BTreeMap<OutboxId, IndexRow>>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes entries visible (`PENDING` rows upserted).
    fn show(&self, entries: &[OutboxEntry]) {
        let mut idx = self.index();
        for e in entries.iter().filter(|e| e.status == OutboxStatus::Pending) {
            idx.entry(e.partition.clone())
                .or_default()
                .insert(e.id.clone(), (OutboxStatus::Pending, e.next_attempt_at));
        }
    }

    /// Hides entries that left `PENDING` (`SENT` rows deleted, `DEAD` rows marked).
    fn hide(&self, entries: &[OutboxEntry]) {
        let mut idx = self.index();
        for e in entries {
            let part = idx.entry(e.partition.clone()).or_default();
            match e.status {
                OutboxStatus::Sent => {
                    part.remove(&e.id);
                }
                OutboxStatus::Dead => {
                    part.insert(e.id.clone(), (OutboxStatus::Dead, e.next_attempt_at));
                }
                OutboxStatus::Pending => {}
            }
        }
    }

    fn row(&self, id: &OutboxId) -> Option<OutboxEntry> {
        let rec = now_or_never(self.rows.load_job(&id.job_id()))?.ok()??;
        rec.entry(id).cloned()
    }

    /// Intake: the rows (claim, job, steps, first directive), then — after a round trip —
    /// the index rows of the job's pending entries (a replay rewrites them). Under chaos a
    /// fresh intake is sometimes written in two groups — claim and job (and perhaps the
    /// steps) first, the rest after a round trip — so a crash or failure in between leaves
    /// a torn intake for a replay (or the sweeper) to complete.
    pub(crate) async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        let id = new.job.id.clone();
        let hash = new.claim.request_hash;
        let fresh = matches!(now_or_never(self.rows.load_job(&id)), Some(Ok(None)));
        let tear = {
            let mut w = lock(&self.sim);
            (fresh && w.chaos && w.rng.random_ratio(1, 6)).then(|| {
                2 + if w.rng.random_bool(0.5) {
                    new.steps.len()
                } else {
                    0
                }
            })
        };
        if let Some(n) = tear {
            // Claim and job (and steps) land; the fault is consumed by this very call (a
            // fresh intake always reaches the write), which then fails as a crash would.
            self.rows.inject(Fault::Tear(n));
            let first = self.rows.create_job(new.clone()).await;
            lock(&self.sim).note(format!("intake of {id} torn after {n} rows: {first:?}"));
            yield_now(&self.sim).await;
            if let Some(e) = injected_failure(&mut lock(&self.sim)) {
                return Err(e);
            }
        }
        let out = match self.rows.create_job(new).await? {
            // The rest of our own torn intake: the claim is ours, and so are the rows.
            CreateOutcome::Existing(c)
                if tear.is_some() && c.request_hash == hash && c.job_id == id =>
            {
                match self.rows.load_job(&id).await? {
                    Some(rec) => CreateOutcome::Created(Box::new(rec)),
                    None => CreateOutcome::Existing(c),
                }
            }
            other => other,
        };
        let same = match &out {
            CreateOutcome::Created(_) => true,
            CreateOutcome::Existing(c) => c.request_hash == hash && c.job_id == id,
        };
        if same {
            yield_now(&self.sim).await;
            if let Some(e) = injected_failure(&mut lock(&self.sim)) {
                return Err(e);
            }
            if let Ok(Some(rec)) = self.rows.load_job(&id).await {
                self.show(&rec.outbox);
            }
        }
        Ok(out)
    }

    /// Lists `entry` in the outbox index again (the sweeper's repair of an entry whose
    /// index row a crash lost).
    pub(crate) fn index_pending(&self, entry: &OutboxEntry) {
        self.show(std::slice::from_ref(entry));
    }

    /// A commit in groups: steps, outbox entries, job.
    pub(crate) async fn commit(&self, changes: Changes) -> Result<Changes, StoreError> {
        let Changes { steps, outbox, job } = changes;
        let mut groups = Vec::new();
        if !steps.is_empty() {
            groups.push(Changes {
                steps,
                ..Changes::default()
            });
        }
        if !outbox.is_empty() {
            groups.push(Changes {
                outbox,
                ..Changes::default()
            });
        }
        if job.is_some() {
            groups.push(Changes {
                job,
                ..Changes::default()
            });
        }
        let mut written = Changes::default();
        let mut applied = false;
        for (i, group) in groups.into_iter().enumerate() {
            if i > 0 {
                yield_now(&self.sim).await;
            }
            let is_outbox = !group.outbox.is_empty();
            if is_outbox {
                self.show(&group.outbox);
            }
            {
                let mut w = lock(&self.sim);
                if let Some(e) = injected_failure(&mut w) {
                    w.note(format!("table group {i} failed: {e}"));
                    return Err(after_groups(applied, e));
                }
                check_write(&mut w, &self.rows, &group);
            }
            match self.rows.commit(group).await {
                Ok(g) => {
                    applied = true;
                    if is_outbox {
                        // Hiding rows is a write of its own, after the batch: it may be
                        // lost (a crash), leaving a stale row readers repair.
                        let lost = {
                            let mut w = lock(&self.sim);
                            w.chaos && w.rng.random_ratio(1, 20)
                        };
                        if !lost {
                            self.hide(&g.outbox);
                        }
                    }
                    written.steps.extend(g.steps);
                    written.outbox.extend(g.outbox);
                    if g.job.is_some() {
                        written.job = g.job;
                    }
                }
                Err(e) => return Err(after_groups(applied, e)),
            }
        }
        Ok(written)
    }

    /// Outbox query: `PENDING`/`DEAD` through the index (verified against the rows, stale
    /// index rows repaired), anything else by scanning the rows.
    pub(crate) async fn outbox(&self, q: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        let Some(status @ (OutboxStatus::Pending | OutboxStatus::Dead)) = q.status else {
            return self.rows.outbox(q).await;
        };
        let mut candidates: Vec<(Timestamp, OutboxId)> = {
            let idx = self.index();
            idx.iter()
                .filter(|(p, _)| q.partition.as_ref().is_none_or(|x| x == *p))
                .flat_map(|(_, rows)| rows.iter())
                .filter(|(_, (s, _))| *s == status)
                .map(|(id, (_, at))| (*at, id.clone()))
                .filter(|(at, _)| q.due_by.is_none_or(|t| *at <= t))
                .filter(|c| q.after.as_ref().is_none_or(|a| c > a))
                .collect()
        };
        candidates.sort();
        yield_now(&self.sim).await;
        let mut out = Vec::new();
        for (at, id) in candidates {
            if out.len() >= q.limit {
                break;
            }
            let row = self.row(&id);
            let matches = row.as_ref().is_some_and(|r| {
                r.status == status
                    && q.due_by.is_none_or(|t| r.next_attempt_at <= t)
                    && q.after
                        .as_ref()
                        .is_none_or(|a| (r.next_attempt_at, r.id.clone()) > *a)
            });
            // Repair: the index row follows its entry.
            if row
                .as_ref()
                .is_none_or(|r| (r.status, r.next_attempt_at) != (status, at))
            {
                let mut idx = self.index();
                match &row {
                    Some(r) if r.status != OutboxStatus::Sent => {
                        idx.entry(r.partition.clone())
                            .or_default()
                            .insert(r.id.clone(), (r.status, r.next_attempt_at));
                    }
                    _ => {
                        for rows in idx.values_mut() {
                            rows.remove(&id);
                        }
                    }
                }
            }
            if let (true, Some(r)) = (matches, row) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
        Ok(out)
    }
}
