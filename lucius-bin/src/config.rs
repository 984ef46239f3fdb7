//! Settings from `LUCIUS_*` environment variables: typed, with the seeds' defaults, and a
//! start-up error naming the variable when a value is bad. See `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use lucius_core::engine::EngineConfig;
use lucius_core::ownership::OwnershipConfig;
use lucius_core::{Millis, PublishRetryPolicy};
use lucius_table::RetryPolicy;

/// Where jobs are stored. Unset, `lucius` uses [`StorageBackend::Embedded`] and the
/// other binaries [`StorageBackend::Memory`] (see [`Settings::from_env_with_default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    /// In process; lost on restart.
    Memory,
    /// A SQLite file in `LUCIUS_DATA_DIR`: durable on one machine, one process at a time.
    Embedded,
    /// Azure Table Storage, one table per row kind.
    Table,
    /// Azure Table Storage, one table with the job as partition.
    Ledger,
}

/// Table names for the `table` and `ledger` backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    /// `LUCIUS_JOBS_TABLE`.
    pub jobs: String,
    /// `LUCIUS_STEPS_TABLE`.
    pub steps: String,
    /// `LUCIUS_OUTBOX_TABLE`.
    pub outbox: String,
    /// `LUCIUS_IDEMPOTENCY_TABLE`.
    pub idempotency: String,
    /// `LUCIUS_JOB_INDEX_TABLE`.
    pub job_index: String,
    /// `LUCIUS_LEDGER_TABLE`.
    pub ledger: String,
}

/// Every setting the binaries read.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `LUCIUS_STORAGE_BACKEND`.
    pub storage: StorageBackend,
    /// `LUCIUS_DATA_DIR`: the embedded store's directory (default `./lucius-data`).
    pub data_dir: PathBuf,
    /// `LUCIUS_TABLE_CONNECTION` (required for `table` and `ledger`).
    pub table_connection: Option<String>,
    /// Table names.
    pub tables: TableNames,
    /// `LUCIUS_TABLE_SERVER_TIMEOUT`, `LUCIUS_TABLE_REQUEST_TIMEOUT`,
    /// `LUCIUS_TABLE_OPERATION_BUDGET`, `LUCIUS_TABLE_ATTEMPTS`: timeouts and retries of
    /// the `table` and `ledger` backends.
    pub table_retry: RetryPolicy,
    /// `LUCIUS_SERVICEBUS_CONNECTION` (none: pull mode, workers poll `POST /v1/workers/poll`).
    pub servicebus_connection: Option<String>,
    /// `LUCIUS_ADMIN_ENABLED`.
    pub admin_enabled: bool,
    /// `LUCIUS_ADMIN_API_KEY` (required when admin is enabled).
    pub admin_api_key: Option<String>,
    /// `LUCIUS_WORKER_API_KEY` (when set, worker routes require `X-Worker-Key`).
    pub worker_api_key: Option<String>,
    /// `LUCIUS_HTTP_ADDR`.
    pub http_addr: SocketAddr,
    /// `LUCIUS_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `LUCIUS_PROTOCOLS_FILE` (none: the built-in demo protocols).
    pub protocols_file: Option<String>,
    /// `LUCIUS_OUTBOX_RETRY_ENABLED`.
    pub outbox_retry_enabled: bool,
    /// `LUCIUS_OUTBOX_RETRY_INTERVAL`.
    pub outbox_retry_interval: Millis,
    /// `LUCIUS_SWEEP_INTERVAL`.
    pub sweep_interval: Millis,
    /// `LUCIUS_DISPATCH_INTERVAL`.
    pub dispatch_interval: Millis,
    /// Engine settings: publish timeout, retry delay, max attempts, batch size, grace.
    pub engine: EngineConfig,
    /// `LUCIUS_LEASE_DURATION` and `LUCIUS_LEASE_SKEW_MARGIN`.
    pub ownership: OwnershipConfig,
    /// `LUCIUS_DISPATCHER_ID` (default: host name and process id).
    pub dispatcher_id: String,
    /// `LUCIUS_IDLE_POLL_CEILING`: the longest wait between polls of an idle partition.
    pub idle_poll_ceiling: Millis,
}

