//! Property tests of the state machines (step, job, outbox entry, partition lease): random
//! event sequences whose every answer is checked against a small model of the machine.
//!
//! Each model is written from the tables in `docs/state-machines.md` and design §2, not
//! from the code: for every event it predicts the exact next state, "answered unchanged"
//! (an idempotent repeat), or the exact refusal (`Illegal`, `StaleAttempt`,
//! `LeaseHeldByOther`, `NotDue`, `AlreadyApplied`, lease `HeldByOther`/`Lost`). A machine
//! that refuses a legal event, accepts an illegal one, or refuses with another reason fails.
//! Cases default to 10,000 per machine (`PROPTEST_CASES` overrides).

use std::sync::Arc;

use lucius_core::ids::{JobId, OutboxId, Partition, TenantId};
use lucius_core::{
    Directive, Event, Failure, Job, JobStatus, Json, Lease, LeaseError, Millis, OutboxEntry,
    OutboxStatus, PublishRetryPolicy, Revision, Step, StepId, StepStatus, Timestamp,
    TransitionError,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Event sequences are drawn as plain integers and decoded (`decode` below): proptest's
/// value trees for nested `prop_oneof!` strategies cost most of the run time in a debug
/// build, integers almost nothing; 0 decodes to the simplest event, so shrinking still
/// heads for short, simple sequences.
fn events<T: std::fmt::Debug>(
    decode: fn(u32) -> T,
    max_len: usize,
) -> impl Strategy<Value = Vec<T>> {
    prop::collection::vec(any::<u32>().prop_map(decode), 1..max_len)
}

/// A time step from `x`: mostly random below 5 s, one time in four exactly on or next to a
/// deadline of the models below (ACK timeout 1 s, step lease 2 s, partition lease 10 s).
fn advance_of(x: u32) -> u64 {
    const EDGES: [u64; 9] = [0, 1, 999, 1_000, 1_001, 1_999, 2_000, 2_001, 10_000];
    if x % 4 == 0 {
        EDGES[(x as usize / 4) % EDGES.len()]
    } else {
        u64::from(x / 4 % 5_000)
    }
}

/// An attempt delta from `x`: mostly the current attempt, the previous one often enough to
/// repeat a retried `fail`, sometimes the next.
fn delta_of(x: u32) -> i8 {
    match x % 9 {
        0..=5 => 0,
        6 | 7 => -1,
        _ => 1,
    }
}

/// What a model predicts for one event.
#[derive(Debug)]
enum Predicted<M> {
    /// Applied: the state after it.
    Next(M),
    /// Answered with the state as it is (a repeat, or a no-op).
    Unchanged,
    /// Refused, with exactly this error.
    Refused(TransitionError),
}

fn illegal(machine: &'static str, from: &'static str, event: Event) -> TransitionError {
    TransitionError::Illegal {
        machine,
        from,
        event,
    }
}

// ---------- Step ----------

const ACK_TIMEOUT: Millis = Millis(1_000);
const STEP_LEASE: Millis = Millis(2_000);

/// A worker: `None` is a call without `workerId`.
type Who = Option<u8>;

#[derive(Debug, Clone)]
enum StepEv {
    Queue,
    Published(i8),
    Ack(i8, Who),
    Heartbeat(i8, Who),
    /// Attempt delta, worker, result variant.
    Complete(i8, Who, u8),
    /// Attempt delta, worker, error variant, retryable.
    Fail(i8, Who, u8, bool),
    Timeout,
    Cancel,
    Advance(u64),
}

impl StepEv {
    /// Weights: queue 1, published 3, ack 3, heartbeat 2, complete 3, fail 3, timeout 2,
    /// cancel 1, advance 4.
    fn decode(x: u32) -> StepEv {
        const KINDS: [u8; 22] = [
            0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 7, 8, 8, 8, 8,
        ];
        let rest = x / 22;
        let d = delta_of(rest);
        let who = match rest / 9 % 3 {
            0 => None,
            w => Some(w as u8 - 1),
        };
        let variant = (rest / 27 % 2) as u8;
        let retryable = rest / 54 % 2 == 1;
        match KINDS[(x % 22) as usize] {
            0 => StepEv::Queue,
            1 => StepEv::Published(d),
            2 => StepEv::Ack(d, who),
            3 => StepEv::Heartbeat(d, who),
            4 => StepEv::Complete(d, who, variant),
            5 => StepEv::Fail(d, who, variant, retryable),
            6 => StepEv::Timeout,
            7 => StepEv::Cancel,
            _ => StepEv::Advance(advance_of(rest)),
        }
    }
}

fn new_step(max_attempts: u32) -> Step {
    Step {
        job_id: JobId::derive(&TenantId::parse("t").unwrap(), "k"),
        index: 0,
        step_id: StepId::parse("s").unwrap(),
        topic: "s".into(),
        status: StepStatus::Pending,
        attempt: 0,
        max_attempts,
        ack_timeout: ACK_TIMEOUT,
        lease_duration: STEP_LEASE,
        payload: Json::null(),
        ack_deadline: None,
        lease_expires_at: None,
        worker_id: None,
        result: None,
        error: None,
        updated_at: Timestamp(0),
        revision: Revision::NEW,
    }
}

fn worker_name(w: u8) -> String {
    format!("w{w}")
}

fn result_json(v: u8) -> Json {
    Json::from(serde_json::json!({ "r": v }))
}

fn error_text(v: u8) -> String {
    format!("error {v}")
}

/// The step as the tables describe it.
#[derive(Debug, Clone, PartialEq)]
struct StepModel {
    status: StepStatus,
    attempt: u32,
    max_attempts: u32,
    /// Set exactly while `INITIATED`.
    ack_deadline: Option<Timestamp>,
    /// Set exactly while `RUNNING`.
    lease_until: Option<Timestamp>,
    /// The named lease holder (`None`: acked anonymously, or not acked).
    holder: Option<String>,
    /// The result variant, once `SUCCEEDED`.
    result: Option<u8>,
    /// The worker failure that ended an attempt (attempt, error variant, retryable), until a
    /// later attempt fails or times out: while it stands, a `fail` of that attempt is a repeat.
    failure: Option<(u32, u8, bool)>,
}

impl StepModel {
    fn new(max_attempts: u32) -> StepModel {
        StepModel {
            status: StepStatus::Pending,
            attempt: 0,
            max_attempts,
            ack_deadline: None,
            lease_until: None,
            holder: None,
            result: None,
            failure: None,
        }
    }

    fn from(&self) -> &'static str {
        match self.status {
            StepStatus::Pending => "PENDING",
            StepStatus::Queued => "QUEUED",
            StepStatus::Initiated => "INITIATED",
            StepStatus::Running => "RUNNING",
            StepStatus::Succeeded => "SUCCEEDED",
            StepStatus::Failed => "FAILED",
            StepStatus::Cancelled => "CANCELLED",
        }
    }

    fn finished(&self) -> bool {
        matches!(
            self.status,
            StepStatus::Succeeded | StepStatus::Failed | StepStatus::Cancelled
        )
    }

    /// Worker events need a live step (queued, not finished) and its current attempt.
    fn live_attempt(&self, attempt: u32, event: Event) -> Result<(), TransitionError> {
        if self.finished() || self.status == StepStatus::Pending {
            return Err(illegal("step", self.from(), event));
        }
        if attempt != self.attempt {
            return Err(TransitionError::StaleAttempt {
                current: self.attempt,
                got: attempt,
            });
        }
        Ok(())
    }

    /// While a named worker's lease runs, only that worker may act.
    fn lease_allows(&self, who: Option<&str>, now: Timestamp) -> Result<(), TransitionError> {
        match (&self.holder, self.lease_until) {
            (Some(holder), Some(until)) if now < until && who != Some(holder.as_str()) => {
                Err(TransitionError::LeaseHeldByOther {
                    step: "s".into(),
                    holder: holder.clone(),
                    caller: who.map(str::to_owned),
                    until,
                })
            }
            _ => Ok(()),
        }
    }

    fn with_status(&self, status: StepStatus) -> StepModel {
        StepModel {
            status,
            ack_deadline: None,
            lease_until: None,
            ..self.clone()
        }
    }

    /// The attempt ended badly: the next attempt, queued, or `FAILED` at `maxAttempts`.
    fn retry_or_fail(&self) -> StepModel {
        if self.attempt >= self.max_attempts {
            return self.with_status(StepStatus::Failed);
        }
        StepModel {
            attempt: self.attempt + 1,
            holder: None,
            ..self.with_status(StepStatus::Queued)
        }
    }

    fn predict(&self, ev: &StepEv, now: Timestamp) -> Predicted<StepModel> {
        match self.apply(ev, now) {
            Ok(Some(next)) => Predicted::Next(next),
            Ok(None) => Predicted::Unchanged,
            Err(e) => Predicted::Refused(e),
        }
    }

    fn attempt_of(&self, delta: i8) -> u32 {
        (i64::from(self.attempt) + i64::from(delta)).max(0) as u32
    }

    fn apply(&self, ev: &StepEv, now: Timestamp) -> Result<Option<StepModel>, TransitionError> {
        use StepStatus::*;
        let name = |w: &Who| w.map(worker_name);
        match ev {
            StepEv::Queue => match self.status {
                Pending => Ok(Some(StepModel {
                    attempt: 1,
                    ..self.with_status(Queued)
                })),
                _ => Err(illegal("step", self.from(), Event::Queue)),
            },
            StepEv::Published(d) => {
                self.live_attempt(self.attempt_of(*d), Event::Published)?;
                if self.status != Queued {
                    return Err(illegal("step", self.from(), Event::Published));
                }
                Ok(Some(StepModel {
                    ack_deadline: Some(now.plus(ACK_TIMEOUT)),
                    ..self.with_status(Initiated)
                }))
            }
            StepEv::Ack(d, w) => {
                self.live_attempt(self.attempt_of(*d), Event::Ack)?;
                if self.status == Running {
                    self.lease_allows(name(w).as_deref(), now)?;
                }
                Ok(Some(StepModel {
                    lease_until: Some(now.plus(STEP_LEASE)),
                    holder: name(w),
                    ..self.with_status(Running)
                }))
            }
            StepEv::Heartbeat(d, w) => {
                self.live_attempt(self.attempt_of(*d), Event::Heartbeat)?;
                if self.status != Running {
                    return Err(illegal("step", self.from(), Event::Heartbeat));
                }
                self.lease_allows(name(w).as_deref(), now)?;
                Ok(Some(StepModel {
                    lease_until: Some(now.plus(STEP_LEASE)),
                    ..self.clone()
                }))
            }
            StepEv::Complete(d, w, v) => {
                let attempt = self.attempt_of(*d);
                if self.status == Succeeded && attempt == self.attempt {
                    return if self.result == Some(*v) {
                        Ok(None)
                    } else {
                        Err(TransitionError::AlreadyApplied {
                            step: "s".into(),
                            event: Event::Complete,
                            attempt,
                        })
                    };
                }
                self.live_attempt(attempt, Event::Complete)?;
                if self.status != Running {
                    return Err(illegal("step", self.from(), Event::Complete));
                }
                self.lease_allows(name(w).as_deref(), now)?;
                Ok(Some(StepModel {
                    result: Some(*v),
                    ..self.with_status(Succeeded)
                }))
            }
            StepEv::Fail(d, w, v, retryable) => {
                let attempt = self.attempt_of(*d);
                if let Some((ended, error, flag)) = self.failure {
                    if ended == attempt {
                        return if (error, flag) == (*v, *retryable) {
                            Ok(None)
                        } else {
                            Err(TransitionError::AlreadyApplied {
                                step: "s".into(),
                                event: Event::Fail,
                                attempt,
                            })
                        };
                    }
                }
                self.live_attempt(attempt, Event::Fail)?;
                if self.status == Running {
                    self.lease_allows(name(w).as_deref(), now)?;
                }
                let failed = StepModel {
                    failure: Some((attempt, *v, *retryable)),
                    ..self.clone()
                };
                Ok(Some(if *retryable {
                    failed.retry_or_fail()
                } else {
                    failed.with_status(Failed)
                }))
            }
            StepEv::Timeout => {
                let due = match self.status {
                    Initiated => self.ack_deadline,
                    Running => self.lease_until,
                    _ => return Err(illegal("step", self.from(), Event::Timeout)),
                };
                let due = due.expect("INITIATED has an ACK deadline, RUNNING a lease");
                if now < due {
                    return Err(TransitionError::NotDue { due_at: due, now });
                }
                Ok(Some(
                    StepModel {
                        failure: None,
                        ..self.clone()
                    }
                    .retry_or_fail(),
                ))
            }
            StepEv::Cancel => {
                if self.finished() {
                    return Err(illegal("step", self.from(), Event::Cancel));
                }
                Ok(Some(self.with_status(Cancelled)))
            }
            StepEv::Advance(_) => Ok(None),
        }
    }

    /// Whether `step` shows what the model holds (the holder only while it matters).
    fn matches(&self, step: &Step) -> bool {
        let live = matches!(
            self.status,
            StepStatus::Queued | StepStatus::Initiated | StepStatus::Running
        );
        step.status == self.status
            && step.attempt == self.attempt
            && step.ack_deadline == self.ack_deadline
            && step.lease_expires_at == self.lease_until
            && (!live || step.worker_id.as_deref() == self.holder.as_deref())
            && step.result == self.result.map(result_json)
    }
}

