//! The Table Storage bench: on Azurite (or the account `LUCIUS_TEST_TABLE_CONNECTION`
//! names), how many Table requests the dispatcher spends per 100 directives, in both
//! storage modes (`ledger` and `table`), and how fast it drains them (issue 7, item 3).
//!
//! Per mode, on fresh uniquely named tables: N jobs are submitted with `Engine::submit`
//! (persisted, not published: N `PENDING` directives in one partition; not timed), then
//! `Engine::dispatch` rounds run until a round finds nothing due. It prints the requests
//! those rounds sent, by kind, per 100 directives, and directives/s. It also prints the
//! requests per accepted command: intake (`Engine::submit`) and the inline publication of
//! its first directive (`Engine::publish`), as `docs/storage.md` quotes them.
//!
//! Run: `scripts/azurite.sh start`, then `cargo bench --bench table`. Settings
//! (environment):
//! - `LUCIUS_BENCH_TABLE_DIRECTIVES` (100, 1..=100000): pending directives to dispatch;
//! - `LUCIUS_TEST_TABLE_CONNECTION` (`UseDevelopmentStorage=true`): the table service.
//!
//! The store counts every HTTP request it sends, retries included. The tables are named
//! `B<pid>x<time>x<mode>Lucius…`; the store has no API to drop tables, so they stay until
//! Azurite stops (it keeps them in memory only). On a real account, delete them by hand.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lucius::engine::PublishOutcome;
use lucius::memory::MemoryPublisher;
use lucius::validation::validate_command;
use lucius::{Engine, EngineConfig, Millis, Partition, Store};
use lucius_table::{ConnectError, Mode, RequestCounts, TableConfig, TableStore};
use tokio::time::Instant;

use lucius_runtime::SystemClock;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `document.process` command with three step payloads and the given idempotency key
/// (the same command as `benches/load.rs` sends).
fn command(key: u64) -> Vec<u8> {
    format!(
        r#"{{"requestType":"document.process","tenantId":"acme","idempotencyKey":"k-{key}","payload":{{"documentUrl":"https://example.com/invoices/2026/11/invoice-{key}.pdf","language":"en"}},"steps":{{"ocr":{{"dpi":300}},"embed":{{"model":"mini"}},"index":{{"indexName":"invoices"}}}}}}"#
    )
    .into_bytes()
}

/// Validates and submits command `k` (no publication).
async fn submit(
    engine: &Engine,
    k: u64,
) -> Result<lucius::engine::Outcome<lucius::engine::Submission>, String> {
    let cmd = validate_command(engine.protocols(), &command(k), None)
        .map_err(|e| format!("command {k} is invalid: {e}"))?;
    engine
        .submit(cmd)
        .await
        .map_err(|e| format!("submit of command {k}: {e}"))
}

/// Concurrent submitters while pre-filling (the fill is not measured for time).
const FILL_TASKS: u64 = 8;

/// Accepted commands whose first directive is published inline, for the publish figure.
const PUBLISH_SAMPLE: u64 = 20;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without `--bench`: touch no network.
        println!("table: run it with `scripts/azurite.sh start` and `cargo bench --bench table`");
        return;
    }
    let n = env_or("LUCIUS_BENCH_TABLE_DIRECTIVES", 100u64).clamp(1, 100_000);
    let conn = std::env::var("LUCIUS_TEST_TABLE_CONNECTION")
        .unwrap_or_else(|_| "UseDevelopmentStorage=true".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("lucius table bench: {n} pending directives per mode, one dispatcher, batch size as configured");
    let mut results = Vec::new();
    for (name, mode) in [("ledger", Mode::Ledger), ("table", Mode::Table)] {
        match rt.block_on(run(name, mode, &conn, n)) {
            Ok(r) => results.push(r),
            Err(message) => {
                eprintln!("table bench: {message}");
                std::process::exit(1);
            }
        }
    }
    println!();
    println!(
        "{:<7} {:>12} {:>8} {:>14} {:>13} {:>11} {:>12} {:>12}",
        "mode",
        "directives",
        "rounds",
        "requests",
        "per 100 dir.",
        "dir./s",
        "intake/cmd",
        "publish/cmd"
    );
    for r in &results {
        println!(
            "{:<7} {:>12} {:>8} {:>14} {:>13.1} {:>11.0} {:>12.2} {:>12.2}",
            r.mode,
            r.dispatched,
            r.rounds,
            r.dispatch.total(),
            per(r.dispatch.total(), r.dispatched) * 100.0,
            r.rate,
            per(r.intake.total(), r.submitted),
            per(r.publish.total(), r.published_inline),
        );
    }
}

/// The figures of one mode.
struct ModeResult {
    mode: &'static str,
    dispatched: u64,
    rounds: usize,
    /// Requests of the rounds that found something due.
    dispatch: RequestCounts,
    rate: f64,
    submitted: u64,
    intake: RequestCounts,
    published_inline: u64,
    publish: RequestCounts,
}

fn per(requests: u64, units: u64) -> f64 {
    requests as f64 / units.max(1) as f64
}

