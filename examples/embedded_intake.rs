//! Durable intake without the network, for profilers: `POST /v1/commands` through the HTTP
//! handler (`lucius_http::Api::handle`) in pull mode, from `tasks` concurrent tasks on one
//! thread, first on the memory store, then on the embedded store in a fresh directory
//! (each answer after its group commit's fsync). Prints both rates, their ratio, the
//! writer's transactions and the log written per job:
//!
//! ```sh
//! cargo build --release --example embedded_intake
//! target/release/examples/embedded_intake 5 32   # seconds per phase, tasks
//! ```
//!
//! `cargo bench --bench load` measures the same over HTTP; this isolates the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use lucius::memory::MemoryStore;
use lucius_http::{Api, HttpConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let tasks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let memory = rt.block_on(phase(Arc::new(MemoryStore::new()), secs, tasks, "m"));
    println!("memory:   {memory:>9.0} commands/s");

    let dir = std::env::temp_dir().join(format!("lucius-embedded-intake-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = lucius_embedded::EmbeddedStore::open(&dir).expect("the embedded store opens");
    let before = store.write_stats();
    let io_before = written_bytes();
    let started = Instant::now();
    let embedded = rt.block_on(phase(Arc::new(store.clone()), secs, tasks, "e"));
    let elapsed = started.elapsed().as_secs_f64();
    let w = store.write_stats();
    let io = written_bytes().saturating_sub(io_before);
    let (requests, batches) = (w.requests - before.requests, w.batches - before.batches);
    let jobs = (embedded * elapsed).max(1.0);
    let db = std::fs::metadata(store.database_path()).map_or(0, |m| m.len());
    println!(
        "embedded: {embedded:>9.0} commands/s, {:.1} writes per transaction",
        requests as f64 / batches.max(1) as f64
    );
    println!(
        "database file: {:.2} KiB per job (checkpointed pages)",
        db as f64 / 1024.0 / jobs
    );
    println!(
        "written to storage (log, checkpoints): {:.2} KiB per job",
        io as f64 / 1024.0 / jobs
    );
    println!("RATIO embedded/memory = {:.2}", embedded / memory);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Commands answered `202` per second by `tasks` concurrent submitters over `secs`.
async fn phase(store: Arc<dyn lucius_core::Store>, secs: u64, tasks: usize, tag: &str) -> f64 {
    let lucius = lucius_runtime::Lucius::builder()
        .store_arc(store)
        .settings(lucius_runtime::Settings::no_loops())
        .build()
        .expect("a store is all pull mode needs");
    let api = Arc::new(Api::new(lucius, HttpConfig::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (api, stop, done) = (api.clone(), stop.clone(), done.clone());
        let tag = format!("{tag}{t}");
        handles.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let body = format!(
                    r#"{{"requestType":"document.process","tenantId":"acme","idempotencyKey":"{tag}-{k}","payload":{{"documentUrl":"https://example.com/invoices/2026/11/invoice-{k}.pdf","language":"en"}},"steps":{{"ocr":{{"dpi":300}},"embed":{{"model":"mini"}},"index":{{"indexName":"invoices"}}}}}}"#
                );
                let req = Request::builder()
                    .method("POST")
                    .uri("/v1/commands")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("a request");
                let res = api.handle(req).await;
                assert_eq!(res.status(), 202, "intake answers 202");
                done.fetch_add(1, Ordering::Relaxed);
                // The memory store never makes a task wait: let the others (and the
                // timer) run, as a server's connections would.
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for h in handles {
        let _ = h.await;
    }
    counted as f64 / elapsed
}

/// Bytes this process has caused to be written to storage (`/proc/self/io`).
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