fn run_step_event(s: &Step, ev: &StepEv, now: Timestamp) -> Result<Step, TransitionError> {
    let attempt = |d: i8| (i64::from(s.attempt) + i64::from(d)).max(0) as u32;
    let name = |w: &Who| w.map(worker_name);
    match ev {
        StepEv::Queue => s.on_queue(now),
        StepEv::Published(d) => s.on_published(attempt(*d), now),
        StepEv::Ack(d, w) => s.on_ack(attempt(*d), name(w).as_deref(), now),
        StepEv::Heartbeat(d, w) => s.on_heartbeat(attempt(*d), name(w).as_deref(), now),
        StepEv::Complete(d, w, v) => {
            s.on_complete(attempt(*d), name(w).as_deref(), result_json(*v), now)
        }
        StepEv::Fail(d, w, v, r) => s.on_fail(
            attempt(*d),
            name(w).as_deref(),
            &Failure {
                error: error_text(*v),
                retryable: *r,
            },
            now,
        ),
        StepEv::Timeout => s.on_timeout(now),
        StepEv::Cancel => s.on_cancel(now),
        StepEv::Advance(_) => Ok(s.clone()),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn step_machine_answers_every_event_as_the_model_predicts(
        max_attempts in 1u32..5,
        events in events(StepEv::decode, 40),
    ) {
        let mut s = new_step(max_attempts);
        let mut m = StepModel::new(max_attempts);
        let mut now = Timestamp(0);
        for ev in events {
            if let StepEv::Advance(ms) = ev {
                now = now.plus(Millis(ms));
                continue;
            }
            let predicted = m.predict(&ev, now);
            let got = run_step_event(&s, &ev, now);
            match (predicted, got) {
                (Predicted::Unchanged, Ok(next)) => {
                    prop_assert_eq!(&next, &s, "{:?} should have answered the step as it is", ev);
                }
                (Predicted::Next(next_model), Ok(next)) => {
                    prop_assert!(next_model.matches(&next),
                        "{:?} at {:?} on {:?}:\n expected {:?}\n found    {:?}", ev, now, m, next_model, next);
                    prop_assert_eq!(next.updated_at, now);
                    prop_assert_eq!((&next.job_id, &next.step_id, &next.payload, next.max_attempts),
                        (&s.job_id, &s.step_id, &s.payload, s.max_attempts));
                    if let StepEv::Fail(_, _, v, _) = &ev {
                        // A worker's failure is recorded with its text and attempt.
                        let error = next.error.as_deref().unwrap_or_default();
                        prop_assert!(error.contains(&error_text(*v)) && error.contains(&format!("attempt {}", s.attempt)),
                            "the failure of attempt {} is recorded as {:?}", s.attempt, error);
                    }
                    if next.status == StepStatus::Failed {
                        prop_assert!(next.error.is_some(), "FAILED without a reason");
                    }
                    s = next;
                    m = next_model;
                }
                (Predicted::Refused(expected), Err(found)) => {
                    prop_assert_eq!(found, expected, "{:?} at {:?} on {:?}", ev, now, m);
                }
                (predicted, got) => {
                    prop_assert!(false, "{:?} at {:?} on {:?}:\n expected {:?}\n found    {:?}", ev, now, m, predicted, got);
                }
            }
        }
    }
}

// ---------- Job ----------

#[derive(Debug, Clone, Copy)]
enum JobEv {
    Start,
    Succeed,
    Fail(u8),
    Cancel(u8),
}

fn new_job() -> Job {
    let tenant = TenantId::parse("t").unwrap();
    Job {
        id: JobId::derive(&tenant, "k"),
        partition: Partition::of(&tenant, Timestamp(0)),
        tenant_id: tenant,
        request_type: "r".into(),
        idempotency_key: "k".into(),
        correlation_id: None,
        request_hash: lucius_core::idempotency::RequestHash::from_bytes([0; 32]),
        payload: Json::null(),
        step_count: 1,
        status: JobStatus::Accepted,
        error: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        revision: Revision::NEW,
    }
}

/// The job as design §2 describes it: status and the reason it ended.
#[derive(Debug, Clone, PartialEq)]
struct JobModel {
    status: JobStatus,
    reason: Option<String>,
}

impl JobModel {
    fn from(&self) -> &'static str {
        match self.status {
            JobStatus::Accepted => "ACCEPTED",
            JobStatus::InProgress => "IN_PROGRESS",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    fn predict(&self, ev: JobEv) -> Predicted<JobModel> {
        use JobStatus::*;
        let to = |status, reason: Option<String>| Predicted::Next(JobModel { status, reason });
        let refused = |event| Predicted::Refused(illegal("job", self.from(), event));
        let open = matches!(self.status, Accepted | InProgress);
        match ev {
            JobEv::Start if self.status == Accepted => to(InProgress, None),
            JobEv::Start if self.status == InProgress => Predicted::Unchanged,
            JobEv::Start => refused(Event::Start),
            JobEv::Succeed if self.status == InProgress => to(Succeeded, None),
            JobEv::Succeed => refused(Event::Succeed),
            JobEv::Fail(r) if open => to(Failed, Some(format!("reason {r}"))),
            JobEv::Fail(_) => refused(Event::Fail),
            JobEv::Cancel(r) if open => to(Cancelled, Some(format!("reason {r}"))),
            JobEv::Cancel(_) => refused(Event::Cancel),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn job_machine_answers_every_event_as_the_model_predicts(events in prop::collection::vec(
        prop_oneof![
            Just(JobEv::Start),
            Just(JobEv::Succeed),
            (0u8..3).prop_map(JobEv::Fail),
            (0u8..3).prop_map(JobEv::Cancel),
        ], 1..20)
    ) {
        let mut j = new_job();
        let mut m = JobModel { status: JobStatus::Accepted, reason: None };
        for (i, ev) in events.into_iter().enumerate() {
            let now = Timestamp(i as i64 + 1);
            let got = match ev {
                JobEv::Start => j.on_start(now),
                JobEv::Succeed => j.on_succeeded(now),
                JobEv::Fail(r) => j.on_failed(&format!("reason {r}"), now),
                JobEv::Cancel(r) => j.on_cancel(&format!("reason {r}"), now),
            };
            match (m.predict(ev), got) {
                (Predicted::Unchanged, Ok(next)) => prop_assert_eq!(&next, &j, "{:?}", ev),
                (Predicted::Next(next_model), Ok(next)) => {
                    prop_assert_eq!((next.status, next.error.as_deref(), next.updated_at),
                        (next_model.status, next_model.reason.as_deref(), now), "{:?} on {:?}", ev, m);
                    j = next;
                    m = next_model;
                }
                (Predicted::Refused(expected), Err(found)) => prop_assert_eq!(found, expected),
                (predicted, got) => prop_assert!(false, "{:?} on {:?}: expected {:?}, found {:?}", ev, m, predicted, got),
            }
        }
    }
}

// ---------- Outbox ----------

#[derive(Debug, Clone, Copy)]
enum OutEv {
    Sent,
    /// Error variant, permanent.
    Failed(u8, bool),
    AdminRetry,
    Supersede,
    Advance(u64),
}

impl OutEv {
    /// Weights: sent 3, failed 4, admin retry 1, supersede 1, advance 3.
    fn decode(x: u32) -> OutEv {
        let rest = x / 12;
        match x % 12 {
            0..=2 => OutEv::Sent,
            3..=6 => OutEv::Failed((rest % 2) as u8, rest / 2 % 2 == 1),
            7 => OutEv::AdminRetry,
            8 => OutEv::Supersede,
            _ => OutEv::Advance(u64::from(rest % 100_000)),
        }
    }
}

fn new_entry() -> OutboxEntry {
    let tenant = TenantId::parse("t").unwrap();
    let job = JobId::derive(&tenant, "k");
    let id = OutboxId::for_attempt(&job, 0, 1);
    OutboxEntry {
        directive: Arc::new(Directive {
            schema_version: 1,
            directive_id: id.shared(),
            job_id: job.shared(),
            tenant_id: "t".into(),
            request_type: "r".into(),
            correlation_id: None,
            step_id: "s".into(),
            step_index: 0,
            step_count: 1,
            attempt: 1,
            max_attempts: 1,
            topic: "s".into(),
            ack_timeout_ms: 1,
            lease_duration_ms: 1,
            issued_at: Timestamp(0),
            payload: Json::null(),
            command: Json::null(),
            input: None,
        }),
        id,
        partition: Partition::of(&tenant, Timestamp(0)),
        job_id: job,
        step_index: 0,
        attempt: 1,
        status: OutboxStatus::Pending,
        publish_attempts: 0,
        next_attempt_at: Timestamp(0),
        last_error: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        sent_at: None,
        fence: 0,
        revision: Revision::NEW,
    }
}

/// The outbox entry as design §2 and `docs/state-machines.md` describe it.
#[derive(Debug, Clone, PartialEq)]
struct OutModel {
    status: OutboxStatus,
    publish_attempts: u32,
    /// The earliest and latest allowed `nextAttemptAt` (equal unless a backoff's jitter
    /// leaves room); once checked, the entry's value is adopted.
    next_attempt_at: (Timestamp, Timestamp),
    last_error: Option<String>,
    sent_at: Option<Timestamp>,
}

impl OutModel {
    fn from(&self) -> &'static str {
        match self.status {
            OutboxStatus::Pending => "PENDING",
            OutboxStatus::Sent => "SENT",
            OutboxStatus::Dead => "DEAD",
        }
    }

    fn predict(
        &self,
        ev: OutEv,
        policy: PublishRetryPolicy,
        now: Timestamp,
    ) -> Predicted<OutModel> {
        use OutboxStatus::*;
        let refused = |event| Predicted::Refused(illegal("outbox entry", self.from(), event));
        let pending = self.status == Pending;
        match ev {
            OutEv::Sent if pending => Predicted::Next(OutModel {
                status: Sent,
                sent_at: Some(now),
                ..self.clone()
            }),
            OutEv::Sent => refused(Event::Published),
            OutEv::Failed(e, permanent) if pending => {
                let attempts = self.publish_attempts + 1;
                let dead = permanent || attempts >= policy.max_attempts;
                let earliest = now.plus(policy.delay);
                Predicted::Next(OutModel {
                    status: if dead { Dead } else { Pending },
                    publish_attempts: attempts,
                    next_attempt_at: if dead {
                        self.next_attempt_at
                    } else {
                        (earliest, earliest.plus(Millis(policy.delay.0 / 5)))
                    },
                    last_error: Some(format!("publish error {e}")),
                    ..self.clone()
                })
            }
            OutEv::Failed(..) => refused(Event::PublishFailed),
            OutEv::AdminRetry if self.status != Sent => Predicted::Next(OutModel {
                status: Pending,
                publish_attempts: 0,
                next_attempt_at: (now, now),
                ..self.clone()
            }),
            OutEv::AdminRetry => refused(Event::AdminRetry),
            OutEv::Supersede if pending => Predicted::Next(OutModel {
                status: Dead,
                last_error: Some("superseded: gone".into()),
                ..self.clone()
            }),
            OutEv::Supersede => refused(Event::Supersede),
            OutEv::Advance(_) => Predicted::Unchanged,
        }
    }

    fn matches(&self, e: &OutboxEntry) -> bool {
        let (lo, hi) = self.next_attempt_at;
        e.status == self.status
            && e.publish_attempts == self.publish_attempts
            && lo <= e.next_attempt_at
            && e.next_attempt_at <= hi
            && e.last_error.as_deref() == self.last_error.as_deref()
            && e.sent_at == self.sent_at
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn outbox_machine_answers_every_event_as_the_model_predicts(
        max_attempts in 1u32..6,
        delay_ms in 0u64..60_000,
        events in events(OutEv::decode, 40),
    ) {
        let policy = PublishRetryPolicy { delay: Millis(delay_ms), max_attempts };
        let mut e = new_entry();
        let mut m = OutModel {
            status: OutboxStatus::Pending,
            publish_attempts: 0,
            next_attempt_at: (Timestamp(0), Timestamp(0)),
            last_error: None,
            sent_at: None,
        };
        let mut now = Timestamp(0);
        for ev in events {
            let got = match ev {
                OutEv::Sent => e.on_sent(now),
                OutEv::Failed(err, permanent) => e.on_publish_failed(&format!("publish error {err}"), permanent, policy, now),
                OutEv::AdminRetry => e.on_admin_retry(now),
                OutEv::Supersede => e.on_superseded("gone", now),
                OutEv::Advance(ms) => { now = now.plus(Millis(ms)); Ok(e.clone()) }
            };
            match (m.predict(ev, policy, now), got) {
                (Predicted::Unchanged, Ok(next)) => prop_assert_eq!(&next, &e),
                (Predicted::Next(mut next_model), Ok(next)) => {
                    prop_assert!(next_model.matches(&next),
                        "{:?} at {:?} on {:?}:\n expected {:?}\n found    {:?}", ev, now, m, next_model, next);
                    prop_assert_eq!((next.updated_at, &next.id, next.attempt), (now, &e.id, e.attempt));
                    next_model.next_attempt_at = (next.next_attempt_at, next.next_attempt_at);
                    e = next;
                    m = next_model;
                }
                (Predicted::Refused(expected), Err(found)) => prop_assert_eq!(found, expected, "{:?} on {:?}", ev, m),
                (predicted, got) => prop_assert!(false, "{:?} at {:?} on {:?}:\n expected {:?}\n found    {:?}", ev, now, m, predicted, got),
            }
            // Due means pending and its time has come.
            prop_assert_eq!(e.is_due(now), m.status == OutboxStatus::Pending && m.next_attempt_at.0 <= now);
        }
    }
}

// ---------- Partition lease ----------

const PARTITION_LEASE: Millis = Millis(10_000);

#[derive(Debug, Clone, Copy)]
enum LeaseEv {
    Acquire(u8),
    /// Dispatcher, epoch delta from the current epoch.
    Renew(u8, i8),
    Release(u8, i8),
    Advance(u64),
}

impl LeaseEv {
    /// Weights: acquire 3, renew 3, release 1, advance 3.
    fn decode(x: u32) -> LeaseEv {
        let rest = x / 10;
        let who = (rest % 3) as u8;
        let d = delta_of(rest / 3);
        match x % 10 {
            0..=2 => LeaseEv::Acquire(who),
            3..=5 => LeaseEv::Renew(who, d),
            6 => LeaseEv::Release(who, d.min(0)),
            _ => LeaseEv::Advance(advance_of(rest)),
        }
    }
}

/// The lease as `docs/operations.md` and the `lease.rs` header describe it.
#[derive(Debug, Clone, PartialEq)]
struct LeaseModel {
    owner: Option<String>,
    expires_at: Timestamp,
    epoch: u64,
}

impl LeaseModel {
    fn held_by(&self, me: &str, now: Timestamp) -> bool {
        self.owner.as_deref() == Some(me) && now < self.expires_at
    }

    fn lost(&self) -> LeaseError {
        LeaseError::Lost {
            partition: partition(),
            epoch: self.epoch,
            owner: self.owner.clone(),
        }
    }
}

fn partition() -> Partition {
    Partition::parse("t#202401").unwrap()
}

/// A free or expired lease goes to whoever asks, with a new epoch; a live one stays its
/// owner's (who renews it in place); renewal and release need the current owner and epoch,
/// renewal also an unexpired lease.
fn predict_lease(
    current: Option<&LeaseModel>,
    ev: LeaseEv,
    now: Timestamp,
) -> Result<Option<LeaseModel>, LeaseError> {
    let until = now.plus(PARTITION_LEASE);
    let epoch_of = |l: &LeaseModel, d: i8| (l.epoch as i64 + i64::from(d)).max(0) as u64;
    match (ev, current) {
        (LeaseEv::Acquire(w), None) => Ok(Some(LeaseModel {
            owner: Some(worker_name(w)),
            expires_at: until,
            epoch: 1,
        })),
        (LeaseEv::Acquire(w), Some(l)) if l.held_by(&worker_name(w), now) => Ok(Some(LeaseModel {
            expires_at: until,
            ..l.clone()
        })),
        (LeaseEv::Acquire(_), Some(l)) if l.owner.is_some() && now < l.expires_at => {
            Err(LeaseError::HeldByOther {
                partition: partition(),
                owner: l.owner.clone().unwrap_or_default(),
                until: l.expires_at,
            })
        }
        (LeaseEv::Acquire(w), Some(l)) => Ok(Some(LeaseModel {
            owner: Some(worker_name(w)),
            expires_at: until,
            epoch: l.epoch + 1,
        })),
        (LeaseEv::Renew(w, d), Some(l)) => {
            if epoch_of(l, d) == l.epoch && l.held_by(&worker_name(w), now) {
                Ok(Some(LeaseModel {
                    expires_at: until,
                    ..l.clone()
                }))
            } else {
                Err(l.lost())
            }
        }
        (LeaseEv::Release(w, d), Some(l)) => {
            if epoch_of(l, d) == l.epoch && l.owner.as_deref() == Some(worker_name(w).as_str()) {
                Ok(Some(LeaseModel {
                    owner: None,
                    expires_at: now,
                    ..l.clone()
                }))
            } else {
                Err(l.lost())
            }
        }
        // Nothing to renew or release yet; the test skips these.
        (LeaseEv::Renew(..) | LeaseEv::Release(..) | LeaseEv::Advance(_), _) => Ok(None),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn partition_lease_answers_every_call_as_the_model_predicts(
        events in events(LeaseEv::decode, 30)
    ) {
        let p = partition();
        let mut lease: Option<Lease> = None;
        let mut m: Option<LeaseModel> = None;
        let mut now = Timestamp(0);
        for ev in events {
            let got = match (ev, &lease) {
                (LeaseEv::Advance(ms), _) => { now = now.plus(Millis(ms)); continue; }
                (LeaseEv::Acquire(w), l) => Lease::acquire(l.as_ref(), &p, &worker_name(w), PARTITION_LEASE, now),
                (LeaseEv::Renew(w, d), Some(l)) => l.renew(&worker_name(w), (l.epoch as i64 + i64::from(d)).max(0) as u64, PARTITION_LEASE, now),
                (LeaseEv::Release(w, d), Some(l)) => l.release(&worker_name(w), (l.epoch as i64 + i64::from(d)).max(0) as u64, now),
                (LeaseEv::Renew(..) | LeaseEv::Release(..), None) => continue,
            };
            match (predict_lease(m.as_ref(), ev, now), got) {
                (Ok(Some(next_model)), Ok(next)) => {
                    prop_assert_eq!((&next.owner, next.expires_at, next.epoch, &next.partition),
                        (&next_model.owner, next_model.expires_at, next_model.epoch, &p), "{:?} at {:?} on {:?}", ev, now, m);
                    lease = Some(next);
                    m = Some(next_model);
                }
                (Err(expected), Err(found)) => prop_assert_eq!(found, expected, "{:?} at {:?} on {:?}", ev, now, m),
                (predicted, got) => prop_assert!(false, "{:?} at {:?} on {:?}:\n expected {:?}\n found    {:?}", ev, now, m, predicted, got),
            }
        }
    }
}
