//! The embedded store as a node uses it: reopened after a stop, refused where it must be
//! (a directory in use, a newer file, a path that is not a directory), and under many
//! concurrent writers.

use std::sync::Arc;

use lucius_core::testkit::new_job;
use lucius_core::{
    Changes, CreateOutcome, JobStatus, Millis, NewJob, OutboxQuery, OutboxStatus, Revision, Store,
    StoreErrorKind, Timestamp,
};
use lucius_embedded::{EmbeddedStore, OpenError, DATABASE_FILE, SCHEMA_VERSION};

/// 2024-03-05T00:00:00Z.
const T0: Timestamp = Timestamp(1_709_596_800_000);

fn jobs(n: usize, prefix: &str) -> Vec<NewJob> {
    (0..n)
        .map(|i| {
            new_job(
                "acme",
                &format!("{prefix}-{i}"),
                0,
                T0.plus(Millis(i as u64)),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_keeps_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let all = jobs(25, "keep");
    let started = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for j in &all {
            assert!(matches!(
                store.create_job(j.clone()).await,
                Ok(CreateOutcome::Created(_))
            ));
        }
        // One job moves on before the stop.
        let rec = store.load_job(&all[0].job.id).await.unwrap().unwrap();
        let started = rec.job.on_start(T0.plus(Millis(100))).unwrap();
        store
            .commit(Changes {
                job: Some(started),
                ..Changes::default()
            })
            .await
            .unwrap();
        store.load_job(&all[0].job.id).await.unwrap().unwrap()
    };
    let store = EmbeddedStore::open(dir.path()).expect("reopens once the first is dropped");
    for j in &all {
        let rec = store
            .load_job(&j.job.id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("job {} was lost", j.job.id));
        assert_eq!(rec.steps.len(), j.steps.len());
        assert_eq!(rec.outbox.len(), 1);
    }
    let first = store.load_job(&all[0].job.id).await.unwrap().unwrap();
    assert_eq!(
        first, started,
        "the reopened row is the one written, revision and all"
    );
    assert_eq!(first.job.status, JobStatus::InProgress);
    // The revisions read back still guard writes, and a replay still finds its claim.
    let mut stale = first.job.on_cancel("late", T0).unwrap();
    stale.revision = Revision::counter(1);
    let err = store
        .commit(Changes {
            job: Some(stale),
            ..Changes::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{err}");
    assert!(matches!(
        store.create_job(all[3].clone()).await,
        Ok(CreateOutcome::Existing(_))
    ));
    let pending = store
        .outbox(&OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: Some(all[0].job.partition.clone()),
            due_by: None,
            after: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedStore::open(dir.path()).unwrap();
    let err = EmbeddedStore::open(dir.path()).expect_err("the directory is in use");
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains("locked"),
        "the error names the directory and says why: {text}"
    );
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "the error names the holder: {text}"
    );
    // A clone shares the lock; the last drop releases it.
    let clone = first.clone();
    drop(first);
    assert!(
        EmbeddedStore::open(dir.path()).is_err(),
        "a clone still holds it"
    );
    drop(clone);
    EmbeddedStore::open(dir.path()).expect("free once every handle is dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_from_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path()).unwrap());
    let path = dir.path().join(DATABASE_FILE);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE schema_version SET version = ?1",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    }
    let err = EmbeddedStore::open(dir.path()).expect_err("a newer schema is refused");
    match &err {
        OpenError::NewerSchema {
            found, supported, ..
        } => assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
            && text.contains(&format!("up to version {SCHEMA_VERSION}"))
            && text.contains(&path.display().to_string()),
        "{text}"
    );
    // Refused without a change: the file still says the newer version.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_a_directory_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = EmbeddedStore::open(&file).expect_err("a file is not a data directory");
    assert!(matches!(err, OpenError::Directory { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_and_file_are_created_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b");
    let store = EmbeddedStore::open(&nested).unwrap();
    assert_eq!(store.dir(), nested.as_path());
    assert!(store.database_path().is_file());
    let conn = rusqlite::Connection::open(store.database_path()).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let v: i64 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page, 2048, "a new file takes the store's page size");
}

/// Many tasks write at once: every write lands, in fewer transactions than requests, and
/// every stale one among them is refused on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_all_land_and_conflicts_are_still_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let all = jobs(200, "many");
    let creates = all.iter().map(|j| {
        let store = Arc::clone(&store);
        let j = j.clone();
        tokio::spawn(async move { store.create_job(j).await })
    });
    for c in futures::future::join_all(creates).await {
        assert!(matches!(c.unwrap(), Ok(CreateOutcome::Created(_))));
    }
    let stats = store.write_stats();
    assert_eq!(stats.requests, all.len() as u64);
    let mut records = Vec::new();
    for j in &all {
        records.push(store.load_job(&j.job.id).await.unwrap().unwrap());
    }
    // Each job gets two concurrent writers with the same revision: exactly one wins.
    let now = T0.plus(Millis(1_000));
    let commits = records.iter().flat_map(|rec| {
        ["start", "cancel"].map(|what| {
            let job = match what {
                "start" => rec.job.on_start(now).unwrap(),
                _ => rec.job.on_cancel("changed my mind", now).unwrap(),
            };
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .commit(Changes {
                        job: Some(job),
                        ..Changes::default()
                    })
                    .await
            })
        })
    });
    let answers = futures::future::join_all(commits).await;
    for (rec, pair) in records.iter().zip(answers.chunks(2)) {
        let kinds: Vec<_> = pair
            .iter()
            .map(|a| a.as_ref().unwrap().as_ref().map(|_| ()).map_err(|e| e.kind))
            .collect();
        let wins = kinds.iter().filter(|k| k.is_ok()).count();
        assert_eq!(wins, 1, "job {}: {kinds:?}", rec.job.id);
        assert!(kinds.contains(&Err(StoreErrorKind::Conflict)), "{kinds:?}");
        let winner = pair
            .iter()
            .find_map(|a| a.as_ref().unwrap().as_ref().ok())
            .and_then(|c| c.job.clone())
            .unwrap();
        let stored = store.load_job(&rec.job.id).await.unwrap().unwrap();
        assert_eq!(stored.job, winner, "the stored job is the winner's");
    }
    let after = store.write_stats();
    assert_eq!(after.requests, (all.len() * 3) as u64);
    assert!(
        after.batches < after.requests,
        "concurrent writers should share transactions: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_does_not_parse_is_a_permanent_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let new = new_job("acme", "garbled", 0, T0);
    store.create_job(new.clone()).await.unwrap();
    {
        // Another connection to the same file (the lock is only the directory's).
        let conn = rusqlite::Connection::open(store.database_path()).unwrap();
        conn.execute(
            "UPDATE steps SET body = '{\"not\": \"a step\"}' \
             WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?1) AND idx = 1",
            [new.job.id.as_str()],
        )
        .unwrap();
    }
    let err = store.load_job(&new.job.id).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Permanent, "{err}");
    assert!(
        err.message.contains(&format!("job {}", new.job.id))
            && err.message.contains("not a valid row"),
        "{err}"
    );
}
