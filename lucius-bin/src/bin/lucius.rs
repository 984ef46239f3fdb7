//! `lucius`: a single node with everything — HTTP API, dispatcher and sweepers — on the
//! memory store by default. `--demo-worker` adds an in-process worker so jobs finish.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lucius_bin::config::Settings;
use lucius_bin::shutdown::Shutdown;
use lucius_bin::{demo, http, logging, loops, wiring};

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
    let settings = Settings::from_env()?;
    let wired = wiring::build(&settings, cli.demo_worker).await?;
    let (engine, metrics) = http::with_metrics(wired.engine);
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let loops = [
        tokio::spawn(loops::dispatch_all(
            engine.clone(),
            settings.dispatch_interval,
            shutdown.clone(),
        )),
        tokio::spawn(loops::sweep_all(
            engine.clone(),
            settings.sweep_interval,
            shutdown.clone(),
        )),
    ];
    let demo = wired.demo_directives.map(|rx| {
        tokio::spawn(demo::run(
            engine.clone(),
            rx,
            Duration::from_millis(cli.demo_work_ms),
        ))
    });
    tracing::info!(
        storage = ?settings.storage,
        demo_worker = cli.demo_worker,
        protocols = engine.protocols().len(),
        "lucius all-in-one starting"
    );
    let addr = cli.listen.unwrap_or(settings.http_addr);
    let served = http::serve(addr, engine, metrics, &settings, &shutdown).await;
    shutdown.trigger();
    // The loops finish their round in flight; the demo worker stops with them.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        for l in loops {
            let _ = l.await;
        }
    })
    .await;
    if let Some(d) = demo {
        d.abort();
    }
    tracing::info!("lucius stopped");
    served
}
