//! [`MemoryStore`]: the in-process [`Store`], atomic per call, with fault injection so
//! tests and the simulation can play the crash points of a non-atomic backend.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::ids::{JobId, OutboxId, Partition};
use crate::job::Job;
use crate::lease::Lease;
use crate::outbox::{OutboxEntry, OutboxStatus};
use crate::ports::{
    CreateOutcome, EndedJob, LeaseStore, OutboxQuery, Store, StoreError, StoreErrorKind,
};
use crate::record::{Changes, IdempotencyRecord, JobRecord, NewJob};
use crate::revision::Revision;
use crate::step::Step;
use crate::time::Timestamp;

/// A fault the next writing call will suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail with this kind before writing anything.
    Fail(StoreErrorKind),
    /// Apply only the first `n` writes, in the documented order, then fail as
    /// [`StoreErrorKind::Transient`] — a crash between two writes of a non-atomic backend.
    Tear(usize),
}

/// The default, in-process store. Loses everything when dropped.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    next_rev: u64,
    // Keyed by the id's 128 bits: hashing and comparing a key never leaves the table
    // (a string key is a pointer to chase into cold memory on every probe). Boxed: a
    // rehash moves pointers, not slots, while every caller waits on the lock.
    jobs: HashMap<u128, Box<Slot>, IdHash>,
    partitions: BTreeMap<Partition, PartitionIndex>,
    /// Terminal jobs by end time (`updated_at` of the terminal row), for the purge.
    ended: BTreeSet<(Timestamp, u128)>,
    faults: VecDeque<Fault>,
    leases: BTreeMap<Partition, Lease>,
    members: BTreeMap<String, Timestamp>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The claim on the tenant + key whose derived job id is this slot's key (for a job
    /// the engine made, its own claim): no separate claims table to hash, grow and keep.
    claim: Claim,
    job: Option<Job>,
    /// Whether the job's index row was written.
    indexed: bool,
    // Small sorted vectors: a job has a handful of steps and entries, and a B-tree node per
    // job costs kilobytes (measured in docs/benchmarks.md).
    steps: Vec<Step>,
    outbox: Vec<OutboxEntry>,
}

/// A slot's idempotency claim. Intake's claim repeats its job's tenant, key, request hash,
/// id and creation time, so a slot holding both keeps a mark instead of a copy (88 bytes
/// a job, measured in docs/benchmarks.md).
#[derive(Debug, Default)]
enum Claim {
    #[default]
    None,
    /// The claim made of the slot's job row ([`own_claim`]).
    Own,
    /// Any other claim (a crash left it without its job, or a caller's job id is not
    /// derived from its key).
    Other(Box<IdempotencyRecord>),
}

/// The claim a job row implies.
fn own_claim(j: &Job) -> IdempotencyRecord {
    IdempotencyRecord {
        tenant_id: j.tenant_id.clone(),
        key: j.idempotency_key.clone(),
        request_hash: j.request_hash,
        job_id: j.id.clone(),
        created_at: j.created_at,
    }
}

/// Whether `c` is the claim `j` implies (without copying either).
fn is_own(j: &Job, c: &IdempotencyRecord) -> bool {
    j.tenant_id == c.tenant_id
        && j.idempotency_key == c.key
        && j.request_hash == c.request_hash
        && j.id == c.job_id
        && j.created_at == c.created_at
}

impl Slot {
    fn claim(&self) -> Option<IdempotencyRecord> {
        match &self.claim {
            Claim::None => None,
            Claim::Own => self.job.as_ref().map(own_claim),
            Claim::Other(c) => Some((**c).clone()),
        }
    }

    fn has_claim(&self) -> bool {
        !matches!(self.claim, Claim::None)
    }

    /// Stores a claim: as a mark if the slot's job implies it.
    fn set_claim(&mut self, c: IdempotencyRecord) {
        self.claim = match &self.job {
            Some(j) if is_own(j, &c) => Claim::Own,
            _ => Claim::Other(Box::new(c)),
        };
    }

    /// Replaces the job row, keeping the claim as it was if the old row implied it and
    /// the new one would not.
    fn put_job(&mut self, job: Job) {
        if let (Claim::Own, Some(old)) = (&self.claim, &self.job) {
            if !is_own(&job, &own_claim(old)) {
                self.claim = Claim::Other(Box::new(own_claim(old)));
            }
        }
        self.job = Some(job);
    }

