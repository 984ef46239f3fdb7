//! What the runtime's test files share.
#![allow(unreachable_pub)]

use lucius_core::memory::ManualClock;
use lucius_core::ports::Sleep;
use lucius_core::{Clock, Millis, Timestamp};

/// A clock whose sleeps take tokio time (paused in these tests, so they auto-advance) and
/// then move a manual clock forward, like a real clock: sleepers that overlap do not add up
/// their time. Leases expire when heartbeats stop, and long polls time out.
#[derive(Clone)]
pub struct Ticking(pub ManualClock);

impl Clock for Ticking {
    fn now(&self) -> Timestamp {
        self.0.now()
    }
    fn sleep(&self, d: Millis) -> Sleep {
        let manual = self.0.clone();
        let until = manual.now().plus(d);
        Box::pin(async move {
            tokio::time::sleep(d.to_std()).await;
            if manual.now() < until {
                manual.set(until);
            }
        })
    }
}
