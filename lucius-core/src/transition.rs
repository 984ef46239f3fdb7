//! [`TransitionError`]: why a state machine refused an event.

use std::fmt;

use crate::time::Timestamp;

/// An event a state machine was asked to apply, named for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A step's directive was written to the outbox.
    Queue,
    /// A step's directive was published.
    Published,
    /// A worker acknowledged a step.
    Ack,
    /// A worker extended its lease.
    Heartbeat,
    /// A worker completed a step.
    Complete,
    /// A worker reported a failure.
    Fail,
    /// The ACK deadline or lease of a step passed.
    Timeout,
    /// Cancellation.
    Cancel,
    /// A job's first step started.
    Start,
    /// A job's steps all succeeded.
    Succeed,
    /// Publishing an outbox entry failed.
    PublishFailed,
    /// An admin asked to retry an outbox entry.
    AdminRetry,
    /// An outbox entry's step no longer waits for it.
    Supersede,
    /// A step's directive could not be published (its outbox entry is `DEAD`).
    DirectiveDead,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Event::Queue => "queue",
            Event::Published => "published",
            Event::Ack => "ack",
            Event::Heartbeat => "heartbeat",
            Event::Complete => "complete",
            Event::Fail => "fail",
            Event::Timeout => "timeout",
            Event::Cancel => "cancel",
            Event::Start => "start",
            Event::Succeed => "succeed",
            Event::PublishFailed => "publish-failed",
            Event::AdminRetry => "admin-retry",
            Event::Supersede => "supersede",
            Event::DirectiveDead => "directive-dead",
        };
        f.write_str(s)
    }
}

/// Why a transition was refused. The caller's state is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The event is not allowed in the current state.
    #[error("illegal transition: cannot apply {event} to a {machine} in state {from}")]
    Illegal {
        /// `job`, `step` or `outbox entry`.
        machine: &'static str,
        /// The current state.
        from: &'static str,
        /// The refused event.
        event: Event,
    },
    /// The event names an attempt other than the current one.
    #[error("stale attempt: the step is at attempt {current}, the call names attempt {got}")]
    StaleAttempt {
        /// The step's current attempt.
        current: u32,
        /// The attempt the event named.
        got: u32,
    },
    /// A named worker holds the step's lease and the call comes from another worker, or
    /// names none.
    #[error(
        "step {step} is leased to worker {holder} until {until}; {}",
        caller_text(.caller.as_deref())
    )]
    LeaseHeldByOther {
        /// The step id.
        step: String,
        /// The lease holder.
        holder: String,
        /// The caller's worker id, `None` when the call names no worker.
        caller: Option<String>,
        /// When the lease ends unless renewed.
        until: Timestamp,
    },
    /// A `complete` or `fail` repeats one that already ended the attempt, with another
    /// body: the first one stays applied.
    #[error(
        "step {step} attempt {attempt} {}",
        already_text(*.event)
    )]
    AlreadyApplied {
        /// The step id.
        step: String,
        /// The repeated event (`complete` or `fail`).
        event: Event,
        /// The attempt it ended.
        attempt: u32,
    },
    /// A timeout was applied before its deadline.
    #[error("not due: the deadline is {due_at}, now is {now}")]
    NotDue {
        /// When the deadline passes.
        due_at: Timestamp,
        /// The time given.
        now: Timestamp,
    },
}

fn caller_text(caller: Option<&str>) -> String {
    match caller {
        Some(c) => format!("this call names worker {c}"),
        None => "this call names no worker".to_owned(),
    }
}

fn already_text(event: Event) -> &'static str {
    match event {
        Event::Complete => "already completed with a different result",
        Event::Fail => "already failed with a different error or retryable flag",
        _ => "already ended with a different outcome",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_refusals_say_who_holds_it_and_who_asked() {
        let e = |caller: Option<&str>| TransitionError::LeaseHeldByOther {
            step: "ocr".into(),
            holder: "w1".into(),
            caller: caller.map(str::to_owned),
            until: Timestamp(1_000),
        };
        assert_eq!(
            e(None).to_string(),
            "step ocr is leased to worker w1 until 1970-01-01T00:00:01.000Z; this call names no worker"
        );
        assert!(e(Some("w2"))
            .to_string()
            .ends_with("this call names worker w2"));
    }

    #[test]
    fn repeats_with_another_body_name_the_attempt() {
        let e = |event| TransitionError::AlreadyApplied {
            step: "ocr".into(),
            event,
            attempt: 1,
        };
        assert_eq!(
            e(Event::Complete).to_string(),
            "step ocr attempt 1 already completed with a different result"
        );
        assert_eq!(
            e(Event::Fail).to_string(),
            "step ocr attempt 1 already failed with a different error or retryable flag"
        );
    }
}
