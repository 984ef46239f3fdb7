//! [`Lucius`]: the engine with everything that makes it run, built by one [`Builder`].

use std::future::Future;
use std::sync::Arc;

use lucius_core::engine::{Observer, PullFilter, Submission, SweepReport, WorkerCall};
use lucius_core::ports::PublishError;
use lucius_core::step::Failure;
use lucius_core::{
    Clock, Directive, Engine, EngineConfig, EngineError, JobId, JobRecord, LeaseStore, Millis,
    OutboxEntry, OutboxId, OutboxQuery, ProtocolRegistry, Publisher, Step, Store, ValidatedCommand,
};

use crate::background::Background;
use crate::clock::SystemClock;
use crate::ownership::Board;
use crate::pull::{PollError, Pull};
use crate::settings::{Dispatch, Settings};
use crate::shutdown::Shutdown;
use crate::source::InProcess;

/// Why [`Builder::build`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No store was given.
    #[error("no store: call Builder::store (e.g. lucius::memory::MemoryStore::new())")]
    NoStore,
    /// Lease-owned dispatch needs a lease store.
    #[error(
        "Dispatch::Owned needs a lease store: call Builder::leases with the store's LeaseStore"
    )]
    NoLeaseStore,
    /// A setting is out of range.
    #[error("{0}")]
    Setting(String),
}

/// Builds a [`Lucius`]: `Lucius::builder().store(..).publisher(..).build()?`.
///
/// Only the store is required. Without a publisher the handle runs in *pull mode*: workers
/// ask for directives ([`Lucius::poll`], [`Lucius::in_process`], or `POST /v1/workers/poll`
/// through `lucius-http`) and each is claimed from the store's outbox. The clock defaults to the
/// system clock, the protocols to the demo set, the engine and runtime settings to their
/// documented defaults.
#[derive(Default)]
#[must_use]
pub struct Builder {
    store: Option<Arc<dyn Store>>,
    leases: Option<Arc<dyn LeaseStore>>,
    publisher: Option<Arc<dyn Publisher>>,
    clock: Option<Arc<dyn Clock>>,
    protocols: Option<ProtocolRegistry>,
    engine: EngineConfig,
    settings: Settings,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("store", &self.store.is_some())
            .field("leases", &self.leases.is_some())
            .field("publisher", &self.publisher.is_some())
            .field("engine", &self.engine)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// The store jobs, steps, claims and directives live in.
    pub fn store(mut self, store: impl Store + 'static) -> Builder {
        self.store = Some(Arc::new(store));
        self
    }

    /// [`Builder::store`] with a shared handle.
    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Builder {
        self.store = Some(store);
        self
    }

    /// The lease store partition ownership uses (usually the same backend as the store);
    /// required by [`Dispatch::Owned`].
    pub fn leases(mut self, leases: impl LeaseStore + 'static) -> Builder {
        self.leases = Some(Arc::new(leases));
        self
    }

    /// [`Builder::leases`] with a shared handle.
    pub fn leases_arc(mut self, leases: Arc<dyn LeaseStore>) -> Builder {
        self.leases = Some(leases);
        self
    }

    /// The bus directives are published to. Without one, workers pull them
    /// ([`Lucius::poll`], [`Lucius::in_process`]).
    pub fn publisher(mut self, publisher: impl Publisher + 'static) -> Builder {
        self.publisher = Some(Arc::new(publisher));
        self
    }

    /// [`Builder::publisher`] with a shared handle.
    pub fn publisher_arc(mut self, publisher: Arc<dyn Publisher>) -> Builder {
        self.publisher = Some(publisher);
        self
    }

    /// The clock (default: the system clock). Every loop waits through it, so a manual
    /// clock runs them in simulated time.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Builder {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// [`Builder::clock`] with a shared handle.
    pub fn clock_arc(mut self, clock: Arc<dyn Clock>) -> Builder {
        self.clock = Some(clock);
        self
    }

    /// The protocols (default: [`ProtocolRegistry::demo`]).
    pub fn protocols(mut self, protocols: ProtocolRegistry) -> Builder {
        self.protocols = Some(protocols);
        self
    }