    fn step(&self, index: u32) -> Option<&Step> {
        self.steps.iter().find(|s| s.index == index)
    }

    fn entry(&self, id: &OutboxId) -> Option<&OutboxEntry> {
        self.outbox.iter().find(|e| &e.id == id)
    }

    fn put_step(&mut self, step: Step, expected: usize) {
        if self.steps.capacity() == 0 {
            // A job's steps arrive together: allocate for all of them, once.
            self.steps.reserve_exact(expected.max(1));
        }
        match self.steps.binary_search_by_key(&step.index, |s| s.index) {
            Ok(i) => self.steps[i] = step,
            Err(i) => self.steps.insert(i, step),
        }
    }

    fn put_entry(&mut self, entry: OutboxEntry) -> Option<OutboxEntry> {
        if self.outbox.capacity() == 0 {
            // Most jobs only ever have one entry per step: grow one at a time at first.
            self.outbox.reserve_exact(1);
        }
        match self.outbox.binary_search_by(|e| e.id.cmp(&entry.id)) {
            Ok(i) => Some(std::mem::replace(&mut self.outbox[i], entry)),
            Err(i) => {
                self.outbox.insert(i, entry);
                None
            }
        }
    }
}

#[derive(Debug, Default)]
struct PartitionIndex {
    /// Live jobs in creation order: a new job lands at the right edge of the tree, whose
    /// path stays in cache (by id, every insert was a walk through cold nodes).
    active: BTreeSet<(Timestamp, u128)>,
    /// Pending entries in dispatch order, so a dispatcher reads only what it takes.
    pending: BTreeSet<(Timestamp, OutboxId)>,
    dead: BTreeSet<OutboxId>,
    /// Left out of `partitions()` (see [`Store::retire_partition`]).
    retired: bool,
}

/// One row to write, owned: `create_job` moves its rows in, `commit` copies them (it
/// returns them to the caller too).
enum Write {
    /// A claim, and the key of its tenant + idempotency key ([`claim_key`]).
    Claim(IdempotencyRecord, u128),
    Job(Job),
    /// A step, and how many steps its job has (to size the slot once).
    Step(Step, usize),
    Index(JobId, Partition),
    Outbox(OutboxEntry),
}