/// A bad configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable at fault.
    pub var: &'static str,
    /// What was expected and what was found.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

impl std::error::Error for ConfigError {}

struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn raw(&self, var: &'static str) -> Option<String> {
        (self.get)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn string(&self, var: &'static str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_owned())
    }

    fn parse<T: FromStr>(
        &self,
        var: &'static str,
        default: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| ConfigError {
                var,
                message: format!("expected {what}, found {v:?}"),
            }),
        }
    }

    fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(var).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError {
                    var,
                    message: format!("expected true or false, found {v:?}"),
                }),
            },
        }
    }

    fn seconds(&self, var: &'static str, default: f64, min: f64) -> Result<Millis, ConfigError> {
        let s: f64 = self.parse(var, default, "a number of seconds")?;
        if !s.is_finite() || s < min {
            return Err(ConfigError {
                var,
                message: format!("expected a number of seconds of at least {min}, found {s}"),
            });
        }
        Ok(Millis::from_secs_f64(s))
    }

    fn table_name(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        let v = self.string(var, default);
        let ok = (3..=63).contains(&v.len())
            && v.chars().all(|c| c.is_ascii_alphanumeric())
            && v.starts_with(|c: char| c.is_ascii_alphabetic());
        if ok {
            Ok(v)
        } else {
            Err(ConfigError {
                var,
                message: format!("expected an Azure table name (3-63 letters and digits, starting with a letter), found {v:?}"),
            })
        }
    }
}

/// `LUCIUS_DATA_DIR`'s default: `lucius-data` in the working directory.
pub const DEFAULT_DATA_DIR: &str = "./lucius-data";

