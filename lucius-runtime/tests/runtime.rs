//! The runtime as an embedder uses it: the builder, the handle's calls publishing what they
//! imply, the loops on a manual clock, lease-owned dispatch, and typed step handlers.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lucius_core::memory::{ManualClock, MemoryPublisher, MemoryStore};
use lucius_core::ports::PublishError;
use lucius_core::testkit::command;
use lucius_core::{
    Clock, Directive, EngineConfig, JobStatus, Millis, OutboxStatus, Partition, PublishRetryPolicy,
    Publisher, StepStatus, Timestamp,
};
use lucius_runtime::{
    BuildError, Candidates, Dispatch, Lucius, Owned, Settings, Shutdown, StepFailure, Worker,
};
use serde_json::json;

use common::Ticking;

/// 2024-03-05T00:00:00Z.
const T0: Timestamp = Timestamp(1_709_596_800_000);

/// A bus that refuses while `down` is set (transiently, or permanently with `permanent`).
#[derive(Clone, Default)]
struct Bus {
    down: Arc<AtomicBool>,
    permanent: bool,
    sent: Arc<AtomicUsize>,
}

#[async_trait]
impl Publisher for Bus {
    async fn publish(&self, _d: &Directive) -> Result<(), PublishError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(if self.permanent {
                PublishError::Permanent("401 unauthorised".into())
            } else {
                PublishError::Transient("503 unavailable".into())
            });
        }
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Waits (yielding, so spawned loops run) until `cond` holds; panics after `rounds`.
async fn until<F, Fut>(what: &str, rounds: usize, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..rounds {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("gave up waiting for {what}");
}

#[test]
fn the_builder_refuses_what_cannot_work() {
    assert_eq!(Lucius::builder().build().unwrap_err(), BuildError::NoStore);
    let owned = Owned::new("d1", Candidates::Discover);
    let no_leases = Lucius::builder()
        .store(MemoryStore::new())
        .settings(Settings::default().with_dispatch(Dispatch::Owned(owned.clone())))
        .build();
    assert_eq!(no_leases.unwrap_err(), BuildError::NoLeaseStore);
    let mut slow = owned;
    slow.interval = Millis(10_001); // more than a third of the 30 s lease
    let err = Lucius::builder()
        .store(MemoryStore::new())
        .leases(MemoryStore::new())
        .settings(Settings::default().with_dispatch(Dispatch::Owned(slow)))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Setting(ref m) if m.contains("third")),
        "{err}"
    );
    let zero = Lucius::builder()
        .store(MemoryStore::new())
        .settings(Settings::default().with_sweep(Some(Millis(0))))
        .build();
    assert!(matches!(zero, Err(BuildError::Setting(_))));
    // Without a publisher there is an in-process source; with one there is not.
    let with_bus = Lucius::builder()
        .store(MemoryStore::new())
        .publisher(MemoryPublisher::new())
        .build()
        .unwrap();
    assert!(with_bus.in_process().is_none());
    let without = Lucius::builder().store(MemoryStore::new()).build().unwrap();
    assert!(without.in_process().is_some());
}

#[tokio::test]
async fn calls_publish_what_they_imply_without_publish_all() {
    let bus = MemoryPublisher::new();
    let lucius = Lucius::builder()
        .store(MemoryStore::new())
        .publisher(bus.clone())
        .clock(ManualClock::new(T0))
        .settings(Settings::no_loops())
        .build()
        .unwrap();
    let sub = lucius.submit(command("acme", "k1", 0)).await.unwrap();
    until("the first directive", 1000, || async { bus.len() == 1 }).await;
    let d = bus.drain().remove(0);
    let call = lucius_core::engine::WorkerCall {
        job_id: &sub.job_id,
        step_id: &d.step_id,
        attempt: d.attempt,
        worker_id: Some("w"),
    };
    lucius.ack(call.clone()).await.unwrap();
    let step = lucius.complete(call, json!({"ok": true})).await.unwrap();
    assert_eq!(step.status, StepStatus::Succeeded);
    let rec = lucius.job(&sub.job_id).await.unwrap();
    if rec.steps.len() > 1 {
        // The next step's directive went out with no further call.
        until("the next directive", 1000, || async { bus.len() == 1 }).await;
        assert_eq!(&*bus.drain()[0].step_id, rec.steps[1].step_id.as_str());
    }
    assert_eq!(lucius.publishing(), 0);
}

