//! The history bench: on Azurite (or the account `LUCIUS_TEST_TABLE_CONNECTION` names), what
//! the recurring rounds of a node cost in Table requests when one partition holds a long
//! history of finished jobs, in both storage modes (`ledger` and `table`), and whether that
//! cost grows with the history (issue 15, item 6). It should not: a dispatcher, sweeper or
//! scrape has the same live work to do whether 1,000 or 10,000 jobs finished before.
//!
//! Run: `scripts/azurite.sh start`, then `cargo bench --bench history`; a smoke run (about
//! 2 minutes): `LUCIUS_BENCH_HISTORY_SIZES=20,200 cargo bench --bench history`. The
//! defaults take much longer, bounded by Azurite (one Node thread, ~4 ms of CPU per
//! request on the 2-core machine of `docs/benchmarks.md`): a finished job costs 11 requests
//! (ledger) or 22 (table), so the histories are ~120,000 and ~240,000 requests, 10 to 30
//! minutes per mode. Run one mode at a time with `LUCIUS_BENCH_HISTORY_MODES`, or each on
//! its own Azurite (`LUCIUS_TEST_TABLE_CONNECTION=
//! "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1:<port>"`).
//! Settings (environment):
//! - `LUCIUS_BENCH_HISTORY_SIZES` (`1000,10000`): the history sizes N, each 1..=100000;
//!   the last column of the tables is the ratio of the last size's figure to the first's;
//! - `LUCIUS_BENCH_HISTORY_MODES` (`ledger,table`): the storage modes measured;
//! - `LUCIUS_TEST_TABLE_CONNECTION` (`UseDevelopmentStorage=true`): the table service.
//!
//! Per mode and N, on fresh uniquely named tables, with a manual clock (so no deadline
//! passes while it runs) and a publisher that accepts everything:
//! 1. **history** (not part of any round): N jobs of a one-step protocol, all in one
//!    partition (one tenant, one month), each taken through the engine's real paths
//!    (`submit`, `publish`, `ack`, `complete`) to `SUCCEEDED`, by 32 concurrent tasks, so
//!    every row a finished job leaves behind exists. Its time and requests are printed;
//! 2. **live work**: 100 jobs submitted and not published (100 due `PENDING` directives)
//!    and 5 jobs running (published and acknowledged, leases far from expiry);
//! 3. **rounds**, each measured by the store's request counter (every HTTP request,
//!    retries included) and wall time, through public APIs only:
//!    - ownership: what the lease-owned dispatcher's round does before it dispatches
//!      (`Store::partitions`, then `PartitionOwner::rebalance`: announce, members, leases,
//!      one renewal per held lease); the first round (which takes the lease) and a steady
//!      one (which renews it);
//!    - watchdog: what that loop reads once per idle ceiling for its figures
//!      (`LeaseStore::leases`, then the oldest `PENDING` entry of every partition the
//!      round listed);
//!    - `/metrics` scrape: `lucius_http::Metrics::render` (the outbox backlog it reads);
//!    - sweep: `Engine::sweep_all` (the unfenced sweep loop's round; the owned loop sweeps
//!      a held partition the same way, without listing partitions);
//!    - dispatch: `Engine::dispatch` of the partition, once with the 100 due directives
//!      (which it publishes), then with nothing due;
//!    - outbox retry: `Engine::retry_pending`, once with 100 due directives (100 more jobs
//!      submitted for it, not published), then with nothing due.
//!
//!    Rounds that change nothing run 3 times; their time is the median.
//!
//! Reading the figures. Azurite answers a query with every matching row in one response,
//! however many rows it examined (the real service ends a response at 1,000 rows, 5 s or a
//! partition boundary), so a filter that scans the history costs no more requests here. And
//! Azurite evaluates **every** query, whatever its keys, by testing each row of the table
//! (`LokiTableMetadataStore.queryTableEntities`: `collection.chain().where(predicate)`), so
//! on Azurite every query slows as its table grows, a key-bounded one as much as a scan;
//! only point gets do not. The tables show, per round, its requests, the rows it got back
//! (what the store call returned: entries due, jobs swept, partitions listed, entries
//! scraped) and its time, and flag a request count that grows with N (per-row work that
//! grows with the history: a real regression anywhere), or a time that at least doubles
//! (on Azurite a hint only; against a real account, a scan). The history fill slows the
//! same way as it grows (ledger mode, on a busy machine: the first 1,000 jobs in 143 s, the
//! second 1,000 in 281 s).
//!
//! The tables are named `H<pid>x<time>x<mode><N>Lucius…` and stay until Azurite stops (it
//! keeps them in memory only); on a real account, delete them by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lucius::engine::{Outcome, PublishOutcome, Submission, WorkerCall};
use lucius::memory::{ManualClock, MemoryPublisher};
use lucius::ownership::{OwnershipConfig, PartitionOwner};
use lucius::validation::validate_command;
use lucius::{
    Engine, JobStatus, LeaseStore, Millis, OutboxId, OutboxQuery, OutboxStatus, Partition,
    ProtocolRegistry, StepStatus, Store, Timestamp,
};
use lucius_http::Metrics;
use lucius_table::{ConnectError, Mode, RequestCounts, TableConfig, TableStore};
use tokio::time::Instant;

