//! # lucius-table
//!
//! The core [`Store`] port on Azure Table Storage (`azure_data_tables`), in two layouts:
//!
//! ```text
//!   Engine ──Store──▶ TableStore ──Client (counts, timeouts, retries, error kinds)──▶ Table service
//!                       │
//!                       ├─ Mode::Table : LuciusJobs · LuciusSteps · LuciusOutbox
//!                       │                LuciusIdempotency · LuciusJobIndex
//!                       │                (non-atomic; steps → outbox → job order)
//!                       └─ Mode::Ledger: LuciusLedger, one partition per job, one
//!                                        entity group transaction per change, plus
//!                                        IDX_<tenant>_<YYYYMM> index partitions
//!   (both modes: per dispatch partition, live-job rows and a due-ordered queue of PENDING
//!    entries, Q_<nextAttemptAt:020>_<outboxId>, read as one key range with $top; a
//!    PARTITIONS registry; an ENDED partition listing finished jobs by end time)
//!   Dispatcher ──LeaseStore──▶ TableStore ──▶ LuciusLeases (both modes): LEASE rows per
//!                                        partition (If-Match only), MEMBER rows (upserts)
//! ```
//!
//! Connect with [`TableStore::connect`] (a connection string and a [`TableConfig`]); the
//! tables are created when absent. [`TableStore::request_counts`] tells how many requests
//! of each kind the store sent. Every request carries the service's `timeout` parameter and
//! a client timeout, and every store call (all its requests, retries and backoff) has one
//! budget ([`RetryPolicy`]). Layouts, write order and round-trip counts are in
//! `docs/storage.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod config;
mod connection;
mod deadline;
mod entity;
#[cfg(test)]
mod fake_service;
mod leases;
mod ledger;
mod queue;
mod refusal;
mod retention;
mod rows;
mod tables;

use std::sync::Arc;

use async_trait::async_trait;
use azure_data_tables::clients::TableServiceClientBuilder;
use lucius_core::ids::{JobId, Partition};
use lucius_core::ports::{CreateOutcome, EndedJob, OutboxQuery, Store, StoreError};
use lucius_core::{Changes, JobRecord, NewJob, OutboxEntry, OutboxStatus, Revision, Timestamp};

pub use client::RequestCounts;
pub use config::{
    BadRetryPolicy, Mode, RetryPolicy, RetrySetting, TableConfig, MAX_SERVER_TIMEOUT,
};
pub use connection::ConnectionStringError;
pub use leases::MEMBER_RETENTION;

/// Why [`TableStore::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection string is malformed or incomplete.
    #[error(transparent)]
    ConnectionString(#[from] ConnectionStringError),
    /// A table name or the retry policy is not valid.
    #[error("bad table configuration: {0}")]
    Config(String),
    /// The service refused or did not answer (creating the tables).
    #[error("table service at {endpoint}: {error}")]
    Service {
        /// The account and endpoint (no secrets).
        endpoint: String,
        /// What failed.
        error: StoreError,
    },
}

/// The [`Store`] on Azure Table Storage. Cheap to clone (clones share counters).
#[derive(Debug, Clone)]
pub struct TableStore {
    client: client::Client,
    config: Arc<TableConfig>,
    endpoint: Arc<str>,
    queue: Arc<queue::QueueState>,
}

impl TableStore {
    /// Connects to the table service named by `connection_string` (`UseDevelopmentStorage=true`
    /// for Azurite, or `DefaultEndpointsProtocol=…;AccountName=…;AccountKey=…[;TableEndpoint=…]`)
    /// and creates the mode's tables when absent (unless `config.create_tables` is false).
    pub async fn connect(
        connection_string: &str,
        config: TableConfig,
    ) -> Result<TableStore, ConnectError> {
        config.validate().map_err(ConnectError::Config)?;
        let endpoint = connection::parse(connection_string)?;
        let service =
            TableServiceClientBuilder::with_location(endpoint.location, endpoint.credentials)
                // Retries are ours (counted, and bounded by the config); the service's
                // `timeout` parameter goes on every request.
                .client_options(client::pipeline_options(&config.retry))
                .build();
        TableStore::on(
            client::Client::new(service, config.retry),
            config,
            endpoint.describe,
        )
        .await
    }

