//! # lucius-runtime
//!
//! The tokio driver of [`lucius_core`], as `quinn` is of `quinn-proto`: the core decides,
//! the runtime makes it run. It owns the system clock, background publication after every
//! call, the outbox retry loop, dispatch (of every partition, or of lease-owned ones), the
//! sweepers, the watchdog figures, graceful shutdown, and typed step handlers. It holds no
//! business rule, reads no environment variable and speaks no HTTP: settings are a typed
//! [`Settings`] struct with documented defaults.
//!
//! ```text
//!   Lucius::builder().store(..).publisher(..).protocols(..).build()?   ─▶ Lucius (handle)
//!        submit / job / ack / heartbeat / complete / fail / cancel / retry_outbox
//!            │ each publishes what it implies (background pool)
//!        run(shutdown): outbox retry · dispatch (all | lease-owned) · sweep · watchdog
//!   Worker::new(source).handle("ocr", |directive, ctx| async { .. }).run(shutdown)
//!   no publisher: pull mode — Lucius::poll / InProcess / POST /v1/workers/poll claim
//!            directives from the store's outbox (nothing queued in memory)
//!            source: InProcess (here) · HTTP pull · Service Bus (same trait)
//! ```
//!
//! Every loop waits through the [`Clock`](lucius_core::Clock) port, so a test runs them on a
//! manual clock.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod background;
pub mod clock;
mod handle;
mod loops;
pub mod ownership;
mod pull;
pub mod settings;
pub mod shutdown;
pub mod source;
pub mod worker;

pub use background::{PUBLISHERS, QUEUE_PER_PUBLISHER};
pub use clock::SystemClock;
pub use handle::{BuildError, Builder, Lucius};
pub use lucius_core::engine::PullFilter;
pub use ownership::{escape_label, metric_header, Board};
pub use pull::PollError;
pub use settings::{Candidates, Dispatch, Owned, Settings};
pub use shutdown::Shutdown;
pub use source::{CallError, DirectiveSource, InProcess, Settlement};
pub use worker::{Ctx, HandlerResult, StepFailure, Worker, WorkerReport};
