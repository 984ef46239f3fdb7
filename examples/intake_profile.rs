//! The intake path without the network, for profilers: `n` `POST /v1/commands` through the
//! HTTP handler (`lucius_http::Api::handle`) on the memory store, each followed by the
//! publication of its first directive, on one thread. `docs/benchmarks.md` profiles it:
//!
//! ```sh
//! cargo build --release --example intake_profile
//! valgrind --tool=callgrind target/release/examples/intake_profile 20000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -60
//! ```
//!
//! Instruction counts are repeatable, whatever else the machine is doing.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use lucius::memory::{ManualClock, MemoryPublisher, MemoryStore};
use lucius::{Engine, Millis, Timestamp};
use lucius_http::{Api, HttpConfig};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let clock = ManualClock::new(Timestamp(1_790_000_000_000));
    let store = MemoryStore::new();
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(MemoryPublisher::noop()),
        Arc::new(clock.clone()),
    );
    let api = Api::new(
        lucius_runtime::Lucius::from_engine(engine.clone(), lucius_runtime::Settings::no_loops())
            .expect("no lease-owned dispatch"),
        HttpConfig::default(),
    );
    let started = std::time::Instant::now();
    let cpu_started = thread_cpu_secs();
    rt.block_on(async {
        for k in 0..n {
            let body = format!(
                r#"{{"requestType":"document.process","tenantId":"acme","idempotencyKey":"k-{k}","payload":{{"documentUrl":"https://example.com/invoices/2026/11/invoice-{k}.pdf","language":"en"}},"steps":{{"ocr":{{"dpi":300}},"embed":{{"model":"mini"}},"index":{{"indexName":"invoices"}}}}}}"#
            );
            let req = Request::builder()
                .method("POST")
                .uri("/v1/commands")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("a request");
            let res = api.handle(req).await;
            assert_eq!(res.status(), 202);
            // Let the background publishers run (as the server's runtime would).
            tokio::task::yield_now().await;
            if k % 1000 == 0 {
                clock.advance(Millis(1));
            }
        }
        while api.background_tasks() > 0 {
            tokio::task::yield_now().await;
        }
    });
    let elapsed = started.elapsed();
    let cpu = thread_cpu_secs().zip(cpu_started).map(|(b, a)| b - a);
    let per = |secs: f64| secs * 1e6 / n.max(1) as f64;
    println!(
        "{} jobs, {} published: {:.2} µs of CPU per command, {:.2} µs wall (body building included)",
        store.job_count(),
        n,
        cpu.map_or(f64::NAN, per),
        per(elapsed.as_secs_f64()),
    );
    // The store is dropped with the process: freeing half a million jobs is not the path
    // being profiled.
    std::mem::forget((api, engine, store));
}

/// This thread's user + system CPU time (Linux; `None` elsewhere). Unlike wall time it
/// does not count the time the thread waited for a core on a busy machine.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}
