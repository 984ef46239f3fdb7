//! The worker receiver against the real orchestrator routes (`lucius-http`) and the fake
//! Service Bus: a job runs to success, and duplicates, failures and a wrong key are
//! answered as `docs/directives.md` says.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Fake;
use lucius_core::testkit::command;
use lucius_core::{Directive, Engine, JobId, JobStatus, Millis, Publisher, StepStatus};
use lucius_http::HttpConfig;
use lucius_servicebus::worker::{Handled, ServiceBusSource, Source, Worker, WorkerConfig};
use lucius_servicebus::{Failure, ServiceBusPublisher};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const WORKER_KEY: &str = "worker-secret";

struct Rig {
    fake: Fake,
    engine: Engine,
    job: JobId,
    api: String,
}

async fn rig() -> Rig {
    let fake = Fake::start().await;
    let publisher = ServiceBusPublisher::new(&fake.connection(), Duration::from_secs(5)).unwrap();
    let (engine, _store, _clock) = common::engine(Arc::new(publisher), Millis(5_000));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let config = HttpConfig {
        worker_api_key: Some(WORKER_KEY.into()),
        ..HttpConfig::default()
    };
    tokio::spawn(lucius_http::run(
        listener,
        lucius_runtime::Lucius::from_engine(engine.clone(), lucius_runtime::Settings::no_loops())
            .expect("no lease-owned dispatch"),
        config,
        std::future::pending(),
    ));
    let out = engine.submit(command("acme", "key-1", 0)).await.unwrap();
    assert_eq!(engine.publish_all(&out.to_publish).await, 1);
    Rig {
        fake,
        engine,
        job: out.value.job_id,
        api,
    }
}

fn worker(rig: &Rig, queue: &str, key: &str) -> Worker {
    let mut c = WorkerConfig::new(
        rig.fake.connection(),
        Source::Queue(queue.into()),
        rig.api.clone(),
        "worker-1",
    );
    c.worker_key = Some(key.into());
    c.receive_wait = Duration::from_secs(1);
    Worker::new(c).unwrap()
}

