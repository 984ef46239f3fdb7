//! Quickstart: embed Lucius, submit a command, and let typed step handlers drive it to
//! `SUCCEEDED`, printing every transition.
//!
//! Run: `cargo run --example quickstart`

use std::sync::Arc;
use std::time::Duration;

use lucius::engine::Observer;
use lucius::memory::MemoryStore;
use lucius::{JobStatus, Lucius, OutboxStatus, Shutdown, StepStatus, Worker};
use serde_json::json;

/// Prints what the engine does.
struct Printer;

impl Observer for Printer {
    fn job_transition(&self, from: Option<JobStatus>, to: JobStatus) {
        println!(
            "  job    {:>11} -> {}",
            from.map_or("(new)", |s| s.as_str()),
            to.as_str()
        );
    }
    fn step_transition(&self, from: Option<StepStatus>, to: StepStatus) {
        println!(
            "  step   {:>11} -> {}",
            from.map_or("(new)", |s| s.as_str()),
            to.as_str()
        );
    }
    fn outbox_transition(&self, from: Option<OutboxStatus>, to: OutboxStatus) {
        println!(
            "  outbox {:>11} -> {}",
            from.map_or("(new)", |s| s.as_str()),
            to.as_str()
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A store is all it needs; with no bus, directives go to an in-process queue.
    let lucius = Lucius::builder()
        .store(MemoryStore::new())
        .observer(Arc::new(Printer))
        .build()?;
    let shutdown = Shutdown::new();
    let loops = tokio::spawn({
        let (lucius, stop) = (lucius.clone(), shutdown.clone());
        async move { lucius.run(stop.wait()).await }
    });

    // One handler per step of `document.process`; heartbeats are sent for them.
    let worker = Worker::new(lucius.in_process().ok_or("built with a publisher")?)
        .id("quickstart-worker")
        .handle("ocr", |d, _ctx| async move {
            println!("worker: ocr of {}", d.directive_id);
            Ok(json!({"text": "INVOICE 42"}))
        })
        .handle("embed", |d, _ctx| async move {
            println!("worker: embed of {}", d.directive_id);
            Ok(json!({"vector": [0.1, 0.2]}))
        })
        .handle("index", |d, ctx| async move {
            println!("worker: index of {}", d.directive_id);
            match d.input {
                Some(_) => Ok(json!({"indexed": true})),
                None => Err(ctx.fail("nothing to index", false)),
            }
        });
    let workers = tokio::spawn(worker.run(shutdown.wait()));

    println!("submit document.process");
    let job = lucius
        .submit_bytes(
            br#"{
                "requestType": "document.process",
                "tenantId": "acme",
                "idempotencyKey": "quickstart-1",
                "payload": {"documentUrl": "https://example.com/invoice.pdf"},
                "steps": {"ocr": {"dpi": 300}, "embed": {"model": "mini"}}
            }"#,
            None,
        )
        .await?;
    println!("-> accepted job {} in {}", job.job_id, job.partition);

    let record = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let rec = lucius.job(&job.job_id).await?;
            if rec.job.status.is_terminal() {
                return Ok::<_, lucius::EngineError>(rec);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await??;
    shutdown.trigger();
    loops.await?;
    let report = workers.await?;

    println!("job {} is {}", record.job.id, record.job.status.as_str());
    for s in &record.steps {
        println!(
            "  {:<6} {:<9} attempt {}",
            s.step_id.as_str(),
            s.status.as_str(),
            s.attempt
        );
    }
    println!("worker: {report:?}");
    if record.job.status != JobStatus::Succeeded {
        return Err("the job did not succeed".into());
    }
    Ok(())
}
