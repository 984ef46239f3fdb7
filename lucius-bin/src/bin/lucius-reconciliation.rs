//! `lucius-reconciliation`: the dispatcher and sweepers as one-shot commands or a loop.
//!
//! ```text
//! lucius-reconciliation dispatch --partition <tenant#YYYYMM>
//! lucius-reconciliation sweep --job-id <id> --tenant <tenant> --bucket <tenant#YYYYMM>
//! lucius-reconciliation loop --partition <tenant#YYYYMM> --interval 10
//! lucius-reconciliation loop --partitions <p1,p2,…> | --discover [--interval 10]
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lucius_bin::config::Settings;
use lucius_bin::{logging, metrics_server, wiring};
use lucius_core::{JobId, Millis, OutboxQuery, OutboxStatus, Partition};
use lucius_runtime::{Candidates, Shutdown};

#[derive(Parser)]
#[command(
    name = "lucius-reconciliation",
    version,
    about = "Lucius dispatcher and sweepers"
)]
struct Cli {
    /// Log JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish the due PENDING outbox entries of one partition, once (without a bus, only
    /// report them: workers pull directives from the orchestrator).
    Dispatch {
        /// The partition, `tenant#YYYYMM`.
        #[arg(long, value_parser = parse_partition)]
        partition: Partition,
    },
    /// Sweep one job once: missing ACKs, expired leases, drift.
    Sweep {
        /// The job id.
        #[arg(long = "job-id", value_parser = parse_job)]
        job_id: JobId,
        /// The job's tenant.
        #[arg(long)]
        tenant: String,
        /// The job's partition, `tenant#YYYYMM`.
        #[arg(long, value_parser = parse_partition)]
        bucket: Partition,
    },
    /// Dispatch and sweep every `interval` seconds until SIGTERM, owning partitions through
    /// leases so several instances share the work and take over from one that dies.
    Loop {
        /// One partition, `tenant#YYYYMM` (repeatable).
        #[arg(long, value_parser = parse_partition)]
        partition: Vec<Partition>,
        /// Comma-separated partitions.
        #[arg(long, value_delimiter = ',', value_parser = parse_partition)]
        partitions: Vec<Partition>,
        /// Compete for every partition that holds jobs, rediscovered each round.
        #[arg(long, conflicts_with_all = ["partition", "partitions"])]
        discover: bool,
        /// Seconds between rounds (at most a third of LUCIUS_LEASE_DURATION).
        #[arg(long, default_value_t = 10.0)]
        interval: f64,
        /// Serve the watchdog figures (oldest pending age, lease owner and epoch per
        /// partition) as Prometheus text on this address, at /metrics.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
    },
}

fn parse_partition(s: &str) -> Result<Partition, String> {
    Partition::parse(s).map_err(|e| format!("{e}; expected tenant#YYYYMM, e.g. t1#202401"))
}

fn parse_job(s: &str) -> Result<JobId, String> {
    JobId::parse(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_json);
    lucius_bin::exit("lucius-reconciliation", run(cli.command).await)
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_env()?;
    match command {
        Command::Dispatch { partition } => {
            let lucius = wiring::build(&settings, settings.orchestrator(), false).await?;
            if lucius.pulls() {
                // No bus: workers claim directives with POST /v1/workers/poll. Publishing
                // would mark them sent into nowhere, so only report what is due — due now,
                // as pollers see it (`Engine::claim_due`): the dispatch grace holds back
                // dispatchers only, which pull mode does not run.
                let due = lucius
                    .engine()
                    .store()
                    .outbox(&OutboxQuery {
                        status: Some(OutboxStatus::Pending),
                        partition: Some(partition.clone()),
                        due_by: Some(lucius.engine().now()),
                        after: None,
                        limit: settings.engine.batch_size,
                    })
                    .await?
                    .len();
                eprintln!("no LUCIUS_SERVICEBUS_CONNECTION: workers pull directives (POST /v1/workers/poll); nothing is published");
                println!("dispatch partition={partition} due={due} published=0 retrying=0 dead=0 skipped=0 errors=0");
                return Ok(ExitCode::SUCCESS);
            }
            let r = lucius.engine().dispatch(&partition).await?;
            println!(
                "dispatch partition={partition} due={} published={} retrying={} dead={} skipped={} errors={}",
                r.due, r.published, r.retrying, r.dead, r.skipped, r.errors
            );
            Ok(if r.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Sweep {
            job_id,
            tenant,
            bucket,
        } => {
            let lucius = wiring::build(&settings, settings.orchestrator(), false).await?;
            let rec = lucius.job(&job_id).await?;
            if rec.job.tenant_id.as_str() != tenant || rec.job.partition != bucket {
                anyhow::bail!(
                    "job {job_id} belongs to tenant {} in bucket {}, not tenant {tenant} in bucket {bucket}",
                    rec.job.tenant_id,
                    rec.job.partition
                );
            }
            let (r, published) = lucius.sweep_job(&job_id).await?;
            println!(
                "sweep job={job_id} retried={} failed={} repaired={} reindexed={} published={published} errors={}",
                r.retried, r.failed, r.repaired, r.reindexed, r.errors
            );
            Ok(if r.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Loop {
            partition,
            partitions,
            discover,
            interval,
            metrics_listen,
        } => {
            if !(interval.is_finite() && interval > 0.0) {
                anyhow::bail!("--interval must be a positive number of seconds, found {interval}");
            }
            let interval = Millis::from_secs_f64(interval);
            if interval.0 * 3 > settings.ownership.lease_duration.0 {
                anyhow::bail!(
                    "--interval ({} ms) must be at most a third of LUCIUS_LEASE_DURATION ({} ms) so leases are renewed in time",
                    interval.0,
                    settings.ownership.lease_duration.0
                );
            }
            let mut fixed = partition;
            fixed.extend(partitions);
            fixed.sort();
            fixed.dedup();
            let candidates = match (discover, fixed.is_empty()) {
                (true, _) => Candidates::Discover,
                (false, false) => Candidates::Fixed(fixed),
                (false, true) => {
                    anyhow::bail!("loop needs --partition, --partitions or --discover")
                }
            };
            let runtime = settings.reconciliation(candidates, interval);
            let lucius = wiring::build(&settings, runtime, false).await?;
            let shutdown = Shutdown::new();
            shutdown.on_signals();
            if let Some(addr) = metrics_listen {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
                tokio::spawn(metrics_server::serve(
                    listener,
                    lucius.clone(),
                    shutdown.clone(),
                ));
            }
            lucius.run(shutdown.wait()).await;
            tracing::info!("reconciliation loop stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
