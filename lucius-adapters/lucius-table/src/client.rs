//! [`Client`]: the few Table requests the store makes, each counted by kind, bounded by the
//! service's `timeout` parameter and a client timeout, retried with backoff when the
//! service says "later" within the budget of the store operation ([`Deadline`]), and
//! mapped to [`StoreError`] kinds.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use azure_core::error::ErrorKind;
use azure_core::request_options::Timeout;
use azure_core::{ClientOptions, Etag, RetryOptions, StatusCode, TimeoutPolicy};
use azure_data_tables::prelude::*;
use futures::StreamExt;
use lucius_core::{Revision, StoreError, StoreErrorKind};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::deadline::{Deadline, Next};
use crate::entity::{Row, MAX_BATCH_BYTES, MAX_BATCH_OPS};
use crate::refusal::{ReadRefusals, Refusal};

/// The SDK pipeline's options for `retry`: no SDK retries (ours are counted and budgeted),
/// the service's `timeout` URI parameter on every request (the SDK's `TimeoutPolicy`
/// appends it to each request's URL, batches and query pages included, before signing),
/// and [`ReadRefusals`] to keep what the service says when it refuses.
pub(crate) fn pipeline_options(retry: &RetryPolicy) -> ClientOptions {
    let mut options = ClientOptions::default()
        .retry(RetryOptions::none())
        .timeout(TimeoutPolicy::new(Some(Timeout::new(retry.server_timeout))));
    options
        .per_retry_policies_mut()
        .push(Arc::new(ReadRefusals));
    options
}

/// How many Table requests of each kind a store sent (retries included: every HTTP
/// request counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Insert Entity.
    pub insert: u64,
    /// Update Entity with `If-Match` (replace).
    pub update: u64,
    /// Insert Or Replace Entity (upserts of index rows).
    pub upsert: u64,
    /// Delete Entity.
    pub delete: u64,
    /// Get Entity (one row by its keys).
    pub get: u64,
    /// Query Entities (one page).
    pub query: u64,
    /// Entity group transactions (`$batch`), whatever their size.
    pub batch: u64,
    /// Create Table.
    pub create_table: u64,
}

impl RequestCounts {
    /// Every request.
    pub fn total(&self) -> u64 {
        self.insert
            + self.update
            + self.upsert
            + self.delete
            + self.get
            + self.query
            + self.batch
            + self.create_table
    }

    /// Requests counted since `earlier`.
    #[must_use]
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            insert: self.insert - earlier.insert,
            update: self.update - earlier.update,
            upsert: self.upsert - earlier.upsert,
            delete: self.delete - earlier.delete,
            get: self.get - earlier.get,
            query: self.query - earlier.query,
            batch: self.batch - earlier.batch,
            create_table: self.create_table - earlier.create_table,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Insert,
    Update,
    Upsert,
    Delete,
    Get,
    Query,
    Batch,
    CreateTable,
}

impl Kind {
    fn writes(self) -> bool {
        matches!(
            self,
            Kind::Insert | Kind::Update | Kind::Upsert | Kind::Delete | Kind::Batch
        )
    }
}

#[derive(Debug, Default)]
struct Counters([AtomicU64; 8]);

/// One operation of an entity group transaction.
#[derive(Debug, Clone)]
pub(crate) enum BatchOp {
    /// Insert; conflicts if present.
    Insert(Row),
    /// Replace if the ETag matches.
    Update(Row, Revision),
    /// Insert or replace.
    Upsert(Row),
    /// Delete whatever is there.
    Delete(String),
    /// Delete if the ETag matches.
    DeleteAt(String, Revision),
}

impl BatchOp {
    /// Builds the write of `row` under `rev`: [`Revision::NEW`] inserts, else If-Match.
    pub(crate) fn write(row: Row, rev: &Revision) -> BatchOp {
        if rev.is_new() {
            BatchOp::Insert(row)
        } else {
            BatchOp::Update(row, rev.clone())
        }
    }

    fn partition(&self) -> Option<&str> {
        match self {
            BatchOp::Insert(r) | BatchOp::Update(r, _) | BatchOp::Upsert(r) => {
                r.get("PartitionKey").and_then(Value::as_str)
            }
            BatchOp::Delete(_) | BatchOp::DeleteAt(..) => None,
        }
    }

    fn bytes(&self) -> usize {
        // Body plus the per-operation MIME headers and URL.
        let body = match self {
            BatchOp::Insert(r) | BatchOp::Update(r, _) | BatchOp::Upsert(r) => {
                serde_json::to_string(r).map_or(0, |s| s.len())
            }
            BatchOp::Delete(_) | BatchOp::DeleteAt(..) => 0,
        };
        body + 512
    }

    /// What the operation does to which row, for messages.
    fn label(&self) -> String {
        match self {
            BatchOp::Insert(r) => format!("insert of {}", keys(r)),
            BatchOp::Update(r, _) => format!("update of {}", keys(r)),
            BatchOp::Upsert(r) => format!("upsert of {}", keys(r)),
            BatchOp::Delete(rk) => format!("delete of row {rk}"),
            BatchOp::DeleteAt(rk, _) => format!("conditional delete of row {rk}"),
        }
    }
}

/// The table service, as the store uses it.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    service: TableServiceClient,
    retry: RetryPolicy,
    counters: Arc<Counters>,
    /// Writes left before the injected crash; negative when none is armed.
    crash_after: Arc<AtomicI64>,
    /// The budget of the store operation this client works for ([`Client::within`]);
    /// `None` on the store's own client, where each request gets a budget of its own.
    deadline: Option<Deadline>,
}

