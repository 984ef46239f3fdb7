//! A Lucius worker end to end: receive `document.process` OCR directives from Service Bus,
//! do the work, and report to the orchestrator until Ctrl-C.
//!
//! ```sh
//! LUCIUS_SERVICEBUS_CONNECTION='Endpoint=sb://<ns>.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…' \
//! LUCIUS_URL=http://localhost:8000 \
//! LUCIUS_WORKER_API_KEY=… \
//! WORKER_QUEUE=lucius.ocr \
//!   cargo run -p lucius-servicebus --example worker
//! ```
//!
//! `WORKER_TOPIC` + `WORKER_SUBSCRIPTION` receive from a topic subscription instead of a
//! queue. The handler below fakes OCR: it fails (retryably) when the payload asks it to,
//! and otherwise returns some text, which becomes the `embed` step's `input`.

use std::time::Duration;

use lucius_servicebus::worker::{Source, Worker, WorkerConfig};
use lucius_servicebus::{Directive, Failure};
use serde_json::{json, Value};

/// The step's work. Any `async fn(Directive) -> Result<Value, Failure>` will do.
async fn ocr(d: Directive) -> Result<Value, Failure> {
    println!(
        "job {} step {} attempt {}/{}: {}",
        d.job_id, d.step_id, d.attempt, d.max_attempts, d.command
    );
    let payload = d.payload.to_value();
    if payload.get("simulateFailure").and_then(Value::as_bool) == Some(true) {
        return Err(Failure {
            error: "scanner jammed".into(),
            retryable: true,
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(json!({"text": format!("text of {}", d.command.to_value()["documentUrl"])}))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection = env("LUCIUS_SERVICEBUS_CONNECTION")
        .ok_or("LUCIUS_SERVICEBUS_CONNECTION: required (a Service Bus connection string)")?;
    let source = match (env("WORKER_TOPIC"), env("WORKER_SUBSCRIPTION")) {
        (Some(topic), Some(subscription)) => Source::Subscription {
            topic,
            subscription,
        },
        _ => Source::Queue(env("WORKER_QUEUE").unwrap_or_else(|| "lucius.ocr".into())),
    };
    let url = env("LUCIUS_URL").unwrap_or_else(|| "http://localhost:8000".into());
    let worker_id = env("WORKER_ID").unwrap_or_else(|| format!("ocr-{}", std::process::id()));

    let mut config = WorkerConfig::new(connection, source.clone(), url, worker_id);
    config.worker_key = env("LUCIUS_WORKER_API_KEY");
    let worker = Worker::new(config)?;

    println!("receiving from {source}; Ctrl-C stops after the message in hand");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    worker.run(ocr, shutdown).await?;
    Ok(())
}