    /// The store on `client`, its tables created when the config says so (one operation:
    /// one budget for them all).
    async fn on(
        client: client::Client,
        config: TableConfig,
        endpoint: String,
    ) -> Result<TableStore, ConnectError> {
        let store = TableStore {
            client,
            config: Arc::new(config),
            endpoint: endpoint.into(),
            queue: Arc::default(),
        };
        if store.config.create_tables {
            let op = store.operation();
            for t in op.config.tables() {
                op.client
                    .create_table(t)
                    .await
                    .map_err(|error| ConnectError::Service {
                        endpoint: store.endpoint.to_string(),
                        error,
                    })?;
            }
        }
        Ok(store)
    }

    /// This store for one operation: every request it sends shares one budget
    /// ([`RetryPolicy::operation_budget`]), starting now.
    fn operation(&self) -> TableStore {
        TableStore {
            client: self.client.within(self.client.budget_from_now()),
            ..self.clone()
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Requests sent so far, by kind (every HTTP request, retries included).
    pub fn request_counts(&self) -> RequestCounts {
        self.client.counts()
    }

    /// Fault injection for crash tests: after `n` more write requests (inserts, updates,
    /// upserts, deletes, batches) every write fails as [`lucius_core::StoreErrorKind::Transient`]
    /// without being sent, as if the process had died there. `None` disarms it.
    pub fn crash_after_writes(&self, n: Option<usize>) {
        self.client.crash_after_writes(n);
    }
}

impl TableStore {
    /// The outbox entries `filter` selects in `table` (a scan: admin listings only), in
    /// the port's order, past the query's cursor, at most its limit.
    async fn scan_entries(
        &self,
        table: &str,
        filter: &str,
        q: &OutboxQuery,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = self.client.query(table, filter, None).await?;
        let mut v = rows
            .iter()
            .map(rows::read_outbox)
            .collect::<Result<Vec<_>, _>>()?;
        rows::sort_entries(&mut v);
        rows::past_cursor(&mut v, q);
        v.truncate(q.limit);
        Ok(v)
    }

    /// One page of live job ids: the rows `filter` selects, whose RowKey is
    /// `<key_prefix><jobId>` (so RowKey order is id order), after `after`, read from
    /// `id_column`. Both layouts' `active_jobs` are this query.
    async fn job_ids_page(
        &self,
        table: &str,
        mut filter: String,
        key_prefix: &str,
        id_column: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        if let Some(a) = after {
            let from = entity::literal(&format!("{key_prefix}{a}"));
            filter.push_str(&format!(" and RowKey gt {from}"));
        }
        let top = u32::try_from(limit.min(1000)).unwrap_or(1000);
        let rows = self
            .client
            .query_limit(table, &filter, Some(top), limit)
            .await?;
        rows.iter()
            .filter_map(|r| entity::text(r, id_column))
            .map(|s| JobId::parse(s).map_err(|e| StoreError::permanent(e.to_string())))
            .collect()
    }
}

#[async_trait]
impl Store for TableStore {
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        let op = self.operation();
        match op.config.mode {
            Mode::Table => op.table_create(&new).await,
            Mode::Ledger => op.ledger_create(&new).await,
        }
    }

    async fn load_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let op = self.operation();
        let rec = match op.config.mode {
            Mode::Table => op.table_load(id).await,
            Mode::Ledger => op.ledger_load(id).await,
        }?;
        op.repair_listed(id, rec.as_ref());
        Ok(rec)
    }

    async fn commit(&self, changes: Changes) -> Result<Changes, StoreError> {
        if changes.is_empty() {
            return Ok(changes);
        }
        let op = self.operation();
        match op.config.mode {
            Mode::Table => op.table_commit(changes).await,
            Mode::Ledger => op.ledger_commit(changes).await,
        }
    }