/// `query 301, get 100, …`: the non-zero kinds of `c`, each divided by `units` when it is
/// more than one.
fn kinds(c: &RequestCounts, units: u64) -> String {
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
        .map(|(name, k)| {
            if units > 1 {
                format!("{name} {:.2}", per(*k, units))
            } else {
                format!("{name} {k}")
            }
        })
        .collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// A table-name prefix no other run (or mode) uses: letters and digits only.
fn unique_prefix(mode: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!("B{}x{nanos}x{mode}", std::process::id())
}

async fn run(name: &'static str, mode: Mode, conn: &str, n: u64) -> Result<ModeResult, String> {
    let prefix = unique_prefix(name);
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
    // The pre-filled entries stand for ones whose inline publication never happened: the
    // dispatcher takes them at once instead of after the dispatch grace.
    let engine = Engine::new(
        Arc::new(store.clone()) as Arc<dyn Store>,
        Arc::new(MemoryPublisher::noop()),
        Arc::new(SystemClock),
    )
    .with_config(EngineConfig {
        dispatch_grace: Millis(0),
        ..EngineConfig::default()
    });
    let batch = engine.config().batch_size;
    println!();
    println!("== {name} (tables {prefix}…, dispatch batch {batch})");

    // Pre-fill: n PENDING directives in one partition (not timed).
    let c0 = store.request_counts();
    let fill = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..FILL_TASKS.min(n) {
        let engine = engine.clone();
        tasks.spawn(async move {
            let mut partition = None;
            for k in (t..n).step_by(FILL_TASKS as usize) {
                let s = submit(&engine, k).await?;
                if !s.value.created {
                    return Err(format!("command {k} was not new: the tables are not fresh"));
                }
                partition = Some(s.value.partition);
            }
            Ok::<Option<Partition>, String>(partition)
        });
    }
    let mut partitions = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Some(p) = joined.map_err(|e| format!("a submitter failed: {e}"))?? {
            partitions.push(p);
        }
    }
    partitions.sort();
    partitions.dedup();
    let [partition] = partitions.as_slice() else {
        return Err(format!(
            "the jobs landed in {} partitions (a month boundary?): run it again",
            partitions.len()
        ));
    };
    let c1 = store.request_counts();
    let intake = c1.since(&c0);
    println!(
        "intake: {n} commands submitted in {:.2} s ({FILL_TASKS} submitters): {:.2} requests per command ({})",
        fill.elapsed().as_secs_f64(),
        per(intake.total(), n),
        kinds(&intake, n)
    );

    // Dispatch until a round finds nothing due.
    let start = Instant::now();
    let mut dispatched = 0u64;
    let mut rounds = Vec::new();
    let mut last_busy = c1;
    let mut busy_elapsed = Duration::ZERO;
    let mut troubles = (0usize, 0usize, 0usize, 0usize);
    loop {
        let before = store.request_counts();
        let t = Instant::now();
        let r = engine
            .dispatch(partition)
            .await
            .map_err(|e| format!("dispatch: {e}"))?;
        if r.due == 0 {
            break;
        }
        busy_elapsed = start.elapsed();
        last_busy = store.request_counts();
        dispatched += r.published as u64;
        troubles.0 += r.retrying;
        troubles.1 += r.dead;
        troubles.2 += r.skipped;
        troubles.3 += r.errors;
        rounds.push((r.due, r.published, last_busy.since(&before), t.elapsed()));
        if r.published == 0 || rounds.len() > 10 + 2 * (n as usize).div_ceil(batch.max(1)) {
            return Err(format!(
                "dispatch made no progress (round {}: {r:?})",
                rounds.len()
            ));
        }
    }
    let idle = store.request_counts().since(&last_busy);
    let dispatch = last_busy.since(&c1);
    let rate = dispatched as f64 / busy_elapsed.as_secs_f64().max(1e-9);
    for (i, (due, published, c, d)) in rounds.iter().enumerate() {
        println!(
            "  round {}: {published} of {due} due published in {:.2} s, {} requests ({})",
            i + 1,
            d.as_secs_f64(),
            c.total(),
            kinds(c, 1)
        );
    }
    println!(
        "dispatch: {dispatched} of {n} directives in {} rounds, {:.2} s on Azurite: {rate:.0} directives/s",
        rounds.len(),
        busy_elapsed.as_secs_f64()
    );
    if troubles != (0, 0, 0, 0) {
        println!(
            "dispatch: NOTE retrying {}, dead {}, skipped {}, errors {}",
            troubles.0, troubles.1, troubles.2, troubles.3
        );
    }
    println!(
        "dispatch: {} Table requests ({}) = {:.1} per 100 directives; per directive: {}",
        dispatch.total(),
        kinds(&dispatch, 1),
        per(dispatch.total(), dispatched) * 100.0,
        kinds(&dispatch, dispatched)
    );
    println!(
        "dispatch: the final round that found nothing due: {} requests ({})",
        idle.total(),
        kinds(&idle, 1)
    );

    // Accepted commands: intake, then the inline publication of the first directive, by an
    // engine with the default dispatch grace (the publication plans on intake's record
    // while the entry is younger than it).
    let inline = Engine::new(
        Arc::new(store.clone()) as Arc<dyn Store>,
        Arc::new(MemoryPublisher::noop()),
        Arc::new(SystemClock),
    );
    let sample = PUBLISH_SAMPLE.min(n);
    let mut to_publish = Vec::new();
    for k in n..n + sample {
        to_publish.extend(submit(&inline, k).await?.to_publish);
    }
    let before = store.request_counts();
    for id in &to_publish {
        let outcome = inline
            .publish(id)
            .await
            .map_err(|e| format!("publish of {id}: {e}"))?;
        if outcome != PublishOutcome::Sent {
            return Err(format!("publish of {id}: {outcome:?}"));
        }
    }
    let publish = store.request_counts().since(&before);
    println!(
        "publish: first directive of {sample} accepted commands: {:.2} requests per command ({}); \
         accepted command (intake + publish): {:.2}",
        per(publish.total(), sample),
        kinds(&publish, sample),
        per(intake.total(), n) + per(publish.total(), sample)
    );
    Ok(ModeResult {
        mode: name,
        dispatched,
        rounds: rounds.len(),
        dispatch,
        rate,
        submitted: n,
        intake,
        published_inline: sample,
        publish,
    })
}
