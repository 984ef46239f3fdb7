//! The demo worker of the all-in-one binary: acknowledges every directive, works for a
//! moment, and completes it, so a newcomer sees jobs finish with no other process.

use std::time::Duration;

use lucius_core::engine::WorkerCall;
use lucius_core::{Directive, Engine, JobId};
use tokio::sync::mpsc;

/// Runs until the channel closes.
pub async fn run(
    engine: Engine,
    mut directives: mpsc::UnboundedReceiver<Directive>,
    work: Duration,
) {
    while let Some(d) = directives.recv().await {
        let engine = engine.clone();
        tokio::spawn(async move { handle(&engine, &d, work).await });
    }
}

async fn handle(engine: &Engine, d: &Directive, work: Duration) {
    let Ok(job) = JobId::parse(&d.job_id) else {
        return;
    };
    let call = WorkerCall {
        job_id: &job,
        step_id: &d.step_id,
        attempt: d.attempt,
        worker_id: Some("demo-worker"),
    };
    if let Err(e) = engine.ack(call.clone()).await {
        tracing::info!(directive = %d.directive_id, error = %e, "demo worker: ack refused");
        return;
    }
    tokio::time::sleep(work).await;
    let result = serde_json::json!({"worker": "demo", "step": d.step_id, "attempt": d.attempt});
    match engine.complete(call, result).await {
        Ok(o) => {
            tracing::info!(job = %job, step = %d.step_id, "demo worker: step completed");
            engine.publish_all(&o.to_publish).await;
        }
        Err(e) => {
            tracing::info!(directive = %d.directive_id, error = %e, "demo worker: complete refused")
        }
    }
}
