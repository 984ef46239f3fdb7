//! Starts the HTTP front end with the settings' limits and keys.

use std::net::SocketAddr;

use anyhow::Context as _;
use lucius_http::{Api, HttpConfig};
use lucius_runtime::Shutdown;

use crate::config::Settings;

/// The HTTP settings of `settings`.
pub fn http_config(settings: &Settings) -> HttpConfig {
    HttpConfig {
        max_body_bytes: settings.max_body_bytes,
        admin_enabled: settings.admin_enabled,
        admin_api_key: settings.admin_api_key.clone(),
        worker_api_key: settings.worker_api_key.clone(),
    }
}

/// Binds `addr` and serves `api` until shutdown, finishing requests in flight.
pub async fn serve(addr: SocketAddr, api: Api, shutdown: &Shutdown) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (LUCIUS_HTTP_ADDR or --listen)"))?;
    lucius_http::serve(listener, api, shutdown.wait()).await?;
    Ok(())
}
