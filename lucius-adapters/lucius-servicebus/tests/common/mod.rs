//! A fake Service Bus (the REST calls the adapter uses, with SharedAccessSignature
//! verification and injectable faults) and a fake orchestrator API over a real
//! `lucius_core::Engine`, served by one hyper server on 127.0.0.1.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lucius_core::engine::WorkerCall;
use lucius_core::memory::{ManualClock, MemoryStore};
use lucius_core::ports::Sleep;
use lucius_core::{Clock, Engine, EngineConfig, EngineError, Failure, JobId, Millis, Timestamp};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

/// The policy name the fake accepts.
pub(crate) const KEY_NAME: &str = "RootManageSharedAccessKey";
/// The key the fake verifies signatures with.
pub(crate) const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
/// The namespace the crate builds URLs with for `sb://127.0.0.1:<port>`.
pub(crate) const NAMESPACE_HOST: &str = "127-0-0-1.servicebus.windows.net";
/// Start of time in the tests' manual clock (2024-03-05).
pub(crate) const T0: Timestamp = Timestamp(1_709_596_800_000);

/// One request the fake received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// Method.
    pub(crate) method: Method,
    /// Path.
    pub(crate) path: String,
    /// Query string, if any.
    pub(crate) query: Option<String>,
    /// Headers, names lower-cased (the last value of repeated ones).
    pub(crate) headers: HashMap<String, String>,
    /// Body.
    pub(crate) body: Bytes,
    /// What the fake answered.
    pub(crate) status: u16,
}

impl Seen {
    /// A header, if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A scripted misbehaviour for the next request whose path contains `path_contains`.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Answer this status (with a Service Bus-like XML error body).
    Status(u16),
    /// Wait this long, then behave normally.
    Delay(Duration),
}

/// A message held by the fake broker.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// Body.
    pub(crate) body: Bytes,
    /// The sender's `BrokerProperties`.
    pub(crate) broker: Value,
    /// Content type.
    pub(crate) content_type: Option<String>,
    /// Custom properties (headers that are neither standard nor broker ones).
    pub(crate) custom: Vec<(String, String)>,
    /// Sequence number.
    pub(crate) seq: i64,
    /// Deliveries so far.
    pub(crate) delivery_count: i32,
}

#[derive(Default)]
struct Broker {
    /// Messages ready per entity path (`queue` or `topic/subscriptions/sub`).
    ready: HashMap<String, VecDeque<Stored>>,
    /// Locked messages per (entity path, seq, lock token).
    locked: HashMap<(String, i64, String), Stored>,
    /// Subscriptions per topic.
    subscriptions: HashMap<String, Vec<String>>,
    next_seq: i64,
}

struct State {
    seen: Mutex<Vec<Seen>>,
    faults: Mutex<Vec<(String, Fault)>>,
    broker: Mutex<Broker>,
    engine: OnceLock<Engine>,
    worker_key: Mutex<Option<String>>,
}

/// The running fake. Dropping it leaves the server task running until the runtime ends.
#[derive(Clone)]
pub(crate) struct Fake {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
}

