//! # Lucius
//!
//! Durable command orchestration: a client sends a command, Lucius validates it against
//! its protocol, persists a job with its steps and an outbox directive, answers `202`, and
//! drives the steps through workers with at-least-once delivery, leases, retries and
//! sweeps. This facade re-exports the SDK's core ([`lucius_core`]); adapters live in their
//! own crates (`lucius-http`, `lucius-table`, `lucius-servicebus`).
//!
//! ```text
//!   client ─POST /v1/commands─▶ Engine::submit ─▶ Store (job, steps, outbox PENDING)
//!                                      │ 202
//!                                      ▼
//!                         Engine::publish ─▶ Publisher ─▶ worker ─ack/complete─▶ Engine
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use lucius_core::*;