    /// The engine's settings (publish timeout and retries, batch size, intake grace).
    pub fn engine_config(mut self, config: EngineConfig) -> Builder {
        self.engine = config;
        self
    }

    /// The runtime's settings (loops, publishers, shutdown grace).
    pub fn settings(mut self, settings: Settings) -> Builder {
        self.settings = settings;
        self
    }

    /// Told of every transition and publication (e.g. `lucius_http::Metrics`).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Builder {
        self.observer = Some(observer);
        self
    }

    /// The handle; refuses missing parts and settings that cannot work.
    pub fn build(self) -> Result<Lucius, BuildError> {
        let store = self.store.ok_or(BuildError::NoStore)?;
        if let Dispatch::Owned(o) = &self.settings.dispatch {
            if self.leases.is_none() {
                return Err(BuildError::NoLeaseStore);
            }
            if o.dispatcher_id.trim().is_empty() {
                return Err(BuildError::Setting(
                    "the dispatcher id must not be empty".into(),
                ));
            }
            if o.interval.0 == 0 || o.interval.0.saturating_mul(3) > o.ownership.lease_duration.0 {
                return Err(BuildError::Setting(format!(
                    "the dispatch interval ({} ms) must be positive and at most a third of the lease duration ({} ms) so leases are renewed in time",
                    o.interval.0, o.ownership.lease_duration.0
                )));
            }
        }
        for (name, interval) in [
            ("outbox retry", self.settings.outbox_retry),
            ("sweep", self.settings.sweep),
            ("pull recheck", Some(self.settings.pull_recheck)),
            (
                "dispatch",
                match &self.settings.dispatch {
                    Dispatch::All { interval } => Some(*interval),
                    _ => None,
                },
            ),
        ] {
            if interval.is_some_and(|i| i.0 == 0) {
                return Err(BuildError::Setting(format!(
                    "the {name} interval must be positive"
                )));
            }
        }
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let (publisher, pull): (Arc<dyn Publisher>, _) = match self.publisher {
            Some(p) => (p, None),
            None => (Arc::new(NoBus), Some(Arc::new(Pull::default()))),
        };
        let mut engine = Engine::new(store, publisher, clock.clone())
            .with_protocols(self.protocols.unwrap_or_else(ProtocolRegistry::demo))
            .with_config(self.engine);
        if let Some(o) = self.observer {
            engine = engine.with_observer(o);
        }
        Ok(Inner::handle(
            engine,
            clock,
            self.leases,
            self.settings,
            pull,
            Arc::default(),
        ))
    }
}

/// The engine's publisher in pull mode. The handle never publishes in pull mode (its
/// loops claim nothing and its calls wake pollers instead); only a direct call on
/// [`Lucius::engine`]'s publication methods would reach this, and it is refused as
/// transient so the entry stays `PENDING` for a while rather than being marked sent.
struct NoBus;

#[async_trait::async_trait]
impl Publisher for NoBus {
    async fn publish(&self, _directive: &Directive) -> Result<(), PublishError> {
        Err(PublishError::Transient(
            "no bus: workers pull directives (Lucius::poll, POST /v1/workers/poll)".into(),
        ))
    }
}

struct Inner {
    engine: Engine,
    clock: Arc<dyn Clock>,
    leases: Option<Arc<dyn LeaseStore>>,
    background: Background,
    settings: Settings,
    pull: Option<Arc<Pull>>,
    board: Arc<Board>,
}

impl Inner {
    /// A handle with its own background publishers (sized by `settings`).
    fn handle(
        engine: Engine,
        clock: Arc<dyn Clock>,
        leases: Option<Arc<dyn LeaseStore>>,
        settings: Settings,
        pull: Option<Arc<Pull>>,
        board: Arc<Board>,
    ) -> Lucius {
        let background = Background::new(settings.publishers, settings.queue_per_publisher);
        Lucius {
            inner: Arc::new(Inner {
                engine,
                clock,
                leases,
                background,
                settings,
                pull,
                board,
            }),
        }
    }
}

