//! The wall clock of the benchmarks, implemented as any adapter implements the port (as
//! in `examples/quickstart.rs`; the core itself never reads a clock).

use std::time::{SystemTime, UNIX_EPOCH};

use lucius::ports::Sleep;
use lucius::{Clock, Millis, Timestamp};

/// `SystemTime` for `now`, tokio for `sleep`.
pub(crate) struct SystemClock;

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
