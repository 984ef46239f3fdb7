//! [`ManualClock`]: time that moves only when told to.

use std::sync::{Arc, Mutex};

use crate::ports::{Clock, Sleep};
use crate::time::{Millis, Timestamp};

/// A clock for tests and simulations. `sleep(d)` skips time: it moves the clock forward by
/// `d` and completes at once, so a timeout that is raced against a pending future fires
/// deterministically, without real waiting.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Millis) {
        let mut now = self.lock();
        *now = now.plus(by);
    }

    /// Sets the time (it may go backwards, to simulate a clock jump).
    pub fn set(&self, to: Timestamp) {
        *self.lock() = to;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timestamp> {
        // A poisoned clock still holds a valid timestamp.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.lock()
    }

    fn sleep(&self, duration: Millis) -> Sleep {
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }
}
