//! The schema and its migrations. `MIGRATIONS[i]` takes a file from version `i` to
//! `i + 1`; the version a file is at lives in the one-row `schema_version` table. A file
//! at a version newer than [`SCHEMA_VERSION`] is refused, never touched.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::OpenError;

/// The newest schema version this binary knows (and writes).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: one table per row kind. Each row is its JSON body beside the columns that
/// are queried, and an integer revision every write compares and bumps. The job row is
/// also the job index (partition, active flag); claims are keyed by tenant + key.
///
/// Job ids are hashes, so keys land at random places in their B-trees: rows with large
/// bodies live in rowid tables (appended in write order) behind small unique indexes on
/// their keys, so a job's write dirties few scattered pages. An outbox id starts with its
/// job id, so a job's entries are a range of the primary key (no index by job).
const V1: &str = "
CREATE TABLE claims (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id TEXT NOT NULL PRIMARY KEY,
    partition TEXT NOT NULL,
    active INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX jobs_by_partition ON jobs (partition, id);
CREATE INDEX jobs_active ON jobs (partition, id) WHERE active = 1;

CREATE TABLE steps (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (job_id, idx)
);

CREATE TABLE outbox (
    id TEXT NOT NULL PRIMARY KEY,
    job_id TEXT NOT NULL,
    partition TEXT NOT NULL,
    status TEXT NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (partition, status, next_attempt_at, id);
CREATE INDEX outbox_by_status ON outbox (status, next_attempt_at, id);
CREATE INDEX outbox_by_partition ON outbox (partition, next_attempt_at, id);

CREATE TABLE leases (
    partition TEXT NOT NULL PRIMARY KEY,
    owner TEXT,
    expires_at INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    rev INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE members (
    member TEXT NOT NULL PRIMARY KEY,
    alive_until INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 2: rows keyed in creation order, so a new job's write dirties few pages.
///
/// In version 1 every index was keyed by the hashed job id: each new job landed at a
/// random leaf in six B-trees (claim, job id, job by partition, active job, step, outbox
/// id), so a group commit of 20 jobs wrote ~130 scattered pages (~27 KiB of log per job).
/// Now a job has a creation sequence (`jobs.seq`, its rowid); its steps and outbox entries
/// are keyed by `(job_seq, …)` and the active-job index by `(partition, seq)`, all appended
/// in write order. Only the claim and the job id stay random: two scattered pages per job.
/// The job-by-partition index, which only `partitions()` read (by scanning it whole), is
/// replaced by a `partitions` table of one row per partition.
///
/// Steps and entries are copied with their job's sequence; a row whose job does not
/// exist could not be read in version 1 (and intake writes them together), so it is not
/// carried over.
const V2: &str = "
CREATE TABLE jobs_v2 (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    partition TEXT NOT NULL,
    active INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    body TEXT NOT NULL
);
INSERT INTO jobs_v2 (id, partition, active, rev, body)
    SELECT id, partition, active, rev, body FROM jobs ORDER BY rowid;

CREATE TABLE steps_v2 (
    job_seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (job_seq, idx)
);
INSERT INTO steps_v2 (job_seq, idx, rev, body)
    SELECT j.seq, s.idx, s.rev, s.body FROM steps s JOIN jobs_v2 j ON j.id = s.job_id
    ORDER BY j.seq, s.idx;

CREATE TABLE outbox_v2 (
    job_seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    partition TEXT NOT NULL,
    status TEXT NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (job_seq, id)
);
INSERT INTO outbox_v2 (job_seq, id, partition, status, next_attempt_at, rev, body)
    SELECT j.seq, o.id, o.partition, o.status, o.next_attempt_at, o.rev, o.body
    FROM outbox o JOIN jobs_v2 j ON j.id = o.job_id
    ORDER BY j.seq, o.id;

CREATE TABLE partitions (partition TEXT NOT NULL PRIMARY KEY) WITHOUT ROWID;
INSERT INTO partitions (partition) SELECT DISTINCT partition FROM jobs_v2;

DROP TABLE jobs;
DROP TABLE steps;
DROP TABLE outbox;
ALTER TABLE jobs_v2 RENAME TO jobs;
ALTER TABLE steps_v2 RENAME TO steps;
ALTER TABLE outbox_v2 RENAME TO outbox;

CREATE INDEX jobs_active ON jobs (partition, seq) WHERE active = 1;
CREATE INDEX outbox_due ON outbox (partition, status, next_attempt_at, id);
CREATE INDEX outbox_by_status ON outbox (status, next_attempt_at, id);
CREATE INDEX outbox_by_partition ON outbox (partition, next_attempt_at, id);
";

/// Version 3: when a finished job ended (`ended_at`, the `updatedAt` of its terminal row;
/// null while it runs), indexed for the purge, which reads the oldest ends first and never
/// scans every job.
const V3: &str = "
ALTER TABLE jobs ADD COLUMN ended_at INTEGER;
UPDATE jobs SET ended_at = json_extract(body, '$.updatedAt') WHERE active = 0;
CREATE INDEX jobs_ended ON jobs (ended_at, seq) WHERE ended_at IS NOT NULL;
";

/// Every migration, oldest first. Append only: a released entry never changes.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// Brings the file at `path` (open on `conn`) to [`SCHEMA_VERSION`], in one transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let db = |what: &str, source| OpenError::Database {
        path: path.to_owned(),
        what: what.to_owned(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db("starting the migration", e))?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(|e| db("creating schema_version", e))?;
    let found: Option<i64> = tx
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(|e| db("reading schema_version", e))?
        .flatten();
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(OpenError::Invalid {
            path: path.to_owned(),
            message: format!("schema_version holds {found}; expected 0 to {SCHEMA_VERSION}"),
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)
            .map_err(|e| db(&format!("migrating to schema version {}", i + 1), e))?;
    }
    tx.execute("DELETE FROM schema_version", [])
        .map_err(|e| db("recording the schema version", e))?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [SCHEMA_VERSION],
    )
    .map_err(|e| db("recording the schema version", e))?;
    tx.commit().map_err(|e| db("committing the migration", e))?;
    tracing::info!(
        path = %path.display(),
        from = found,
        to = SCHEMA_VERSION,
        "embedded store schema migrated"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use lucius_core::testkit::new_job;
    use lucius_core::{NewJob, OutboxQuery, OutboxStatus, Store, Timestamp};
    use rusqlite::params;

    use super::{MIGRATIONS, SCHEMA_VERSION};
    use crate::rows::encode;
    use crate::{EmbeddedStore, DATABASE_FILE};

    /// Writes `new`'s rows as version 1 laid them out.
    fn write_v1(conn: &rusqlite::Connection, new: &NewJob, steps: bool) {
        let c = &new.claim;
        conn.execute(
            "INSERT INTO claims (tenant, key, job_id, body) VALUES (?1, ?2, ?3, ?4)",
            params![
                c.tenant_id.as_str(),
                &*c.key,
                c.job_id.as_str(),
                encode(c, String::new).unwrap()
            ],
        )
        .unwrap();
        let j = &new.job;
        conn.execute(
            "INSERT INTO jobs (id, partition, active, rev, body) VALUES (?1, ?2, ?3, 1, ?4)",
            params![
                j.id.as_str(),
                j.partition.to_string(),
                !j.status.is_terminal(),
                encode(j, String::new).unwrap()
            ],
        )
        .unwrap();
        for s in new.steps.iter().filter(|_| steps) {
            conn.execute(
                "INSERT INTO steps (job_id, idx, rev, body) VALUES (?1, ?2, 1, ?3)",
                params![s.job_id.as_str(), s.index, encode(s, String::new).unwrap()],
            )
            .unwrap();
        }
        let e = &new.outbox;
        conn.execute(
            "INSERT INTO outbox (id, job_id, partition, status, next_attempt_at, rev, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
            params![
                e.id.as_str(),
                e.job_id.as_str(),
                e.partition.to_string(),
                e.status.as_str(),
                e.next_attempt_at.0,
                encode(e, String::new).unwrap()
            ],
        )
        .unwrap();
    }

    /// A file written at version 1 opens at the current version with every row readable,
    /// in the same revisions, and keeps taking revision-guarded writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_1_file_is_migrated_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let a = new_job("acme", "one", 0, Timestamp(1_700_000_000_000));
        let b = new_job("globex", "two", 1, Timestamp(1_800_000_000_000));
        let mut done = new_job("acme", "three", 0, Timestamp(1_700_000_000_000));
        let ended = Timestamp(1_700_000_005_000);
        done.job = done.job.on_cancel("done", ended).unwrap();
        {
            std::fs::create_dir_all(dir.path()).unwrap();
            let conn = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL); \
                 INSERT INTO schema_version (version) VALUES (1);",
            )
            .unwrap();
            write_v1(&conn, &a, true);
            write_v1(&conn, &b, true);
            write_v1(&conn, &done, true);
            // A step whose job is missing: no read could reach it.
            conn.execute(
                "INSERT INTO steps (job_id, idx, rev, body) VALUES ('nope', 0, 1, '{}')",
                [],
            )
            .unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        {
            let conn = rusqlite::Connection::open(store.database_path()).unwrap();
            let v: i64 = conn
                .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
        }
        for new in [&a, &b] {
            let rec = store
                .load_job(&new.job.id)
                .await
                .unwrap()
                .expect("migrated");
            assert_eq!(rec.job.payload, new.job.payload);
            assert_eq!(rec.job.revision.as_counter(), Some(1));
            assert_eq!(rec.steps.len(), new.steps.len());
            for (got, want) in rec.steps.iter().zip(&new.steps) {
                assert_eq!((got.index, got.status), (want.index, want.status));
            }
            assert_eq!(rec.outbox.len(), 1);
            assert_eq!(rec.outbox[0].id, new.outbox.id);
        }
        // Version 3 dates the finished job from its row, for the purge.
        let listed = store.ended_jobs(Timestamp(i64::MAX), 10).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            (&listed[0].job_id, listed[0].ended_at),
            (&done.job.id, ended)
        );
        let mut parts = store.partitions().await.unwrap();
        parts.sort();
        let mut want = vec![a.job.partition.clone(), b.job.partition.clone()];
        want.sort();
        assert_eq!(parts, want);
        let active = store.active_jobs(&a.job.partition, None, 10).await.unwrap();
        assert_eq!(active, vec![a.job.id.clone()]);
        let pending = store
            .outbox(&OutboxQuery {
                status: Some(OutboxStatus::Pending),
                partition: None,
                due_by: None,
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(pending.len(), 3);
        // The same key is still claimed, and a guarded write lands on the migrated rows.
        match store.create_job(a.clone()).await.unwrap() {
            lucius_core::CreateOutcome::Existing(claim) => assert_eq!(claim.job_id, a.job.id),
            other => panic!("the claim survives the migration: {other:?}"),
        }
        let rec = store.load_job(&a.job.id).await.unwrap().unwrap();
        let mut step = rec.steps[1].clone();
        step.updated_at = Timestamp(1_700_000_000_001);
        let changes = lucius_core::Changes {
            steps: vec![step.clone()],
            ..Default::default()
        };
        let out = store.commit(changes.clone()).await.unwrap();
        assert_eq!(out.steps[0].revision.as_counter(), Some(2));
        let stale = store.commit(changes).await.unwrap_err();
        assert_eq!(stale.kind, lucius_core::StoreErrorKind::Conflict, "{stale}");
    }
}
