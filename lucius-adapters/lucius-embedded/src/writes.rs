//! What the writer applies inside a request's savepoint: a new job (or the completion of
//! an interrupted one), a job's changes, a lease, an announcement. Every update is a
//! compare-and-swap on `rev`; every insert refuses an existing row.

use lucius_core::{
    Changes, CreateOutcome, IdempotencyRecord, Job, JobId, JobRecord, Lease, NewJob, OutboxEntry,
    Partition, Revision, Step, StoreError, Timestamp,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{bad_row, sqlite};
use crate::rows::{decode, encode, expected_rev, missing_body, Encoded};

/// Writes every row of a new job, from their encoded bodies; the first directive only if
/// `with_directive`. Returns the rows written, with their revisions.
fn write_new_job(
    conn: &Connection,
    enc: &Encoded<NewJob>,
    with_directive: bool,
) -> Result<JobRecord, StoreError> {
    let (new, mut bodies) = (&enc.rows, enc.bodies.iter().map(String::as_str));
    let mut body = || bodies.next().ok_or_else(missing_body);
    let rev = |r: i64| Revision::counter(r as u64);
    insert_claim(conn, &new.claim, body()?)?;
    let seq = insert_job(conn, &new.job, body()?)?;
    let job = Job {
        revision: rev(1),
        ..new.job.clone()
    };
    let mut steps = Vec::with_capacity(new.steps.len());
    for s in &new.steps {
        steps.push(Step {
            revision: rev(insert_step(conn, s, body()?, seq)?),
            ..s.clone()
        });
    }
    let mut outbox = Vec::with_capacity(1);
    if with_directive {
        outbox.push(OutboxEntry {
            revision: rev(insert_entry(conn, &new.outbox, body()?, seq)?),
            ..new.outbox.clone()
        });
    }
    Ok(JobRecord { job, steps, outbox })
}

pub(crate) fn create_job(
    conn: &Connection,
    enc: &Encoded<NewJob>,
) -> Result<CreateOutcome, StoreError> {
    let new = &enc.rows;
    let claim = &new.claim;
    let existing: Option<String> = conn
        .prepare_cached("SELECT body FROM claims WHERE tenant = ?1 AND key = ?2")
        .and_then(|mut s| {
            s.query_row(params![claim.tenant_id.as_str(), &*claim.key], |r| r.get(0))
                .optional()
        })
        .map_err(|e| sqlite(format_args!("reading the claim on key {:?}", claim.key), e))?;
    let Some(existing) = existing else {
        let rec = write_new_job(conn, enc, true)?;
        return Ok(CreateOutcome::Created(Box::new(rec)));
    };
    let existing: IdempotencyRecord = serde_json::from_str(&existing)
        .map_err(|e| bad_row(format_args!("the claim on key {:?}", claim.key), e))?;
    if existing.request_hash == claim.request_hash && existing.job_id == new.job.id {
        complete_intake(conn, new, &existing)?;
    }
    Ok(CreateOutcome::Existing(existing))
}

/// Writes whatever rows of a replayed request's job are missing, as the interrupted
/// intake wrote them (or would have): unless its job is already terminal.
fn complete_intake(
    conn: &Connection,
    new: &NewJob,
    claim: &IdempotencyRecord,
) -> Result<(), StoreError> {
    let stored = load_job_row(conn, &new.job.id)?;
    if stored.as_ref().is_some_and(|j| j.status.is_terminal()) {
        return Ok(());
    }
    let first_step = load_step_row(conn, &new.job.id, new.outbox.step_index)?;
    let new = new.as_first_written(claim, stored.as_ref(), first_step.as_ref());
    let seq = match stored {
        Some(_) => job_seq(conn, &new.job.id)?,
        None => insert_job(
            conn,
            &new.job,
            &encode(&new.job, || format!("job {}", new.job.id))?,
        )?,
    };
    for s in &new.steps {
        if !step_exists(conn, &s.job_id, s.index)? {
            let body = encode(s, || format!("step {} of job {}", s.index, s.job_id))?;
            insert_step(conn, s, &body, seq)?;
        }
    }
    let has_entry: bool = conn
        .prepare_cached(
            "SELECT 1 FROM outbox WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?1) AND id = ?2",
        )
        .and_then(|mut s| s.exists([new.job.id.as_str(), new.outbox.id.as_str()]))
        .map_err(|e| sqlite(format_args!("reading outbox entry {}", new.outbox.id), e))?;
    if !has_entry {
        let body = encode(&new.outbox, || format!("outbox entry {}", new.outbox.id))?;
        insert_entry(conn, &new.outbox, &body, seq)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) fn torn_intake(conn: &Connection, enc: &Encoded<NewJob>) -> Result<(), StoreError> {
    write_new_job(conn, enc, false).map(drop)
}

fn load_job_row(conn: &Connection, id: &JobId) -> Result<Option<Job>, StoreError> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT body, rev FROM jobs WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| sqlite(format_args!("reading job {id}"), e))?;
    row.map(|(body, rev)| decode::<Job>(&body, rev, || format!("job {id}")))
        .transpose()
}