    async fn outbox(&self, query: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let op = self.operation();
        match (query.status, op.config.mode) {
            (Some(OutboxStatus::Pending), _) => op.list_pending(query).await,
            (Some(OutboxStatus::Dead), _) => op.list_dead(query).await,
            (_, Mode::Table) => op.table_outbox(query).await,
            (_, Mode::Ledger) => op.ledger_outbox(query).await,
        }
    }

    async fn active_jobs(
        &self,
        partition: &Partition,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let op = self.operation();
        match op.config.mode {
            Mode::Table => op.table_active_jobs(partition, after, limit).await,
            Mode::Ledger => op.ledger_active_jobs(partition, after, limit).await,
        }
    }

    async fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        self.operation().registered_partitions().await
    }

    /// Retires a partition only an hour after its month ended (see `docs/storage.md`).
    async fn retire_partition(&self, partition: &Partition) -> Result<bool, StoreError> {
        self.operation().retire(partition).await
    }

    async fn ended_jobs(
        &self,
        ended_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<EndedJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.operation().retention_ended_jobs(ended_by, limit).await
    }

    async fn purge_job(&self, id: &JobId, revision: &Revision) -> Result<(), StoreError> {
        let op = self.operation();
        match op.config.mode {
            Mode::Table => op.table_purge(id, revision).await,
            Mode::Ledger => op.ledger_purge(id, revision).await,
        }
    }

    /// Writes the entry's queue row again (and registers its partition).
    async fn index_pending(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.operation().queue_index_pending(entry).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let table = self.config.tables()[0].to_owned();
        self.operation()
            .client
            .query_limit(&table, "PartitionKey eq 'PING'", Some(1), 1)
            .await
            .map(|_| ())
            .map_err(|e| StoreError {
                message: format!("{}: {}", self.endpoint, e.message),
                ..e
            })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lucius_core::testkit::new_job;
    use lucius_core::{StoreErrorKind, Timestamp};
    use tokio::time::Instant;

    use super::*;
    use crate::fake_service::{Answer, FakeService};

    #[tokio::test(start_paused = true)]
    async fn each_store_call_gets_one_budget_of_its_own() {
        let fake = FakeService::new(vec![], Answer::Hang);
        let mut config = TableConfig::new(Mode::Table);
        config.create_tables = false;
        let client = fake.client(config.retry);
        let store = TableStore::on(client, config, "a fake service".into())
            .await
            .unwrap();
        for _ in 0..2 {
            let t0 = Instant::now();
            let new = new_job("acme", "budget", 0, Timestamp(0));
            let e = store.create_job(new).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Transient, "{e}");
            assert!(
                e.message.starts_with(
                    "table store: operation budget of 20 s exhausted after 2 attempts: insert into LuciusIdempotency"
                ),
                "{e}"
            );
            // Two attempts of 7 s and one backoff: well inside 20 s, and the second call
            // starts with a full budget again.
            assert_eq!(t0.elapsed(), Duration::from_millis(14_200));
        }
        assert_eq!(fake.seen().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_requests_an_intake_chains_share_one_budget() {
        // Table mode: the claim lands at once, the job row after one hang (7 s, 200 ms),
        // then the steps hang: 12.8 s are left, enough for one attempt of 7 s but not for
        // its retry (400 ms + 7 s).
        let fake = FakeService::new(
            vec![Answer::Written, Answer::Hang, Answer::Written],
            Answer::Hang,
        );
        let mut config = TableConfig::new(Mode::Table);
        config.create_tables = false;
        let store = TableStore::on(fake.client(config.retry), config, "fake".into())
            .await
            .unwrap();
        let t0 = Instant::now();
        let e = store
            .create_job(new_job("acme", "chain", 0, Timestamp(0)))
            .await
            .unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Transient, "{e}");
        assert!(
            e.message
                .starts_with("table store: operation budget of 20 s exhausted after 1 attempt: "),
            "{e}"
        );
        assert!(e.message.contains("LuciusSteps"), "{e}");
        assert_eq!(t0.elapsed(), Duration::from_millis(14_200));
        assert_eq!(fake.seen().len(), 4);
        let c = store.request_counts();
        assert_eq!(c.insert + c.batch, 4, "{c:?}");
    }
}
