//! A `Store` of your own, checked by the conformance suite every Lucius store passes.
//!
//! The store here is `Audited<S>`: it wraps any store and counts the calls and failures of
//! each operation (the shape of a metrics, tracing or caching layer an embedder adds). A
//! store over your own database implements the same seven methods; the suite then tells
//! you whether it keeps the contract (revision-guarded writes, idempotent intake, torn
//! intakes completed by a replay, outbox queries in due order, cursors, partitions).
//!
//! Run: `cargo run --example custom_store`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lucius::memory::{Fault, MemoryStore};
use lucius::ports::{CreateOutcome, EndedJob, OutboxQuery, StoreError};
use lucius::record::{Changes, JobRecord, NewJob};
use lucius::testkit::conformance::{run_all, Capabilities, Subject, CHECKS};
use lucius::{JobId, Lucius, OutboxEntry, Partition, Revision, Store, Timestamp};

/// Counts each operation's calls and failures, and delegates to `inner`.
#[derive(Clone)]
struct Audited<S> {
    inner: S,
    counts: Arc<Mutex<BTreeMap<&'static str, (u64, u64)>>>,
}

impl<S> Audited<S> {
    fn new(inner: S) -> Self {
        Audited {
            inner,
            counts: Arc::default(),
        }
    }

    fn count<T>(&self, op: &'static str, r: Result<T, StoreError>) -> Result<T, StoreError> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = counts.entry(op).or_default();
        c.0 += 1;
        c.1 += u64::from(r.is_err());
        r
    }

    fn report(&self) -> BTreeMap<&'static str, (u64, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl<S: Store> Store for Audited<S> {
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        self.count("create_job", self.inner.create_job(new).await)
    }

    async fn load_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.count("load_job", self.inner.load_job(id).await)
    }

    async fn commit(&self, changes: Changes) -> Result<Changes, StoreError> {
        self.count("commit", self.inner.commit(changes).await)
    }

    async fn outbox(&self, query: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        self.count("outbox", self.inner.outbox(query).await)
    }

    async fn active_jobs(
        &self,
        partition: &Partition,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        self.count(
            "active_jobs",
            self.inner.active_jobs(partition, after, limit).await,
        )
    }

    async fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        self.count("partitions", self.inner.partitions().await)
    }

    async fn retire_partition(&self, partition: &Partition) -> Result<bool, StoreError> {
        self.count(
            "retire_partition",
            self.inner.retire_partition(partition).await,
        )
    }

    async fn ended_jobs(
        &self,
        ended_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<EndedJob>, StoreError> {
        self.count("ended_jobs", self.inner.ended_jobs(ended_by, limit).await)
    }

    async fn purge_job(&self, id: &JobId, revision: &Revision) -> Result<(), StoreError> {
        self.count("purge_job", self.inner.purge_job(id, revision).await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.count("ping", self.inner.ping().await)
    }

    // A wrapper forwards the port's optional methods too, or it would hide the inner
    // store's implementation behind the default.
    async fn index_pending(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.count("index_pending", self.inner.index_pending(entry).await)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The conformance suite, each check on a fresh store. The one crash the suite cannot
    //    play through the port — an intake torn before its first directive — is the inner
    //    memory store's fault injection: every row but the last written.
    let audited = Arc::new(Mutex::new(Vec::new()));
    let made = audited.clone();
    run_all(
        move || {
            let store = Audited::new(MemoryStore::new());
            made.lock().unwrap().push(store.clone());
            let crashing = store.clone();
            async move {
                Subject::new(Arc::new(store), move |new: NewJob| {
                    let store = crashing.clone();
                    async move {
                        store.inner.inject(Fault::Tear(new.steps.len() + 3));
                        let _ = store.create_job(new).await;
                    }
                })
            }
        },
        Capabilities {
            atomic_commit: true,
            retention: true,
            retires_partitions: true,
        },
    )
    .await;
    let stores = audited.lock().unwrap().len();
    println!(
        "conformance: {} checks passed on {stores} fresh stores",
        CHECKS.len()
    );

    // 2. The same store under the runtime.
    let store = Audited::new(MemoryStore::new());
    let lucius = Lucius::builder().store(store.clone()).build()?;
    let job = lucius
        .submit_bytes(
            br#"{"requestType":"demo.echo","tenantId":"acme","idempotencyKey":"custom-1","payload":{}}"#,
            None,
        )
        .await?;
    let replay = lucius
        .submit_bytes(
            br#"{"requestType":"demo.echo","tenantId":"acme","idempotencyKey":"custom-1","payload":{}}"#,
            None,
        )
        .await?;
    assert_eq!(job.job_id, replay.job_id, "a replay answers the same job");
    println!("job {} accepted; replay answered the same job", job.job_id);
    for (op, (calls, failures)) in store.report() {
        println!("  {op:<12} {calls:>3} calls, {failures} failed");
    }
    Ok(())
}
