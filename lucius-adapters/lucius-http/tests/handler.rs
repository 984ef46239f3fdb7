//! The handler without a socket: `Api::handle` is a plain async function of a request, so
//! benchmarks and embedders can drive it directly.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use lucius_core::memory::{ManualClock, MemoryPublisher, MemoryStore};
use lucius_core::{Engine, Timestamp};
use lucius_http::{Api, HttpConfig, Metrics};
use lucius_runtime::{Lucius, Settings};

fn handle(engine: Engine) -> Lucius {
    Lucius::from_engine(engine, Settings::no_loops()).expect("no lease-owned dispatch")
}

#[tokio::test]
async fn the_handler_answers_without_a_server() {
    let store = MemoryStore::new();
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(MemoryPublisher::new()),
        Arc::new(ManualClock::new(Timestamp(1_709_251_200_000))),
    );
    let metrics = Arc::new(Metrics::new());
    let api = Api::with_metrics(handle(engine), HttpConfig::default(), metrics.clone());
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

/// Random paths, methods, headers and bodies: every answer is JSON (or metrics text), none
/// is a 5xx, and nothing panics.
#[tokio::test]
async fn random_requests_never_break_the_handler() {
    let engine = Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryPublisher::new()),
        Arc::new(ManualClock::new(Timestamp(1_709_251_200_000))),
    );
    let api = Api::new(
        handle(engine),
        HttpConfig {
            max_body_bytes: 2048,
            admin_enabled: true,
            admin_api_key: Some("k".into()),
            worker_api_key: None,
        },
    );
    // The job the random intake bodies create (tenant `t`, key `k`).
    let job_id = lucius_core::JobId::derive(&lucius_core::TenantId::parse("t").unwrap(), "k");
    let job = job_id.as_str();
    let segments = [
        "v1",
        "jobs",
        "steps",
        "commands",
        "admin",
        "outbox",
        "retry",
        "ack",
        "heartbeat",
        "complete",
        "fail",
        "cancel",
        "ocr",
        job,
        "",
        "%00",
        "..",
        "healthz",
        "metrics",
        "openapi.json",
        "protocols",
        "readyz",
        "x.0.1",
        "1",
    ];
    let bodies: [&[u8]; 12] = [
        b"",
        b"{}",
        b"[]",
        b"null",
        b"{\"attempt\":1}",
        b"{\"attempt\":1e999}",
        b"\xff\xff",
        b"{\"requestType\":\"demo.echo\",\"tenantId\":\"t\",\"idempotencyKey\":\"k\"}",
        b"{\"a\":",
        b"{\"status\":\"DEAD\",\"limit\":3}",
        b"{\"reason\":\"\"}",
        b"{\"attempt\":1,\"error\":\"e\",\"retryable\":true,\"result\":[1,{\"x\":null}]}",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    let queries = [
        "",
        "?status=dead",
        "?limit=7",
        "?partition=t%23202403",
        "?x",
        "?%zz",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    let templates = [
        "/v1/commands",
        "/v1/jobs/{j}",
        "/v1/jobs/{j}/cancel",
        "/v1/jobs/{j}/steps/{s}/{s}",
        "/v1/admin/outbox",
        "/v1/admin/outbox/retry",
        "/v1/admin/outbox/{s}/retry",
    ];
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..3000 {
        let path: String = if next(3) > 0 {
            let t = templates[next(templates.len())];
            let j = [job, segments[next(segments.len())]][next(2)];
            t.replacen("{j}", j, 1)
                .replacen("{s}", segments[next(segments.len())], 1)
                .replacen("{s}", segments[next(segments.len())], 1)
        } else {
            let depth = 1 + next(6);
            (0..depth)
                .map(|_| format!("/{}", segments[next(segments.len())]))
                .collect()
        };
        let uri = format!("{path}{}", queries[next(queries.len())]);
        let Ok(uri) = uri.parse::<hyper::Uri>() else {
            continue;
        };
        let mut req = Request::builder()
            .method(methods[next(methods.len())])
            .uri(uri)
            .body(Full::new(Bytes::from_static(bodies[next(bodies.len())])))
            .unwrap();
        if next(3) > 0 {
            req.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
        }
        if next(2) == 0 {
            req.headers_mut().insert("x-api-key", "k".parse().unwrap());
        }
        let res = api.handle(req).await;
        assert!(res.status().as_u16() < 500, "{}", res.status());
        *statuses.entry(res.status().as_u16()).or_default() += 1;
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        if ct == "application/json" {
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
        } else {
            assert!(ct.starts_with("text/plain"), "{ct}");
        }
    }
    // The walk reaches deep into the handler, not only the router.
    for status in [200, 202, 400, 404, 405, 409, 415, 422] {
        assert!(statuses.contains_key(&status), "{statuses:?}");
    }
}

/// A store that is down: every call fails transiently.
struct DownStore;

#[async_trait::async_trait]
impl lucius_core::Store for DownStore {
    async fn create_job(
        &self,
        _: lucius_core::NewJob,
    ) -> Result<lucius_core::CreateOutcome, lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
    async fn load_job(
        &self,
        _: &lucius_core::JobId,
    ) -> Result<Option<lucius_core::JobRecord>, lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
    async fn commit(
        &self,
        _: lucius_core::Changes,
    ) -> Result<lucius_core::Changes, lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
    async fn outbox(
        &self,
        _: &lucius_core::OutboxQuery,
    ) -> Result<Vec<lucius_core::OutboxEntry>, lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
    async fn active_jobs(
        &self,
        _: &lucius_core::Partition,
        _: Option<lucius_core::JobId>,
        _: usize,
    ) -> Result<Vec<lucius_core::JobId>, lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
    async fn partitions(&self) -> Result<Vec<lucius_core::Partition>, lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
    async fn retire_partition(
        &self,
        _: &lucius_core::Partition,
    ) -> Result<bool, lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
    async fn ended_jobs(
        &self,
        _: Timestamp,
        _: usize,
    ) -> Result<Vec<lucius_core::EndedJob>, lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
    async fn purge_job(
        &self,
        _: &lucius_core::JobId,
        _: &lucius_core::Revision,
    ) -> Result<(), lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
    async fn ping(&self) -> Result<(), lucius_core::StoreError> {
        Err(lucius_core::StoreError::transient("down"))
    }
}

#[tokio::test]
async fn a_store_that_is_down_makes_readyz_503_and_metrics_say_so() {
    let engine = Engine::new(
        Arc::new(DownStore),
        Arc::new(MemoryPublisher::new()),
        Arc::new(ManualClock::new(Timestamp(1_709_251_200_000))),
    );
    let api = Api::new(handle(engine), HttpConfig::default());
    let get = |path: &str| Request::get(path).body(Full::new(Bytes::new())).unwrap();
    let res = api.handle(get("/readyz")).await;
    assert_eq!(res.status(), 503);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "STORE_UNAVAILABLE");
    assert_eq!(api.handle(get("/healthz")).await.status(), 200);
    let res = api
        .handle(get("/v1/jobs/0f3c2a34-6a3e-8b1d-9c2e-0123456789ab"))
        .await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let res = api.handle(get("/metrics")).await;
    assert_eq!(res.status(), 200);
    let text = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("lucius_store_up 0"), "{text}");
}
