//! The handler without a socket: `Api::handle` is a plain async function of a request, so
//! benchmarks and embedders can drive it directly.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use lucius_core::memory::{ManualClock, MemoryPublisher, MemoryStore};
use lucius_core::{Engine, Timestamp};
use lucius_http::{Api, HttpConfig, Metrics};

#[tokio::test]
async fn the_handler_answers_without_a_server() {
    let store = MemoryStore::new();
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(MemoryPublisher::new()),
        Arc::new(ManualClock::new(Timestamp(1_709_251_200_000))),
    );
    let metrics = Arc::new(Metrics::new());
    let api = Api::with_metrics(engine, HttpConfig::default(), metrics.clone());
    let body =
        r#"{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"k","payload":{"x":1}}"#;
    let req = Request::post("/v1/commands")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = api.handle(req).await;
    assert_eq!(res.status(), 202);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["status"], "ACCEPTED");
    assert_eq!(store.job_count(), 1);
    assert_eq!(metrics.requests("/v1/commands", 202), 1);

    let req = Request::get("/healthz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(api.handle(req).await.status(), 200);
    // Shared metrics see the engine's transitions too.
    let text = metrics.render(api.engine()).await;
    assert!(
        text.contains("lucius_job_transitions_total{from=\"NEW\",to=\"ACCEPTED\"} 1"),
        "{text}"
    );
}
