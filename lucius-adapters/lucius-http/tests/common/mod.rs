//! Test harness: a real server on 127.0.0.1:0 over the memory adapters, a hyper client,
//! a switchable publisher, and store snapshots to prove refused requests change nothing.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lucius_core::memory::{ManualClock, MemoryPublisher, MemoryStore};
use lucius_core::{
    Directive, Engine, EngineConfig, JobId, JobRecord, Millis, OutboxEntry, OutboxQuery,
    OutboxStatus, PublishError, Publisher, Store, Timestamp,
};
use lucius_http::HttpConfig;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// 2024-03-01T00:00:00Z: jobs land in partition `<tenant>#202403`.
pub const START: Timestamp = Timestamp(1_709_251_200_000);
pub const ADMIN_KEY: &str = "admin-secret";
pub const WORKER_KEY: &str = "worker-secret";

/// What the test publisher does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Records the directive.
    Ok = 0,
    /// Fails permanently (the entry goes `DEAD`).
    Fail = 1,
    /// Never completes (the publish timeout fires).
    Hang = 2,
}

/// A publisher whose behaviour a test can switch.
#[derive(Clone, Default)]
pub struct TestPublisher {
    mode: Arc<AtomicU8>,
    pub inner: MemoryPublisher,
}

impl TestPublisher {
    pub fn new(mode: Mode) -> TestPublisher {
        TestPublisher {
            mode: Arc::new(AtomicU8::new(mode as u8)),
            inner: MemoryPublisher::new(),
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

#[async_trait]
impl Publisher for TestPublisher {
    async fn publish(&self, directive: &Directive) -> Result<(), PublishError> {
        match self.mode.load(Ordering::SeqCst) {
            0 => self.inner.publish(directive).await,
            1 => Err(PublishError::Permanent("test publisher refuses".into())),
            _ => std::future::pending().await,
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code of an error body, checking its shape.
    pub fn code(&self) -> String {
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string(), "error without message: {v}");
        assert!(!e["details"].is_null(), "error without details: {v}");
        e["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code: {v}"))
            .to_owned()
    }
}

/// A running server and the ports behind it.
pub struct Server {
    pub addr: SocketAddr,
    pub store: MemoryStore,
    pub publisher: TestPublisher,
    pub clock: ManualClock,
    pub engine: Engine,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// Admin on with [`ADMIN_KEY`], worker key [`WORKER_KEY`], default body limit.
pub fn keyed_config() -> HttpConfig {
    HttpConfig {
        admin_enabled: true,
        admin_api_key: Some(ADMIN_KEY.into()),
        worker_api_key: Some(WORKER_KEY.into()),
        ..HttpConfig::default()
    }
}

impl Server {
    pub async fn start(config: HttpConfig) -> Server {
        Server::start_with(config, Mode::Ok).await
    }

    pub async fn start_with(config: HttpConfig, mode: Mode) -> Server {
        let store = MemoryStore::new();
        let publisher = TestPublisher::new(mode);
        let clock = ManualClock::new(START);
        let engine = Engine::new(
            Arc::new(store.clone()),
            Arc::new(publisher.clone()),
            Arc::new(clock.clone()),
        )
        .with_config(EngineConfig {
            publish_timeout: Millis(1),
            ..EngineConfig::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let lucius = lucius_runtime::Lucius::from_engine(
            engine.clone(),
            lucius_runtime::Settings::no_loops(),
        )
        .expect("no lease-owned dispatch");
        let handle = tokio::spawn(lucius_http::run(listener, lucius, config, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            store,
            publisher,
            clock,
            engine,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// A server in pull mode (no publisher: workers poll `POST /v1/workers/poll`). Its
    /// clock is [`Server::clock`], moved forward by real sleeps so long polls time out.
    pub async fn start_pull(config: HttpConfig) -> Server {
        let store = MemoryStore::new();
        let clock = ManualClock::new(START);
        let lucius = lucius_runtime::Lucius::builder()
            .store(store.clone())
            .clock(Ticking(clock.clone()))
            .settings(lucius_runtime::Settings::no_loops())
            .build()
            .unwrap();
        assert!(lucius.pulls());
        let engine = lucius.engine().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(lucius_http::run(listener, lucius, config, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            store,
            publisher: TestPublisher::new(Mode::Ok),
            clock,
            engine,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// `POST /v1/workers/poll` with the worker key.
    pub async fn poll(&self, body: &Value) -> Resp {
        self.post_with(
            "/v1/workers/poll",
            &[("x-worker-key", WORKER_KEY.as_bytes())],
            body,
        )
        .await
    }

    /// Sends a request; `headers` are raw name/value bytes.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path))
            .body(Full::new(body.into()))
            .unwrap();
        for (k, v) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        let res = self.client.request(req).await.expect("request failed");
        let (parts, body) = res.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        self.send(
            Method::GET,
            path,
            &[("x-api-key", ADMIN_KEY.as_bytes())],
            Bytes::new(),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_with(path, &[], body).await
    }

    pub async fn post_with(&self, path: &str, headers: &[(&str, &[u8])], body: &Value) -> Resp {
        let mut h: Vec<(&str, &[u8])> = vec![(CONTENT_TYPE.as_str(), b"application/json")];
        h.extend_from_slice(headers);
        self.send(Method::POST, path, &h, body.to_string()).await
    }

    pub async fn worker(&self, job: &str, step: &str, op: &str, body: &Value) -> Resp {
        self.post_with(
            &format!("/v1/jobs/{job}/steps/{step}/{op}"),
            &[("x-worker-key", WORKER_KEY.as_bytes())],
            body,
        )
        .await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Resp {
        self.post_with(path, &[("x-api-key", ADMIN_KEY.as_bytes())], body)
            .await
    }

    /// Submits a demo `document.process` command with `key`; returns the job id.
    pub async fn submit(&self, key: &str) -> String {
        let r = self.post("/v1/commands", &command(key)).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
        r.json()["jobId"].as_str().unwrap().to_owned()
    }

    pub async fn job(&self, id: &str) -> JobRecord {
        self.store
            .load_job(&JobId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    pub async fn outbox(&self, status: Option<OutboxStatus>) -> Vec<OutboxEntry> {
        self.store
            .outbox(&OutboxQuery {
                status,
                limit: usize::MAX,
                ..OutboxQuery::default()
            })
            .await
            .unwrap()
    }

    /// Waits until no directive waits for its first publication (background publishing done).
    pub async fn settle(&self) {
        for _ in 0..500 {
            let fresh = self
                .outbox(Some(OutboxStatus::Pending))
                .await
                .iter()
                .any(|e| e.publish_attempts == 0);
            if !fresh {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("background publications did not finish");
    }

    /// Everything the store holds, plus what was published.
    pub async fn snapshot(&self) -> Snapshot {
        let outbox = self.outbox(None).await;
        let mut jobs = Vec::new();
        let mut ids: Vec<_> = outbox.iter().map(|e| e.job_id.clone()).collect();
        ids.dedup();
        for id in ids {
            jobs.push(self.store.load_job(&id).await.unwrap());
        }
        Snapshot {
            job_count: self.store.job_count(),
            outbox,
            jobs,
            published: self.publisher.inner.len(),
        }
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let h = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("server did not stop")
            .expect("server task panicked")
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(mut self) -> std::io::Result<()> {
        let h = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("server did not stop")
            .expect("server task panicked")
    }
}

/// A manual clock whose sleeps take real time and then move it forward (overlapping sleeps
/// do not add up), so waits on it end while tests can still jump it.
#[derive(Clone)]
pub struct Ticking(pub ManualClock);

impl lucius_core::Clock for Ticking {
    fn now(&self) -> Timestamp {
        lucius_core::Clock::now(&self.0)
    }
    fn sleep(&self, d: Millis) -> lucius_core::ports::Sleep {
        let manual = self.0.clone();
        let until = lucius_core::Clock::now(&manual).plus(d);
        Box::pin(async move {
            tokio::time::sleep(d.to_std()).await;
            if lucius_core::Clock::now(&manual) < until {
                manual.set(until);
            }
        })
    }
}

/// The store's content at one moment.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub job_count: usize,
    pub outbox: Vec<OutboxEntry>,
    pub jobs: Vec<Option<JobRecord>>,
    pub published: usize,
}

/// A valid `document.process` command.
pub fn command(key: &str) -> Value {
    json!({
        "requestType": "document.process",
        "tenantId": "t1",
        "idempotencyKey": key,
        "payload": {"documentUrl": "https://example.invalid/doc.pdf"},
        "steps": {"ocr": {"dpi": 300}}
    })
}
