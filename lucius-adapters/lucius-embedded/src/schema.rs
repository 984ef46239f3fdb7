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

/// Every migration, oldest first. Append only: a released entry never changes.
const MIGRATIONS: &[&str] = &[V1];

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