impl Settings {
    /// Reads the process environment, with `memory` as the storage default (the
    /// orchestrator's and the reconciliation's).
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_env_with_default(StorageBackend::Memory)
    }

    /// Reads the process environment; `storage` is the backend when
    /// `LUCIUS_STORAGE_BACKEND` is unset (`lucius` passes `Embedded`).
    pub fn from_env_with_default(storage: StorageBackend) -> Result<Settings, ConfigError> {
        Settings::from_lookup_with_default(&|k| std::env::var(k).ok(), storage)
    }

    /// Reads settings through `get` (tests pass a map), with `memory` as the storage
    /// default.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        Settings::from_lookup_with_default(get, StorageBackend::Memory)
    }

    /// Reads settings through `get`; `default_storage` applies when
    /// `LUCIUS_STORAGE_BACKEND` is unset.
    pub fn from_lookup_with_default(
        get: &dyn Fn(&str) -> Option<String>,
        default_storage: StorageBackend,
    ) -> Result<Settings, ConfigError> {
        let env = Env { get };
        let storage = match env
            .raw("LUCIUS_STORAGE_BACKEND")
            .map(|v| v.to_ascii_lowercase())
        {
            None => default_storage,
            Some(v) => match v.as_str() {
                "memory" => StorageBackend::Memory,
                "embedded" => StorageBackend::Embedded,
                "table" => StorageBackend::Table,
                "ledger" => StorageBackend::Ledger,
                other => {
                    return Err(ConfigError {
                        var: "LUCIUS_STORAGE_BACKEND",
                        message: format!(
                            "expected memory, embedded, table or ledger, found {other:?}"
                        ),
                    })
                }
            },
        };
        // Whether it can be created, written and locked is checked when the store opens
        // (`wiring::store`), with an error that names this variable.
        let data_dir = PathBuf::from(env.string("LUCIUS_DATA_DIR", DEFAULT_DATA_DIR));
        let table_connection = env.raw("LUCIUS_TABLE_CONNECTION");
        let on_tables = matches!(storage, StorageBackend::Table | StorageBackend::Ledger);
        if on_tables && table_connection.is_none() {
            return Err(ConfigError {
                var: "LUCIUS_TABLE_CONNECTION",
                message: "required when LUCIUS_STORAGE_BACKEND is table or ledger (e.g. UseDevelopmentStorage=true for Azurite)".into(),
            });
        }
        let admin_enabled = env.flag("LUCIUS_ADMIN_ENABLED", false)?;
        let admin_api_key = env.raw("LUCIUS_ADMIN_API_KEY");
        if admin_enabled && admin_api_key.is_none() {
            return Err(ConfigError {
                var: "LUCIUS_ADMIN_API_KEY",
                message: "required when LUCIUS_ADMIN_ENABLED=true".into(),
            });
        }
        let max_attempts: u32 = env.parse("LUCIUS_OUTBOX_MAX_ATTEMPTS", 3, "a whole number")?;
        if max_attempts == 0 {
            return Err(ConfigError {
                var: "LUCIUS_OUTBOX_MAX_ATTEMPTS",
                message: "expected at least 1, found 0".into(),
            });
        }
        let batch_size: usize =
            env.parse("LUCIUS_OUTBOX_RETRY_BATCH_SIZE", 100, "a whole number")?;
        if batch_size == 0 {
            return Err(ConfigError {
                var: "LUCIUS_OUTBOX_RETRY_BATCH_SIZE",
                message: "expected at least 1, found 0".into(),
            });
        }
        let max_body_bytes: usize =
            env.parse("LUCIUS_MAX_BODY_BYTES", 1024 * 1024, "a number of bytes")?;
        if max_body_bytes < 1024 {
            return Err(ConfigError {
                var: "LUCIUS_MAX_BODY_BYTES",
                message: format!("expected at least 1024, found {max_body_bytes}"),
            });
        }
        let table_retry = table_retry(&env)?;
        let defaults = EngineConfig::default();
        Ok(Settings {
            storage,
            data_dir,
            table_connection,
            tables: TableNames {
                jobs: env.table_name("LUCIUS_JOBS_TABLE", "LuciusJobs")?,
                steps: env.table_name("LUCIUS_STEPS_TABLE", "LuciusSteps")?,
                outbox: env.table_name("LUCIUS_OUTBOX_TABLE", "LuciusOutbox")?,
                idempotency: env.table_name("LUCIUS_IDEMPOTENCY_TABLE", "LuciusIdempotency")?,
                job_index: env.table_name("LUCIUS_JOB_INDEX_TABLE", "LuciusJobIndex")?,
                ledger: env.table_name("LUCIUS_LEDGER_TABLE", "LuciusLedger")?,
            },
            table_retry,
            servicebus_connection: env.raw("LUCIUS_SERVICEBUS_CONNECTION"),
            admin_enabled,
            admin_api_key,
            worker_api_key: env.raw("LUCIUS_WORKER_API_KEY"),
            http_addr: env.parse(
                "LUCIUS_HTTP_ADDR",
                SocketAddr::from(([0, 0, 0, 0], 8000)),
                "an address like 0.0.0.0:8000",
            )?,
            max_body_bytes,
            protocols_file: env.raw("LUCIUS_PROTOCOLS_FILE"),
            outbox_retry_enabled: env.flag("LUCIUS_OUTBOX_RETRY_ENABLED", true)?,
            outbox_retry_interval: env.seconds("LUCIUS_OUTBOX_RETRY_INTERVAL", 5.0, 0.01)?,
            sweep_interval: env.seconds("LUCIUS_SWEEP_INTERVAL", 5.0, 0.01)?,
            dispatch_interval: env.seconds("LUCIUS_DISPATCH_INTERVAL", 1.0, 0.01)?,
            engine: EngineConfig {
                publish_timeout: env.seconds("LUCIUS_OUTBOX_PUBLISH_TIMEOUT", 2.0, 0.001)?,
                publish_retry: PublishRetryPolicy {
                    delay: env.seconds("LUCIUS_OUTBOX_RETRY_DELAY", 30.0, 0.0)?,
                    max_attempts,
                },
                batch_size,
                intake_grace: env.seconds("LUCIUS_INTAKE_GRACE", 600.0, 1.0)?,
                dispatch_grace: env.seconds("LUCIUS_DISPATCH_GRACE", 5.0, 0.0)?,
                retention: {
                    let r = env.seconds("LUCIUS_RETENTION", 604_800.0, 0.0)?;
                    (r.0 > 0).then_some(r)
                },
                ..defaults
            },
            ownership: {
                let lease_duration = env.seconds("LUCIUS_LEASE_DURATION", 30.0, 1.0)?;
                let skew_margin = env.seconds("LUCIUS_LEASE_SKEW_MARGIN", 2.0, 0.0)?;
                if skew_margin >= lease_duration {
                    return Err(ConfigError {
                        var: "LUCIUS_LEASE_SKEW_MARGIN",
                        message: format!(
                            "expected less than LUCIUS_LEASE_DURATION ({} ms), found {} ms",
                            lease_duration.0, skew_margin.0
                        ),
                    });
                }
                OwnershipConfig {
                    lease_duration,
                    skew_margin,
                }
            },
            dispatcher_id: env
                .raw("LUCIUS_DISPATCHER_ID")
                .unwrap_or_else(default_dispatcher_id),
            idle_poll_ceiling: env.seconds("LUCIUS_IDLE_POLL_CEILING", 60.0, 0.01)?,
        })
    }
}

