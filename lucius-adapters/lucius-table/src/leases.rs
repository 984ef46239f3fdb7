//! [`LeaseStore`] on the leases table (both modes): partition leases and dispatcher
//! membership.
//!
//! | PartitionKey | RowKey | properties |
//! |---|---|---|
//! | `LEASE` | dispatch partition `tenant_YYYYMM` | `Owner` (absent once released), `ExpiresAt`, `Epoch` (`Edm.Int64`, ms since the epoch) |
//! | `MEMBER` | escaped dispatcher id | `Member` (the id as given), `AliveUntil` (`Edm.Int64`) |
//!
//! A lease row changes only with `If-Match: <etag>` (or is inserted when absent), so two
//! dispatchers racing for one partition get one success and one `Conflict`. Member rows
//! are upserts: each dispatcher writes only its own.

use async_trait::async_trait;
use lucius_core::ids::Partition;
use lucius_core::lease::Lease;
use lucius_core::{LeaseStore, Millis, Revision, StoreError, Timestamp};
use serde_json::Value;

use crate::entity::{literal, partition_from_key, partition_key, text, Row};
use crate::TableStore;

const LEASE: &str = "LEASE";
const MEMBER: &str = "MEMBER";
/// A member row whose `AliveUntil` is this much older than the newest one is removed by
/// [`LeaseStore::members`]: its dispatcher is long gone (ids are usually `host-pid`, so
/// every restart leaves one behind).
pub const MEMBER_RETENTION: Millis = Millis(24 * 3_600_000);
/// Longest dispatcher id (a RowKey holds at most 1 KiB; escaping can triple a byte).
const MAX_MEMBER_BYTES: usize = 300;

fn int64(row: &mut Row, name: &str, v: i64) {
    row.insert(name.to_owned(), Value::String(v.to_string()));
    row.insert(
        format!("{name}@odata.type"),
        Value::String("Edm.Int64".into()),
    );
}

/// Reads an `Edm.Int64` property (a string on the wire; a number from some emulators).
fn read_int64(row: &Row, name: &str, what: &str) -> Result<i64, StoreError> {
    match row.get(name) {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| StoreError::permanent(format!("stored {what} lacks a readable {name}")))
}

fn keyed(pk: &str, rk: &str) -> Row {
    let mut row = Row::new();
    row.insert("PartitionKey".into(), Value::String(pk.to_owned()));
    row.insert("RowKey".into(), Value::String(rk.to_owned()));
    row
}

fn lease_row(l: &Lease) -> Result<Row, StoreError> {
    let epoch = i64::try_from(l.epoch)
        .map_err(|_| StoreError::permanent(format!("lease epoch {} is too large", l.epoch)))?;
    let mut row = keyed(LEASE, &partition_key(&l.partition));
    if let Some(owner) = &l.owner {
        row.insert("Owner".into(), Value::String(owner.clone()));
    }
    int64(&mut row, "ExpiresAt", l.expires_at.as_millis());
    int64(&mut row, "Epoch", epoch);
    Ok(row)
}

fn read_lease(row: &Row) -> Result<Lease, StoreError> {
    let key = text(row, "RowKey").unwrap_or_default();
    let what = format!("lease {key}");
    let epoch = read_int64(row, "Epoch", &what)?;
    Ok(Lease {
        partition: partition_from_key(key)?,
        owner: text(row, "Owner").map(str::to_owned),
        expires_at: Timestamp(read_int64(row, "ExpiresAt", &what)?),
        epoch: u64::try_from(epoch)
            .map_err(|_| StoreError::permanent(format!("stored {what} has epoch {epoch}")))?,
        revision: match text(row, "odata.etag") {
            Some(e) => Revision::stored(e),
            None => Revision::NEW,
        },
    })
}

