//! The worker receiver on the wire: peek-lock from the fake Service Bus, worker calls to a
//! fake orchestrator driving a real engine, and how each message is settled.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Fake, KEY, KEY_NAME};
use lucius_core::testkit::command;
use lucius_core::{Directive, Engine, JobId, JobStatus, Millis, StepStatus};
use lucius_servicebus::worker::{Handled, Source, Worker, WorkerConfig, WorkerError};
use lucius_servicebus::{ConnectionString, Failure, ServiceBusPublisher};
use serde_json::{json, Value};

const WORKER_KEY: &str = "worker-secret";

/// A fake bus + orchestrator with an engine publishing to it; the first directive of one
/// `document.process` job is published.
async fn rig() -> (Fake, Engine, JobId) {
    let fake = Fake::start().await;
    fake.require_worker_key(WORKER_KEY);
    let publisher = ServiceBusPublisher::new(&fake.connection(), Duration::from_secs(5)).unwrap();
    let (engine, _store, _clock) = common::engine(Arc::new(publisher), Millis(5_000));
    fake.serve_engine(engine.clone());
    let out = engine.submit(command("acme", "key-1", 0)).await.unwrap();
    assert_eq!(engine.publish_all(&out.to_publish).await, 1);
    (fake, engine, out.value.job_id)
}

fn config(fake: &Fake, source: Source) -> WorkerConfig {
    let mut c = WorkerConfig::new(fake.connection(), source, fake.base_url(), "worker-1");
    c.worker_key = Some(WORKER_KEY.into());
    c.receive_wait = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(5);
    c
}

fn queue(name: &str) -> Source {
    Source::Queue(name.into())
}

async fn echo(d: Directive) -> Result<Value, Failure> {
    Ok(json!({"step": d.step_id, "input": d.input}))
}

#[tokio::test]
async fn a_job_runs_to_success_through_bus_and_worker_calls() {
    let (fake, engine, job) = rig().await;
    let mut seen_inputs = Vec::new();
    for step in ["ocr", "embed", "index"] {
        let worker = Worker::new(config(&fake, queue(&format!("lucius.{step}")))).unwrap();
        let inputs = Arc::new(std::sync::Mutex::new(None));
        let keep = inputs.clone();
        let handler = move |d: Directive| {
            *keep.lock().unwrap() = Some(d.input.clone());
            echo(d)
        };
        let handled = worker.run_once(&handler).await.unwrap();
        assert!(
            matches!(&handled, Handled::Completed { directive_id } if directive_id.starts_with(job.as_str())),
            "{step}: {handled:?}"
        );
        seen_inputs.push(inputs.lock().unwrap().clone().unwrap());
    }
    let rec = engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Succeeded);
    assert!(rec.steps.iter().all(|s| s.status == StepStatus::Succeeded));
    // Each step saw the previous step's result as its input.
    assert_eq!(seen_inputs[0], None);
    assert_eq!(
        seen_inputs[1],
        Some(json!({"step": "ocr", "input": null}).into())
    );

    // The calls on the wire: ack then complete per step, with key, attempt and worker id.
    let calls = fake.seen_at("/v1/jobs/");
    let routes: Vec<String> = calls
        .iter()
        .map(|c| c.path.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        routes,
        ["ack", "complete", "ack", "complete", "ack", "complete"]
    );
    for c in &calls {
        assert_eq!(c.status, 200, "{c:?}");
        assert_eq!(c.header("x-worker-key"), Some(WORKER_KEY));
        assert_eq!(c.header("content-type"), Some("application/json"));
        assert_eq!(c.json()["attempt"], 1);
        assert_eq!(c.json()["workerId"], "worker-1");
    }
    assert_eq!(calls[0].path, format!("/v1/jobs/{job}/steps/ocr/ack"));
    assert_eq!(
        calls[1].json()["result"],
        json!({"step": "ocr", "input": null})
    );
    // Every message was received with a verified signature and deleted.
    let heads = fake.seen_at("/messages/head");
    assert!(heads
        .iter()
        .all(|h| h.method == hyper::Method::POST && h.status == 201));
    assert_eq!(heads[0].path, "/lucius.ocr/messages/head");
    assert_eq!(heads[0].query.as_deref(), Some("timeout=1"));
    let deletes: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == hyper::Method::DELETE)
        .collect();
    assert_eq!(deletes.len(), 3);
    assert!(deletes.iter().all(|d| d.status == 200));
    assert_eq!(fake.locked(), 0);
}

#[tokio::test]
async fn a_subscription_is_received_from() {
    let fake = Fake::start().await;
    fake.require_worker_key(WORKER_KEY);
    fake.subscribe("lucius.ocr", "ocr-workers");
    let publisher = ServiceBusPublisher::new(&fake.connection(), Duration::from_secs(5)).unwrap();
    let (engine, _store, _clock) = common::engine(Arc::new(publisher), Millis(5_000));
    fake.serve_engine(engine.clone());
    let out = engine.submit(command("acme", "key-1", 0)).await.unwrap();
    engine.publish_all(&out.to_publish).await;

    let source = Source::Subscription {
        topic: "lucius.ocr".into(),
        subscription: "ocr-workers".into(),
    };
    let worker = Worker::new(config(&fake, source)).unwrap();
    let handled = worker.run_once(&echo).await.unwrap();
    assert!(matches!(handled, Handled::Completed { .. }), "{handled:?}");
    assert_eq!(
        fake.seen_at("/messages/head")[0].path,
        "/lucius.ocr/subscriptions/ocr-workers/messages/head"
    );
    let rec = engine.job(&out.value.job_id).await.unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Succeeded);
}

