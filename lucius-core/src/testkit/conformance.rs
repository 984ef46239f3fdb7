//! The store conformance suite: one set of checks, written against the [`Store`] port, that
//! every backend passes. Adapters call [`run_all`] with a factory of fresh [`Subject`]s: a
//! store, and how to interrupt its intake the way a crash would.
//!
//! ```ignore
//! lucius_core::testkit::conformance::run_all(
//!     || async {
//!         let store = MyStore::new();
//!         let crashing = store.clone();
//!         Subject::new(Arc::new(store), move |new| {
//!             let store = crashing.clone();
//!             async move { store.crash_before_first_directive(); let _ = store.create_job(new).await; }
//!         })
//!     },
//!     Capabilities { atomic_commit: true, retention: true, retires_partitions: true },
//! ).await;
//! ```

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;

use serde_json::json;

use crate::ids::{JobId, Partition, TenantId};
use crate::job::JobStatus;
use crate::outbox::{OutboxStatus, PublishRetryPolicy};
use crate::ports::{CreateOutcome, OutboxQuery, Store, StoreErrorKind};
use crate::record::{Changes, JobRecord, NewJob};
use crate::revision::Revision;
use crate::step::StepStatus;
use crate::time::{Millis, Timestamp};

use super::fixtures::{new_job, new_job_with_correlation};

/// What a backend promises beyond the port's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `commit` applies all of its writes or none (memory, ledger); when false, it applies
    /// them in the documented order, stops at the first failure and reports it as
    /// [`StoreErrorKind::Partial`] once a write has landed (table).
    pub atomic_commit: bool,
    /// `ended_jobs` and `purge_job` work (retention). Every store in this workspace has it;
    /// a store that keeps finished jobs forever says `false`.
    pub retention: bool,
    /// `retire_partition` retires an empty partition (Table Storage never does yet).
    pub retires_partitions: bool,
}

/// A store under test, with the one crash the suite cannot play through the port.
pub struct Subject {
    /// The store.
    pub store: Arc<dyn Store>,
    interrupted_intake: InterruptedIntake,
}

/// See [`Subject::new`].
type InterruptedIntake =
    Box<dyn Fn(NewJob) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

impl Subject {
    /// `store`, and `interrupted_intake`: calls `store.create_job(new)` as a process that
    /// dies after the job and its steps are durable and before its first directive can be
    /// found by a dispatcher (a torn intake: the outbox row, or in a layout that writes it
    /// with the job, the row that makes it visible, was never written). What that call
    /// returns is ignored; the suite checks the rows it left.
    pub fn new<F, Fut>(store: Arc<dyn Store>, interrupted_intake: F) -> Subject
    where
        F: Fn(NewJob) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Subject {
            store,
            interrupted_intake: Box::new(move |new| Box::pin(interrupted_intake(new))),
        }
    }
}

/// 2024-03-05T00:00:00Z.
const T0: Timestamp = Timestamp(1_709_596_800_000);

/// Names of the checks, in the order [`run_all`] runs them.
pub const CHECKS: &[&str] = &[
    "create_then_load_round_trips",
    "replayed_create_returns_the_claim",
    "other_request_same_key_changes_nothing",
    "concurrent_creates_make_one_job",
    "create_completes_a_torn_intake",
    "replay_leaves_a_terminal_torn_job_alone",
    "replay_repairs_the_first_directive_in_the_jobs_partition",
    "commit_is_guarded_by_revisions",
    "insert_of_existing_row_conflicts",
    "failed_commit_leaves_rows_as_the_contract_says",
    "outbox_queries_filter_and_order",
    "outbox_cursor_pages_in_order",
    "active_jobs_and_partitions",
    "unknown_rows",
    "finished_jobs_are_listed_and_purged",
    "empty_partitions_retire",
];

/// Runs every check, each on a fresh subject from `make`. Panics naming the failing check.
pub async fn run_all<F, Fut>(make: F, caps: Capabilities)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Subject>,
{
    for name in CHECKS {
        let subject = make().await;
        run_one(name, subject, caps).await;
    }
}

/// Runs one named check (see [`CHECKS`]) on `subject`.
pub async fn run_one(name: &str, subject: Subject, caps: Capabilities) {
    let store = Arc::clone(&subject.store);
    match name {
        "create_then_load_round_trips" => create_then_load_round_trips(store).await,
        "replayed_create_returns_the_claim" => replayed_create_returns_the_claim(store).await,
        "other_request_same_key_changes_nothing" => {
            other_request_same_key_changes_nothing(store).await
        }
        "concurrent_creates_make_one_job" => concurrent_creates_make_one_job(store).await,
        "create_completes_a_torn_intake" => create_completes_a_torn_intake(store).await,
        "replay_leaves_a_terminal_torn_job_alone" => {
            replay_leaves_a_terminal_torn_job_alone(store).await
        }
        "replay_repairs_the_first_directive_in_the_jobs_partition" => {
            replay_repairs_the_first_directive_in_the_jobs_partition(&subject).await
        }
        "commit_is_guarded_by_revisions" => commit_is_guarded_by_revisions(store).await,
        "insert_of_existing_row_conflicts" => insert_of_existing_row_conflicts(store).await,
        "failed_commit_leaves_rows_as_the_contract_says" => {
            failed_commit_leaves_rows_as_the_contract_says(store, caps).await
        }
        "outbox_queries_filter_and_order" => outbox_queries_filter_and_order(store).await,
        "outbox_cursor_pages_in_order" => outbox_cursor_pages_in_order(store).await,
        "active_jobs_and_partitions" => active_jobs_and_partitions(store).await,
        "unknown_rows" => unknown_rows(store).await,
        "finished_jobs_are_listed_and_purged" => {
            finished_jobs_are_listed_and_purged(store, caps).await
        }
        "empty_partitions_retire" => empty_partitions_retire(store, caps).await,
        other => panic!("conformance: no check named {other:?}"),
    }
}

