//! The load benchmark: in one run, with one Rust hyper client, it measures a bare hyper
//! hello-world server and `POST /v1/commands` on `lucius_http::run` (memory store, pull
//! mode as the node runs with no bus), prints their ratio, then intake at half the saturating rate, then durable
//! intake on the embedded store (its ratio to memory intake), then jobs/s end to end with
//! HTTP workers pulling their directives (embedded store), then how fast
//! one dispatcher drains a pre-filled partition, then the `lucius` binary's intake and
//! peak resident memory on the memory store and on the embedded store, then resident
//! bytes per retained job.
//!
//! Run: `cargo bench --bench load`. Settings (environment):
//! - `LUCIUS_BENCH_SECS` (5): measured seconds per load phase (each after a 1 s warm-up);
//! - `LUCIUS_BENCH_CONNS` (32): client connections;
//! - `LUCIUS_BENCH_SERVER_THREADS` (1) / `LUCIUS_BENCH_CLIENT_THREADS` (1): tokio workers;
//! - `LUCIUS_BENCH_CLIENT_SPIN` (1): keep the client's workers awake while a phase runs
//!   (`0`: let them sleep between responses; see docs/benchmarks.md for why it matters);
//! - `LUCIUS_BENCH_DISPATCH` (20000): pending directives pre-filled for the dispatcher;
//! - `LUCIUS_BENCH_JOBS` (100000): jobs retained for the memory figure;
//! - `LUCIUS_BENCH_MILLION=1`: also measure memory at 1,000,000 jobs;
//! - `LUCIUS_BENCH_RETENTION_LOAD` (0: skipped): seconds of steady load on `lucius
//!   --demo-worker` (memory store) with `LUCIUS_RETENTION=LUCIUS_BENCH_RETENTION_KEEP` (60)
//!   at `LUCIUS_BENCH_RETENTION_RATE` (300) commands/s, its resident size sampled every 15 s;
//! - `LUCIUS_BENCH_BIN`: the `lucius` binary to load (default: `target/release/lucius` if
//!   built), whose intake and peak RSS are reported on each store.
//!
//! Everything stays on 127.0.0.1; every phase is bounded by its duration.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use lucius::memory::{MemoryPublisher, MemoryStore};
use lucius::validation::validate_command;
use lucius::{Engine, EngineConfig, Millis};
use lucius_http::HttpConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use lucius_runtime::SystemClock;

/// Settings read from the environment.
#[derive(Debug, Clone, Copy)]
struct Settings {
    secs: u64,
    conns: usize,
    server_threads: usize,
    client_threads: usize,
    dispatch: usize,
    jobs: usize,
    million: bool,
    spin: bool,
    /// Seconds of steady load for the retention phase (0: skipped).
    retention_load_secs: u64,
    retention_keep_secs: u64,
    retention_rate: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            secs: env_or("LUCIUS_BENCH_SECS", 5u64).clamp(1, 600),
            conns: env_or("LUCIUS_BENCH_CONNS", 32usize).clamp(1, 1024),
            server_threads: env_or("LUCIUS_BENCH_SERVER_THREADS", 1usize).clamp(1, 64),
            client_threads: env_or("LUCIUS_BENCH_CLIENT_THREADS", 1usize).clamp(1, 64),
            dispatch: env_or("LUCIUS_BENCH_DISPATCH", 20_000usize).clamp(100, 10_000_000),
            jobs: env_or("LUCIUS_BENCH_JOBS", 100_000usize).clamp(1_000, 10_000_000),
            million: std::env::var("LUCIUS_BENCH_MILLION").is_ok_and(|v| v == "1"),
            spin: std::env::var("LUCIUS_BENCH_CLIENT_SPIN").map_or(true, |v| v != "0"),
            retention_load_secs: env_or("LUCIUS_BENCH_RETENTION_LOAD", 0u64).min(3_600),
            retention_keep_secs: env_or("LUCIUS_BENCH_RETENTION_KEEP", 60u64).clamp(1, 3_600),
            retention_rate: env_or("LUCIUS_BENCH_RETENTION_RATE", 300f64).clamp(1.0, 100_000.0),
        }
    }
}