/// The engine, running: every call publishes what it implies (in the background, after
/// the answer), and [`Lucius::run`] drives the loops. Cheap to clone; share one per process.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use lucius_runtime::{Lucius, Shutdown};
/// use lucius_core::memory::MemoryStore;
///
/// let lucius = Lucius::builder().store(MemoryStore::new()).build()?;
/// let shutdown = Shutdown::new();
/// let loops = tokio::spawn({
///     let (lucius, stop) = (lucius.clone(), shutdown.clone());
///     async move { lucius.run(stop.wait()).await }
/// });
/// let cmd = br#"{"requestType":"document.process","tenantId":"acme","idempotencyKey":"k1",
///               "payload":{"documentUrl":"https://example.com/a.pdf"}}"#;
/// let submitted = lucius.submit_bytes(cmd, None).await?;
/// println!("accepted job {}", submitted.job_id);
/// shutdown.trigger();
/// loops.await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lucius {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Lucius {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lucius")
            .field("settings", &self.inner.settings)
            .field("pull", &self.inner.pull.is_some())
            .finish_non_exhaustive()
    }
}

impl Lucius {
    /// A builder; only the store is required.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A handle over an engine built by hand (its store, publisher, clock, protocols and
    /// settings), running `settings`' loops. It publishes through the engine's publisher (no
    /// pull mode) and has no lease store,
    /// so `settings` cannot ask for [`Dispatch::Owned`]: use the [`Builder`] for those.
    pub fn from_engine(engine: Engine, settings: Settings) -> Result<Lucius, BuildError> {
        if matches!(settings.dispatch, Dispatch::Owned(_)) {
            return Err(BuildError::NoLeaseStore);
        }
        let clock = engine.clock().clone();
        Ok(Inner::handle(
            engine,
            clock,
            None,
            settings,
            None,
            Arc::default(),
        ))
    }

    /// This handle with `observer` told of every transition and publication (replacing the
    /// builder's). It shares the store, publisher, pollers and watchdog, and has its
    /// own background publishers: use it, and its clones, from then on.
    #[must_use]
    pub fn with_observer(&self, observer: Arc<dyn Observer>) -> Lucius {
        let i = &self.inner;
        Inner::handle(
            i.engine.clone().with_observer(observer),
            i.clock.clone(),
            i.leases.clone(),
            i.settings.clone(),
            i.pull.clone(),
            i.board.clone(),
        )
    }

    /// The sans-IO engine underneath (reads, admin listings, one-shot dispatch and sweep).
    /// Its write calls do not publish: prefer the handle's.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The clock every loop waits on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The runtime settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The lease store, if one was given.
    pub fn leases(&self) -> Option<&Arc<dyn LeaseStore>> {
        self.inner.leases.as_ref()
    }

    /// The in-process directive source, in pull mode (no publisher given): hand it to a
    /// [`crate::Worker`]. It polls like a worker over HTTP does, so it takes its directives
    /// from the store's outbox, and several sources (in this process or others) share the
    /// work without ever holding the same directive.
    pub fn in_process(&self) -> Option<InProcess> {
        self.inner
            .pull
            .as_ref()
            .map(|_| InProcess::new(self.clone()))
    }

    /// Ends pull mode's waits for good: polls waiting for work return at once with what
    /// they have (nothing), and later polls do not wait. [`Lucius::run`] calls it at
    /// shutdown; a server calls it when it stops taking requests so long polls do not hold
    /// its drain. Does nothing on a handle with a publisher.
    pub fn end_polls(&self) {
        if let Some(pull) = &self.inner.pull {
            pull.close();
        }
    }

    /// Whether pull mode was closed by shutdown ([`Lucius::run`] returning).
    pub(crate) fn pull_closed(&self) -> bool {
        self.inner.pull.as_ref().is_some_and(|p| p.is_closed())
    }

    /// Whether workers pull directives from this handle (it was built without a publisher).
    pub fn pulls(&self) -> bool {
        self.inner.pull.is_some()
    }

