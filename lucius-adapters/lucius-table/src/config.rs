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

/// Retries of requests the service answered with "later" (500, 503, 408, 429, timeouts,
/// connection failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (default 4).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time, at most 5 s (default 200 ms).
    pub base_delay: Duration,
    /// Bound on one request (default 30 s).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            request_timeout: Duration::from_secs(30),
        }
    }
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

    /// Checks the table names: 3–63 letters and digits, starting with a letter.
    pub fn validate(&self) -> Result<(), String> {
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
}
