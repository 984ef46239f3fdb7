//! `lucius-reconciliation`: the dispatcher and sweepers as one-shot commands or a loop.
//!
//! ```text
//! lucius-reconciliation dispatch --partition <tenant#YYYYMM>
//! lucius-reconciliation sweep --job-id <id> --tenant <tenant> --bucket <tenant#YYYYMM>
//! lucius-reconciliation loop --partition <tenant#YYYYMM> --interval 10
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lucius_bin::config::Settings;
use lucius_bin::shutdown::Shutdown;
use lucius_bin::{logging, loops, wiring};
use lucius_core::{JobId, Millis, Partition};

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
    /// Publish the due PENDING outbox entries of one partition, once.
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
    /// Dispatch and sweep a partition every `interval` seconds until SIGTERM.
    Loop {
        /// The partition, `tenant#YYYYMM`.
        #[arg(long, value_parser = parse_partition)]
        partition: Partition,
        /// Seconds between rounds.
        #[arg(long, default_value_t = 10.0)]
        interval: f64,
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
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lucius-reconciliation: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_env()?;
    let engine = wiring::build(&settings, false).await?.engine;
    match command {
        Command::Dispatch { partition } => {
            let r = engine.dispatch(&partition).await?;
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
            let rec = engine.job(&job_id).await?;
            if rec.job.tenant_id.as_str() != tenant || rec.job.partition != bucket {
                anyhow::bail!(
                    "job {job_id} belongs to tenant {} in bucket {}, not tenant {tenant} in bucket {bucket}",
                    rec.job.tenant_id,
                    rec.job.partition
                );
            }
            let o = engine.sweep_job(&job_id).await?;
            let published = engine.publish_all(&o.to_publish).await;
            let r = o.value;
            println!(
                "sweep job={job_id} retried={} failed={} repaired={} published={published} errors={}",
                r.retried, r.failed, r.repaired, r.errors
            );
            Ok(if r.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Loop {
            partition,
            interval,
        } => {
            if !(interval.is_finite() && interval > 0.0) {
                anyhow::bail!("--interval must be a positive number of seconds, found {interval}");
            }
            let shutdown = Shutdown::new();
            shutdown.on_signals();
            tracing::info!(%partition, interval, "reconciliation loop started");
            loops::every(Millis::from_secs_f64(interval), shutdown, || async {
                if let Err(e) = loops::partition_round(&engine, &partition).await {
                    tracing::warn!(%partition, error = %e, "round failed");
                }
            })
            .await;
            tracing::info!("reconciliation loop stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
