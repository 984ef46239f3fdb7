//! Rows as SQLite holds them: JSON bodies (the core types' serde form, without their
//! revision) beside an integer revision column. Callers encode ([`Encoded`]) so the writer
//! thread only binds ready text.

use lucius_core::{Changes, Job, NewJob, OutboxEntry, Revision, Step, StoreError};

use crate::error::{bad_row, unencodable};

/// Rows with their JSON bodies, encoded by the caller so the writer thread, which every
/// write goes through, spends its time on SQLite alone.
pub(crate) struct Encoded<T> {
    pub(crate) rows: T,
    /// In write order: claim, job, steps, first directive (a new job); steps, outbox
    /// entries, job ([`Changes`]).
    pub(crate) bodies: Vec<String>,
}

impl Encoded<NewJob> {
    pub(crate) fn new_job(new: NewJob) -> Result<Box<Self>, StoreError> {
        let mut bodies = Vec::with_capacity(new.steps.len() + 3);
        bodies.push(encode(&new.claim, || {
            format!("the claim on key {:?}", new.claim.key)
        })?);
        bodies.push(encode(&new.job, || format!("job {}", new.job.id))?);
        for s in &new.steps {
            bodies.push(encode(s, || {
                format!("step {} of job {}", s.index, s.job_id)
            })?);
        }
        bodies.push(encode(&new.outbox, || {
            format!("outbox entry {}", new.outbox.id)
        })?);
        Ok(Box::new(Encoded { rows: new, bodies }))
    }
}

impl Encoded<Changes> {
    pub(crate) fn changes(changes: Changes) -> Result<Box<Self>, StoreError> {
        let mut bodies = Vec::with_capacity(
            changes.steps.len() + changes.outbox.len() + usize::from(changes.job.is_some()),
        );
        for s in &changes.steps {
            bodies.push(encode(s, || {
                format!("step {} of job {}", s.index, s.job_id)
            })?);
        }
        for e in &changes.outbox {
            bodies.push(encode(e, || format!("outbox entry {}", e.id))?);
        }
        if let Some(j) = &changes.job {
            bodies.push(encode(j, || format!("job {}", j.id))?);
        }
        Ok(Box::new(Encoded {
            rows: changes,
            bodies,
        }))
    }
}

/// Every row of an [`Encoded`] has its body; a missing one is a bug, reported rather than
/// written as an empty row.
pub(crate) fn missing_body() -> StoreError {
    StoreError::permanent("embedded store: a row came without its encoded body")
}

/// A stored body with its revision column.
pub(crate) fn decode<T: serde::de::DeserializeOwned + Revised>(
    body: &str,
    rev: i64,
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    let mut v: T = serde_json::from_str(body).map_err(|e| bad_row(what(), e))?;
    v.set_revision(Revision::counter(rev as u64));
    Ok(v)
}

/// Rows that carry a revision outside their JSON body.
pub(crate) trait Revised {
    fn set_revision(&mut self, rev: Revision);
}

impl Revised for Job {
    fn set_revision(&mut self, rev: Revision) {
        self.revision = rev;
    }
}

impl Revised for Step {
    fn set_revision(&mut self, rev: Revision) {
        self.revision = rev;
    }
}

impl Revised for OutboxEntry {
    fn set_revision(&mut self, rev: Revision) {
        self.revision = rev;
    }
}

pub(crate) fn encode<T: serde::Serialize>(
    v: &T,
    what: impl FnOnce() -> String,
) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| unencodable(what(), e))
}

/// The number a stored revision compares as (a revision this store did not hand out
/// compares as `-1`, which no row has).
pub(crate) fn expected_rev(r: &Revision) -> i64 {
    r.as_counter()
        .and_then(|n| i64::try_from(n).ok())
        .unwrap_or(-1)
}
