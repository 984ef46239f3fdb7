//! The demo worker of the all-in-one binary: a [`Worker`] on the in-process source that
//! works for a moment on every step and completes it, so a newcomer sees jobs finish with
//! no other process.

use std::time::Duration;

use lucius_runtime::{Lucius, Shutdown, Worker, WorkerReport};

/// Runs until shutdown (nothing, if `lucius` was built with a publisher).
pub async fn run(lucius: Lucius, work: Duration, shutdown: Shutdown) -> WorkerReport {
    let Some(source) = lucius.in_process() else {
        return WorkerReport::default();
    };
    Worker::new(source)
        .id("demo-worker")
        .concurrency(64)
        .clock(lucius.clock().clone())
        .fallback(move |d, _ctx| async move {
            tokio::time::sleep(work).await;
            tracing::info!(job = %d.job_id, step = %d.step_id, "demo worker: step completed");
            Ok(serde_json::json!({"worker": "demo", "step": &*d.step_id, "attempt": d.attempt}))
        })
        .run(shutdown.wait())
        .await
}
