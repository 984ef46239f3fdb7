//! Starts the HTTP front end with the settings' limits and keys, sharing one metrics
//! registry with the process's background loops.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use lucius_core::Engine;
use lucius_http::{Api, HttpConfig, Metrics};

use crate::config::Settings;
use crate::shutdown::Shutdown;

/// The HTTP settings of `settings`.
pub fn http_config(settings: &Settings) -> HttpConfig {
    HttpConfig {
        max_body_bytes: settings.max_body_bytes,
        admin_enabled: settings.admin_enabled,
        admin_api_key: settings.admin_api_key.clone(),
        worker_api_key: settings.worker_api_key.clone(),
    }
}

/// Installs one metrics registry as `engine`'s observer; every clone made afterwards (the
/// loops' too) reports into it.
pub fn with_metrics(engine: Engine) -> (Engine, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (engine.with_observer(metrics.clone()), metrics)
}

/// Binds `addr` and serves until shutdown, finishing requests in flight.
pub async fn serve(
    addr: SocketAddr,
    engine: Engine,
    metrics: Arc<Metrics>,
    settings: &Settings,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (LUCIUS_HTTP_ADDR or --listen)"))?;
    let api = Api::with_metrics(engine, http_config(settings), metrics);
    lucius_http::serve(listener, api, shutdown.wait()).await?;
    Ok(())
}