#[tokio::test]
async fn the_dispatch_loop_publishes_what_a_refusing_bus_left_pending() {
    let bus = Bus::default();
    bus.down.store(true, Ordering::SeqCst);
    let clock = ManualClock::new(T0);
    let lucius = Lucius::builder()
        .store(MemoryStore::new())
        .publisher(bus.clone())
        .clock(clock.clone())
        .engine_config(EngineConfig {
            publish_retry: PublishRetryPolicy {
                delay: Millis(1_000),
                max_attempts: 1_000,
            },
            ..EngineConfig::default()
        })
        .build()
        .unwrap();
    let sub = lucius.submit(command("acme", "k1", 0)).await.unwrap();
    until("the inline publication to fail", 1000, || async {
        lucius.publishing() == 0
    })
    .await;
    let entry = |rec: &lucius_core::JobRecord| rec.outbox[0].status;
    assert_eq!(
        entry(&lucius.job(&sub.job_id).await.unwrap()),
        OutboxStatus::Pending
    );
    let shutdown = Shutdown::new();
    let loops = tokio::spawn({
        let (l, s) = (lucius.clone(), shutdown.clone());
        async move { l.run(s.wait()).await }
    });
    bus.down.store(false, Ordering::SeqCst);
    until("the dispatch loop to publish", 10_000, || async {
        entry(&lucius.job(&sub.job_id).await.unwrap()) == OutboxStatus::Sent
    })
    .await;
    assert!(clock.now() > T0, "the loops waited on the manual clock");
    shutdown.trigger();
    loops.await.unwrap();
}

#[tokio::test]
async fn a_bus_that_refuses_for_good_fails_the_job_with_no_operator() {
    let bus = Bus {
        permanent: true,
        ..Bus::default()
    };
    bus.down.store(true, Ordering::SeqCst);
    let lucius = Lucius::builder()
        .store(MemoryStore::new())
        .publisher(bus.clone())
        .clock(ManualClock::new(T0))
        .build()
        .unwrap();
    let sub = lucius.submit(command("acme", "k1", 0)).await.unwrap();
    let shutdown = Shutdown::new();
    let loops = tokio::spawn({
        let (l, s) = (lucius.clone(), shutdown.clone());
        async move { l.run(s.wait()).await }
    });
    until("the job to fail", 100_000, || async {
        lucius.job(&sub.job_id).await.unwrap().job.status == JobStatus::Failed
    })
    .await;
    let rec = lucius.job(&sub.job_id).await.unwrap();
    let reason = rec.steps[0].error.as_deref().unwrap_or_default().to_owned();
    assert!(
        reason.contains("401"),
        "the publication error is the reason: {reason}"
    );
    shutdown.trigger();
    loops.await.unwrap();
}

#[tokio::test]
async fn lease_owned_dispatchers_share_partitions_and_publish_them() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let bus = Bus::default();
    bus.down.store(true, Ordering::SeqCst);
    let handle = |id: &str| {
        let mut owned = Owned::new(id, Candidates::Discover);
        owned.interval = Millis(1_000);
        Lucius::builder()
            .store(store.clone())
            .leases(store.clone())
            .publisher(bus.clone())
            .clock(clock.clone())
            .settings(Settings::no_loops().with_dispatch(Dispatch::Owned(owned)))
            .build()
            .unwrap()
    };
    let (a, b) = (handle("a"), handle("b"));
    let mut jobs = Vec::new();
    for t in ["t1", "t2", "t3", "t4"] {
        jobs.push(a.submit(command(t, "k", 0)).await.unwrap().job_id);
    }
    until("inline publications to fail", 1000, || async {
        a.publishing() == 0
    })
    .await;
    bus.down.store(false, Ordering::SeqCst);
    let shutdown = Shutdown::new();
    let runs: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|l| {
            let s = shutdown.clone();
            tokio::spawn(async move { l.run(s.wait()).await })
        })
        .collect();
    for id in &jobs {
        until("every partition dispatched", 20_000, || async {
            a.job(id).await.unwrap().outbox[0].status == OutboxStatus::Sent
        })
        .await;
    }
    until("both dispatchers to own partitions", 20_000, || async {
        let leases = lucius_core::LeaseStore::leases(&store).await.unwrap();
        let now = clock.now();
        let owners: std::collections::BTreeSet<_> = leases
            .iter()
            .filter(|l| l.is_held(now))
            .filter_map(|l| l.owner.clone())
            .collect();
        owners.len() == 2
    })
    .await;
    let watch = a.watchdog() + &b.watchdog();
    let p = Partition::parse(&format!("t1#{}", "202403")).unwrap();
    assert!(watch.contains(&format!("partition=\"{p}\"")), "{watch}");
    shutdown.trigger();
    for r in runs {
        r.await.unwrap();
    }
    // Shutdown released every lease.
    let now = clock.now();
    let leases = lucius_core::LeaseStore::leases(&store).await.unwrap();
    assert!(leases.iter().all(|l| !l.is_held(now)), "{leases:?}");
}

