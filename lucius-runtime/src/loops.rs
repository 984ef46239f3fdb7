//! The unfenced background loops: the outbox retry, the dispatch of every partition, the
//! sweep of every partition and the purge of finished jobs. Each runs a round, waits its interval on the [`Clock`] port,
//! and stops after the round in flight once shutdown is triggered.

use std::future::Future;

use std::sync::atomic::{AtomicBool, Ordering};

use lucius_core::engine::{DispatchReport, SweepReport};
use lucius_core::{Clock, EngineError, Millis, StoreErrorKind};

use crate::handle::Lucius;
use crate::shutdown::Shutdown;

/// Runs `round` every `interval` of `clock` until `shutdown`.
pub(crate) async fn every<F, Fut>(
    clock: &dyn Clock,
    interval: Millis,
    shutdown: &Shutdown,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let stop = shutdown.wait();
    tokio::pin!(stop);
    while !shutdown.is_triggered() {
        round().await;
        tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = clock.sleep(interval) => {}
        }
        // A manual clock's sleep is ready at once: let the other tasks run between rounds.
        tokio::task::yield_now().await;
    }
}

/// Purges finished jobs past the engine's retention, a batch per store round trip, until
/// none are left (or shutdown). Each purge is its own store write, so intake is never held
/// behind it. A store that cannot purge (a permanent error) is reported once and the loop
/// does nothing more.
pub(crate) async fn purge(lucius: Lucius, interval: Millis, shutdown: Shutdown) {
    let clock = lucius.clock().clone();
    let gave_up = AtomicBool::new(false);
    let batch = lucius.engine().config().batch_size.max(1);
    every(clock.as_ref(), interval, &shutdown, || async {
        if gave_up.load(Ordering::Relaxed) {
            return;
        }
        let (mut purged, mut skipped) = (0, 0);
        while !shutdown.is_triggered() {
            match lucius.engine().purge_ended().await {
                Ok(r) => {
                    purged += r.purged;
                    skipped += r.skipped;
                    if r.listed < batch || r.purged == 0 {
                        break;
                    }
                }
                Err(EngineError::Store(e)) if e.kind == StoreErrorKind::Permanent => {
                    tracing::error!(error = %e, "purge of finished jobs stopped: finished jobs are kept");
                    gave_up.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purge round failed");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        if purged + skipped > 0 {
            tracing::info!(purged, skipped, "purge round");
        }
    })
    .await;
}

/// Republishes due `PENDING` entries of every partition.
pub(crate) async fn outbox_retry(lucius: Lucius, interval: Millis, shutdown: Shutdown) {
    let clock = lucius.clock().clone();
    every(clock.as_ref(), interval, &shutdown, || async {
        match lucius.engine().retry_pending().await {
            Ok(r) if r.due > 0 => log_dispatch("outbox retry", "*", &r),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox retry round failed"),
        }
    })
    .await;
}

/// Dispatches every partition that holds jobs, unfenced.
pub(crate) async fn dispatch_all(lucius: Lucius, interval: Millis, shutdown: Shutdown) {
    let clock = lucius.clock().clone();
    every(clock.as_ref(), interval, &shutdown, || async {
        let engine = lucius.engine();
        let partitions = match engine.store().partitions().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "listing partitions failed");
                return;
            }
        };
        for p in partitions {
            match engine.dispatch(&p).await {
                Ok(r) if r.due > 0 => log_dispatch("dispatch", &p.to_string(), &r),
                Ok(_) => {}
                Err(e) => tracing::warn!(partition = %p, error = %e, "dispatch failed"),
            }
        }
    })
    .await;
}

/// Sweeps every partition and publishes the directives the sweep wrote.
pub(crate) async fn sweep_all(lucius: Lucius, interval: Millis, shutdown: Shutdown) {
    let clock = lucius.clock().clone();
    every(clock.as_ref(), interval, &shutdown, || async {
        match lucius.engine().sweep_all().await {
            Ok(o) => {
                let sent = lucius.publish_now(&o.to_publish).await;
                log_sweep(&o.value, sent);
            }
            Err(e) => tracing::warn!(error = %e, "sweep round failed"),
        }
    })
    .await;
}

pub(crate) fn log_dispatch(what: &str, partition: &str, r: &DispatchReport) {
    tracing::info!(
        partition,
        due = r.due,
        published = r.published,
        retrying = r.retrying,
        dead = r.dead,
        skipped = r.skipped,
        errors = r.errors,
        deferred = r.deferred,
        "{what} round"
    );
}

fn log_sweep(r: &SweepReport, published: usize) {
    if r.retried + r.failed + r.repaired + r.reindexed + r.errors > 0 {
        tracing::info!(
            jobs = r.jobs,
            retried = r.retried,
            failed = r.failed,
            repaired = r.repaired,
            reindexed = r.reindexed,
            errors = r.errors,
            published,
            "sweep round"
        );
    }
}
