//! Publication after the answer: a fixed pool of long-lived tasks fed by bounded queues.
//!
//! A request that leaves directives to publish costs a queue push, not a spawned task
//! (a publication future is about 1.6 KB: allocating one per request was a tenth of the
//! intake path's CPU). The pool also bounds the work in flight: when a slow bus fills
//! every queue, further directives are not queued at all. They are already stored
//! `PENDING`, so the outbox retry loop and the dispatcher publish them: nothing is lost,
//! only delayed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use lucius_core::{Engine, OutboxId};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Publishing tasks by default: publications in flight at once (a slow bus waits on each).
pub const PUBLISHERS: usize = 16;

/// Directives each task may hold queued, by default.
pub const QUEUE_PER_PUBLISHER: usize = 1024;

/// The pool. Started on first use, inside the server's runtime; its tasks live as long as
/// that runtime. (A handler moved to another runtime after the first one ended would find
/// the queues closed and leave every directive to the dispatcher: safe, only slower.)
#[derive(Debug)]
pub(crate) struct Background {
    publishers: usize,
    queue: usize,
    queues: OnceLock<Vec<mpsc::Sender<OutboxId>>>,
    next: AtomicUsize,
    /// Queued or being published.
    pending: Arc<AtomicUsize>,
    /// Left to the dispatcher because every queue was full (or the pool had stopped).
    overflowed: AtomicUsize,
}

impl Default for Background {
    fn default() -> Self {
        Background::new(PUBLISHERS, QUEUE_PER_PUBLISHER)
    }
}

impl Background {
    /// A pool of `publishers` tasks with `queue` places each (both at least 1).
    pub(crate) fn new(publishers: usize, queue: usize) -> Background {
        Background {
            publishers: publishers.max(1),
            queue: queue.max(1),
            queues: OnceLock::new(),
            next: AtomicUsize::new(0),
            pending: Arc::new(AtomicUsize::new(0)),
            overflowed: AtomicUsize::new(0),
        }
    }

    /// Directives queued or being published.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Directives left `PENDING` for the dispatcher because the pool was full.
    pub(crate) fn overflowed(&self) -> usize {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Queues `ids` for publication; what does not fit stays `PENDING` in the store.
    /// Must be called from within a tokio runtime (the first call starts the pool there).
    pub(crate) fn publish(&self, engine: &Engine, ids: Vec<OutboxId>) {
        let queues = self.queues.get_or_init(|| self.start(engine));
        for id in ids {
            self.pending.fetch_add(1, Ordering::SeqCst);
            let first = self.next.fetch_add(1, Ordering::Relaxed);
            let mut left = Some(id);
            for k in 0..queues.len() {
                let Some(id) = left.take() else { break };
                match queues[(first + k) % queues.len()].try_send(id) {
                    Ok(()) => {}
                    Err(TrySendError::Full(back) | TrySendError::Closed(back)) => {
                        left = Some(back);
                    }
                }
            }
            if let Some(id) = left {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.overflowed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(directive = %id, "background publishers busy; the dispatcher will publish it");
            }
        }
    }

    fn start(&self, engine: &Engine) -> Vec<mpsc::Sender<OutboxId>> {
        (0..self.publishers)
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<OutboxId>(self.queue);
                let engine = engine.clone();
                let pending = Arc::clone(&self.pending);
                tokio::spawn(async move {
                    while let Some(id) = rx.recv().await {
                        match engine.publish(&id).await {
                            Ok(outcome) => {
                                tracing::trace!(directive = %id, ?outcome, "background publication");
                            }
                            Err(e) => tracing::info!(
                                directive = %id,
                                error = %e,
                                "background publication failed; the directive stays PENDING for the retry loop"
                            ),
                        }
                        pending.fetch_sub(1, Ordering::SeqCst);
                    }
                });
                tx
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lucius_core::memory::{ManualClock, MemoryPublisher, MemoryStore};
    use lucius_core::testkit::command;
    use lucius_core::{Engine, OutboxStatus, Timestamp};

    use super::*;

    #[tokio::test]
    async fn queued_directives_are_published_and_counted_down() {
        let store = MemoryStore::new();
        let bus = MemoryPublisher::new();
        let engine = Engine::new(
            Arc::new(store.clone()),
            Arc::new(bus.clone()),
            Arc::new(ManualClock::new(Timestamp(1_709_596_800_000))),
        );
        let bg = Background::default();
        let mut ids = Vec::new();
        for k in 0..40 {
            let sub = engine
                .submit(command("acme", &format!("k{k}"), 0))
                .await
                .unwrap();
            ids.extend(sub.to_publish);
        }
        bg.publish(&engine, ids.clone());
        for _ in 0..1000 {
            if bg.pending() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(bg.pending(), 0);
        assert_eq!(bg.overflowed(), 0);
        assert_eq!(bus.len(), 40);
        for id in &ids {
            let rec = engine.job(&id.job_id()).await.unwrap();
            assert_eq!(rec.entry(id).unwrap().status, OutboxStatus::Sent);
        }
    }

    #[tokio::test]
    async fn a_full_pool_leaves_directives_pending_for_the_dispatcher() {
        let store = MemoryStore::new();
        let engine = Engine::new(
            Arc::new(store.clone()),
            Arc::new(MemoryPublisher::new()),
            Arc::new(ManualClock::new(Timestamp(1_709_596_800_000))),
        );
        let bg = Background::default();
        let total = PUBLISHERS * QUEUE_PER_PUBLISHER + 5;
        let sub = engine.submit(command("acme", "k", 0)).await.unwrap();
        // The same id many times: only the queues' capacity fits; the current-thread
        // runtime cannot run the publishers until this test yields.
        bg.publish(&engine, vec![sub.to_publish[0].clone(); total]);
        assert_eq!(bg.overflowed(), 5);
        assert_eq!(bg.pending(), PUBLISHERS * QUEUE_PER_PUBLISHER);
    }
}