/// Waits for the orchestrator's background publication to reach a queue.
async fn wait_for_message(fake: &Fake, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.ready(queue).is_empty() {
        assert!(Instant::now() < deadline, "nothing published to {queue}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn echo(d: Directive) -> Result<Value, Failure> {
    Ok(json!({"done": d.step_id}))
}

#[tokio::test]
async fn a_job_runs_to_success_against_the_real_worker_routes() {
    let rig = rig().await;
    for step in ["ocr", "embed", "index"] {
        let queue = format!("lucius.{step}");
        wait_for_message(&rig.fake, &queue).await;
        let handled = worker(&rig, &queue, WORKER_KEY)
            .run_once(&echo)
            .await
            .unwrap();
        assert!(
            matches!(handled, Handled::Completed { .. }),
            "{step}: {handled:?}"
        );
    }
    let rec = rig.engine.job(&rig.job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Succeeded);
    assert_eq!(rec.steps[1].result, Some(json!({"done": "embed"}).into()));
    assert_eq!(rig.fake.locked(), 0);
}

#[tokio::test]
async fn duplicates_failures_and_a_wrong_key_against_the_real_worker_routes() {
    let rig = rig().await;
    // A wrong key is refused: the worker stops and the message goes back.
    let err = worker(&rig, "lucius.ocr", "wrong")
        .run_once(&echo)
        .await
        .unwrap_err();
    assert!(
        err.is_permanent() && err.to_string().contains("401"),
        "{err}"
    );
    assert_eq!(rig.fake.ready("lucius.ocr").len(), 1);

    // The same directive delivered twice: the second is obsolete (409), not run.
    let first = rig.engine.job(&rig.job).await.unwrap().outbox[0]
        .directive
        .as_ref()
        .clone();
    let publisher =
        ServiceBusPublisher::new(&rig.fake.connection(), Duration::from_secs(5)).unwrap();
    publisher.publish(&first).await.unwrap();
    let w = worker(&rig, "lucius.ocr", WORKER_KEY);
    let fail = |_d: Directive| async {
        Err::<Value, _>(Failure {
            error: "x".repeat(5_000),
            retryable: true,
        })
    };
    let handled = w.run_once(&fail).await.unwrap();
    assert!(
        matches!(
            handled,
            Handled::Failed {
                retryable: true,
                ..
            }
        ),
        "an over-long reason is cut, not refused: {handled:?}"
    );
    let handled = w.run_once(&echo).await.unwrap();
    assert!(
        matches!(&handled, Handled::Obsolete { status: 409, .. }),
        "{handled:?}"
    );

    // The retry (attempt 2) is published by the orchestrator and can be completed.
    wait_for_message(&rig.fake, "lucius.ocr").await;
    let handled = w.run_once(&echo).await.unwrap();
    assert!(
        matches!(&handled, Handled::Completed { directive_id } if directive_id.ends_with(".0.2")),
        "{handled:?}"
    );
    let rec = rig.engine.job(&rig.job).await.unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Succeeded);
    assert_eq!(rec.steps[0].attempt, 2);
}

fn source(rig: &Rig, queue: &str, key: &str) -> Arc<ServiceBusSource> {
    let mut c = WorkerConfig::new(
        rig.fake.connection(),
        Source::Queue(queue.into()),
        rig.api.clone(),
        "runtime-worker",
    );
    c.worker_key = Some(key.into());
    c.receive_wait = Duration::from_secs(1);
    Arc::new(ServiceBusSource::new(c).unwrap())
}

#[tokio::test]
async fn the_runtime_worker_runs_a_job_to_success_over_service_bus_sources() {
    let rig = rig().await;
    let shutdown = lucius_runtime::Shutdown::new();
    let mut sources = Vec::new();
    let mut workers = Vec::new();
    for step in ["ocr", "embed", "index"] {
        let s = source(&rig, &format!("lucius.{step}"), WORKER_KEY);
        sources.push(s.clone());
        let worker = lucius_runtime::Worker::new(s).id("runtime-worker").handle(
            step,
            |d, _ctx| async move { Ok(json!({"done": &*d.step_id})) },
        );
        workers.push(tokio::spawn(worker.run(shutdown.wait())));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while rig.engine.job(&rig.job).await.unwrap().job.status != JobStatus::Succeeded {
        assert!(Instant::now() < deadline, "the job did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.trigger();
    let mut completed = 0;
    for w in workers {
        let report = w.await.unwrap();
        assert_eq!(report.fatal, None);
        completed += report.completed;
    }
    assert_eq!(completed, 3);
    let rec = rig.engine.job(&rig.job).await.unwrap();
    assert_eq!(rec.steps[2].result, Some(json!({"done": "index"}).into()));
    // Every message was deleted once the orchestrator knew the outcome.
    assert_eq!(rig.fake.locked(), 0);
    assert!(sources.iter().all(|s| s.held() == 0));
    for step in ["ocr", "embed", "index"] {
        assert!(rig.fake.ready(&format!("lucius.{step}")).is_empty());
    }
}

#[tokio::test]
async fn a_refused_worker_key_stops_the_runtime_worker_and_unlocks_the_message() {
    let rig = rig().await;
    wait_for_message(&rig.fake, "lucius.ocr").await;
    let s = source(&rig, "lucius.ocr", "wrong");
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = ran.clone();
    let report = lucius_runtime::Worker::new(s.clone())
        .handle("ocr", move |_d, _ctx| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            async { Ok(json!({})) }
        })
        .run(std::future::pending())
        .await;
    let fatal = report.fatal.unwrap_or_default();
    assert!(fatal.contains("401"), "{fatal}");
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "no ack, no handler"
    );
    assert_eq!(rig.fake.locked(), 0);
    assert_eq!(
        rig.fake.ready("lucius.ocr").len(),
        1,
        "back for a worker that may act"
    );
}
