//! Handing directives out to workers that pull them (no bus): a due `PENDING` entry is
//! *claimed* by recording its publication — `SENT`, its step `INITIATED` with an ACK
//! deadline — before the directive leaves. The claim is a revision-guarded commit, so of
//! concurrent pollers exactly one gets a directive while its ACK deadline runs; one handed
//! out and never acknowledged is retried by the sweeper when its ACK deadline passes (a new
//! attempt with a new directive), exactly like a bus delivery nobody consumed. The queue is
//! the outbox in the store: nothing is held in memory, so a restart loses nothing.

use crate::directive::Directive;
use crate::ids::OutboxId;
use crate::outbox::OutboxStatus;
use crate::ports::OutboxQuery;

use super::publish::{awaits, record_publication, settle_superseded, Attempt, PublishOutcome};
use super::{Engine, EngineError};

/// Which directives a poller takes: those whose topic is one of `topics` and whose step is
/// one of `steps`. An empty list does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullFilter {
    /// Topics (a step's `topic`, e.g. `lucius.ocr`); empty: any.
    pub topics: Vec<String>,
    /// Step ids (e.g. `ocr`); empty: any.
    pub steps: Vec<String>,
}

impl PullFilter {
    /// A filter that takes every directive.
    pub fn any() -> PullFilter {
        PullFilter::default()
    }

    /// Only directives of these topics.
    pub fn topics<I, S>(topics: I) -> PullFilter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PullFilter {
            topics: topics.into_iter().map(Into::into).collect(),
            steps: Vec::new(),
        }
    }

    /// Only directives of these steps.
    pub fn steps<I, S>(steps: I) -> PullFilter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PullFilter {
            topics: Vec::new(),
            steps: steps.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `d` passes the filter.
    pub fn matches(&self, d: &Directive) -> bool {
        (self.topics.is_empty() || self.topics.iter().any(|t| **t == *d.topic))
            && (self.steps.is_empty() || self.steps.iter().any(|s| **s == *d.step_id))
    }
}

/// Pages one claim round reads at most, so a store full of due entries for other topics
/// costs a bounded round.
const MAX_PAGES: usize = 10;

