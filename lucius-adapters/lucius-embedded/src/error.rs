//! Errors: [`OpenError`] for opening a data directory, and the mapping of SQLite and
//! JSON failures onto the core's [`StoreError`] kinds.

use std::path::PathBuf;

use lucius_core::StoreError;
use rusqlite::ErrorCode;

/// Why [`crate::EmbeddedStore::open`] failed. Each message names the directory or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory cannot be created, or is not writable.
    #[error("data directory {dir}: {what}: {source}")]
    Directory {
        /// The data directory.
        dir: PathBuf,
        /// What was attempted.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another process (or another store in this one) has the directory open.
    #[error(
        "data directory {dir} is locked by another process{}: one node per data directory; \
         stop it or choose another directory",
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// What the holder wrote in the lock file (its process id), if readable.
        holder: Option<String>,
    },
    /// The file was written by a newer Lucius whose schema this binary does not know.
    #[error(
        "database {path} has schema version {found}; this binary supports up to version \
         {supported}: run a newer Lucius on it (downgrades are not supported)"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The version the file records.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// SQLite could not open, configure or migrate the file.
    #[error("database {path}: {what}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What was attempted.
        what: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file is not in the state a Lucius database should be in.
    #[error("database {path}: {message}")]
    Invalid {
        /// The database file.
        path: PathBuf,
        /// What was expected and what was found.
        message: String,
    },
}

/// A SQLite failure while doing `what`, as the engine should treat it: busy, locked, I/O
/// and full disks pass (`Transient`); corruption and everything else do not (`Permanent`).
pub(crate) fn sqlite(what: impl std::fmt::Display, e: rusqlite::Error) -> StoreError {
    let message = format!("embedded store: {what}: {e}");
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::OutOfMemory
            | ErrorCode::CannotOpen,
        ) => StoreError::transient(message),
        Some(ErrorCode::TooBig) => StoreError::too_large(message),
        _ => StoreError::permanent(message),
    }
}

/// A stored body that does not parse: corrupt or foreign data.
pub(crate) fn bad_row(what: impl std::fmt::Display, e: serde_json::Error) -> StoreError {
    StoreError::permanent(format!(
        "embedded store: {what} holds data that is not a valid row: {e}"
    ))
}

/// A row that cannot be encoded (not expected for the core's types).
pub(crate) fn unencodable(what: impl std::fmt::Display, e: serde_json::Error) -> StoreError {
    StoreError::permanent(format!("embedded store: cannot encode {what}: {e}"))
}

/// The writer thread is gone (the store is closing, or the thread panicked).
pub(crate) fn writer_gone() -> StoreError {
    StoreError::permanent("embedded store: the writer thread has stopped; reopen the store")
}

/// A read's blocking task did not finish (it panicked or the runtime is shutting down).
pub(crate) fn reader_gone(e: tokio::task::JoinError) -> StoreError {
    StoreError::transient(format!("embedded store: a read did not complete: {e}"))
}

#[cfg(test)]
mod tests {
    use lucius_core::StoreErrorKind;
    use rusqlite::ffi;

    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some("detail".into()))
    }

    #[test]
    fn sqlite_failures_map_to_what_the_engine_does_with_them() {
        let cases = [
            (ffi::SQLITE_BUSY, StoreErrorKind::Transient),
            (ffi::SQLITE_LOCKED, StoreErrorKind::Transient),
            (ffi::SQLITE_IOERR, StoreErrorKind::Transient),
            (ffi::SQLITE_FULL, StoreErrorKind::Transient),
            (ffi::SQLITE_TOOBIG, StoreErrorKind::TooLarge),
            (ffi::SQLITE_CORRUPT, StoreErrorKind::Permanent),
            (ffi::SQLITE_NOTADB, StoreErrorKind::Permanent),
            (ffi::SQLITE_CONSTRAINT, StoreErrorKind::Permanent),
        ];
        for (code, kind) in cases {
            let e = sqlite("writing job x", failure(code));
            assert_eq!(e.kind, kind, "code {code}: {e}");
            assert!(
                e.message.starts_with("embedded store: writing job x: "),
                "{e}"
            );
        }
    }
}
