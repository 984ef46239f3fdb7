//! A seeded, deterministic **interleaving** simulation of the whole engine: clients,
//! the background publisher, the orchestrator's retry loop, lease-owning dispatchers with
//! skewed clocks (one frozen past its lease now and then, sometimes with a same-id twin),
//! sweepers and workers run *concurrently*; a single-threaded executor switches between
//! them at every store, bus and clock call in an order drawn from the seed, and may crash
//! any of them at any of those points. It runs on the memory store (atomic commits) and on
//! a store model with Table semantics (non-atomic commit groups, a separate outbox index).
//! Invariants are checked after every step and at quiescence; no admin action anywhere.
//! See `docs/testing.md`.
//!
//! `SIM_SEEDS` (default 1000) seeds run per model; `SIM_SEED=n` replays one (with its log).

#[path = "interleaving/actors.rs"]
mod actors;
#[path = "interleaving/bus.rs"]
mod bus;
#[path = "interleaving/checks.rs"]
mod checks;
#[path = "interleaving/runner.rs"]
mod runner;
#[path = "interleaving/store.rs"]
mod store;
#[path = "interleaving/table_model.rs"]
mod table_model;
#[path = "interleaving/world.rs"]
mod world;

use std::sync::{Arc, Mutex};

use lucius::Millis;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use runner::{run, Budget, T0};
use store::{Model, SimStore};
use world::{block_on, World};

const BUDGET: Budget = Budget {
    chaos_ticks: 1_500,
    settle_ticks: 30_000,
    settle_time: Millis(15 * 60 * 1000),
};

fn seeds() -> (Vec<u64>, bool) {
    match std::env::var("SIM_SEED") {
        Ok(s) => (vec![s.parse().expect("SIM_SEED is a number")], true),
        Err(_) => {
            let n: u64 = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            ((0..n).collect(), false)
        }
    }
}

