//! The server loop: accept connections, serve each with hyper's HTTP/1 connection, and on
//! shutdown stop accepting, let in-flight requests finish (hyper-util's graceful shutdown)
//! and give background publications a moment to land.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use lucius_runtime::Lucius;
use tokio::net::TcpListener;

use crate::api::Api;
use crate::config::HttpConfig;

/// How long shutdown waits for in-flight requests before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves the Lucius HTTP API on `listener` until `shutdown` completes, then finishes
/// in-flight requests (up to [`SHUTDOWN_GRACE`]) and returns.
///
/// Installs fresh [`crate::Metrics`] as the handle's observer; to share counters with the
/// loops of the process, build an [`Api`], run the loops on [`Api::lucius`] and call
/// [`serve`].
pub async fn run(
    listener: TcpListener,
    lucius: Lucius,
    config: HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve(listener, Api::new(lucius, config), shutdown).await
}

/// [`run`] with a ready-made handler.
pub async fn serve(
    listener: TcpListener,
    api: Api,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // One handler behind an `Arc`: a request clones a pointer, not the engine's handles.
    let api = std::sync::Arc::new(api);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP server listening");
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Running out of file descriptors must not end the server.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // A response goes out as one write; waiting to coalesce it with a next one
                // (Nagle) only adds latency to a request/response protocol.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "TCP_NODELAY could not be set");
                }
                let api = std::sync::Arc::clone(&api);
                let service = service_fn(move |req: Request<Incoming>| {
                    let api = std::sync::Arc::clone(&api);
                    async move { Ok::<_, Infallible>(api.handle(req).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    // Long polls waiting for work answer now (with what they have: nothing), so they do
    // not hold the drain for their whole wait.
    api.lucius().end_polls();
    tracing::info!("HTTP server draining in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    // Background publications are bounded by the engine's publish timeout per directive;
    // what does not land stays PENDING for the retry loop and the dispatcher.
    let publish_grace = api.engine().config().publish_timeout.to_std() * 2 + Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + publish_grace;
    while api.background_tasks() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("HTTP server stopped");
    Ok(())
}
