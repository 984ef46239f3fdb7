//! The shared world of one simulated run — virtual time, which actor the executor is
//! polling, the bus, the monitor's records — and the leaf futures (a one-shot yield, a
//! sleep on virtual time) through which every port hands control back to the executor.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use lucius::memory::MemoryStore;
use lucius::ports::Sleep;
use lucius::{
    Clock, Directive, JobId, JobRecord, LeaseStore, Millis, OutboxId, Partition, Timestamp,
};
use rand::rngs::SmallRng;

/// What an actor is; decides which rules the monitor applies to its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Client,
    BgPublisher,
    RetryLoop,
    Dispatcher,
    Sweeper,
    Worker,
}

impl Kind {
    /// Publishers without a lease: the ownership rule forbids them to overwrite an entry a
    /// leased dispatcher stamped.
    pub(crate) fn is_unfenced_publisher(self) -> bool {
        matches!(self, Kind::BgPublisher | Kind::RetryLoop)
    }
}

/// The fence a dispatcher process is dispatching under, registered by the actor.
#[derive(Debug, Clone)]
pub(crate) struct ActiveFence {
    pub(crate) partition: Partition,
    pub(crate) owner: String,
    pub(crate) epoch: u64,
}

/// The executor's and the monitor's view of one actor slot.
#[derive(Debug, Clone)]
pub(crate) struct ActorInfo {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// Unique per process start (a restart or a twin gets a new one).
    pub(crate) process: u64,
    pub(crate) skew: i64,
    pub(crate) fence: Option<ActiveFence>,
    /// `Some(worker_id)` while the actor makes a worker call (`Some(None)`: anonymous).
    pub(crate) worker_call: Option<Option<String>>,
    /// While the actor runs `sweep_all`: the partitions listed and those whose jobs were
    /// read (or failed to be).
    pub(crate) sweep_all: Option<SweepAllCall>,
}

/// What one `sweep_all` call read.
#[derive(Debug, Clone, Default)]
pub(crate) struct SweepAllCall {
    pub(crate) listed: Option<Vec<Partition>>,
    pub(crate) visited: BTreeSet<Partition>,
    pub(crate) failed: BTreeSet<Partition>,
}

/// The bus: what was delivered, and every publish call that failed (by start tick).
#[derive(Debug)]
pub(crate) struct Bus {
    pub(crate) queue: Vec<Arc<Directive>>,
    pub(crate) delivered: BTreeSet<String>,
    pub(crate) deliveries: usize,
    /// Failed publish calls (error or hang) per directive id: the tick each started at.
    pub(crate) failed_calls: BTreeMap<String, Vec<u64>>,
    /// While `now` is before this, every publication fails (an outage).
    pub(crate) outage_until: Timestamp,
}

impl Default for Bus {
    fn default() -> Bus {
        Bus {
            queue: Vec::new(),
            delivered: BTreeSet::new(),
            deliveries: 0,
            failed_calls: BTreeMap::new(),
            outage_until: Timestamp::EPOCH,
        }
    }
}

/// Intake results the clients recorded.
#[derive(Debug, Default)]
pub(crate) struct Intake {
    /// (tenant, key) → (job, variant) of the first `202`.
    pub(crate) accepted: BTreeMap<(String, String), (JobId, u32)>,
    /// Requests answered `409` (tenant, key, variant).
    pub(crate) refused: Vec<(String, String, u32)>,
}

/// Everything shared by the actors, the ports and the executor of one run.
pub(crate) struct World {
    pub(crate) seed: u64,
    /// Virtual time at the start (logs show time since then).
    pub(crate) start: Timestamp,
    pub(crate) tick: u64,
    pub(crate) now: Timestamp,
    /// Index of the actor being polled (`usize::MAX` outside the executor).
    pub(crate) current: usize,
    /// The earliest time the polled actor asked to be woken at.
    pub(crate) wake: Option<Timestamp>,
    pub(crate) actors: Vec<ActorInfo>,
    /// Faults on (bus errors, store failures, misbehaving workers).
    pub(crate) chaos: bool,
    pub(crate) rng: SmallRng,
    /// The rows every store model keeps its truth in (and the lease rows).
    pub(crate) rows: MemoryStore,
    pub(crate) bus: Bus,
    /// Directives the orchestrator process's background publisher has yet to publish.
    pub(crate) bg_queue: Vec<OutboxId>,
    pub(crate) intake: Intake,
    /// Jobs written since the last check.
    pub(crate) touched: BTreeSet<JobId>,
    /// Last snapshot of every job seen, and the tick of each entry's last recorded failure.
    pub(crate) seen: BTreeMap<JobId, JobRecord>,
    pub(crate) last_failure_tick: BTreeMap<OutboxId, u64>,
    /// (partition, epoch) → the process that first dispatched under it.
    pub(crate) epochs: BTreeMap<(Partition, u64), (u64, String)>,
    pub(crate) max_skew: Millis,
    pub(crate) violations: Vec<String>,
    pub(crate) log: VecDeque<String>,
    /// Print every operation as it happens (`SIM_TRACE=1`).
    pub(crate) trace: bool,
}