impl Fake {
    /// Starts a fake on a free port of 127.0.0.1.
    pub(crate) async fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            seen: Mutex::default(),
            faults: Mutex::default(),
            broker: Mutex::default(),
            engine: OnceLock::new(),
            worker_key: Mutex::default(),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Fake { addr, state }
    }

    /// A connection string for this fake (the emulator form).
    pub(crate) fn connection(&self) -> String {
        self.connection_with(KEY_NAME, KEY)
    }

    /// A connection string with another key name and key.
    pub(crate) fn connection_with(&self, key_name: &str, key: &str) -> String {
        format!(
            "Endpoint=sb://127.0.0.1:{};SharedAccessKeyName={key_name};SharedAccessKey={key};UseDevelopmentEmulator=true",
            self.addr.port()
        )
    }

    /// The orchestrator base URL (same server).
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests whose path contains `part`.
    pub(crate) fn seen_at(&self, part: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.contains(part))
            .collect()
    }

    /// Scripts a fault for the next request whose path contains `path_contains`.
    pub(crate) fn fault(&self, path_contains: &str, fault: Fault) {
        self.state
            .faults
            .lock()
            .unwrap()
            .push((path_contains.to_owned(), fault));
    }

    /// Registers a subscription: messages sent to `topic` are copied to it.
    pub(crate) fn subscribe(&self, topic: &str, subscription: &str) {
        self.state
            .broker
            .lock()
            .unwrap()
            .subscriptions
            .entry(topic.to_owned())
            .or_default()
            .push(subscription.to_owned());
    }

    /// Messages ready in an entity path.
    pub(crate) fn ready(&self, entity: &str) -> Vec<Stored> {
        let b = self.state.broker.lock().unwrap();
        b.ready
            .get(entity)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of locked (in-flight) messages.
    pub(crate) fn locked(&self) -> usize {
        self.state.broker.lock().unwrap().locked.len()
    }

    /// Serves the orchestrator routes from this engine.
    pub(crate) fn serve_engine(&self, engine: Engine) {
        let _ = self.state.engine.set(engine);
    }

    /// Requires this `X-Worker-Key` on orchestrator routes.
    pub(crate) fn require_worker_key(&self, key: &str) {
        *self.state.worker_key.lock().unwrap() = Some(key.to_owned());
    }
}

/// A port nothing listens on (bound, then released).
pub(crate) async fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

/// A clock whose `now` moves only by hand, but whose `sleep` really waits (so the
/// engine's publish timeout races real IO fairly; `ManualClock::sleep` completes at once).
#[derive(Debug, Clone)]
pub(crate) struct TestClock(pub ManualClock);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        self.0.now()
    }

    fn sleep(&self, duration: Millis) -> Sleep {
        Box::pin(tokio::time::sleep(duration.to_std()))
    }
}

/// An engine over a memory store, the test clock and `publisher`.
pub(crate) fn engine(
    publisher: Arc<dyn lucius_core::Publisher>,
    publish_timeout: Millis,
) -> (Engine, MemoryStore, ManualClock) {
    let store = MemoryStore::new();
    let clock = ManualClock::new(T0);
    let engine = Engine::new(
        Arc::new(store.clone()),
        publisher,
        Arc::new(TestClock(clock.clone())),
    )
    .with_config(EngineConfig {
        publish_timeout,
        ..EngineConfig::default()
    });
    (engine, store, clock)
}

