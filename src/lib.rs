//! # Lucius
//!
//! Durable command orchestration, to embed in a Rust service. A client sends a command;
//! Lucius validates it against its protocol, persists a job with its steps and an outbox
//! directive, answers, and drives the steps through workers with at-least-once delivery,
//! leases, retries and sweeps. Nothing accepted is lost, and every job ends.
//!
//! One dependency line, with the adapters you need as features:
//!
//! ```toml
//! lucius = { version = "0.1", features = ["http", "table", "servicebus"] }
//! ```
//!
//! | feature      | adds                                                         |
//! |--------------|--------------------------------------------------------------|
//! | (none)       | the core, the runtime ([`Lucius`], [`Worker`]), memory store  |
//! | `http`       | `lucius::http`: the HTTP API on hyper, to serve or mount in a router |
//! | `embedded`   | `lucius::embedded`: the durable store on a local SQLite file |
//! | `table`      | `lucius::table`: the Azure Table Storage store                |
//! | `servicebus` | `lucius::servicebus`: the Azure Service Bus publisher        |
//! | `testkit`    | `lucius::testkit`: the store conformance suite and fixtures   |
//!
//! ## The builder
//!
//! ```
//! use lucius::memory::MemoryStore;
//! use lucius::{Lucius, Shutdown, Worker};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The store is the one required part; without a publisher, workers pull directives
//! // (here in process; over HTTP with POST /v1/workers/poll).
//! let lucius = Lucius::builder().store(MemoryStore::new()).build()?;
//! let shutdown = Shutdown::new();
//! let loops = tokio::spawn({
//!     let (lucius, stop) = (lucius.clone(), shutdown.clone());
//!     async move { lucius.run(stop.wait()).await } // dispatch, sweep, retries
//! });
//! let worker = Worker::new(lucius.in_process().expect("no publisher given"))
//!     .fallback(|directive, _ctx| async move {
//!         Ok(serde_json::json!({"done": &*directive.step_id}))
//!     });
//! let workers = tokio::spawn(worker.run(shutdown.wait()));
//!
//! let job = lucius
//!     .submit_bytes(
//!         br#"{"requestType":"demo.echo","tenantId":"acme","idempotencyKey":"k1","payload":{}}"#,
//!         None,
//!     )
//!     .await?;
//! while !lucius.job(&job.job_id).await?.job.status.is_terminal() {
//!     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! }
//! assert_eq!(lucius.job(&job.job_id).await?.job.status, lucius::JobStatus::Succeeded);
//! shutdown.trigger();
//! loops.await?;
//! workers.await?;
//! # Ok(()) }
//! ```
//!
//! The layering follows quinn's: [`lucius_core`] is deterministic (state machines, engine,
//! ports; no IO, no clock), [`runtime`] is its tokio driver (clock, publication, loops,
//! leases, shutdown, step handlers), and adapters translate (HTTP, Table Storage,
//! Service Bus). Everything of the core is re-exported here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use lucius_core::*;
pub use lucius_runtime as runtime;
pub use lucius_runtime::{
    BuildError, Builder, CallError, Candidates, Ctx, DirectiveSource, Dispatch, HandlerResult,
    InProcess, Lucius, Owned, Settings, Shutdown, StepFailure, SystemClock, Worker, WorkerReport,
};

#[cfg(feature = "embedded")]
pub use lucius_embedded as embedded;
#[cfg(feature = "http")]
pub use lucius_http as http;
#[cfg(feature = "servicebus")]
pub use lucius_servicebus as servicebus;
#[cfg(feature = "table")]
pub use lucius_table as table;