/// A dispatcher id as a RowKey: `%`, `'`, the characters keys forbid (`/ \ # ?`) and
/// control characters become `%XX`, so any id maps to one key and back.
pub(crate) fn member_key(id: &str) -> Result<String, StoreError> {
    if id.is_empty() || id.len() > MAX_MEMBER_BYTES {
        return Err(StoreError::permanent(format!(
            "dispatcher id {id:?} must be 1 to {MAX_MEMBER_BYTES} bytes"
        )));
    }
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        if matches!(c, '%' | '\'' | '/' | '\\' | '#' | '?') || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl TableStore {
    fn leases_table(&self) -> &str {
        &self.config.leases
    }
}

#[async_trait]
impl LeaseStore for TableStore {
    async fn lease(&self, partition: &Partition) -> Result<Option<Lease>, StoreError> {
        self.operation()
            .client
            .get(self.leases_table(), LEASE, &partition_key(partition))
            .await?
            .as_ref()
            .map(read_lease)
            .transpose()
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let f = format!("PartitionKey eq {}", literal(LEASE));
        let rows = self
            .operation()
            .client
            .query(self.leases_table(), &f, None)
            .await?;
        rows.iter().map(read_lease).collect()
    }

    async fn put_lease(&self, lease: Lease) -> Result<Lease, StoreError> {
        let row = lease_row(&lease)?;
        // NEW inserts (409 if present), anything else is If-Match (412 if changed): both
        // are `Conflict`.
        let revision = self
            .operation()
            .client
            .write(self.leases_table(), &row, &lease.revision)
            .await?;
        Ok(Lease { revision, ..lease })
    }

    async fn announce(&self, member: &str, until: Timestamp) -> Result<(), StoreError> {
        let mut row = keyed(MEMBER, &member_key(member)?);
        row.insert("Member".into(), Value::String(member.to_owned()));
        int64(&mut row, "AliveUntil", until.as_millis());
        self.operation()
            .client
            .upsert(self.leases_table(), &row)
            .await
    }

    async fn members(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let op = self.operation();
        let f = format!("PartitionKey eq {}", literal(MEMBER));
        let rows = op.client.query(self.leases_table(), &f, None).await?;
        let members = rows
            .iter()
            .map(|r| {
                let id = text(r, "Member")
                    .ok_or_else(|| StoreError::permanent("stored member row lacks Member"))?;
                let until = read_int64(r, "AliveUntil", &format!("member {id}"))?;
                let key = text(r, "RowKey").unwrap_or_default().to_owned();
                Ok((id.to_owned(), Timestamp(until), key))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Measured against the newest announcement, not a clock of the store's own.
        let newest = members.iter().map(|m| m.1).max().unwrap_or(Timestamp(0));
        let mut out = Vec::with_capacity(members.len());
        for (id, until, key) in members {
            if newest.since(until) > MEMBER_RETENTION {
                if let Err(e) = op.client.delete(self.leases_table(), MEMBER, &key).await {
                    tracing::warn!(member = %id, error = %e, "removing a stale member row failed");
                }
            } else {
                out.push((id, until));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_become_valid_distinct_keys() {
        assert_eq!(member_key("host-1.pid42").unwrap(), "host-1.pid42");
        assert_eq!(member_key("a/b#c?d\\e").unwrap(), "a%2Fb%23c%3Fd%5Ce");
        assert_eq!(member_key("it's").unwrap(), "it%27s");
        // '%' itself is escaped, so an id that looks escaped cannot collide.
        assert_ne!(member_key("a%2F").unwrap(), member_key("a/").unwrap());
        assert_eq!(member_key("t\u{7}").unwrap(), "t%07");
        assert!(member_key("").is_err());
        assert!(member_key(&"x".repeat(301)).is_err());
    }

    #[test]
    fn lease_rows_round_trip() {
        let p = Partition::parse("acme#202403").unwrap();
        let l = Lease {
            partition: p.clone(),
            owner: Some("a".into()),
            expires_at: Timestamp(1_709_596_830_000),
            epoch: 7,
            revision: Revision::NEW,
        };
        let mut row = lease_row(&l).unwrap();
        assert_eq!(row["RowKey"], "acme_202403");
        assert_eq!(row["Epoch@odata.type"], "Edm.Int64");
        assert_eq!(read_lease(&row).unwrap(), l);
        let released = Lease { owner: None, ..l };
        row = lease_row(&released).unwrap();
        assert!(!row.contains_key("Owner"));
        row.insert("odata.etag".into(), "W/\"x\"".into());
        let back = read_lease(&row).unwrap();
        assert_eq!(back.owner, None);
        assert_eq!(back.revision, Revision::stored("W/\"x\""));
    }
}