    /// Pull mode: claims up to `max` due directives that `filter` accepts, waiting up to
    /// `wait` (on the handle's clock) for some to come due; returns as soon as it has any,
    /// and with none when `wait` runs out or the node shuts down. Every directive returned
    /// is recorded as published: its ACK deadline runs from now, and one never
    /// acknowledged is retried (as a new attempt) once it passes. Waiting pollers are woken
    /// by every call that writes a directive, and look again every
    /// [`Settings::pull_recheck`] for directives that came due by time or were written by
    /// another process.
    pub async fn poll(
        &self,
        filter: &PullFilter,
        max: usize,
        wait: Millis,
    ) -> Result<Vec<Directive>, PollError> {
        let pull = self.inner.pull.as_ref().ok_or(PollError::Bus)?;
        let clock = &self.inner.clock;
        let deadline = clock.sleep(wait);
        tokio::pin!(deadline);
        loop {
            let woken = pull.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if pull.is_closed() {
                return Ok(Vec::new());
            }
            let got = self.inner.engine.claim_due(filter, max).await?;
            if !got.is_empty() || wait.0 == 0 {
                return Ok(got);
            }
            tokio::select! {
                biased;
                _ = &mut deadline => return Ok(Vec::new()),
                _ = &mut woken => {}
                _ = clock.sleep(self.inner.settings.pull_recheck) => {}
            }
        }
    }

    /// Directives queued for background publication or being published.
    pub fn publishing(&self) -> usize {
        self.inner.background.pending()
    }

    /// Directives the background publishers had no room for since start: they stayed
    /// `PENDING` for the loops.
    pub fn publish_overflow(&self) -> usize {
        self.inner.background.overflowed()
    }

    /// The latest watchdog figures (Prometheus text) of the lease-owned dispatcher.
    pub fn watchdog(&self) -> String {
        self.inner.board.render()
    }

    pub(crate) fn board(&self) -> Arc<Board> {
        self.inner.board.clone()
    }

    /// Hands `ids` to the background publishers. What they have no room for stays
    /// `PENDING` in the store for the loops. In pull mode, wakes waiting pollers instead.
    /// Must run inside a tokio runtime.
    pub fn publish_in_background(&self, ids: Vec<OutboxId>) {
        if ids.is_empty() {
            return;
        }
        match &self.inner.pull {
            Some(pull) => pull.wake(),
            None => self.inner.background.publish(&self.inner.engine, ids),
        }
    }

    /// Publishes `ids` now, in order; returns how many were sent. In pull mode, wakes
    /// waiting pollers and returns 0: the directives are handed out when workers ask.
    pub(crate) async fn publish_now(&self, ids: &[OutboxId]) -> usize {
        if ids.is_empty() {
            return 0;
        }
        match &self.inner.pull {
            Some(pull) => {
                pull.wake();
                0
            }
            None => self.inner.engine.publish_all(ids).await,
        }
    }

    /// Validates and accepts a command (JSON bytes; `header_key` is the
    /// `Idempotency-Key` header, if any), then publishes its first directive.
    pub async fn submit_bytes(
        &self,
        body: &[u8],
        header_key: Option<&str>,
    ) -> Result<Submission, EngineError> {
        let out = self.inner.engine.submit_bytes(body, header_key).await?;
        self.publish_in_background(out.to_publish);
        Ok(out.value)
    }

    /// Accepts a validated command, then publishes its first directive.
    pub async fn submit(&self, cmd: ValidatedCommand) -> Result<Submission, EngineError> {
        let out = self.inner.engine.submit(cmd).await?;
        self.publish_in_background(out.to_publish);
        Ok(out.value)
    }

    /// A job with its steps and directives.
    pub async fn job(&self, id: &JobId) -> Result<JobRecord, EngineError> {
        self.inner.engine.job(id).await
    }

    /// A worker acknowledges a step: it is `RUNNING` under the worker's lease.
    pub async fn ack(&self, call: WorkerCall<'_>) -> Result<Step, EngineError> {
        self.inner.engine.ack(call).await
    }

    /// The lease holder extends its lease.
    pub async fn heartbeat(&self, call: WorkerCall<'_>) -> Result<Step, EngineError> {
        self.inner.engine.heartbeat(call).await
    }

    /// The worker finished the step; the next step's directive is published.
    pub async fn complete(
        &self,
        call: WorkerCall<'_>,
        result: impl Into<lucius_core::Json> + Send,
    ) -> Result<Step, EngineError> {
        let out = self.inner.engine.complete(call, result).await?;
        self.publish_in_background(out.to_publish);
        Ok(out.value)
    }

