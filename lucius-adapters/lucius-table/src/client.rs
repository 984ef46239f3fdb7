//! [`Client`]: the few Table requests the store makes, each counted by kind, bounded by a
//! timeout, retried with backoff when the service says "later", and mapped to
//! [`StoreError`] kinds.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::{Etag, StatusCode};
use azure_data_tables::prelude::*;
use futures::StreamExt;
use lucius_core::{Revision, StoreError, StoreErrorKind};
use serde_json::Value;

use crate::config::RetryPolicy;
use crate::entity::{Row, MAX_BATCH_BYTES, MAX_BATCH_OPS};

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
            BatchOp::Delete(_) => None,
        }
    }

    fn bytes(&self) -> usize {
        // Body plus the per-operation MIME headers and URL.
        let body = match self {
            BatchOp::Insert(r) | BatchOp::Update(r, _) | BatchOp::Upsert(r) => {
                serde_json::to_string(r).map_or(0, |s| s.len())
            }
            BatchOp::Delete(_) => 0,
        };
        body + 512
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
}

impl Client {
    pub(crate) fn new(service: TableServiceClient, retry: RetryPolicy) -> Client {
        Client {
            service,
            retry,
            counters: Arc::default(),
            crash_after: Arc::new(AtomicI64::new(-1)),
        }
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

    /// Sends one request (re-created per attempt by `send`), counting and retrying it.
    async fn call<T, F, Fut>(&self, kind: Kind, what: &str, send: F) -> Result<T, StoreError>
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
        let mut delay = self.retry.base_delay;
        let mut attempt = 1;
        loop {
            self.counters.0[kind as usize].fetch_add(1, Ordering::Relaxed);
            let result = match tokio::time::timeout(self.retry.request_timeout, send()).await {
                Ok(r) => r.map_err(|e| map_error(&e, what)),
                Err(_) => Err(StoreError::transient(format!(
                    "{what} timed out after {} ms",
                    self.retry.request_timeout.as_millis()
                ))),
            };
            match result {
                Err(e) if e.kind == StoreErrorKind::Transient && attempt < self.retry.attempts => {
                    tracing::debug!(attempt, error = %e, "retrying table request");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn create_table(&self, table: &str) -> Result<(), StoreError> {
        let t = self.service.table_client(table);
        match self
            .call(Kind::CreateTable, &format!("create table {table}"), || {
                t.create().into_future()
            })
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
            .call(Kind::Insert, &what, || async {
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
            .call(Kind::Update, &what, || async {
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
        self.call(Kind::Upsert, &what, || async {
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
            .call(Kind::Delete, &what, || e.delete().into_future())
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
            .call(Kind::Delete, &what, || {
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
            .call(Kind::Get, &what, || e.get::<Row>().into_future())
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
        // Pages are requested one by one; each page is one counted request. A transient
        // failure mid-way restarts the query (reads are idempotent).
        let mut attempt = 1;
        'restart: loop {
            out.clear();
            let mut stream = q.clone().into_stream::<Row>();
            loop {
                let page =
                    match tokio::time::timeout(self.retry.request_timeout, stream.next()).await {
                        // The stream ends without a request after a page with no
                        // continuation: only pages count.
                        Ok(None) => return Ok(out),
                        Ok(Some(r)) => {
                            self.count(Kind::Query);
                            r.map_err(|e| map_error(&e, &what))
                        }
                        Err(_) => {
                            self.count(Kind::Query);
                            Err(StoreError::transient(format!("{what} timed out")))
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
                    Err(e)
                        if e.kind == StoreErrorKind::Transient && attempt < self.retry.attempts =>
                    {
                        tokio::time::sleep(self.retry.base_delay * attempt).await;
                        attempt += 1;
                        continue 'restart;
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
                };
            }
            Ok(tx)
        };
        let resp = self
            .call(Kind::Batch, &what, || async {
                build()?.into_future().await
            })
            .await?;
        // A failed batch still answers 202: the failure is inside, as one response whose
        // status is the failing operation's. Nothing of the batch was applied then.
        if let Some(bad) = resp
            .operation_responses
            .iter()
            .find(|r| !r.status_code.is_success())
        {
            return Err(status_error(
                bad.status_code,
                None,
                &format!("{what} (nothing applied)"),
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
        if let BatchOp::Update(r, rev) = op {
            check_revision(rev, &keys(r))?;
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

/// Maps an SDK error to the store's kinds.
fn map_error(e: &azure_core::Error, what: &str) -> StoreError {
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            status_error(*status, error_code.as_deref(), what)
        }
        ErrorKind::Io => {
            StoreError::transient(format!("{what}: cannot reach the table service: {e}"))
        }
        ErrorKind::Credential => StoreError::permanent(format!("{what}: credentials refused: {e}")),
        _ => StoreError::permanent(format!("{what}: {e}")),
    }
}

fn status_error(status: StatusCode, code: Option<&str>, what: &str) -> StoreError {
    let code_s = code.map(|c| format!(" ({c})")).unwrap_or_default();
    let msg = format!("{what}: HTTP {}{code_s}", u16::from(status));
    match (u16::from(status), code) {
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
        let k =
            |s: u16, c: Option<&str>| status_error(StatusCode::try_from(s).unwrap(), c, "x").kind;
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
}
