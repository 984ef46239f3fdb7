//! The rows both layouts share: how a job, a step, an outbox entry and a claim become
//! entities (JSON body plus the few properties filters need), and back.

use lucius_core::{IdempotencyRecord, Job, OutboxEntry, Revision, Step, StoreError};
use serde_json::Value;

use crate::entity::{decode, encode, partition_key, time_key, Row};

pub(crate) fn job_row(pk: &str, rk: &str, job: &Job) -> Result<Row, StoreError> {
    encode(
        pk,
        rk,
        &format!("job {}", job.id),
        job,
        &[
            ("Kind", "JOB".into()),
            ("Status", job.status.as_str().into()),
            ("Partition", partition_key(&job.partition).into()),
        ],
    )
}

pub(crate) fn step_row(pk: &str, rk: &str, step: &Step) -> Result<Row, StoreError> {
    encode(
        pk,
        rk,
        &format!("step {} of job {}", step.index, step.job_id),
        step,
        &[
            ("Kind", "STEP".into()),
            ("StepIndex", Value::from(step.index)),
            ("Status", step.status.as_str().into()),
        ],
    )
}

pub(crate) fn outbox_row(pk: &str, rk: &str, e: &OutboxEntry) -> Result<Row, StoreError> {
    encode(
        pk,
        rk,
        &format!("outbox entry {}", e.id),
        e,
        &[
            ("Kind", "OUTBOX".into()),
            ("Status", e.status.as_str().into()),
            ("NextAttemptAt", time_key(e.next_attempt_at).into()),
            ("Partition", partition_key(&e.partition).into()),
            ("JobId", e.job_id.as_str().into()),
        ],
    )
}

pub(crate) fn claim_row(pk: &str, rk: &str, c: &IdempotencyRecord) -> Result<Row, StoreError> {
    encode(
        pk,
        rk,
        &format!("idempotency claim of job {}", c.job_id),
        c,
        &[("Kind", "CLAIM".into())],
    )
}

pub(crate) fn read_job(row: &Row) -> Result<Job, StoreError> {
    let (mut j, rev): (Job, Revision) = decode(row, "job")?;
    j.revision = rev;
    Ok(j)
}

pub(crate) fn read_step(row: &Row) -> Result<Step, StoreError> {
    let (mut s, rev): (Step, Revision) = decode(row, "step")?;
    s.revision = rev;
    Ok(s)
}

pub(crate) fn read_outbox(row: &Row) -> Result<OutboxEntry, StoreError> {
    let (mut e, rev): (OutboxEntry, Revision) = decode(row, "outbox entry")?;
    e.revision = rev;
    Ok(e)
}

pub(crate) fn read_claim(row: &Row) -> Result<IdempotencyRecord, StoreError> {
    Ok(decode::<IdempotencyRecord>(row, "idempotency claim")?.0)
}

/// Oldest `nextAttemptAt` first, then id — the port's order for outbox listings.
pub(crate) fn sort_entries(v: &mut [OutboxEntry]) {
    v.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
}

/// The part of the query's `after` cursor a filter can say: entries due at or after the
/// cursor's time (the exact `(nextAttemptAt, id)` cut is [`past_cursor`]'s).
pub(crate) fn cursor_filter(q: &lucius_core::OutboxQuery) -> Option<String> {
    q.after.as_ref().map(|(at, _)| {
        format!(
            "NextAttemptAt ge {}",
            crate::entity::literal(&time_key(*at))
        )
    })
}

/// Keeps the entries past the query's `after` cursor, in `(nextAttemptAt, id)` order.
pub(crate) fn past_cursor(v: &mut Vec<OutboxEntry>, q: &lucius_core::OutboxQuery) {
    if let Some((at, id)) = &q.after {
        v.retain(|e| (e.next_attempt_at, &e.id) > (*at, id));
    }
}