/// A `document.process` command with three step payloads and the given idempotency key.
fn command(key: u64) -> Vec<u8> {
    format!(
        r#"{{"requestType":"document.process","tenantId":"acme","idempotencyKey":"k-{key}","payload":{{"documentUrl":"https://example.com/invoices/2026/11/invoice-{key}.pdf","language":"en"}},"steps":{{"ocr":{{"dpi":300}},"embed":{{"model":"mini"}},"index":{{"indexName":"invoices"}}}}}}"#
    )
    .into_bytes()
}

/// How the child process measuring memory is told what to do.
const CHILD_ENV: &str = "LUCIUS_BENCH_MEMORY_CHILD";

fn main() {
    if let Ok(jobs) = std::env::var(CHILD_ENV) {
        memory_child(jobs.parse().expect("the parent passes a job count"));
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without `--bench`: measure nothing.
        println!("load: run it with `cargo bench --bench load`");
        return;
    }
    let s = Settings::from_env();
    println!(
        "lucius load bench: {} s per phase, {} connections, server threads {}, client threads {}{}, loopback",
        s.secs,
        s.conns,
        s.server_threads,
        s.client_threads,
        if s.spin { " (spinning)" } else { " (sleeping)" }
    );
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.client_threads)
        .thread_name("client")
        .enable_all()
        .build()
        .expect("a tokio runtime");

    // 1. The ceiling: bare hyper.
    let bare = Server::start("srv-bare", s.server_threads, bare_server);
    let bare_stats = client.block_on(phase(bare.addr, &s, None, Target::Hello));
    bare.stop();
    bare_stats.print("bare hyper  GET /");

    // 2. Intake at saturation.
    //    As the `lucius` node runs with no bus: pull mode, so a `202` costs the intake write
    //    and nothing after it (workers claim directives when they poll).
    let store = MemoryStore::new();
    let handle = pulling(Arc::new(store.clone()));
    let lucius = Server::start("srv-lucius", s.server_threads, move |l, stop| async move {
        lucius_http::run(l, handle, HttpConfig::default(), async {
            let _ = stop.await;
        })
        .await
        .expect("the Lucius server runs");
    });
    let intake = client.block_on(phase(lucius.addr, &s, None, Target::Commands));
    intake.print("lucius POST /v1/commands");
    let ratio = intake.rps() / bare_stats.rps();
    println!(
        "RATIO intake/bare = {ratio:.2} (goal >= 0.5) {}",
        verdict(ratio >= 0.5)
    );

    // 3. Intake at half the saturating rate.
    let half = client.block_on(phase(
        lucius.addr,
        &s,
        Some(intake.rps() / 2.0),
        Target::Commands,
    ));
    half.print("lucius POST /v1/commands @ half rate");
    let spread = half.p99_us as f64 / half.p50_us.max(1) as f64;
    println!(
        "half-rate p99/p50 = {spread:.1} (goal <= 5) {}",
        verdict(spread <= 5.0)
    );
    lucius.stop();
    println!(
        "jobs retained by the intake server: {}; peak RSS of this process (server + client): {:.0} MiB",
        store.job_count(),
        status_kib("VmHWM:") as f64 / 1024.0
    );
    drop(store);

    // 3b. Durable intake: the same requests on the embedded store, each `202` after the
    //     group commit that made its rows durable (WAL, synchronous=FULL).
    let dir = std::env::temp_dir().join(format!("lucius-bench-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let durable_store =
        lucius_embedded::EmbeddedStore::open(&dir).expect("the embedded store opens");
    let handle = pulling(Arc::new(durable_store.clone()));
    let durable = Server::start(
        "srv-embedded",
        s.server_threads,
        move |l, stop| async move {
            lucius_http::run(l, handle, HttpConfig::default(), async {
                let _ = stop.await;
            })
            .await
            .expect("the Lucius server runs");
        },
    );
    let embedded = client.block_on(phase(durable.addr, &s, None, Target::Commands));
    durable.stop();
    embedded.print("lucius POST /v1/commands (embedded)");
    let w = durable_store.write_stats();
    println!(
        "embedded group commit: {} writes in {} transactions ({:.1} per fsync)",
        w.requests,
        w.batches,
        w.requests as f64 / w.batches.max(1) as f64
    );
    let eratio = embedded.rps() / intake.rps();
    println!(
        "RATIO embedded intake/memory intake = {eratio:.2} (goal >= 0.5) {}",
        verdict(eratio >= 0.5)
    );
    let _ = std::fs::remove_dir_all(&dir);

    // 3c. End to end with pulling workers: jobs submitted over HTTP while HTTP workers
    //     poll, ack and complete every step, on the embedded store (the durable node).
    let e2e_dir = std::env::temp_dir().join(format!("lucius-bench-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&e2e_dir);
    let e2e_store =
        lucius_embedded::EmbeddedStore::open(&e2e_dir).expect("the embedded store opens");
    let handle = pulling(Arc::new(e2e_store));
    let node = Server::start("srv-e2e", s.server_threads, move |l, stop| async move {
        lucius_http::run(l, handle, HttpConfig::default(), async {
            let _ = stop.await;
        })
        .await
        .expect("the Lucius server runs");
    });
    let jobs = (intake.rps() as usize / 20).clamp(200, 5_000);
    let (secs, finished) = client.block_on(end_to_end(node.addr, jobs, s.conns.clamp(2, 16)));
    node.stop();
    let _ = std::fs::remove_dir_all(&e2e_dir);
    println!(
        "end to end, pulling HTTP workers (embedded): {finished}/{jobs} jobs of 3 steps in {secs:.2} s = {:.0} jobs/s",
        finished as f64 / secs
    );

    // 4. Dispatch: one dispatcher draining a pre-filled partition.
    let drained = client.block_on(dispatch(s.dispatch));
    let dratio = drained / intake.rps();
    println!(
        "RATIO dispatch/intake = {dratio:.2} (goal >= 1) {}",
        verdict(dratio >= 1.0)
    );

    // 5. The `lucius` binary itself (no worker) under the same intake load, on the memory
    //    store and on its default, the embedded store: its peak resident memory, read from
    //    /proc while it still runs.
    client.block_on(binary(&s, Backend::Memory));
    client.block_on(binary(&s, Backend::Embedded));

    // 5b. Retention: the binary on the memory store, with the demo worker finishing every
    //     job and a short LUCIUS_RETENTION, under a steady load for minutes: its resident
    //     size must stop growing once the purge keeps pace.
    if s.retention_load_secs > 0 {
        client.block_on(retention(&s));
    }
    drop(client);

    // 6. Memory per retained job, each count in a fresh process.
    let mut counts = vec![s.jobs];
    if s.million {
        counts.push(1_000_000);
    }
    for n in counts {
        memory_parent(n);
    }
}

/// One HTTP/1.1 connection's requests, in turn.
struct Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("the node accepts");
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 handshake");
        tokio::spawn(conn);
        Conn(sender)
    }

    async fn post(&mut self, path: &str, body: String) -> (u16, serde_json::Value) {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", "127.0.0.1")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a well-formed request");
        let res = self.0.send_request(req).await.expect("an answer");
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.expect("a body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }
}

/// Submits `jobs` commands over HTTP while `workers` HTTP workers poll (up to 8 directives
/// a poll), ack and complete every step; returns the seconds until every job's last step
/// completed (or 60 s passed) and how many jobs finished.
async fn end_to_end(addr: SocketAddr, jobs: usize, workers: usize) -> (f64, usize) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let steps_done = Arc::new(AtomicU64::new(0));
    let total = (jobs * 3) as u64;
    let submitter = tokio::spawn(async move {
        let mut c = Conn::open(addr).await;
        for _ in 0..jobs {
            let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            let body = String::from_utf8(command(key)).expect("UTF-8");
            let (status, _) = c.post("/v1/commands", body).await;
            assert_eq!(status, 202, "intake refused a command");
        }
    });
    let mut tasks = Vec::new();
    for w in 0..workers {
        let done = steps_done.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await;
            let id = format!("bench-{w}");
            while done.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                let poll = serde_json::json!({"workerId": id, "max": 8, "waitSeconds": 0.2});
                let (status, body) = c.post("/v1/workers/poll", poll.to_string()).await;
                assert_eq!(status, 200, "poll refused: {body}");
                for d in body["directives"].as_array().into_iter().flatten() {
                    let base = format!(
                        "/v1/jobs/{}/steps/{}",
                        d["jobId"].as_str().unwrap_or(""),
                        d["stepId"].as_str().unwrap_or("")
                    );
                    let call = serde_json::json!({"attempt": d["attempt"], "workerId": id});
                    let (ack, _) = c.post(&format!("{base}/ack"), call.to_string()).await;
                    if ack != 200 {
                        continue;
                    }
                    let result = serde_json::json!({
                        "attempt": d["attempt"], "workerId": id, "result": {"ok": true}
                    });
                    let (status, _) = c
                        .post(&format!("{base}/complete"), result.to_string())
                        .await;
                    if status == 200 {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let _ = submitter.await;
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    (secs, (steps_done.load(Ordering::Relaxed) / 3) as usize)
}

/// A handle in pull mode (no publisher) over `store`, running no loops.
fn pulling(store: Arc<dyn lucius_core::Store>) -> lucius_runtime::Lucius {
    lucius_runtime::Lucius::builder()
        .store_arc(store)
        .settings(lucius_runtime::Settings::no_loops())
        .build()
        .expect("a store is all pull mode needs")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "[met]"
    } else {
        "[NOT met]"
    }
}

/// A server on its own thread and tokio runtime, so client and server never share workers.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Server {
    /// `name` names the runtime's threads (`perf report --comm NAME` isolates a server).
    fn start<F, Fut>(name: &'static str, threads: usize, serve: F) -> Server
    where
        F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        std_listener.set_nonblocking(true).expect("non-blocking");
        let addr = std_listener.local_addr().expect("a local address");
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("a tokio listener");
                serve(listener, stopped).await;
            });
        });
        Server { addr, stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().expect("the server thread ends cleanly");
    }
}