impl Settings {
    /// Where the configured backend keeps jobs, for the start-up log: the embedded
    /// store's directory (absolute once it exists), or what the other backends are.
    pub fn data_location(&self) -> String {
        match self.storage {
            StorageBackend::Embedded => std::fs::canonicalize(&self.data_dir)
                .unwrap_or_else(|_| self.data_dir.clone())
                .display()
                .to_string(),
            StorageBackend::Memory => "in process (lost when it stops)".to_owned(),
            StorageBackend::Table | StorageBackend::Ledger => "Azure Table Storage".to_owned(),
        }
    }

    /// The all-in-one's loops: every partition dispatched every `LUCIUS_DISPATCH_INTERVAL`
    /// and swept every `LUCIUS_SWEEP_INTERVAL`; one process, so no leases and no retry loop.
    pub fn all_in_one(&self) -> lucius_runtime::Settings {
        lucius_runtime::Settings::default()
            .with_dispatch(lucius_runtime::Dispatch::All {
                interval: self.dispatch_interval,
            })
            .with_sweep(Some(self.sweep_interval))
            .with_purge(self.purge_interval())
    }

    /// How often finished jobs past `LUCIUS_RETENTION` are purged: a quarter of the
    /// retention, between 1 s and 60 s (`None` when jobs are kept forever).
    pub fn purge_interval(&self) -> Option<Millis> {
        self.engine
            .retention
            .map(|r| Millis((r.0 / 4).clamp(1_000, 60_000)))
    }

    /// The orchestrator's loops: the outbox retry when `LUCIUS_OUTBOX_RETRY_ENABLED`
    /// (every `LUCIUS_OUTBOX_RETRY_INTERVAL`); dispatch and sweeps are the reconciliation's.
    /// On a store only this process sees (memory, embedded) it also purges finished jobs;
    /// on Table Storage the reconciliation loop does.
    pub fn orchestrator(&self) -> lucius_runtime::Settings {
        let own_store = matches!(
            self.storage,
            StorageBackend::Memory | StorageBackend::Embedded
        );
        lucius_runtime::Settings::no_loops()
            .with_outbox_retry(
                self.outbox_retry_enabled
                    .then_some(self.outbox_retry_interval),
            )
            .with_purge(self.purge_interval().filter(|_| own_store))
    }

    /// The reconciliation loop's: a lease-owned dispatcher named `LUCIUS_DISPATCHER_ID`
    /// competing for `candidates` every `interval`, sweeping what it owns.
    pub fn reconciliation(
        &self,
        candidates: lucius_runtime::Candidates,
        interval: Millis,
    ) -> lucius_runtime::Settings {
        let mut owned = lucius_runtime::Owned::new(self.dispatcher_id.clone(), candidates);
        owned.interval = interval;
        owned.idle_ceiling = self.idle_poll_ceiling;
        owned.ownership = self.ownership;
        lucius_runtime::Settings::no_loops()
            .with_dispatch(lucius_runtime::Dispatch::Owned(owned))
            .with_purge(self.purge_interval())
    }
}

