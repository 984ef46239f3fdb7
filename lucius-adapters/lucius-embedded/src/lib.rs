//! # lucius-embedded
//!
//! The core [`Store`](lucius_core::Store) and [`LeaseStore`](lucius_core::LeaseStore)
//! ports on one SQLite file (`rusqlite`, SQLite compiled in): a node that keeps its jobs
//! across restarts with no service to run.
//!
//! ```text
//!   callers (tokio tasks)                                   <dir>/lucius.sqlite3 (WAL)
//!     create_job · commit · put_lease · announce ──queue──▶ writer thread ──▶ BEGIN
//!                                                           │ SAVEPOINT per request
//!                                                           │ (revision checks; a loser
//!                                                           │  rolls back only itself)
//!                                                           └ COMMIT (one fsync) ─▶ answers
//!     load_job · outbox · active_jobs · leases … ──spawn_blocking──▶ read connections
//!   <dir>/LOCK: an exclusive lock held while the store is open (one process per directory)
//! ```
//!
//! Open with [`EmbeddedStore::open`]. Every write is a compare-and-swap on an integer
//! revision column; every request's rows land in one transaction (atomic commits), and
//! concurrent requests share a transaction and its fsync (group commit): a caller is
//! answered only after the `COMMIT` that made its rows durable returned. The schema is
//! versioned (`schema_version`); a file written by a newer binary is refused. Layout and
//! guarantees are in `docs/storage.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod open;
mod reads;
mod rows;
mod schema;
mod store;
mod writer;
mod writes;

pub use error::OpenError;
pub use schema::SCHEMA_VERSION;
pub use store::{EmbeddedStore, WriteStats, DATABASE_FILE, LOCK_FILE};