fn in_process(clock: &Ticking) -> Lucius {
    Lucius::builder()
        .store(MemoryStore::new())
        .clock(clock.clone())
        .settings(Settings::no_loops())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn handlers_complete_steps_and_heartbeats_outlast_the_lease() {
    let clock = Ticking(ManualClock::new(T0));
    // A sweeper runs every second: a lease left to expire would be retried.
    let lucius = Lucius::builder()
        .store(MemoryStore::new())
        .clock(clock.clone())
        .settings(Settings::no_loops().with_sweep(Some(Millis(1_000))))
        .build()
        .unwrap();
    let sub = lucius.submit(command("acme", "k", 0)).await.unwrap();
    let lease = lucius.job(&sub.job_id).await.unwrap().steps[0].lease_duration;
    let shutdown = Shutdown::new();
    let loops = tokio::spawn({
        let (l, s) = (lucius.clone(), shutdown.clone());
        async move { l.run(s.wait()).await }
    });
    let slow = clock.clone();
    let worker = Worker::new(lucius.in_process().unwrap())
        .id("w1")
        .clock(Arc::new(clock.clone()))
        .fallback(move |d, ctx| {
            let clock = slow.clone();
            async move {
                assert_eq!(ctx.worker_id(), "w1");
                // The first step works for three leases' worth of time, in small steps.
                if d.step_index == 0 {
                    for _ in 0..30 {
                        clock.sleep(Millis(lease.0 / 10)).await;
                    }
                }
                Ok(json!({"step": &*d.step_id}))
            }
        });
    let run = tokio::spawn(worker.run(shutdown.wait()));
    until("the job to succeed", 1_000_000, || async {
        lucius.job(&sub.job_id).await.unwrap().job.status == JobStatus::Succeeded
    })
    .await;
    let rec = lucius.job(&sub.job_id).await.unwrap();
    assert!(
        rec.steps.iter().all(|s| s.attempt == 1),
        "no retry was needed"
    );
    assert!(clock.now().0 - T0.0 >= 3 * i64::try_from(lease.0).unwrap());
    shutdown.trigger();
    loops.await.unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.completed, rec.steps.len());
    assert_eq!(report.refused + report.lease_lost + report.failed, 0);
}

