//! [`Api`]: the request handler, a plain async function of a request to a response.
//! It routes, checks keys, content type and size, reads the body within its limit, calls
//! the engine through the runtime's [`Lucius`] handle, which publishes what each call implies.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use lucius_core::Engine;
use lucius_runtime::Lucius;
use serde::Serialize;

use crate::auth::{require_key, ADMIN_KEY_HEADER, WORKER_KEY_HEADER};
use crate::config::HttpConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::request::{check_declared_length, check_json_content_type, read_body};
use crate::routes::Route;

/// The response type of every route.
pub type HttpResponse = Response<Full<Bytes>>;

/// The HTTP front end's handler. Cheap to clone; one per server.
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) lucius: Lucius,
    pub(crate) engine: Engine,
    pub(crate) config: Arc<HttpConfig>,
    pub(crate) metrics: Arc<Metrics>,
}

/// The `route` label of requests no route matched.
const UNMATCHED: &str = "unmatched";

impl Api {
    /// A handler over `lucius` with fresh [`Metrics`] installed as its observer. Run the
    /// loops on [`Api::lucius`] so they report to the same counters.
    pub fn new(lucius: Lucius, config: HttpConfig) -> Api {
        Api::with_metrics(lucius, config, Arc::new(Metrics::new()))
    }

    /// A handler over `lucius` reporting to `metrics` (installed as its observer).
    pub fn with_metrics(lucius: Lucius, config: HttpConfig, metrics: Arc<Metrics>) -> Api {
        let lucius = lucius.with_observer(metrics.clone());
        Api {
            engine: lucius.engine().clone(),
            lucius,
            config: Arc::new(config),
            metrics,
        }
    }

    /// The metrics this handler reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The handle, with the metrics observer installed: run its loops
    /// ([`Lucius::run`]) and workers on it.
    pub fn lucius(&self) -> &Lucius {
        &self.lucius
    }

    /// The engine (with the metrics observer installed).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Directives queued for background publication or being published.
    pub fn background_tasks(&self) -> usize {
        self.lucius.publishing()
    }

    /// Directives the background publishers had no room for since start: they stayed
    /// `PENDING` and went out through the retry loop or the dispatcher instead.
    pub fn background_overflow(&self) -> usize {
        self.lucius.publish_overflow()
    }

    /// Answers one request. Never panics on any input; every refusal is a JSON error.
    pub async fn handle<B>(&self, req: Request<B>) -> HttpResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let route = Route::of(parts.uri.path());
        let label = route.as_ref().map_or(UNMATCHED, Route::template);
        let res = match route {
            None => Err(ApiError::not_found(format!(
                "no route {} {}",
                parts.method,
                truncate(parts.uri.path(), 200)
            ))),
            Some(route) => self.dispatch(route, &parts, body).await,
        };
        let res = res.unwrap_or_else(ApiError::into_response);
        let status = res.status().as_u16();
        self.metrics.record_request(label, status);
        tracing::debug!(method = %parts.method, route = label, status, "request answered");
        res
    }

    async fn dispatch<B>(
        &self,
        route: Route<'_>,
        parts: &hyper::http::request::Parts,
        body: B,
    ) -> Result<HttpResponse, ApiError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if route.is_admin() && !self.config.admin_enabled {
            return Err(ApiError::not_found("admin routes are disabled"));
        }
        let method = route.method();
        if parts.method != method {
            return Err(ApiError::method_not_allowed(route.allow()));
        }
        if route.is_admin() {
            require_key(
                &parts.headers,
                ADMIN_KEY_HEADER,
                self.config.admin_api_key.as_deref(),
            )?;
        }
        if matches!(route, Route::Worker(..) | Route::Poll) && self.config.worker_api_key.is_some()
        {
            require_key(
                &parts.headers,
                WORKER_KEY_HEADER,
                self.config.worker_api_key.as_deref(),
            )?;
        }
        let body = if method == Method::POST {
            let limit = self.config.max_body_bytes;
            check_declared_length(&parts.headers, limit)?;
            let bytes = read_body(body, limit).await?;
            check_json_content_type(&parts.headers, bytes.len())?;
            bytes
        } else {
            Bytes::new()
        };
        let query = parts.uri.query();
        match route {
            Route::Commands => self.submit(&parts.headers, &body).await,
            Route::Job(id) => self.job(id).await,
            Route::Worker(id, step, op) => self.worker(id, step, op, &body).await,
            Route::Cancel(id) => self.cancel(id, &body).await,
            Route::Poll => self.poll(&body).await,
            Route::Protocols => Ok(self.protocols()),
            Route::AdminOutbox => self.list_outbox(query).await,
            Route::AdminRetryMatching => self.retry_matching(query, &body).await,
            Route::AdminRetryOne(id) => self.retry_one(id).await,
            Route::Healthz => Ok(json(
                StatusCode::OK,
                &crate::views::Health {
                    status: "ok".into(),
                },
            )),
            Route::Readyz => self.ready().await,
            Route::Metrics => Ok(self.render_metrics().await),
            Route::OpenApi => Ok(self.openapi()),
        }
    }

    /// Hands `ids` to the background publishers; the client already has its answer.
    pub(crate) fn publish_in_background(&self, ids: Vec<lucius_core::OutboxId>) {
        self.lucius.publish_in_background(ids);
    }
}

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_bytes(status, Bytes::from(bytes)),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("the response could not be encoded: {e}"),
        )
        .into_response(),
    }
}

/// A response whose body is JSON text already.
pub(crate) fn json_bytes(status: StatusCode, body: Bytes) -> HttpResponse {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// At most `max` characters of `s`, for echoing input in messages.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