    /// The worker failed the step; a retry's directive is published.
    pub async fn fail(&self, call: WorkerCall<'_>, failure: Failure) -> Result<Step, EngineError> {
        let out = self.inner.engine.fail(call, failure).await?;
        self.publish_in_background(out.to_publish);
        Ok(out.value)
    }

    /// Cancels a job that has not finished.
    pub async fn cancel(&self, id: &JobId, reason: &str) -> Result<JobRecord, EngineError> {
        self.inner.engine.cancel(id, reason).await
    }

    /// Admin: puts one `DEAD` (or `PENDING`) entry back to `PENDING`, due now, and
    /// publishes it.
    pub async fn retry_outbox(&self, id: &OutboxId) -> Result<OutboxEntry, EngineError> {
        let out = self.inner.engine.retry_outbox(id).await?;
        self.publish_in_background(out.to_publish);
        Ok(out.value)
    }

    /// Admin: [`Lucius::retry_outbox`] for every entry `query` matches; returns how many.
    pub async fn retry_outbox_matching(&self, query: &OutboxQuery) -> Result<usize, EngineError> {
        let out = self.inner.engine.retry_outbox_matching(query).await?;
        self.publish_in_background(out.to_publish);
        Ok(out.value)
    }

    /// Sweeps one job now and publishes what the sweep wrote before returning (for one-shot
    /// commands, which must not exit with publications queued); returns the report and the
    /// number of directives published (0 in pull mode: workers take them when they poll).
    pub async fn sweep_job(&self, id: &JobId) -> Result<(SweepReport, usize), EngineError> {
        let out = self.inner.engine.sweep_job(id).await?;
        let published = self.publish_now(&out.to_publish).await;
        Ok((out.value, published))
    }

    /// Runs the loops the settings name (outbox retry, dispatch, sweep, purge) until `shutdown`
    /// completes; then lets each finish its round in flight, releases partition leases and
    /// waits for queued publications, each for up to the shutdown grace.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) {
        let stop = Shutdown::new();
        let s = &self.inner.settings;
        let mut loops = tokio::task::JoinSet::new();
        // In pull mode nothing is published: pollers claim directives, so the outbox retry
        // and the dispatch of every partition have nothing to do (lease-owned dispatchers
        // still own and sweep their partitions).
        let pulls = self.pulls();
        if let (Some(interval), false) = (s.outbox_retry, pulls) {
            loops.spawn(crate::loops::outbox_retry(
                self.clone(),
                interval,
                stop.clone(),
            ));
        }
        match &s.dispatch {
            Dispatch::Off => {}
            Dispatch::All { .. } if pulls => {}
            Dispatch::All { interval } => {
                loops.spawn(crate::loops::dispatch_all(
                    self.clone(),
                    *interval,
                    stop.clone(),
                ));
            }
            Dispatch::Owned(owned) => {
                if let Some(leases) = self.inner.leases.clone() {
                    loops.spawn(crate::ownership::run(
                        self.clone(),
                        leases,
                        owned.clone(),
                        stop.clone(),
                    ));
                }
            }
        }
        // A lease-owned dispatcher sweeps the partitions it owns.
        if !matches!(s.dispatch, Dispatch::Owned(_)) {
            if let Some(interval) = s.sweep {
                loops.spawn(crate::loops::sweep_all(
                    self.clone(),
                    interval,
                    stop.clone(),
                ));
            }
        }
        if let (Some(interval), Some(_)) = (s.purge, self.engine().config().retention) {
            loops.spawn(crate::loops::purge(self.clone(), interval, stop.clone()));
        }
        shutdown.await;
        self.end_polls();
        stop.trigger();
        let grace = s.shutdown_grace.to_std();
        let finished =
            tokio::time::timeout(grace, async { while loops.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!("a loop did not finish its round within the shutdown grace");
            loops.abort_all();
        }
        // Queued publications are bounded by the publish timeout each; what does not land
        // stays PENDING for the next process's loops.
        let deadline = tokio::time::Instant::now() + grace;
        while self.publishing() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