#[tokio::test(start_paused = true)]
async fn failures_panics_and_lost_leases_are_reported_to_the_orchestrator() {
    let clock = Ticking(ManualClock::new(T0));
    let lucius = in_process(&clock);
    // `demo.echo` has one step, `echo`, with 3 attempts.
    let body = |key: &str, mode: &str| {
        format!(
            r#"{{"requestType":"demo.echo","tenantId":"acme","idempotencyKey":"{key}","payload":{{"mode":"{mode}"}}}}"#
        )
    };
    let permanent = lucius
        .submit_bytes(body("p", "permanent").as_bytes(), None)
        .await
        .unwrap();
    let panics = lucius
        .submit_bytes(body("x", "panic").as_bytes(), None)
        .await
        .unwrap();
    let cancelled = lucius
        .submit_bytes(body("c", "hang").as_bytes(), None)
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let tick = clock.clone();
    let worker = Worker::new(lucius.in_process().unwrap())
        .id("w1")
        .clock(Arc::new(clock.clone()))
        .handle("echo", move |d, ctx| {
            let clock = tick.clone();
            async move {
                let input = d.command.as_str().to_owned();
                if input.contains("permanent") {
                    Err(ctx.fail("bad document", false))
                } else if input.contains("panic") {
                    if d.attempt < 2 {
                        panic!("handler bug");
                    }
                    Ok(json!({"second": "time lucky"}))
                } else {
                    loop {
                        clock.sleep(Millis(1_000)).await;
                    }
                }
            }
        });
    let run = tokio::spawn(worker.run(shutdown.wait()));
    until("the permanent failure", 100_000, || async {
        lucius.job(&permanent.job_id).await.unwrap().job.status == JobStatus::Failed
    })
    .await;
    let rec = lucius.job(&permanent.job_id).await.unwrap();
    assert_eq!(
        rec.steps[0].attempt, 1,
        "a permanent failure is not retried"
    );
    let error = rec.steps[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("bad document") && error.contains("not retryable"),
        "{error}"
    );
    // A panic fails the attempt as retryable; the retry's directive is handled next.
    until(
        "the panicking step to succeed on its retry",
        100_000,
        || async { lucius.job(&panics.job_id).await.unwrap().job.status == JobStatus::Succeeded },
    )
    .await;
    assert_eq!(
        lucius.job(&panics.job_id).await.unwrap().steps[0].attempt,
        2
    );
    // Cancelling the job makes the next heartbeat refused: the handler is stopped.
    until("the hanging step to run", 100_000, || async {
        lucius.job(&cancelled.job_id).await.unwrap().steps[0].status == StepStatus::Running
    })
    .await;
    lucius.cancel(&cancelled.job_id, "operator").await.unwrap();
    shutdown.trigger();
    let report = run.await.unwrap();
    assert_eq!(report.failed, 2, "{report:?}");
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(report.lease_lost, 1, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_step_without_a_handler_is_left_alone_and_shutdown_waits_for_running_handlers() {
    let clock = Ticking(ManualClock::new(T0));
    let lucius = in_process(&clock);
    let other = lucius.submit(command("acme", "k", 0)).await.unwrap();
    let shutdown = Shutdown::new();
    let finished = Arc::new(AtomicUsize::new(0));
    let done = finished.clone();
    let worker =
        Worker::new(lucius.in_process().unwrap())
            .id("w1")
            .handle("echo", move |_d, _ctx| {
                let done = done.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, StepFailure>(json!({}))
                }
            });
    let run = tokio::spawn(worker.run(shutdown.wait()));
    let echo = lucius
        .submit_bytes(
            br#"{"requestType":"demo.echo","tenantId":"acme","idempotencyKey":"e","payload":{}}"#,
            None,
        )
        .await
        .unwrap();
    until("the echo step to run", 100_000, || async {
        lucius.job(&echo.job_id).await.unwrap().steps[0].status == StepStatus::Running
    })
    .await;
    shutdown.trigger();
    let report = run.await.unwrap();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "shutdown let the handler finish"
    );
    assert_eq!(report.completed, 1);
    assert_eq!(
        report.unhandled, 0,
        "a worker without a fallback takes only the steps it handles"
    );
    let rec = lucius.job(&other.job_id).await.unwrap();
    assert_eq!(
        rec.steps[0].status,
        StepStatus::Queued,
        "the other job's first step is left for a worker that handles it"
    );
}

/// The in-process source, recording settlements, with `complete` unavailable on demand.
struct Recording {
    inner: lucius_runtime::InProcess,
    settled: std::sync::Mutex<Vec<(String, lucius_runtime::Settlement)>>,
    complete_down: AtomicBool,
    key_refused: AtomicBool,
}

#[async_trait]
impl lucius_runtime::DirectiveSource for Recording {
    async fn next(&self) -> Option<Directive> {
        self.inner.next().await
    }
    async fn ack(&self, d: &Directive, w: &str) -> Result<(), lucius_runtime::CallError> {
        if self.key_refused.load(Ordering::SeqCst) {
            return Err(lucius_runtime::CallError::Fatal(
                "401 worker key refused".into(),
            ));
        }
        self.inner.ack(d, w).await
    }
    async fn heartbeat(&self, d: &Directive, w: &str) -> Result<(), lucius_runtime::CallError> {
        self.inner.heartbeat(d, w).await
    }
    async fn complete(
        &self,
        d: &Directive,
        w: &str,
        r: serde_json::Value,
    ) -> Result<(), lucius_runtime::CallError> {
        if self.complete_down.load(Ordering::SeqCst) {
            return Err(lucius_runtime::CallError::Unavailable(
                "connection refused".into(),
            ));
        }
        self.inner.complete(d, w, r).await
    }
    async fn fail(
        &self,
        d: &Directive,
        w: &str,
        f: lucius_core::step::Failure,
    ) -> Result<(), lucius_runtime::CallError> {
        self.inner.fail(d, w, f).await
    }
    async fn settle(&self, d: &Directive, s: lucius_runtime::Settlement) {
        self.settled
            .lock()
            .unwrap()
            .push((d.step_id.to_string(), s));
    }
}