fn load_step_row(conn: &Connection, id: &JobId, index: u32) -> Result<Option<Step>, StoreError> {
    let row: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT body, rev FROM steps \
             WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?1) AND idx = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![id.as_str(), index], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| sqlite(format_args!("reading step {index} of job {id}"), e))?;
    row.map(|(body, rev)| decode::<Step>(&body, rev, || format!("step {index} of job {id}")))
        .transpose()
}

fn step_exists(conn: &Connection, job: &JobId, index: u32) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT 1 FROM steps WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?1) AND idx = ?2",
    )
    .and_then(|mut s| s.exists(params![job.as_str(), index]))
    .map_err(|e| sqlite(format_args!("reading step {index} of job {job}"), e))
}

fn insert_claim(conn: &Connection, c: &IdempotencyRecord, body: &str) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO claims (tenant, key, job_id, body) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                c.tenant_id.as_str(),
                &*c.key,
                c.job_id.as_str(),
                body
            ])
        })
        .map_err(|e| sqlite(format_args!("writing the claim on key {:?}", c.key), e))?;
    match n {
        1 => Ok(()),
        _ => Err(StoreError::conflict("idempotency key already claimed")),
    }
}

/// Inserts a new job (revision 1) and returns its creation sequence.
fn insert_job(conn: &Connection, j: &Job, body: &str) -> Result<i64, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO jobs (id, partition, active, rev, body, ended_at) \
             VALUES (?1, ?2, ?3, 1, ?4, ?5) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                j.id.as_str(),
                j.partition.to_string(),
                !j.status.is_terminal(),
                body,
                ended_at(j)
            ])
        })
        .map_err(|e| sqlite(format_args!("writing job {}", j.id), e))?;
    if n != 1 {
        return Err(StoreError::conflict(format!("job {} already exists", j.id)));
    }
    let seq = conn.last_insert_rowid();
    note_partition(conn, j)?;
    Ok(seq)
}

/// Removes `p` from `partitions` if no active job and no `PENDING` entry is in it.
pub(crate) fn retire_partition(conn: &Connection, p: &Partition) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "DELETE FROM partitions WHERE partition = ?1 \
             AND NOT EXISTS (SELECT 1 FROM jobs WHERE partition = ?1 AND active = 1) \
             AND NOT EXISTS (SELECT 1 FROM outbox WHERE partition = ?1 AND status = 'PENDING')",
        )
        .and_then(|mut s| s.execute([p.to_string()]))
        .map_err(|e| sqlite(format_args!("retiring partition {p}"), e))?;
    Ok(n == 1)
}

/// When a terminal job ended (its last change); none while it runs.
fn ended_at(j: &Job) -> Option<i64> {
    j.status.is_terminal().then_some(j.updated_at.0)
}