impl Engine {
    /// Claims up to `max` due `PENDING` directives that `filter` accepts, oldest
    /// `nextAttemptAt` first, and returns them. Each returned directive is recorded as
    /// published (its step `INITIATED`, its ACK deadline running) before it is returned:
    /// the caller must hand it to a worker or let the ACK deadline retry it. Entries whose
    /// step moved on are settled on the way, as a dispatcher would.
    pub async fn claim_due(
        &self,
        filter: &PullFilter,
        max: usize,
    ) -> Result<Vec<Directive>, EngineError> {
        let mut claimed = Vec::new();
        if max == 0 {
            return Ok(claimed);
        }
        // Due now, not after the dispatch grace: with no bus nothing publishes inline, so a
        // new directive is the pollers' at once.
        let mut q = OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: None,
            due_by: Some(self.clock.now()),
            after: None,
            limit: self.config.batch_size.max(1),
        };
        for _ in 0..MAX_PAGES {
            let entries = self.store.outbox(&q).await?;
            let full = entries.len() >= q.limit;
            q.after = entries.last().map(|e| (e.next_attempt_at, e.id.clone()));
            for e in entries.iter().filter(|e| filter.matches(&e.directive)) {
                // A store error on one entry (or a job changing too fast) leaves it for the
                // next round; the others are still handed out.
                if let Ok(Some(d)) = self.claim(&e.id).await {
                    claimed.push(d);
                    if claimed.len() >= max {
                        return Ok(claimed);
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(claimed)
    }

    /// Claims one entry: if it is `PENDING`, due and its step still waits for it, records
    /// it as published and returns its directive; `None` if another poller (or publisher)
    /// got it first, it is not due, or its step moved on (then it is settled).
    pub async fn claim(&self, id: &OutboxId) -> Result<Option<Directive>, EngineError> {
        let job_id = id.job_id();
        let rec = self.record_of(id).await?;
        let entry = rec
            .entry(id)
            .ok_or_else(|| EngineError::OutboxNotFound(id.clone()))?;
        if entry.status != OutboxStatus::Pending {
            return Ok(None);
        }
        if !awaits(&rec, id) {
            self.update_job_from(&job_id, Some(rec), |rec, now| {
                Ok(settle_superseded(rec, id, now))
            })
            .await?;
            return Ok(None);
        }
        let now = self.clock.now();
        if !entry.is_due(now) {
            return Ok(None);
        }
        let directive = Directive::clone(&entry.directive);
        let attempt = Attempt {
            failures_seen: entry.publish_attempts,
            started: now,
        };
        let policy = self.config.publish_retry;
        let outcome = self
            .update_job_from(&job_id, Some(rec), |rec, now| {
                Ok(record_publication(rec, id, &Ok(()), attempt, policy, now))
            })
            .await?;
        if outcome != PublishOutcome::Sent {
            return Ok(None);
        }
        self.observer.published(true, crate::time::Millis(0));
        Ok(Some(directive))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::engine::WorkerCall;
    use crate::ids::JobId;
    use crate::memory::{ManualClock, MemoryPublisher, MemoryStore};
    use crate::step::{Failure, StepStatus};
    use crate::testkit::command;
    use crate::time::{Millis, Timestamp};

    const T0: Timestamp = Timestamp(1_709_596_800_000);

    fn rig() -> (Engine, ManualClock, MemoryPublisher) {
        let clock = ManualClock::new(T0);
        let bus = MemoryPublisher::new();
        let engine = Engine::new(
            Arc::new(MemoryStore::new()),
            Arc::new(bus.clone()),
            Arc::new(clock.clone()),
        );
        (engine, clock, bus)
    }

    fn call<'a>(job: &'a JobId, step: &'a str, attempt: u32) -> WorkerCall<'a> {
        WorkerCall {
            job_id: job,
            step_id: step,
            attempt,
            worker_id: Some("w1"),
        }
    }

    #[tokio::test]
    async fn a_claimed_directive_is_handed_out_once_and_its_ack_deadline_runs() {
        let (e, clock, bus) = rig();
        let job = e
            .submit(command("acme", "k", 0))
            .await
            .unwrap()
            .value
            .job_id;
        let got = e.claim_due(&PullFilter::any(), 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&*got[0].job_id, job.as_str());
        assert_eq!(&*got[0].step_id, "ocr");
        // Recorded as published, through no publisher.
        let rec = e.job(&job).await.unwrap();
        assert_eq!(rec.steps[0].status, StepStatus::Initiated);
        assert_eq!(rec.outbox[0].status, OutboxStatus::Sent);
        assert!(bus.drain().is_empty());
        // Nobody else gets it while the ACK deadline runs.
        assert!(e
            .claim_due(&PullFilter::any(), 10)
            .await
            .unwrap()
            .is_empty());
        // Never acknowledged: after the deadline the sweeper retries it with a new
        // directive, which the next poll hands out.
        let ack = rec.steps[0].ack_deadline.expect("an ACK deadline");
        clock.set(ack.plus(Millis(1)));
        let swept = e.sweep_job(&job).await.unwrap();
        assert_eq!(swept.value.retried, 1);
        let again = e.claim_due(&PullFilter::any(), 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempt, 2);
        assert_ne!(again[0].directive_id, got[0].directive_id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_pollers_never_share_a_directive() {
        let (e, _clock, _bus) = rig();
        let mut jobs = Vec::new();
        for i in 0..20 {
            let k = format!("k{i}");
            jobs.push(e.submit(command("acme", &k, 0)).await.unwrap().value.job_id);
        }
        let pollers: Vec<_> = (0..8)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move { e.claim_due(&PullFilter::any(), 3).await.unwrap() })
            })
            .collect();
        let mut ids = Vec::new();
        for p in pollers {
            let got = p.await.unwrap();
            assert!(got.len() <= 3, "max is respected");
            ids.extend(got.into_iter().map(|d| d.directive_id));
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "a directive was handed out twice");
        assert_eq!(n, 20, "8 pollers taking 3 each get all 20");
    }

    /// A store whose first two loads wait for each other: two claims of one entry both
    /// read it `PENDING` before either commits.
    struct LockstepLoads {
        inner: MemoryStore,
        loads: std::sync::atomic::AtomicUsize,
        barrier: tokio::sync::Barrier,
    }

    #[async_trait::async_trait]
    impl crate::ports::Store for LockstepLoads {
        async fn create_job(
            &self,
            new: crate::record::NewJob,
        ) -> Result<crate::ports::CreateOutcome, crate::ports::StoreError> {
            self.inner.create_job(new).await
        }
        async fn load_job(
            &self,
            id: &JobId,
        ) -> Result<Option<crate::record::JobRecord>, crate::ports::StoreError> {
            let rec = self.inner.load_job(id).await;
            if self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                self.barrier.wait().await;
            }
            rec
        }
        async fn commit(
            &self,
            changes: crate::record::Changes,
        ) -> Result<crate::record::Changes, crate::ports::StoreError> {
            self.inner.commit(changes).await
        }
        async fn outbox(
            &self,
            q: &OutboxQuery,
        ) -> Result<Vec<crate::outbox::OutboxEntry>, crate::ports::StoreError> {
            self.inner.outbox(q).await
        }
        async fn active_jobs(
            &self,
            p: &crate::ids::Partition,
            after: Option<JobId>,
            limit: usize,
        ) -> Result<Vec<JobId>, crate::ports::StoreError> {
            self.inner.active_jobs(p, after, limit).await
        }
        async fn partitions(&self) -> Result<Vec<crate::ids::Partition>, crate::ports::StoreError> {
            self.inner.partitions().await
        }
        async fn retire_partition(
            &self,
            p: &crate::ids::Partition,
        ) -> Result<bool, crate::ports::StoreError> {
            self.inner.retire_partition(p).await
        }
        async fn ended_jobs(
            &self,
            ended_by: Timestamp,
            limit: usize,
        ) -> Result<Vec<crate::ports::EndedJob>, crate::ports::StoreError> {
            self.inner.ended_jobs(ended_by, limit).await
        }
        async fn purge_job(
            &self,
            id: &JobId,
            revision: &crate::revision::Revision,
        ) -> Result<(), crate::ports::StoreError> {
            self.inner.purge_job(id, revision).await
        }
        async fn ping(&self) -> Result<(), crate::ports::StoreError> {
            self.inner.ping().await
        }
    }

    #[tokio::test]
    async fn of_two_claims_that_read_the_same_entry_only_the_one_that_commits_gets_it() {
        let mem = MemoryStore::new();
        let clock = ManualClock::new(T0);
        let submitter = Engine::new(
            Arc::new(mem.clone()),
            Arc::new(MemoryPublisher::new()),
            Arc::new(clock.clone()),
        );
        let out = submitter.submit(command("acme", "k", 0)).await.unwrap();
        let id = out.to_publish[0].clone();
        let store = LockstepLoads {
            inner: mem,
            loads: Default::default(),
            barrier: tokio::sync::Barrier::new(2),
        };
        let e = Engine::new(
            Arc::new(store),
            Arc::new(MemoryPublisher::new()),
            Arc::new(clock),
        );
        let (a, b) = tokio::join!(e.claim(&id), e.claim(&id));
        let got: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
        assert_eq!(got.len(), 1, "exactly one of the two claims hands it out");
    }

    #[tokio::test]
    async fn a_poll_reads_past_full_pages_of_other_steps() {
        let (e, clock, _bus) = rig();
        let e = e.with_config(crate::engine::EngineConfig {
            batch_size: 2,
            ..crate::engine::EngineConfig::default()
        });
        let job = e
            .submit(command("acme", "first", 0))
            .await
            .unwrap()
            .value
            .job_id;
        let ocr = e.claim_due(&PullFilter::steps(["ocr"]), 1).await.unwrap();
        assert_eq!(ocr.len(), 1);
        // Five `ocr` directives come due, then this job's `embed`: with pages of two, the
        // `embed` entry is on the third page of due entries.
        for i in 0..5 {
            clock.advance(Millis(1));
            e.submit(command("acme", &format!("k{i}"), 0))
                .await
                .unwrap();
        }
        clock.advance(Millis(10));
        e.ack(call(&job, "ocr", 1)).await.unwrap();
        e.complete(call(&job, "ocr", 1), json!({})).await.unwrap();
        let got = e.claim_due(&PullFilter::steps(["embed"]), 1).await.unwrap();
        assert_eq!(got.len(), 1, "pages are read while they come back full");
        assert_eq!(&*got[0].job_id, job.as_str());
        // The five `ocr` directives are still there for an `ocr` worker.
        let rest = e.claim_due(&PullFilter::steps(["ocr"]), 10).await.unwrap();
        assert_eq!(rest.len(), 5);
    }

    #[tokio::test]
    async fn the_filter_picks_topics_and_steps_and_leaves_the_rest_pending() {
        let (e, _clock, _bus) = rig();
        let job = e
            .submit(command("acme", "k", 0))
            .await
            .unwrap()
            .value
            .job_id;
        assert!(e
            .claim_due(&PullFilter::steps(["embed"]), 5)
            .await
            .unwrap()
            .is_empty());
        assert!(e
            .claim_due(&PullFilter::topics(["lucius.embed"]), 5)
            .await
            .unwrap()
            .is_empty());
        let rec = e.job(&job).await.unwrap();
        assert_eq!(
            rec.outbox[0].status,
            OutboxStatus::Pending,
            "left for others"
        );
        let topic = rec.outbox[0].directive.topic.to_string();
        let got = e
            .claim_due(
                &PullFilter {
                    topics: vec![topic],
                    steps: vec!["ocr".into()],
                },
                5,
            )
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        // The worker then drives the step as usual; the next directive is claimable.
        e.ack(call(&job, "ocr", 1)).await.unwrap();
        e.complete(call(&job, "ocr", 1), json!({"pages": 1}))
            .await
            .unwrap();
        let next = e.claim_due(&PullFilter::steps(["embed"]), 5).await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].input, Some(json!({"pages": 1}).into()));
    }

