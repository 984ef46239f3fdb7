//! Operational routes: `/v1/protocols`, `/readyz`, `/metrics` and `/openapi.json`
//! (`/healthz` is answered inline by the router).

use std::fmt::Write as _;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use lucius_core::protocol::ProtocolsFile;

use crate::api::{json, Api, HttpResponse};
use crate::error::ApiError;
use crate::views::Health;
use lucius_runtime::metric_header;

impl Api {
    /// `GET /v1/protocols`: the registry as a protocols document.
    pub(crate) fn protocols(&self) -> HttpResponse {
        let doc = ProtocolsFile {
            protocols: self
                .engine
                .protocols()
                .iter()
                .map(|p| p.spec.clone())
                .collect(),
        };
        json(StatusCode::OK, &doc)
    }

    /// `GET /readyz`: `200` when the store answers, else `503 STORE_UNAVAILABLE`.
    pub(crate) async fn ready(&self) -> Result<HttpResponse, ApiError> {
        match self.engine.ready().await {
            Ok(()) => Ok(json(
                StatusCode::OK,
                &Health {
                    status: "ready".into(),
                },
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                format!("the store does not answer: {e}"),
            )),
        }
    }

    /// `GET /metrics`: Prometheus text format 0.0.4.
    pub(crate) async fn render_metrics(&self) -> HttpResponse {
        let mut text = self.metrics.render(&self.engine).await;
        // The background publishers belong to this handler, not to the shared Metrics.
        metric_header(
            &mut text,
            "lucius_background_publications",
            "gauge",
            "Directives queued or being published after the answer.",
        );
        let _ = writeln!(
            text,
            "lucius_background_publications {}",
            self.background_tasks()
        );
        metric_header(
            &mut text,
            "lucius_background_overflow_total",
            "counter",
            "Directives left PENDING for the retry loop and the dispatcher because every background queue was full.",
        );
        let _ = writeln!(
            text,
            "lucius_background_overflow_total {}",
            self.background_overflow()
        );
        let mut res = Response::new(Full::new(Bytes::from(text)));
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        res
    }

    /// `GET /openapi.json`.
    pub(crate) fn openapi(&self) -> HttpResponse {
        let mut res = Response::new(Full::new(crate::openapi::document_bytes()));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    }
}
