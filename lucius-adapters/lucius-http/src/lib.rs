//! # lucius-http
//!
//! The HTTP front end of Lucius on hyper 1.x. It holds no business rules: it turns
//! requests into calls on the runtime's [`Lucius`](lucius_runtime::Lucius) handle and
//! results into JSON.
//!
//! ```text
//!  TcpListener ─▶ server::serve ─▶ Api::handle(request) ─▶ route ─▶ keys ─▶ 415/413 checks
//!                                        │                              │
//!                                        ▼                              ▼
//!                                 JSON response ◀── views ◀── Engine (submit, ack, …)
//!                                        │                              │ to_publish
//!                                        ▼                              ▼
//!                               Metrics (requests) ◀── Observer ◀── Lucius (runtime): publishes
//! ```
//!
//! - [`run`] / [`serve`]: the server loop with graceful shutdown.
//! - [`Api`]: the handler, a plain `async fn(Request) -> Response` (benchmarkable alone).
//! - [`HttpConfig`]: body limit and keys, filled by the binaries.
//! - [`Metrics`]: Prometheus counters; also the engine's [`Observer`](lucius_core::engine::Observer).
//! - [`openapi::document`]: the OpenAPI 3.1 document served at `/openapi.json`.
//!
//! Every refusal is `{"error": {"code", "message", "details"}}`; `docs/http.md` lists the
//! routes, statuses and codes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod api;
mod auth;
mod config;
mod error;
mod jobs;
mod metrics;
pub mod openapi;
mod ops;
mod pull;
mod request;
mod routes;
mod server;
pub mod views;

pub use api::{Api, HttpResponse};
pub use config::{HttpConfig, DEFAULT_MAX_BODY_BYTES};
pub use lucius_runtime::{escape_label, metric_header};
pub use metrics::{Metrics, SCRAPE_LIMIT};
pub use server::{run, serve, SHUTDOWN_GRACE};