/// Why a SharedAccessSignature was refused.
pub(crate) fn verify_sas(header: &str, path: &str, now_secs: u64) -> Result<(), String> {
    let token = header
        .strip_prefix("SharedAccessSignature ")
        .ok_or("not a SharedAccessSignature")?;
    let raw: HashMap<&str, &str> = token.split('&').filter_map(|p| p.split_once('=')).collect();
    let field = |k: &str| raw.get(k).copied().ok_or(format!("no {k}"));
    let (sr, sig, se, skn) = (field("sr")?, field("sig")?, field("se")?, field("skn")?);
    let decode = |v: &str| {
        url::form_urlencoded::parse(format!("v={v}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    if skn != KEY_NAME {
        return Err(format!("unknown key name {skn}"));
    }
    let expiry: u64 = se
        .parse()
        .map_err(|_| format!("se {se:?} is not a number"))?;
    if expiry <= now_secs {
        return Err(format!("token expired at {expiry} (now {now_secs})"));
    }
    // The resource must name this namespace and be a prefix of the requested path.
    let resource = url::Url::parse(&decode(sr)).map_err(|e| format!("sr: {e}"))?;
    if resource.scheme() != "https" || resource.host_str() != Some(NAMESPACE_HOST) {
        return Err(format!(
            "sr {resource} is not an https URL of {NAMESPACE_HOST}"
        ));
    }
    if !path.starts_with(resource.path()) {
        return Err(format!("sr path {} does not cover {path}", resource.path()));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{sr}\n{se}").as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if decode(sig) != want {
        return Err("signature mismatch".into());
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let headers: HashMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut seen = Seen {
        method: parts.method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
        status: 0,
    };
    let fault = {
        let mut faults = st.faults.lock().unwrap();
        faults
            .iter()
            .position(|(p, _)| path.contains(p.as_str()))
            .map(|i| faults.remove(i).1)
    };
    let resp = match fault {
        Some(Fault::Status(code)) => xml_error(code, "injected fault"),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            route(&st, &seen).await
        }
        None => route(&st, &seen).await,
    };
    seen.status = resp.status().as_u16();
    st.seen.lock().unwrap().push(seen);
    Ok(resp)
}

async fn route(st: &State, req: &Seen) -> Response<Full<Bytes>> {
    if req.path.starts_with("/v1/") {
        return orchestrator(st, req).await;
    }
    let Some(auth) = req.header("authorization") else {
        return xml_error(401, "missing Authorization");
    };
    if let Err(why) = verify_sas(auth, &req.path, now_secs()) {
        return xml_error(401, &why);
    }
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    // …/messages/head, …/messages/{seq}/{token}, …/messages
    let n = segments.len();
    if n >= 2 && segments[n - 2] == "messages" && segments[n - 1] == "head" {
        let entity = segments[..n - 2].join("/");
        return match req.method {
            Method::POST => peek_lock(st, &entity),
            _ => xml_error(405, "method"),
        };
    }
    if n >= 3 && segments[n - 3] == "messages" {
        let entity = segments[..n - 3].join("/");
        let Ok(seq) = segments[n - 2].parse::<i64>() else {
            return xml_error(400, "bad sequence number");
        };
        let key = (entity, seq, segments[n - 1].to_owned());
        let mut b = st.broker.lock().unwrap();
        return match req.method {
            Method::DELETE => match b.locked.remove(&key) {
                Some(_) => empty(200),
                None => xml_error(404, "lock lost"),
            },
            Method::PUT => match b.locked.remove(&key) {
                Some(m) => {
                    b.ready.entry(key.0).or_default().push_front(m);
                    empty(200)
                }
                None => xml_error(404, "lock lost"),
            },
            Method::POST => match b.locked.contains_key(&key) {
                true => empty(200),
                false => xml_error(404, "lock lost"),
            },
            _ => xml_error(405, "method"),
        };
    }
    if n >= 2 && segments[n - 1] == "messages" && req.method == Method::POST {
        return send(st, &segments[..n - 1].join("/"), req);
    }
    xml_error(404, "no such operation")
}

const STANDARD_HEADERS: &[&str] = &[
    "authorization",
    "brokerproperties",
    "content-type",
    "content-length",
    "host",
    "accept",
    "accept-encoding",
    "user-agent",
    "connection",
    "transfer-encoding",
];

fn send(st: &State, entity: &str, req: &Seen) -> Response<Full<Bytes>> {
    let broker: Value = match req.header("brokerproperties") {
        Some(b) => match serde_json::from_str(b) {
            Ok(v) => v,
            Err(_) => return xml_error(400, "BrokerProperties is not JSON"),
        },
        None => json!({}),
    };
    let mut custom: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(k, _)| !STANDARD_HEADERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    custom.sort();
    let mut b = st.broker.lock().unwrap();
    b.next_seq += 1;
    let msg = Stored {
        body: req.body.clone(),
        broker,
        content_type: req.header("content-type").map(str::to_owned),
        custom,
        seq: b.next_seq,
        delivery_count: 0,
    };
    let mut targets = vec![entity.to_owned()];
    if let Some(subs) = b.subscriptions.get(entity) {
        targets = subs
            .iter()
            .map(|s| format!("{entity}/subscriptions/{s}"))
            .collect();
    }
    for t in targets {
        b.ready.entry(t).or_default().push_back(msg.clone());
    }
    empty(201)
}

fn peek_lock(st: &State, entity: &str) -> Response<Full<Bytes>> {
    let mut b = st.broker.lock().unwrap();
    let Some(mut m) = b.ready.get_mut(entity).and_then(VecDeque::pop_front) else {
        return empty(204);
    };
    m.delivery_count += 1;
    let token = format!("lock-{}-{}", m.seq, m.delivery_count);
    let mut props = m.broker.as_object().cloned().unwrap_or_default();
    // Service Bus gives every message an id (the crate cannot read one without).
    props
        .entry("MessageId")
        .or_insert_with(|| json!(format!("broker-{}", m.seq)));
    props.insert("DeliveryCount".into(), json!(m.delivery_count));
    props.insert("LockToken".into(), json!(token));
    props.insert(
        "LockedUntilUtc".into(),
        json!("Sun, 06 Nov 2095 08:49:37 GMT"),
    );
    props.insert(
        "EnqueuedTimeUtc".into(),
        json!("Tue, 05 Mar 2024 00:00:00 GMT"),
    );
    props.insert("SequenceNumber".into(), json!(m.seq));
    props.insert("State".into(), json!("Active"));
    props.insert("TimeToLive".into(), json!(86_400.0));
    let mut resp = Response::builder()
        .status(201)
        .header("BrokerProperties", Value::Object(props).to_string())
        .header(
            "Location",
            format!(
                "https://{NAMESPACE_HOST}/{entity}/messages/{}/{token}",
                m.seq
            ),
        );
    if let Some(ct) = &m.content_type {
        resp = resp.header("Content-Type", ct);
    }
    for (k, v) in &m.custom {
        resp = resp.header(k, v);
    }
    let body = m.body.clone();
    b.locked.insert((entity.to_owned(), m.seq, token), m);
    resp.body(Full::new(body)).unwrap()
}

async fn orchestrator(st: &State, req: &Seen) -> Response<Full<Bytes>> {
    if let Some(key) = st.worker_key.lock().unwrap().clone() {
        if req.header("x-worker-key") != Some(key.as_str()) {
            return json_resp(
                401,
                json!({"error": {"code": "unauthorized", "message": "bad X-Worker-Key"}}),
            );
        }
    }
    let Some(engine) = st.engine.get() else {
        return json_resp(200, json!({}));
    };
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let ["v1", "jobs", job, "steps", step, op] = segs[..] else {
        return json_resp(404, json!({"error": {"code": "not_found"}}));
    };
    let body = req.json();
    let Some(attempt) = body["attempt"].as_u64().and_then(|a| u32::try_from(a).ok()) else {
        return json_resp(
            400,
            json!({"error": {"code": "invalid", "message": "attempt"}}),
        );
    };
    let Ok(job_id) = JobId::parse(job) else {
        return json_resp(404, json!({"error": {"code": "not_found"}}));
    };
    let call = WorkerCall {
        job_id: &job_id,
        step_id: step,
        attempt,
        worker_id: body["workerId"].as_str(),
    };
    let result = match op {
        "ack" => engine.ack(call).await.map(|_| Vec::new()),
        "heartbeat" => engine.heartbeat(call).await.map(|_| Vec::new()),
        "complete" => engine
            .complete(call, body["result"].clone())
            .await
            .map(|o| o.to_publish),
        "fail" => engine
            .fail(
                call,
                Failure {
                    error: body["error"].as_str().unwrap_or_default().to_owned(),
                    retryable: body["retryable"].as_bool().unwrap_or(false),
                },
            )
            .await
            .map(|o| o.to_publish),
        _ => return json_resp(404, json!({"error": {"code": "not_found"}})),
    };
    match result {
        Ok(to_publish) => {
            engine.publish_all(&to_publish).await;
            json_resp(200, json!({"jobId": job, "stepId": step}))
        }
        Err(e) => {
            let status = match e {
                EngineError::JobNotFound(_) | EngineError::StepNotFound { .. } => 404,
                EngineError::Transition(_) => 409,
                _ => 503,
            };
            json_resp(
                status,
                json!({"error": {"code": "refused", "message": e.to_string()}}),
            )
        }
    }
}

fn empty(status: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn json_resp(status: u16, v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn xml_error(status: u16, detail: &str) -> Response<Full<Bytes>> {
    let body = format!("<Error><Code>{status}</Code><Detail>{detail}</Detail></Error>");
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
