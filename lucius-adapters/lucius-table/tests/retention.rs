//! Retention on Table Storage, both modes: a purge interrupted after any of its writes is
//! finished by the next round and leaves no row of the job; a job that runs again is not
//! purged; what a purge costs in requests.

mod support;

use azure_data_tables::clients::TableServiceClientBuilder;
use futures::StreamExt;
use lucius_core::ids::JobId;
use lucius_core::testkit::new_job;
use lucius_core::{
    Changes, CreateOutcome, JobStatus, Millis, NewJob, PublishRetryPolicy, Store, StoreErrorKind,
    Timestamp,
};
use lucius_table::{Mode, RequestCounts, TableStore};
use serde_json::Value;

const T0: Timestamp = Timestamp(1_709_251_200_000); // 2024-03-01

/// Creates `key`'s job and fails it at `at`: its first directive `DEAD` (so ledger mode
/// keeps an index row for it), the job `FAILED`.
async fn finished(store: &TableStore, key: &str, at: Timestamp) -> NewJob {
    let new = new_job("acme", key, 0, T0);
    store.create_job(new.clone()).await.unwrap();
    let rec = store.load_job(&new.job.id).await.unwrap().unwrap();
    let policy = PublishRetryPolicy {
        delay: Millis::from_secs(30),
        max_attempts: 3,
    };
    let dead = rec.outbox[0]
        .on_publish_failed("denied", true, policy, at)
        .unwrap();
    let failed = rec.job.on_failed("denied", at).unwrap();
    store
        .commit(Changes {
            outbox: vec![dead],
            job: Some(failed),
            ..Changes::default()
        })
        .await
        .unwrap();
    new
}

/// One purge round as `Engine::purge_ended` runs it: list, purge each, skip what changed.
/// Returns (listed, purged).
async fn purge_round(store: &TableStore, ended_by: Timestamp) -> (usize, usize) {
    let listed = store.ended_jobs(ended_by, 100).await.unwrap();
    let mut purged = 0;
    for e in &listed {
        match store.purge_job(&e.job_id, &e.revision).await {
            Ok(()) => purged += 1,
            Err(err)
                if matches!(
                    err.kind,
                    StoreErrorKind::Conflict | StoreErrorKind::NotFound
                ) => {}
            Err(err) => panic!("purge of {}: {err}", e.job_id),
        }
    }
    (listed.len(), purged)
}

/// Every row of the store's tables that names `id` (in a key or any property), read
/// directly from Azurite; `None` against another service.
async fn raw_rows_naming(store: &TableStore, id: &JobId) -> Option<Vec<String>> {
    if support::connection() != "UseDevelopmentStorage=true" {
        eprintln!("not Azurite: raw row check skipped (the store-level checks still run)");
        return None;
    }
    let service = TableServiceClientBuilder::emulator()
        .retry(azure_core::RetryOptions::none())
        .build();
    let mut found = Vec::new();
    for table in store.config().tables() {
        let mut pages = service.table_client(table).query().into_stream::<Value>();
        while let Some(page) = pages.next().await {
            for row in page.unwrap().entities {
                let s = row.to_string();
                if s.contains(id.as_str()) {
                    found.push(format!("{table}: {s}"));
                }
            }
        }
    }
    Some(found)
}

async fn assert_no_row_of(store: &TableStore, id: &JobId, what: &str) {
    assert_eq!(store.load_job(id).await.unwrap(), None, "{what}: job gone");
    if let Some(rows) = raw_rows_naming(store, id).await {
        assert!(rows.is_empty(), "{what}: rows left: {rows:#?}");
    }
}