impl Client {
    pub(crate) fn new(service: TableServiceClient, retry: RetryPolicy) -> Client {
        Client {
            service,
            retry,
            counters: Arc::default(),
            crash_after: Arc::new(AtomicI64::new(-1)),
            deadline: None,
        }
    }

    /// The same client for one store operation: its requests share `deadline`.
    pub(crate) fn within(&self, deadline: Deadline) -> Client {
        Client {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// A budget starting now, for one store operation.
    pub(crate) fn budget_from_now(&self) -> Deadline {
        Deadline::start(self.retry.operation_budget, Instant::now())
    }

    fn deadline(&self) -> Deadline {
        self.deadline.unwrap_or_else(|| self.budget_from_now())
    }

    pub(crate) fn counts(&self) -> RequestCounts {
        let c = |k: Kind| self.counters.0[k as usize].load(Ordering::Relaxed);
        RequestCounts {
            insert: c(Kind::Insert),
            update: c(Kind::Update),
            upsert: c(Kind::Upsert),
            delete: c(Kind::Delete),
            get: c(Kind::Get),
            query: c(Kind::Query),
            batch: c(Kind::Batch),
            create_table: c(Kind::CreateTable),
        }
    }

    fn count(&self, kind: Kind) {
        self.counters.0[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn crash_after_writes(&self, n: Option<usize>) {
        let v = n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.crash_after.store(v, Ordering::SeqCst);
    }

    /// Sends one request (re-created per attempt by `send`) to `table`, counting it and
    /// retrying it within the operation's budget.
    async fn call<T, F, Fut>(
        &self,
        kind: Kind,
        table: &str,
        what: &str,
        send: F,
    ) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        if kind.writes() {
            // Test-only crash point: after the armed number of writes, every write fails.
            let left = self.crash_after.load(Ordering::SeqCst);
            if left == 0 {
                return Err(StoreError::transient(format!(
                    "injected crash before {what}"
                )));
            }
            if left > 0 {
                self.crash_after.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let deadline = self.deadline();
        let mut next = deadline.first(&self.retry, Instant::now());
        let mut made = 0;
        let mut last: Option<StoreError> = None;
        loop {
            let bound = match next {
                Next::Send { wait, timeout } => {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    timeout
                }
                Next::GiveUp => {
                    return Err(last.unwrap_or_else(|| {
                        StoreError::transient(format!("{what}: no attempt allowed"))
                    }))
                }
                Next::OutOfBudget => {
                    let detail = last.map_or_else(|| format!("{what} was not sent"), |e| e.message);
                    return Err(deadline.exhausted(made, &detail));
                }
            };
            made += 1;
            self.count(kind);
            let result = match tokio::time::timeout(bound, send()).await {
                Ok(r) => r.map_err(|e| map_error(&e, what, table)),
                Err(_) => Err(StoreError::transient(format!(
                    "{what} timed out after {} ms",
                    bound.as_millis()
                ))),
            };
            match result {
                Err(e) if e.kind == StoreErrorKind::Transient => {
                    next = deadline.after_failure(&self.retry, made, Instant::now());
                    if matches!(next, Next::Send { .. }) {
                        tracing::debug!(attempt = made, error = %e, "retrying table request");
                    }
                    last = Some(e);
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn create_table(&self, table: &str) -> Result<(), StoreError> {
        let t = self.service.table_client(table);
        match self
            .call(
                Kind::CreateTable,
                table,
                &format!("create table {table}"),
                || t.create().into_future(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind == StoreErrorKind::Conflict => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Inserts a row; returns its ETag.
    pub(crate) async fn insert(&self, table: &str, row: &Row) -> Result<Revision, StoreError> {
        let t = self.service.table_client(table);
        let what = format!("insert into {table} {}", keys(row));
        let r = self
            .call(Kind::Insert, table, &what, || async {
                t.insert::<&Row, Row>(row)?.into_future().await
            })
            .await?;
        Ok(Revision::stored(r.etag.to_string()))
    }

    /// Replaces a row if its ETag is still `rev`; returns the new ETag.
    pub(crate) async fn update(
        &self,
        table: &str,
        row: &Row,
        rev: &Revision,
    ) -> Result<Revision, StoreError> {
        let (pk, rk) = key_pair(row)?;
        check_revision(rev, &keys(row))?;
        let token = rev.token().unwrap_or_default().to_owned();
        let e = self
            .service
            .table_client(table)
            .partition_key_client(pk)
            .entity_client(rk);
        let what = format!("update of {table} {}", keys(row));
        let r = self
            .call(Kind::Update, table, &what, || async {
                e.update(row, IfMatchCondition::Etag(Etag::from(token.clone())))?
                    .into_future()
                    .await
            })
            .await?;
        Ok(Revision::stored(r.etag.to_string()))
    }

    /// Writes a row under `rev` ([`Revision::NEW`] inserts).
    pub(crate) async fn write(
        &self,
        table: &str,
        row: &Row,
        rev: &Revision,
    ) -> Result<Revision, StoreError> {
        if rev.is_new() {
            self.insert(table, row).await
        } else {
            self.update(table, row, rev).await
        }
    }

    /// Inserts or replaces a row.
    pub(crate) async fn upsert(&self, table: &str, row: &Row) -> Result<(), StoreError> {
        let (pk, rk) = key_pair(row)?;
        let e = self
            .service
            .table_client(table)
            .partition_key_client(pk)
            .entity_client(rk);
        let what = format!("upsert into {table} {}", keys(row));
        self.call(Kind::Upsert, table, &what, || async {
            e.insert_or_replace(row)?.into_future().await
        })
        .await?;
        Ok(())
    }

    /// Deletes a row; a missing row is not an error.
    pub(crate) async fn delete(&self, table: &str, pk: &str, rk: &str) -> Result<(), StoreError> {
        let e = self
            .service
            .table_client(table)
            .partition_key_client(pk)
            .entity_client(rk);
        let what = format!("delete from {table} ({pk}, {rk})");
        match self
            .call(Kind::Delete, table, &what, || e.delete().into_future())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind == StoreErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a row only if it is still at `etag` (read before): a row rewritten since is
    /// left alone. A missing or changed row is not an error.
    pub(crate) async fn delete_if(
        &self,
        table: &str,
        pk: &str,
        rk: &str,
        etag: &str,
    ) -> Result<(), StoreError> {
        let e = self
            .service
            .table_client(table)
            .partition_key_client(pk)
            .entity_client(rk);
        let what = format!("conditional delete from {table} ({pk}, {rk})");
        let etag = etag.to_owned();
        match self
            .call(Kind::Delete, table, &what, || {
                e.delete()
                    .if_match(IfMatchCondition::Etag(Etag::from(etag.clone())))
                    .into_future()
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind, StoreErrorKind::NotFound | StoreErrorKind::Conflict) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a row only if its ETag is still `rev`: a changed row is a
    /// [`StoreErrorKind::Conflict`], a missing one [`StoreErrorKind::NotFound`] (the guarded
    /// delete of a purge, which must know which it was).
    pub(crate) async fn delete_at(
        &self,
        table: &str,
        pk: &str,
        rk: &str,
        rev: &Revision,
    ) -> Result<(), StoreError> {
        check_revision(rev, &format!("({pk}, {rk})"))?;
        let e = self
            .service
            .table_client(table)
            .partition_key_client(pk)
            .entity_client(rk);
        let what = format!("guarded delete from {table} ({pk}, {rk})");
        let etag = rev.token().unwrap_or_default().to_owned();
        self.call(Kind::Delete, table, &what, || {
            e.delete()
                .if_match(IfMatchCondition::Etag(Etag::from(etag.clone())))
                .into_future()
        })
        .await
        .map(|_| ())
    }

    /// One row by its keys, with its ETag as `odata.etag`.
    pub(crate) async fn get(
        &self,
        table: &str,
        pk: &str,
        rk: &str,
    ) -> Result<Option<Row>, StoreError> {
        let e = self
            .service
            .table_client(table)
            .partition_key_client(pk)
            .entity_client(rk);
        let what = format!("get from {table} ({pk}, {rk})");
        match self
            .call(Kind::Get, table, &what, || e.get::<Row>().into_future())
            .await
        {
            Ok(r) => {
                let mut row = r.entity;
                row.insert("odata.etag".into(), Value::String(r.etag.to_string()));
                Ok(Some(row))
            }
            Err(e) if e.kind == StoreErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every row matching `filter` (all pages; `top` bounds each page).
    pub(crate) async fn query(
        &self,
        table: &str,
        filter: &str,
        top: Option<u32>,
    ) -> Result<Vec<Row>, StoreError> {
        self.query_limit(table, filter, top, usize::MAX).await
    }

    /// Rows matching `filter`, stopping after `limit` rows.
    pub(crate) async fn query_limit(
        &self,
        table: &str,
        filter: &str,
        top: Option<u32>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let t = self.service.table_client(table);
        let mut q = t.query().filter(filter.to_owned());
        if let Some(top) = top {
            q = q.top(top);
        }
        let what = format!("query of {table} ({filter})");
        let mut out = Vec::new();
        // Pages are requested one by one; each page is one counted request, bounded like a
        // first attempt. A transient failure mid-way restarts the query (reads are
        // idempotent) after the backoff, within the operation's budget.
        let deadline = self.deadline();
        let mut failed = 0;
        'restart: loop {
            out.clear();
            let mut stream = q.clone().into_stream::<Row>();
            loop {
                let bound = match deadline.first(&self.retry, Instant::now()) {
                    Next::Send { timeout, .. } => timeout,
                    _ => {
                        let detail = format!("{what}: the next page was not requested");
                        return Err(deadline.exhausted(failed, &detail));
                    }
                };
                let page = match tokio::time::timeout(bound, stream.next()).await {
                    // The stream ends without a request after a page with no
                    // continuation: only pages count.
                    Ok(None) => return Ok(out),
                    Ok(Some(r)) => {
                        self.count(Kind::Query);
                        r.map_err(|e| map_error(&e, &what, table))
                    }
                    Err(_) => {
                        self.count(Kind::Query);
                        Err(StoreError::transient(format!(
                            "{what} timed out after {} ms",
                            bound.as_millis()
                        )))
                    }
                };
                match page {
                    Ok(p) => {
                        out.extend(p.entities);
                        if out.len() >= limit {
                            out.truncate(limit);
                            return Ok(out);
                        }
                    }
                    Err(e) if e.kind == StoreErrorKind::Transient => {
                        failed += 1;
                        match deadline.after_failure(&self.retry, failed, Instant::now()) {
                            Next::Send { wait, .. } => {
                                tracing::debug!(attempt = failed, error = %e, "restarting table query");
                                tokio::time::sleep(wait).await;
                                continue 'restart;
                            }
                            Next::GiveUp => return Err(e),
                            Next::OutOfBudget => return Err(deadline.exhausted(failed, &e.message)),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// One entity group transaction on partition `pk`: all operations or none. Enforces
    /// what the real service enforces (Azurite does not): one partition, at most 100
    /// operations, at most 4 MiB. Returns the new ETag of each operation
    /// ([`Revision::NEW`] for deletes).
    pub(crate) async fn batch(
        &self,
        table: &str,
        pk: &str,
        ops: &[BatchOp],
    ) -> Result<Vec<Revision>, StoreError> {
        check_batch(pk, ops)?;
        let what = format!(
            "batch of {} operations on {table} partition {pk}",
            ops.len()
        );
        let p = self.service.table_client(table).partition_key_client(pk);
        let build = || -> azure_core::Result<azure_data_tables::operations::TransactionBuilder> {
            let mut tx = p.transaction();
            for op in ops {
                tx = match op {
                    BatchOp::Insert(r) => tx.insert(r)?,
                    BatchOp::Update(r, rev) => {
                        let (_, rk) = key_pair(r).map_err(|e| {
                            azure_core::Error::message(ErrorKind::DataConversion, e.message)
                        })?;
                        let etag = Etag::from(rev.token().unwrap_or_default().to_owned());
                        tx.update(rk, r, Some(IfMatchCondition::Etag(etag)))?
                    }
                    BatchOp::Upsert(r) => {
                        let (_, rk) = key_pair(r).map_err(|e| {
                            azure_core::Error::message(ErrorKind::DataConversion, e.message)
                        })?;
                        tx.insert_or_replace(rk, r)?
                    }
                    BatchOp::Delete(rk) => tx.delete(rk.clone(), None)?,
                    BatchOp::DeleteAt(rk, rev) => {
                        let etag = Etag::from(rev.token().unwrap_or_default().to_owned());
                        tx.delete(rk.clone(), Some(IfMatchCondition::Etag(etag)))?
                    }
                };
            }
            Ok(tx)
        };
        let resp = self
            .call(
                Kind::Batch,
                table,
                &format!("{what} (nothing applied)"),
                || async {
                    build()?.into_future().await.map_err(|mut e| {
                        // Name the operation the service named.
                        if let Some(r) = e.downcast_mut::<Refusal>() {
                            r.operation_label =
                                r.operation.and_then(|i| ops.get(i)).map(BatchOp::label);
                        }
                        e
                    })
                },
            )
            .await?;
        // A failed batch still answers 202: the failure is inside, as one response whose
        // status is the failing operation's. Nothing of the batch was applied then.
        // `ReadRefusals` turns it into an error with the operation's index and code; this
        // is the fallback should its reading ever miss one.
        if let Some(bad) = resp
            .operation_responses
            .iter()
            .find(|r| !r.status_code.is_success())
        {
            return Err(status_error(
                bad.status_code,
                None,
                None,
                &format!("{what} (nothing applied)"),
                table,
            ));
        }
        if resp.operation_responses.len() != ops.len() {
            return Err(StoreError::permanent(format!(
                "{what}: expected {} operation responses, found {}",
                ops.len(),
                resp.operation_responses.len()
            )));
        }
        Ok(resp
            .operation_responses
            .iter()
            .map(|r| {
                r.etag
                    .as_ref()
                    .map_or(Revision::NEW, |e| Revision::stored(e.to_string()))
            })
            .collect())
    }
}

/// Refuses a batch the real service would refuse.
pub(crate) fn check_batch(pk: &str, ops: &[BatchOp]) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Err(StoreError::permanent(
            "an entity group transaction needs at least one operation",
        ));
    }
    for op in ops {
        match op {
            BatchOp::Update(r, rev) => check_revision(rev, &keys(r))?,
            BatchOp::DeleteAt(rk, rev) => check_revision(rev, &format!("({pk}, {rk})"))?,
            _ => {}
        }
    }
    if ops.len() > MAX_BATCH_OPS {
        return Err(StoreError::too_large(format!(
            "one job change needs {} row writes; an entity group transaction holds at most {MAX_BATCH_OPS}",
            ops.len()
        )));
    }
    if let Some(other) = ops.iter().filter_map(BatchOp::partition).find(|p| *p != pk) {
        return Err(StoreError::permanent(format!(
            "an entity group transaction must stay in one partition: expected {pk:?}, found {other:?}"
        )));
    }
    let bytes: usize = ops.iter().map(BatchOp::bytes).sum();
    if bytes > MAX_BATCH_BYTES {
        return Err(StoreError::too_large(format!(
            "one job change needs about {bytes} bytes in one entity group transaction; the limit is {MAX_BATCH_BYTES} (4 MiB)"
        )));
    }
    Ok(())
}

/// A revision this store handed out is an entity ETag (`W/"…"`); any other token cannot
/// match the stored row, so the write loses without being sent (the service would answer
/// 400 to a malformed `If-Match`).
fn check_revision(rev: &Revision, row: &str) -> Result<(), StoreError> {
    let t = rev.token().unwrap_or_default();
    if t.starts_with("W/\"") && t.ends_with('"') && t.len() > 4 {
        Ok(())
    } else {
        Err(StoreError::conflict(format!(
            "row {row} changed: expected revision {t:?}, which is not a revision of this store"
        )))
    }
}

fn key_pair(row: &Row) -> Result<(String, String), StoreError> {
    let k = |n: &str| {
        row.get(n)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| StoreError::permanent(format!("row without {n}")))
    };
    Ok((k("PartitionKey")?, k("RowKey")?))
}

fn keys(row: &Row) -> String {
    let k = |n: &str| row.get(n).and_then(Value::as_str).unwrap_or("?").to_owned();
    format!("({}, {})", k("PartitionKey"), k("RowKey"))
}

/// Maps an SDK error of a request to `table` to the store's kinds.
fn map_error(e: &azure_core::Error, what: &str, table: &str) -> StoreError {
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code } => status_error(
            *status,
            error_code.as_deref(),
            e.downcast_ref::<Refusal>(),
            what,
            table,
        ),
        ErrorKind::Io => {
            StoreError::transient(format!("{what}: cannot reach the table service: {e}"))
        }
        ErrorKind::Credential => StoreError::permanent(format!("{what}: credentials refused: {e}")),
        _ => StoreError::permanent(format!("{what}: {e}")),
    }
}

/// The store's reading of a refusal: `refusal` (when [`ReadRefusals`] read the body) says
/// what the service said, else the status and code alone.
fn status_error(
    status: StatusCode,
    code: Option<&str>,
    refusal: Option<&Refusal>,
    what: &str,
    table: &str,
) -> StoreError {
    let status = u16::from(status);
    let said = match refusal {
        Some(r) => r.to_string(),
        None => match code {
            Some(c) => format!("HTTP {status} {c}"),
            None => format!("HTTP {status}"),
        },
    };
    let msg = format!("{what}: {said}");
    match (status, code) {
        // The table itself, not a row: never "no such row" (a get would read it as a
        // missing job) nor "the row already exists".
        (404, Some("TableNotFound")) => StoreError::permanent(format!(
            "{msg}: table {table} does not exist (deleted after the store connected, or never \
             created: with create_tables = false someone must create it)"
        )),
        (409, Some("TableBeingDeleted")) => StoreError::transient(format!(
            "{msg}: table {table} is being deleted; the service refuses it until the deletion \
             ends, and it must then be created again"
        )),
        (412, _) => StoreError::conflict(format!("{msg}: the row changed since it was read")),
        (409, _) => StoreError::conflict(format!("{msg}: the row already exists")),
        (404, _) => StoreError::not_found(msg),
        (413, _) => StoreError::too_large(msg),
        (400, Some("EntityTooLarge" | "PropertyValueTooLarge" | "RequestBodyTooLarge")) => {
            StoreError::too_large(msg)
        }
        (401 | 403, _) => StoreError::permanent(format!(
            "{msg}: the credentials lack permission (check the account key or SAS)"
        )),
        (408 | 429 | 500 | 502 | 503 | 504, _) => StoreError::transient(msg),
        _ => StoreError::permanent(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pk: &str, rk: &str, bytes: usize) -> Row {
        let mut r = Row::new();
        r.insert("PartitionKey".into(), pk.into());
        r.insert("RowKey".into(), rk.into());
        r.insert("Data0".into(), "x".repeat(bytes).into());
        r
    }

    #[test]
    fn batches_the_real_service_refuses_are_refused_here() {
        // Azurite applies a batch spanning two partitions; the service refuses it.
        let two = [
            BatchOp::Insert(row("a", "1", 1)),
            BatchOp::Insert(row("b", "1", 1)),
        ];
        let e = check_batch("a", &two).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Permanent);
        assert!(e.message.contains("one partition"), "{}", e.message);
        let many: Vec<_> = (0..101)
            .map(|i| BatchOp::Insert(row("a", &i.to_string(), 1)))
            .collect();
        let e = check_batch("a", &many).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::TooLarge);
        assert!(check_batch("a", &many[..100]).is_ok());
        let big: Vec<_> = (0..5)
            .map(|i| BatchOp::Insert(row("a", &i.to_string(), 900 * 1024)))
            .collect();
        let e = check_batch("a", &big).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::TooLarge);
        assert!(e.message.contains("4 MiB"), "{}", e.message);
        assert!(check_batch("a", &[]).is_err());
    }

    #[test]
    fn revisions_not_from_this_store_lose_without_a_request() {
        let e = check_batch(
            "a",
            &[BatchOp::Update(row("a", "1", 1), Revision::stored("7"))],
        )
        .unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Conflict);
        let ok = Revision::stored("W/\"datetime'2024-03-05T00%3A00%3A00.0000000Z'\"");
        assert!(check_batch("a", &[BatchOp::Update(row("a", "1", 1), ok)]).is_ok());
    }

    #[test]
    fn statuses_map_to_kinds() {
        let k = |s: u16, c: Option<&str>| {
            status_error(StatusCode::try_from(s).unwrap(), c, None, "x", "T").kind
        };
        assert_eq!(k(412, None), StoreErrorKind::Conflict);
        assert_eq!(
            k(409, Some("EntityAlreadyExists")),
            StoreErrorKind::Conflict
        );
        assert_eq!(k(404, None), StoreErrorKind::NotFound);
        assert_eq!(k(503, Some("ServerBusy")), StoreErrorKind::Transient);
        assert_eq!(k(500, None), StoreErrorKind::Transient);
        assert_eq!(k(413, None), StoreErrorKind::TooLarge);
        assert_eq!(
            k(400, Some("PropertyValueTooLarge")),
            StoreErrorKind::TooLarge
        );
        assert_eq!(k(400, Some("InvalidInput")), StoreErrorKind::Permanent);
        assert_eq!(
            k(403, Some("AuthorizationFailure")),
            StoreErrorKind::Permanent
        );
    }

    mod with_a_fake_service {
        use std::time::Duration;

        use super::*;
        use crate::fake_service::{Answer, FakeService};

        const S: Duration = Duration::from_secs(1);
        const ETAG: &str = "W/\"datetime'2024-03-05T00%3A00%3A00.0000000Z'\"";

        fn policy(attempts: u32) -> RetryPolicy {
            RetryPolicy {
                attempts,
                ..RetryPolicy::default()
            }
        }

        fn not_found_row() -> Answer {
            Answer::refusal(
                404,
                "ResourceNotFound",
                "The specified resource does not exist.",
            )
        }

        #[tokio::test(start_paused = true)]
        async fn every_request_kind_carries_the_server_timeout_once() {
            let fake = FakeService::new(
                vec![],
                Answer::refusal(400, "InvalidInput", "refused by the script"),
            );
            let retry = RetryPolicy {
                server_timeout: 3 * S,
                request_timeout: 4 * S,
                ..policy(1)
            };
            let c = fake.client(retry);
            let r = row("p", "r", 1);
            let rev = Revision::stored(ETAG);
            assert!(c.create_table("T").await.is_err());
            assert!(c.insert("T", &r).await.is_err());
            assert!(c.update("T", &r, &rev).await.is_err());
            assert!(c.upsert("T", &r).await.is_err());
            assert!(c.delete("T", "p", "r").await.is_err());
            assert!(c.delete_if("T", "p", "r", ETAG).await.is_err());
            assert!(c.get("T", "p", "r").await.is_err());
            assert!(c.query("T", "PartitionKey eq 'p'", Some(5)).await.is_err());
            let ops = [
                BatchOp::Insert(r.clone()),
                BatchOp::Upsert(row("p", "s", 1)),
            ];
            assert!(c.batch("T", "p", &ops).await.is_err());
            let seen = fake.seen();
            assert_eq!(seen.len(), 9, "one request per kind: {seen:#?}");
            for (method, url) in &seen {
                let url = azure_core::Url::parse(url).unwrap();
                let timeouts: Vec<_> = url
                    .query_pairs()
                    .filter(|(k, _)| k == "timeout")
                    .map(|(_, v)| v.into_owned())
                    .collect();
                assert_eq!(timeouts, ["3"], "{method} {url}");
            }
            assert!(
                seen.iter().any(|(_, u)| u.contains("/$batch?")),
                "{seen:#?}"
            );
            assert_eq!(c.counts().total(), 9);
        }

        #[tokio::test(start_paused = true)]
        async fn a_missing_table_is_not_a_missing_row() {
            let fake = FakeService::new(
                vec![not_found_row(), not_found_row()],
                Answer::refusal(404, "TableNotFound", "The table specified does not exist."),
            );
            let c = fake.client(policy(4));
            // A missing row is `None`, and deleting it is fine.
            assert_eq!(c.get("LuciusJobs", "a", "JOB").await, Ok(None));
            assert_eq!(c.delete("LuciusJobs", "a", "JOB").await, Ok(()));
            // A missing table is an error, on reads and writes alike, never retried.
            let e = c.get("LuciusJobs", "a", "JOB").await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Permanent, "{e}");
            assert!(e.message.contains("HTTP 404 TableNotFound"), "{e}");
            assert!(e.message.contains("table LuciusJobs does not exist"), "{e}");
            let e = c.delete("LuciusJobs", "a", "JOB").await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Permanent, "{e}");
            let e = c
                .insert("LuciusJobs", &row("a", "JOB", 1))
                .await
                .unwrap_err();
            assert!(e.message.contains("does not exist"), "{e}");
            let e = c
                .query("LuciusJobs", "PartitionKey eq 'a'", None)
                .await
                .unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Permanent, "{e}");
            assert_eq!(fake.seen().len(), 6, "nothing retried");
        }

        #[tokio::test(start_paused = true)]
        async fn a_table_being_deleted_is_transient_and_not_taken_for_an_existing_table() {
            let fake = FakeService::new(
                vec![Answer::refusal(
                    409,
                    "TableAlreadyExists",
                    "The table specified already exists.",
                )],
                Answer::refusal(
                    409,
                    "TableBeingDeleted",
                    "The specified table is being deleted.",
                ),
            );
            let c = fake.client(policy(3));
            // An existing table is what creating wants.
            assert_eq!(c.create_table("LuciusLedger").await, Ok(()));
            let e = c.create_table("LuciusLedger").await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Transient, "{e}");
            assert!(
                e.message.contains("table LuciusLedger is being deleted"),
                "{e}"
            );
            let e = c
                .upsert("LuciusLedger", &row("a", "b", 1))
                .await
                .unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Transient, "{e}");
            // 1 + 3 attempts + 3 attempts.
            assert_eq!(fake.seen().len(), 7);
        }

        /// A failed entity group transaction as the service answers it: `202`, and inside,
        /// one changeset response with the failing operation's status and error.
        fn failed_batch(status: &str, code: &str, index: usize, message: &str) -> Answer {
            let body = format!(
                "--batchresponse_b\r\nContent-Type: multipart/mixed; boundary=changesetresponse_c\r\n\r\n\
                 --changesetresponse_c\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
                 HTTP/1.1 {status}\r\nContent-ID: {}\r\nX-Content-Type-Options: nosniff\r\n\
                 Content-Type: application/json;odata=minimalmetadata;streaming=true;charset=utf-8\r\n\r\n\
                 {{\"odata.error\":{{\"code\":\"{code}\",\"message\":{{\"lang\":\"en-US\",\"value\":\"{index}:{message}\\nRequestId:r\\nTime:t\"}}}}}}\r\n\
                 --changesetresponse_c--\r\n--batchresponse_b--\r\n",
                index + 1
            );
            Answer::Reply {
                status: 202,
                code: None,
                body,
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_failed_batch_says_which_operation_failed_and_why() {
            let fake = FakeService::new(
                vec![
                    failed_batch(
                        "400 Bad Request",
                        "EntityTooLarge",
                        1,
                        "The entity is larger than the maximum allowed size.",
                    ),
                    failed_batch(
                        "412 Precondition Failed",
                        "UpdateConditionNotSatisfied",
                        2,
                        "The update condition specified in the request was not satisfied.",
                    ),
                    failed_batch(
                        "409 Conflict",
                        "EntityAlreadyExists",
                        0,
                        "The specified entity already exists.",
                    ),
                    failed_batch(
                        "503 Service Unavailable",
                        "ServerBusy",
                        0,
                        "The server is busy.",
                    ),
                ],
                Answer::refusal(400, "InvalidInput", "unused"),
            );
            let c = fake.client(policy(1));
            let ops = [
                BatchOp::Insert(row("p", "a", 1)),
                BatchOp::Insert(row("p", "b", 1)),
                BatchOp::Update(row("p", "c", 1), Revision::stored(ETAG)),
            ];
            let e = c.batch("T", "p", &ops).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::TooLarge, "{e}");
            assert!(
                e.message.contains(
                    "batch operation 1 (insert of (p, b)) failed: HTTP 400 EntityTooLarge: \
                     The entity is larger than the maximum allowed size"
                ),
                "{e}"
            );
            assert!(e.message.contains("nothing applied"), "{e}");
            let e = c.batch("T", "p", &ops).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Conflict, "{e}");
            assert!(
                e.message.contains("batch operation 2 (update of (p, c)) failed: HTTP 412 UpdateConditionNotSatisfied"),
                "{e}"
            );
            let e = c.batch("T", "p", &ops).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Conflict, "{e}");
            assert!(
                e.message.contains(
                    "batch operation 0 (insert of (p, a)) failed: HTTP 409 EntityAlreadyExists"
                ),
                "{e}"
            );
            let e = c.batch("T", "p", &ops).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Transient, "{e}");
            assert!(e.message.contains("ServerBusy"), "{e}");
        }

        #[tokio::test(start_paused = true)]
        async fn a_hanging_service_costs_one_budget_not_attempts_times_timeouts() {
            let fake = FakeService::new(vec![], Answer::Hang);
            let c = fake.client(policy(4));
            let t0 = Instant::now();
            let e = c.get("T", "a", "b").await.unwrap_err();
            let took = t0.elapsed();
            assert_eq!(e.kind, StoreErrorKind::Transient, "{e}");
            // 7 s, 200 ms, 7 s; a third attempt (400 ms + 7 s) would pass 20 s.
            assert_eq!(took, Duration::from_millis(14_200));
            assert_eq!(
                e.message,
                "table store: operation budget of 20 s exhausted after 2 attempts: \
                 get from T (a, b) timed out after 7000 ms"
            );
            assert_eq!(fake.seen().len(), 2);
        }

        #[tokio::test(start_paused = true)]
        async fn the_requests_of_one_operation_share_its_budget() {
            // The first get hangs once then finds nothing; the second and third hang.
            let fake = FakeService::new(vec![Answer::Hang, not_found_row()], Answer::Hang);
            let c = fake.client(policy(4));
            let t0 = Instant::now();
            let op = c.within(c.budget_from_now());
            assert_eq!(op.get("T", "a", "b").await, Ok(None));
            assert_eq!(t0.elapsed(), Duration::from_millis(7_200));
            // 12.8 s left: one attempt of 7 s; a retry (400 ms + 7 s) no longer fits.
            let e = op.get("T", "a", "c").await.unwrap_err();
            assert!(e.message.contains("exhausted after 1 attempt:"), "{e}");
            assert_eq!(t0.elapsed(), Duration::from_millis(14_200));
            // 5.8 s left: a first attempt is bounded by what is left.
            let e = op.get("T", "a", "d").await.unwrap_err();
            assert_eq!(
                e.message,
                "table store: operation budget of 20 s exhausted after 1 attempt: \
                 get from T (a, d) timed out after 5800 ms"
            );
            assert_eq!(t0.elapsed(), 20 * S);
            // Nothing left: the next request is not sent at all.
            let sent = fake.seen().len();
            let e = op.upsert("T", &row("a", "e", 1)).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Transient);
            assert!(
                e.message
                    .ends_with("exhausted after 0 attempts: upsert into T (a, e) was not sent"),
                "{e}"
            );
            assert_eq!(fake.seen().len(), sent);
            assert_eq!(t0.elapsed(), 20 * S);
            // Another operation has a budget of its own.
            let e = c.get("T", "a", "f").await.unwrap_err();
            assert!(e.message.contains("after 2 attempts"), "{e}");
        }

        #[tokio::test(start_paused = true)]
        async fn attempts_run_out_before_a_generous_budget() {
            let fake = FakeService::new(
                vec![],
                Answer::refusal(503, "ServerBusy", "The server is busy."),
            );
            let c = fake.client(RetryPolicy {
                operation_budget: 60 * S,
                ..policy(4)
            });
            let t0 = Instant::now();
            let e = c.get("T", "a", "b").await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Transient);
            assert!(!e.message.contains("budget"), "{e}");
            assert!(
                e.message
                    .contains("HTTP 503 ServerBusy: The server is busy"),
                "{e}"
            );
            assert_eq!(fake.seen().len(), 4);
            // Backoff 200 + 400 + 800 ms.
            assert_eq!(t0.elapsed(), Duration::from_millis(1_400));
        }

        #[tokio::test(start_paused = true)]
        async fn a_query_restarts_within_the_budget() {
            let fake = FakeService::new(
                vec![Answer::refusal(
                    500,
                    "OperationTimedOut",
                    "Operation could not be completed within the specified time.",
                )],
                Answer::Hang,
            );
            let c = fake.client(policy(4));
            let t0 = Instant::now();
            let e = c.query("T", "PartitionKey eq 'a'", None).await.unwrap_err();
            // 500 at once; 200 ms; a page hangs 7 s; 400 ms; a page hangs 7 s (t = 14.6 s);
            // 800 ms + 7 s would pass 20 s.
            assert_eq!(t0.elapsed(), Duration::from_millis(14_600));
            assert!(
                e.message.starts_with(
                    "table store: operation budget of 20 s exhausted after 3 attempts: query of T"
                ),
                "{e}"
            );
            assert_eq!(fake.seen().len(), 3);
        }
    }

    /// Against the service `LUCIUS_TEST_TABLE_CONNECTION` names (default Azurite): what only
    /// the client can send, since the store refuses it before sending.
    mod on_the_service {
        use azure_data_tables::clients::TableServiceClientBuilder;

        use super::*;

        async fn client_on_a_fresh_table() -> (Client, String) {
            let conn = std::env::var("LUCIUS_TEST_TABLE_CONNECTION")
                .unwrap_or_else(|_| "UseDevelopmentStorage=true".to_owned());
            let endpoint = crate::connection::parse(&conn).expect("a valid test connection");
            let retry = RetryPolicy::default();
            let service =
                TableServiceClientBuilder::with_location(endpoint.location, endpoint.credentials)
                    .client_options(pipeline_options(&retry))
                    .build();
            let client = Client::new(service, retry);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
            let table = format!("Refusals{}x{nanos}", std::process::id());
            if let Err(e) = client.create_table(&table).await {
                panic!(
                    "the table service did not answer: {e}. Start Azurite with \
                     `scripts/azurite.sh start` (or point LUCIUS_TEST_TABLE_CONNECTION at a \
                     storage account) and run the tests again."
                );
            }
            (client, table)
        }

        /// 40 properties of 30 000 ASCII characters: each property is fine, the entity
        /// (about 1.2 MB) is over the 1 MiB limit, a batch holding it well under 4 MiB.
        fn oversized(pk: &str, rk: &str) -> Row {
            let mut big = row(pk, rk, 1);
            for i in 0..40 {
                big.insert(format!("Data{i}"), "x".repeat(30_000).into());
            }
            big
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_entity_over_one_mebibyte_is_too_large_and_named_in_a_batch() {
            let (c, table) = client_on_a_fresh_table().await;
            // Upserts: Azurite checks the entity size of a replace, not of an insert.
            let e = c
                .upsert(&table, &oversized("p", "alone"))
                .await
                .unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::TooLarge, "{e}");
            assert!(e.message.contains("HTTP 400 EntityTooLarge: "), "{e}");
            let ops = [
                BatchOp::Insert(row("p", "small", 10)),
                BatchOp::Upsert(oversized("p", "big")),
                BatchOp::Insert(row("p", "after", 10)),
            ];
            assert!(
                check_batch("p", &ops).is_ok(),
                "the store's own checks pass"
            );
            let e = c.batch(&table, "p", &ops).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::TooLarge, "{e}");
            assert!(
                e.message.contains(
                    "batch operation 1 (upsert of (p, big)) failed: HTTP 400 EntityTooLarge"
                ),
                "{e}"
            );
            assert_eq!(
                c.get(&table, "p", "small").await,
                Ok(None),
                "nothing applied"
            );
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_batch_conflict_names_its_operation_and_code() {
            let (c, table) = client_on_a_fresh_table().await;
            let first = c.insert(&table, &row("p", "b", 1)).await.unwrap();
            c.insert(&table, &row("p", "c", 1)).await.unwrap();
            let ops = [
                BatchOp::Insert(row("p", "a", 1)),
                BatchOp::Update(row("p", "b", 2), first.clone()),
                BatchOp::Insert(row("p", "c", 3)),
            ];
            let e = c.batch(&table, "p", &ops).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Conflict, "{e}");
            assert!(
                e.message.contains(
                    "batch operation 2 (insert of (p, c)) failed: HTTP 409 EntityAlreadyExists: "
                ),
                "{e}"
            );
            // Move the row on: the batch's If-Match is now stale.
            c.update(&table, &row("p", "b", 4), &first).await.unwrap();
            let ops = [
                BatchOp::Insert(row("p", "a", 1)),
                BatchOp::Update(row("p", "b", 5), first),
            ];
            let e = c.batch(&table, "p", &ops).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Conflict, "{e}");
            assert!(
                e.message.contains(
                    "batch operation 1 (update of (p, b)) failed: HTTP 412 UpdateConditionNotSatisfied"
                ),
                "{e}"
            );
            assert_eq!(c.get(&table, "p", "a").await, Ok(None), "nothing applied");
        }
    }
}