pub(crate) type Shared = Arc<Mutex<World>>;

/// Locks the world (a poisoned lock still holds consistent records: nothing panics while
/// holding it).
pub(crate) fn lock(sim: &Shared) -> MutexGuard<'_, World> {
    sim.lock().unwrap_or_else(|e| e.into_inner())
}

impl World {
    pub(crate) fn new(seed: u64, start: Timestamp, rng: SmallRng, max_skew: Millis) -> World {
        World {
            seed,
            start,
            tick: 0,
            now: start,
            current: usize::MAX,
            wake: None,
            actors: Vec::new(),
            chaos: true,
            rng,
            rows: MemoryStore::new(),
            bus: Bus::default(),
            bg_queue: Vec::new(),
            intake: Intake::default(),
            touched: BTreeSet::new(),
            seen: BTreeMap::new(),
            last_failure_tick: BTreeMap::new(),
            epochs: BTreeMap::new(),
            max_skew,
            violations: Vec::new(),
            log: VecDeque::new(),
            trace: std::env::var("SIM_TRACE").is_ok_and(|v| v == "1"),
        }
    }

    /// The actor being polled, if the executor is polling one.
    pub(crate) fn running(&self) -> Option<&ActorInfo> {
        self.actors.get(self.current)
    }

    /// Records an operation for the failure report (the last few are kept).
    pub(crate) fn note(&mut self, what: impl std::fmt::Display) {
        let who = self
            .running()
            .map_or_else(|| "-".to_owned(), |a| format!("{}#{}", a.name, a.process));
        let line = format!(
            "[tick {} t+{}ms {who}] {what}",
            self.tick,
            self.now.0 - self.start.0
        );
        if self.trace {
            eprintln!("{line}");
        }
        if self.log.len() >= 40 {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    pub(crate) fn violation(&mut self, what: String) {
        self.note(format!("VIOLATION: {what}"));
        self.violations.push(what);
    }

    fn register_wake(&mut self, at: Timestamp) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// The true lease row of a partition (for the monitor; never yields).
    pub(crate) fn lease_row(&self, p: &Partition) -> Option<lucius::Lease> {
        now_or_never(self.rows.lease(p))
            .and_then(Result::ok)
            .flatten()
    }
}

/// Polls a future once; the stores' own futures are ready at once.
pub(crate) fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Runs a future to completion outside the executor (ports' yields are ready on the next
/// poll), for the conformance suite.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("block_on: the future never finished (it waits on virtual time)")
}

/// Returns `Pending` once (asking to run again at once), so the executor may switch to
/// another actor: a port call's round trip.
pub(crate) struct YieldOnce {
    sim: Shared,
    done: bool,
}

pub(crate) fn yield_now(sim: &Shared) -> YieldOnce {
    YieldOnce {
        sim: sim.clone(),
        done: false,
    }
}

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        self.done = true;
        let mut w = lock(&self.sim);
        let now = w.now;
        w.register_wake(now);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Completes once virtual time reaches `deadline`.
pub(crate) struct SleepUntil {
    sim: Shared,
    deadline: Timestamp,
}

impl Future for SleepUntil {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let mut w = lock(&self.sim);
        if w.now >= self.deadline {
            return Poll::Ready(());
        }
        let d = self.deadline;
        w.register_wake(d);
        Poll::Pending
    }
}

/// The processes' clocks: virtual time plus the skew of the machine of the actor being
/// polled (one engine serves every process; it holds no state of its own).
#[derive(Clone)]
pub(crate) struct ActorClock {
    pub(crate) sim: Shared,
}

impl Clock for ActorClock {
    fn now(&self) -> Timestamp {
        let w = lock(&self.sim);
        Timestamp(w.now.0 + w.running().map_or(0, |a| a.skew))
    }

    fn sleep(&self, duration: Millis) -> Sleep {
        let deadline = lock(&self.sim).now.plus(duration);
        Box::pin(SleepUntil {
            sim: self.sim.clone(),
            deadline,
        })
    }
}

/// Sleeps `d` of virtual time (for actors' own pauses).
pub(crate) fn sleep(sim: &Shared, d: Millis) -> SleepUntil {
    let deadline = lock(sim).now.plus(d);
    SleepUntil {
        sim: sim.clone(),
        deadline,
    }
}