#[tokio::test(start_paused = true)]
async fn deliveries_are_settled_done_or_released_by_what_became_of_them() {
    use lucius_runtime::Settlement::{Done, Release};
    let clock = Ticking(ManualClock::new(T0));
    let lucius = in_process(&clock);
    let source = Arc::new(Recording {
        inner: lucius.in_process().unwrap(),
        settled: std::sync::Mutex::default(),
        complete_down: AtomicBool::new(false),
        key_refused: AtomicBool::new(false),
    });
    let shutdown = Shutdown::new();
    let worker = Worker::new(source.clone())
        .id("w1")
        .clock(Arc::new(clock.clone()))
        .handle("echo", |_d, _ctx| async { Ok(json!({})) });
    let run = tokio::spawn(worker.run(shutdown.wait()));
    let echo = |key: &str| {
        format!(
            r#"{{"requestType":"demo.echo","tenantId":"acme","idempotencyKey":"{key}","payload":{{}}}}"#
        )
    };
    // Handled and reported: done.
    lucius
        .submit_bytes(echo("a").as_bytes(), None)
        .await
        .unwrap();
    // No handler for `ocr`: released.
    lucius.submit(command("acme", "k", 0)).await.unwrap();
    until("two settlements", 100_000, || async {
        source.settled.lock().unwrap().len() == 2
    })
    .await;
    // The orchestrator cannot take the result: released after the call's retries.
    source.complete_down.store(true, Ordering::SeqCst);
    lucius
        .submit_bytes(echo("b").as_bytes(), None)
        .await
        .unwrap();
    until("three settlements", 100_000, || async {
        source.settled.lock().unwrap().len() == 3
    })
    .await;
    shutdown.trigger();
    let report = run.await.unwrap();
    let mut settled = source.settled.lock().unwrap().clone();
    settled.sort_by_key(|(step, s)| (step.clone(), *s == Release));
    assert_eq!(
        settled,
        [
            ("echo".to_owned(), Done),
            ("echo".to_owned(), Release),
            ("ocr".to_owned(), Release)
        ]
    );
    assert_eq!(
        (report.completed, report.unhandled, report.undelivered),
        (1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_fatal_call_error_releases_the_directive_and_stops_the_worker() {
    let clock = Ticking(ManualClock::new(T0));
    let lucius = in_process(&clock);
    let source = Arc::new(Recording {
        inner: lucius.in_process().unwrap(),
        settled: std::sync::Mutex::default(),
        complete_down: AtomicBool::new(false),
        key_refused: AtomicBool::new(true),
    });
    let echo = lucius
        .submit_bytes(
            br#"{"requestType":"demo.echo","tenantId":"acme","idempotencyKey":"f","payload":{}}"#,
            None,
        )
        .await
        .unwrap();
    // No shutdown: the worker stops on its own.
    let report = Worker::new(source.clone())
        .handle("echo", |_d, _ctx| async { Ok(json!({})) })
        .run(std::future::pending())
        .await;
    assert_eq!(report.fatal.as_deref(), Some("401 worker key refused"));
    assert_eq!(
        source.settled.lock().unwrap().clone(),
        [("echo".to_owned(), lucius_runtime::Settlement::Release)]
    );
    let rec = lucius.job(&echo.job_id).await.unwrap();
    assert_eq!(
        rec.steps[0].status,
        StepStatus::Initiated,
        "never acknowledged"
    );
}

#[tokio::test(start_paused = true)]
async fn the_purge_loop_deletes_finished_jobs_after_the_retention() {
    let clock = Ticking(ManualClock::new(T0));
    let store = MemoryStore::new();
    let lucius = Lucius::builder()
        .store(store.clone())
        .clock(clock.clone())
        .engine_config(EngineConfig {
            retention: Some(Millis(60_000)),
            ..EngineConfig::default()
        })
        .settings(Settings::no_loops().with_purge(Some(Millis(10_000))))
        .build()
        .unwrap();
    let done = lucius.submit(command("acme", "done", 0)).await.unwrap();
    lucius.cancel(&done.job_id, "finished").await.unwrap();
    let live = lucius.submit(command("acme", "live", 0)).await.unwrap();
    let shutdown = Shutdown::new();
    let loops = tokio::spawn({
        let (l, s) = (lucius.clone(), shutdown.clone());
        async move { l.run(s.wait()).await }
    });
    // The loop's sleeps move the clock: rounds at 0, 10, …, 50 s find nothing old enough.
    tokio::time::sleep(Duration::from_secs(55)).await;
    assert!(clock.now().0 - T0.0 >= 50_000, "{:?}", clock.now());
    let kept = lucius_core::Store::load_job(&store, &done.job_id).await;
    assert!(kept.unwrap().is_some(), "kept within the retention");
    until("the purge", 1_000, || async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        lucius_core::Store::load_job(&store, &done.job_id)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert!(clock.now().0 - T0.0 >= 60_000, "not before the retention");
    assert!(lucius_core::Store::load_job(&store, &live.job_id)
        .await
        .unwrap()
        .is_some());
    shutdown.trigger();
    loops.await.unwrap();
}