#[tokio::test]
async fn a_retryable_failure_is_reported_and_a_new_attempt_published() {
    let (fake, engine, job) = rig().await;
    let worker = Worker::new(config(&fake, queue("lucius.ocr"))).unwrap();
    let fail = |_d: Directive| async {
        Err::<Value, _>(Failure {
            error: "scanner jammed".into(),
            retryable: true,
        })
    };
    let handled = worker.run_once(&fail).await.unwrap();
    assert!(
        matches!(
            handled,
            Handled::Failed {
                retryable: true,
                ..
            }
        ),
        "{handled:?}"
    );
    let call = fake.seen_at("/fail").pop().unwrap();
    assert_eq!(
        call.json(),
        json!({"attempt": 1, "workerId": "worker-1", "error": "scanner jammed", "retryable": true})
    );
    let rec = engine.job(&job).await.unwrap();
    assert_eq!(rec.steps[0].attempt, 2);
    // The old message is gone; the new attempt's directive waits on the queue.
    let ready = fake.ready("lucius.ocr");
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].broker["MessageId"], format!("{job}.0.2"));
    assert_eq!(fake.locked(), 0);

    // A fatal failure of the second attempt fails the step and the job.
    let fatal = |_d: Directive| async {
        Err::<Value, _>(Failure {
            error: "unreadable document".into(),
            retryable: false,
        })
    };
    let handled = worker.run_once(&fatal).await.unwrap();
    assert!(matches!(
        handled,
        Handled::Failed {
            retryable: false,
            ..
        }
    ));
    let rec = engine.job(&job).await.unwrap();
    assert_eq!(rec.job.status, JobStatus::Failed);
}

