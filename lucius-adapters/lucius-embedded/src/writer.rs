//! The writer thread and what it writes. One thread owns the write connection; it takes
//! every queued request (up to [`MAX_BATCH`]), applies each in its own `SAVEPOINT` — a
//! request whose revision check fails rolls back only itself — and makes the batch
//! durable with one `COMMIT` (one fsync), then answers each request. An answer never
//! precedes the `COMMIT` that made it true.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lucius_core::{
    Changes, CreateOutcome, JobId, Lease, NewJob, Partition, Revision, StoreError, Timestamp,
};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::sqlite;
use crate::rows::Encoded;
#[cfg(test)]
use crate::writes::torn_intake;
use crate::writes::{announce, commit, create_job, purge_job, put_lease, retire_partition};

/// The most requests one transaction takes.
pub(crate) const MAX_BATCH: usize = 512;

/// How many requests may wait for the writer before callers wait to enqueue.
pub(crate) const QUEUE: usize = 4096;

/// One write a caller waits for.
pub(crate) enum Request {
    Create(
        Box<Encoded<NewJob>>,
        oneshot::Sender<Result<CreateOutcome, StoreError>>,
    ),
    Commit(
        Box<Encoded<Changes>>,
        oneshot::Sender<Result<Changes, StoreError>>,
    ),
    PutLease(Lease, oneshot::Sender<Result<Lease, StoreError>>),
    Announce(String, Timestamp, oneshot::Sender<Result<(), StoreError>>),
    /// Deletes a finished job with its rows ([`lucius_core::Store::purge_job`]).
    Purge(JobId, Revision, oneshot::Sender<Result<(), StoreError>>),
    /// Unlists an empty partition ([`lucius_core::Store::retire_partition`]).
    Retire(Partition, oneshot::Sender<Result<bool, StoreError>>),
    /// Writes a new job's claim, job and steps but not its first directive: what a
    /// non-atomic intake leaves when it dies midway (for the conformance suite).
    #[cfg(test)]
    TornIntake(
        Box<Encoded<NewJob>>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
}

/// Figures the writer keeps.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) requests: AtomicU64,
}

/// Holds the writer before each batch while closed (tests fill the queue first).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

#[cfg(test)]
impl Gate {
    pub(crate) fn close(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    pub(crate) fn open(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        while *closed {
            closed = self.opened.wait(closed).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Runs the writer until every sender is dropped.
pub(crate) fn run(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
    #[cfg(test)] gate: Arc<Gate>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        gate.pass();
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .requests
            .fetch_add(batch.len() as u64 - 1, Ordering::Relaxed);
        write_batch(&mut conn, &mut batch);
    }
}

/// A request's outcome until the batch commits.
enum Outcome {
    Create(Result<CreateOutcome, StoreError>),
    Commit(Result<Changes, StoreError>),
    Lease(Result<Lease, StoreError>),
    Unit(Result<(), StoreError>),
    Flag(Result<bool, StoreError>),
}

impl Outcome {
    fn is_ok(&self) -> bool {
        match self {
            Outcome::Create(r) => r.is_ok(),
            Outcome::Commit(r) => r.is_ok(),
            Outcome::Lease(r) => r.is_ok(),
            Outcome::Unit(r) => r.is_ok(),
            Outcome::Flag(r) => r.is_ok(),
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &mut Vec<Request>) {
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        let e = sqlite("starting a write transaction", e);
        for r in batch.drain(..) {
            answer(r, None, &e);
        }
        return;
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut failed: Option<StoreError> = None;
    for r in batch.iter() {
        if failed.is_some() {
            break;
        }
        if let Err(e) = control(conn, "SAVEPOINT request") {
            failed = Some(sqlite("starting a request's savepoint", e));
            break;
        }
        let outcome = apply(conn, r);
        let end = match outcome.is_ok() {
            true => control(conn, "RELEASE request"),
            false => {
                control(conn, "ROLLBACK TO request").and_then(|()| control(conn, "RELEASE request"))
            }
        };
        match end {
            Ok(()) => outcomes.push(outcome),
            Err(e) => failed = Some(sqlite("ending a request's savepoint", e)),
        }
    }
    let committed = match failed {
        Some(e) => Err(e),
        None => control(conn, "COMMIT").map_err(|e| sqlite("committing a write transaction", e)),
    };
    if let Err(e) = committed {
        // Nothing of the batch is durable: every request gets the failure (a request
        // that lost its revision check keeps its own answer, which still holds).
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        tracing::warn!(error = %e, requests = batch.len(), "embedded store: a write batch failed");
        let mut outcomes = outcomes.into_iter();
        for r in batch.drain(..) {
            answer(r, outcomes.next().filter(|o| !o.is_ok()), &e);
        }
        return;
    }
    for (r, o) in batch.drain(..).zip(outcomes) {
        send(r, o);
    }
}

/// Runs a transaction control statement, prepared once per connection (a batch runs
/// `SAVEPOINT` and `RELEASE` once per request: parsing them each time showed in profiles).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Answers `r` with `outcome`, or with `fallback` when there is none.
fn answer(r: Request, outcome: Option<Outcome>, fallback: &StoreError) {
    match outcome {
        Some(o) => send(r, o),
        None => {
            let e = fallback.clone();
            match r {
                Request::Create(_, tx) => drop(tx.send(Err(e))),
                Request::Commit(_, tx) => drop(tx.send(Err(e))),
                Request::PutLease(_, tx) => drop(tx.send(Err(e))),
                Request::Announce(_, _, tx) => drop(tx.send(Err(e))),
                Request::Purge(_, _, tx) => drop(tx.send(Err(e))),
                Request::Retire(_, tx) => drop(tx.send(Err(e))),
                #[cfg(test)]
                Request::TornIntake(_, tx) => drop(tx.send(Err(e))),
            }
        }
    }
}

/// Sends an outcome to its caller (who may have stopped waiting).
fn send(r: Request, o: Outcome) {
    match (r, o) {
        (Request::Create(_, tx), Outcome::Create(v)) => drop(tx.send(v)),
        (Request::Commit(_, tx), Outcome::Commit(v)) => drop(tx.send(v)),
        (Request::PutLease(_, tx), Outcome::Lease(v)) => drop(tx.send(v)),
        (Request::Announce(_, _, tx), Outcome::Unit(v)) => drop(tx.send(v)),
        (Request::Purge(_, _, tx), Outcome::Unit(v)) => drop(tx.send(v)),
        (Request::Retire(_, tx), Outcome::Flag(v)) => drop(tx.send(v)),
        #[cfg(test)]
        (Request::TornIntake(_, tx), Outcome::Unit(v)) => drop(tx.send(v)),
        // `apply` answers each request with its own kind.
        (r, _) => answer(
            r,
            None,
            &StoreError::permanent("embedded store: an answer of the wrong kind"),
        ),
    }
}

fn apply(conn: &Connection, r: &Request) -> Outcome {
    match r {
        Request::Create(new, _) => Outcome::Create(create_job(conn, new)),
        Request::Commit(changes, _) => Outcome::Commit(commit(conn, changes)),
        Request::PutLease(lease, _) => Outcome::Lease(put_lease(conn, lease)),
        Request::Announce(member, until, _) => Outcome::Unit(announce(conn, member, *until)),
        Request::Purge(id, rev, _) => Outcome::Unit(purge_job(conn, id, rev)),
        Request::Retire(p, _) => Outcome::Flag(retire_partition(conn, p)),
        #[cfg(test)]
        Request::TornIntake(new, _) => Outcome::Unit(torn_intake(conn, new)),
    }
}
