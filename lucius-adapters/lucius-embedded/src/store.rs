//! [`EmbeddedStore`]: the handle. Writes go to the writer thread's queue, reads to the
//! read connections; the directory lock lives as long as the last handle.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use lucius_core::{
    Changes, CreateOutcome, EndedJob, JobId, JobRecord, Lease, LeaseStore, NewJob, OutboxEntry,
    OutboxQuery, Partition, Revision, Store, StoreError, Timestamp,
};
use tokio::sync::{mpsc, oneshot};

use crate::error::{writer_gone, OpenError};
use crate::open::{self, DirLock};
use crate::reads::{self, Readers};
use crate::rows::Encoded;
use crate::schema;
use crate::writer::{self, Counters, Request};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "lucius.sqlite3";

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// A durable store in one directory on local disk. Cheap to clone: clones share the
/// writer, the readers and the directory lock, which is released when the last clone is
/// dropped (after the writer has finished what it was given).
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    queue: Option<mpsc::Sender<Request>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Readers>,
    counters: Arc<Counters>,
    #[cfg(test)]
    gate: Arc<writer::Gate>,
    // Dropped last: the lock outlives the writer's connection.
    _lock: DirLock,
}

/// How many write requests the store took, and in how many transactions (each one
/// fsync): `requests / batches` is the mean group size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Transactions committed or attempted.
    pub batches: u64,
    /// Write requests (create_job, commit, put_lease, announce).
    pub requests: u64,
}

