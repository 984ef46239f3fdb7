//! The actors: each is one process's loop of operations, written against the engine, with
//! its own RNG. Every port call may hand control to another actor; the executor may drop
//! an actor at any of them (a crash) and start a fresh process later.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use lucius::engine::{EngineError, WorkerCall};
use lucius::ownership::{OwnershipConfig, PartitionOwner};
use lucius::testkit::command;
use lucius::{
    Directive, Engine, Failure, JobId, LeaseStore, Millis, StepStatus, Store, ValidatedCommand,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::bus::SimBus;
use crate::store::SimStore;
use crate::world::{lock, sleep, ActiveFence, ActorClock, Kind, Shared, SweepAllCall, World};

pub(crate) type ActorFuture = Pin<Box<dyn Future<Output = ()>>>;

/// One process: its engine over the shared store and bus, its clock, its RNG.
pub(crate) struct Proc {
    pub(crate) sim: Shared,
    pub(crate) me: usize,
    pub(crate) name: String,
    pub(crate) store: Arc<SimStore>,
    pub(crate) engine: Engine,
    pub(crate) clock: Arc<ActorClock>,
    pub(crate) rng: SmallRng,
    pub(crate) ownership: OwnershipConfig,
}

impl Proc {
    /// A new process in actor slot `me`, with `engine` (built by [`engine`]).
    pub(crate) fn new(
        sim: &Shared,
        me: usize,
        store: &Arc<SimStore>,
        engine: &Engine,
        ownership: OwnershipConfig,
    ) -> Proc {
        let (name, seed) = {
            let w = lock(sim);
            let a = &w.actors[me];
            (
                a.name.clone(),
                w.seed ^ a.process.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            )
        };
        Proc {
            sim: sim.clone(),
            me,
            name,
            store: store.clone(),
            engine: engine.clone(),
            clock: Arc::new(ActorClock { sim: sim.clone() }),
            rng: SmallRng::seed_from_u64(seed),
            ownership,
        }
    }

    fn note(&self, what: impl std::fmt::Display) {
        lock(&self.sim).note(what);
    }

    fn chaos(&self) -> bool {
        lock(&self.sim).chaos
    }

    async fn pause(&mut self, max_ms: u64) {
        let ms = self.rng.random_range(0..=max_ms);
        sleep(&self.sim, Millis(ms)).await;
    }

    /// Hands directives to the process's background publisher (or drops them: the process
    /// died before publishing).
    fn publish_later(&mut self, ids: Vec<lucius::OutboxId>) {
        if ids.is_empty() {
            return;
        }
        if self.chaos() && self.rng.random_ratio(1, 10) {
            self.note(format!(
                "drops {} directive(s) before publishing",
                ids.len()
            ));
            return;
        }
        lock(&self.sim).bg_queue.extend(ids);
    }
}

/// The engine of a run over its store, bus and clock (cheap to clone into each process).
pub(crate) fn engine(sim: &Shared, store: &Arc<SimStore>) -> Engine {
    // A small batch, so dispatch and sweep rounds page through their partitions.
    let config = lucius::EngineConfig {
        batch_size: 4,
        ..lucius::EngineConfig::default()
    };
    Engine::new(
        store.clone() as Arc<dyn Store>,
        Arc::new(SimBus { sim: sim.clone() }),
        Arc::new(ActorClock { sim: sim.clone() }),
    )
    .with_config(config)
}

thread_local! {
    static COMMANDS: std::cell::RefCell<std::collections::BTreeMap<(usize, u32, u32), ValidatedCommand>> =
        Default::default();
}

/// The fixture command, validated once per thread (validation compiles schemas).
pub(crate) fn cached_command(tenant: usize, key: u32, variant: u32) -> ValidatedCommand {
    COMMANDS.with(|c| {
        c.borrow_mut()
            .entry((tenant, key, variant))
            .or_insert_with(|| command(TENANTS[tenant], &format!("key-{key}"), variant))
            .clone()
    })
}

/// Starts an actor of `kind` as process `p`.
pub(crate) fn start(kind: Kind, p: Proc) -> ActorFuture {
    match kind {
        Kind::Client => Box::pin(client(p)),
        Kind::BgPublisher => Box::pin(bg_publisher(p)),
        Kind::RetryLoop => Box::pin(retry_loop(p)),
        Kind::Dispatcher => Box::pin(dispatcher(p)),
        Kind::Sweeper => Box::pin(sweeper(p)),
        Kind::Worker => Box::pin(worker(p)),
    }
}

pub(crate) const TENANTS: [&str; 2] = ["acme", "globex"];

/// Submits commands: fresh keys, replays of keys in use (identical requests racing each
/// other), and now and then the same key with another body (must be `409`).
async fn client(mut p: Proc) {
    loop {
        if !p.chaos() {
            return;
        }
        let t = p.rng.random_range(0..2);
        let tenant = TENANTS[t];
        let key_n = p.rng.random_range(0..12u32);
        let key = format!("key-{key_n}");
        let variant = u32::from(p.rng.random_ratio(1, 8));
        p.note(format!("submit {tenant}/{key} variant {variant}"));
        match p.engine.submit(cached_command(t, key_n, variant)).await {
            Ok(o) => {
                record_accept(&p.sim, tenant, &key, variant, &o.value.job_id);
                if p.rng.random_ratio(1, 4) {
                    p.engine.publish_all(&o.to_publish).await;
                } else {
                    p.publish_later(o.to_publish);
                }
            }
            Err(EngineError::IdempotencyConflict { .. }) => {
                let mut w = lock(&p.sim);
                w.note(format!("409 {tenant}/{key} variant {variant}"));
                w.intake.refused.push((tenant.to_owned(), key, variant));
            }
            Err(e) => p.note(format!("submit failed: {e}")),
        }
        p.pause(3_000).await;
    }
}

/// Records a `202`: one key, one job, one request.
fn record_accept(sim: &Shared, tenant: &str, key: &str, variant: u32, job_id: &JobId) {
    let mut w = lock(sim);
    let k = (tenant.to_owned(), key.to_owned());
    match w.intake.accepted.get(&k).cloned() {
        Some((job, v)) => {
            if job != *job_id {
                w.violation(format!(
                    "{tenant}/{key}: 202 for job {job}, then for {job_id}"
                ));
            }
            if v != variant {
                w.violation(format!(
                    "{tenant}/{key}: variant {v} got a 202, then variant {variant} got one too"
                ));
            }
        }
        None => {
            w.intake.accepted.insert(k, (job_id.clone(), variant));
        }
    }
    w.note(format!("202 {tenant}/{key} -> {job_id}"));
}

/// The orchestrator's background publisher: publishes what intake and workers queued,
/// in any order, possibly late; a crash loses its queue.
async fn bg_publisher(mut p: Proc) {
    loop {
        let next = {
            let mut w = lock(&p.sim);
            if w.bg_queue.is_empty() {
                None
            } else {
                let i = p.rng.random_range(0..w.bg_queue.len());
                Some(w.bg_queue.swap_remove(i))
            }
        };
        match next {
            Some(id) => {
                let r = p.engine.publish(&id).await;
                p.note(format!("background publish {id}: {r:?}"));
            }
            None => p.pause(1_000).await,
        }
        if p.chaos() {
            p.pause(300).await;
        }
    }
}

/// The orchestrator's outbox retry loop (unfenced, every partition).
async fn retry_loop(p: Proc) {
    loop {
        sleep(&p.sim, Millis(5_000)).await;
        let r = p.engine.retry_pending().await;
        p.note(format!("retry_pending: {r:?}"));
    }
}

/// A lease-owning dispatcher, as `lucius-bin`'s ownership loop runs it: rebalance, then
/// dispatch (fenced) and sweep each partition held.
async fn dispatcher(mut p: Proc) {
    let leases: Arc<dyn LeaseStore> = p.store.clone();
    let mut owner =
        PartitionOwner::new(p.name.clone(), leases.clone(), p.clock.clone(), p.ownership);
    let interval = Millis(p.ownership.lease_duration.0 / 3);
    loop {
        let list = p.engine.store().partitions().await.unwrap_or_default();
        match owner.rebalance(&list).await {
            Ok(r) => {
                p.note(format!(
                    "rebalance: holds {:?}",
                    r.held
                        .iter()
                        .map(|f| format!("{}@{}", f.partition, f.epoch))
                        .collect::<Vec<_>>()
                ));
                for fence in &r.held {
                    register_fence(&p, Some(fence));
                    let d = p.engine.dispatch_fenced(fence, leases.as_ref()).await;
                    register_fence(&p, None);
                    p.note(format!(
                        "dispatch {}@{}: {d:?}",
                        fence.partition, fence.epoch
                    ));
                    if let Ok(o) = p.engine.sweep_partition(&fence.partition).await {
                        p.engine.publish_all(&o.to_publish).await;
                    }
                }
            }
            Err(e) => p.note(format!("rebalance failed: {e}")),
        }
        let jitter = p.rng.random_range(0..500);
        sleep(&p.sim, Millis(interval.0 + jitter)).await;
    }
}

/// Registers the fence the dispatcher publishes under; a process may only use an epoch no
/// other process (a previous incarnation with the same id included) dispatched under.
fn register_fence(p: &Proc, fence: Option<&lucius::Fence>) {
    let mut w = lock(&p.sim);
    let process = w.actors[p.me].process;
    if let Some(f) = fence {
        let key = (f.partition.clone(), f.epoch);
        match w.epochs.get(&key).cloned() {
            Some((other, name)) if other != process => w.violation(format!(
                "dispatcher process {}#{process} dispatches {} under epoch {}, which process \
                 {name}#{other} already used (a restart or twin kept the epoch)",
                f.owner, f.partition, f.epoch
            )),
            Some(_) => {}
            None => {
                w.epochs.insert(key, (process, f.owner.clone()));
            }
        }
    }
    w.actors[p.me].fence = fence.map(|f| ActiveFence {
        partition: f.partition.clone(),
        owner: f.owner.clone(),
        epoch: f.epoch,
    });
}

/// A sweeper process: sweeps every partition or one, and publishes what it returns.
async fn sweeper(mut p: Proc) {
    loop {
        let wait = p.rng.random_range(3_000..15_000);
        sleep(&p.sim, Millis(wait)).await;
        let o = if p.rng.random_bool(0.5) {
            lock(&p.sim).actors[p.me].sweep_all = Some(SweepAllCall::default());
            let o = p.engine.sweep_all().await;
            let mut w = lock(&p.sim);
            if let Some(call) = w.actors[p.me].sweep_all.take() {
                check_sweep_all(&mut w, &call);
            }
            o
        } else {
            let parts = p.engine.store().partitions().await.unwrap_or_default();
            if parts.is_empty() {
                continue;
            }
            let i = p.rng.random_range(0..parts.len());
            p.engine.sweep_partition(&parts[i]).await
        };
        match o {
            Ok(o) => {
                p.note(format!("sweep: {:?}", o.value));
                p.engine.publish_all(&o.to_publish).await;
            }
            Err(e) => p.note(format!("sweep failed: {e}")),
        }
    }
}

/// One failing partition must not stop `sweep_all`: every partition it listed is visited.
fn check_sweep_all(w: &mut World, call: &SweepAllCall) {
    let Some(listed) = &call.listed else { return };
    let skipped: Vec<String> = listed
        .iter()
        .filter(|p| !call.visited.contains(*p))
        .map(ToString::to_string)
        .collect();
    if !call.failed.is_empty() && !skipped.is_empty() {
        w.violation(format!(
            "sweep_all stopped after partition(s) {:?} failed: {skipped:?} never swept",
            call.failed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ));
    }
}

/// A worker: takes directives from the bus (sometimes leaving a copy for another worker),
/// then acks, heartbeats, completes or fails them — or vanishes, calls late, or calls
/// without its id. At quiescence it acks and completes everything it gets.
async fn worker(mut p: Proc) {
    loop {
        let got = {
            let mut w = lock(&p.sim);
            if w.bus.queue.is_empty() {
                None
            } else {
                let i = p.rng.random_range(0..w.bus.queue.len());
                let d = if w.chaos && p.rng.random_ratio(1, 8) {
                    w.bus.queue[i].clone()
                } else {
                    w.bus.queue.swap_remove(i)
                };
                Some(d)
            }
        };
        let Some(d) = got else {
            p.pause(2_000).await;
            continue;
        };
        p.note(format!("receives {}", d.directive_id));
        if p.chaos() {
            work_chaotically(&mut p, &d).await;
        } else {
            finish(&mut p, &d).await;
        }
        set_worker_call(&p, None);
    }
}

fn set_worker_call(p: &Proc, who: Option<Option<String>>) {
    lock(&p.sim).actors[p.me].worker_call = who;
}

async fn finish(p: &mut Proc, d: &Directive) {
    let Ok(job) = JobId::parse(&d.job_id) else {
        return;
    };
    let me = p.name.clone();
    set_worker_call(p, Some(Some(me.clone())));
    let call = WorkerCall {
        job_id: &job,
        step_id: &d.step_id,
        attempt: d.attempt,
        worker_id: Some(&me),
    };
    let ack = p.engine.ack(call.clone()).await;
    p.note(format!("ack {}: {}", d.directive_id, brief(&ack)));
    if ack.is_ok() {
        complete(p, d, &job, Some(&me)).await;
    }
}

async fn complete(p: &mut Proc, d: &Directive, job: &JobId, worker: Option<&str>) {
    let n: u32 = p.rng.random();
    let result = serde_json::json!({"by": worker, "n": n});
    let call = WorkerCall {
        job_id: job,
        step_id: &d.step_id,
        attempt: d.attempt,
        worker_id: worker,
    };
    let r = p.engine.complete(call, result.clone()).await;
    p.note(format!(
        "complete {} by {worker:?}: {}",
        d.directive_id,
        brief(&r.as_ref().map(|o| &o.value))
    ));
    if let Ok(o) = r {
        let s = &o.value;
        if s.status == StepStatus::Succeeded
            && s.attempt == d.attempt
            && s.result.as_ref().map(|j| j.to_value()) != Some(result.clone())
        {
            lock(&p.sim).violation(format!(
                "complete of {} by {worker:?} with {result} answered OK, but the step holds {:?}",
                d.directive_id,
                s.result.as_ref().map(|j| j.to_value())
            ));
        }
        p.publish_later(o.to_publish);
    }
}

fn brief<T, E: std::fmt::Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("refused: {e}"),
    }
}

