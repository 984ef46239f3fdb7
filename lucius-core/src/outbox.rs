//! The [`OutboxEntry`] and its state machine: `PENDING → SENT`, failures back off and end
//! in `DEAD`; an admin retry moves `DEAD | PENDING → PENDING` now.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::directive::Directive;
use crate::ids::{JobId, OutboxId, Partition};
use crate::revision::Revision;
use crate::time::{Millis, Timestamp};
use crate::transition::{Event, TransitionError};

/// An outbox entry's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboxStatus {
    /// Waiting to be published (at or after `nextAttemptAt`).
    Pending,
    /// Published.
    Sent,
    /// Out of publish attempts, failed permanently, or superseded; only an admin revives it.
    Dead,
}

impl OutboxStatus {
    /// All statuses.
    pub const ALL: [OutboxStatus; 3] = [
        OutboxStatus::Pending,
        OutboxStatus::Sent,
        OutboxStatus::Dead,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "PENDING",
            OutboxStatus::Sent => "SENT",
            OutboxStatus::Dead => "DEAD",
        }
    }

    /// Parses a wire name (case-insensitive).
    pub fn parse(s: &str) -> Option<OutboxStatus> {
        OutboxStatus::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s))
    }
}

/// How failed publications are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRetryPolicy {
    /// Base delay before the next attempt (`LUCIUS_OUTBOX_RETRY_DELAY`); up to a fifth more
    /// is added as jitter so entries that failed together do not retry together.
    pub delay: Millis,
    /// Publish attempts before the entry is `DEAD` (`LUCIUS_OUTBOX_MAX_ATTEMPTS`).
    pub max_attempts: u32,
}

/// A directive waiting in, or recorded by, the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// Also the directive id.
    pub id: OutboxId,
    /// The job.
    pub job_id: JobId,
    /// The dispatch partition.
    pub partition: Partition,
    /// The step's index.
    pub step_index: u32,
    /// The step attempt.
    pub attempt: u32,
    /// What to publish. Never changed once the entry exists (a retry is a new entry), so
    /// it is shared: copying an entry, which every load, transition and commit does, is
    /// one reference count instead of eleven.
    pub directive: Arc<Directive>,
    /// Current status.
    pub status: OutboxStatus,
    /// Failed publications so far.
    pub publish_attempts: u32,
    /// Earliest time of the next publication.
    pub next_attempt_at: Timestamp,
    /// The last publication error.
    pub last_error: Option<Arc<str>>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last change.
    pub updated_at: Timestamp,
    /// When it was published.
    pub sent_at: Option<Timestamp>,
    /// Epoch of the partition lease under which a dispatcher last wrote it (0: never
    /// written by a leased dispatcher). A dispatcher with an older epoch may not write it.
    #[serde(default)]
    pub fence: u64,
    /// Optimistic-concurrency token.
    #[serde(skip)]
    pub revision: Revision,
}

impl OutboxEntry {
    fn illegal(&self, event: Event) -> TransitionError {
        TransitionError::Illegal {
            machine: "outbox entry",
            from: self.status.as_str(),
            event,
        }
    }

    /// Whether the dispatcher should publish it at `now`.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.status == OutboxStatus::Pending && self.next_attempt_at <= now
    }

    /// Published: `PENDING → SENT`.
    pub fn on_sent(&self, now: Timestamp) -> Result<OutboxEntry, TransitionError> {
        match self.status {
            OutboxStatus::Pending => Ok(OutboxEntry {
                status: OutboxStatus::Sent,
                sent_at: Some(now),
                updated_at: now,
                ..self.clone()
            }),
            _ => Err(self.illegal(Event::Published)),
        }
    }

    /// Publication failed: count it and back off, or `DEAD` when attempts run out or the
    /// failure is permanent.
    pub fn on_publish_failed(
        &self,
        error: &str,
        permanent: bool,
        policy: PublishRetryPolicy,
        now: Timestamp,
    ) -> Result<OutboxEntry, TransitionError> {
        if self.status != OutboxStatus::Pending {
            return Err(self.illegal(Event::PublishFailed));
        }
        let attempts = self.publish_attempts.saturating_add(1);
        let dead = permanent || attempts >= policy.max_attempts;
        Ok(OutboxEntry {
            status: if dead {
                OutboxStatus::Dead
            } else {
                OutboxStatus::Pending
            },
            publish_attempts: attempts,
            next_attempt_at: if dead {
                self.next_attempt_at
            } else {
                now.plus(policy.delay)
                    .plus(jitter(&self.id, attempts, policy.delay))
            },
            last_error: Some(error.into()),
            updated_at: now,
            ..self.clone()
        })
    }

    /// An admin retry: `DEAD | PENDING → PENDING`, due now, publish attempts reset.
    pub fn on_admin_retry(&self, now: Timestamp) -> Result<OutboxEntry, TransitionError> {
        match self.status {
            OutboxStatus::Dead | OutboxStatus::Pending => Ok(OutboxEntry {
                status: OutboxStatus::Pending,
                publish_attempts: 0,
                next_attempt_at: now,
                updated_at: now,
                ..self.clone()
            }),
            OutboxStatus::Sent => Err(self.illegal(Event::AdminRetry)),
        }
    }

    /// Its step no longer waits for it (cancelled, or moved to another attempt):
    /// `PENDING → DEAD` with the reason.
    pub fn on_superseded(
        &self,
        reason: &str,
        now: Timestamp,
    ) -> Result<OutboxEntry, TransitionError> {
        match self.status {
            OutboxStatus::Pending => Ok(OutboxEntry {
                status: OutboxStatus::Dead,
                last_error: Some(format!("superseded: {reason}").into()),
                updated_at: now,
                ..self.clone()
            }),
            _ => Err(self.illegal(Event::Supersede)),
        }
    }
}

