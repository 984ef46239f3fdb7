//! Publication of one outbox entry, bounded by the publish timeout, and the writes that
//! record its result: `SENT` + step `INITIATED` + job `IN_PROGRESS`, or a counted failure.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use crate::ids::OutboxId;
use crate::lease::Fence;
use crate::outbox::OutboxStatus;
use crate::ports::{LeaseStore, PublishError};
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
    /// The entry was not `PENDING` (already sent, dead, or settled by someone else), or
    /// another publisher recorded its own attempt first.
    NotPending,
    /// The entry is `PENDING` but not due yet (a failure backed it off).
    NotDue,
    /// A partition-owning dispatcher has written the entry: only the partition's owner
    /// publishes it now, so an unfenced publisher leaves it alone.
    Owned,
    /// The dispatcher's lease would not outlive the publication (publish timeout plus
    /// skew margin); nothing was published. The round stops until the lease is renewed.
    Deferred,
    /// Its step no longer waits for it; it was settled without publishing.
    Superseded,
}

/// A dispatcher's right to publish a partition: its fence and where to re-read it.
pub(crate) struct Holder<'a> {
    /// The fence, refreshed whenever the lease row is read again.
    pub(crate) fence: Fence,
    /// The lease rows.
    pub(crate) leases: &'a dyn LeaseStore,
}

impl Engine {
    /// Publishes one `PENDING`, due outbox entry and records the result. An entry a
    /// partition-owning dispatcher has written ([`PublishOutcome::Owned`]) is left to it.
    pub async fn publish(&self, id: &OutboxId) -> Result<PublishOutcome, EngineError> {
        self.publish_as(id, None).await
    }

    /// Publishes one entry, as the holder of a partition lease when `holder` is given:
    /// the publication starts only while the lease will outlive it (publish timeout plus
    /// skew margin, re-reading the lease row when the fence does not say so), the lease is
    /// checked again before the result is recorded, the entry is stamped with the fence's
    /// epoch, and an entry stamped by a newer epoch is refused with
    /// [`EngineError::Fenced`].
    pub(crate) async fn publish_as(
        &self,
        id: &OutboxId,
        mut holder: Option<&mut Holder<'_>>,
    ) -> Result<PublishOutcome, EngineError> {
        let job_id = id.job_id();
        let rec = self.record_of(id).await?;
        let entry = rec
            .entry(id)
            .ok_or_else(|| EngineError::OutboxNotFound(id.clone()))?;
        if entry.status != OutboxStatus::Pending {
            return Ok(PublishOutcome::NotPending);
        }
        match holder.as_deref() {
            Some(h) => check_fence(entry, &h.fence)?,
            None if entry.fence > 0 => return Ok(PublishOutcome::Owned),
            None => {}
        }
        let fence = holder.as_deref().map(|h| h.fence.clone());
        if !awaits(&rec, id) {
            return self
                .update_job_from(&job_id, Some(rec), |rec, now| {
                    fenced(rec, id, fence.as_ref(), || settle_superseded(rec, id, now))
                })
                .await;
        }
        if !entry.is_due(self.clock.now()) {
            return Ok(PublishOutcome::NotDue);
        }
        let loaded_failures = entry.publish_attempts;
        let directive = entry.directive.clone();
        if let Some(h) = holder.as_deref_mut() {
            if !self.lease_outlives_publication(h).await? {
                return Ok(PublishOutcome::Deferred);
            }
        }
        // No await between the lease check above and the send: the publication starts
        // within the validity the check saw.
        let started = self.clock.now();
        let result = self.publish_bounded(&directive).await;
        let latency = self.clock.now().since(started);
        self.observer.published(result.is_ok(), latency);
        if let Some(h) = holder.as_deref_mut() {
            // Checked again before recording: a dispatcher paused past its lease records
            // nothing (the publication itself started while the lease was valid).
            let now = self.clock.now();
            if now >= h.fence.valid_until {
                let row = h.leases.lease(&h.fence.partition).await?;
                if !h.fence.refresh(row.as_ref(), self.clock.now()) {
                    return Err(fenced_error(&h.fence));
                }
            }
        }
        let fence = holder.as_deref().map(|h| h.fence.clone());
        let policy = self.config.publish_retry;
        // The record read above plans the write: if anything changed it meanwhile (a fast
        // worker's ACK, a sweeper, another publisher), the commit conflicts and the next
        // attempt reloads and re-checks on the row it commits against.
        self.update_job_from(&job_id, Some(rec), |rec, now| {
            fenced(rec, id, fence.as_ref(), || {
                let attempt = Attempt {
                    failures_seen: loaded_failures,
                    started,
                };
                record_publication(rec, id, &result, attempt, policy, now)
            })
        })
        .await
    }

