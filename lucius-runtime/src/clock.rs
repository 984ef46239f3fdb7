//! [`SystemClock`]: the wall clock and tokio timers behind the core's `Clock` port.

use std::time::{SystemTime, UNIX_EPOCH};

use lucius_core::ports::Sleep;
use lucius_core::{Clock, Millis, Timestamp};

/// The system's UTC clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    fn sleep(&self, duration: Millis) -> Sleep {
        Box::pin(tokio::time::sleep(duration.to_std()))
    }
}
