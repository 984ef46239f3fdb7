//! # lucius-bin
//!
//! What the three binaries share: settings from `LUCIUS_*` variables ([`config`]), the
//! wiring of ports into an engine ([`wiring`]), the system clock, logging, graceful
//! shutdown and the background loops.
//!
//! ```text
//!   env ─▶ Settings ─▶ wiring::build ─▶ Engine ─┬─▶ lucius_http::run (orchestrator, lucius)
//!                                               ├─▶ loops: outbox retry, dispatch, sweep
//!                                               └─▶ reconciliation commands
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod config;
pub mod demo;
pub mod http;
pub mod logging;
pub mod loops;
pub mod metrics_server;
pub mod ownership_loop;
pub mod shutdown;
pub mod wiring;

/// A binary's exit: its own code, or `2` after printing the error chain as
/// `<program>: <error>` on stderr (startup and configuration errors end here).
pub fn exit(
    program: &str,
    outcome: anyhow::Result<std::process::ExitCode>,
) -> std::process::ExitCode {
    outcome.unwrap_or_else(|e| {
        eprintln!("{program}: {e:#}");
        std::process::ExitCode::from(2)
    })
}
