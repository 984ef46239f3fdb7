//! The binaries as a user runs them: real processes, real sockets, real adapters.
//! - `lucius` with `LUCIUS_SERVICEBUS_CONNECTION` publishes through the Service Bus
//!   adapter to an in-test endpoint that verifies the SAS signature;
//! - `lucius` on `ledger` (Azurite) is killed with SIGKILL mid-job, restarted, and
//!   finishes the job;
//! - `lucius` on its default, the embedded store, keeps a job across a stop and a
//!   restart on the same `LUCIUS_DATA_DIR`, and a second node on that directory is
//!   refused;
//! - `examples/worker.py`, a Python worker, pulls directives from a node with no bus and
//!   finishes its jobs.

#[path = "../../lucius-adapters/lucius-servicebus/tests/common/mod.rs"]
mod fake_bus;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(port: u16, env: &[(&str, String)], args: &[&str]) -> Node {
    start_logging(port, env, args, Stdio::null()).await
}

/// [`start`], with the node's log (stdout) going to `log`.
async fn start_logging(port: u16, env: &[(&str, String)], args: &[&str], log: Stdio) -> Node {
    // `lucius` defaults to the embedded store in ./lucius-data: a test names its storage
    // or a temporary directory, so none writes into the repository.
    assert!(
        env.iter()
            .any(|(k, _)| *k == "LUCIUS_STORAGE_BACKEND" || *k == "LUCIUS_DATA_DIR"),
        "a test must set LUCIUS_STORAGE_BACKEND or LUCIUS_DATA_DIR"
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lucius"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(log)
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let node = Node {
        child: cmd.spawn().expect("lucius starts"),
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok((200, _)) = http(port, "GET", "/healthz", None).await {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("lucius did not answer /healthz on port {port}");
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}

async fn submit(port: u16, key: &str) -> String {
    let (status, body) = http(
        port,
        "POST",
        "/v1/commands",
        Some(
            json!({"requestType": "document.process", "tenantId": "acme", "idempotencyKey": key,
                    "payload": {"documentUrl": "https://example.test/a.pdf"}}),
        ),
    )
    .await
    .expect("submit");
    assert_eq!(status, 202, "{body}");
    body["jobId"].as_str().expect("jobId").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lucius_publishes_through_service_bus() {
    let fake = fake_bus::Fake::start().await;
    let node = start(
        free_port(),
        &[
            ("LUCIUS_SERVICEBUS_CONNECTION", fake.connection()),
            ("LUCIUS_STORAGE_BACKEND", "memory".to_owned()),
        ],
        &[],
    )
    .await;
    let job = submit(node.port, "sb-1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = fake.seen_at("/lucius.ocr/messages");
        if let Some(req) = sent.first() {
            assert_eq!(req.status, 201, "the endpoint accepted the signature");
            let broker: Value =
                serde_json::from_str(req.header("brokerproperties").unwrap_or("{}"))
                    .unwrap_or(Value::Null);
            assert_eq!(broker["MessageId"], json!(format!("{job}.0.1")));
            assert_eq!(req.json()["jobId"], json!(job));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no message reached the Service Bus endpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The publication is recorded right after the broker accepts it.
    loop {
        let (_, view) = http(node.port, "GET", &format!("/v1/jobs/{job}"), None)
            .await
            .unwrap();
        if view["steps"][0]["status"] == json!("INITIATED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publication never recorded: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const FAST_PROTOCOL: &str = r#"{"protocols": [{"requestType": "document.process", "steps": [
  {"stepId": "ocr", "topic": "lucius.ocr", "ackTimeoutSeconds": 1, "leaseDurationSeconds": 2},
  {"stepId": "embed", "topic": "lucius.embed", "ackTimeoutSeconds": 1, "leaseDurationSeconds": 2},
  {"stepId": "index", "topic": "lucius.index", "ackTimeoutSeconds": 1, "leaseDurationSeconds": 2}]}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_node_killed_mid_job_finishes_it_after_restart() {
    let conn = std::env::var("LUCIUS_TEST_TABLE_CONNECTION")
        .unwrap_or_else(|_| "UseDevelopmentStorage=true".into());
    if conn == "UseDevelopmentStorage=true"
        && std::net::TcpStream::connect("127.0.0.1:10002").is_err()
    {
        panic!(
            "Azurite is not running on 127.0.0.1:10002{}: start it with scripts/azurite.sh start (scripts/test.sh does)",
            if std::env::var_os("CI").is_some() { " in CI" } else { "" }
        );
    }
    let dir = std::env::temp_dir().join(format!("lucius-bin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let protocols = dir.join("protocols.json");
    std::fs::write(&protocols, FAST_PROTOCOL).unwrap();
    let table = format!("Ledger{}x{}", std::process::id(), free_port());
    let env = vec![
        ("LUCIUS_STORAGE_BACKEND", "ledger".to_owned()),
        ("LUCIUS_TABLE_CONNECTION", conn),
        ("LUCIUS_LEDGER_TABLE", table),
        ("LUCIUS_PROTOCOLS_FILE", protocols.display().to_string()),
        ("LUCIUS_SWEEP_INTERVAL", "0.2".to_owned()),
        ("LUCIUS_DISPATCH_INTERVAL", "0.2".to_owned()),
    ];
    let port = free_port();
    let mut first = start(port, &env, &[]).await;
    let job = submit(port, "crash-1").await;
    // A worker finishes the first step; then the node dies without a chance to clean up.
    let call = json!({"attempt": 1, "workerId": "w"});
    let (s, _) = http(
        port,
        "POST",
        &format!("/v1/jobs/{job}/steps/ocr/ack"),
        Some(call.clone()),
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    let (s, _) = http(
        port,
        "POST",
        &format!("/v1/jobs/{job}/steps/ocr/complete"),
        Some(call),
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    first.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let _ = first.child.wait();
    drop(first);

    // Restarted with a worker: the directives lost with the first process are retried by
    // the sweeper after their ACK timeout and the job completes.
    let second = start(port, &env, &["--demo-worker", "--demo-work-ms", "10"]).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, view) = http(second.port, "GET", &format!("/v1/jobs/{job}"), None)
            .await
            .unwrap();
        if view["status"] == json!("SUCCEEDED") {
            assert_eq!(view["steps"][0]["attempt"], json!(1), "ocr was not redone");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job did not finish after restart: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends SIGTERM and waits (at most 20 s) for a clean exit.
fn stop(node: &mut Node) {
    let pid = node.child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "SIGTERM to {pid}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = node.child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "lucius exited with {status} after SIGTERM"
            );
            return;
        }
        assert!(Instant::now() < deadline, "lucius did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lucius_keeps_its_jobs_across_a_restart_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let protocols = tmp.path().join("protocols.json");
    std::fs::write(&protocols, FAST_PROTOCOL).unwrap();
    let env = vec![
        ("LUCIUS_DATA_DIR", data.display().to_string()),
        ("LUCIUS_PROTOCOLS_FILE", protocols.display().to_string()),
        ("LUCIUS_SWEEP_INTERVAL", "0.2".to_owned()),
        ("LUCIUS_DISPATCH_INTERVAL", "0.2".to_owned()),
    ];
    let port = free_port();
    let log_path = tmp.path().join("first.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut first = start_logging(
        port,
        &[env.clone(), vec![("RUST_LOG", "info".to_owned())]].concat(),
        &[],
        Stdio::from(log),
    )
    .await;
    let job = submit(port, "durable-1").await;
    let (status, before) = http(port, "GET", &format!("/v1/jobs/{job}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{before}");

    // A second node on the same directory is refused, naming the variable and why.
    let second = Command::new(env!("CARGO_BIN_EXE_lucius"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("LUCIUS_DATA_DIR", &data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .output()
        .expect("a second lucius runs");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains("LUCIUS_DATA_DIR") && err.contains("locked by another process"),
        "{err}"
    );

    stop(&mut first);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let canonical = std::fs::canonicalize(&data).unwrap();
    assert!(
        log.contains(&canonical.display().to_string()),
        "lucius logs where its data lives: {log}"
    );
    drop(first);

    // Restarted with a worker: the directive the first node published to nowhere is
    // retried after its ACK timeout, and the job finishes on the embedded store.
    let again = start(port, &env, &["--demo-worker", "--demo-work-ms", "10"]).await;
    let (status, after) = http(again.port, "GET", &format!("/v1/jobs/{job}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "the job survived the restart: {after}");
    // The same job (its publication may have been recorded after the first read).
    for field in ["jobId", "createdAt", "requestType", "tenantId", "payload"] {
        assert_eq!(after[field], before[field], "{field}: {after}");
    }
    assert_eq!(
        after["steps"][0]["directiveId"],
        before["steps"][0]["directiveId"]
    );
    // The client's retry finds the same job, not a new one.
    assert_eq!(submit(again.port, "durable-1").await, job);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, view) = http(again.port, "GET", &format!("/v1/jobs/{job}"), None)
            .await
            .unwrap();
        if view["status"] == json!("SUCCEEDED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job did not finish after restart: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 14's crash test: `lucius` on the embedded store under concurrent intake (with its
/// demo worker moving jobs along) is killed with SIGKILL and restarted on the same
/// directory. Every command answered `202` finishes; a command cut off before its answer
/// either does not exist or finishes too — never half a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_killed_under_load_loses_nothing_it_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let protocols = tmp.path().join("protocols.json");
    std::fs::write(&protocols, FAST_PROTOCOL).unwrap();
    let env = vec![
        (
            "LUCIUS_DATA_DIR",
            tmp.path().join("data").display().to_string(),
        ),
        ("LUCIUS_PROTOCOLS_FILE", protocols.display().to_string()),
        ("LUCIUS_SWEEP_INTERVAL", "0.2".to_owned()),
        ("LUCIUS_DISPATCH_INTERVAL", "0.2".to_owned()),
    ];
    let port = free_port();
    let mut first = start(port, &env, &["--demo-worker", "--demo-work-ms", "5"]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut accepted, mut cut) = (Vec::new(), Vec::new());
                let mut k = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let key = format!("load-{c}-{k}");
                    k += 1;
                    let body = json!({"requestType": "document.process", "tenantId": "acme",
                        "idempotencyKey": key, "payload": {"documentUrl": "https://example.test/a.pdf"}});
                    match http(port, "POST", "/v1/commands", Some(body)).await {
                        Ok((202, v)) => accepted.push((key, v["jobId"].as_str().unwrap().to_owned())),
                        _ => cut.push(key),
                    }
                }
                (accepted, cut)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    first.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let _ = first.child.wait();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut accepted, mut cut) = (Vec::new(), Vec::new());
    for c in clients {
        let (a, x) = c.await.unwrap();
        accepted.extend(a);
        cut.extend(x);
    }
    drop(first);
    eprintln!(
        "killed under load: {} commands accepted, {} cut off",
        accepted.len(),
        cut.len()
    );
    assert!(
        accepted.len() >= 20,
        "only {} commands accepted before the kill",
        accepted.len()
    );

    let again = start(port, &env, &["--demo-worker", "--demo-work-ms", "5"]).await;
    // A command cut off before its answer: absent (404) or a whole job that finishes.
    let mut cut_jobs = Vec::new();
    for key in &cut {
        let id = lucius_core::JobId::derive(&lucius_core::TenantId::parse("acme").unwrap(), key);
        let (status, view) = http(again.port, "GET", &format!("/v1/jobs/{id}"), None)
            .await
            .unwrap();
        match status {
            404 => {}
            200 => {
                assert_eq!(view["steps"].as_array().map(Vec::len), Some(3), "{view}");
                cut_jobs.push(id.to_string());
            }
            other => panic!("GET of a cut-off command's job: {other} {view}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut waiting: Vec<String> = accepted
        .iter()
        .map(|(_, id)| id.clone())
        .chain(cut_jobs)
        .collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for id in waiting {
            let (status, view) = http(again.port, "GET", &format!("/v1/jobs/{id}"), None)
                .await
                .unwrap();
            assert_eq!(status, 200, "an accepted job was lost: {id} {view}");
            assert_ne!(view["status"], json!("FAILED"), "{view}");
            if view["status"] != json!("SUCCEEDED") {
                still.push(id);
            }
        }
        waiting = still;
        assert!(
            Instant::now() < deadline,
            "{} accepted jobs did not finish after the restart",
            waiting.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A worker in another process and another language: `examples/worker.py` (Python's
/// standard library only) pulls directives from a `lucius` node with no bus, acks,
/// heartbeats and completes them, and the jobs succeed with its results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_pulls_and_finishes_jobs() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    assert!(
        Command::new(&python).arg("--version").output().is_ok(),
        "{python} is required for examples/worker.py (set PYTHON to another interpreter)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "LUCIUS_DATA_DIR",
            tmp.path().join("data").display().to_string(),
        ),
        ("LUCIUS_WORKER_API_KEY", "py-secret".to_owned()),
    ];
    let node = start(free_port(), &env, &[]).await;
    let jobs = [
        submit(node.port, "py-1").await,
        submit(node.port, "py-2").await,
    ];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/worker.py");
    let mut worker = Command::new(&python)
        .arg(script)
        .args(["--url", &format!("http://127.0.0.1:{}", node.port)])
        .args(["--worker-id", "py-test", "--exit-after", "6"])
        .args(["--work-seconds", "0.05", "--wait-seconds", "2"])
        .env("LUCIUS_WORKER_API_KEY", "py-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the Python worker starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            panic!("the Python worker did not finish 6 steps in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "worker.py exited with {status}");
    for job in &jobs {
        let (code, view) = http(node.port, "GET", &format!("/v1/jobs/{job}"), None)
            .await
            .unwrap();
        assert_eq!(code, 200);
        assert_eq!(view["status"], "SUCCEEDED", "{view}");
        for step in view["steps"].as_array().unwrap() {
            assert_eq!(step["result"]["worker"], "python", "{step}");
            assert_eq!(step["workerId"], "py-test", "{step}");
            assert_eq!(
                step["attempt"], 1,
                "no directive needed a second attempt: {step}"
            );
        }
    }
    // The poll route refuses a worker without the key, like every worker route.
    let (code, body) = http(node.port, "POST", "/v1/workers/poll", Some(json!({})))
        .await
        .unwrap();
    assert_eq!(code, 401, "{body}");
}
