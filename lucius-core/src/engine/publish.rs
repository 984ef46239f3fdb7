//! Publication of one outbox entry, bounded by the publish timeout, and the writes that
//! record its result: `SENT` + step `INITIATED` + job `IN_PROGRESS`, or a counted failure.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use crate::ids::OutboxId;
use crate::lease::Fence;
use crate::outbox::OutboxStatus;
use crate::ports::PublishError;
use crate::record::{Changes, JobRecord};
use crate::step::StepStatus;
use crate::time::Timestamp;

use super::{Engine, EngineError};

/// What happened to an entry handed to [`Engine::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Published and recorded `SENT`.
    Sent,
    /// Publication failed; the entry is `PENDING` with a later `nextAttemptAt`.
    Retrying,
    /// Publication failed for good; the entry is `DEAD`.
    Dead,
    /// The entry was not `PENDING` (already sent, dead, or settled by someone else).
    NotPending,
    /// Its step no longer waits for it; it was settled without publishing.
    Superseded,
}

impl Engine {
    /// Publishes one `PENDING` outbox entry and records the result.
    pub async fn publish(&self, id: &OutboxId) -> Result<PublishOutcome, EngineError> {
        self.publish_fenced(id, None).await
    }

    /// Publishes one entry as the holder of `fence`: the entry is stamped with the fence's
    /// epoch, and an entry already stamped by a newer epoch is refused with
    /// [`EngineError::Fenced`].
    pub(crate) async fn publish_fenced(
        &self,
        id: &OutboxId,
        fence: Option<&Fence>,
    ) -> Result<PublishOutcome, EngineError> {
        let job_id = id.job_id();
        let rec = self.job(&job_id).await?;
        let entry = rec
            .entry(id)
            .ok_or_else(|| EngineError::OutboxNotFound(id.clone()))?;
        if entry.status != OutboxStatus::Pending {
            return Ok(PublishOutcome::NotPending);
        }
        if let Some(f) = fence {
            check_fence(entry, f)?;
        }
        if !awaits(&rec, id) {
            return self
                .update_job_from(&job_id, Some(rec), |rec, now| {
                    fenced(rec, id, fence, || settle_superseded(rec, id, now))
                })
                .await;
        }
        let started = self.clock.now();
        let result = self.publish_bounded(&entry.directive).await;
        let latency = self.clock.now().since(started);
        self.observer.published(result.is_ok(), latency);
        // The record read above plans the write: if anything changed it meanwhile (a fast
        // worker's ACK, a sweeper), the commit conflicts and the next attempt reloads.
        self.update_job_from(&job_id, Some(rec), |rec, now| {
            fenced(rec, id, fence, || {
                record_publication(rec, id, &result, self.config.publish_retry, now)
            })
        })
        .await
    }

    /// Publishes every entry in `ids`, ignoring individual failures (they stay `PENDING` for
    /// the retry loop and the dispatcher). Returns how many were sent.
    pub async fn publish_all(&self, ids: &[OutboxId]) -> usize {
        let mut sent = 0;
        for id in ids {
            if let Ok(PublishOutcome::Sent) = self.publish(id).await {
                sent += 1;
            }
        }
        sent
    }

    async fn publish_bounded(&self, d: &crate::directive::Directive) -> Result<(), PublishError> {
        let timeout = self.config.publish_timeout;
        let publish = self.publisher.publish(d);
        let sleep = self.clock.sleep(timeout);
        race(publish, sleep).await.unwrap_or_else(|| {
            Err(PublishError::Transient(format!(
                "publish timed out after {} ms",
                timeout.0
            )))
        })
    }
}

/// Plans a write of entry `id`; under a fence, refuses it if a newer epoch stamped the
/// entry and otherwise stamps the written entries with the fence's epoch.
fn fenced(
    rec: &JobRecord,
    id: &OutboxId,
    fence: Option<&Fence>,
    plan: impl FnOnce() -> (Changes, PublishOutcome),
) -> Result<(Changes, PublishOutcome), EngineError> {
    let Some(f) = fence else { return Ok(plan()) };
    if let Some(e) = rec.entry(id) {
        check_fence(e, f)?;
    }
    let (mut c, outcome) = plan();
    for e in &mut c.outbox {
        e.fence = f.epoch;
    }
    Ok((c, outcome))
}