/// Deletes a terminal job at `revision` with its steps, entries and claim.
pub(crate) fn purge_job(
    conn: &Connection,
    id: &JobId,
    revision: &Revision,
) -> Result<(), StoreError> {
    let row: Option<(i64, i64, String)> = conn
        .prepare_cached("SELECT seq, rev, body FROM jobs WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(|e| sqlite(format_args!("reading job {id}"), e))?;
    let Some((seq, rev, body)) = row else {
        return Err(StoreError::not_found(format!("job {id} does not exist")));
    };
    let given = expected_rev(revision);
    if rev != given {
        return Err(StoreError::conflict(format!(
            "job {id} changed: expected revision {revision}, found {rev}"
        )));
    }
    let job: Job = decode(&body, rev, || format!("job {id}"))?;
    if !job.status.is_terminal() {
        return Err(StoreError::conflict(format!(
            "job {id} is {}, not finished",
            job.status.as_str()
        )));
    }
    conn.prepare_cached("DELETE FROM steps WHERE job_seq = ?1")
        .and_then(|mut s| s.execute([seq]))
        .map_err(|e| sqlite(format_args!("deleting the steps of job {id}"), e))?;
    conn.prepare_cached("DELETE FROM outbox WHERE job_seq = ?1")
        .and_then(|mut s| s.execute([seq]))
        .map_err(|e| sqlite(format_args!("deleting the outbox entries of job {id}"), e))?;
    conn.prepare_cached("DELETE FROM claims WHERE tenant = ?1 AND key = ?2 AND job_id = ?3")
        .and_then(|mut s| {
            s.execute(params![
                job.tenant_id.as_str(),
                &*job.idempotency_key,
                id.as_str()
            ])
        })
        .map_err(|e| sqlite(format_args!("deleting the claim of job {id}"), e))?;
    conn.prepare_cached("DELETE FROM jobs WHERE seq = ?1")
        .and_then(|mut s| s.execute([seq]))
        .map_err(|e| sqlite(format_args!("deleting job {id}"), e))?;
    Ok(())
}

/// Records the job's partition in `partitions` (what `partitions()` lists).
fn note_partition(conn: &Connection, j: &Job) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO partitions (partition) VALUES (?1) ON CONFLICT DO NOTHING")
        .and_then(|mut s| s.execute([j.partition.to_string()]))
        .map_err(|e| sqlite(format_args!("recording partition {}", j.partition), e))?;
    Ok(())
}

/// Why a step or entry insert wrote nothing: its job does not exist (`NotFound`), or the
/// row does (`Conflict`).
fn not_inserted(conn: &Connection, job: &JobId, what: String) -> StoreError {
    match job_exists(conn, job) {
        Ok(true) => StoreError::conflict(format!("{what} already exists")),
        Ok(false) => StoreError::not_found(format!("{what}: job {job} does not exist")),
        Err(e) => e,
    }
}

/// The creation sequence of an existing job, which keys its steps and entries; `NotFound`
/// if there is no such job.
fn job_seq(conn: &Connection, job: &JobId) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT seq FROM jobs WHERE id = ?1")
        .and_then(|mut s| s.query_row([job.as_str()], |r| r.get(0)).optional())
        .map_err(|e| sqlite(format_args!("reading job {job}"), e))?
        .ok_or_else(|| StoreError::not_found(format!("job {job} does not exist")))
}

fn job_exists(conn: &Connection, job: &JobId) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
        .and_then(|mut s| s.exists([job.as_str()]))
        .map_err(|e| sqlite(format_args!("reading job {job}"), e))
}

fn update_job(conn: &Connection, j: &Job, body: &str) -> Result<i64, StoreError> {
    let given = expected_rev(&j.revision);
    let n = conn
        .prepare_cached(
            "UPDATE jobs SET partition = ?2, active = ?3, rev = rev + 1, body = ?4, \
             ended_at = ?6 WHERE id = ?1 AND rev = ?5",
        )
        .and_then(|mut s| {
            s.execute(params![
                j.id.as_str(),
                j.partition.to_string(),
                !j.status.is_terminal(),
                body,
                given,
                ended_at(j)
            ])
        })
        .map_err(|e| sqlite(format_args!("writing job {}", j.id), e))?;
    match n {
        1 => {
            note_partition(conn, j)?;
            Ok(given + 1)
        }
        _ => Err(lost_row(
            conn,
            "SELECT rev FROM jobs WHERE id = ?1",
            params![j.id.as_str()],
            format!("job {}", j.id),
            &j.revision,
        )),
    }
}

/// Inserts a new step of the job whose creation sequence is `seq` (from [`insert_job`]
/// or [`job_seq`]).
fn insert_step(conn: &Connection, s: &Step, body: &str, seq: i64) -> Result<i64, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO steps (job_seq, idx, rev, body) VALUES (?1, ?2, 1, ?3) \
             ON CONFLICT DO NOTHING",
        )
        .and_then(|mut st| st.execute(params![seq, s.index, body]))
        .map_err(|e| {
            sqlite(
                format_args!("writing step {} of job {}", s.index, s.job_id),
                e,
            )
        })?;
    match n {
        1 => Ok(1),
        _ => Err(not_inserted(
            conn,
            &s.job_id,
            format!("step {} of job {}", s.index, s.job_id),
        )),
    }
}