async fn a_purge_interrupted_anywhere_is_finished_by_the_next_round(mode: Mode) {
    let store = support::store(mode).await;
    let end = T0.plus(Millis(1_000));
    let keep = finished(&store, "keep", T0.plus(Millis(50_000))).await;
    // Table mode writes 7 times per purge (freeze, steps, entries, index row, claim, job
    // row, ended row); ledger mode 3 here (batch, the DEAD entry's index row, ended row).
    let writes = match mode {
        Mode::Table => 7,
        _ => 3,
    };
    for n in 0..writes {
        let what = format!("{mode:?}: crash after {n} writes");
        let job = finished(&store, &format!("crash-{n}"), end).await;
        let listed = store.ended_jobs(end, 100).await.unwrap();
        let target = listed
            .iter()
            .find(|e| e.job_id == job.job.id)
            .unwrap_or_else(|| panic!("{what}: listed"));
        store.crash_after_writes(Some(n));
        let crashed = store.purge_job(&job.job.id, &target.revision).await;
        store.crash_after_writes(None);
        let e = crashed.expect_err(&what);
        assert_eq!(e.kind, StoreErrorKind::Transient, "{what}: {e}");
        if n == 0 {
            // Nothing was written: the job is whole and still listed at its revision.
            let rec = store.load_job(&job.job.id).await.unwrap().unwrap();
            assert_eq!(rec.job.revision, target.revision, "{what}");
            assert_eq!(
                (rec.steps.len(), rec.outbox.len()),
                (job.steps.len(), 1),
                "{what}"
            );
        }
        // A fresh round (a new process) finishes it; a second round finds nothing more.
        let fresh = support::connect_with(store.config().clone()).await;
        let (listed, _) = purge_round(&fresh, end).await;
        assert!(listed <= 1, "{what}: only this job had ended by then");
        purge_round(&fresh, end).await;
        assert_no_row_of(&store, &job.job.id, &what).await;
        assert_eq!(store.ended_jobs(end, 100).await.unwrap(), vec![], "{what}");
    }
    // The job that ended later is untouched.
    let rec = store.load_job(&keep.job.id).await.unwrap().unwrap();
    assert_eq!(rec.job.status, JobStatus::Failed);
    assert_eq!((rec.steps.len(), rec.outbox.len()), (keep.steps.len(), 1));
    assert_eq!(
        store
            .ended_jobs(T0.plus(Millis(50_000)), 100)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_mode_finishes_an_interrupted_purge() {
    a_purge_interrupted_anywhere_is_finished_by_the_next_round(Mode::Table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_mode_finishes_an_interrupted_purge() {
    a_purge_interrupted_anywhere_is_finished_by_the_next_round(Mode::Ledger).await;
}

/// Table mode: a purge stopped after the claim went (writes 1–8 landed: the freeze, the
/// failing commit's deferred index writes, the live, queue and dead rows, the steps, the
/// entry, the claim) frees the key; an
/// intake of it replaces the frozen job row, and the next round leaves the new job alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_while_its_old_job_is_half_purged_makes_a_new_job() {
    let store = support::store(Mode::Table).await;
    let end = T0.plus(Millis(1_000));
    let old = finished(&store, "reused", end).await;
    let listed = store.ended_jobs(end, 100).await.unwrap();
    store.crash_after_writes(Some(8));
    let e = store
        .purge_job(&old.job.id, &listed[0].revision)
        .await
        .unwrap_err();
    store.crash_after_writes(None);
    assert_eq!(e.kind, StoreErrorKind::Transient, "{e}");
    let again = new_job("acme", "reused", 0, T0.plus(Millis(90_000)));
    assert_eq!(again.job.id, old.job.id, "ids derive from the key");
    let created = match store.create_job(again.clone()).await {
        Ok(CreateOutcome::Created(rec)) => *rec,
        other => panic!("the reused key creates a new job, gave {other:?}"),
    };
    let rec = store.load_job(&again.job.id).await.unwrap().unwrap();
    assert_eq!(created, rec, "the new job is returned as stored");
    assert_eq!(rec.job.status, JobStatus::Accepted);
    assert_eq!(
        rec.job.created_at, again.job.created_at,
        "the new job, not the old"
    );
    assert_eq!((rec.steps.len(), rec.outbox.len()), (again.steps.len(), 1));
    // The old job's ended row is stale now: dropped, and the new job stays whole.
    assert_eq!(purge_round(&store, end).await, (0, 0));
    let after = store.load_job(&again.job.id).await.unwrap().unwrap();
    assert_eq!(after, rec);
    assert_eq!(
        store
            .active_jobs(&again.job.partition, None, 10)
            .await
            .unwrap(),
        vec![again.job.id.clone()]
    );
}

async fn a_job_that_runs_again_is_not_purged(mode: Mode) {
    let store = support::store(mode).await;
    let end = T0.plus(Millis(1_000));
    let job = finished(&store, "redriven", end).await;
    let listed = store.ended_jobs(end, 100).await.unwrap();
    assert_eq!(listed.len(), 1, "{mode:?}");
    // Redriven after the purge listed it.
    let rec = store.load_job(&job.job.id).await.unwrap().unwrap();
    let mut running = rec.job.clone();
    running.status = JobStatus::InProgress;
    running.updated_at = end.plus(Millis(1));
    store
        .commit(Changes {
            job: Some(running),
            ..Changes::default()
        })
        .await
        .unwrap();
    let e = store
        .purge_job(&job.job.id, &listed[0].revision)
        .await
        .unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Conflict, "{mode:?}: {e}");
    // Nor is it listed again, at any horizon; every row of it stays.
    assert_eq!(purge_round(&store, end.plus(Millis(60_000))).await, (0, 0));
    let now = store.load_job(&job.job.id).await.unwrap().unwrap();
    assert_eq!(now.job.status, JobStatus::InProgress, "{mode:?}");
    assert_eq!(
        (now.steps.len(), now.outbox.len()),
        (job.steps.len(), 1),
        "{mode:?}"
    );
    assert_eq!(
        store
            .active_jobs(&job.job.partition, None, 10)
            .await
            .unwrap(),
        vec![job.job.id.clone()],
        "{mode:?}: live again for the sweepers"
    );
    // Its claim still holds the key.
    assert!(matches!(
        store.create_job(job.clone()).await,
        Ok(CreateOutcome::Existing(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_mode_does_not_purge_a_job_that_runs_again() {
    a_job_that_runs_again_is_not_purged(Mode::Table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_mode_does_not_purge_a_job_that_runs_again() {
    a_job_that_runs_again_is_not_purged(Mode::Ledger).await;
}

/// Requests of one purge round over `n` finished jobs, and of finishing them.
async fn purge_costs(mode: Mode, n: usize) -> (RequestCounts, RequestCounts) {
    let store = support::store(mode).await;
    let end = T0.plus(Millis(1_000));
    let mut ids = Vec::new();
    let mut finishing = RequestCounts::default();
    for i in 0..n {
        let new = new_job("acme", &format!("cost-{i}"), 0, T0);
        store.create_job(new.clone()).await.unwrap();
        let rec = store.load_job(&new.job.id).await.unwrap().unwrap();
        let failed = rec.job.on_failed("denied", end).unwrap();
        let before = store.request_counts();
        store
            .commit(Changes {
                job: Some(failed),
                ..Changes::default()
            })
            .await
            .unwrap();
        let c = store.request_counts().since(&before);
        finishing = RequestCounts {
            upsert: finishing.upsert + c.upsert,
            update: finishing.update + c.update,
            batch: finishing.batch + c.batch,
            delete: finishing.delete + c.delete,
            ..finishing
        };
        ids.push(new.job.id);
    }
    let before = store.request_counts();
    assert_eq!(purge_round(&store, end).await, (n, n));
    let purging = store.request_counts().since(&before);
    for id in &ids {
        assert_no_row_of(&store, id, &format!("{mode:?}")).await;
    }
    (purging, finishing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_costs_of_a_purge() {
    let n = 5u64;
    let (purge, finish) = purge_costs(Mode::Table, 5).await;
    eprintln!("table: purge of {n}: {purge:?}; finishing them: {finish:?}");
    // Listing: 1 query + 1 get per job. Each purge: get, freeze (update), steps and
    // entries (2 queries), its index rows (the live row and the queue row of its entry,
    // never published: 2 deletes), the steps (1 batch) and the entry (1 delete), claim get
    // + delete, job row delete, ended row delete.
    assert_eq!(
        (
            purge.query,
            purge.get,
            purge.update,
            purge.delete,
            purge.batch
        ),
        (1 + 2 * n, 2 * n + n, n, 6 * n, n),
        "table: {purge:?}"
    );
    assert_eq!(purge.total(), 1 + 13 * n, "table: {purge:?}");
    // Ending a job: its ended row (1 upsert), the job row, its live row (1 delete).
    assert_eq!(
        (finish.upsert, finish.update, finish.delete, finish.batch),
        (n, n, n, 0),
        "table: {finish:?}"
    );

    let (purge, finish) = purge_costs(Mode::Ledger, 5).await;
    eprintln!("ledger: purge of {n}: {purge:?}; finishing them: {finish:?}");
    // Listing: 1 query + 1 get per job. Each purge: the partition and its index rows
    // (2 queries), one batch (job, claim, steps, entry), the index row of the entry
    // (never published: PENDING) and the ended row (2 deletes).
    assert_eq!(
        (purge.query, purge.get, purge.batch, purge.update),
        (1 + 2 * n, n, n, 0),
        "ledger: {purge:?}"
    );
    assert_eq!(purge.delete, 2 * n, "ledger: {purge:?}");
    assert_eq!(purge.total(), 1 + 6 * n, "ledger: {purge:?}");
    // Ending a job: its ended row (1 upsert), the batch, the JOB_ index row delete.
    assert_eq!(
        (finish.upsert, finish.batch, finish.delete),
        (n, n, n),
        "ledger: {finish:?}"
    );
}
