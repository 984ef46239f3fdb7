//! The executor: a single-threaded, seeded scheduler that polls one runnable actor per
//! tick, advances virtual time, injects crashes, freezes and bus outages, runs the checks
//! after every tick, and finally lets the system settle (quiescence) and checks the end
//! state.

use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

use lucius::ownership::OwnershipConfig;
use lucius::{Millis, Timestamp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::actors::{engine, skew_for, start, ActorFuture, Proc};
use crate::store::{Model, SimStore};
use crate::world::{lock, ActorInfo, Kind, Shared, World};

/// 2024-03-31T23:57:00Z: jobs of a run fall into two months, so four partitions.
pub(crate) const T0: Timestamp = Timestamp(1_711_929_420_000);

/// How long a run's chaos lasts, and how long quiescence may take (ticks and time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) chaos_ticks: u64,
    pub(crate) settle_ticks: u64,
    pub(crate) settle_time: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Sleeping(Timestamp),
    /// Pending with no timer: waits for something that never comes.
    Hung,
    /// Not polled until then (a paused process), then resumed where it was.
    Frozen(Timestamp),
    /// Crashed; restarted as a new process then.
    Down(Timestamp),
    Done,
}

struct Slot {
    fut: Option<ActorFuture>,
    state: State,
    restart: bool,
}

/// What a finished run saw.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RunStats {
    pub(crate) ticks: u64,
    pub(crate) jobs: usize,
    pub(crate) simulated: Millis,
}

/// Why a run failed: the first violation, and the report to print.
#[derive(Debug, Clone)]
pub(crate) struct Failed {
    pub(crate) first: String,
    /// Every violation of the run (more than one only when running on past the first).
    pub(crate) all: Vec<String>,
    pub(crate) report: String,
}

struct Executor {
    sim: Shared,
    store: Arc<SimStore>,
    engine: lucius::Engine,
    slots: Vec<Slot>,
    rng: SmallRng,
    ownership: OwnershipConfig,
    next_process: u64,
    max_publish_attempts: u32,
    keep_going: bool,
}

impl Executor {
    fn new(seed: u64, model: Model) -> Executor {
        let ownership = OwnershipConfig::default();
        let max_skew = Millis(ownership.skew_margin.0 / 2);
        let world = World::new(seed, T0, SmallRng::seed_from_u64(seed ^ 0xfa17), max_skew);
        let sim: Shared = Arc::new(Mutex::new(world));
        let store = Arc::new(SimStore::new(&sim, model));
        let engine = engine(&sim, &store);
        let mut ex = Executor {
            sim,
            store,
            engine,
            slots: Vec::new(),
            rng: SmallRng::seed_from_u64(seed),
            ownership,
            next_process: 1,
            max_publish_attempts: lucius::EngineConfig::default().publish_retry.max_attempts,
            keep_going: false,
        };
        for i in 0..3 {
            ex.add(format!("client{i}"), Kind::Client, 0, true);
        }
        ex.add("bg-publisher".into(), Kind::BgPublisher, 0, true);
        ex.add("retry-loop".into(), Kind::RetryLoop, 0, true);
        for i in 1..=3 {
            let skew = skew_for(&mut ex.rng, &ex.ownership);
            ex.add(format!("d{i}"), Kind::Dispatcher, skew, true);
        }
        for i in 0..2 {
            ex.add(format!("sweeper{i}"), Kind::Sweeper, 0, true);
        }
        for i in 1..=4 {
            ex.add(format!("w{i}"), Kind::Worker, 0, true);
        }
        ex
    }

    /// Adds an actor slot and starts its first process.
    fn add(&mut self, name: String, kind: Kind, skew: i64, restart: bool) -> usize {
        let me = self.slots.len();
        lock(&self.sim).actors.push(ActorInfo {
            name,
            kind,
            process: 0,
            skew,
            fence: None,
            worker_call: None,
            sweep_all: None,
        });
        self.slots.push(Slot {
            fut: None,
            state: State::Ready,
            restart,
        });
        self.boot(me);
        me
    }

    /// Starts a new process in slot `i`.
    fn boot(&mut self, i: usize) {
        let kind = {
            let mut w = lock(&self.sim);
            let a = &mut w.actors[i];
            a.process = self.next_process;
            a.fence = None;
            a.worker_call = None;
            a.sweep_all = None;
            a.kind
        };
        self.next_process += 1;
        let p = Proc::new(&self.sim, i, &self.store, &self.engine, self.ownership);
        self.slots[i].fut = Some(start(kind, p));
        self.slots[i].state = State::Ready;
    }

