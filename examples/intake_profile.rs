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
    let api = Api::new(engine.clone(), HttpConfig::default());
    let started = std::time::Instant::now();
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
    println!(
        "{} jobs, {} published, {:.2} µs per command (wall clock, body building included)",
        store.job_count(),
        n,
        elapsed.as_secs_f64() * 1e6 / n.max(1) as f64
    );
    // The store is dropped with the process: freeing half a million jobs is not the path
    // being profiled.
    std::mem::forget((api, engine, store));
}