/// The table backends' timeouts and retries. An unset client timeout follows the server
/// timeout (2 s above it) and an unset budget covers at least one request, so setting the
/// server timeout alone is enough; nonsense together (a client timeout at or below the
/// server timeout, a budget below the client timeout) names the variable at fault.
fn table_retry(env: &Env<'_>) -> Result<RetryPolicy, ConfigError> {
    let defaults = RetryPolicy::default();
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let attempts = env.parse(
        "LUCIUS_TABLE_ATTEMPTS",
        defaults.attempts,
        "a whole number of attempts",
    )?;
    let server_timeout = env
        .seconds(
            "LUCIUS_TABLE_SERVER_TIMEOUT",
            secs(defaults.server_timeout),
            0.0,
        )?
        .to_std();
    let follows_server =
        (server_timeout + std::time::Duration::from_secs(2)).max(defaults.request_timeout);
    let request_timeout = env
        .seconds("LUCIUS_TABLE_REQUEST_TIMEOUT", secs(follows_server), 0.0)?
        .to_std();
    let operation_budget = env
        .seconds(
            "LUCIUS_TABLE_OPERATION_BUDGET",
            secs(defaults.operation_budget.max(request_timeout)),
            0.0,
        )?
        .to_std();
    let policy = RetryPolicy {
        attempts,
        server_timeout,
        request_timeout,
        operation_budget,
        ..defaults
    };
    policy.validate().map_err(|e| ConfigError {
        var: e.setting.env_var(),
        message: e.message,
    })?;
    Ok(policy)
}

