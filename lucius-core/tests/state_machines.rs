//! Property tests of the three state machines: random event sequences against the
//! allowed-transition tables. Cases default to 10,000 per machine (`PROPTEST_CASES`
//! overrides).

use lucius_core::ids::{JobId, OutboxId, Partition, TenantId};
use lucius_core::{
    Directive, Failure, Job, JobStatus, Millis, OutboxEntry, OutboxStatus, PublishRetryPolicy,
    Revision, Step, StepId, StepStatus, Timestamp, TransitionError,
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

// ---------- Step ----------

#[derive(Debug, Clone)]
enum StepEv {
    Queue,
    Published(i8),
    Ack(i8, u8),
    Heartbeat(i8, u8),
    Complete(i8, u8),
    Fail(i8, u8, bool),
    Timeout,
    Cancel,
    Advance(u32),
}

fn step_ev() -> impl Strategy<Value = StepEv> {
    let delta = prop_oneof![8 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)];
    let worker = 0u8..3;
    prop_oneof![
        1 => Just(StepEv::Queue),
        3 => delta.clone().prop_map(StepEv::Published),
        3 => (delta.clone(), worker.clone()).prop_map(|(d, w)| StepEv::Ack(d, w)),
        2 => (delta.clone(), worker.clone()).prop_map(|(d, w)| StepEv::Heartbeat(d, w)),
        2 => (delta.clone(), worker.clone()).prop_map(|(d, w)| StepEv::Complete(d, w)),
        2 => (delta, worker, any::<bool>()).prop_map(|(d, w, r)| StepEv::Fail(d, w, r)),
        2 => Just(StepEv::Timeout),
        1 => Just(StepEv::Cancel),
        3 => (0u32..5_000).prop_map(StepEv::Advance),
    ]
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
        ack_timeout: Millis(1_000),
        lease_duration: Millis(2_000),
        payload: lucius_core::Json::null(),
        ack_deadline: None,
        lease_expires_at: None,
        worker_id: None,
        result: None,
        error: None,
        updated_at: Timestamp(0),
        revision: Revision::NEW,
    }
}

fn step_edge_allowed(from: StepStatus, to: StepStatus, attempt_up: bool) -> bool {
    use StepStatus::*;
    if attempt_up {
        return to == Queued && matches!(from, Queued | Initiated | Running);
    }
    matches!(
        (from, to),
        (Pending, Queued)
            | (Queued, Initiated)
            | (Queued | Initiated | Running, Running)
            | (Running, Succeeded)
            | (Queued | Initiated | Running, Failed)
            | (Pending | Queued | Initiated | Running, Cancelled)
    )
}

fn worker(w: u8) -> String {
    format!("w{w}")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn step_machine_never_reaches_an_illegal_state(
        max_attempts in 1u32..5,
        events in prop::collection::vec(step_ev(), 1..40),
    ) {
        let mut s = new_step(max_attempts);
        let mut now = Timestamp(0);
        for ev in events {
            let attempt = |d: i8| (s.attempt as i64 + d as i64).max(0) as u32;
            let res = match &ev {
                StepEv::Queue => s.on_queue(now),
                StepEv::Published(d) => s.on_published(attempt(*d), now),
                StepEv::Ack(d, w) => s.on_ack(attempt(*d), Some(&worker(*w)), now),
                StepEv::Heartbeat(d, w) => s.on_heartbeat(attempt(*d), Some(&worker(*w)), now),
                StepEv::Complete(d, w) => s.on_complete(attempt(*d), Some(&worker(*w)), serde_json::json!(1).into(), now),
                StepEv::Fail(d, w, r) => s.on_fail(attempt(*d), Some(&worker(*w)), &Failure { error: "e".into(), retryable: *r }, now),
                StepEv::Timeout => s.on_timeout(now),
                StepEv::Cancel => s.on_cancel(now),
                StepEv::Advance(ms) => { now = now.plus(Millis(u64::from(*ms))); continue; }
            };
            match res {
                Ok(next) => {
                    // Terminal states never change.
                    prop_assert!(!s.status.is_terminal(), "{:?} left terminal {:?}", ev, s.status);
                    let up = next.attempt != s.attempt;
                    if up && s.status != StepStatus::Pending {
                        prop_assert_eq!(next.attempt, s.attempt + 1, "attempts grow by one");
                    }
                    prop_assert!(next.attempt >= s.attempt, "attempts never decrease");
                    let legal = step_edge_allowed(s.status, next.status, up && s.status != StepStatus::Pending)
                        || (s.status == StepStatus::Pending && next.status == StepStatus::Queued && next.attempt == 1);
                    prop_assert!(legal, "illegal edge {:?} -> {:?} on {:?}", s.status, next.status, ev);
                    // Stale events are never applied.
                    let named = match &ev {
                        StepEv::Published(d) | StepEv::Ack(d, _) | StepEv::Heartbeat(d, _)
                        | StepEv::Complete(d, _) | StepEv::Fail(d, _, _) => Some(attempt(*d)),
                        _ => None,
                    };
                    if let Some(a) = named {
                        prop_assert_eq!(a, s.attempt, "an event for attempt {} was applied at attempt {}", a, s.attempt);
                    }
                    s = next;
                }
                Err(TransitionError::StaleAttempt { current, got }) => {
                    prop_assert_eq!(current, s.attempt);
                    prop_assert_ne!(got, s.attempt);
                }
                Err(_) => {}
            }
            prop_assert!(s.attempt <= s.max_attempts, "attempt {} > max {}", s.attempt, s.max_attempts);
            match s.status {
                StepStatus::Initiated => prop_assert!(s.ack_deadline.is_some()),
                StepStatus::Running => prop_assert!(s.lease_expires_at.is_some()),
                StepStatus::Succeeded => prop_assert!(s.result.is_some()),
                StepStatus::Pending => prop_assert_eq!(s.attempt, 0),
                // A step cancelled before it was queued never had an attempt.
                StepStatus::Cancelled => {}
                _ => prop_assert!(s.attempt >= 1),
            }
        }
    }
}

