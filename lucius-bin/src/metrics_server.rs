//! A minimal Prometheus endpoint for processes without the HTTP API (the reconciliation
//! loop): `GET /metrics` answers the latest watchdog figures; anything else is 404.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use lucius_runtime::{Lucius, Shutdown};

/// Serves `lucius`' watchdog figures on `listener` until shutdown.
pub async fn serve(listener: TcpListener, lucius: Lucius, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let board = lucius.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let board = board.clone();
                async move {
                    let ok = req.method() == hyper::Method::GET && req.uri().path() == "/metrics";
                    let (status, body) = if ok {
                        (StatusCode::OK, board.watchdog())
                    } else {
                        (
                            StatusCode::NOT_FOUND,
                            "not found: only GET /metrics is served here\n".to_owned(),
                        )
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
