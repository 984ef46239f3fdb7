//! Typed step handlers: a [`Worker`] takes directives from a [`DirectiveSource`], runs the
//! handler registered for the step, heartbeats for it while it runs, and completes or
//! fails the step with what the handler returns.
//!
//! ```no_run
//! # async fn demo(lucius: lucius_runtime::Lucius) {
//! use lucius_runtime::{Shutdown, Worker};
//!
//! let shutdown = Shutdown::new();
//! shutdown.on_signals();
//! let source = lucius.in_process().expect("built without a publisher");
//! let report = Worker::new(source)
//!     .id("ocr-worker-1")
//!     .concurrency(8)
//!     .handle("ocr", |directive, ctx| async move {
//!         if directive.payload.is_null() {
//!             return Err(ctx.fail("no page settings", false));
//!         }
//!         Ok(serde_json::json!({"pages": 3}))
//!     })
//!     .run(shutdown.wait())
//!     .await;
//! println!("{report:?}");
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lucius_core::step::Failure;
use lucius_core::{Clock, Directive, Millis};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clock::SystemClock;
use crate::shutdown::Shutdown;
use crate::source::{CallError, DirectiveSource, Settlement};

/// Why a handler gave up on a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// Human-readable reason, stored as the step's error.
    pub message: String,
    /// Whether another attempt may succeed (the step is retried while attempts remain).
    pub retryable: bool,
}

impl StepFailure {
    /// A failure another attempt may not have.
    pub fn retryable(message: impl Into<String>) -> StepFailure {
        StepFailure {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no attempt will avoid: the step fails for good.
    pub fn permanent(message: impl Into<String>) -> StepFailure {
        StepFailure {
            message: message.into(),
            retryable: false,
        }
    }
}

/// What a handler gets besides its directive.
#[derive(Debug, Clone)]
pub struct Ctx {
    worker: Arc<str>,
    attempt: u32,
    max_attempts: u32,
}

impl Ctx {
    /// The worker's id (the lease holder).
    pub fn worker_id(&self) -> &str {
        &self.worker
    }

    /// Whether this is the step's last allowed attempt.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// A failure to return: `retryable` lets the step try again while attempts remain.
    pub fn fail(&self, message: impl Into<String>, retryable: bool) -> StepFailure {
        StepFailure {
            message: message.into(),
            retryable,
        }
    }
}

/// What a handler returns: the step's result, or why it failed.
pub type HandlerResult = Result<serde_json::Value, StepFailure>;

type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

trait Handler: Send + Sync {
    fn call(&self, directive: Directive, ctx: Ctx) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Directive, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, directive: Directive, ctx: Ctx) -> HandlerFuture {
        Box::pin(self(directive, ctx))
    }
}

/// What a worker did until it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Steps completed.
    pub completed: usize,
    /// Steps failed (the handler returned an error or panicked).
    pub failed: usize,
    /// Directives whose `ack` was refused (a duplicate, a stale attempt, a cancelled job).
    pub refused: usize,
    /// Handlers stopped because their lease was lost (heartbeat refused).
    pub lease_lost: usize,
    /// Directives for a step with no handler (left to their ACK deadline).
    pub unhandled: usize,
    /// Calls that could not be delivered (orchestrator unavailable after retries).
    pub undelivered: usize,
    /// Why the worker stopped on its own ([`CallError::Fatal`]); `None` after a shutdown
    /// or when the source closed.
    pub fatal: Option<String>,
}

#[derive(Debug, Default)]
struct Stats {
    fatal: std::sync::Mutex<Option<String>>,
    completed: AtomicUsize,
    failed: AtomicUsize,
    refused: AtomicUsize,
    lease_lost: AtomicUsize,
    unhandled: AtomicUsize,
    undelivered: AtomicUsize,
}

