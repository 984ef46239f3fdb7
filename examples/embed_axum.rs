//! Lucius inside an existing axum service: the service keeps its own routes, Lucius's HTTP
//! API answers the rest from the same router and port, and one shutdown stops the server,
//! the loops and the workers together.
//!
//! Run: `cargo run --example embed_axum --features http` (it serves on a free port, sends
//! itself a command, waits for the job to succeed, and shuts down).

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use lucius::http::{Api, HttpConfig};
use lucius::memory::MemoryStore;
use lucius::{Lucius, Shutdown, Worker};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lucius = Lucius::builder().store(MemoryStore::new()).build()?;
    // The HTTP API installs its metrics on the handle: run everything on `api.lucius()`.
    let api = Api::new(lucius, HttpConfig::default());
    let lucius = api.lucius().clone();

    // The service's own routes, then Lucius's API (/v1/commands, /v1/jobs/…, /metrics, …).
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the host service\n" }))
        .fallback(move |req: axum::extract::Request| {
            let api = api.clone();
            async move { api.handle(req).await }
        });

    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("serving on http://{addr}");
    let server = tokio::spawn({
        let stop = shutdown.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.wait())
                .await
        }
    });
    let loops = tokio::spawn({
        let (lucius, stop) = (lucius.clone(), shutdown.clone());
        async move { lucius.run(stop.wait()).await }
    });
    let worker = Worker::new(lucius.in_process().ok_or("built with a publisher")?)
        .id("axum-worker")
        .handle(
            "echo",
            |d, _ctx| async move { Ok(json!({"echo": d.command})) },
        );
    let workers = tokio::spawn(worker.run(shutdown.wait()));

    // A client of the host service.
    let (status, hello) = call(addr, "GET", "/hello", None).await?;
    println!(
        "GET /hello -> {status} {}",
        hello.as_str().unwrap_or_default().trim()
    );
    let command = json!({
        "requestType": "demo.echo", "tenantId": "acme", "idempotencyKey": "axum-1",
        "payload": {"message": "hi"}
    });
    let (status, accepted) = call(addr, "POST", "/v1/commands", Some(command)).await?;
    println!("POST /v1/commands -> {status} {accepted}");
    let job = accepted["jobId"].as_str().ok_or("no jobId")?.to_owned();
    let mut last = Value::Null;
    for _ in 0..500 {
        let (_, view) = call(addr, "GET", &format!("/v1/jobs/{job}"), None).await?;
        last = view;
        if last["status"] == "SUCCEEDED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("GET /v1/jobs/{job} -> {}", last["status"]);

    shutdown.trigger();
    server.await??;
    loops.await?;
    let report = workers.await?;
    println!("stopped; worker {report:?}");
    if status != 202 || last["status"] != "SUCCEEDED" {
        return Err("the job did not succeed".into());
    }
    Ok(())
}

/// One HTTP/1.1 request on a fresh connection; the body as JSON (or a JSON string).
async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}