/// hyper's hello world: the practical ceiling of the stack on this machine.
async fn bare_server(listener: TcpListener, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"Hello, World!"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = &mut stop => break,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Hello,
    Commands,
}

/// The keys of the commands sent; unique over the whole run so every POST creates a job.
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

impl Target {
    fn request(self) -> Request<Full<Bytes>> {
        match self {
            Target::Hello => Request::builder()
                .uri("/")
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::new())),
            Target::Commands => {
                let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
                Request::builder()
                    .method(Method::POST)
                    .uri("/v1/commands")
                    .header("host", "127.0.0.1")
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(command(key))))
            }
        }
        .expect("a well-formed request")
    }

    fn expected(self) -> u16 {
        match self {
            Target::Hello => 200,
            Target::Commands => 202,
        }
    }
}

/// Results of one phase.
struct Stats {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    p50_us: u32,
    p99_us: u32,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<40} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  errors {}",
            self.rps(),
            self.p50_us,
            self.p99_us,
            self.errors
        );
    }
}

/// A 1 s warm-up, then the measured run.
async fn phase(addr: SocketAddr, s: &Settings, rate: Option<f64>, target: Target) -> Stats {
    load(addr, s, Duration::from_secs(1), rate, target).await;
    load(addr, s, Duration::from_secs(s.secs), rate, target).await
}