    fn now(&self) -> Timestamp {
        lock(&self.sim).now
    }

    fn runnable(&self, now: Timestamp) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| match self.slots[i].state {
                State::Ready => true,
                State::Sleeping(t) => t <= now,
                _ => false,
            })
            .collect()
    }

    /// Wakes frozen and crashed actors whose time has come.
    fn wake(&mut self, now: Timestamp) {
        for i in 0..self.slots.len() {
            match self.slots[i].state {
                State::Frozen(t) if t <= now => {
                    lock(&self.sim).note(format!("actor {i} resumes after a freeze"));
                    self.slots[i].state = State::Ready;
                }
                State::Down(t) if t <= now => {
                    self.boot(i);
                    let mut w = lock(&self.sim);
                    let a = w.actors[i].clone();
                    w.note(format!("{} restarts as process {}", a.name, a.process));
                }
                _ => {}
            }
        }
    }

    /// The next time anything can happen when nothing is runnable.
    fn next_event(&self) -> Option<Timestamp> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                State::Sleeping(t) | State::Frozen(t) | State::Down(t) => Some(t),
                _ => None,
            })
            .min()
    }

    /// Polls one actor once.
    fn poll(&mut self, i: usize) {
        {
            let mut w = lock(&self.sim);
            w.current = i;
            w.wake = None;
        }
        let Some(fut) = self.slots[i].fut.as_mut() else {
            self.slots[i].state = State::Done;
            return;
        };
        let ready = fut
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready();
        let mut w = lock(&self.sim);
        let wake = w.wake.take();
        w.current = usize::MAX;
        self.slots[i].state = match (ready, wake) {
            (true, _) => {
                self.slots[i].fut = None;
                State::Done
            }
            (false, Some(t)) => State::Sleeping(t),
            (false, None) => {
                let name = w.actors[i].name.clone();
                w.violation(format!(
                    "{name} waits on something with no timeout (hung for good)"
                ));
                State::Hung
            }
        };
    }

    /// Chaos between ticks: time steps, crashes, freezes (with a same-id twin sometimes),
    /// bus outages.
    fn chaos(&mut self) {
        let now = self.now();
        if self.rng.random_ratio(1, 3) {
            let ms = self.rng.random_range(1..1_000);
            lock(&self.sim).now = now.plus(Millis(ms));
        }
        if self.rng.random_ratio(1, 120) {
            let i = self.rng.random_range(0..self.slots.len());
            if matches!(
                self.slots[i].state,
                State::Ready | State::Sleeping(_) | State::Hung
            ) {
                self.crash(i);
            }
        }
        if self.rng.random_ratio(1, 400) {
            let dispatchers: Vec<usize> = (0..self.slots.len())
                .filter(|&i| {
                    lock(&self.sim).actors[i].kind == Kind::Dispatcher
                        && matches!(self.slots[i].state, State::Ready | State::Sleeping(_))
                })
                .collect();
            if !dispatchers.is_empty() {
                let i = dispatchers[self.rng.random_range(0..dispatchers.len())];
                let lease = self.ownership.lease_duration.0;
                let until = now.plus(Millis(lease + self.rng.random_range(1_000..=lease)));
                self.slots[i].state = State::Frozen(until);
                let (name, skew) = {
                    let mut w = lock(&self.sim);
                    let a = w.actors[i].clone();
                    let rel = until.0 - w.start.0;
                    w.note(format!(
                        "{} (process {}) freezes until t+{rel}ms",
                        a.name, a.process
                    ));
                    (a.name, a.skew)
                };
                if self.rng.random_ratio(1, 2) {
                    // The orchestrator restarts the "dead" process under the same id while
                    // the old one is only paused: two processes share a dispatcher id.
                    let twin = self.add(name.clone(), Kind::Dispatcher, skew, false);
                    let mut w = lock(&self.sim);
                    let p = w.actors[twin].process;
                    w.note(format!("a twin of {name} starts as process {p}"));
                }
            }
        }
        if self.rng.random_ratio(1, 800) {
            let secs = self.rng.random_range(20..70);
            let mut w = lock(&self.sim);
            w.bus.outage_until = now.plus(Millis::from_secs(secs));
            w.note(format!("bus outage for {secs} s"));
        }
    }

    /// Drops an actor's future at its current yield point: a process crash.
    fn crash(&mut self, i: usize) {
        self.slots[i].fut = None;
        let now = self.now();
        let back = now.plus(Millis(self.rng.random_range(0..5_000)));
        self.slots[i].state = if self.slots[i].restart {
            State::Down(back)
        } else {
            State::Done
        };
        let mut w = lock(&self.sim);
        let a = w.actors[i].clone();
        w.note(format!("{} (process {}) crashes", a.name, a.process));
        w.actors[i].fence = None;
        w.actors[i].worker_call = None;
        w.actors[i].sweep_all = None;
        if a.kind == Kind::BgPublisher {
            let lost = std::mem::take(&mut w.bg_queue);
            w.note(format!("background queue lost ({} directives)", lost.len()));
        }
    }

    /// One tick: wake, pick, poll, check. False when nothing can ever run again.
    fn tick(&mut self) -> bool {
        let mut now = self.now();
        self.wake(now);
        let mut runnable = self.runnable(now);
        if runnable.is_empty() {
            let Some(t) = self.next_event() else {
                return false;
            };
            now = now.max(t);
            lock(&self.sim).now = now;
            self.wake(now);
            runnable = self.runnable(now);
            if runnable.is_empty() {
                return true;
            }
        }
        let i = runnable[self.rng.random_range(0..runnable.len())];
        lock(&self.sim).tick += 1;
        self.poll(i);
        lock(&self.sim).check_touched(self.max_publish_attempts);
        true
    }

    fn failed(&self) -> Option<Failed> {
        let w = lock(&self.sim);
        let first = w.violations.first()?.clone();
        let tail: Vec<&String> = w.log.iter().rev().take(20).collect();
        let mut report = format!("seed {} violated: {first}\n", w.seed);
        for v in w.violations.iter().skip(1).take(5) {
            report.push_str(&format!("  also: {v}\n"));
        }
        report.push_str("last operations (newest first):\n");
        for l in tail {
            report.push_str(&format!("  {l}\n"));
        }
        Some(Failed {
            first,
            all: w.violations.clone(),
            report,
        })
    }

    /// Ends the chaos: no faults, no crashes, no freezes; frozen and crashed processes come
    /// back; workers finish what they get; time advances until every accepted job ended or
    /// the budget runs out.
    fn settle(&mut self, budget: Budget) {
        let start = {
            let mut w = lock(&self.sim);
            w.chaos = false;
            w.bus.outage_until = w.now;
            w.note("quiescence begins");
            w.now
        };
        for i in 0..self.slots.len() {
            match self.slots[i].state {
                State::Frozen(_) => self.slots[i].state = State::Ready,
                State::Down(_) => self.boot(i),
                _ => {}
            }
        }
        for n in 0..budget.settle_ticks {
            if !self.tick() || (!self.keep_going && self.failed().is_some()) {
                return;
            }
            if n % 64 == 0 && self.all_ended() {
                return;
            }
            if self.now().since(start) > budget.settle_time {
                return;
            }
        }
    }

    fn all_ended(&self) -> bool {
        let w = lock(&self.sim);
        w.intake
            .accepted
            .values()
            .all(|(id, _)| w.seen.get(id).is_some_and(|r| r.job.status.is_terminal()))
    }
}

