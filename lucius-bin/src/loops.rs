//! The background loops: the orchestrator's outbox retry, the dispatcher and the sweepers.
//! Each runs a round, waits its interval, and stops after the round in flight once
//! shutdown is triggered.

use std::future::Future;

use lucius_core::engine::{DispatchReport, SweepReport};
use lucius_core::{Engine, Millis};

use crate::shutdown::Shutdown;

/// Runs `round` every `interval` until shutdown.
pub async fn every<F, Fut>(interval: Millis, shutdown: Shutdown, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        round().await;
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval.to_std()) => {}
        }
    }
}

/// Republishes due `PENDING` entries of every partition (`LUCIUS_OUTBOX_RETRY_*`).
pub async fn outbox_retry(engine: Engine, interval: Millis, shutdown: Shutdown) {
    every(interval, shutdown, || async {
        match engine.retry_pending().await {
            Ok(r) if r.due > 0 => log_dispatch("outbox retry", "*", &r),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox retry round failed"),
        }
    })
    .await;
}

/// Dispatches every partition that holds jobs.
pub async fn dispatch_all(engine: Engine, interval: Millis, shutdown: Shutdown) {
    every(interval, shutdown, || async {
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
pub async fn sweep_all(engine: Engine, interval: Millis, shutdown: Shutdown) {
    every(interval, shutdown, || async {
        match engine.sweep_all().await {
            Ok(o) => {
                let sent = engine.publish_all(&o.to_publish).await;
                log_sweep(&o.value, sent);
            }
            Err(e) => tracing::warn!(error = %e, "sweep round failed"),
        }
    })
    .await;
}

fn log_dispatch(what: &str, partition: &str, r: &DispatchReport) {
    tracing::info!(
        partition,
        due = r.due,
        published = r.published,
        retrying = r.retrying,
        dead = r.dead,
        skipped = r.skipped,
        errors = r.errors,
        "{what} round"
    );
}

fn log_sweep(r: &SweepReport, published: usize) {
    if r.retried + r.failed + r.repaired + r.errors > 0 {
        tracing::info!(
            jobs = r.jobs,
            retried = r.retried,
            failed = r.failed,
            repaired = r.repaired,
            errors = r.errors,
            published,
            "sweep round"
        );
    }
}