fn simulate(model: Model) {
    let (seeds, replay) = seeds();
    let keep_going = std::env::var("SIM_KEEP_GOING").is_ok_and(|v| v == "1");
    let mut kinds: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
    let started = std::time::Instant::now();
    let (mut ticks, mut jobs, mut simulated) = (0u64, 0usize, 0u64);
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run(seed, model, BUDGET, keep_going) {
            Ok(s) => {
                ticks += s.ticks;
                jobs += s.jobs;
                simulated += s.simulated.0;
            }
            Err(f) => {
                if replay || failures.is_empty() {
                    eprintln!("{}", f.report);
                }
                let mut seen_here = std::collections::BTreeSet::new();
                for v in &f.all {
                    let k = kind_of(v);
                    if seen_here.insert(k.clone()) {
                        let e = kinds.entry(k).or_insert((0, seed));
                        e.0 += 1;
                    }
                }
                failures.push((seed, f.first));
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "interleaving ({model:?}): {} seeds, {jobs} jobs, {ticks} ticks, {:.0} simulated s in {wall:.1} wall s",
        seeds.len(),
        simulated as f64 / 1000.0,
    );
    if keep_going {
        println!("violations by kind (seeds showing it, first seed):");
        for (k, (n, first)) in &kinds {
            println!("  {n:5}  seed {first:5}  {k}");
        }
    }
    if !failures.is_empty() {
        let arg = match model {
            Model::Memory => "memory_store",
            Model::Table => "table_model",
        };
        let mut msg = format!(
            "{} of {} seeds violated an invariant on the {model:?} model:\n",
            failures.len(),
            seeds.len()
        );
        for (seed, first) in failures.iter().take(30) {
            msg.push_str(&format!(
                "  SIM_SEED={seed} cargo test --test interleaving {arg} -- --nocapture\n      {first}\n"
            ));
        }
        panic!("{msg}");
    }
    if !replay {
        assert!(jobs > seeds.len(), "the simulation accepted almost no jobs");
    }
}

/// A violation with its ids, numbers, names and job details blanked, to count kinds
/// across seeds.
fn kind_of(v: &str) -> String {
    let v = v.split(": job ").next().unwrap_or(v);
    let mut out = String::new();
    for word in v.split(' ') {
        let digits = word.chars().filter(|c| c.is_ascii_digit()).count();
        let w = if word.contains('"') {
            "<who>"
        } else if word.len() >= 8 && digits >= 3 {
            "<id>"
        } else if digits > 0 && digits * 2 >= word.len() {
            "N"
        } else {
            word
        };
        out.push_str(w);
        out.push(' ');
    }
    out.truncate(150);
    out
}

#[test]
fn interleavings_on_the_memory_store_keep_every_invariant() {
    simulate(Model::Memory);
}

#[test]
fn interleavings_on_the_table_model_keep_every_invariant() {
    simulate(Model::Table);
}

/// The Table model is a store like any other: it passes the conformance suite (as a
/// non-atomic store, whose commits that fail after their first group are `Partial`),
/// driven outside the executor. Its interrupted intake is a write of the rows torn before
/// the first directive, which then never reaches the index.
#[test]
fn the_table_model_passes_the_conformance_suite() {
    use lucius::memory::Fault;
    use lucius::testkit::conformance::{run_lease_checks, run_one, Capabilities, Subject, CHECKS};
    use lucius::Store;
    for name in CHECKS {
        let world = quiet_world();
        let store = Arc::new(SimStore::new(&world, Model::Table));
        let rows = world::lock(&world).rows.clone();
        let subject = Subject::new(store, move |new: lucius::NewJob| {
            let rows = rows.clone();
            async move {
                rows.inject(Fault::Tear(new.steps.len() + 3));
                let _ = rows.create_job(new).await;
            }
        });
        block_on(run_one(
            name,
            subject,
            Capabilities {
                atomic_commit: false,
                retention: true,
                retires_partitions: true,
            },
        ));
    }
    block_on(run_lease_checks(Arc::new(SimStore::new(
        &quiet_world(),
        Model::Table,
    ))));
}

/// A Table-model commit whose steps land and whose job write then loses its race says
/// `Partial`, and leaves exactly the steps written.
#[test]
fn a_table_commit_that_fails_after_its_steps_is_partial() {
    use lucius::{Changes, JobStatus, Revision, StepStatus, Store, StoreErrorKind};
    let store = SimStore::new(&quiet_world(), Model::Table);
    let new = lucius::testkit::new_job("acme", "k-partial", 0, T0);
    block_on(store.create_job(new.clone())).expect("create");
    let rec = block_on(store.load_job(&new.job.id))
        .expect("load")
        .expect("the job");
    let now = T0.plus(Millis(5));
    let step = rec.steps[0].on_published(1, now).expect("publish the step");
    let mut stale_job = rec.job.on_start(now).expect("start the job");
    stale_job.revision = Revision::stored("no-such-revision");
    let err = block_on(store.commit(Changes {
        steps: vec![step],
        outbox: vec![],
        job: Some(stale_job),
    }))
    .expect_err("a stale job write fails");
    assert_eq!(err.kind, StoreErrorKind::Partial, "{err}");
    let after = block_on(store.load_job(&new.job.id))
        .expect("load")
        .expect("the job");
    assert_eq!(after.steps[0].status, StepStatus::Initiated);
    assert_eq!(after.job.status, JobStatus::Accepted);

    // Nothing written: the plain error.
    let mut stale = after.job.on_start(now).expect("start the job");
    stale.revision = Revision::stored("no-such-revision");
    let err = block_on(store.commit(Changes {
        job: Some(stale),
        ..Changes::default()
    }))
    .expect_err("a stale job write fails");
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{err}");
}

/// A world with no chaos, outside any run (for the store tests).
fn quiet_world() -> world::Shared {
    let sim = Arc::new(Mutex::new(World::new(
        0,
        T0,
        SmallRng::seed_from_u64(0),
        Millis(1_000),
    )));
    world::lock(&sim).chaos = false;
    sim
}