/// At most this many latency samples per connection (bounds memory on long runs).
const MAX_SAMPLES: usize = 4_000_000;

/// Drives `s.conns` keep-alive connections for `duration`: closed loop when `rate` is
/// `None`, otherwise each connection sends on a fixed schedule summing to `rate` req/s
/// (the printed rate shows whether the schedule was kept).
async fn load(
    addr: SocketAddr,
    s: &Settings,
    duration: Duration,
    rate: Option<f64>,
    target: Target,
) -> Stats {
    let conns = s.conns;
    let start = Instant::now();
    let end = start + duration;
    let interval = rate.map(|r| Duration::from_secs_f64(conns as f64 / r.max(1.0)));
    let mut tasks = Vec::with_capacity(conns);
    // The client shares the machine with the server. Left idle between responses, its
    // worker sleeps, and the kernel wakes it inside the server's `writev`: a cost charged
    // to the server that a client on another machine would not impose, and that grows as
    // the server gets slower (the client idles more). A task that only yields keeps the
    // worker awake on its own core; the connections still run in turn.
    let spinners: Vec<_> = (0..if s.spin { s.client_threads } else { 0 })
        .map(|_| {
            tokio::spawn(async move {
                while Instant::now() < end {
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for c in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let Ok(stream) = TcpStream::connect(addr).await else {
                return (lat, 1);
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return (lat, 1);
            };
            tokio::spawn(conn);
            let offset = interval.map(|i| i.mul_f64(c as f64 / conns as f64));
            for i in 0u32.. {
                let sent = match (interval, offset) {
                    (Some(every), Some(offset)) => {
                        let at = start + offset + every * i;
                        if at >= end {
                            break;
                        }
                        tokio::time::sleep_until(at).await;
                        // Timed from the actual send: tokio's timer wakes up to 1 ms late,
                        // which is the client's lateness, not the server's.
                        Instant::now()
                    }
                    _ => Instant::now(),
                };
                if sent >= end || lat.len() >= MAX_SAMPLES {
                    break;
                }
                if sender.ready().await.is_err() {
                    errors += 1;
                    break;
                }
                match sender.send_request(target.request()).await {
                    Ok(res) => {
                        let ok = res.status().as_u16() == target.expected();
                        let body = res.into_body().collect().await;
                        if ok && body.is_ok() {
                            let us = sent.elapsed().as_micros();
                            lat.push(u32::try_from(us).unwrap_or(u32::MAX));
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    drop(spinners);
    for t in tasks {
        let (lat, e) = t.await.expect("a client task ends cleanly");
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Stats {
        requests: all.len() as u64,
        errors,
        elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// Pre-fills one partition with `n` PENDING directives (`Engine::submit`, no publish) and
/// times `Engine::dispatch` rounds until it is empty. Returns directives per second.
async fn dispatch(n: usize) -> f64 {
    // The pre-filled entries stand for ones whose inline publication never happened: the
    // dispatcher takes them at once instead of after the dispatch grace.
    let engine = Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryPublisher::noop()),
        Arc::new(SystemClock),
    )
    .with_config(EngineConfig {
        dispatch_grace: Millis(0),
        ..EngineConfig::default()
    });
    let mut partition = None;
    for k in 0..n as u64 {
        let cmd = validate_command(engine.protocols(), &command(k), None).expect("a valid command");
        let submitted = engine
            .submit(cmd)
            .await
            .expect("submit on the memory store");
        partition = Some(submitted.value.partition);
    }
    let partition = partition.expect("at least one job");
    let start = Instant::now();
    let mut published = 0usize;
    let mut rounds = Vec::new();
    loop {
        let t = Instant::now();
        let r = engine.dispatch(&partition).await.expect("dispatch");
        if r.due == 0 {
            break;
        }
        published += r.published;
        rounds.push((r.published, t.elapsed()));
    }
    let elapsed = start.elapsed();
    let rate = published as f64 / elapsed.as_secs_f64();
    let round_rate = |(n, d): (usize, Duration)| n as f64 / d.as_secs_f64();
    println!(
        "dispatch: {published} of {n} directives in {} rounds, {:.2} s: {rate:.0} directives/s \
         (first round {:.0}/s with {n} pending, last round {:.0}/s)",
        rounds.len(),
        elapsed.as_secs_f64(),
        rounds.first().copied().map_or(0.0, round_rate),
        rounds.last().copied().map_or(0.0, round_rate),
    );
    rate
}

/// The `lucius` binary: `LUCIUS_BENCH_BIN`, else `lucius` beside the bench's own
/// directory (`target/release/lucius`, built by `cargo build --release -p lucius-bin`).
fn lucius_binary() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("LUCIUS_BENCH_BIN") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("lucius");
    candidate.is_file().then_some(candidate)
}

/// Starts the `lucius` binary on a free loopback port with `env`, and waits until it
/// listens.
async fn start_binary(
    bin: &std::path::Path,
    args: &[&str],
    env: &[(&str, String)],
) -> Option<(std::process::Child, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--listen", &addr.to_string()])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            println!("lucius binary: could not start {}: {e}", bin.display());
            return None;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            println!("lucius binary: not listening on {addr} after 10 s");
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some((child, addr))
}

/// Runs `lucius --demo-worker` on the memory store with `LUCIUS_RETENTION` at
/// `retention_keep_secs` under `retention_rate` commands/s for `retention_load_secs`, and
/// samples its resident size every 15 s: flat once the purge keeps pace.
async fn retention(s: &Settings) {
    let Some(bin) = lucius_binary() else {
        println!("retention: skipped (no lucius binary; build it with cargo build --release -p lucius-bin)");
        return;
    };
    let env = [
        ("LUCIUS_STORAGE_BACKEND", "memory".to_owned()),
        ("LUCIUS_RETENTION", s.retention_keep_secs.to_string()),
    ];
    // The demo worker completes each step at once: the load is what the purge must keep up with.
    let args = ["--demo-worker", "--demo-work-ms", "0"];
    let Some((mut child, addr)) = start_binary(&bin, &args, &env).await else {
        return;
    };
    let pid = child.id();
    let every = Duration::from_secs(15);
    let total = Duration::from_secs(s.retention_load_secs);
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let start = Instant::now();
        while start.elapsed() < total {
            tokio::time::sleep(every).await;
            let kib = proc_status_kib(&format!("/proc/{pid}/status"), "VmRSS:");
            samples.push((start.elapsed().as_secs(), kib));
        }
        samples
    });
    let steady = Settings {
        spin: false,
        secs: s.retention_load_secs,
        ..*s
    };
    let stats = load(
        addr,
        &steady,
        total,
        Some(s.retention_rate),
        Target::Commands,
    )
    .await;
    let samples = sampler.await.unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "retention: lucius --demo-worker, memory store, LUCIUS_RETENTION={} s, {:.0} commands/s \
         for {} s ({} accepted, {} errors)",
        s.retention_keep_secs,
        stats.rps(),
        s.retention_load_secs,
        stats.requests,
        stats.errors
    );
    let line: Vec<String> = samples
        .iter()
        .map(|(t, kib)| format!("{t}s={:.0}", *kib as f64 / 1024.0))
        .collect();
    println!("retention: resident MiB every 15 s: {}", line.join(" "));
    // Flat: the last third of the samples peaks within 10% of the middle third's peak
    // (the first third is the fill before the first purge).
    let third = samples.len() / 3;
    if third > 0 {
        let peak = |part: &[(u64, u64)]| part.iter().map(|x| x.1).max().unwrap_or(0) as f64;
        let (middle, last) = (
            peak(&samples[third..2 * third]),
            peak(&samples[2 * third..]),
        );
        let growth = last / middle.max(1.0);
        println!(
            "RATIO retention last-third/middle-third peak RSS = {growth:.2} (goal <= 1.10) {}",
            verdict(growth <= 1.10)
        );
    }
}

/// The store a measured `lucius` process runs on.
#[derive(Clone, Copy)]
enum Backend {
    /// Every job retained in the process.
    Memory,
    /// `lucius`'s default: a SQLite file in a fresh temporary data directory.
    Embedded,
}

/// Runs the intake load against a `lucius` process and reports its peak RSS.
async fn binary(s: &Settings, backend: Backend) {
    let Some(bin) = lucius_binary() else {
        println!(
            "lucius binary: skipped (build it first: cargo build --release -p lucius-bin, \
             or set LUCIUS_BENCH_BIN)"
        );
        return;
    };
    let data = std::env::temp_dir().join(format!("lucius-bench-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (name, store) = match backend {
        Backend::Memory => ("memory", "memory store, every job retained"),
        Backend::Embedded => ("embedded", "embedded store, fresh data directory"),
    };
    let env = [
        ("LUCIUS_STORAGE_BACKEND", name.to_owned()),
        ("LUCIUS_DATA_DIR", data.display().to_string()),
    ];
    let Some((mut child, addr)) = start_binary(&bin, &[], &env).await else {
        return;
    };
    // The binary's runtime has a worker per core: a spinning client would take one of
    // them, so this phase lets the client sleep.
    let sleeping = Settings { spin: false, ..*s };
    let stats = phase(addr, &sleeping, None, Target::Commands).await;
    stats.print(&format!("lucius binary ({name}) POST /v1/commands"));
    let pid = child.id();
    println!(
        "lucius binary ({name}): peak RSS {:.0} MiB after a 1 s warm-up and {} measured \
         commands ({store})",
        proc_status_kib(&format!("/proc/{pid}/status"), "VmHWM:") as f64 / 1024.0,
        stats.requests
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
}

/// A value in kB from `/proc/self/status` (`VmHWM:`, `VmRSS:`).
fn status_kib(field: &str) -> u64 {
    proc_status_kib("/proc/self/status", field)
}

/// A value in kB from a `/proc/<pid>/status` file.
fn proc_status_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident bytes from `/proc/self/statm` (second field, in 4 KiB pages on x86-64 Linux).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// Runs the memory measurement in a fresh process, so the heap left by the load phases
/// neither hides nor inflates the figure.
fn memory_parent(jobs: usize) {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let out = std::process::Command::new(exe)
        .env(CHILD_ENV, jobs.to_string())
        .output()
        .expect("the memory child runs");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        println!("memory at {jobs} jobs: the child process failed");
    }
}

fn memory_child(jobs: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let store = MemoryStore::new();
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(MemoryPublisher::noop()),
        Arc::new(SystemClock),
    );
    let before = resident_bytes();
    let start = Instant::now();
    rt.block_on(async {
        for k in 0..jobs as u64 {
            engine
                .submit_bytes(&command(k), None)
                .await
                .expect("submit on the memory store");
        }
    });
    let after = resident_bytes();
    assert_eq!(store.job_count(), jobs);
    println!(
        "sizes: Job {} B, Step {} B, OutboxEntry {} B, serde_json::Value {} B (inline, before heap parts)",
        size_of::<lucius::Job>(),
        size_of::<lucius::Step>(),
        size_of::<lucius::OutboxEntry>(),
        size_of::<serde_json::Value>(),
    );
    let per_job = after.saturating_sub(before) as f64 / jobs as f64;
    println!(
        "memory at {jobs} jobs: {:.0} MiB resident for the jobs, {per_job:.0} B/job = {:.2} KiB/job \
         (goal <= 2 KiB) {} [filled in {:.1} s]",
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
        per_job / 1024.0,
        verdict(per_job <= 2048.0),
        start.elapsed().as_secs_f64()
    );
}