fn default_dispatcher_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dispatcher".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_seeds() {
        let s = from(&[]).unwrap();
        assert_eq!(s.storage, StorageBackend::Memory);
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(s.http_addr.to_string(), "0.0.0.0:8000");
        assert_eq!(s.engine.publish_timeout, Millis(2_000));
        assert_eq!(s.outbox_retry_interval, Millis(5_000));
        assert_eq!(s.engine.publish_retry.delay, Millis(30_000));
        assert_eq!(s.engine.publish_retry.max_attempts, 3);
        assert_eq!(s.max_body_bytes, 1_048_576);
        assert!(!s.admin_enabled);
        assert_eq!(s.tables.ledger, "LuciusLedger");
        assert_eq!(s.table_retry, RetryPolicy::default());
        assert_eq!(s.engine.retention, Some(Millis(604_800_000)));
        assert_eq!(s.purge_interval(), Some(Millis(60_000)));
    }

    #[test]
    fn retention_zero_keeps_jobs_forever_and_short_ones_purge_often() {
        let forever = from(&[("LUCIUS_RETENTION", "0")]).unwrap();
        assert_eq!(forever.engine.retention, None);
        assert_eq!(forever.purge_interval(), None);
        assert_eq!(forever.all_in_one().purge, None);
        let minute = from(&[("LUCIUS_RETENTION", "60")]).unwrap();
        assert_eq!(minute.engine.retention, Some(Millis(60_000)));
        assert_eq!(minute.all_in_one().purge, Some(Millis(15_000)));
        // The orchestrator purges the stores only it sees; on tables the reconciliation does.
        assert_eq!(minute.orchestrator().purge, Some(Millis(15_000)));
        let table = from(&[
            ("LUCIUS_RETENTION", "60"),
            ("LUCIUS_STORAGE_BACKEND", "table"),
            ("LUCIUS_TABLE_CONNECTION", "UseDevelopmentStorage=true"),
        ])
        .unwrap();
        assert_eq!(table.orchestrator().purge, None);
        let tiny = from(&[("LUCIUS_RETENTION", "0.5")]).unwrap();
        assert_eq!(tiny.purge_interval(), Some(Millis(1_000)));
    }

    #[test]
    fn table_timeouts_are_parsed_and_follow_each_other() {
        let secs = std::time::Duration::from_secs;
        let s = from(&[
            ("LUCIUS_TABLE_SERVER_TIMEOUT", "3"),
            ("LUCIUS_TABLE_REQUEST_TIMEOUT", "4.5"),
            ("LUCIUS_TABLE_OPERATION_BUDGET", "12"),
            ("LUCIUS_TABLE_ATTEMPTS", "2"),
        ])
        .unwrap();
        let r = s.table_retry;
        assert_eq!(r.server_timeout, secs(3));
        assert_eq!(r.request_timeout, std::time::Duration::from_millis(4_500));
        assert_eq!(r.operation_budget, secs(12));
        assert_eq!(r.attempts, 2);
        // The server timeout alone: the client timeout follows it, the budget covers it.
        let r = from(&[("LUCIUS_TABLE_SERVER_TIMEOUT", "30")])
            .unwrap()
            .table_retry;
        assert_eq!(
            (r.server_timeout, r.request_timeout, r.operation_budget),
            (secs(30), secs(32), secs(32))
        );
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn table_timeouts_that_make_no_sense_name_their_variable() {
        for (pairs, var, says) in [
            (
                &[
                    ("LUCIUS_TABLE_SERVER_TIMEOUT", "10"),
                    ("LUCIUS_TABLE_REQUEST_TIMEOUT", "8"),
                ][..],
                "LUCIUS_TABLE_REQUEST_TIMEOUT",
                "above the server timeout (10 s), found 8 s",
            ),
            (
                &[("LUCIUS_TABLE_REQUEST_TIMEOUT", "5")],
                "LUCIUS_TABLE_REQUEST_TIMEOUT",
                "above the server timeout (5 s)",
            ),
            (
                &[("LUCIUS_TABLE_SERVER_TIMEOUT", "2.5")],
                "LUCIUS_TABLE_SERVER_TIMEOUT",
                "whole seconds",
            ),
            (
                &[("LUCIUS_TABLE_SERVER_TIMEOUT", "45")],
                "LUCIUS_TABLE_SERVER_TIMEOUT",
                "at most 30",
            ),
            (
                &[("LUCIUS_TABLE_SERVER_TIMEOUT", "0")],
                "LUCIUS_TABLE_SERVER_TIMEOUT",
                "from 1 to 30",
            ),
            (
                &[("LUCIUS_TABLE_OPERATION_BUDGET", "6")],
                "LUCIUS_TABLE_OPERATION_BUDGET",
                "at least the client timeout (7 s), found 6 s",
            ),
            (
                &[("LUCIUS_TABLE_OPERATION_BUDGET", "soon")],
                "LUCIUS_TABLE_OPERATION_BUDGET",
                "a number of seconds",
            ),
            (
                &[("LUCIUS_TABLE_ATTEMPTS", "0")],
                "LUCIUS_TABLE_ATTEMPTS",
                "at least 1 attempt",
            ),
            (
                &[("LUCIUS_TABLE_ATTEMPTS", "-1")],
                "LUCIUS_TABLE_ATTEMPTS",
                "a whole number",
            ),
        ] {
            let err = from(pairs).unwrap_err();
            assert_eq!(err.var, var, "{pairs:?}: {err}");
            assert!(err.to_string().starts_with(var), "{err}");
            assert!(err.message.contains(says), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn each_binary_has_its_storage_default() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let all_in_one =
            Settings::from_lookup_with_default(&lookup(&[]), StorageBackend::Embedded).unwrap();
        assert_eq!(all_in_one.storage, StorageBackend::Embedded);
        assert_eq!(all_in_one.data_dir, PathBuf::from("./lucius-data"));
        // The variable wins over a binary's default, both ways.
        let kept = Settings::from_lookup_with_default(
            &lookup(&[("LUCIUS_STORAGE_BACKEND", "memory")]),
            StorageBackend::Embedded,
        )
        .unwrap();
        assert_eq!(kept.storage, StorageBackend::Memory);
        let s = from(&[
            ("LUCIUS_STORAGE_BACKEND", "Embedded"),
            ("LUCIUS_DATA_DIR", " /var/lib/lucius "),
        ])
        .unwrap();
        assert_eq!(s.storage, StorageBackend::Embedded);
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/lucius"));
        assert_eq!(s.table_connection, None, "embedded needs no connection");
    }

    #[test]
    fn values_are_parsed() {
        let s = from(&[
            ("LUCIUS_STORAGE_BACKEND", "Ledger"),
            ("LUCIUS_TABLE_CONNECTION", "UseDevelopmentStorage=true"),
            ("LUCIUS_OUTBOX_PUBLISH_TIMEOUT", "0.5"),
            ("LUCIUS_DISPATCH_GRACE", "1.5"),
            ("LUCIUS_ADMIN_ENABLED", "true"),
            ("LUCIUS_ADMIN_API_KEY", "s3cret"),
            ("LUCIUS_HTTP_ADDR", "127.0.0.1:9000"),
        ])
        .unwrap();
        assert_eq!(s.storage, StorageBackend::Ledger);
        assert_eq!(s.engine.publish_timeout, Millis(500));
        assert_eq!(s.engine.dispatch_grace, Millis(1_500));
        assert_eq!(s.admin_api_key.as_deref(), Some("s3cret"));
        assert_eq!(s.http_addr.port(), 9000);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("LUCIUS_STORAGE_BACKEND", "redis")],
                "LUCIUS_STORAGE_BACKEND",
            ),
            (
                &[("LUCIUS_STORAGE_BACKEND", "table")],
                "LUCIUS_TABLE_CONNECTION",
            ),
            (
                &[("LUCIUS_STORAGE_BACKEND", "sqlite")],
                "LUCIUS_STORAGE_BACKEND",
            ),
            (&[("LUCIUS_ADMIN_ENABLED", "true")], "LUCIUS_ADMIN_API_KEY"),
            (&[("LUCIUS_ADMIN_ENABLED", "maybe")], "LUCIUS_ADMIN_ENABLED"),
            (
                &[("LUCIUS_OUTBOX_PUBLISH_TIMEOUT", "soon")],
                "LUCIUS_OUTBOX_PUBLISH_TIMEOUT",
            ),
            (
                &[("LUCIUS_OUTBOX_PUBLISH_TIMEOUT", "-1")],
                "LUCIUS_OUTBOX_PUBLISH_TIMEOUT",
            ),
            (
                &[("LUCIUS_OUTBOX_MAX_ATTEMPTS", "0")],
                "LUCIUS_OUTBOX_MAX_ATTEMPTS",
            ),
            (
                &[("LUCIUS_OUTBOX_RETRY_BATCH_SIZE", "x")],
                "LUCIUS_OUTBOX_RETRY_BATCH_SIZE",
            ),
            (&[("LUCIUS_HTTP_ADDR", "8000")], "LUCIUS_HTTP_ADDR"),
            (&[("LUCIUS_RETENTION", "-1")], "LUCIUS_RETENTION"),
            (
                &[("LUCIUS_DISPATCH_GRACE", "-0.5")],
                "LUCIUS_DISPATCH_GRACE",
            ),
            (&[("LUCIUS_DISPATCH_GRACE", "5s")], "LUCIUS_DISPATCH_GRACE"),
            (&[("LUCIUS_RETENTION", "a week")], "LUCIUS_RETENTION"),
            (&[("LUCIUS_MAX_BODY_BYTES", "10")], "LUCIUS_MAX_BODY_BYTES"),
            (&[("LUCIUS_JOBS_TABLE", "bad-name")], "LUCIUS_JOBS_TABLE"),
            (
                &[("LUCIUS_OUTBOX_RETRY_INTERVAL", "NaN")],
                "LUCIUS_OUTBOX_RETRY_INTERVAL",
            ),
        ];
        for (pairs, var) in cases {
            let err = from(pairs).unwrap_err();
            assert_eq!(err.var, *var, "{pairs:?}: {err}");
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }
}