fn strip(mut r: JobRecord) -> JobRecord {
    r.job.revision = Revision::NEW;
    for s in &mut r.steps {
        s.revision = Revision::NEW;
    }
    for e in &mut r.outbox {
        e.revision = Revision::NEW;
    }
    r
}

fn expected(new: &NewJob) -> JobRecord {
    JobRecord {
        job: new.job.clone(),
        steps: new.steps.clone(),
        outbox: vec![new.outbox.clone()],
    }
}

async fn load(store: &dyn Store, id: &JobId, check: &str) -> JobRecord {
    match store.load_job(id).await {
        Ok(Some(r)) => r,
        other => panic!("conformance {check}: load_job({id}) gave {other:?}"),
    }
}

/// Creates `new`, which must be a new job; returns the record `create_job` gave back.
async fn create(store: &dyn Store, new: &NewJob, check: &str) -> JobRecord {
    match store.create_job(new.clone()).await {
        Ok(CreateOutcome::Created(rec)) => *rec,
        other => panic!("conformance {check}: create_job gave {other:?}"),
    }
}

async fn create_then_load_round_trips(store: Arc<dyn Store>) {
    let c = "create_then_load_round_trips";
    let new = new_job("acme", "k-1", 0, T0);
    let created = create(store.as_ref(), &new, c).await;
    let rec = load(store.as_ref(), &new.job.id, c).await;
    assert_eq!(
        created, rec,
        "{c}: create_job must return the rows as stored, revisions included"
    );
    assert!(
        !rec.job.revision.is_new(),
        "{c}: loaded job has no revision"
    );
    assert!(
        rec.steps.iter().all(|s| !s.revision.is_new()),
        "{c}: a step has no revision"
    );
    assert!(
        rec.outbox.iter().all(|e| !e.revision.is_new()),
        "{c}: an entry has no revision"
    );
    assert_eq!(
        strip(rec),
        expected(&new),
        "{c}: rows differ from what was written"
    );
    // A commit planned on the returned record needs no reload: marking the first
    // directive sent succeeds, and a second one planned on the same record conflicts.
    let sent = created.outbox[0]
        .on_sent(T0.plus(Millis(5)))
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let mut changes = Changes::default();
    changes.put_outbox(sent.clone());
    store
        .commit(changes.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: a commit planned on the created record: {e}"));
    assert_eq!(
        store.commit(changes).await.map_err(|e| e.kind),
        Err(StoreErrorKind::Conflict),
        "{c}: the created record's revision is now stale"
    );
    let after = load(store.as_ref(), &new.job.id, c).await;
    assert_eq!(after.outbox[0].status, OutboxStatus::Sent, "{c}");
    assert_eq!(after.outbox[0].sent_at, sent.sent_at, "{c}");
    store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("{c}: ping failed: {e}"));
}

async fn replayed_create_returns_the_claim(store: Arc<dyn Store>) {
    let c = "replayed_create_returns_the_claim";
    let new = new_job("acme", "k-2", 0, T0);
    store
        .create_job(new.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    // A replay later (another month even) must not write a second job or directive.
    let again = new_job("acme", "k-2", 0, T0.plus(Millis::from_secs(40 * 86_400)));
    match store.create_job(again.clone()).await {
        Ok(CreateOutcome::Existing(claim)) => {
            assert_eq!(
                claim, new.claim,
                "{c}: the claim returned is not the stored one"
            )
        }
        other => panic!("{c}: replay gave {other:?}"),
    }
    let rec = strip(load(store.as_ref(), &new.job.id, c).await);
    assert_eq!(rec, expected(&new), "{c}: replay changed the rows");
}

async fn other_request_same_key_changes_nothing(store: Arc<dyn Store>) {
    let c = "other_request_same_key_changes_nothing";
    let new = new_job("acme", "k-3", 0, T0);
    store
        .create_job(new.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let other = new_job("acme", "k-3", 1, T0);
    assert_ne!(other.claim.request_hash, new.claim.request_hash);
    match store.create_job(other.clone()).await {
        Ok(CreateOutcome::Existing(claim)) => {
            assert_eq!(claim.request_hash, new.claim.request_hash, "{c}")
        }
        other => panic!("{c}: gave {other:?}"),
    }
    let rec = strip(load(store.as_ref(), &new.job.id, c).await);
    assert_eq!(
        rec,
        expected(&new),
        "{c}: a conflicting request changed the rows"
    );
    // The same key under another tenant is another job.
    let t2 = new_job("globex", "k-3", 1, T0);
    let created = create(store.as_ref(), &t2, c).await;
    assert_eq!(strip(created), expected(&t2), "{c}: tenants share keys");
}

/// Polls two futures to completion on the current task.
async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take(), rb.take()))
        } else {
            Poll::Pending
        }
    })
    .await
    .map_pair()
}

trait MapPair<A, B> {
    fn map_pair(self) -> (A, B);
}

impl<A, B> MapPair<A, B> for (Option<A>, Option<B>) {
    fn map_pair(self) -> (A, B) {
        match self {
            (Some(a), Some(b)) => (a, b),
            // join2 only completes once both outputs are taken.
            _ => unreachable!("join2 completed without both outputs"),
        }
    }
}

async fn concurrent_creates_make_one_job(store: Arc<dyn Store>) {
    let c = "concurrent_creates_make_one_job";
    for i in 0..5 {
        let key = format!("race-{i}");
        let new = new_job("acme", &key, 0, T0);
        let (a, b) = join2(store.create_job(new.clone()), store.create_job(new.clone())).await;
        let created: Vec<&JobRecord> = [&a, &b]
            .into_iter()
            .filter_map(|r| match r {
                Ok(CreateOutcome::Created(rec)) => Some(&**rec),
                _ => None,
            })
            .collect();
        let existing = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Ok(CreateOutcome::Existing(_))))
            .count();
        assert_eq!(
            (created.len(), existing),
            (1, 1),
            "{c}: got {a:?} and {b:?}"
        );
        let rec = load(store.as_ref(), &new.job.id, c).await;
        // Even when the replay wrote some rows first, the creator returns them as stored.
        assert_eq!(created[0], &rec, "{c}: the created record is not as stored");
        assert_eq!(strip(rec), expected(&new), "{c}");
    }
}