async fn work_chaotically(p: &mut Proc, d: &Directive) {
    let Ok(job) = JobId::parse(&d.job_id) else {
        return;
    };
    let me = p.name.clone();
    let who: Option<String> = if p.rng.random_ratio(1, 8) {
        None
    } else {
        Some(me)
    };
    set_worker_call(p, Some(who.clone()));
    let worker = who.as_deref();
    let call = WorkerCall {
        job_id: &job,
        step_id: &d.step_id,
        attempt: d.attempt,
        worker_id: worker,
    };
    let lease = Millis(d.lease_duration_ms);
    match p.rng.random_range(0..100) {
        0..8 => {
            p.note(format!("vanishes with {}", d.directive_id));
            return;
        }
        8..14 => {
            let retryable = p.rng.random_bool(0.7);
            let r = p
                .engine
                .fail(
                    call,
                    Failure {
                        error: "worker error before ack".into(),
                        retryable,
                    },
                )
                .await;
            p.note(format!("fail {} before ack: {}", d.directive_id, brief(&r)));
            if let Ok(o) = r {
                p.publish_later(o.to_publish);
            }
            return;
        }
        _ => {}
    }
    let ack = p.engine.ack(call.clone()).await;
    p.note(format!(
        "ack {} by {worker:?}: {}",
        d.directive_id,
        brief(&ack)
    ));
    if ack.is_err() && p.rng.random_bool(0.7) {
        return;
    }
    // Work: a few heartbeats, sometimes too late.
    for _ in 0..p.rng.random_range(0..3) {
        let wait = p.rng.random_range(0..lease.0 / 3);
        sleep(&p.sim, Millis(wait)).await;
        let r = p.engine.heartbeat(call.clone()).await;
        p.note(format!("heartbeat {}: {}", d.directive_id, brief(&r)));
    }
    match p.rng.random_range(0..100) {
        0..10 => {
            p.note(format!("vanishes holding {}", d.directive_id));
        }
        10..20 => {
            // Late: the lease has run out by the time the worker answers.
            let wait = lease.0 + p.rng.random_range(0..60_000);
            sleep(&p.sim, Millis(wait)).await;
            complete(p, d, &job, worker).await;
        }
        20..35 => {
            let retryable = p.rng.random_bool(0.8);
            let r = p
                .engine
                .fail(
                    call,
                    Failure {
                        error: "worker error".into(),
                        retryable,
                    },
                )
                .await;
            p.note(format!(
                "fail {} (retryable {retryable}): {}",
                d.directive_id,
                brief(&r)
            ));
            if let Ok(o) = r {
                p.publish_later(o.to_publish);
            }
        }
        _ => {
            p.pause(3_000).await;
            complete(p, d, &job, worker).await;
        }
    }
}

/// A dispatcher's clock skew within ±`skew_margin / 2`.
pub(crate) fn skew_for(rng: &mut SmallRng, ownership: &OwnershipConfig) -> i64 {
    let half = (ownership.skew_margin.0 / 2) as i64;
    rng.random_range(-half..=half)
}