impl EmbeddedStore {
    /// Opens the store in `dir` (created if absent): takes the directory's lock, opens
    /// `dir/lucius.sqlite3` (created if absent) and brings its schema up to date.
    ///
    /// Fails, naming the directory, if it cannot be created or written, if another
    /// process (or another open store) holds it, or if the file was written by a newer
    /// binary (its `schema_version` is above [`crate::SCHEMA_VERSION`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore, OpenError> {
        let dir = dir.as_ref().to_owned();
        let lock = open::lock_dir(&dir, LOCK_FILE)?;
        let path = open::database_path(&dir, DATABASE_FILE);
        let mut conn = open::connection(&path)?;
        schema::migrate(&mut conn, &path)?;
        let (tx, rx) = mpsc::channel(writer::QUEUE);
        let counters = Arc::new(Counters::default());
        #[cfg(test)]
        let gate = Arc::new(writer::Gate::default());
        let handle = std::thread::Builder::new()
            .name("lucius-embedded-writer".into())
            .spawn({
                let counters = Arc::clone(&counters);
                #[cfg(test)]
                let gate = Arc::clone(&gate);
                move || {
                    writer::run(
                        conn,
                        rx,
                        counters,
                        #[cfg(test)]
                        gate,
                    )
                }
            })
            .map_err(|source| OpenError::Directory {
                dir: dir.clone(),
                what: "cannot start the writer thread",
                source,
            })?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                dir,
                queue: Some(tx),
                writer: Mutex::new(Some(handle)),
                readers: Arc::new(Readers::new(path)),
                counters,
                #[cfg(test)]
                gate,
                _lock: lock,
            }),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.inner.dir.join(DATABASE_FILE)
    }

    /// Write requests and transactions so far.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            batches: self.inner.counters.batches.load(Ordering::Relaxed),
            requests: self.inner.counters.requests.load(Ordering::Relaxed),
        }
    }

    /// Queues a write and waits for its answer, sent after its transaction committed.
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let queue = self.inner.queue.as_ref().ok_or_else(writer_gone)?;
        queue.send(make(tx)).await.map_err(|_| writer_gone())?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Writes a new job's claim, job and steps without its first directive (a torn
    /// intake, for the conformance suite).
    #[cfg(test)]
    pub(crate) async fn torn_intake(&self, new: NewJob) -> Result<(), StoreError> {
        let enc = Encoded::new_job(new)?;
        self.write(|tx| Request::TornIntake(enc, tx)).await
    }

    /// Holds the writer before its next batch while the guard lives.
    #[cfg(test)]
    pub(crate) fn gate(&self) -> &writer::Gate {
        &self.inner.gate
    }

    /// Requests waiting in the writer's queue.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.inner
            .queue
            .as_ref()
            .map_or(0, |q| q.max_capacity() - q.capacity())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has answered what it holds; wait for
        // it, so the file is closed before the lock is released.
        self.queue.take();
        let handle = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        let enc = Encoded::new_job(new)?;
        self.write(|tx| Request::Create(enc, tx)).await
    }

    async fn load_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let id = id.clone();
        self.inner
            .readers
            .read(move |c| reads::load_job(c, &id))
            .await
    }

    async fn commit(&self, changes: Changes) -> Result<Changes, StoreError> {
        if changes.is_empty() {
            return Ok(changes);
        }
        let enc = Encoded::changes(changes)?;
        self.write(|tx| Request::Commit(enc, tx)).await
    }

    async fn outbox(&self, query: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        let q = query.clone();
        self.inner.readers.read(move |c| reads::outbox(c, &q)).await
    }

    async fn active_jobs(
        &self,
        partition: &Partition,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        let p = partition.clone();
        self.inner
            .readers
            .read(move |c| reads::active_jobs(c, &p, after.as_ref(), limit))
            .await
    }

    async fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        self.inner.readers.read(reads::partitions).await
    }

    async fn retire_partition(&self, partition: &Partition) -> Result<bool, StoreError> {
        let p = partition.clone();
        self.write(|tx| Request::Retire(p, tx)).await
    }

    async fn ended_jobs(
        &self,
        ended_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<EndedJob>, StoreError> {
        self.inner
            .readers
            .read(move |c| reads::ended_jobs(c, ended_by, limit))
            .await
    }

    async fn purge_job(&self, id: &JobId, revision: &Revision) -> Result<(), StoreError> {
        let (id, revision) = (id.clone(), revision.clone());
        self.write(|tx| Request::Purge(id, revision, tx)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner
            .readers
            .read(|c| {
                c.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(|e| crate::error::sqlite("answering a ping", e))
            })
            .await
    }
}

#[async_trait]
impl LeaseStore for EmbeddedStore {
    async fn lease(&self, partition: &Partition) -> Result<Option<Lease>, StoreError> {
        let p = partition.clone();
        let mut found = self
            .inner
            .readers
            .read(move |c| reads::leases(c, Some(&p)))
            .await?;
        Ok(found.pop())
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.inner.readers.read(|c| reads::leases(c, None)).await
    }

    async fn put_lease(&self, lease: Lease) -> Result<Lease, StoreError> {
        self.write(|tx| Request::PutLease(lease, tx)).await
    }

    async fn announce(&self, member: &str, until: Timestamp) -> Result<(), StoreError> {
        let member = member.to_owned();
        self.write(|tx| Request::Announce(member, until, tx)).await
    }

    async fn members(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.inner.readers.read(reads::members).await
    }
}

#[cfg(test)]
mod tests {
    use lucius_core::testkit::conformance::{run_all, run_lease_checks, Capabilities, Subject};
    use lucius_core::testkit::new_job;
    use lucius_core::{Millis, Revision, StoreErrorKind};

    use super::*;

    /// 2024-03-05T00:00:00Z.
    const T0: Timestamp = Timestamp(1_709_596_800_000);

    /// A fresh store in a fresh directory (kept as long as the store is used).
    fn fresh() -> (EmbeddedStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = EmbeddedStore::open(dir.path()).expect("the store opens");
        (store, dir)
    }

    /// A fresh store whose interrupted intake writes the claim, the job and its steps and
    /// dies before the first directive.
    fn subject() -> Subject {
        let (store, dir) = fresh();
        let crashing = store.clone();
        // The directory lives as long as the subject's closure.
        let dir = Arc::new(dir);
        Subject::new(Arc::new(store), move |new: NewJob| {
            let (store, _dir) = (crashing.clone(), Arc::clone(&dir));
            async move {
                store
                    .torn_intake(new)
                    .await
                    .expect("the torn intake is written");
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_passes_the_conformance_suite() {
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_passes_the_lease_checks() {
        let (store, _dir) = fresh();
        run_lease_checks(Arc::new(store)).await;
    }

    /// Requests queued while the writer is held go into one transaction; each is still
    /// checked on its own revisions, and a loser rolls back only itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_share_one_transaction_and_keep_their_own_checks() {
        let (store, _dir) = fresh();
        let jobs: Vec<NewJob> = (0..40)
            .map(|i| new_job("acme", &format!("g-{i}"), 0, T0))
            .collect();
        for j in &jobs {
            store.create_job(j.clone()).await.unwrap();
        }
        let mut records = Vec::new();
        for j in &jobs {
            records.push(store.load_job(&j.job.id).await.unwrap().unwrap());
        }
        let before = store.write_stats();
        store.gate().close();
        let now = T0.plus(Millis(5));
        let mut tasks = Vec::new();
        for (i, rec) in records.iter().enumerate() {
            let mut job = rec.job.on_start(now).unwrap();
            if i % 4 == 3 {
                // A write that lost its race before it was queued.
                job.revision = Revision::counter(99);
            }
            let step = rec.steps[0].on_published(1, now).unwrap();
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .commit(Changes {
                        steps: vec![step],
                        outbox: vec![],
                        job: Some(job),
                    })
                    .await
            }));
        }
        // One request is taken (and held at the gate); the rest wait in the queue.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.queued() < records.len() - 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "requests never queued"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        store.gate().open();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let after = store.write_stats();
        assert_eq!(after.requests - before.requests, records.len() as u64);
        assert!(
            after.batches - before.batches <= 2,
            "40 queued requests should share at most two transactions, took {}",
            after.batches - before.batches
        );
        for (i, (answer, rec)) in answers.iter().zip(&records).enumerate() {
            let stored = store.load_job(&rec.job.id).await.unwrap().unwrap();
            if i % 4 == 3 {
                let err = answer.as_ref().expect_err("a stale revision loses");
                assert_eq!(err.kind, StoreErrorKind::Conflict, "{err}");
                assert_eq!(stored.job.status, lucius_core::JobStatus::Accepted);
                assert_eq!(
                    stored.steps[0].status,
                    lucius_core::StepStatus::Queued,
                    "a request that lost rolls back its step write too"
                );
            } else {
                let written = answer.as_ref().expect("a fresh revision wins");
                assert_eq!(stored.job.status, lucius_core::JobStatus::InProgress);
                assert_eq!(
                    Some(&stored.job.revision),
                    written.job.as_ref().map(|j| &j.revision)
                );
                assert_eq!(stored.steps[0].revision, written.steps[0].revision);
            }
        }
    }

    /// Two writes on one row in one batch: the second sees the first's revision.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_of_one_row_in_one_batch_one_wins() {
        let (store, _dir) = fresh();
        let new = new_job("acme", "same-row", 0, T0);
        store.create_job(new.clone()).await.unwrap();
        let rec = store.load_job(&new.job.id).await.unwrap().unwrap();
        let before = store.write_stats();
        store.gate().close();
        let racer = |why: &'static str| {
            let job = rec.job.on_cancel(why, T0).unwrap();
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .commit(Changes {
                        job: Some(job),
                        ..Changes::default()
                    })
                    .await
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // The first is taken by the writer and held at the gate; the second queues.
        let a = racer("a");
        while store.write_stats().requests == before.requests {
            assert!(
                std::time::Instant::now() < deadline,
                "the first never reached the writer"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let b = racer("b");
        while store.queued() < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the second never queued"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let racers = [a, b];
        store.gate().open();
        let mut kinds = Vec::new();
        for r in racers {
            kinds.push(r.await.unwrap().map(|_| ()).map_err(|e| e.kind));
        }
        assert_eq!(
            store.write_stats().batches - before.batches,
            1,
            "both racers in one transaction"
        );
        assert_eq!(kinds, vec![Ok(()), Err(StoreErrorKind::Conflict)]);
    }
}