async fn create_completes_a_torn_intake(store: Arc<dyn Store>) {
    let c = "create_completes_a_torn_intake";
    // Only the claim and the job were written before a crash: the rows are missing until
    // the client retries, and the retry completes them.
    let new = new_job("acme", "k-torn", 0, T0);
    let partial = NewJob {
        steps: Vec::new(),
        ..new.clone()
    };
    // Writing a job without steps is what a crash after the job row leaves behind.
    store
        .create_job(partial.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    match store.create_job(new.clone()).await {
        Ok(CreateOutcome::Existing(_)) => {}
        other => panic!("{c}: retry gave {other:?}"),
    }
    let rec = strip(load(store.as_ref(), &new.job.id, c).await);
    assert_eq!(rec, expected(&new), "{c}: retry did not complete the rows");
}

async fn replay_leaves_a_terminal_torn_job_alone(store: Arc<dyn Store>) {
    let c = "replay_leaves_a_terminal_torn_job_alone";
    let new = new_job("acme", "k-torn-dead", 0, T0);
    let partial = NewJob {
        steps: Vec::new(),
        ..new.clone()
    };
    store
        .create_job(partial.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    // The sweeper gave up on the interrupted intake and failed the job.
    let rec = load(store.as_ref(), &new.job.id, c).await;
    let failed = rec
        .job
        .on_failed("intake did not complete", T0)
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    store
        .commit(Changes {
            job: Some(failed),
            ..Changes::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    match store.create_job(new.clone()).await {
        Ok(CreateOutcome::Existing(_)) => {}
        other => panic!("{c}: late retry gave {other:?}"),
    }
    let rec = load(store.as_ref(), &new.job.id, c).await;
    assert!(
        rec.steps.is_empty(),
        "{c}: rows were added under a terminal job"
    );
    assert_eq!(rec.job.status, JobStatus::Failed, "{c}");
}

/// Pending entries of `p`, all of them.
fn pending_in(p: &Partition, due_by: Option<Timestamp>) -> OutboxQuery {
    OutboxQuery {
        status: Some(OutboxStatus::Pending),
        partition: Some(p.clone()),
        due_by,
        after: None,
        limit: 100,
    }
}

async fn replay_repairs_the_first_directive_in_the_jobs_partition(subject: &Subject) {
    let c = "replay_repairs_the_first_directive_in_the_jobs_partition";
    let store = subject.store.as_ref();
    let new = new_job("acme", "k-torn-directive", 0, T0);
    let march = new.job.partition.clone();
    (subject.interrupted_intake)(new.clone()).await;
    let torn = load(store, &new.job.id, c).await;
    assert_eq!(
        torn.steps.len(),
        new.steps.len(),
        "{c}: the interrupted intake should have written every step, wrote {}",
        torn.steps.len()
    );
    let visible = store
        .outbox(&pending_in(&march, None))
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    assert!(
        visible.is_empty(),
        "{c}: the interrupted intake should leave no findable directive, found {visible:?}"
    );
    // The client retries in April (with another correlation id, which is tracing metadata
    // and not part of the request hash).
    let later = T0.plus(Millis::from_secs(40 * 86_400));
    let again = new_job_with_correlation("acme", "k-torn-directive", 0, "corr-retry", later);
    assert_eq!(again.claim.request_hash, new.claim.request_hash, "{c}");
    let april = again.job.partition.clone();
    assert_ne!(april, march, "{c}");
    match store.create_job(again).await {
        Ok(CreateOutcome::Existing(claim)) => assert_eq!(
            claim, new.claim,
            "{c}: the claim returned is not the stored one"
        ),
        other => panic!("{c}: the replay should find the claim, gave {other:?}"),
    }
    // The dispatcher of the job's partition, in April, finds the repaired directive.
    let found = store
        .outbox(&pending_in(&march, Some(later)))
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let ids: Vec<_> = found.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        ids,
        vec![new.outbox.id.clone()],
        "{c}: pending entries of the stored job's partition {march}"
    );
    assert_eq!(
        found[0].partition, march,
        "{c}: the repaired entry's partition"
    );
    let mut entry = found[0].clone();
    entry.revision = Revision::NEW;
    assert_eq!(
        entry, new.outbox,
        "{c}: the repaired directive should be the one the original intake wrote \
         (its partition, times and job fields)"
    );
    let stray = store
        .outbox(&pending_in(&april, None))
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    assert!(
        stray.is_empty(),
        "{c}: the replay's partition {april} should hold nothing, holds {stray:?}"
    );
    let rec = strip(load(store, &new.job.id, c).await);
    assert_eq!(rec, expected(&new), "{c}: rows after the repair");
    let parts: Vec<String> = store
        .partitions()
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(parts, [march.to_string()], "{c}: partitions");
}

async fn commit_is_guarded_by_revisions(store: Arc<dyn Store>) {
    let c = "commit_is_guarded_by_revisions";
    let new = new_job("acme", "k-cas", 0, T0);
    store
        .create_job(new.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let rec = load(store.as_ref(), &new.job.id, c).await;
    let now = T0.plus(Millis(10));
    let step = rec.steps[0]
        .on_published(1, now)
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let entry = rec.outbox[0]
        .on_sent(now)
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let job = rec.job.on_start(now).unwrap_or_else(|e| panic!("{c}: {e}"));
    let changes = Changes {
        steps: vec![step.clone()],
        outbox: vec![entry.clone()],
        job: Some(job.clone()),
    };
    let written = store
        .commit(changes.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    assert_ne!(
        written.steps[0].revision, rec.steps[0].revision,
        "{c}: revision did not change"
    );
    assert_ne!(
        written.job.as_ref().map(|j| &j.revision),
        Some(&rec.job.revision),
        "{c}"
    );
    let after = load(store.as_ref(), &new.job.id, c).await;
    assert_eq!(
        after.steps[0].revision, written.steps[0].revision,
        "{c}: returned revision is not the stored one"
    );
    assert_eq!(after.job.status, JobStatus::InProgress, "{c}");
    assert_eq!(after.steps[0].status, StepStatus::Initiated, "{c}");
    assert_eq!(after.outbox[0].status, OutboxStatus::Sent, "{c}");

    // The same writes with the old revisions lose.
    let stale = Changes {
        steps: vec![],
        outbox: vec![],
        job: Some(
            job.on_cancel("late", now)
                .unwrap_or_else(|e| panic!("{c}: {e}")),
        ),
    };
    let err = store
        .commit(stale)
        .await
        .expect_err("stale job write must fail");
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{c}: {err}");
    let after2 = load(store.as_ref(), &new.job.id, c).await;
    assert_eq!(
        after2.job.status,
        JobStatus::InProgress,
        "{c}: a stale write was applied"
    );

    // Writes with the returned revisions win.
    let next = after2.steps[0]
        .on_ack(1, Some("w"), now)
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    store
        .commit(Changes {
            steps: vec![next],
            ..Changes::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{c}: fresh write failed: {e}"));
    let after3 = load(store.as_ref(), &new.job.id, c).await;
    assert_eq!(after3.steps[0].status, StepStatus::Running, "{c}");
    assert_eq!(after3.steps[0].worker_id.as_deref(), Some("w"), "{c}");
}

async fn insert_of_existing_row_conflicts(store: Arc<dyn Store>) {
    let c = "insert_of_existing_row_conflicts";
    let new = new_job("acme", "k-ins", 0, T0);
    store
        .create_job(new.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let err = store
        .commit(Changes {
            outbox: vec![new.outbox.clone()],
            ..Changes::default()
        })
        .await
        .expect_err("inserting an existing entry must fail");
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{c}: {err}");
}

async fn failed_commit_leaves_rows_as_the_contract_says(store: Arc<dyn Store>, caps: Capabilities) {
    let c = "failed_commit_leaves_rows_as_the_contract_says";
    let new = new_job("acme", "k-atomic", 0, T0);
    store
        .create_job(new.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let rec = load(store.as_ref(), &new.job.id, c).await;
    let now = T0.plus(Millis(5));
    let step = rec.steps[0]
        .on_published(1, now)
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let job = rec.job.on_start(now).unwrap_or_else(|e| panic!("{c}: {e}"));
    let mut stale_job = job.clone();
    stale_job.revision = Revision::stored("no-such-revision");
    let mut stale_step = step.clone();
    stale_step.revision = Revision::stored("no-such-revision");

    // The first write fails: nothing is applied, and the error is the plain conflict.
    let err = store
        .commit(Changes {
            steps: vec![stale_step],
            outbox: vec![],
            job: Some(job),
        })
        .await
        .expect_err("a write with a wrong revision must fail");
    assert_eq!(
        err.kind,
        StoreErrorKind::Conflict,
        "{c}: a commit whose first write conflicts should be a Conflict, was {err}"
    );
    let after = load(store.as_ref(), &new.job.id, c).await;
    assert_eq!(
        (after.steps[0].status, after.job.status),
        (StepStatus::Queued, JobStatus::Accepted),
        "{c}: a commit that failed on its first write applied something"
    );

    // A later write fails: an atomic store applies nothing and says Conflict; a store that
    // writes in order has written the step and says Partial (the transition happened).
    let err = store
        .commit(Changes {
            steps: vec![step],
            outbox: vec![],
            job: Some(stale_job),
        })
        .await
        .expect_err("a write with a wrong revision must fail");
    let after = load(store.as_ref(), &new.job.id, c).await;
    assert_eq!(
        after.job.status,
        JobStatus::Accepted,
        "{c}: the stale job write was applied"
    );
    if caps.atomic_commit {
        assert_eq!(err.kind, StoreErrorKind::Conflict, "{c}: {err}");
        assert_eq!(
            after.steps[0].status,
            StepStatus::Queued,
            "{c}: an atomic commit applied part of its writes"
        );
    } else {
        assert_eq!(
            err.kind,
            StoreErrorKind::Partial,
            "{c}: a commit that wrote its steps and then lost on the job should be Partial, \
             was {err}"
        );
        assert_eq!(
            after.steps[0].status,
            StepStatus::Initiated,
            "{c}: a store that commits in order should have written the step first"
        );
    }
}

async fn outbox_queries_filter_and_order(store: Arc<dyn Store>) {
    let c = "outbox_queries_filter_and_order";
    let policy = PublishRetryPolicy {
        delay: Millis::from_secs(30),
        max_attempts: 2,
    };
    // Three jobs in acme's March partition, one in globex's, one in acme's April.
    let jobs: Vec<NewJob> = vec![
        new_job("acme", "q-1", 0, T0),
        new_job("acme", "q-2", 0, T0.plus(Millis(1))),
        new_job("acme", "q-3", 0, T0.plus(Millis(2))),
        new_job("globex", "q-4", 0, T0),
        new_job("acme", "q-5", 0, T0.plus(Millis::from_secs(31 * 86_400))),
    ];
    for j in &jobs {
        store
            .create_job(j.clone())
            .await
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let march = jobs[0].job.partition.clone();
    assert_eq!(march.to_string(), "acme#202403");
    let pending = |p: &Partition, due: Option<Timestamp>, limit: usize| OutboxQuery {
        status: Some(OutboxStatus::Pending),
        partition: Some(p.clone()),
        due_by: due,
        after: None,
        limit,
    };
    let ids = |v: Vec<crate::outbox::OutboxEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let got = ids(store
        .outbox(&pending(&march, Some(T0.plus(Millis(10))), 100))
        .await
        .unwrap_or_default());
    let want: Vec<_> = jobs[..3].iter().map(|j| j.outbox.id.clone()).collect();
    assert_eq!(
        got, want,
        "{c}: pending entries of a partition, oldest first"
    );
    let got = ids(store
        .outbox(&pending(&march, Some(T0.plus(Millis(10))), 2))
        .await
        .unwrap_or_default());
    assert_eq!(got, want[..2].to_vec(), "{c}: limit");
    let got = ids(store
        .outbox(&pending(&march, Some(T0.plus(Millis(1))), 100))
        .await
        .unwrap_or_default());
    assert_eq!(got, want[..2].to_vec(), "{c}: due_by");

    // q-1 sent, q-2 backs off, q-3 dies.
    let now = T0.plus(Millis(20));
    for (i, j) in jobs[..3].iter().enumerate() {
        let rec = load(store.as_ref(), &j.job.id, c).await;
        let e = &rec.outbox[0];
        let next = match i {
            0 => e.on_sent(now),
            1 => e.on_publish_failed("busy", false, policy, now),
            _ => e.on_publish_failed("denied", true, policy, now),
        }
        .unwrap_or_else(|e| panic!("{c}: {e}"));
        store
            .commit(Changes {
                outbox: vec![next],
                ..Changes::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let got = ids(store
        .outbox(&pending(&march, Some(now), 100))
        .await
        .unwrap_or_default());
    assert!(
        got.is_empty(),
        "{c}: a sent, a backing-off and a dead entry are not due: {got:?}"
    );
    let later = now.plus(Millis::from_secs(60));
    let got = ids(store
        .outbox(&pending(&march, Some(later), 100))
        .await
        .unwrap_or_default());
    assert_eq!(
        got,
        vec![jobs[1].outbox.id.clone()],
        "{c}: the backed-off entry is due later"
    );
    let dead = store
        .outbox(&OutboxQuery {
            status: Some(OutboxStatus::Dead),
            partition: Some(march.clone()),
            due_by: None,
            after: None,
            limit: 100,
        })
        .await
        .unwrap_or_default();
    assert_eq!(
        ids(dead),
        vec![jobs[2].outbox.id.clone()],
        "{c}: dead entries"
    );
    let all_pending = store
        .outbox(&OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: None,
            due_by: None,
            after: None,
            limit: 100,
        })
        .await
        .unwrap_or_default();
    let mut got = ids(all_pending);
    got.sort();
    let mut want = vec![
        jobs[1].outbox.id.clone(),
        jobs[3].outbox.id.clone(),
        jobs[4].outbox.id.clone(),
    ];
    want.sort();
    assert_eq!(got, want, "{c}: pending entries of every partition");
    let sent = store
        .outbox(&OutboxQuery {
            status: Some(OutboxStatus::Sent),
            partition: None,
            due_by: None,
            after: None,
            limit: 100,
        })
        .await
        .unwrap_or_default();
    assert_eq!(
        ids(sent),
        vec![jobs[0].outbox.id.clone()],
        "{c}: sent entries"
    );
}

async fn outbox_cursor_pages_in_order(store: Arc<dyn Store>) {
    let c = "outbox_cursor_pages_in_order";
    // Six due entries in acme's March partition, two pairs due at the same time (ordered
    // by id), created out of order; one entry due later; one of another partition.
    let offsets = [2, 0, 1, 0, 1, 3];
    let mut jobs: Vec<NewJob> = offsets
        .iter()
        .enumerate()
        .map(|(i, ms)| new_job("acme", &format!("cur-{i}"), 0, T0.plus(Millis(*ms))))
        .collect();
    jobs.push(new_job("acme", "cur-late", 0, T0.plus(Millis(100))));
    jobs.push(new_job("globex", "cur-other", 0, T0));
    for j in &jobs {
        store
            .create_job(j.clone())
            .await
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let march = jobs[0].job.partition.clone();
    let mut due: Vec<_> = jobs[..offsets.len()]
        .iter()
        .map(|j| (j.outbox.next_attempt_at, j.outbox.id.clone()))
        .collect();
    due.sort();
    let query = |after, due_by, limit| OutboxQuery {
        status: Some(OutboxStatus::Pending),
        partition: Some(march.clone()),
        due_by: Some(due_by),
        after,
        limit,
    };
    let now = T0.plus(Millis(10));
    for limit in [1, 2] {
        let mut visited = Vec::new();
        let mut after = None;
        for _ in 0..=due.len() {
            let page = store
                .outbox(&query(after.clone(), now, limit))
                .await
                .unwrap_or_else(|e| panic!("{c}: {e}"));
            let keys: Vec<_> = page
                .iter()
                .map(|e| (e.next_attempt_at, e.id.clone()))
                .collect();
            let Some(last) = keys.last().cloned() else {
                break;
            };
            assert!(
                keys.len() == limit || visited.len() + keys.len() == due.len(),
                "{c}: limit {limit}: a page should be full unless it is the last, got {keys:?} \
                 after {after:?}"
            );
            visited.extend(keys);
            after = Some(last);
        }
        assert_eq!(
            visited, due,
            "{c}: limit {limit}: pages should visit each due entry once, in (nextAttemptAt, id) order"
        );
    }
    // The cursor and `due_by` together: after the first entry due at T0, due by T0 + 1 ms.
    let got: Vec<_> = store
        .outbox(&query(Some(due[0].clone()), T0.plus(Millis(1)), 100))
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"))
        .into_iter()
        .map(|e| (e.next_attempt_at, e.id))
        .collect();
    assert_eq!(
        got,
        due[1..4].to_vec(),
        "{c}: after the first entry, due by T0 + 1 ms: the other entry due at T0 and both due at T0 + 1 ms"
    );
    let got = store
        .outbox(&query(Some(due[3].clone()), T0.plus(Millis(1)), 100))
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    assert!(
        got.is_empty(),
        "{c}: nothing is due by T0 + 1 ms after the last entry due then, got {got:?}"
    );
    // Any status (an admin listing): every entry of the partition, the later one too.
    let mut all = due.clone();
    all.push((
        jobs[offsets.len()].outbox.next_attempt_at,
        jobs[offsets.len()].outbox.id.clone(),
    ));
    let mut visited = Vec::new();
    let mut after = None;
    for _ in 0..=all.len() {
        let page = store
            .outbox(&OutboxQuery {
                status: None,
                partition: Some(march.clone()),
                due_by: None,
                after: after.clone(),
                limit: 2,
            })
            .await
            .unwrap_or_else(|e| panic!("{c}: {e}"));
        let Some(last) = page.last().map(|e| (e.next_attempt_at, e.id.clone())) else {
            break;
        };
        visited.extend(page.into_iter().map(|e| (e.next_attempt_at, e.id)));
        after = Some(last);
    }
    assert_eq!(
        visited, all,
        "{c}: pages of entries of any status should visit each once, in order"
    );
    // Past the last due entry, the later one comes when it is due.
    let got: Vec<_> = store
        .outbox(&query(due.last().cloned(), T0.plus(Millis(100)), 100))
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"))
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        got,
        vec![jobs[offsets.len()].outbox.id.clone()],
        "{c}: after the last due entry, by T0 + 100 ms"
    );
    // Every partition at once (what a pull poll reads): one order across partitions.
    let mut everywhere: Vec<_> = jobs
        .iter()
        .filter(|j| j.outbox.next_attempt_at <= now)
        .map(|j| (j.outbox.next_attempt_at, j.outbox.id.clone()))
        .collect();
    everywhere.sort();
    for limit in [1, 3] {
        let mut visited = Vec::new();
        let mut after = None;
        for _ in 0..=everywhere.len() {
            let page = store
                .outbox(&OutboxQuery {
                    status: Some(OutboxStatus::Pending),
                    partition: None,
                    due_by: Some(now),
                    after: after.clone(),
                    limit,
                })
                .await
                .unwrap_or_else(|e| panic!("{c}: {e}"));
            assert!(page.len() <= limit, "{c}: limit {limit} across partitions");
            let Some(last) = page.last().map(|e| (e.next_attempt_at, e.id.clone())) else {
                break;
            };
            visited.extend(page.into_iter().map(|e| (e.next_attempt_at, e.id)));
            after = Some(last);
        }
        assert_eq!(
            visited, everywhere,
            "{c}: limit {limit}: pages across partitions visit each due entry once, in order"
        );
    }
}

async fn active_jobs_and_partitions(store: Arc<dyn Store>) {
    let c = "active_jobs_and_partitions";
    let a = new_job("acme", "a-1", 0, T0);
    let b = new_job("acme", "a-2", 0, T0);
    let g = new_job("globex", "a-3", 0, T0);
    for j in [&a, &b, &g] {
        store
            .create_job(j.clone())
            .await
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let mut active = store
        .active_jobs(&a.job.partition, None, 100)
        .await
        .unwrap_or_default();
    active.sort();
    let mut want = vec![a.job.id.clone(), b.job.id.clone()];
    want.sort();
    assert_eq!(active, want, "{c}: active jobs of a partition");
    // Paging: each page after the last id of the previous one, in the store's order.
    let page = |after: Option<JobId>, limit: usize| {
        let store = Arc::clone(&store);
        let p = a.job.partition.clone();
        async move {
            store
                .active_jobs(&p, after, limit)
                .await
                .unwrap_or_else(|e| panic!("{c}: {e}"))
        }
    };
    let first = page(None, 1).await;
    assert_eq!(first.len(), 1, "{c}: limit");
    let second = page(Some(first[0].clone()), 1).await;
    assert_eq!(second.len(), 1, "{c}: the page after the first");
    let mut both = vec![first[0].clone(), second[0].clone()];
    both.sort();
    assert_eq!(both, want, "{c}: two pages visit both jobs once");
    assert_eq!(
        page(Some(second[0].clone()), 10).await,
        Vec::<JobId>::new(),
        "{c}: nothing after the last"
    );
    let rec = load(store.as_ref(), &a.job.id, c).await;
    let cancelled = rec
        .job
        .on_cancel("done", T0)
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    store
        .commit(Changes {
            job: Some(cancelled),
            ..Changes::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let active = store
        .active_jobs(&a.job.partition, None, 100)
        .await
        .unwrap_or_default();
    assert_eq!(
        active,
        vec![b.job.id.clone()],
        "{c}: a terminal job is not active"
    );
    let mut parts: Vec<String> = store
        .partitions()
        .await
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    parts.sort();
    assert_eq!(parts, ["acme#202403", "globex#202403"], "{c}: partitions");
}

/// Ends `id` (cancelled at `at`) and returns its new job row.
async fn finish(store: &dyn Store, id: &JobId, at: Timestamp, c: &str) -> crate::job::Job {
    let rec = load(store, id, c).await;
    let cancelled = rec
        .job
        .on_cancel("done", at)
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let out = store
        .commit(Changes {
            job: Some(cancelled),
            ..Changes::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    out.job
        .unwrap_or_else(|| panic!("{c}: commit returned no job"))
}

async fn finished_jobs_are_listed_and_purged(store: Arc<dyn Store>, caps: Capabilities) {
    let c = "finished_jobs_are_listed_and_purged";
    if !caps.retention {
        return;
    }
    let (t1, t2) = (T0.plus(Millis(1_000)), T0.plus(Millis(2_000)));
    let a = new_job("acme", "r-1", 0, T0);
    let b = new_job("acme", "r-2", 0, T0);
    let live = new_job("acme", "r-3", 0, T0);
    for j in [&a, &b, &live] {
        store
            .create_job(j.clone())
            .await
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let ended = |by: Timestamp, limit: usize| {
        let store = Arc::clone(&store);
        async move {
            store
                .ended_jobs(by, limit)
                .await
                .unwrap_or_else(|e| panic!("{c}: ended_jobs: {e}"))
        }
    };
    assert_eq!(ended(t2, 10).await, vec![], "{c}: nothing has ended yet");
    // Ended out of creation order: listed by end.
    let a_before = load(store.as_ref(), &a.job.id, c).await.job.revision;
    let b_done = finish(store.as_ref(), &b.job.id, t1, c).await;
    let a_done = finish(store.as_ref(), &a.job.id, t2, c).await;
    let listed = ended(t2, 10).await;
    let ids: Vec<&JobId> = listed.iter().map(|e| &e.job_id).collect();
    assert_eq!(ids, [&b.job.id, &a.job.id], "{c}: earliest end first");
    assert_eq!(
        (listed[0].ended_at, &listed[0].revision),
        (t1, &b_done.revision),
        "{c}: end time and revision as written"
    );
    assert_eq!(ended(t1, 10).await.len(), 1, "{c}: only what ended by then");
    assert_eq!(ended(Timestamp(t1.0 - 1), 10).await, vec![], "{c}: bound");
    assert_eq!(ended(t2, 1).await.len(), 1, "{c}: limit");

    // A stale revision or a running job: a conflict, and nothing deleted.
    let stale = store.purge_job(&a.job.id, &a_before).await;
    assert_eq!(
        stale.map_err(|e| e.kind),
        Err(StoreErrorKind::Conflict),
        "{c}: purge at a stale revision"
    );
    let running = load(store.as_ref(), &live.job.id, c).await;
    let refused = store.purge_job(&live.job.id, &running.job.revision).await;
    assert_eq!(
        refused.map_err(|e| e.kind),
        Err(StoreErrorKind::Conflict),
        "{c}: purge of a running job"
    );
    assert_eq!(
        strip(load(store.as_ref(), &live.job.id, c).await),
        expected(&live),
        "{c}: a refused purge changes nothing"
    );
    load(store.as_ref(), &a.job.id, c).await;

    // A job that runs again is no longer listed.
    let mut again = a_done.clone();
    again.status = JobStatus::InProgress;
    again.updated_at = t2.plus(Millis(1));
    let again = store
        .commit(Changes {
            job: Some(again),
            ..Changes::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"))
        .job
        .unwrap_or_else(|| panic!("{c}: commit returned no job"));
    let ids: Vec<JobId> = ended(T0.plus(Millis(10_000)), 10)
        .await
        .into_iter()
        .map(|e| e.job_id)
        .collect();
    assert_eq!(
        ids.as_slice(),
        std::slice::from_ref(&b.job.id),
        "{c}: a job running again is not listed"
    );
    let refused = store.purge_job(&a.job.id, &again.revision).await;
    assert_eq!(
        refused.map_err(|e| e.kind),
        Err(StoreErrorKind::Conflict),
        "{c}: purge of a job running again"
    );

    // The purge: the job, its steps and entries, its claim and its index rows go.
    store
        .purge_job(&b.job.id, &b_done.revision)
        .await
        .unwrap_or_else(|e| panic!("{c}: purge: {e}"));
    assert_eq!(
        store.load_job(&b.job.id).await.map_err(|e| e.kind),
        Ok(None),
        "{c}: a purged job is gone"
    );
    assert_eq!(
        store
            .purge_job(&b.job.id, &b_done.revision)
            .await
            .map_err(|e| e.kind),
        Err(StoreErrorKind::NotFound),
        "{c}: a second purge finds nothing"
    );
    assert_eq!(
        ended(T0.plus(Millis(10_000)), 10).await,
        vec![],
        "{c}: no longer listed"
    );
    let entries = store
        .outbox(&OutboxQuery {
            status: None,
            partition: Some(b.job.partition.clone()),
            due_by: None,
            after: None,
            limit: 100,
        })
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    assert!(
        entries.iter().all(|e| e.job_id != b.job.id),
        "{c}: the purged job's entries are gone: {entries:?}"
    );
    let mut active = store
        .active_jobs(&live.job.partition, None, 100)
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    active.sort();
    let mut want = vec![a.job.id.clone(), live.job.id.clone()];
    want.sort();
    assert_eq!(active, want, "{c}: other jobs stay");
    // The key is free: the same request makes a new job.
    let later = new_job("acme", "r-2", 0, T0.plus(Millis(20_000)));
    let created = create(store.as_ref(), &later, c).await;
    let rec = load(store.as_ref(), &later.job.id, c).await;
    assert_eq!(created, rec, "{c}: the new job is returned as stored");
    assert_eq!(strip(rec), expected(&later), "{c}: the new job's rows");
}

async fn empty_partitions_retire(store: Arc<dyn Store>, caps: Capabilities) {
    let c = "empty_partitions_retire";
    if !caps.retires_partitions {
        return;
    }
    let a = new_job("acme", "p-1", 0, T0);
    let other = new_job("globex", "p-2", 0, T0);
    for j in [&a, &other] {
        store
            .create_job(j.clone())
            .await
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let p = a.job.partition.clone();
    let retire = |p: Partition| {
        let store = Arc::clone(&store);
        async move {
            store
                .retire_partition(&p)
                .await
                .unwrap_or_else(|e| panic!("{c}: retire_partition: {e}"))
        }
    };
    let listed = |p: Partition| {
        let store = Arc::clone(&store);
        async move {
            store
                .partitions()
                .await
                .unwrap_or_else(|e| panic!("{c}: {e}"))
                .contains(&p)
        }
    };
    assert!(
        !retire(p.clone()).await,
        "{c}: a partition with an active job stays"
    );
    // Finished, but its directive is still PENDING: it stays.
    let done = finish(store.as_ref(), &a.job.id, T0.plus(Millis(1)), c).await;
    assert!(
        !retire(p.clone()).await,
        "{c}: a partition with a PENDING entry stays"
    );
    assert!(listed(p.clone()).await, "{c}: still listed");
    let rec = load(store.as_ref(), &a.job.id, c).await;
    let mut dead = rec.outbox[0].clone();
    dead.status = OutboxStatus::Dead;
    store
        .commit(Changes {
            outbox: vec![dead],
            ..Changes::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    assert!(retire(p.clone()).await, "{c}: an empty partition retires");
    assert!(
        !listed(p.clone()).await,
        "{c}: a retired partition is not listed"
    );
    assert!(
        listed(other.job.partition.clone()).await,
        "{c}: other partitions stay listed"
    );
    // Its rows are still there, and a write to it (a redrive) lists it again.
    let mut again = load(store.as_ref(), &a.job.id, c).await.job;
    assert_eq!(
        again.revision, done.revision,
        "{c}: retiring changes no row"
    );
    again.status = JobStatus::InProgress;
    store
        .commit(Changes {
            job: Some(again),
            ..Changes::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    assert!(listed(p.clone()).await, "{c}: a write lists it again");
    assert_eq!(
        store
            .active_jobs(&p, None, 10)
            .await
            .unwrap_or_else(|e| panic!("{c}: {e}")),
        vec![a.job.id.clone()],
        "{c}: and its active job is found"
    );
}

async fn unknown_rows(store: Arc<dyn Store>) {
    let c = "unknown_rows";
    let ghost = JobId::derive(
        &TenantId::parse("acme").unwrap_or_else(|e| panic!("{e}")),
        "ghost",
    );
    assert_eq!(store.load_job(&ghost).await, Ok(None), "{c}: unknown job");
    let new = new_job("acme", "ghost", 0, T0);
    let mut job = new.job.clone();
    job.revision = Revision::stored("1");
    job.payload = json!({"x": 1}).into();
    let err = store
        .commit(Changes {
            job: Some(job),
            ..Changes::default()
        })
        .await
        .expect_err("updating a job that does not exist must fail");
    assert!(
        matches!(
            err.kind,
            StoreErrorKind::NotFound | StoreErrorKind::Conflict
        ),
        "{c}: {err}"
    );
    assert_eq!(
        store.load_job(&ghost).await,
        Ok(None),
        "{c}: the failed update created a job"
    );
    let empty = store
        .outbox(&OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: Some(Partition::parse("nobody#202401").unwrap_or_else(|e| panic!("{e}"))),
            due_by: None,
            after: None,
            limit: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    assert!(empty.is_empty(), "{c}");
}

/// Checks a [`crate::LeaseStore`]: insert-if-absent, compare-and-swap, listing, members.
pub async fn run_lease_checks(store: Arc<dyn crate::LeaseStore>) {
    use crate::lease::Lease;
    let c = "lease_store";
    let p = Partition::parse("acme#202403").unwrap_or_else(|e| panic!("{e}"));
    let q = Partition::parse("globex#202403").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.lease(&p).await, Ok(None), "{c}: no lease yet");
    let a =
        Lease::acquire(None, &p, "a", Millis::from_secs(30), T0).unwrap_or_else(|e| panic!("{e}"));
    let stored = store
        .put_lease(a.clone())
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    assert!(
        !stored.revision.is_new(),
        "{c}: stored lease has no revision"
    );
    let err = store
        .put_lease(a.clone())
        .await
        .expect_err("second insert must conflict");
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{c}: {err}");
    let loaded = store.lease(&p).await.unwrap_or_else(|e| panic!("{c}: {e}"));
    assert_eq!(loaded.as_ref(), Some(&stored), "{c}: round trip");
    // Two dispatchers race to take over the expired lease: one wins.
    let later = T0.plus(Millis::from_secs(31));
    let b = Lease::acquire(Some(&stored), &p, "b", Millis::from_secs(30), later)
        .unwrap_or_else(|e| panic!("{e}"));
    let d = Lease::acquire(Some(&stored), &p, "d", Millis::from_secs(30), later)
        .unwrap_or_else(|e| panic!("{e}"));
    let won = store
        .put_lease(b)
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let lost = store
        .put_lease(d)
        .await
        .expect_err("the second takeover must conflict");
    assert_eq!(lost.kind, StoreErrorKind::Conflict, "{c}: {lost}");
    assert_eq!((won.epoch, won.owner.as_deref()), (2, Some("b")), "{c}");
    let other =
        Lease::acquire(None, &q, "a", Millis::from_secs(30), T0).unwrap_or_else(|e| panic!("{e}"));
    store
        .put_lease(other)
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let mut all: Vec<String> = store
        .leases()
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"))
        .iter()
        .map(|l| l.partition.to_string())
        .collect();
    all.sort();
    assert_eq!(all, ["acme#202403", "globex#202403"], "{c}: listing");
    store
        .announce("a", T0)
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    store
        .announce("b", later)
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    store
        .announce("a", later)
        .await
        .unwrap_or_else(|e| panic!("{c}: {e}"));
    let mut members = store.members().await.unwrap_or_else(|e| panic!("{c}: {e}"));
    members.sort();
    assert_eq!(
        members,
        vec![("a".to_owned(), later), ("b".to_owned(), later)],
        "{c}: members"
    );
}
