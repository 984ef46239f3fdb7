//! [`Deadline`]: the budget of one store operation (every request, retry and backoff it
//! takes) and the arithmetic that decides whether an attempt may start. Pure: each
//! function takes `now`, so tests drive it without a clock; the client reads the clock.

use std::time::Duration;

use lucius_core::StoreError;
use tokio::time::Instant;

use crate::config::{seconds, RetryPolicy};

/// The longest wait between two attempts of a request.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// When one store operation must be over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    budget: Duration,
    ends: Instant,
}

/// What a request does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait `wait`, then send, abandoning the attempt after `timeout`.
    Send {
        /// The backoff before the attempt.
        wait: Duration,
        /// The client's bound on the attempt.
        timeout: Duration,
    },
    /// The policy's attempts are used up: the last error stands.
    GiveUp,
    /// The operation's budget cannot cover another attempt.
    OutOfBudget,
}

impl Deadline {
    /// An operation of `budget` starting at `now`.
    pub(crate) fn start(budget: Duration, now: Instant) -> Deadline {
        Deadline {
            budget,
            ends: now + budget,
        }
    }

    /// What is left at `now`.
    pub(crate) fn remaining(&self, now: Instant) -> Duration {
        self.ends.saturating_duration_since(now)
    }

    /// A request's first attempt at `now`: sent while anything is left of the budget (a
    /// chain of requests must make progress), bounded by what is left.
    pub(crate) fn first(&self, policy: &RetryPolicy, now: Instant) -> Next {
        let left = self.remaining(now);
        if left.is_zero() {
            Next::OutOfBudget
        } else {
            Next::Send {
                wait: Duration::ZERO,
                timeout: policy.request_timeout.min(left),
            }
        }
    }

    /// After `made` attempts of a request, the last of which failed with a transient error
    /// at `now`: another one after the backoff, but only if what is left after the wait
    /// covers a whole `request_timeout` (a retry is for a service known to struggle, so it
    /// gets its full bound or does not start).
    pub(crate) fn after_failure(&self, policy: &RetryPolicy, made: u32, now: Instant) -> Next {
        let left = self.remaining(now);
        if left.is_zero() {
            return Next::OutOfBudget;
        }
        if made >= policy.attempts {
            return Next::GiveUp;
        }
        let wait = backoff(policy, made);
        if left < wait + policy.request_timeout {
            return Next::OutOfBudget;
        }
        Next::Send {
            wait,
            timeout: policy.request_timeout,
        }
    }

    /// The error of an operation whose budget ran out after `made` attempts of its current
    /// request; `last` says what the last one met (or that nothing was sent).
    pub(crate) fn exhausted(&self, made: u32, last: &str) -> StoreError {
        let plural = if made == 1 { "" } else { "s" };
        StoreError::transient(format!(
            "table store: operation budget of {} exhausted after {made} attempt{plural}: {last}",
            seconds(self.budget)
        ))
    }
}

/// The wait after attempt `made` (1-based) failed: `base_delay`, doubled per attempt, at
/// most [`MAX_BACKOFF`].
fn backoff(policy: &RetryPolicy, made: u32) -> Duration {
    let doublings = made.saturating_sub(1).min(16);
    policy
        .base_delay
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            server_timeout: 5 * S,
            request_timeout: 7 * S,
            operation_budget: 20 * S,
        }
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let p = policy();
        let waits: Vec<_> = (1..=7).map(|n| backoff(&p, n).as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(&p, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_first_attempt_is_bounded_by_what_is_left() {
        let p = policy();
        let t0 = Instant::now();
        let d = Deadline::start(p.operation_budget, t0);
        let full = Next::Send {
            wait: Duration::ZERO,
            timeout: 7 * S,
        };
        assert_eq!(d.first(&p, t0), full);
        assert_eq!(d.first(&p, t0 + 13 * S), full);
        assert_eq!(
            d.first(&p, t0 + 18 * S),
            Next::Send {
                wait: Duration::ZERO,
                timeout: 2 * S
            }
        );
        assert_eq!(d.first(&p, t0 + 20 * S), Next::OutOfBudget);
        assert_eq!(d.first(&p, t0 + 60 * S), Next::OutOfBudget);
        assert_eq!(d.remaining(t0 + 60 * S), Duration::ZERO);
    }

    #[test]
    fn a_retry_starts_only_if_the_budget_covers_its_wait_and_a_whole_request() {
        let p = policy();
        let t0 = Instant::now();
        let d = Deadline::start(p.operation_budget, t0);
        // After the first failure: 200 ms of backoff plus 7 s fit in 20 s.
        assert_eq!(
            d.after_failure(&p, 1, t0 + S),
            Next::Send {
                wait: Duration::from_millis(200),
                timeout: 7 * S
            }
        );
        // Exactly enough: 12.6 s left = 400 ms + 7 s … and more.
        assert!(matches!(
            d.after_failure(&p, 2, t0 + 12_600 * Duration::from_millis(1)),
            Next::Send { .. }
        ));
        // A millisecond short of wait + request: no retry.
        let short = t0 + 20 * S - Duration::from_millis(7_399);
        assert_eq!(d.after_failure(&p, 2, short), Next::OutOfBudget);
        // Attempts used up while budget is left: the last error stands.
        assert_eq!(d.after_failure(&p, 4, t0 + S), Next::GiveUp);
        // No budget at all wins over attempts.
        assert_eq!(d.after_failure(&p, 4, t0 + 20 * S), Next::OutOfBudget);
    }

    #[test]
    fn the_worst_case_of_one_request_stays_within_the_budget() {
        // Every attempt runs into its full client timeout: the loop, replayed on the
        // arithmetic alone, never passes the deadline and stops for the budget.
        let p = policy();
        let t0 = Instant::now();
        let d = Deadline::start(p.operation_budget, t0);
        let mut now = t0;
        let mut made = 0;
        let mut next = d.first(&p, now);
        while let Next::Send { wait, timeout } = next {
            now += wait + timeout;
            made += 1;
            assert!(
                now <= t0 + p.operation_budget,
                "attempt {made} ends past the budget"
            );
            next = d.after_failure(&p, made, now);
        }
        assert_eq!(next, Next::OutOfBudget);
        // 7 s, then 200 ms + 7 s; a third (400 ms + 7 s) would end at 21.6 s.
        assert_eq!(made, 2);
        // The old policy (30 s per attempt, 4 attempts, no budget) allowed about 2 min.
    }

    #[test]
    fn an_exhausted_budget_says_so() {
        let d = Deadline::start(10 * S, Instant::now());
        let e = d.exhausted(3, "get from T (a, b) timed out after 7000 ms");
        assert_eq!(e.kind, lucius_core::StoreErrorKind::Transient);
        assert_eq!(
            e.message,
            "table store: operation budget of 10 s exhausted after 3 attempts: \
             get from T (a, b) timed out after 7000 ms"
        );
        let e = Deadline::start(Duration::from_millis(1500), Instant::now()).exhausted(1, "x");
        assert!(e
            .message
            .contains("budget of 1.5 s exhausted after 1 attempt:"));
    }
}
