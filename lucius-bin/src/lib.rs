//! # lucius-bin
//!
//! What the three binaries share: settings from `LUCIUS_*` variables ([`config`]), the
//! wiring of the configured store and bus into a [`Lucius`](lucius_runtime::Lucius) handle
//! ([`wiring`]), logging, the HTTP listener and the demo worker. Everything that runs —
//! clock, loops, lease ownership, publication, shutdown — is `lucius-runtime`'s.
//!
//! ```text
//!   env ─▶ config::Settings ─┬─▶ wiring::build ─▶ Lucius ─┬─▶ lucius_http::Api (orchestrator, lucius)
//!                            └─▶ lucius_runtime::Settings ─┴─▶ Lucius::run (retry, dispatch, sweep)
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod demo;
pub mod http;
pub mod logging;
pub mod metrics_server;
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
