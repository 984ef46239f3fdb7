//! `lucius-orchestrator`: the HTTP service, with its outbox retry loop when
//! `LUCIUS_OUTBOX_RETRY_ENABLED=true` (the default).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lucius_bin::config::Settings;
use lucius_bin::shutdown::Shutdown;
use lucius_bin::{http, logging, loops, wiring};

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
    let wired = wiring::build(&settings, false).await?;
    let (engine, metrics) = http::with_metrics(wired.engine);
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let retry = settings.outbox_retry_enabled.then(|| {
        tokio::spawn(loops::outbox_retry(
            engine.clone(),
            settings.outbox_retry_interval,
            shutdown.clone(),
        ))
    });
    let addr = cli.listen.unwrap_or(settings.http_addr);
    let served = http::serve(addr, engine, metrics, &settings, &shutdown).await;
    shutdown.trigger();
    if let Some(task) = retry {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    tracing::info!("lucius-orchestrator stopped");
    served
}
