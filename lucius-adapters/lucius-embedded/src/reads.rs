//! Reads: a small pool of read connections, used on tokio's blocking threads, and the
//! queries behind `load_job`, `outbox`, `active_jobs`, `partitions` and the lease reads.
//! In WAL mode a reader sees the last committed state and never waits for the writer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lucius_core::{
    EndedJob, JobId, JobRecord, Lease, OutboxEntry, OutboxQuery, Partition, Revision, StoreError,
    Timestamp,
};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{reader_gone, sqlite};
use crate::open;
use crate::rows::decode;

/// Idle read connections kept for reuse.
const IDLE_READERS: usize = 8;

/// Read connections to one database file.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf) -> Readers {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a read connection, on a blocking thread.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = me.take()?;
            let out = f(&conn);
            me.give_back(conn);
            out
        })
        .await
        .map_err(reader_gone)?
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => {
                let conn = open::connection(&self.path).map_err(|e| {
                    StoreError::transient(format!("embedded store: opening a reader: {e}"))
                })?;
                // A reader's cache is smaller than the writer's: up to IDLE_READERS of them
                // live at once.
                conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -8192;")
                    .map_err(|e| sqlite("configuring a reader", e))?;
                Ok(conn)
            }
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_READERS && conn.is_autocommit() {
            idle.push(conn);
        }
    }
}

/// A job with its steps and outbox entries, read in one snapshot.
pub(crate) fn load_job(conn: &Connection, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
    let what = || format!("job {id}");
    conn.execute_batch("BEGIN")
        .map_err(|e| sqlite("starting a read", e))?;
    let out = load_job_in(conn, id);
    let end = conn.execute_batch("COMMIT");
    let out = out?;
    end.map_err(|e| sqlite(format_args!("ending the read of {}", what()), e))?;
    Ok(out)
}

fn load_job_in(conn: &Connection, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
    let job: Option<(String, i64, i64)> = conn
        .prepare_cached("SELECT body, rev, seq FROM jobs WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(|e| sqlite(format_args!("reading job {id}"), e))?;
    let Some((body, rev, seq)) = job else {
        return Ok(None);
    };
    let job = decode(&body, rev, || format!("job {id}"))?;
    let steps = rows(
        conn,
        "SELECT body, rev FROM steps WHERE job_seq = ?1 ORDER BY idx",
        params![seq],
        || format!("a step of job {id}"),
    )?;
    let outbox = rows(
        conn,
        "SELECT body, rev FROM outbox WHERE job_seq = ?1 ORDER BY id",
        params![seq],
        || format!("an outbox entry of job {id}"),
    )?;
    Ok(Some(JobRecord { job, steps, outbox }))
}

fn rows<T: serde::de::DeserializeOwned + crate::rows::Revised>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: impl Fn() -> String,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| sqlite(format_args!("reading {}", what()), e))?;
    let raw = stmt
        .query_map(params, |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| sqlite(format_args!("reading {}", what()), e))?;
    raw.iter()
        .map(|(body, rev)| decode(body, *rev, &what))
        .collect()
}

/// Outbox entries matching `q`, in `(nextAttemptAt, id)` order.
pub(crate) fn outbox(conn: &Connection, q: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut sql = String::from("SELECT body, rev FROM outbox WHERE 1");
    let mut args: Vec<Value> = Vec::with_capacity(6);
    if let Some(p) = &q.partition {
        args.push(Value::Text(p.to_string()));
        sql.push_str(&format!(" AND partition = ?{}", args.len()));
    }
    if let Some(s) = q.status {
        args.push(Value::Text(s.as_str().to_owned()));
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(t) = q.due_by {
        args.push(Value::Integer(t.0));
        sql.push_str(&format!(" AND next_attempt_at <= ?{}", args.len()));
    }
    if let Some((at, id)) = &q.after {
        args.push(Value::Integer(at.0));
        args.push(Value::Text(id.as_str().to_owned()));
        sql.push_str(&format!(
            " AND (next_attempt_at, id) > (?{}, ?{})",
            args.len() - 1,
            args.len()
        ));
    }
    args.push(Value::Integer(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(
        " ORDER BY next_attempt_at, id LIMIT ?{}",
        args.len()
    ));
    rows(conn, &sql, rusqlite::params_from_iter(args), || {
        "an outbox entry".to_owned()
    })
}

/// Ids of the partition's non-terminal jobs in creation order, after `after` (from the
/// start when `after` no longer exists).
pub(crate) fn active_jobs(
    conn: &Connection,
    partition: &Partition,
    after: Option<&JobId>,
    limit: usize,
) -> Result<Vec<JobId>, StoreError> {
    let p = partition.to_string();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id FROM jobs WHERE partition = ?1 AND active = 1 \
             AND seq > coalesce((SELECT seq FROM jobs WHERE id = ?2), 0) \
             ORDER BY seq LIMIT ?3",
        )
        .map_err(|e| sqlite(format_args!("listing active jobs of {p}"), e))?;
    let ids = stmt
        .query_map(params![p, after.map_or("", |a| a.as_str()), limit], |r| {
            r.get::<_, String>(0)
        })
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| sqlite(format_args!("listing active jobs of {p}"), e))?;
    ids.iter().map(|id| stored_job_id(id)).collect()
}

