//! `lucius-orchestrator`: the HTTP service, with its outbox retry loop when
//! `LUCIUS_OUTBOX_RETRY_ENABLED=true` (the default).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use lucius_bin::config::Settings;
use lucius_bin::{http, logging, wiring};
use lucius_http::Api;
use lucius_runtime::Shutdown;

#[derive(Parser)]
#[command(
    name = "lucius-orchestrator",
    version,
    about = "Lucius HTTP orchestrator"
)]
struct Cli {
    /// Listen address (overrides LUCIUS_HTTP_ADDR).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_json);
    lucius_bin::exit(
        "lucius-orchestrator",
        run(cli).await.map(|()| ExitCode::SUCCESS),
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let lucius = wiring::build(&settings, settings.orchestrator(), false).await?;
    let api = Api::new(lucius, http::http_config(&settings));
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let loops = tokio::spawn({
        let (lucius, stop) = (api.lucius().clone(), shutdown.clone());
        async move { lucius.run(stop.wait()).await }
    });
    let served = http::serve(cli.listen.unwrap_or(settings.http_addr), api, &shutdown).await;
    shutdown.trigger();
    let _ = loops.await;
    tracing::info!("lucius-orchestrator stopped");
    served
}