/// Refuses a write by a dispatcher whose epoch is older than the entry's stamp.
fn check_fence(entry: &crate::outbox::OutboxEntry, f: &Fence) -> Result<(), EngineError> {
    if entry.fence > f.epoch {
        return Err(EngineError::Fenced {
            partition: f.partition.clone(),
            owner: f.owner.clone(),
            epoch: f.epoch,
        });
    }
    Ok(())
}

/// Polls `work` first, then `timer`; `None` if the timer finished first.
async fn race<T>(work: impl Future<Output = T>, timer: impl Future<Output = ()>) -> Option<T> {
    let mut work = pin!(work);
    let mut timer = pin!(timer);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Whether the entry's step still waits for this attempt's directive.
fn awaits(rec: &JobRecord, id: &OutboxId) -> bool {
    let Some(e) = rec.entry(id) else { return false };
    !rec.job.status.is_terminal()
        && rec
            .steps
            .get(e.step_index as usize)
            .is_some_and(|s| s.attempt == e.attempt && s.status.awaits_directive())
}

/// Settles an entry whose step moved on: `SENT` if the step got past it at the same
/// attempt (it evidently arrived), else `DEAD` as superseded.
fn settle_superseded(rec: &JobRecord, id: &OutboxId, now: Timestamp) -> (Changes, PublishOutcome) {
    let mut c = Changes::default();
    let Some(e) = rec.entry(id).filter(|e| e.status == OutboxStatus::Pending) else {
        return (c, PublishOutcome::NotPending);
    };
    let step = rec.steps.get(e.step_index as usize);
    let delivered = step.is_some_and(|s| {
        s.attempt == e.attempt && matches!(s.status, StepStatus::Running | StepStatus::Succeeded)
    });
    let next = if delivered {
        e.on_sent(now)
    } else {
        let reason = match step {
            Some(s) if s.attempt != e.attempt => format!("step is at attempt {}", s.attempt),
            Some(s) => format!("step is {}", s.status.as_str()),
            None => "step not found".to_owned(),
        };
        e.on_superseded(&reason, now)
    };
    if let Ok(n) = next {
        c.put_outbox(n);
    }
    (c, PublishOutcome::Superseded)
}

fn record_publication(
    rec: &JobRecord,
    id: &OutboxId,
    result: &Result<(), PublishError>,
    policy: crate::outbox::PublishRetryPolicy,
    now: Timestamp,
) -> (Changes, PublishOutcome) {
    let mut c = Changes::default();
    let Some(e) = rec.entry(id).filter(|e| e.status == OutboxStatus::Pending) else {
        return (c, PublishOutcome::NotPending);
    };
    match result {
        Ok(()) => {
            if let Ok(n) = e.on_sent(now) {
                c.put_outbox(n);
            }
            if let Some(s) = rec.steps.get(e.step_index as usize) {
                if s.attempt == e.attempt && s.status == StepStatus::Queued {
                    if let Ok(n) = s.on_published(e.attempt, now) {
                        c.put_step(n);
                        if let Ok(j) = rec.job.on_start(now) {
                            if j.status != rec.job.status {
                                c.job = Some(j);
                            }
                        }
                    }
                }
            }
            (c, PublishOutcome::Sent)
        }
        Err(err) => {
            let permanent = matches!(err, PublishError::Permanent(_));
            match e.on_publish_failed(&err.to_string(), permanent, policy, now) {
                Ok(n) => {
                    let dead = n.status == OutboxStatus::Dead;
                    c.put_outbox(n);
                    (
                        c,
                        if dead {
                            PublishOutcome::Dead
                        } else {
                            PublishOutcome::Retrying
                        },
                    )
                }
                Err(_) => (c, PublishOutcome::NotPending),
            }
        }
    }
}
