//! Pull mode: a handle built without a publisher hands directives to workers that poll,
//! claiming them from the store's outbox; nothing is queued in memory.

mod common;

use std::time::Duration;

use lucius_core::memory::{ManualClock, MemoryPublisher, MemoryStore};
use lucius_core::testkit::command;
use lucius_core::{JobStatus, Millis, OutboxStatus, StepStatus, Timestamp};
use lucius_runtime::{Lucius, PollError, PullFilter, Settings, Shutdown, Worker};
use serde_json::json;

use common::Ticking;

const T0: Timestamp = Timestamp(1_709_596_800_000);

fn pulling(store: &MemoryStore, clock: &Ticking, settings: Settings) -> Lucius {
    Lucius::builder()
        .store(store.clone())
        .clock(clock.clone())
        .settings(settings)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_waiting_poll_is_woken_by_the_call_that_writes_a_directive() {
    let clock = Ticking(ManualClock::new(T0));
    let lucius = pulling(&MemoryStore::new(), &clock, Settings::no_loops());
    assert!(lucius.pulls());
    let started = tokio::time::Instant::now();
    let poll = tokio::spawn({
        let l = lucius.clone();
        async move { l.poll(&PullFilter::any(), 5, Millis(30_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sub = lucius.submit(command("acme", "k", 0)).await.unwrap();
    let got = poll.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&*got[0].job_id, sub.job_id.as_str());
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "woken at once, not by the recheck: {:?}",
        started.elapsed()
    );
    let rec = lucius.job(&sub.job_id).await.unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Initiated);
}

#[tokio::test(start_paused = true)]
async fn a_poll_with_nothing_due_returns_empty_when_its_wait_runs_out() {
    let clock = Ticking(ManualClock::new(T0));
    let lucius = pulling(&MemoryStore::new(), &clock, Settings::no_loops());
    let started = tokio::time::Instant::now();
    let got = lucius
        .poll(&PullFilter::any(), 5, Millis(2_000))
        .await
        .unwrap();
    assert!(got.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // No wait: answers at once.
    let started = tokio::time::Instant::now();
    assert!(lucius
        .poll(&PullFilter::any(), 5, Millis(0))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_directive_written_by_another_process_is_found_by_the_recheck() {
    let clock = Ticking(ManualClock::new(T0));
    let store = MemoryStore::new();
    let poller = pulling(&store, &clock, Settings::no_loops());
    // Another node on the same store: its submit cannot wake this node's pollers.
    let other = pulling(&store, &clock, Settings::no_loops());
    let poll = tokio::spawn({
        let l = poller.clone();
        async move { l.poll(&PullFilter::any(), 5, Millis(30_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    other.submit(command("acme", "k", 0)).await.unwrap();
    let got = poll.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert!(started.elapsed() <= Duration::from_millis(600));
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_waiting_polls_and_a_bus_handle_refuses_them() {
    let clock = Ticking(ManualClock::new(T0));
    let lucius = pulling(&MemoryStore::new(), &clock, Settings::no_loops());
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let (l, s) = (lucius.clone(), shutdown.clone());
        async move { l.run(s.wait()).await }
    });
    let poll = tokio::spawn({
        let l = lucius.clone();
        async move { l.poll(&PullFilter::any(), 5, Millis(600_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    shutdown.trigger();
    assert!(poll.await.unwrap().unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(1));
    run.await.unwrap();

    let bus = Lucius::builder()
        .store(MemoryStore::new())
        .publisher(MemoryPublisher::new())
        .build()
        .unwrap();
    assert!(!bus.pulls());
    assert!(bus.in_process().is_none());
    assert_eq!(
        bus.poll(&PullFilter::any(), 1, Millis(0))
            .await
            .unwrap_err(),
        PollError::Bus
    );
}

#[tokio::test(start_paused = true)]
async fn in_pull_mode_the_loops_never_mark_a_directive_sent_nobody_took() {
    let clock = Ticking(ManualClock::new(T0));
    let store = MemoryStore::new();
    // Every loop on, as the all-in-one node runs them.
    let settings = Settings::default().with_outbox_retry(Some(Millis(1_000)));
    let lucius = pulling(&store, &clock, settings);
    let sub = lucius.submit(command("acme", "k", 0)).await.unwrap();
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let (l, s) = (lucius.clone(), shutdown.clone());
        async move { l.run(s.wait()).await }
    });
    // Ten minutes of dispatch, retry and sweep rounds with no worker polling.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let rec = lucius.job(&sub.job_id).await.unwrap();
    assert_eq!(rec.outbox[0].status, OutboxStatus::Pending);
    assert_eq!(
        rec.outbox[0].publish_attempts, 0,
        "no publication was tried"
    );
    assert_eq!(rec.steps[0].status, StepStatus::Queued);
    assert_eq!(rec.job.status, JobStatus::Accepted, "waits for a worker");
    // A worker that shows up gets it, and the job finishes.
    let worker = Worker::new(lucius.in_process().unwrap())
        .id("w1")
        .clock(std::sync::Arc::new(clock.clone()))
        .fallback(|d, _| async move { Ok(json!({"step": &*d.step_id})) });
    let w = tokio::spawn(worker.run(shutdown.wait()));
    for _ in 0..10_000 {
        if lucius.job(&sub.job_id).await.unwrap().job.status == JobStatus::Succeeded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        lucius.job(&sub.job_id).await.unwrap().job.status,
        JobStatus::Succeeded
    );
    shutdown.trigger();
    run.await.unwrap();
    let report = w.await.unwrap();
    assert_eq!(report.completed, 3);
}

#[tokio::test(start_paused = true)]
async fn what_one_node_accepted_a_restarted_node_hands_out() {
    let clock = Ticking(ManualClock::new(T0));
    let store = MemoryStore::new();
    let before = pulling(&store, &clock, Settings::no_loops());
    let sub = before.submit(command("acme", "k", 0)).await.unwrap();
    drop(before);
    let after = pulling(&store, &clock, Settings::no_loops());
    let got = after
        .poll(&PullFilter::steps(["ocr"]), 1, Millis(0))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&*got[0].job_id, sub.job_id.as_str());
}
