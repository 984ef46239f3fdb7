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
    /// Another worker holds the step's lease.
    #[error("the step's lease is held by worker {holder:?}, not {caller:?}")]
    LeaseHeldByOther {
        /// The lease holder.
        holder: String,
        /// The caller.
        caller: String,
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