/// The protocol of every job here: one step, so a finished job is as small as one can be
/// and the history is quick to fill.
const PROTOCOL: &str = r#"{"protocols": [{
    "requestType": "bench.history",
    "description": "One step; the history bench's jobs.",
    "steps": [{"stepId": "only", "topic": "bench.history", "ackTimeoutSeconds": 60,
               "leaseDurationSeconds": 600, "maxAttempts": 3}]
}]}"#;

const STEP: &str = "only";
const TENANT: &str = "bench";
/// Concurrent tasks filling the history.
const FILL_TASKS: u64 = 32;
/// Due `PENDING` directives of the live work (one dispatch or retry round's batch).
const DUE: u64 = 100;
/// Jobs running (acknowledged, lease held) beside them.
const RUNNING: u64 = 5;
/// Runs of each round that changes nothing.
const REPEATS: usize = 3;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without `--bench`: touch no network.
        println!(
            "history: run it with `scripts/azurite.sh start` and `cargo bench --bench history`"
        );
        return;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(message) => {
            eprintln!("history bench: {message}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!(
        "lucius history bench: N = {:?} finished jobs in one partition, then {DUE} due directives \
         and {RUNNING} running jobs; modes {:?}",
        settings.sizes,
        settings.modes.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    let started = Instant::now();
    for (name, mode) in &settings.modes {
        let mut runs = Vec::new();
        for &n in &settings.sizes {
            match rt.block_on(run(name, *mode, &settings.connection, n)) {
                Ok(r) => runs.push(r),
                Err(message) => {
                    eprintln!("history bench: {name}, N = {n}: {message}");
                    std::process::exit(1);
                }
            }
        }
        // Each mode's table as soon as it is measured: a long run stopped half-way keeps it.
        print_table(name, &runs);
    }
    println!("\nwhole bench: {:.0} s", started.elapsed().as_secs_f64());
}

/// What the environment asks for.
struct Settings {
    sizes: Vec<u64>,
    modes: Vec<(&'static str, Mode)>,
    connection: String,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let sizes = var("LUCIUS_BENCH_HISTORY_SIZES", "1000,10000")
            .split(',')
            .map(|s| match s.trim().parse::<u64>() {
                Ok(n) if (1..=100_000).contains(&n) => Ok(n),
                _ => Err(format!(
                    "LUCIUS_BENCH_HISTORY_SIZES: expected sizes of 1..=100000 separated by \
                     commas, found {s:?}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let modes = var("LUCIUS_BENCH_HISTORY_MODES", "ledger,table")
            .split(',')
            .map(|m| match m.trim() {
                "ledger" => Ok(("ledger", Mode::Ledger)),
                "table" => Ok(("table", Mode::Table)),
                other => Err(format!(
                    "LUCIUS_BENCH_HISTORY_MODES: expected `ledger` or `table`, found {other:?}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            sizes,
            modes,
            connection: var("LUCIUS_TEST_TABLE_CONNECTION", "UseDevelopmentStorage=true"),
        })
    }
}

/// One measured round (or the median of its repeats).
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    requests: RequestCounts,
    /// What the store call returned: entries, jobs, partitions (see each round).
    rows: usize,
    time: Duration,
}

/// The figures of one mode at one history size.
struct RunResult {
    n: u64,
    fill_time: Duration,
    fill: RequestCounts,
    rounds: Vec<(&'static str, Round)>,
}

/// Runs `round` `times` times: the requests and rows of the last run, the median time.
/// Runs that sent different requests are reported (a round that changes nothing should
/// not).
async fn measure(
    what: &str,
    store: &TableStore,
    times: usize,
    mut round: impl AsyncFnMut() -> Result<usize, String>,
) -> Result<Round, String> {
    let mut runs = Vec::new();
    for _ in 0..times.max(1) {
        let before = store.request_counts();
        let t = Instant::now();
        let rows = round().await.map_err(|e| format!("{what}: {e}"))?;
        let time = t.elapsed();
        runs.push(Round {
            requests: store.request_counts().since(&before),
            rows,
            time,
        });
    }
    if runs.iter().any(|r| r.requests != runs[0].requests) {
        let totals: Vec<u64> = runs.iter().map(|r| r.requests.total()).collect();
        println!("  NOTE {what}: the runs sent different requests: {totals:?}");
    }
    let mut times: Vec<Duration> = runs.iter().map(|r| r.time).collect();
    times.sort();
    let last = runs[runs.len() - 1];
    println!(
        "  {what}: {} requests ({}), {} rows, {}",
        last.requests.total(),
        kinds(&last.requests),
        last.rows,
        ms(times[times.len() / 2])
    );
    Ok(Round {
        time: times[times.len() / 2],
        ..last
    })
}

async fn run(name: &'static str, mode: Mode, conn: &str, n: u64) -> Result<RunResult, String> {
    let prefix = unique_prefix(&format!("{name}{n}"));
    let store = match TableStore::connect(conn, TableConfig::new(mode).with_prefix(&prefix)).await {
        Ok(s) => s,
        Err(e @ ConnectError::Service { .. }) => {
            return Err(format!(
                "the table service did not answer: {e}.\n\
                 Start Azurite with `scripts/azurite.sh start` (or point \
                 LUCIUS_TEST_TABLE_CONNECTION at a storage account) and run the bench again."
            ))
        }
        Err(e) => return Err(format!("cannot connect: {e}")),
    };
    // A manual clock at the wall clock's time: the partition is this month's, and no ACK
    // deadline, lease or retry delay passes while the bench runs.
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let clock = ManualClock::new(Timestamp(i64::try_from(wall).unwrap_or(i64::MAX)));
    let protocols = ProtocolRegistry::from_json(PROTOCOL)
        .map_err(|e| format!("the bench protocol does not load: {e}"))?;
    let engine = Engine::new(
        Arc::new(store.clone()) as Arc<dyn Store>,
        Arc::new(MemoryPublisher::noop()),
        Arc::new(clock.clone()),
    )
    .with_protocols(protocols);
    println!();
    println!("== {name}, N = {n} (tables {prefix}…)");

    // 1. The history: N finished jobs (not a measured round).
    let c0 = store.request_counts();
    let fill = Instant::now();
    let finished = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..FILL_TASKS.min(n) {
        let engine = engine.clone();
        let finished = finished.clone();
        tasks.spawn(async move {
            let mut partition = None;
            for k in (t..n).step_by(FILL_TASKS as usize) {
                partition = Some(finish(&engine, k).await?);
                // A large history takes minutes on Azurite: say how far it got.
                let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= 1_000 && done % (n / 10) == 0 && done < n {
                    println!(
                        "  history: {done} of {n} jobs finished, {:.0} s",
                        fill.elapsed().as_secs_f64()
                    );
                }
            }
            Ok::<Option<Partition>, String>(partition)
        });
    }
    let mut partitions = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        partitions.extend(joined.map_err(|e| format!("a filling task failed: {e}"))??);
    }
    let fill_time = fill.elapsed();
    let fill_requests = store.request_counts().since(&c0);
    println!(
        "history: {n} finished jobs in {:.1} s ({:.0} jobs/s, {FILL_TASKS} tasks), {:.1} requests per job ({})",
        fill_time.as_secs_f64(),
        n as f64 / fill_time.as_secs_f64().max(1e-9),
        fill_requests.total() as f64 / n as f64,
        kinds(&fill_requests)
    );

    // 2. The live work: due directives and running jobs in the same partition.
    for k in 0..DUE {
        partitions.push(pending(&engine, &format!("due-{k}")).await?.partition);
    }
    for k in 0..RUNNING {
        partitions.push(running(&engine, k).await?);
    }
    partitions.sort();
    partitions.dedup();
    let [partition] = partitions.as_slice() else {
        return Err(format!(
            "the jobs landed in {} partitions, expected one",
            partitions.len()
        ));
    };
    // Past the dispatch grace: dispatchers leave younger entries to inline publication.
    clock.advance(Millis(engine.config().dispatch_grace.0 + 1_000));

    // 3. The rounds.
    let leases: Arc<dyn LeaseStore> = Arc::new(store.clone());
    let mut owner = PartitionOwner::new(
        "bench-dispatcher",
        leases.clone(),
        Arc::new(clock.clone()),
        OwnershipConfig::default(),
    );
    let mut ownership = async || {
        let list = engine
            .store()
            .partitions()
            .await
            .map_err(|e| e.to_string())?;
        let r = owner.rebalance(&list).await.map_err(|e| e.to_string())?;
        if r.held.len() != list.len() {
            return Err(format!(
                "the only dispatcher holds {} of {} partitions",
                r.held.len(),
                list.len()
            ));
        }
        Ok(list.len())
    };
    let mut rounds = Vec::new();
    rounds.push((
        "ownership, first (takes the lease)",
        measure("ownership, first", &store, 1, &mut ownership).await?,
    ));
    rounds.push((
        "ownership, steady (renews it)",
        measure("ownership, steady", &store, REPEATS, &mut ownership).await?,
    ));
    // The watchdog reads the partitions the round listed; it lists none itself.
    let candidates = engine
        .store()
        .partitions()
        .await
        .map_err(|e| format!("partitions: {e}"))?;
    rounds.push((
        "watchdog (leases, oldest PENDING)",
        measure("watchdog", &store, REPEATS, async || {
            let leases = leases.leases().await.map_err(|e| e.to_string())?;
            let mut rows = leases.len();
            for p in &candidates {
                let q = OutboxQuery {
                    status: Some(OutboxStatus::Pending),
                    partition: Some(p.clone()),
                    limit: 1,
                    ..OutboxQuery::default()
                };
                rows += engine
                    .list_outbox(&q)
                    .await
                    .map_err(|e| e.to_string())?
                    .len();
            }
            Ok(rows)
        })
        .await?,
    ));
    let metrics = Metrics::new();
    rounds.push((
        "/metrics scrape",
        measure("/metrics scrape", &store, REPEATS, async || {
            let text = metrics.render(&engine).await;
            if !text.contains("lucius_store_up 1") {
                return Err("the scrape says the store is down".into());
            }
            Ok(scraped_entries(&text))
        })
        .await?,
    ));
    rounds.push((
        "sweep_all",
        measure("sweep_all", &store, REPEATS, async || {
            let o = engine.sweep_all().await.map_err(|e| e.to_string())?;
            let r = o.value;
            if r.errors + r.retried + r.failed + r.repaired > 0 || !o.to_publish.is_empty() {
                return Err(format!("the sweep found work, expected none: {r:?}"));
            }
            Ok(r.jobs)
        })
        .await?,
    ));
    let dispatch = measure("dispatch, 100 due", &store, 1, async || {
        let r = engine
            .dispatch(partition)
            .await
            .map_err(|e| e.to_string())?;
        if r.published as u64 != DUE {
            return Err(format!("expected {DUE} published, got {r:?}"));
        }
        Ok(r.due)
    })
    .await?;
    rounds.push(("dispatch, 100 due", dispatch));
    rounds.push((
        "dispatch, nothing due",
        measure("dispatch, nothing due", &store, REPEATS, async || {
            let r = engine
                .dispatch(partition)
                .await
                .map_err(|e| e.to_string())?;
            Ok(r.due)
        })
        .await?,
    ));
    for k in 0..DUE {
        pending(&engine, &format!("retry-{k}")).await?;
    }
    // Past the dispatch grace: dispatchers leave younger entries to inline publication.
    clock.advance(Millis(engine.config().dispatch_grace.0 + 1_000));
    rounds.push((
        "retry_pending, 100 due",
        measure("retry_pending, 100 due", &store, 1, async || {
            let r = engine.retry_pending().await.map_err(|e| e.to_string())?;
            if r.published as u64 != DUE {
                return Err(format!("expected {DUE} published, got {r:?}"));
            }
            Ok(r.due)
        })
        .await?,
    ));
    rounds.push((
        "retry_pending, nothing due",
        measure("retry_pending, nothing due", &store, REPEATS, async || {
            let r = engine.retry_pending().await.map_err(|e| e.to_string())?;
            Ok(r.due)
        })
        .await?,
    ));
    Ok(RunResult {
        n,
        fill_time,
        fill: fill_requests,
        rounds,
    })
}

/// Job `k` of the history, from intake to `SUCCEEDED`; its partition. Every call on the
/// way is idempotent, so a job whose call failed (a loaded Azurite answers a request too
/// late, and the store's retry of a write that landed is answered as a replay or a lost
/// race) is taken through them again, up to 3 times.
async fn finish(engine: &Engine, k: u64) -> Result<Partition, String> {
    let mut tries = 0;
    loop {
        match finish_once(engine, k).await {
            Ok(p) => return Ok(p),
            Err(e) if tries < 3 => {
                tries += 1;
                println!("  NOTE history job done-{k}: {e}; taking it through again");
            }
            Err(e) => return Err(e),
        }
    }
}

async fn finish_once(engine: &Engine, k: u64) -> Result<Partition, String> {
    let s = submit(engine, &format!("done-{k}")).await?.value;
    if s.status == JobStatus::Succeeded {
        return Ok(s.partition);
    }
    // A replay lists the first directive only if it was never published.
    let first = OutboxId::for_attempt(&s.job_id, 0, 1);
    let published = engine
        .publish(&first)
        .await
        .map_err(|e| format!("publish of {first}: {e}"))?;
    if !matches!(published, PublishOutcome::Sent | PublishOutcome::NotPending) {
        return Err(format!("publish of {first}: {published:?}"));
    }
    let call = call(&s);
    // An ack that landed before (its step `RUNNING`) may be refused now; the completion
    // says whether the step runs.
    let acked = engine.ack(call.clone()).await;
    let done = engine
        .complete(call, serde_json::json!({ "k": k }))
        .await
        .map_err(|e| format!("completion of {first}: {e} (its ack: {acked:?})"))?;
    if done.value.status != StepStatus::Succeeded {
        return Err(format!(
            "{first} is {:?} after its completion",
            done.value.status
        ));
    }
    Ok(s.partition)
}

/// A job whose first directive is due and not published.
async fn pending(engine: &Engine, key: &str) -> Result<Submission, String> {
    Ok(submit(engine, key).await?.value)
}

/// Running job `k`: published and acknowledged; its partition.
async fn running(engine: &Engine, k: u64) -> Result<Partition, String> {
    let s = submit(engine, &format!("running-{k}")).await?;
    for id in &s.to_publish {
        engine
            .publish(id)
            .await
            .map_err(|e| format!("publish of {id}: {e}"))?;
    }
    engine
        .ack(call(&s.value))
        .await
        .map_err(|e| format!("ack of running-{k}: {e}"))?;
    Ok(s.value.partition)
}

/// The worker call on a new job's first (only) attempt.
fn call(s: &Submission) -> WorkerCall<'_> {
    WorkerCall {
        job_id: &s.job_id,
        step_id: STEP,
        attempt: 1,
        worker_id: Some("bench-worker"),
    }
}

/// Submits the job of `key` (persisted, not published).
async fn submit(engine: &Engine, key: &str) -> Result<Outcome<Submission>, String> {
    let body = format!(
        r#"{{"requestType":"bench.history","tenantId":"{TENANT}","idempotencyKey":"{key}","payload":{{"key":"{key}"}}}}"#
    );
    let cmd = validate_command(engine.protocols(), body.as_bytes(), None)
        .map_err(|e| format!("command {key} is invalid: {e}"))?;
    // The tables are new, so a replay (`created: false`) is this run's own submission,
    // written by a request whose answer came too late and retried by the store.
    engine
        .submit(cmd)
        .await
        .map_err(|e| format!("submit of {key}: {e}"))
}

/// The entries a scrape counted (the sum of its `lucius_outbox_entries` gauges).
fn scraped_entries(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("lucius_outbox_entries{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// Prints one mode's rounds at every size, and the ratio of the last size to the first.
fn print_table(mode: &str, runs: &[RunResult]) {
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return;
    };
    let compare = runs.len() > 1;
    println!();
    println!(
        "== {mode}: each round with N finished jobs in the partition: requests / rows returned / wall time"
    );
    let mut header = format!("{:<36}", "round");
    for r in runs {
        header.push_str(&format!(" {:>26}", format!("N = {}", r.n)));
    }
    if compare {
        header.push_str(&format!(
            " {:>10} {:>10}",
            format!("req ×{}", ratio_label(first.n, last.n)),
            "time ×"
        ));
    }
    println!("{header}");
    for (i, (what, _)) in first.rounds.iter().enumerate() {
        let mut line = format!("{what:<36}");
        for r in runs {
            let x = r.rounds[i].1;
            line.push_str(&format!(
                " {:>26}",
                format!("{} / {} / {}", x.requests.total(), x.rows, ms(x.time))
            ));
        }
        if compare {
            let (a, b) = (first.rounds[i].1, last.rounds[i].1);
            let req = b.requests.total() as f64 / a.requests.total().max(1) as f64;
            let time = b.time.as_secs_f64() / a.time.as_secs_f64().max(1e-9);
            line.push_str(&format!(" {req:>10.2} {time:>10.2}"));
            if b.requests.total() > a.requests.total() {
                line.push_str("  <- requests grow");
            } else if time >= 2.0 {
                line.push_str("  <- time grows");
            }
        }
        println!("{line}");
    }
    println!(
        "(requests that grow: per-row work on the history; time that grows: on Azurite every \
         query scans its whole table, see the top of benches/history.rs)"
    );
    // The dispatch round per directive, and the history itself.
    let mut line = format!("{:<36}", "dispatch, requests per directive");
    for r in runs {
        let d = r.rounds.iter().find(|(w, _)| *w == "dispatch, 100 due");
        let per = d.map_or(0.0, |(_, x)| x.requests.total() as f64 / DUE as f64);
        line.push_str(&format!(" {:>26}", format!("{per:.2}")));
    }
    println!("{line}");
    let mut line = format!("{:<36}", "history fill (not a round)");
    for r in runs {
        line.push_str(&format!(
            " {:>26}",
            format!(
                "{:.1} req/job, {:.0} s",
                r.fill.total() as f64 / r.n as f64,
                r.fill_time.as_secs_f64()
            )
        ));
    }
    println!("{line}");
}

fn ratio_label(a: u64, b: u64) -> String {
    if a > 0 && b % a == 0 {
        format!("{}", b / a)
    } else {
        format!("{b}/{a}")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `query 1, get 100, …`: the non-zero kinds of `c`.
fn kinds(c: &RequestCounts) -> String {
    let all = [
        ("insert", c.insert),
        ("update", c.update),
        ("upsert", c.upsert),
        ("delete", c.delete),
        ("get", c.get),
        ("query", c.query),
        ("batch", c.batch),
        ("create table", c.create_table),
    ];
    let v: Vec<String> = all
        .iter()
        .filter(|(_, k)| *k > 0)
        .map(|(name, k)| format!("{name} {k}"))
        .collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// A table-name prefix no other run (or mode, or size) uses: letters and digits only.
fn unique_prefix(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!("H{}x{nanos}x{what}", std::process::id())
}
