//! A seeded, deterministic simulation of the whole engine on the memory store with a
//! manual clock: clients submit (with replays and conflicting reuse of keys), a broker
//! that fails, times out and duplicates, workers that ack, heartbeat, complete, fail and
//! vanish, a dispatcher, the retry loop, sweepers, cancellations, torn store writes,
//! engine restarts and clock jumps — and no admin action: every job must end on its own. The invariants of design §3 are checked after every step and
//! at the end.
//!
//! `SIM_SEEDS` (default 1000) seeds run; `SIM_SEED=n` replays one.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use lucius::engine::WorkerCall;
use lucius::memory::{Fault, ManualClock, MemoryStore};
use lucius::testkit::command;
use lucius::{
    Directive, Engine, EngineError, Failure, JobId, JobRecord, JobStatus, Millis, OutboxId,
    OutboxStatus, PublishError, Publisher, StepStatus, Store, StoreErrorKind, Timestamp,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const T0: Timestamp = Timestamp(1_709_596_800_000);
const STEPS_PER_SEED: usize = 300;

/// Runs a future that never waits on IO: every port here answers at once, and timeouts
/// race against the manual clock, whose sleeps complete immediately.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a simulated operation blocked"),
    }
}

#[derive(Default)]
struct BusState {
    queue: Vec<Directive>,
    delivered: HashSet<String>,
    deliveries: usize,
}

/// A broker that, while `chaos` is on, fails, times out (sometimes after accepting the
/// message) and duplicates.
struct SimBus {
    rng: Mutex<SmallRng>,
    state: Arc<Mutex<BusState>>,
    chaos: Arc<std::sync::atomic::AtomicBool>,
}

enum Fate {
    Deliver(usize),
    Transient,
    Permanent,
    Hang { delivered: bool },
}