/// Deterministic jitter in `[0, delay / 5]`, spread by entry id and attempt.
fn jitter(id: &OutboxId, attempt: u32, delay: Millis) -> Millis {
    let span = delay.0 / 5;
    if span == 0 {
        return Millis(0);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    attempt.hash(&mut h);
    Millis(h.finish() % (span + 1))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn statuses_parse_from_their_names() {
        for s in [
            OutboxStatus::Pending,
            OutboxStatus::Sent,
            OutboxStatus::Dead,
        ] {
            assert_eq!(OutboxStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OutboxStatus::parse("LOST"), None);
    }

    #[test]
    fn jitter_spreads_retries_over_a_fifth_of_the_delay() {
        let ids: Vec<OutboxId> = (0..300)
            .map(|k| {
                let job = JobId::derive(&TenantId::parse("t").unwrap(), &format!("k{k}"));
                OutboxId::for_attempt(&job, 0, 1)
            })
            .collect();
        // A 10 ms delay: jitter takes every value of [0, 2] and no other.
        let small: std::collections::BTreeSet<u64> =
            ids.iter().map(|id| jitter(id, 1, Millis(10)).0).collect();
        assert_eq!(small.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
        // A 30 s delay: within [0, 6 s], spread, and the same for the same entry and attempt.
        let big: std::collections::BTreeSet<u64> = ids
            .iter()
            .map(|id| jitter(id, 2, Millis(30_000)).0)
            .collect();
        assert!(big.iter().all(|j| *j <= 6_000), "{big:?}");
        assert!(big.len() > 250, "spread: {} distinct values", big.len());
        assert_eq!(
            jitter(&ids[0], 2, Millis(30_000)),
            jitter(&ids[0], 2, Millis(30_000))
        );
        assert_eq!(
            jitter(&ids[0], 1, Millis(4)),
            Millis(0),
            "no span below 5 ms"
        );
    }
    use crate::directive::DIRECTIVE_SCHEMA_VERSION;
    use crate::ids::TenantId;

    pub(crate) fn entry() -> OutboxEntry {
        let tenant = TenantId::parse("t").unwrap();
        let job = JobId::derive(&tenant, "k");
        let id = OutboxId::for_attempt(&job, 0, 1);
        OutboxEntry {
            directive: Arc::new(Directive {
                schema_version: DIRECTIVE_SCHEMA_VERSION,
                directive_id: id.shared(),
                job_id: job.shared(),
                tenant_id: "t".into(),
                request_type: "r".into(),
                correlation_id: None,
                step_id: "s".into(),
                step_index: 0,
                step_count: 1,
                attempt: 1,
                max_attempts: 3,
                topic: "s".into(),
                ack_timeout_ms: 1,
                lease_duration_ms: 1,
                issued_at: Timestamp(0),
                payload: crate::json::Json::null(),
                command: crate::json::Json::null(),
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

    const POLICY: PublishRetryPolicy = PublishRetryPolicy {
        delay: Millis(30_000),
        max_attempts: 3,
    };

    #[test]
    fn failures_back_off_with_bounded_jitter_then_die() {
        let e = entry()
            .on_publish_failed("x", false, POLICY, Timestamp(0))
            .unwrap();
        assert_eq!((e.status, e.publish_attempts), (OutboxStatus::Pending, 1));
        assert!(
            (30_000..=36_000).contains(&e.next_attempt_at.0),
            "{:?}",
            e.next_attempt_at
        );
        assert!(!e.is_due(Timestamp(29_999)));
        let e = e
            .on_publish_failed("x", false, POLICY, Timestamp(1))
            .unwrap();
        let e = e
            .on_publish_failed("y", false, POLICY, Timestamp(2))
            .unwrap();
        assert_eq!((e.status, e.publish_attempts), (OutboxStatus::Dead, 3));
        assert_eq!(e.last_error.as_deref(), Some("y"));
        assert!(!e.is_due(Timestamp(i64::MAX)));
    }

    #[test]
    fn permanent_failure_is_dead_at_once() {
        let e = entry()
            .on_publish_failed("401", true, POLICY, Timestamp(0))
            .unwrap();
        assert_eq!(e.status, OutboxStatus::Dead);
    }

    #[test]
    fn admin_retry_revives_dead_and_pending_not_sent() {
        let dead = entry()
            .on_publish_failed("x", true, POLICY, Timestamp(0))
            .unwrap();
        let p = dead.on_admin_retry(Timestamp(9)).unwrap();
        assert_eq!(
            (p.status, p.publish_attempts, p.next_attempt_at),
            (OutboxStatus::Pending, 0, Timestamp(9))
        );
        let sent = entry().on_sent(Timestamp(1)).unwrap();
        assert_eq!(sent.sent_at, Some(Timestamp(1)));
        assert!(sent.on_admin_retry(Timestamp(2)).is_err());
        assert!(sent.on_sent(Timestamp(2)).is_err());
        assert!(sent
            .on_publish_failed("x", false, POLICY, Timestamp(2))
            .is_err());
    }

    #[test]
    fn superseded_entries_die_with_a_reason() {
        let d = entry()
            .on_superseded("job cancelled", Timestamp(1))
            .unwrap();
        assert_eq!(d.status, OutboxStatus::Dead);
        assert_eq!(d.last_error.as_deref(), Some("superseded: job cancelled"));
    }
}
