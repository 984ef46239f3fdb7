//! Opening a data directory: create it, take its lock, and open and configure SQLite
//! connections (WAL, `synchronous=FULL`, a busy timeout).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fs2::FileExt;
use rusqlite::{Connection, OpenFlags};

use crate::error::OpenError;

/// How long a connection waits for a lock SQLite holds internally (a checkpoint, say)
/// before it reports busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page size of a new database file. A new job still lands on two pages at random
/// places (its claim's and its id's B-tree leaves) and every page written goes to the log
/// whole: at 2 KiB a job writes ~9.5 KiB of log, against ~13 KiB at SQLite's default of
/// 4 KiB (and no less at 1 KiB, where bodies overflow onto extra pages). See
/// docs/benchmarks.md.
pub(crate) const PAGE_SIZE: u32 = 2048;

/// Log pages after which a commit checkpoints the log into the database file (SQLite's
/// default is 1,000, 2 MiB here). A checkpoint copies each page the log holds once,
/// however often it was rewritten, and syncs the database file: over 32 MiB of log, the
/// pages every batch rewrites (the ends of the append-ordered trees, the upper levels)
/// and the random leaves hit more than once are copied once instead of ~16 times, and the
/// writer stops for a sync 16 times less often. Durable intake measured ~1.5× faster
/// (`examples/embedded_intake.rs`, docs/benchmarks.md). The price: a log of up to ~32 MiB
/// beside the database (reused, not regrown, after each checkpoint) and as much to
/// replay when the file is opened after a crash.
pub(crate) const CHECKPOINT_PAGES: u32 = 16_384;

/// The size the log is cut back to after a checkpoint if it grew past it (a blocking
/// checkpoint after a burst, say).
const LOG_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// The directory's lock: held (an exclusive `flock`) for as long as this value lives.
#[derive(Debug)]
pub(crate) struct DirLock {
    // Closing the file releases the lock.
    _file: File,
}

/// Creates `dir` if absent and takes its exclusive lock in `dir/<lock_name>`.
pub(crate) fn lock_dir(dir: &Path, lock_name: &str) -> Result<DirLock, OpenError> {
    let io = |what, source| OpenError::Directory {
        dir: dir.to_owned(),
        what,
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create it", e))?;
    let path = dir.join(lock_name);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io("cannot open its lock file for writing (is it writable?)", e))?;
    if let Err(e) = file.try_lock_exclusive() {
        if e.kind() == fs2::lock_contended_error().kind()
            || e.kind() == std::io::ErrorKind::WouldBlock
        {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(OpenError::Locked {
                dir: dir.to_owned(),
                holder: (!holder.is_empty()).then(|| holder.to_owned()),
            });
        }
        return Err(io("cannot lock it", e));
    }
    // Who holds it, for the error another process will print.
    let stamp = format!("pid {}", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(stamp.as_bytes()))
        .map_err(|e| io("cannot write its lock file (is it writable?)", e))?;
    Ok(DirLock { _file: file })
}

/// Opens the database file, creating it if absent, configured for durability.
pub(crate) fn connection(path: &Path) -> Result<Connection, OpenError> {
    let db = |what: &str, source| OpenError::Database {
        path: path.to_owned(),
        what: what.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db("cannot open", e))?;
    // Before WAL mode is set: a new file takes the page size, an existing one keeps its
    // own (the pragma is then a no-op).
    conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}"))
        .map_err(|e| db("setting the page size", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db("setting the busy timeout", e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| db("switching to WAL", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Invalid {
            path: path.to_owned(),
            message: format!("expected journal mode wal, SQLite kept {mode:?}"),
        });
    }
    // FULL: in WAL mode, every commit syncs the log, so an answered write survives a
    // power cut, not only a crash of the process.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;")
        .map_err(|e| db("setting synchronous=FULL", e))?;
    // Each request runs in a savepoint, whose journal of changed pages is a temporary
    // file by default: keep it in memory. A page cache of 64 MiB (a connection allocates
    // it as it fills) keeps a batch's pages from spilling to the log before its commit.
    conn.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536;")
        .map_err(|e| db("sizing the caches", e))?;
    // Both answer with the value set.
    for pragma in [
        format!("PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}"),
        format!("PRAGMA journal_size_limit = {LOG_SIZE_LIMIT}"),
    ] {
        conn.query_row(&pragma, [], |r| r.get::<_, i64>(0))
            .map_err(|e| db("sizing the log", e))?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The database file in `dir`.
pub(crate) fn database_path(dir: &Path, file: &str) -> PathBuf {
    dir.join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_durable_and_checkpoints_rarely() {
        let dir = tempfile::tempdir().unwrap();
        let conn = connection(&dir.path().join("db")).unwrap();
        let pragma = |name: &str| -> String {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(n) => n.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        // 2 = FULL: every commit syncs the log.
        assert_eq!(pragma("synchronous"), "2");
        assert_eq!(pragma("wal_autocheckpoint"), CHECKPOINT_PAGES.to_string());
        assert_eq!(pragma("journal_size_limit"), LOG_SIZE_LIMIT.to_string());
        assert_eq!(pragma("page_size"), PAGE_SIZE.to_string());
    }
}