    /// The job of entry `id`, to plan its publication on: the record intake left for it
    /// (a new job's first directive, still within the dispatch grace; see `handoff`), else
    /// the job as read now. A handed-off record that went stale meanwhile costs the
    /// publication's commit a conflict and a reload, never a wrong write.
    pub(super) async fn record_of(&self, id: &OutboxId) -> Result<JobRecord, EngineError> {
        match self.handoff.take(id, self.clock.now()) {
            Some(rec) => Ok(rec),
            None => self.job(&id.job_id()).await,
        }
    }

    /// Whether `h`'s lease stays valid for a whole publication from now (publish timeout
    /// plus skew margin): first by its fence, else by the lease row read again. A lease
    /// found lost is [`EngineError::Fenced`].
    async fn lease_outlives_publication(&self, h: &mut Holder<'_>) -> Result<bool, EngineError> {
        let timeout = self.config.publish_timeout;
        if self.clock.now().plus(timeout) < h.fence.valid_until {
            return Ok(true);
        }
        let row = h.leases.lease(&h.fence.partition).await?;
        let now = self.clock.now();
        if !h.fence.refresh(row.as_ref(), now) {
            return Err(fenced_error(&h.fence));
        }
        Ok(now.plus(timeout) < h.fence.valid_until)
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
    let Some(f) = fence else {
        // An unfenced publisher never writes an entry a dispatcher has stamped.
        if rec.entry(id).is_some_and(|e| e.fence > 0) {
            return Ok((Changes::default(), PublishOutcome::Owned));
        }
        return Ok(plan());
    };
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
        return Err(fenced_error(f));
    }
    Ok(())
}

pub(super) fn fenced_error(f: &Fence) -> EngineError {
    EngineError::Fenced {
        partition: f.partition.clone(),
        owner: f.owner.clone(),
        epoch: f.epoch,
    }
}

/// What a publisher saw of its entry when it decided to publish.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempt {
    /// The entry's `publishAttempts` when loaded.
    pub(super) failures_seen: u32,
    /// When the publication started.
    pub(super) started: Timestamp,
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
pub(super) fn awaits(rec: &JobRecord, id: &OutboxId) -> bool {
    let Some(e) = rec.entry(id) else { return false };
    !rec.job.status.is_terminal()
        && rec
            .steps
            .get(e.step_index as usize)
            .is_some_and(|s| s.attempt == e.attempt && s.status.awaits_directive())
}

/// Settles an entry whose step moved on: `SENT` if the step got past it at the same
/// attempt (it evidently arrived), else `DEAD` as superseded.
pub(super) fn settle_superseded(
    rec: &JobRecord,
    id: &OutboxId,
    now: Timestamp,
) -> (Changes, PublishOutcome) {
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

/// The writes that record a publication's result on `rec`. A failure is recorded only if
/// the entry is, on this row, still `PENDING`, was due when the publication started, and
/// no other publisher recorded a failure since it was loaded: concurrent publishers of
/// one entry count at most one failure per attempt.
pub(super) fn record_publication(
    rec: &JobRecord,
    id: &OutboxId,
    result: &Result<(), PublishError>,
    attempt: Attempt,
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
        Err(_)
            if e.publish_attempts != attempt.failures_seen
                || e.next_attempt_at > attempt.started =>
        {
            (c, PublishOutcome::NotPending)
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