#[tokio::test]
async fn a_duplicate_delivery_is_dropped_without_running_the_handler() {
    let (fake, engine, job) = rig().await;
    // The same directive published again (as after a publish timeout that did land).
    let rec = engine.job(&job).await.unwrap();
    let publisher = ServiceBusPublisher::new(&fake.connection(), Duration::from_secs(5)).unwrap();
    lucius_core::Publisher::publish(&publisher, &rec.outbox[0].directive)
        .await
        .unwrap();
    assert_eq!(fake.ready("lucius.ocr").len(), 2);

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let handler = move |d: Directive| {
        counted.fetch_add(1, Ordering::SeqCst);
        echo(d)
    };
    let worker = Worker::new(config(&fake, queue("lucius.ocr"))).unwrap();
    assert!(matches!(
        worker.run_once(&handler).await.unwrap(),
        Handled::Completed { .. }
    ));
    let second = worker.run_once(&handler).await.unwrap();
    assert!(
        matches!(&second, Handled::Obsolete { status: 409, .. }),
        "{second:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(fake.ready("lucius.ocr").is_empty());
    assert_eq!(fake.locked(), 0);
}

#[tokio::test]
async fn heartbeats_extend_the_lease_and_renew_the_lock_while_the_handler_works() {
    let (fake, _engine, _job) = rig().await;
    let mut cfg = config(&fake, queue("lucius.ocr"));
    cfg.heartbeat_interval = Some(Duration::from_millis(100));
    let worker = Worker::new(cfg).unwrap();
    let slow = |d: Directive| async move {
        tokio::time::sleep(Duration::from_millis(650)).await;
        echo(d).await
    };
    let handled = worker.run_once(&slow).await.unwrap();
    assert!(matches!(handled, Handled::Completed { .. }), "{handled:?}");
    let beats = fake.seen_at("/heartbeat");
    assert!(beats.len() >= 2, "{} heartbeats", beats.len());
    assert!(beats.iter().all(|b| b.status == 200));
    let renewals: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| {
            s.method == hyper::Method::POST
                && s.path.contains("/messages/")
                && !s.path.ends_with("/head")
        })
        .collect();
    assert!(renewals.len() >= 2, "{} renewals", renewals.len());
    assert!(renewals.iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn a_cancelled_job_stops_the_handler_at_the_next_heartbeat() {
    let (fake, engine, job) = rig().await;
    let mut cfg = config(&fake, queue("lucius.ocr"));
    cfg.heartbeat_interval = Some(Duration::from_millis(100));
    let worker = Worker::new(cfg).unwrap();
    let finished = Arc::new(AtomicUsize::new(0));
    let done = finished.clone();
    let eng = engine.clone();
    let cancelling = move |d: Directive| {
        let (eng, done) = (eng.clone(), done.clone());
        async move {
            let id = JobId::parse(&d.job_id).unwrap();
            eng.cancel(&id, "client cancelled").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            done.fetch_add(1, Ordering::SeqCst);
            echo(d).await
        }
    };
    let started = std::time::Instant::now();
    let handled = worker.run_once(&cancelling).await.unwrap();
    assert!(
        matches!(&handled, Handled::Obsolete { status: 409, .. }),
        "{handled:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the handler was stopped"
    );
    assert_eq!(fake.locked(), 0, "the message was deleted");
    assert_eq!(
        engine.job(&job).await.unwrap().job.status,
        JobStatus::Cancelled
    );
}

#[tokio::test]
async fn an_unreachable_orchestrator_unlocks_the_message_for_redelivery() {
    let (fake, engine, job) = rig().await;
    let mut cfg = config(&fake, queue("lucius.ocr"));
    cfg.orchestrator_url = format!("http://127.0.0.1:{}", common::refused_port().await);
    let worker = Worker::new(cfg).unwrap();
    let handled = worker.run_once(&echo).await.unwrap();
    assert!(matches!(handled, Handled::Abandoned { .. }), "{handled:?}");
    let ready = fake.ready("lucius.ocr");
    assert_eq!(ready.len(), 1, "back on the queue");
    assert_eq!(ready[0].delivery_count, 1);
    assert!(fake
        .seen()
        .iter()
        .any(|s| s.method == hyper::Method::PUT && s.status == 200));
    // Redelivered to a worker that can reach the orchestrator, it completes.
    let worker = Worker::new(config(&fake, queue("lucius.ocr"))).unwrap();
    assert!(matches!(
        worker.run_once(&echo).await.unwrap(),
        Handled::Completed { .. }
    ));
    assert_eq!(
        engine.job(&job).await.unwrap().steps[0].status,
        StepStatus::Succeeded
    );
}

#[tokio::test]
async fn a_refused_worker_key_stops_the_worker_and_unlocks_the_message() {
    let (fake, _engine, _job) = rig().await;
    let mut cfg = config(&fake, queue("lucius.ocr"));
    cfg.worker_key = Some("wrong".into());
    let worker = Worker::new(cfg).unwrap();
    let err = worker.run_once(&echo).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(fake.ready("lucius.ocr").len(), 1);
    let err = worker.run(echo, std::future::pending()).await.unwrap_err();
    assert!(matches!(
        err,
        WorkerError::Orchestrator {
            permanent: true,
            ..
        }
    ));
}

#[tokio::test]
async fn a_refused_signature_on_receive_is_permanent() {
    let (fake, _engine, _job) = rig().await;
    let mut cfg = config(&fake, queue("lucius.ocr"));
    cfg.connection = fake.connection_with(KEY_NAME, "d3Jvbmc=");
    let worker = Worker::new(cfg).unwrap();
    let err = worker.run_once(&echo).await.unwrap_err();
    assert!(
        matches!(&err, WorkerError::Broker { permanent: true, message } if message.contains("401")),
        "{err}"
    );
    assert_eq!(fake.seen_at("/messages/head")[0].status, 401);
}

#[tokio::test]
async fn an_unreadable_message_is_unlocked_and_reported() {
    let fake = Fake::start().await;
    let conn = ConnectionString::parse(&fake.connection()).unwrap();
    let client = azure_messaging_servicebus::service_bus::QueueClient::new(
        lucius_servicebus::transport::client_for(&conn),
        conn.namespace(),
        "lucius.ocr",
        KEY_NAME,
        KEY,
    )
    .unwrap();
    client.send_message("not json", None).await.unwrap();
    let worker = Worker::new(config(&fake, queue("lucius.ocr"))).unwrap();
    let handled = worker.run_once(&echo).await.unwrap();
    assert!(
        matches!(&handled, Handled::Unreadable { reason, .. } if reason.contains("not JSON")),
        "{handled:?}"
    );
    assert_eq!(fake.ready("lucius.ocr").len(), 1);
    assert!(fake.seen_at("/v1/").is_empty());
}

#[tokio::test]
async fn run_handles_messages_until_shutdown() {
    let (fake, engine, job) = rig().await;
    let worker = Worker::new(config(&fake, queue("lucius.ocr"))).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(echo, async {
                let _ = stopped.await;
            })
            .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while engine.job(&job).await.unwrap().steps[0].status != StepStatus::Succeeded {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never completed the step"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run stops on shutdown")
        .unwrap();
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn run_backs_off_while_the_orchestrator_is_unreachable() {
    let (fake, _engine, _job) = rig().await;
    let mut cfg = config(&fake, queue("lucius.ocr"));
    cfg.orchestrator_url = format!("http://127.0.0.1:{}", common::refused_port().await);
    let worker = Worker::new(cfg).unwrap();
    let result = worker
        .run(echo, tokio::time::sleep(Duration::from_millis(1_000)))
        .await;
    assert_eq!(result, Ok(()));
    // The ack is tried again after 200, 400 and 800 ms before the message is released,
    // and a released message makes the next receive wait: a handful of receives, not a
    // spin.
    let receives = fake.seen_at("/messages/head").len();
    assert!((1..=5).contains(&receives), "{receives} receives in 1 s");
    assert_eq!(
        fake.ready("lucius.ocr").len(),
        1,
        "the message is still there"
    );
}