fn update_step(conn: &Connection, s: &Step, body: &str) -> Result<i64, StoreError> {
    let given = expected_rev(&s.revision);
    let n = conn
        .prepare_cached(
            "UPDATE steps SET rev = rev + 1, body = ?3 \
             WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?1) AND idx = ?2 AND rev = ?4",
        )
        .and_then(|mut st| st.execute(params![s.job_id.as_str(), s.index, body, given]))
        .map_err(|e| {
            sqlite(
                format_args!("writing step {} of job {}", s.index, s.job_id),
                e,
            )
        })?;
    match n {
        1 => Ok(given + 1),
        _ => Err(lost_row(
            conn,
            "SELECT rev FROM steps WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?1) AND idx = ?2",
            params![s.job_id.as_str(), s.index],
            format!("step {} of job {}", s.index, s.job_id),
            &s.revision,
        )),
    }
}

/// Inserts a new outbox entry; `seq` as in [`insert_step`].
fn insert_entry(
    conn: &Connection,
    e: &OutboxEntry,
    body: &str,
    seq: i64,
) -> Result<i64, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO outbox (job_seq, id, partition, status, next_attempt_at, rev, body) \
             VALUES (?2, ?1, ?3, ?4, ?5, 1, ?6) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                e.id.as_str(),
                seq,
                e.partition.to_string(),
                e.status.as_str(),
                e.next_attempt_at.0,
                body
            ])
        })
        .map_err(|err| sqlite(format_args!("writing outbox entry {}", e.id), err))?;
    match n {
        1 => Ok(1),
        _ => Err(not_inserted(
            conn,
            &e.job_id,
            format!("outbox entry {}", e.id),
        )),
    }
}

fn update_entry(conn: &Connection, e: &OutboxEntry, body: &str) -> Result<i64, StoreError> {
    let given = expected_rev(&e.revision);
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET partition = ?2, status = ?3, next_attempt_at = ?4, \
             rev = rev + 1, body = ?5 \
             WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?7) AND id = ?1 AND rev = ?6",
        )
        .and_then(|mut s| {
            s.execute(params![
                e.id.as_str(),
                e.partition.to_string(),
                e.status.as_str(),
                e.next_attempt_at.0,
                body,
                given,
                e.job_id.as_str()
            ])
        })
        .map_err(|err| sqlite(format_args!("writing outbox entry {}", e.id), err))?;
    match n {
        1 => Ok(given + 1),
        _ => Err(lost_row(
            conn,
            "SELECT rev FROM outbox WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?2) AND id = ?1",
            params![e.id.as_str(), e.job_id.as_str()],
            format!("outbox entry {}", e.id),
            &e.revision,
        )),
    }
}

/// Why a guarded update changed no row: the row is absent (`NotFound`) or has another
/// revision (`Conflict`).
fn lost_row(
    conn: &Connection,
    sql: &str,
    key: impl rusqlite::Params,
    what: String,
    given: &Revision,
) -> StoreError {
    let found: Result<Option<i64>, _> = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row(key, |r| r.get(0)).optional());
    match found {
        Ok(None) => StoreError::not_found(format!("{what} does not exist")),
        Ok(Some(n)) => StoreError::conflict(format!(
            "{what} changed: expected revision {given}, found {n}"
        )),
        Err(e) => sqlite(format_args!("reading {what}"), e),
    }
}

// commit ------------------------------------------------------------------------------

