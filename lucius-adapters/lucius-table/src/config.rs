//! [`TableConfig`]: mode, table names and retry settings, with documented defaults.

use std::time::Duration;

/// How rows are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Five tables (jobs, steps, outbox, idempotency, job index); commits are not atomic
    /// and follow the port's write order.
    Table,
    /// One table, one partition per job; each commit is one entity group transaction.
    Ledger,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "table" => Ok(Mode::Table),
            "ledger" => Ok(Mode::Ledger),
            other => Err(format!("expected table or ledger, found {other:?}")),
        }
    }
}

/// Timeouts and retries of table requests, and the budget of one store operation.
///
/// Every request carries the server-side `timeout` URI parameter (`server_timeout`, whole
/// seconds: the service stops working on the request and answers `500 OperationTimedOut`
/// after it) and is abandoned by the client after `request_timeout` (a little longer, so
/// the service's answer normally arrives first). Requests the service answered with
/// "later" (`500`, `503`, `408`, `429`, timeouts, connection failures) are retried with
/// backoff, up to `attempts` in all. Every request of one store operation (a `create_job`
/// that chains five requests, a `commit`, one dispatcher poll) shares one
/// `operation_budget`, backoff included: a retry starts only if what is left of the budget
/// after its backoff covers a whole `request_timeout`, and a first attempt is bounded by
/// what is left. When the budget runs out the operation fails as
/// [`lucius_core::StoreErrorKind::Transient`] with a message naming the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (default 4).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time, at most 5 s (default 200 ms).
    pub base_delay: Duration,
    /// The service's bound on one request, sent as the `timeout` URI parameter: whole
    /// seconds from 1 to 30, the service's maximum (default 5 s).
    pub server_timeout: Duration,
    /// The client's bound on one request; must exceed `server_timeout` (default 7 s).
    pub request_timeout: Duration,
    /// The bound on one store operation, every request, retry and backoff included; at
    /// least `request_timeout` (default 20 s).
    pub operation_budget: Duration,
}

impl Default for RetryPolicy {
    /// Sized so a store call fails well inside a caller's patience: a healthy request takes
    /// tens of milliseconds, so 5 s on the service means it is stuck (the service's own
    /// default is 30 s, and a query page already stops after 5 s with a continuation); 2 s
    /// more on the client covers the network and a 4 MiB batch body; 20 s per operation
    /// leaves room for one stuck request, its backoff and a full retry on top of the
    /// normal requests of an intake, and stays below the 30 s clients and load balancers
    /// commonly allow an HTTP call.
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            server_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(7),
            operation_budget: Duration::from_secs(20),
        }
    }
}

/// A [`RetryPolicy`] setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetrySetting {
    /// [`RetryPolicy::attempts`].
    Attempts,
    /// [`RetryPolicy::server_timeout`].
    ServerTimeout,
    /// [`RetryPolicy::request_timeout`].
    RequestTimeout,
    /// [`RetryPolicy::operation_budget`].
    OperationBudget,
}

impl RetrySetting {
    /// The `LUCIUS_*` variable the binaries read it from.
    pub fn env_var(self) -> &'static str {
        match self {
            RetrySetting::Attempts => "LUCIUS_TABLE_ATTEMPTS",
            RetrySetting::ServerTimeout => "LUCIUS_TABLE_SERVER_TIMEOUT",
            RetrySetting::RequestTimeout => "LUCIUS_TABLE_REQUEST_TIMEOUT",
            RetrySetting::OperationBudget => "LUCIUS_TABLE_OPERATION_BUDGET",
        }
    }
}

/// Why a [`RetryPolicy`] was refused: the setting at fault, what was expected and what was
/// found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRetryPolicy {
    /// The setting at fault.
    pub setting: RetrySetting,
    /// What was expected and what was found.
    pub message: String,
}

/// The longest server timeout the table service honours (it lowers longer ones to this).
pub const MAX_SERVER_TIMEOUT: Duration = Duration::from_secs(30);