// ---------- Job ----------

#[derive(Debug, Clone, Copy)]
enum JobEv {
    Start,
    Succeed,
    Fail,
    Cancel,
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
        payload: lucius_core::Json::null(),
        step_count: 1,
        status: JobStatus::Accepted,
        error: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        revision: Revision::NEW,
    }
}

fn job_edge_allowed(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    from == to && from == InProgress
        || matches!(
            (from, to),
            (Accepted, InProgress)
                | (InProgress, Succeeded | Failed | Cancelled)
                | (Accepted, Cancelled | Failed)
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn job_machine_follows_its_table(events in prop::collection::vec(
        prop_oneof![Just(JobEv::Start), Just(JobEv::Succeed), Just(JobEv::Fail), Just(JobEv::Cancel)], 1..20)
    ) {
        let mut j = new_job();
        for (i, ev) in events.into_iter().enumerate() {
            let now = Timestamp(i as i64);
            let res = match ev {
                JobEv::Start => j.on_start(now),
                JobEv::Succeed => j.on_succeeded(now),
                JobEv::Fail => j.on_failed("x", now),
                JobEv::Cancel => j.on_cancel("x", now),
            };
            match res {
                Ok(next) => {
                    prop_assert!(!j.status.is_terminal(), "terminal {:?} changed", j.status);
                    prop_assert!(job_edge_allowed(j.status, next.status), "{:?} -> {:?}", j.status, next.status);
                    j = next;
                }
                Err(TransitionError::Illegal { machine, from, .. }) => {
                    prop_assert_eq!(machine, "job");
                    prop_assert_eq!(from, j.status.as_str());
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}

// ---------- Outbox ----------

#[derive(Debug, Clone, Copy)]
enum OutEv {
    Sent,
    Failed(bool),
    AdminRetry,
    Supersede,
    Advance(u32),
}

fn new_entry() -> OutboxEntry {
    let tenant = TenantId::parse("t").unwrap();
    let job = JobId::derive(&tenant, "k");
    let id = OutboxId::for_attempt(&job, 0, 1);
    OutboxEntry {
        directive: std::sync::Arc::new(Directive {
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
            payload: lucius_core::Json::null(),
            command: lucius_core::Json::null(),
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

proptest! {
    #![proptest_config(config())]

    #[test]
    fn outbox_machine_backs_off_and_dies_on_schedule(
        max_attempts in 1u32..6,
        delay_ms in 0u64..60_000,
        events in prop::collection::vec(prop_oneof![
            3 => Just(OutEv::Sent),
            4 => any::<bool>().prop_map(OutEv::Failed),
            1 => Just(OutEv::AdminRetry),
            1 => Just(OutEv::Supersede),
            3 => (0u32..100_000).prop_map(OutEv::Advance),
        ], 1..40),
    ) {
        let policy = PublishRetryPolicy { delay: Millis(delay_ms), max_attempts };
        let mut e = new_entry();
        let mut now = Timestamp(0);
        for ev in events {
            let res = match ev {
                OutEv::Sent => e.on_sent(now),
                OutEv::Failed(permanent) => e.on_publish_failed("x", permanent, policy, now),
                OutEv::AdminRetry => e.on_admin_retry(now),
                OutEv::Supersede => e.on_superseded("gone", now),
                OutEv::Advance(ms) => { now = now.plus(Millis(u64::from(ms))); continue; }
            };
            match res {
                Ok(next) => {
                    prop_assert_ne!(e.status, OutboxStatus::Sent, "SENT is final");
                    match (e.status, next.status, ev) {
                        (OutboxStatus::Pending, OutboxStatus::Sent, OutEv::Sent) => {
                            prop_assert_eq!(next.sent_at, Some(now));
                        }
                        (OutboxStatus::Pending, OutboxStatus::Pending, OutEv::Failed(false)) => {
                            prop_assert_eq!(next.publish_attempts, e.publish_attempts + 1);
                            prop_assert!(next.publish_attempts < max_attempts);
                            let lo = now.plus(Millis(delay_ms));
                            let hi = lo.plus(Millis(delay_ms / 5));
                            prop_assert!(next.next_attempt_at >= lo && next.next_attempt_at <= hi,
                                "backoff {:?} outside [{:?}, {:?}]", next.next_attempt_at, lo, hi);
                        }
                        (OutboxStatus::Pending, OutboxStatus::Dead, OutEv::Failed(permanent)) => {
                            prop_assert!(permanent || next.publish_attempts >= max_attempts);
                        }
                        (OutboxStatus::Pending, OutboxStatus::Dead, OutEv::Supersede) => {}
                        (OutboxStatus::Dead | OutboxStatus::Pending, OutboxStatus::Pending, OutEv::AdminRetry) => {
                            prop_assert_eq!(next.publish_attempts, 0);
                            prop_assert_eq!(next.next_attempt_at, now);
                        }
                        (from, to, ev) => prop_assert!(false, "illegal edge {:?} -> {:?} on {:?}", from, to, ev),
                    }
                    e = next;
                }
                Err(TransitionError::Illegal { machine, .. }) => prop_assert_eq!(machine, "outbox entry"),
                Err(err) => prop_assert!(false, "unexpected error {err}"),
            }
            prop_assert!(e.publish_attempts <= max_attempts);
            prop_assert_eq!(e.is_due(now), e.status == OutboxStatus::Pending && e.next_attempt_at <= now);
        }
    }
}