pub(crate) fn commit(conn: &Connection, enc: &Encoded<Changes>) -> Result<Changes, StoreError> {
    let changes = &enc.rows;
    if let Some(id) = changes.job_id() {
        let other = changes
            .steps
            .iter()
            .map(|s| &s.job_id)
            .chain(changes.outbox.iter().map(|e| &e.job_id))
            .chain(changes.job.iter().map(|j| &j.id))
            .find(|j| *j != id);
        if let Some(other) = other {
            return Err(StoreError::permanent(format!(
                "one commit changes one job: {id} and {other}"
            )));
        }
    }
    let rows = changes.steps.len() + changes.outbox.len() + usize::from(changes.job.is_some());
    if enc.bodies.len() != rows {
        return Err(missing_body());
    }
    let (step_bodies, rest) = enc.bodies.split_at(changes.steps.len());
    let (entry_bodies, job_body) = rest.split_at(changes.outbox.len());
    // Steps and entries are keyed by their job's sequence: a new job goes in first, and
    // its sequence keys them. Its revision still comes last, in the order
    // `assign_revisions` reads them.
    let new_job = match (&changes.job, job_body.first()) {
        (Some(j), Some(body)) if j.revision.is_new() => Some(insert_job(conn, j, body)?),
        _ => None,
    };
    let inserts = changes.steps.iter().any(|s| s.revision.is_new())
        || changes.outbox.iter().any(|e| e.revision.is_new());
    // The sequence keying new steps and entries: the new job's, or the stored job's (one
    // lookup, made only if something is inserted; unused otherwise).
    let seq = match (new_job, changes.job_id()) {
        (Some(seq), _) => seq,
        (None, Some(id)) if inserts => job_seq(conn, id)?,
        _ => 0,
    };
    let mut revs = Vec::with_capacity(rows);
    for (s, body) in changes.steps.iter().zip(step_bodies) {
        revs.push(match s.revision.is_new() {
            true => insert_step(conn, s, body, seq)?,
            false => update_step(conn, s, body)?,
        });
    }
    for (e, body) in changes.outbox.iter().zip(entry_bodies) {
        revs.push(match e.revision.is_new() {
            true => insert_entry(conn, e, body, seq)?,
            false => update_entry(conn, e, body)?,
        });
    }
    if let (Some(j), Some(body)) = (&changes.job, job_body.first()) {
        revs.push(match new_job {
            Some(_) => 1,
            None => update_job(conn, j, body)?,
        });
    }
    let mut out = changes.clone();
    out.assign_revisions(revs.into_iter().map(|n| Revision::counter(n as u64)));
    Ok(out)
}

// leases ------------------------------------------------------------------------------

pub(crate) fn put_lease(conn: &Connection, lease: &Lease) -> Result<Lease, StoreError> {
    let p = lease.partition.to_string();
    let epoch = i64::try_from(lease.epoch).map_err(|_| {
        StoreError::permanent(format!("lease {p}: epoch {} is too large", lease.epoch))
    })?;
    let rev = if lease.revision.is_new() {
        let n = conn
            .prepare_cached(
                "INSERT INTO leases (partition, owner, expires_at, epoch, rev) \
                 VALUES (?1, ?2, ?3, ?4, 1) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![p, lease.owner, lease.expires_at.0, epoch]))
            .map_err(|e| sqlite(format_args!("writing lease {p}"), e))?;
        if n != 1 {
            return Err(StoreError::conflict(format!("lease {p} already exists")));
        }
        1
    } else {
        let given = expected_rev(&lease.revision);
        let n = conn
            .prepare_cached(
                "UPDATE leases SET owner = ?2, expires_at = ?3, epoch = ?4, rev = rev + 1 \
                 WHERE partition = ?1 AND rev = ?5",
            )
            .and_then(|mut s| s.execute(params![p, lease.owner, lease.expires_at.0, epoch, given]))
            .map_err(|e| sqlite(format_args!("writing lease {p}"), e))?;
        if n != 1 {
            return Err(lost_row(
                conn,
                "SELECT rev FROM leases WHERE partition = ?1",
                params![p],
                format!("lease {p}"),
                &lease.revision,
            ));
        }
        given + 1
    };
    Ok(Lease {
        revision: Revision::counter(rev as u64),
        ..lease.clone()
    })
}

/// How long a dispatcher's membership row outlives its last announcement (as
/// `lucius_table::MEMBER_RETENTION`): ids are usually `host-pid`, so each restart leaves
/// one behind.
const MEMBER_RETENTION_MS: i64 = 24 * 3600 * 1000;

pub(crate) fn announce(
    conn: &Connection,
    member: &str,
    until: Timestamp,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO members (member, alive_until) VALUES (?1, ?2) \
         ON CONFLICT (member) DO UPDATE SET alive_until = excluded.alive_until",
    )
    .and_then(|mut s| s.execute(params![member, until.0]))
    .map_err(|e| sqlite(format_args!("announcing dispatcher {member:?}"), e))?;
    conn.prepare_cached("DELETE FROM members WHERE alive_until < ?1")
        .and_then(|mut s| s.execute([until.0.saturating_sub(MEMBER_RETENTION_MS)]))
        .map_err(|e| sqlite("removing long-gone dispatchers", e))?;
    Ok(())
}