impl RetryPolicy {
    /// Checks that the settings make sense together: at least one attempt; a server
    /// timeout of whole seconds from 1 to 30; a client timeout above the server timeout
    /// (else the client gives up before the service can answer); a budget that covers at
    /// least one request.
    pub fn validate(&self) -> Result<(), BadRetryPolicy> {
        let bad = |setting, message: String| Err(BadRetryPolicy { setting, message });
        if self.attempts == 0 {
            return bad(
                RetrySetting::Attempts,
                "expected at least 1 attempt, found 0".into(),
            );
        }
        let server = self.server_timeout;
        if server < Duration::from_secs(1)
            || server > MAX_SERVER_TIMEOUT
            || server.subsec_nanos() != 0
        {
            return bad(
                RetrySetting::ServerTimeout,
                format!(
                    "expected a server timeout of whole seconds from 1 to 30 (the service's \
                     `timeout` parameter is in seconds, at most 30), found {}",
                    seconds(server)
                ),
            );
        }
        if self.request_timeout <= server {
            return bad(
                RetrySetting::RequestTimeout,
                format!(
                    "expected a client timeout above the server timeout ({}), found {}: the \
                     client would give up before the service answers",
                    seconds(server),
                    seconds(self.request_timeout)
                ),
            );
        }
        if self.operation_budget < self.request_timeout {
            return bad(
                RetrySetting::OperationBudget,
                format!(
                    "expected an operation budget of at least the client timeout ({}), found {}",
                    seconds(self.request_timeout),
                    seconds(self.operation_budget)
                ),
            );
        }
        Ok(())
    }
}

/// `1.5 s`, `20 s`: a duration as people read it.
pub(crate) fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Everything [`crate::TableStore::connect`] needs besides the connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// The layout.
    pub mode: Mode,
    /// `LUCIUS_JOBS_TABLE` (table mode), default `LuciusJobs`.
    pub jobs_table: String,
    /// `LUCIUS_STEPS_TABLE` (table mode), default `LuciusSteps`.
    pub steps_table: String,
    /// `LUCIUS_OUTBOX_TABLE` (table mode), default `LuciusOutbox`.
    pub outbox_table: String,
    /// `LUCIUS_IDEMPOTENCY_TABLE` (table mode), default `LuciusIdempotency`.
    pub idempotency_table: String,
    /// `LUCIUS_JOB_INDEX_TABLE` (table mode), default `LuciusJobIndex`.
    pub job_index_table: String,
    /// `LUCIUS_LEDGER_TABLE` (ledger mode), default `LuciusLedger`.
    pub ledger_table: String,
    /// `LUCIUS_LEASES_TABLE` (both modes), default `LuciusLeases`: partition leases and
    /// dispatcher membership ([`lucius_core::LeaseStore`]).
    pub leases: String,
    /// Retries and timeouts.
    pub retry: RetryPolicy,
    /// Create the mode's tables at connect time when absent (default true).
    pub create_tables: bool,
}

impl TableConfig {
    /// The defaults for `mode`.
    pub fn new(mode: Mode) -> TableConfig {
        TableConfig {
            mode,
            jobs_table: "LuciusJobs".into(),
            steps_table: "LuciusSteps".into(),
            outbox_table: "LuciusOutbox".into(),
            idempotency_table: "LuciusIdempotency".into(),
            job_index_table: "LuciusJobIndex".into(),
            ledger_table: "LuciusLedger".into(),
            leases: "LuciusLeases".into(),
            retry: RetryPolicy::default(),
            create_tables: true,
        }
    }

    /// The same tables, each name prefixed (e.g. one prefix per test, so tests run in
    /// parallel on one account).
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> TableConfig {
        for t in [
            &mut self.jobs_table,
            &mut self.steps_table,
            &mut self.outbox_table,
            &mut self.idempotency_table,
            &mut self.job_index_table,
            &mut self.ledger_table,
            &mut self.leases,
        ] {
            *t = format!("{prefix}{t}");
        }
        self
    }

    /// Overrides table names from `LUCIUS_*_TABLE` variables as `lookup` finds them (the
    /// binaries pass `|k| std::env::var(k).ok()`; tests pass a map). Unset names keep their
    /// defaults; validation happens at connect time.
    #[must_use]
    pub fn with_names_from(mut self, lookup: impl Fn(&str) -> Option<String>) -> TableConfig {
        for (var, field) in [
            ("LUCIUS_JOBS_TABLE", &mut self.jobs_table),
            ("LUCIUS_STEPS_TABLE", &mut self.steps_table),
            ("LUCIUS_OUTBOX_TABLE", &mut self.outbox_table),
            ("LUCIUS_IDEMPOTENCY_TABLE", &mut self.idempotency_table),
            ("LUCIUS_JOB_INDEX_TABLE", &mut self.job_index_table),
            ("LUCIUS_LEDGER_TABLE", &mut self.ledger_table),
            ("LUCIUS_LEASES_TABLE", &mut self.leases),
        ] {
            if let Some(v) = lookup(var).filter(|v| !v.trim().is_empty()) {
                *field = v.trim().to_owned();
            }
        }
        self
    }