/// Runs one seed on one store model; with `keep_going`, runs to the end past violations
/// (to survey every kind a seed shows).
pub(crate) fn run(
    seed: u64,
    model: Model,
    budget: Budget,
    keep_going: bool,
) -> Result<RunStats, Failed> {
    let mut ex = Executor::new(seed, model);
    ex.keep_going = keep_going;
    for _ in 0..budget.chaos_ticks {
        ex.chaos();
        if !ex.tick() {
            break;
        }
        if !keep_going {
            if let Some(f) = ex.failed() {
                return Err(f);
            }
        }
    }
    let chaos_ticks = lock(&ex.sim).tick;
    ex.settle(budget);
    if std::env::var("SIM_STATS").is_ok() {
        let w = lock(&ex.sim);
        let ended = w
            .seen
            .values()
            .filter(|r| r.job.status.is_terminal())
            .count();
        eprintln!(
            "seed {seed}: {chaos_ticks} chaos ticks, {} in all, {} jobs ({ended} ended), {} deliveries, {} s simulated",
            w.tick,
            w.intake.accepted.len(),
            w.bus.deliveries,
            w.now.since(T0).0 / 1000
        );
    }
    if !keep_going {
        if let Some(f) = ex.failed() {
            return Err(f);
        }
    }
    lock(&ex.sim).check_quiescent(true);
    if let Some(f) = ex.failed() {
        return Err(f);
    }
    let w = lock(&ex.sim);
    Ok(RunStats {
        ticks: w.tick,
        jobs: w.intake.accepted.len(),
        simulated: w.now.since(T0),
    })
}
