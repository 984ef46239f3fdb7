//! Quickstart: embed the Lucius engine, submit a command, and drive it to `SUCCEEDED`
//! with an in-process worker, printing every transition.
//!
//! Run: `cargo run --example quickstart`

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lucius::engine::{Observer, WorkerCall};
use lucius::memory::{MemoryPublisher, MemoryStore};
use lucius::ports::Sleep;
use lucius::{Clock, Engine, JobId, JobStatus, Millis, OutboxStatus, StepStatus, Timestamp};

/// The wall clock, implemented the way any adapter implements a port.
struct SystemClock;

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

/// Prints what the engine does.
struct Printer;

impl Observer for Printer {
    fn job_transition(&self, from: Option<JobStatus>, to: JobStatus) {
        println!(
            "  job     {:>11} -> {}",
            from.map_or("(new)", |s| s.as_str()),
            to.as_str()
        );
    }
    fn step_transition(&self, from: Option<StepStatus>, to: StepStatus) {
        println!(
            "  step    {:>11} -> {}",
            from.map_or("(new)", |s| s.as_str()),
            to.as_str()
        );
    }
    fn outbox_transition(&self, from: Option<OutboxStatus>, to: OutboxStatus) {
        println!(
            "  outbox  {:>11} -> {}",
            from.map_or("(new)", |s| s.as_str()),
            to.as_str()
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The "message bus": directives land in a channel an in-process worker reads.
    let (tx, rx) = mpsc::channel();
    let publisher = MemoryPublisher::with_listener(move |d| {
        let _ = tx.send(d.clone());
    });
    let engine = Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(publisher),
        Arc::new(SystemClock),
    )
    .with_observer(Arc::new(Printer));

    let command = br#"{
        "requestType": "document.process",
        "tenantId": "acme",
        "idempotencyKey": "quickstart-1",
        "payload": {"documentUrl": "https://example.com/invoice.pdf"},
        "steps": {"ocr": {"dpi": 300}, "embed": {"model": "mini"}}
    }"#;
    println!("submit document.process");
    let submitted = engine.submit_bytes(command, None).await?;
    let job_id: JobId = submitted.value.job_id.clone();
    println!(
        "-> 202 jobId={job_id} partition={}",
        submitted.value.partition
    );
    engine.publish_all(&submitted.to_publish).await;

    // The worker: ack, do the work, complete; the engine writes the next directive.
    while let Ok(d) = rx.recv_timeout(Duration::from_secs(1)) {
        println!(
            "worker received {} (step {}, attempt {})",
            d.directive_id, d.step_id, d.attempt
        );
        let call = WorkerCall {
            job_id: &job_id,
            step_id: &d.step_id,
            attempt: d.attempt,
            worker_id: Some("quickstart-worker"),
        };
        engine.ack(call.clone()).await?;
        let result = serde_json::json!({"step": d.step_id, "input": d.input});
        let done = engine.complete(call, result).await?;
        engine.publish_all(&done.to_publish).await;
        if engine.job(&job_id).await?.job.status.is_terminal() {
            break;
        }
    }

    let record = engine.job(&job_id).await?;
    println!("job {} is {}", record.job.id, record.job.status.as_str());
    for s in &record.steps {
        println!(
            "  {:<6} {:<9} attempt {}",
            s.step_id.as_str(),
            s.status.as_str(),
            s.attempt
        );
    }
    if record.job.status != JobStatus::Succeeded {
        return Err("the job did not succeed".into());
    }
    Ok(())
}