impl Stats {
    fn report(&self) -> WorkerReport {
        WorkerReport {
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            lease_lost: self.lease_lost.load(Ordering::Relaxed),
            unhandled: self.unhandled.load(Ordering::Relaxed),
            undelivered: self.undelivered.load(Ordering::Relaxed),
            fatal: self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// Runs step handlers on the directives of a [`DirectiveSource`].
#[must_use]
pub struct Worker<S: DirectiveSource> {
    source: Arc<S>,
    id: Arc<str>,
    concurrency: usize,
    handlers: HashMap<String, Arc<dyn Handler>>,
    fallback: Option<Arc<dyn Handler>>,
    clock: Arc<dyn Clock>,
    grace: Millis,
}

impl<S: DirectiveSource> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("concurrency", &self.concurrency)
            .field("steps", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Attempts of a call the orchestrator could not take (store or network trouble).
const CALL_ATTEMPTS: u32 = 4;

impl<S: DirectiveSource> Worker<S> {
    /// A worker on `source`, named `worker-<pid>`, running 4 handlers at once.
    pub fn new(source: S) -> Worker<S> {
        Worker {
            source: Arc::new(source),
            id: format!("worker-{}", std::process::id()).into(),
            concurrency: 4,
            handlers: HashMap::new(),
            fallback: None,
            clock: Arc::new(SystemClock),
            grace: Millis(30_000),
        }
    }

    /// The worker's id: the lease holder every call names. Unique among workers.
    pub fn id(mut self, id: impl Into<String>) -> Worker<S> {
        self.id = id.into().into();
        self
    }

    /// Handlers running at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Worker<S> {
        self.concurrency = n.max(1);
        self
    }

    /// The clock heartbeats and call retries wait on (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Worker<S> {
        self.clock = clock;
        self
    }

    /// How long shutdown waits for running handlers before stopping them (default 30 s);
    /// a stopped handler's step is retried by the sweeper once its lease runs out.
    pub fn shutdown_grace(mut self, grace: Millis) -> Worker<S> {
        self.grace = grace;
        self
    }

    /// Runs `handler` for directives of step `step_id`.
    pub fn handle<F, Fut>(mut self, step_id: impl Into<String>, handler: F) -> Worker<S>
    where
        F: Fn(Directive, Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.handlers.insert(step_id.into(), Arc::new(handler));
        self
    }

    /// Runs `handler` for directives of every step without a handler of its own.
    pub fn fallback<F, Fut>(mut self, handler: F) -> Worker<S>
    where
        F: Fn(Directive, Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// Takes directives until `shutdown` completes or the source closes, then waits for
    /// the handlers in flight (up to the shutdown grace) and reports.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> WorkerReport {
        let stats = Arc::new(Stats::default());
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        // Triggered by a handler's task on a fatal call error.
        let halt = Shutdown::new();
        let halted = halt.wait();
        let mut halted = std::pin::pin!(halted);
        if self.fallback.is_none() {
            let mut steps: Vec<String> = self.handlers.keys().cloned().collect();
            steps.sort();
            self.source.handles(&steps);
        }
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = &mut halted => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let directive = tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = &mut halted => break,
                d = self.source.next() => match d {
                    Some(d) => d,
                    None => break,
                },
            };
            while tasks.try_join_next().is_some() {}
            let handler = self
                .handlers
                .get(&*directive.step_id)
                .or(self.fallback.as_ref())
                .cloned();
            let Some(handler) = handler else {
                tracing::warn!(directive = %directive.directive_id, step = %directive.step_id, worker = %self.id,
                    "no handler for this step; released, and left to its ACK deadline");
                stats.unhandled.fetch_add(1, Ordering::Relaxed);
                self.source.settle(&directive, Settlement::Release).await;
                continue;
            };
            let one = One {
                source: self.source.clone(),
                id: self.id.clone(),
                clock: self.clock.clone(),
                stats: stats.clone(),
                halt: halt.clone(),
            };
            tasks.spawn(async move {
                one.work(directive, handler).await;
                drop(permit);
            });
        }
        let drained = tokio::time::timeout(self.grace.to_std(), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(worker = %self.id, running = tasks.len(), "handlers still running after the shutdown grace; stopped");
            tasks.abort_all();
        }
        stats.report()
    }
}

/// One directive's work.
struct One<S> {
    source: Arc<S>,
    id: Arc<str>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    halt: Shutdown,
}

impl<S: DirectiveSource> One<S> {
    async fn work(&self, d: Directive, handler: Arc<dyn Handler>) {
        let settlement = self.steps(&d, handler).await;
        self.source.settle(&d, settlement).await;
    }

