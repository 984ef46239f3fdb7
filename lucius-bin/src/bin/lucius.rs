//! `lucius`: a single node with everything — HTTP API, dispatcher and sweepers — on the
//! embedded store in `LUCIUS_DATA_DIR` (`./lucius-data`) by default, so jobs survive a
//! restart; `LUCIUS_STORAGE_BACKEND=memory` keeps nothing. `--demo-worker` adds an
//! in-process worker so jobs finish.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lucius_bin::config::{Settings, StorageBackend};
use lucius_bin::{demo, http, logging, wiring};
use lucius_http::Api;
use lucius_runtime::Shutdown;

#[derive(Parser)]
#[command(
    name = "lucius",
    version,
    about = "Lucius all-in-one: HTTP API, dispatcher and sweepers"
)]
struct Cli {
    /// Listen address (overrides LUCIUS_HTTP_ADDR).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Run an in-process worker that acks and completes every directive.
    #[arg(long)]
    demo_worker: bool,
    /// Milliseconds the demo worker spends on each step.
    #[arg(long, default_value_t = 200)]
    demo_work_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_json);
    lucius_bin::exit("lucius", run(cli).await.map(|()| ExitCode::SUCCESS))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_env_with_default(StorageBackend::Embedded)?;
    let lucius = wiring::build(&settings, settings.all_in_one(), cli.demo_worker).await?;
    let api = Api::new(lucius, http::http_config(&settings));
    let lucius = api.lucius().clone();
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let loops = tokio::spawn({
        let (lucius, stop) = (lucius.clone(), shutdown.clone());
        async move { lucius.run(stop.wait()).await }
    });
    let work = Duration::from_millis(cli.demo_work_ms);
    let demo = cli
        .demo_worker
        .then(|| tokio::spawn(demo::run(lucius.clone(), work, shutdown.clone())));
    tracing::info!(
        storage = ?settings.storage,
        data = %settings.data_location(),
        demo_worker = cli.demo_worker,
        protocols = lucius.engine().protocols().len(),
        "lucius all-in-one starting"
    );
    let served = http::serve(cli.listen.unwrap_or(settings.http_addr), api, &shutdown).await;
    // The loops finish their round in flight, the demo worker its steps in flight.
    shutdown.trigger();
    let _ = loops.await;
    if let Some(d) = demo {
        let _ = d.await;
    }
    tracing::info!("lucius stopped");
    served
}
