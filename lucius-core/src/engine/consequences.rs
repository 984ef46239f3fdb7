//! What a step's new state implies for the rest of its job: the next directive, the job's
//! status, siblings to cancel, entries to settle. Pure: rows in, rows out.

use crate::ids::OutboxId;
use crate::job::JobStatus;
use crate::outbox::OutboxStatus;
use crate::record::{Changes, JobRecord};
use crate::step::{Step, StepStatus};
use crate::time::Timestamp;

use super::intake::directive_entry;

/// Adds `new` (a transition of `rec`'s step at the same index) to `c` together with every
/// write it implies. Returns the directives to publish.
pub(super) fn apply_step(
    rec: &JobRecord,
    c: &mut Changes,
    new: Step,
    now: Timestamp,
) -> Vec<OutboxId> {
    let old = rec.steps.iter().find(|s| s.index == new.index);
    let mut to_publish = Vec::new();
    let old_attempt = old.map_or(0, |s| s.attempt);
    match new.status {
        StepStatus::Queued if new.attempt != old_attempt => {
            settle_entries_of(rec, c, new.index, Some(new.attempt), "step retried", now);
            let input = previous_result(rec, new.index);
            let e = directive_entry(&rec.job, &new, input, now);
            if rec.entry(&e.id).is_none() {
                to_publish.push(e.id.clone());
                c.put_outbox(e);
            }
        }
        StepStatus::Running | StepStatus::Initiated => {
            mark_delivered(rec, c, &new, now);
            start_job(rec, c, now);
        }
        StepStatus::Succeeded => {
            // Normally settled by the ACK; not if a non-atomic store lost that write.
            mark_delivered(rec, c, &new, now);
            start_job(rec, c, now);
            match rec.steps.iter().find(|s| s.index == new.index + 1) {
                Some(next) if next.status == StepStatus::Pending => {
                    if let Ok(q) = next.on_queue(now) {
                        let e = directive_entry(&rec.job, &q, new.result.clone(), now);
                        to_publish.push(e.id.clone());
                        c.put_outbox(e);
                        c.put_step(q);
                    }
                }
                Some(_) => {}
                // A missing successor row within the protocol is an interrupted intake,
                // not the end of the job.
                None if new.index + 1 < rec.job.step_count => {}
                None => {
                    let job = c.job.clone().unwrap_or_else(|| rec.job.clone());
                    if let Ok(j) = job.on_succeeded(now) {
                        c.job = Some(j);
                        // A finished job leaves no directive pending: whatever is still
                        // PENDING (of an earlier attempt) is superseded.
                        let stale: Vec<_> = rec
                            .outbox
                            .iter()
                            .filter(|e| {
                                e.status == OutboxStatus::Pending
                                    && !c.outbox.iter().any(|x| x.id == e.id)
                            })
                            .filter_map(|e| e.on_superseded("job succeeded", now).ok())
                            .collect();
                        for x in stale {
                            c.put_outbox(x);
                        }
                    }
                }
            }
        }
        StepStatus::Failed => {
            let reason = format!(
                "step {} failed: {}",
                new.step_id,
                new.error.as_deref().unwrap_or("no reason given")
            );
            let index = new.index;
            c.put_step(new);
            end_job(rec, c, JobStatus::Failed, &reason, Some(index), now);
            return to_publish;
        }
        StepStatus::Cancelled | StepStatus::Pending | StepStatus::Queued => {}
    }
    c.put_step(new);
    to_publish
}

/// Ends the job as `Failed` or `Cancelled`: cancels every other live step and settles
/// their pending directives.
pub(super) fn end_job(
    rec: &JobRecord,
    c: &mut Changes,
    status: JobStatus,
    reason: &str,
    except: Option<u32>,
    now: Timestamp,
) {
    for s in &rec.steps {
        if Some(s.index) == except || s.status.is_terminal() {
            continue;
        }
        if let Ok(x) = s.on_cancel(now) {
            c.put_step(x);
        }
    }
    for e in rec
        .outbox
        .iter()
        .filter(|e| e.status == OutboxStatus::Pending)
    {
        if let Ok(x) = e.on_superseded(reason, now) {
            c.put_outbox(x);
        }
    }
    let job = c.job.clone().unwrap_or_else(|| rec.job.clone());
    let next = match status {
        JobStatus::Cancelled => job.on_cancel(reason, now),
        _ => job.on_failed(reason, now),
    };
    if let Ok(j) = next {
        c.job = Some(j);
    }
}

/// The step evidently got its directive (it was acknowledged or published): its entry for
/// the step's attempt, if still `PENDING`, is `SENT`.
pub(super) fn mark_delivered(rec: &JobRecord, c: &mut Changes, step: &Step, now: Timestamp) {
    let id = step.outbox_id();
    let pending = c
        .outbox
        .iter()
        .find(|e| e.id == id)
        .or_else(|| rec.entry(&id))
        .filter(|e| e.status == OutboxStatus::Pending)
        .cloned();
    if let Some(sent) = pending.and_then(|e| e.on_sent(now).ok()) {
        c.put_outbox(sent);
    }
}

/// `ACCEPTED → IN_PROGRESS` if needed.
fn start_job(rec: &JobRecord, c: &mut Changes, now: Timestamp) {
    let job = c.job.clone().unwrap_or_else(|| rec.job.clone());
    if job.status == JobStatus::Accepted {
        if let Ok(j) = job.on_start(now) {
            c.job = Some(j);
        }
    }
}

/// Settles the still-pending entries of a step other than those of `keep_attempt`.
fn settle_entries_of(
    rec: &JobRecord,
    c: &mut Changes,
    index: u32,
    keep_attempt: Option<u32>,
    reason: &str,
    now: Timestamp,
) {
    for e in rec.outbox.iter().filter(|e| {
        e.step_index == index
            && e.status == OutboxStatus::Pending
            && Some(e.attempt) != keep_attempt
    }) {
        if let Ok(x) = e.on_superseded(reason, now) {
            c.put_outbox(x);
        }
    }
}

/// The input of a step: its predecessor's result.
pub(super) fn previous_result(rec: &JobRecord, index: u32) -> Option<crate::json::Json> {
    let prev = index.checked_sub(1)?;
    rec.steps.iter().find(|s| s.index == prev)?.result.clone()
}