    /// The tables this mode uses (the mode's data tables first, then the leases table).
    pub fn tables(&self) -> Vec<&str> {
        match self.mode {
            Mode::Table => vec![
                &self.jobs_table,
                &self.steps_table,
                &self.outbox_table,
                &self.idempotency_table,
                &self.job_index_table,
                &self.leases,
            ],
            Mode::Ledger => vec![&self.ledger_table, &self.leases],
        }
    }

    /// Checks the table names (3–63 letters and digits, starting with a letter) and the
    /// retry policy ([`RetryPolicy::validate`]).
    pub fn validate(&self) -> Result<(), String> {
        self.retry.validate().map_err(|e| e.message)?;
        for t in self.tables() {
            let ok = (3..=63).contains(&t.len())
                && t.starts_with(|c: char| c.is_ascii_alphabetic())
                && t.chars().all(|c| c.is_ascii_alphanumeric());
            if !ok {
                return Err(format!(
                    "table name {t:?} is not valid: Azure table names are 3 to 63 letters and \
                     digits, starting with a letter"
                ));
            }
        }
        Ok(())
    }
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig::new(Mode::Ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(TableConfig::new(Mode::Table).validate().is_ok());
        assert!(TableConfig::new(Mode::Ledger)
            .with_prefix("T1")
            .validate()
            .is_ok());
        let mut c = TableConfig::new(Mode::Ledger);
        c.ledger_table = "Lucius_Ledger".into();
        assert!(c.validate().unwrap_err().contains("Lucius_Ledger"));
        assert_eq!("ledger".parse::<Mode>(), Ok(Mode::Ledger));
        let c = TableConfig::new(Mode::Table)
            .with_names_from(|k| (k == "LUCIUS_OUTBOX_TABLE").then(|| "MyOutbox".to_owned()));
        assert_eq!(c.outbox_table, "MyOutbox");
        assert_eq!(c.jobs_table, "LuciusJobs");
        let c = TableConfig::new(Mode::Ledger)
            .with_names_from(|k| (k == "LUCIUS_LEASES_TABLE").then(|| " MyLeases ".to_owned()));
        assert_eq!(c.leases, "MyLeases");
        assert_eq!(c.tables(), ["LuciusLedger", "MyLeases"]);
        assert_eq!(
            TableConfig::new(Mode::Table).with_prefix("P").leases,
            "PLuciusLeases"
        );
        let mut c = TableConfig::new(Mode::Table);
        c.leases = "x".into();
        assert!(c.validate().is_err());
        assert!("x".parse::<Mode>().is_err());
    }

    #[test]
    fn the_default_retry_policy_is_valid_and_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.validate(), Ok(()));
        assert!(p.server_timeout < p.request_timeout);
        assert!(p.request_timeout <= p.operation_budget);
    }

    #[test]
    fn nonsense_retry_policies_name_the_setting() {
        let with = |f: &dyn Fn(&mut RetryPolicy)| {
            let mut p = RetryPolicy::default();
            f(&mut p);
            p.validate().unwrap_err()
        };
        let e = with(&|p| p.attempts = 0);
        assert_eq!(e.setting, RetrySetting::Attempts);
        for bad in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(31),
        ] {
            let e = with(&|p| p.server_timeout = bad);
            assert_eq!(e.setting, RetrySetting::ServerTimeout, "{bad:?}");
            assert!(e.message.contains("whole seconds"), "{e}");
        }
        let e = with(&|p| p.request_timeout = Duration::from_secs(4));
        assert_eq!(e.setting, RetrySetting::RequestTimeout);
        assert!(e.message.contains("above the server timeout (5 s)"), "{e}");
        assert!(e.message.contains("found 4 s"), "{e}");
        // Equal is refused too: the client would cut the service's answer off.
        let e = with(&|p| p.request_timeout = p.server_timeout);
        assert_eq!(e.setting, RetrySetting::RequestTimeout);
        let e = with(&|p| p.operation_budget = Duration::from_secs(6));
        assert_eq!(e.setting, RetrySetting::OperationBudget);
        assert!(e.message.contains("found 6 s"), "{e}");
        // The edges that are fine.
        let mut p = RetryPolicy {
            server_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_millis(30_001),
            ..RetryPolicy::default()
        };
        p.operation_budget = p.request_timeout;
        assert_eq!(p.validate(), Ok(()));
        // The table configuration refuses it at connect time.
        let mut c = TableConfig::new(Mode::Ledger);
        c.retry.attempts = 0;
        assert!(c.validate().unwrap_err().contains("at least 1 attempt"));
    }
}