/// A job id read back from `jobs`.
fn stored_job_id(id: &str) -> Result<JobId, StoreError> {
    JobId::parse(id).map_err(|e| {
        StoreError::permanent(format!(
            "embedded store: jobs holds an id that is not a job id ({id:?}): {e}"
        ))
    })
}

/// Finished jobs that ended by `ended_by`, earliest end first (then creation order).
pub(crate) fn ended_jobs(
    conn: &Connection,
    ended_by: Timestamp,
    limit: usize,
) -> Result<Vec<EndedJob>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, ended_at, rev FROM jobs WHERE ended_at IS NOT NULL AND ended_at <= ?1 \
             ORDER BY ended_at, seq LIMIT ?2",
        )
        .map_err(|e| sqlite("listing finished jobs", e))?;
    let raw = stmt
        .query_map(params![ended_by.0, limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| sqlite("listing finished jobs", e))?;
    raw.into_iter()
        .map(|(id, ended_at, rev)| {
            Ok(EndedJob {
                job_id: stored_job_id(&id)?,
                ended_at: Timestamp(ended_at),
                revision: Revision::counter(rev as u64),
            })
        })
        .collect()
}

/// Every partition a job was written to.
pub(crate) fn partitions(conn: &Connection) -> Result<Vec<Partition>, StoreError> {
    strings(conn, "SELECT partition FROM partitions ORDER BY partition")?
        .into_iter()
        .map(|p| parse_partition(&p))
        .collect()
}

fn strings(conn: &Connection, sql: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| sqlite("listing partitions", e))?;
    stmt.query_map([], |r| r.get::<_, String>(0))
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| sqlite("listing partitions", e))
}

fn parse_partition(p: &str) -> Result<Partition, StoreError> {
    Partition::parse(p).map_err(|e| {
        StoreError::permanent(format!(
            "embedded store: a stored partition {p:?} does not parse: {e}"
        ))
    })
}

/// Lease rows: one partition's, or every one.
pub(crate) fn leases(
    conn: &Connection,
    partition: Option<&Partition>,
) -> Result<Vec<Lease>, StoreError> {
    let (sql, key) = match partition {
        Some(p) => (
            "SELECT partition, owner, expires_at, epoch, rev FROM leases WHERE partition = ?1",
            Some(p.to_string()),
        ),
        None => (
            "SELECT partition, owner, expires_at, epoch, rev FROM leases ORDER BY partition",
            None,
        ),
    };
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| sqlite("reading leases", e))?;
    let map = |r: &rusqlite::Row<'_>| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    };
    let raw = match &key {
        Some(k) => stmt.query_map([k], map),
        None => stmt.query_map([], map),
    }
    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
    .map_err(|e| sqlite("reading leases", e))?;
    raw.into_iter()
        .map(|(p, owner, expires, epoch, rev)| {
            Ok(Lease {
                partition: parse_partition(&p)?,
                owner,
                expires_at: Timestamp(expires),
                epoch: epoch as u64,
                revision: Revision::counter(rev as u64),
            })
        })
        .collect()
}

/// Every dispatcher that announced itself.
pub(crate) fn members(conn: &Connection) -> Result<Vec<(String, Timestamp)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT member, alive_until FROM members ORDER BY member")
        .map_err(|e| sqlite("reading dispatchers", e))?;
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, Timestamp(r.get::<_, i64>(1)?)))
    })
    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
    .map_err(|e| sqlite("reading dispatchers", e))
}