#[async_trait]
impl Publisher for SimBus {
    async fn publish(&self, d: &Directive) -> Result<(), PublishError> {
        let fate = if self.chaos.load(std::sync::atomic::Ordering::Relaxed) {
            match self.rng.lock().unwrap().random_range(0..100) {
                0..70 => Fate::Deliver(1),
                70..80 => Fate::Transient,
                80..83 => Fate::Permanent,
                83..90 => Fate::Hang { delivered: false },
                90..95 => Fate::Hang { delivered: true },
                _ => Fate::Deliver(2),
            }
        } else {
            Fate::Deliver(1)
        };
        let deliver = |n: usize| {
            let mut s = self.state.lock().unwrap();
            for _ in 0..n {
                s.queue.push(d.clone());
            }
            s.deliveries += n;
            s.delivered.insert(d.directive_id.to_string());
        };
        match fate {
            Fate::Deliver(n) => {
                deliver(n);
                Ok(())
            }
            Fate::Transient => Err(PublishError::Transient("503 server busy".into())),
            Fate::Permanent => Err(PublishError::Permanent("401 unauthorized".into())),
            Fate::Hang { delivered } => {
                if delivered {
                    deliver(1);
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    }
}

struct Held {
    d: Directive,
    acked: bool,
}

struct Sim {
    seed: u64,
    rng: SmallRng,
    clock: ManualClock,
    store: MemoryStore,
    bus: Arc<Mutex<BusState>>,
    chaos: Arc<std::sync::atomic::AtomicBool>,
    engine: Engine,
    /// (tenant, key) → (job, variant) of every 202'd command.
    accepted: BTreeMap<(String, String), (JobId, u32)>,
    /// Last snapshot of every accepted job.
    seen: BTreeMap<JobId, JobRecord>,
    held: Vec<Held>,
    keys: u32,
    log: Vec<String>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::new();
        let bus = Arc::new(Mutex::new(BusState::default()));
        let chaos = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut sim = Sim {
            seed,
            rng: SmallRng::seed_from_u64(seed),
            engine: Engine::new(
                Arc::new(store.clone()),
                Arc::new(lucius::memory::MemoryPublisher::noop()),
                Arc::new(clock.clone()),
            ),
            clock,
            store,
            bus,
            chaos,
            accepted: BTreeMap::new(),
            seen: BTreeMap::new(),
            held: Vec::new(),
            keys: 0,
            log: Vec::new(),
        };
        sim.restart();
        sim
    }

    /// Drops the engine and builds a new one over the same store and broker (a crash and
    /// restart of the process: the engine holds no state of its own).
    fn restart(&mut self) {
        let publisher = SimBus {
            rng: Mutex::new(SmallRng::seed_from_u64(self.rng.random())),
            state: self.bus.clone(),
            chaos: self.chaos.clone(),
        };
        self.engine = Engine::new(
            Arc::new(self.store.clone()),
            Arc::new(publisher),
            Arc::new(self.clock.clone()),
        );
    }

    fn fail(&self, msg: String) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(15).collect();
        panic!(
            "simulation seed {} violated an invariant: {msg}\nlast operations (newest first): {tail:#?}\nreplay: SIM_SEED={} cargo test --test simulation -- --nocapture",
            self.seed, self.seed
        );
    }

    fn publish(&mut self, ids: Vec<OutboxId>) {
        // A crash between the commit and the publication leaves the work to the dispatcher.
        if self.rng.random_ratio(1, 5) {
            self.log.push(format!(
                "crash before publishing {} directive(s)",
                ids.len()
            ));
            return;
        }
        run(self.engine.publish_all(&ids));
    }

    fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..15 => self.submit(),
            15..33 => self.receive(),
            33..58 => self.work(),
            58..66 => {
                self.log.push("dispatch".into());
                for p in run(self.engine.store().partitions()).unwrap_or_default() {
                    let _ = run(self.engine.dispatch(&p));
                }
            }
            66..73 => {
                self.log.push("sweep".into());
                if let Ok(o) = run(self.engine.sweep_all()) {
                    self.publish(o.to_publish);
                }
            }
            73..75 => {
                self.log.push("retry loop".into());
                let _ = run(self.engine.retry_pending());
            }
            75..76 => {
                if let Some(job) = self.pick_job() {
                    self.log.push(format!("cancel {job}"));
                    let _ = run(self.engine.cancel(&job, "client cancelled"));
                }
            }
            76..90 => {
                let ms = self.rng.random_range(0..5_000);
                self.clock.advance(Millis(ms));
            }
            90..93 => {
                let s = self.rng.random_range(60..300);
                self.log.push(format!("clock jumps {s} s"));
                self.clock.advance(Millis::from_secs(s));
            }
            93..94 => {
                let back = self.rng.random_range(0..2_000);
                self.log.push(format!("clock steps back {back} ms"));
                self.clock.set(Timestamp(self.clock_now().0 - back));
            }
            94..96 => {
                self.log.push("engine restart".into());
                self.restart();
            }
            _ => {
                let fault = match self.rng.random_range(0..4) {
                    0 => Fault::Fail(StoreErrorKind::Transient),
                    1 => Fault::Fail(StoreErrorKind::Conflict),
                    _ => Fault::Tear(self.rng.random_range(0..4)),
                };
                self.log.push(format!("next store write: {fault:?}"));
                self.store.inject(fault);
            }
        }
    }

    fn clock_now(&self) -> Timestamp {
        use lucius::Clock;
        self.clock.now()
    }

    fn pick_job(&mut self) -> Option<JobId> {
        if self.accepted.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.accepted.len());
        self.accepted.values().nth(i).map(|(j, _)| j.clone())
    }

    fn submit(&mut self) {
        let tenant = if self.rng.random_bool(0.5) {
            "acme"
        } else {
            "globex"
        };
        let key_n = if self.keys > 0 && self.rng.random_ratio(1, 3) {
            self.rng.random_range(0..self.keys)
        } else {
            self.keys += 1;
            self.keys - 1
        };
        let key = format!("key-{key_n}");
        let variant = u32::from(self.rng.random_ratio(1, 10));
        self.log
            .push(format!("submit {tenant}/{key} variant {variant}"));
        match run(self.engine.submit(command(tenant, &key, variant))) {
            Ok(o) => {
                let k = (tenant.to_owned(), key.clone());
                match self.accepted.get(&k) {
                    Some((job, v)) => {
                        if *job != o.value.job_id {
                            self.fail(format!(
                                "{tenant}/{key}: job {} then {}",
                                job, o.value.job_id
                            ));
                        }
                        if *v != variant {
                            self.fail(format!("{tenant}/{key}: variant {v} accepted, then variant {variant} also got a 202"));
                        }
                    }
                    None => {
                        self.accepted.insert(k, (o.value.job_id.clone(), variant));
                    }
                }
                self.publish(o.to_publish);
            }
            Err(EngineError::IdempotencyConflict { .. }) => {
                if self
                    .accepted
                    .get(&(tenant.to_owned(), key.clone()))
                    .is_some_and(|(_, v)| *v == variant)
                {
                    self.fail(format!(
                        "{tenant}/{key}: the same request was refused as a conflict"
                    ));
                }
            }
            Err(_) => {}
        }
    }

    fn receive(&mut self) {
        let mut bus = self.bus.lock().unwrap();
        if bus.queue.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..bus.queue.len());
        let d = bus.queue.swap_remove(i);
        drop(bus);
        self.log.push(format!("worker receives {}", d.directive_id));
        self.held.push(Held { d, acked: false });
    }

    fn work(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.held.len());
        let roll = self.rng.random_range(0..100);
        let h = &self.held[i];
        let job = JobId::parse(&h.d.job_id).unwrap_or_else(|e| self.fail(e.to_string()));
        let step = h.d.step_id.clone();
        let attempt = h.d.attempt;
        let worker = format!("w-{}", h.d.directive_id);
        let call = WorkerCall {
            job_id: &job,
            step_id: &step,
            attempt,
            worker_id: Some(&worker),
        };
        let fail = |retryable| Failure {
            error: "worker error".into(),
            retryable,
        };
        let id = h.d.directive_id.clone();
        if !h.acked {
            match roll {
                0..80 => {
                    self.log.push(format!("ack {id}"));
                    if run(self.engine.ack(call)).is_ok() {
                        self.held[i].acked = true;
                    }
                }
                80..90 => {
                    self.log.push(format!("fail before ack {id}"));
                    self.held.swap_remove(i);
                    if let Ok(o) = run(self.engine.fail(call, fail(roll % 2 == 0))) {
                        self.publish(o.to_publish);
                    }
                }
                _ => {
                    self.log.push(format!("worker vanishes with {id}"));
                    self.held.swap_remove(i);
                }
            }
            return;
        }
        match roll {
            0..60 => {
                self.log.push(format!("complete {id}"));
                self.held.swap_remove(i);
                if let Ok(o) = run(self
                    .engine
                    .complete(call, serde_json::json!({"by": worker})))
                {
                    self.publish(o.to_publish);
                }
            }
            60..73 => {
                self.log.push(format!("fail {id}"));
                self.held.swap_remove(i);
                if let Ok(o) = run(self.engine.fail(call, fail(roll < 70))) {
                    self.publish(o.to_publish);
                }
            }
            73..85 => {
                self.log.push(format!("heartbeat {id}"));
                let _ = run(self.engine.heartbeat(call));
            }
            85..95 => {
                self.log
                    .push(format!("worker vanishes holding a lease on {id}"));
                self.held.swap_remove(i);
            }
            _ => {}
        }
    }

    /// Checks every accepted job against its previous snapshot and the structural
    /// invariants.
    fn check(&mut self) {
        let jobs: Vec<JobId> = self.accepted.values().map(|(j, _)| j.clone()).collect();
        for id in jobs {
            let rec = match run(self.store.load_job(&id)) {
                Ok(Some(r)) => r,
                other => self.fail(format!("accepted job {id} is lost: {other:?}")),
            };
            self.check_structure(&rec);
            if let Some(prev) = self.seen.get(&id) {
                self.check_progress(prev, &rec);
            }
            self.seen.insert(id, rec);
        }
    }

    fn check_structure(&self, rec: &JobRecord) {
        let id = &rec.job.id;
        let live: Vec<_> = rec
            .steps
            .iter()
            .filter(|s| !s.status.is_terminal() && s.status != StepStatus::Pending)
            .collect();
        if live.len() > 1 {
            self.fail(format!("job {id} has {} live steps", live.len()));
        }
        if let Some(l) = live.first() {
            if rec.steps[..l.index as usize]
                .iter()
                .any(|s| s.status != StepStatus::Succeeded)
            {
                self.fail(format!(
                    "job {id}: step {} is live before its predecessors succeeded",
                    l.step_id
                ));
            }
        }
        for s in &rec.steps {
            if s.attempt > s.max_attempts {
                self.fail(format!(
                    "job {id}: step {} at attempt {} of {}",
                    s.step_id, s.attempt, s.max_attempts
                ));
            }
        }
        if rec.job.status.is_terminal() && rec.steps.iter().any(|s| !s.status.is_terminal()) {
            self.fail(format!(
                "job {id} is {} with live steps",
                rec.job.status.as_str()
            ));
        }
        for e in &rec.outbox {
            if e.publish_attempts > self.engine.config().publish_retry.max_attempts {
                self.fail(format!(
                    "entry {} has {} publish attempts",
                    e.id, e.publish_attempts
                ));
            }
        }
    }

    fn check_progress(&self, prev: &JobRecord, now: &JobRecord) {
        let id = &now.job.id;
        let (a, b) = (prev.job.status, now.job.status);
        let job_ok = a == b
            || matches!(
                (a, b),
                (JobStatus::Accepted, _)
                    | (
                        JobStatus::InProgress,
                        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
                    )
            );
        if !job_ok {
            self.fail(format!("job {id} went {} -> {}", a.as_str(), b.as_str()));
        }
        if a.is_terminal() && prev.job != now.job {
            self.fail(format!("terminal job {id} changed"));
        }
        for (p, n) in prev.steps.iter().zip(&now.steps) {
            if n.attempt < p.attempt {
                self.fail(format!("job {id}: step {} attempt went back", n.step_id));
            }
            if p.status.is_terminal() && p != n {
                self.fail(format!("job {id}: terminal step {} changed", n.step_id));
            }
            if p.status != StepStatus::Pending && n.status == StepStatus::Pending {
                self.fail(format!("job {id}: step {} went back to PENDING", n.step_id));
            }
        }
        for e in &prev.outbox {
            match now.entry(&e.id) {
                None => self.fail(format!("outbox entry {} disappeared", e.id)),
                Some(n) if e.status == OutboxStatus::Sent && n.status != OutboxStatus::Sent => {
                    self.fail(format!("outbox entry {} left SENT", e.id))
                }
                Some(_) => {}
            }
        }
    }

    /// Ends the chaos and lets the system settle: every accepted job must end.
    fn quiesce(&mut self) {
        self.chaos
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.store.inject(Fault::Fail(StoreErrorKind::Transient));
        let _ = run(self.engine.ready()); // no-op write path; drain below
                                          // Clear any fault still queued by writing nothing through a fresh store handle.
        for round in 0..60 {
            if self
                .accepted
                .values()
                .all(|(j, _)| self.seen.get(j).is_some_and(|r| r.job.status.is_terminal()))
            {
                return;
            }
            self.log.push(format!("quiesce round {round}"));
            for p in run(self.engine.store().partitions()).unwrap_or_default() {
                let _ = run(self.engine.dispatch(&p));
                if let Ok(o) = run(self.engine.sweep_partition(&p)) {
                    run(self.engine.publish_all(&o.to_publish));
                }
            }
            let queue = std::mem::take(&mut self.bus.lock().unwrap().queue);
            for d in queue.into_iter().chain(self.held.drain(..).map(|h| h.d)) {
                let Ok(job) = JobId::parse(&d.job_id) else {
                    continue;
                };
                let call = WorkerCall {
                    job_id: &job,
                    step_id: &d.step_id,
                    attempt: d.attempt,
                    worker_id: Some("finisher"),
                };
                let _ = run(self.engine.ack(call.clone()));
                if let Ok(o) = run(self
                    .engine
                    .complete(call, serde_json::json!({"done": true})))
                {
                    run(self.engine.publish_all(&o.to_publish));
                }
            }
            self.clock.advance(Millis::from_secs(200));
            self.check();
        }
        let stuck: Vec<String> = self
            .seen
            .values()
            .filter(|r| !r.job.status.is_terminal())
            .map(|r| {
                format!(
                    "{} {} steps {:?}",
                    r.job.id,
                    r.job.status.as_str(),
                    r.steps
                        .iter()
                        .map(|s| (s.status, s.attempt))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        self.fail(format!("jobs never finished: {stuck:#?}"));
    }

    /// Every attempt a step went through was published at least once, but for attempts
    /// that ended because their directive could not be published (`DEAD` by publication
    /// failures, not superseded).
    fn check_delivery(&self) {
        let bus = self.bus.lock().unwrap();
        for rec in self.seen.values() {
            for s in &rec.steps {
                let last = match s.status {
                    StepStatus::Pending => 0,
                    StepStatus::Queued | StepStatus::Cancelled => s.attempt.saturating_sub(1),
                    _ => s.attempt,
                };
                for a in 1..=last {
                    let id = OutboxId::for_attempt(&rec.job.id, s.index, a);
                    let undeliverable = rec.entry(&id).is_some_and(|e| {
                        e.status == OutboxStatus::Dead
                            && !e
                                .last_error
                                .as_deref()
                                .is_some_and(|m| m.starts_with("superseded"))
                    });
                    if !undeliverable && !bus.delivered.contains(id.as_str()) {
                        self.fail(format!(
                            "directive {id} ({} attempt {a}) was never published",
                            s.step_id
                        ));
                    }
                }
            }
        }
    }
}

fn simulate(seed: u64) -> (Millis, usize, usize) {
    let mut sim = Sim::new(seed);
    for _ in 0..STEPS_PER_SEED {
        sim.step();
        sim.check();
    }
    sim.quiesce();
    sim.check_delivery();
    let elapsed = {
        use lucius::Clock;
        sim.clock.now().since(T0)
    };
    let deliveries = sim.bus.lock().unwrap().deliveries;
    (elapsed, sim.accepted.len(), deliveries)
}

#[test]
fn seeded_simulation_keeps_every_invariant() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            (0..n).collect()
        }
    };
    let started = std::time::Instant::now();
    let (mut simulated, mut jobs, mut deliveries) = (0u64, 0usize, 0usize);
    for &seed in &seeds {
        match catch_unwind(AssertUnwindSafe(|| simulate(seed))) {
            Ok((t, j, d)) => {
                simulated += t.0;
                jobs += j;
                deliveries += d;
            }
            Err(e) => {
                eprintln!(
                    "replay with: SIM_SEED={seed} cargo test --test simulation -- --nocapture"
                );
                std::panic::resume_unwind(e);
            }
        }
    }
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "simulation: {} seeds, {jobs} jobs, {deliveries} deliveries, {:.0} simulated s in {wall:.2} wall s ({:.0}x)",
        seeds.len(),
        simulated as f64 / 1000.0,
        simulated as f64 / 1000.0 / wall
    );
    assert!(jobs > seeds.len(), "the simulation accepted almost no jobs");
}