    /// Records a fatal call error and stops the worker; the directive is released.
    fn fatal(&self, d: &Directive, e: &str) -> Settlement {
        tracing::error!(directive = %d.directive_id, worker = %self.id, error = %e, "this worker cannot act; stopping it");
        self.stats
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| e.to_owned());
        self.halt.trigger();
        Settlement::Release
    }

    async fn steps(&self, d: &Directive, handler: Arc<dyn Handler>) -> Settlement {
        let d = d.clone();
        match self.call(|| self.source.ack(&d, &self.id)).await {
            Ok(()) => {}
            Err(CallError::Refused(e)) => {
                tracing::info!(directive = %d.directive_id, worker = %self.id, error = %e, "ack refused; skipping the directive");
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Settlement::Done;
            }
            Err(CallError::Fatal(e)) => return self.fatal(&d, &e),
            Err(e) => {
                tracing::warn!(directive = %d.directive_id, worker = %self.id, error = %e, "ack not delivered; releasing the directive");
                self.stats.undelivered.fetch_add(1, Ordering::Relaxed);
                return Settlement::Release;
            }
        }
        let ctx = Ctx {
            worker: self.id.clone(),
            attempt: d.attempt,
            max_attempts: d.max_attempts,
        };
        let mut work = tokio::spawn(handler.call(d.clone(), ctx));
        let outcome = tokio::select! {
            joined = &mut work => joined,
            (lost, settlement) = self.heartbeats(&d) => {
                work.abort();
                tracing::warn!(directive = %d.directive_id, worker = %self.id, reason = %lost,
                    "lease lost; the handler was stopped");
                self.stats.lease_lost.fetch_add(1, Ordering::Relaxed);
                return settlement;
            }
        };
        let result = match outcome {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(StepFailure::retryable(format!(
                "the handler of step {} panicked",
                d.step_id
            ))),
            // Cancelled: only when the runtime itself stops.
            Err(_) => return Settlement::Release,
        };
        let (sent, ok) = match result {
            Ok(value) => (
                self.call(|| self.source.complete(&d, &self.id, value.clone()))
                    .await,
                true,
            ),
            Err(f) => (
                self.call(|| {
                    self.source.fail(
                        &d,
                        &self.id,
                        Failure {
                            error: f.message.clone(),
                            retryable: f.retryable,
                        },
                    )
                })
                .await,
                false,
            ),
        };
        match sent {
            Ok(()) if ok => _ = self.stats.completed.fetch_add(1, Ordering::Relaxed),
            Ok(()) => _ = self.stats.failed.fetch_add(1, Ordering::Relaxed),
            Err(CallError::Refused(e)) => {
                tracing::info!(directive = %d.directive_id, worker = %self.id, error = %e, "result refused: the step moved on");
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(CallError::Fatal(e)) => return self.fatal(&d, &e),
            Err(e) => {
                tracing::warn!(directive = %d.directive_id, worker = %self.id, error = %e,
                    "result not delivered; the step is retried once its lease runs out");
                self.stats.undelivered.fetch_add(1, Ordering::Relaxed);
                return Settlement::Release;
            }
        }
        Settlement::Done
    }

    /// Heartbeats at a third of the lease until one is refused; returns why, and how to
    /// settle the directive.
    async fn heartbeats(&self, d: &Directive) -> (String, Settlement) {
        let period = Millis((d.lease_duration_ms / 3).max(10));
        loop {
            self.clock.sleep(period).await;
            match self.source.heartbeat(d, &self.id).await {
                Ok(()) => {}
                Err(CallError::Refused(e)) => return (e, Settlement::Done),
                Err(CallError::Fatal(e)) => {
                    let settlement = self.fatal(d, &e);
                    return (e, settlement);
                }
                Err(e) => {
                    tracing::warn!(directive = %d.directive_id, worker = %self.id, error = %e, "heartbeat failed; trying again");
                }
            }
        }
    }

    /// Runs `op`, trying again (with a growing pause) while the orchestrator is unavailable.
    async fn call<'a, F, Fut>(&self, op: F) -> Result<(), CallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), CallError>> + 'a,
    {
        let mut pause = Millis(200);
        let mut tried = 0;
        loop {
            tried += 1;
            match op().await {
                Err(CallError::Unavailable(e)) if tried < CALL_ATTEMPTS => {
                    tracing::debug!(worker = %self.id, error = %e, "call failed; trying again");
                    self.clock.sleep(pause).await;
                    pause = Millis(pause.0 * 2);
                }
                other => return other,
            }
        }
    }
}