impl Write {
    fn job_id(&self) -> &JobId {
        match self {
            Write::Claim(c, _) => &c.job_id,
            Write::Job(j) => &j.id,
            Write::Step(s, _) => &s.job_id,
            Write::Index(id, _) => id,
            Write::Outbox(e) => &e.job_id,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Queues a fault for a coming `create_job` or `commit` (for tests and simulations).
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Number of jobs held.
    pub fn job_count(&self) -> usize {
        self.lock()
            .jobs
            .values()
            .filter(|s| s.job.is_some())
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every write validates before it mutates, so a panic cannot leave half a write.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hashes the store's job keys. They are 128 bits of SHA-256 already, so SipHash adds
/// nothing but cost; a per-process random seed still keeps clients (who choose the
/// idempotency keys the ids derive from) from aiming at buckets.
#[derive(Debug, Clone)]
struct IdHash(u64);

impl Default for IdHash {
    fn default() -> IdHash {
        use std::hash::BuildHasher;
        IdHash(std::collections::hash_map::RandomState::new().hash_one(0u8) | 1)
    }
}

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

#[derive(Debug)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed (`write_u128`); anything else still hashes soundly.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, n: u128) {
        let folded = (n as u64) ^ ((n >> 64) as u64);
        self.0 = (folded ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// Where the claim on `tenant` + `key` lives: the slot of the job id derived from them.
fn claim_key(c: &IdempotencyRecord) -> u128 {
    JobId::derive_u128(&c.tenant_id, &c.key)
}

/// A partition's index, created on first use; a write to a retired partition lists it
/// again.
fn index_of<'a>(
    partitions: &'a mut BTreeMap<Partition, PartitionIndex>,
    p: &Partition,
) -> &'a mut PartitionIndex {
    let idx = partitions.entry(p.clone()).or_default();
    idx.retired = false;
    idx
}

/// The store's key of a job id. Every id the engine makes is a UUID; any other string
/// names no stored job (and is refused as a write).
fn key(id: &JobId) -> Option<u128> {
    id.to_u128()
}

fn bad_id(id: &JobId) -> StoreError {
    StoreError::permanent(format!("job id {id:?} is not a lower-case hyphenated UUID"))
}

impl Inner {
    fn slot(&self, id: &JobId) -> Option<&Slot> {
        self.jobs.get(&key(id)?).map(|b| &**b)
    }

    fn revision(&mut self) -> Revision {
        self.next_rev += 1;
        Revision::counter(self.next_rev)
    }

    /// Checks one write against `slot`, the stored slot of the job being written (a claim
    /// looks at the slot of its own key).
    fn check(&self, k: u128, slot: Option<&Slot>, w: &Write) -> Result<(), StoreError> {
        // `what` is only rendered on failure: the happy path allocates nothing.
        fn cas(
            what: impl FnOnce() -> String,
            stored: Option<&Revision>,
            given: &Revision,
        ) -> Result<(), StoreError> {
            match (stored, given.is_new()) {
                (None, true) => Ok(()),
                (Some(_), true) => Err(StoreError::conflict(format!("{} already exists", what()))),
                (None, false) => Err(StoreError::not_found(format!("{} does not exist", what()))),
                (Some(s), false) if s == given => Ok(()),
                (Some(s), false) => Err(StoreError::conflict(format!(
                    "{} changed: expected revision {given}, found {s}",
                    what()
                ))),
            }
        }
        match w {
            Write::Claim(_, ck) => {
                let claimed = match *ck == k {
                    true => slot.is_some_and(Slot::has_claim),
                    false => self.jobs.get(ck).is_some_and(|s| s.has_claim()),
                };
                match claimed {
                    true => Err(StoreError::conflict("idempotency key already claimed")),
                    false => Ok(()),
                }
            }
            Write::Job(j) => {
                let stored = slot.and_then(|s| s.job.as_ref());
                cas(
                    || format!("job {}", j.id),
                    stored.map(|x| &x.revision),
                    &j.revision,
                )
            }
            Write::Step(s, _) => {
                let stored = slot.and_then(|x| x.step(s.index));
                cas(
                    || format!("step {} of job {}", s.index, s.job_id),
                    stored.map(|x| &x.revision),
                    &s.revision,
                )
            }
            Write::Index(..) => Ok(()),
            Write::Outbox(e) => {
                let stored = slot.and_then(|x| x.entry(&e.id));
                cas(
                    || format!("outbox entry {}", e.id),
                    stored.map(|x| &x.revision),
                    &e.revision,
                )
            }
        }
    }

    /// Applies checked writes in order and returns their revisions. The job's slot is
    /// looked up once for all of them (a lookup per row was a cache miss per row in a
    /// table of half a million jobs). A claim on another key than the job's own (a caller
    /// whose job id is not derived from its key) is written to that key's slot first.
    fn apply(&mut self, k: u128, writes: Vec<Write>) -> Vec<Revision> {
        let mut revs = Vec::with_capacity(writes.len());
        let mut rest = writes.into_iter().peekable();
        while let Some(Write::Claim(_, ck)) = rest.peek() {
            if *ck == k {
                break;
            }
            let Some(Write::Claim(c, ck)) = rest.next() else {
                break;
            };
            let rev = self.revision();
            self.jobs.entry(ck).or_default().set_claim(c);
            revs.push(rev);
        }
        if rest.peek().is_none() {
            return revs;
        }
        let Inner {
            jobs,
            partitions,
            ended,
            next_rev,
            ..
        } = self;
        let slot = &mut **jobs.entry(k).or_default();
        // A claim is stored after the call's job row, so that it can be stored as a mark.
        let mut claim = None;
        for w in rest {
            *next_rev += 1;
            let rev = Revision::counter(*next_rev);
            match w {
                // `write_all` lets through only claims on this job's own key here.
                Write::Claim(c, _) => claim = Some(c),
                Write::Job(j) => {
                    // The index entry is keyed by the stored creation time, which a write
                    // could (wrongly) change: drop the old entry by the old key.
                    if let Some(old) = slot.job.as_ref().filter(|s| s.created_at != j.created_at) {
                        if let Some(idx) = partitions.get_mut(&old.partition) {
                            idx.active.remove(&(old.created_at, k));
                        }
                    }
                    if let Some(old) = slot.job.as_ref().filter(|o| o.status.is_terminal()) {
                        ended.remove(&(old.updated_at, k));
                    }
                    let idx = index_of(partitions, &j.partition);
                    if j.status.is_terminal() {
                        idx.active.remove(&(j.created_at, k));
                        ended.insert((j.updated_at, k));
                    } else {
                        idx.active.insert((j.created_at, k));
                    }
                    slot.put_job(Job {
                        revision: rev.clone(),
                        ..j
                    });
                }
                Write::Step(s, expected) => slot.put_step(
                    Step {
                        revision: rev.clone(),
                        ..s
                    },
                    expected,
                ),
                Write::Index(_, p) => {
                    index_of(partitions, &p);
                    slot.indexed = true;
                }
                Write::Outbox(e) => {
                    let idx = index_of(partitions, &e.partition);
                    let (id, due, status) = (e.id.clone(), e.next_attempt_at, e.status);
                    let before = slot.put_entry(OutboxEntry {
                        revision: rev.clone(),
                        ..e
                    });
                    if let Some(b) = before {
                        idx.pending.remove(&(b.next_attempt_at, b.id));
                    }
                    idx.dead.remove(&id);
                    match status {
                        OutboxStatus::Pending => {
                            idx.pending.insert((due, id));
                        }
                        OutboxStatus::Dead => {
                            idx.dead.insert(id);
                        }
                        OutboxStatus::Sent => {}
                    }
                }
            }
            revs.push(rev);
        }
        if let Some(c) = claim {
            slot.set_claim(c);
        }
        revs
    }

    /// Applies writes all-or-nothing, or — under a pending `Tear` fault — a prefix of them.
    /// Every write of one call belongs to one job (a `NewJob`, or one job's `Changes`).
    fn write_all(&mut self, mut writes: Vec<Write>) -> Result<Vec<Revision>, StoreError> {
        let Some(first) = writes.first() else {
            return Ok(Vec::new());
        };
        let id = first.job_id();
        let k = key(id).ok_or_else(|| bad_id(id))?;
        if let Some(other) = writes.iter().map(Write::job_id).find(|j| *j != id) {
            return Err(StoreError::permanent(format!(
                "one commit changes one job: {id} and {other}"
            )));
        }
        let foreign_claim = |w: &Write| matches!(w, Write::Claim(_, ck) if *ck != k);
        if writes
            .iter()
            .skip_while(|w| foreign_claim(w))
            .any(foreign_claim)
        {
            return Err(StoreError::permanent(
                "a claim on another key than the job's own comes before the job's rows",
            ));
        }
        let slot = self.jobs.get(&k).map(|b| &**b);
        match self.faults.pop_front() {
            Some(Fault::Fail(kind)) => {
                return Err(StoreError {
                    kind,
                    message: "injected fault".into(),
                })
            }
            Some(Fault::Tear(n)) => {
                let total = writes.len();
                let checked = writes
                    .iter()
                    .take(n)
                    .take_while(|w| self.check(k, slot, w).is_ok())
                    .count();
                writes.truncate(checked);
                self.apply(k, writes);
                return Err(StoreError::transient(format!(
                    "injected crash after {n} of {total} writes"
                )));
            }
            None => {}
        }
        for w in &writes {
            self.check(k, slot, w)?;
        }
        Ok(self.apply(k, writes))
    }

    /// Removes a terminal job with every row and index entry of it (see
    /// [`Store::purge_job`]).
    fn purge(&mut self, id: &JobId, revision: &Revision) -> Result<(), StoreError> {
        let k = key(id).ok_or_else(|| bad_id(id))?;
        let gone = || StoreError::not_found(format!("job {id} does not exist"));
        let job = self
            .jobs
            .get(&k)
            .and_then(|s| s.job.as_ref())
            .ok_or_else(gone)?;
        if &job.revision != revision {
            return Err(StoreError::conflict(format!(
                "job {id} changed: expected revision {revision}, found {}",
                job.revision
            )));
        }
        if !job.status.is_terminal() {
            return Err(StoreError::conflict(format!(
                "job {id} is {}, not finished",
                job.status.as_str()
            )));
        }
        let Some(mut slot) = self.jobs.remove(&k) else {
            return Err(gone());
        };
        let job = slot.job.take().ok_or_else(gone)?;
        self.ended.remove(&(job.updated_at, k));
        if let Some(idx) = self.partitions.get_mut(&job.partition) {
            idx.active.remove(&(job.created_at, k));
        }
        for e in &slot.outbox {
            if let Some(idx) = self.partitions.get_mut(&e.partition) {
                idx.pending.remove(&(e.next_attempt_at, e.id.clone()));
                idx.dead.remove(&e.id);
            }
        }
        // Another job's claim on a key deriving to this slot (a caller whose ids are not
        // derived from their keys) stays, alone in the slot. The claim made of the job
        // row, or this job's own, goes with it.
        if matches!(&slot.claim, Claim::Other(c) if c.job_id != *id) {
            let claim = std::mem::take(&mut slot.claim);
            self.jobs.insert(
                k,
                Box::new(Slot {
                    claim,
                    ..Slot::default()
                }),
            );
        }
        // This job's claim, when it lives in the slot its key derives to.
        let own_key = JobId::derive_u128(&job.tenant_id, &job.idempotency_key);
        if own_key != k {
            if let Some(s) = self.jobs.get_mut(&own_key) {
                if s.claim().is_some_and(|c| c.job_id == *id) {
                    s.claim = Claim::None;
                    if s.job.is_none() {
                        self.jobs.remove(&own_key);
                    }
                }
            }
        }
        Ok(())
    }

    fn record(&self, id: &JobId) -> Option<JobRecord> {
        let slot = self.slot(id)?;
        Some(JobRecord {
            job: slot.job.clone()?,
            steps: slot.steps.clone(),
            outbox: slot.outbox.clone(),
        })
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        let mut g = self.lock();
        let ck = claim_key(&new.claim);
        let existing = g.jobs.get(&ck).and_then(|s| s.claim());
        if let Some(existing) = existing {
            if existing.tenant_id != new.claim.tenant_id || existing.key != new.claim.key {
                // Two tenant + key pairs with one derived id: a SHA-256 collision.
                return Err(StoreError::permanent(format!(
                    "job id {} is derived from two idempotency keys",
                    existing.job_id
                )));
            }
            let stored_terminal = g
                .slot(&new.job.id)
                .and_then(|s| s.job.as_ref())
                .is_some_and(|j| j.status.is_terminal());
            if existing.request_hash == new.claim.request_hash
                && existing.job_id == new.job.id
                && !stored_terminal
            {
                // Complete whatever a crashed earlier attempt left unwritten: every row of
                // the new job that is absent (rows are never deleted, so absent means
                // unwritten), as that attempt wrote them, not as of this replay.
                let slot = g.slot(&new.job.id);
                let stored_job = slot.and_then(|s| s.job.as_ref());
                let first_step = slot.and_then(|s| s.step(new.outbox.step_index));
                let new = new.as_first_written(&existing, stored_job, first_step);
                let mut writes = Vec::new();
                let step_count = new.steps.len();
                let indexed = slot.is_some_and(|s| s.indexed);
                let has_entry = slot.is_some_and(|x| x.entry(&new.outbox.id).is_some());
                if stored_job.is_none() {
                    writes.push(Write::Job(new.job));
                }
                for s in new.steps {
                    if slot.is_none_or(|x| x.step(s.index).is_none()) {
                        writes.push(Write::Step(s, step_count));
                    }
                }
                if !indexed {
                    writes.push(Write::Index(new.index.job_id, new.index.partition));
                }
                if !has_entry {
                    writes.push(Write::Outbox(new.outbox));
                }
                g.write_all(writes)?;
            }
            return Ok(CreateOutcome::Existing(existing));
        }
        let id = new.job.id.clone();
        let step_count = new.steps.len();
        let mut writes = Vec::with_capacity(step_count + 4);
        writes.push(Write::Claim(new.claim, ck));
        writes.push(Write::Job(new.job));
        writes.extend(new.steps.into_iter().map(|s| Write::Step(s, step_count)));
        writes.push(Write::Index(new.index.job_id, new.index.partition));
        writes.push(Write::Outbox(new.outbox));
        g.write_all(writes)?;
        // Read back under the same lock: exactly the rows as stored, with their revisions.
        let rec = g
            .record(&id)
            .ok_or_else(|| StoreError::permanent(format!("job {id} vanished as it was written")))?;
        Ok(CreateOutcome::Created(Box::new(rec)))
    }

    async fn load_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.lock().record(id))
    }

    async fn commit(&self, mut changes: Changes) -> Result<Changes, StoreError> {
        let mut g = self.lock();
        let revs = {
            let mut writes = Vec::with_capacity(
                changes.steps.len() + changes.outbox.len() + usize::from(changes.job.is_some()),
            );
            writes.extend(changes.steps.iter().map(|s| Write::Step(s.clone(), 0)));
            writes.extend(changes.outbox.iter().map(|e| Write::Outbox(e.clone())));
            writes.extend(changes.job.iter().map(|j| Write::Job(j.clone())));
            g.write_all(writes)?
        };
        changes.assign_revisions(revs);
        Ok(changes)
    }

    async fn ended_jobs(
        &self,
        ended_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<EndedJob>, StoreError> {
        let g = self.lock();
        Ok(g.ended
            .range(..=(ended_by, u128::MAX))
            .take(limit)
            .filter_map(|&(ended_at, k)| {
                let job = g.jobs.get(&k)?.job.as_ref()?;
                Some(EndedJob {
                    job_id: job.id.clone(),
                    ended_at,
                    revision: job.revision.clone(),
                })
            })
            .collect())
    }

    async fn purge_job(&self, id: &JobId, revision: &Revision) -> Result<(), StoreError> {
        self.lock().purge(id, revision)
    }

    async fn outbox(&self, q: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        let g = self.lock();
        let mut out: Vec<OutboxEntry> = match (&q.partition, q.status) {
            (Some(p), Some(OutboxStatus::Pending)) => {
                // Already in (nextAttemptAt, id) order: stop at the first entry not due.
                let due_by = q.due_by.unwrap_or(Timestamp(i64::MAX));
                g.partitions
                    .get(p)
                    .into_iter()
                    .flat_map(|i| match &q.after {
                        Some((at, id)) => i.pending.range((
                            std::ops::Bound::Excluded((*at, id.clone())),
                            std::ops::Bound::Unbounded,
                        )),
                        None => i.pending.range(..),
                    })
                    .take_while(|(at, _)| *at <= due_by)
                    .take(q.limit)
                    .filter_map(|(_, id)| g.slot(&id.job_id())?.entry(id).cloned())
                    .collect()
            }
            (Some(p), Some(OutboxStatus::Dead)) => g
                .partitions
                .get(p)
                .into_iter()
                .flat_map(|i| i.dead.iter())
                .filter_map(|id| g.slot(&id.job_id())?.entry(id).cloned())
                .collect(),
            // Every partition's pending index, each read as far as the limit: what a
            // poller or the retry loop asks for costs the live work, not the history.
            (None, Some(OutboxStatus::Pending)) => {
                let due_by = q.due_by.unwrap_or(Timestamp(i64::MAX));
                g.partitions
                    .values()
                    .flat_map(|i| {
                        match &q.after {
                            Some((at, id)) => i.pending.range((
                                std::ops::Bound::Excluded((*at, id.clone())),
                                std::ops::Bound::Unbounded,
                            )),
                            None => i.pending.range(..),
                        }
                        .take_while(move |(at, _)| *at <= due_by)
                        .take(q.limit)
                    })
                    .filter_map(|(_, id)| g.slot(&id.job_id())?.entry(id).cloned())
                    .collect()
            }
            (None, Some(OutboxStatus::Dead)) => g
                .partitions
                .values()
                .flat_map(|i| i.dead.iter())
                .filter_map(|id| g.slot(&id.job_id())?.entry(id).cloned())
                .collect(),
            _ => g
                .jobs
                .values()
                .flat_map(|s| s.outbox.iter())
                .filter(|e| q.partition.as_ref().is_none_or(|p| &e.partition == p))
                .filter(|e| q.status.is_none_or(|s| e.status == s))
                .cloned()
                .collect(),
        };
        if let Some(t) = q.due_by {
            out.retain(|e| e.next_attempt_at <= t);
        }
        if let Some((at, id)) = &q.after {
            out.retain(|e| (e.next_attempt_at, &e.id) > (*at, id));
        }
        out.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
        out.truncate(q.limit);
        Ok(out)
    }

    async fn active_jobs(
        &self,
        partition: &Partition,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let g = self.lock();
        let Some(idx) = g.partitions.get(partition) else {
            return Ok(Vec::new());
        };
        // Creation order; a page continues after the previous page's last job.
        let from = match &after {
            None => Unbounded,
            Some(a) => {
                let Some(created) = g.slot(a).and_then(|s| s.job.as_ref()).map(|j| j.created_at)
                else {
                    // Not a job of this store, so not a previous page's last id.
                    return Ok(Vec::new());
                };
                Excluded((created, key(a).unwrap_or_default()))
            }
        };
        let ids = idx.active.range((from, Unbounded));
        Ok(ids.take(limit).map(|&(_, n)| JobId::from_u128(n)).collect())
    }

    async fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        Ok(self
            .lock()
            .partitions
            .iter()
            .filter(|(_, i)| !i.retired)
            .map(|(p, _)| p.clone())
            .collect())
    }

    async fn retire_partition(&self, partition: &Partition) -> Result<bool, StoreError> {
        let mut g = self.lock();
        Ok(match g.partitions.get_mut(partition) {
            Some(i) if i.active.is_empty() && i.pending.is_empty() => {
                i.retired = true;
                true
            }
            _ => false,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn lease(&self, partition: &Partition) -> Result<Option<Lease>, StoreError> {
        Ok(self.lock().leases.get(partition).cloned())
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        Ok(self.lock().leases.values().cloned().collect())
    }

    async fn put_lease(&self, lease: Lease) -> Result<Lease, StoreError> {
        let mut g = self.lock();
        let stored = g.leases.get(&lease.partition).map(|l| l.revision.clone());
        match (stored, lease.revision.is_new()) {
            (None, true) => {}
            (Some(s), false) if s == lease.revision => {}
            (Some(_), true) => {
                return Err(StoreError::conflict(format!(
                    "lease {} already exists",
                    lease.partition
                )))
            }
            (None, false) => {
                return Err(StoreError::not_found(format!(
                    "lease {} does not exist",
                    lease.partition
                )))
            }
            (Some(_), false) => {
                return Err(StoreError::conflict(format!(
                    "lease {} changed",
                    lease.partition
                )))
            }
        }
        let rev = g.revision();
        let stored = Lease {
            revision: rev,
            ..lease
        };
        g.leases.insert(stored.partition.clone(), stored.clone());
        Ok(stored)
    }

    async fn announce(&self, member: &str, until: Timestamp) -> Result<(), StoreError> {
        self.lock().members.insert(member.to_owned(), until);
        Ok(())
    }

    async fn members(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        Ok(self
            .lock()
            .members
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testkit::conformance::{run_all, Capabilities, Subject};

    /// A fresh store whose interrupted intake is a write torn before the first directive
    /// (claim, job, steps and index written: every row but the last).
    fn subject() -> Subject {
        let store = MemoryStore::new();
        let crashing = store.clone();
        Subject::new(Arc::new(store), move |new: NewJob| {
            let store = crashing.clone();
            async move {
                store.inject(Fault::Tear(new.steps.len() + 3));
                let _ = store.create_job(new).await;
            }
        })
    }

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        run_all(
            || async { subject() },
            Capabilities {
                atomic_commit: true,
                retention: true,
                retires_partitions: true,
            },
        )
        .await;
    }

    #[tokio::test]
    async fn memory_store_passes_the_lease_checks() {
        crate::testkit::conformance::run_lease_checks(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test]
    async fn torn_commits_apply_a_prefix_in_contract_order() {
        let store = MemoryStore::new();
        let new = crate::testkit::new_job("t", "k", 0, Timestamp(0));
        store.create_job(new.clone()).await.unwrap();
        let rec = store.load_job(&new.job.id).await.unwrap().unwrap();
        let now = Timestamp(1);
        let changes = Changes {
            steps: vec![rec.steps[0].on_published(1, now).unwrap()],
            outbox: vec![rec.outbox[0].on_sent(now).unwrap()],
            job: Some(rec.job.on_start(now).unwrap()),
        };
        store.inject(Fault::Tear(1));
        let err = store.commit(changes).await.unwrap_err();
        assert_eq!(err.kind, StoreErrorKind::Transient);
        let after = store.load_job(&new.job.id).await.unwrap().unwrap();
        assert_eq!(after.steps[0].status, crate::step::StepStatus::Initiated);
        assert_eq!(after.outbox[0].status, OutboxStatus::Pending);
        assert_eq!(after.job.status, crate::job::JobStatus::Accepted);
    }

    /// A crash right after the claim leaves no job: the client's retry a month later
    /// writes every row as of the claim (the intake's time), in the claim's month.
    #[tokio::test]
    async fn a_replay_after_a_crash_past_the_claim_writes_the_job_as_of_the_claim() {
        let store = MemoryStore::new();
        let t0 = Timestamp(1_709_596_800_000);
        let new = crate::testkit::new_job("t", "claim-only", 0, t0);
        store.inject(Fault::Tear(1));
        store.create_job(new.clone()).await.unwrap_err();
        assert_eq!(store.load_job(&new.job.id).await.unwrap(), None);
        let later = t0.plus(crate::time::Millis::from_secs(40 * 86_400));
        let again = crate::testkit::new_job("t", "claim-only", 0, later);
        assert_ne!(again.job.partition, new.job.partition);
        match store.create_job(again).await.unwrap() {
            CreateOutcome::Existing(c) => assert_eq!(c, new.claim),
            other => panic!("the replay should find the claim, gave {other:?}"),
        }
        let mut rec = store.load_job(&new.job.id).await.unwrap().unwrap();
        rec.job.revision = Revision::NEW;
        rec.steps
            .iter_mut()
            .for_each(|s| s.revision = Revision::NEW);
        rec.outbox
            .iter_mut()
            .for_each(|e| e.revision = Revision::NEW);
        assert_eq!(
            rec.job, new.job,
            "the job as the intake would have written it"
        );
        assert_eq!(rec.steps, new.steps);
        assert_eq!(rec.outbox, vec![new.outbox.clone()]);
        let active = store
            .active_jobs(&new.job.partition, None, 10)
            .await
            .unwrap();
        assert_eq!(
            active,
            vec![new.job.id.clone()],
            "active in the claim's month"
        );
        assert_eq!(store.partitions().await.unwrap(), vec![new.job.partition]);
    }

    fn stored_claim(store: &MemoryStore, new: &NewJob) -> (Option<IdempotencyRecord>, bool) {
        let g = store.lock();
        let slot = g
            .jobs
            .get(&claim_key(&new.claim))
            .expect("the claim's slot");
        (slot.claim(), matches!(slot.claim, Claim::Own))
    }

    /// Intake's claim is kept as a mark on its job, yet reads back whole; a claim whose job
    /// never arrived, or that its job stops implying, is kept whole.
    #[tokio::test]
    async fn a_jobs_own_claim_is_a_mark_and_reads_back_whole() {
        let store = MemoryStore::new();
        let new = crate::testkit::new_job("t", "k", 0, Timestamp(0));
        store.create_job(new.clone()).await.unwrap();
        assert_eq!(stored_claim(&store, &new), (Some(new.claim.clone()), true));
        match store.create_job(new.clone()).await.unwrap() {
            CreateOutcome::Existing(c) => assert_eq!(c, new.claim),
            other => panic!("a replay finds the claim: {other:?}"),
        }

        // A crash after the claim: kept whole until the job is written.
        let torn = crate::testkit::new_job("t", "k2", 0, Timestamp(0));
        store.inject(Fault::Tear(1));
        store.create_job(torn.clone()).await.unwrap_err();
        assert_eq!(
            stored_claim(&store, &torn),
            (Some(torn.claim.clone()), false)
        );
        store.create_job(torn.clone()).await.unwrap();
        assert!(store.load_job(&torn.job.id).await.unwrap().is_some());
        assert_eq!(stored_claim(&store, &torn).0, Some(torn.claim.clone()));

        // A job row that no longer implies the claim (a creation time rewritten) leaves the
        // claim as it was.
        let rec = store.load_job(&new.job.id).await.unwrap().unwrap();
        let moved = Job {
            created_at: Timestamp(5),
            ..rec.job
        };
        store
            .commit(Changes {
                job: Some(moved),
                ..Changes::default()
            })
            .await
            .unwrap();
        assert_eq!(stored_claim(&store, &new), (Some(new.claim.clone()), false));
    }
}