    #[tokio::test]
    async fn a_retryable_failure_hands_out_the_next_attempt() {
        let (e, _clock, _bus) = rig();
        let job = e
            .submit(command("acme", "k", 0))
            .await
            .unwrap()
            .value
            .job_id;
        let d = e.claim_due(&PullFilter::any(), 1).await.unwrap().remove(0);
        e.ack(call(&job, "ocr", 1)).await.unwrap();
        let out = e
            .fail(
                call(&job, "ocr", 1),
                Failure {
                    error: "flaky".into(),
                    retryable: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(out.to_publish.len(), 1);
        let again = e.claim_due(&PullFilter::any(), 1).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempt, d.attempt + 1);
    }

    #[tokio::test]
    async fn a_directive_whose_step_moved_on_is_settled_not_handed_out() {
        let (e, _clock, _bus) = rig();
        let job = e
            .submit(command("acme", "k", 0))
            .await
            .unwrap()
            .value
            .job_id;
        e.cancel(&job, "changed my mind").await.unwrap();
        assert!(e.claim_due(&PullFilter::any(), 5).await.unwrap().is_empty());
        let rec = e.job(&job).await.unwrap();
        assert_ne!(rec.outbox[0].status, OutboxStatus::Pending, "settled");
        assert_eq!(e.claim_due(&PullFilter::any(), 0).await.unwrap(), vec![]);
    }
}
