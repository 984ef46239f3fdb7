//! Rows as Table entities: key escaping, JSON bodies split over string properties, and the
//! service's size limits, checked before anything is sent.

use lucius_core::ids::Partition;
use lucius_core::{Revision, StoreError, Timestamp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// An entity as sent to and read from the service.
pub(crate) type Row = Map<String, Value>;

/// Largest string property: 64 KiB, counted in UTF-16 (so 32 Ki code units).
pub(crate) const MAX_STRING_UNITS: usize = 32 * 1024;
/// Largest body chunk in UTF-8 bytes. The service counts a string in UTF-16 (32 Ki units);
/// Azurite refuses a string whose UTF-8 body is longer than 32 Ki bytes, so chunks respect
/// both (a 1 MiB payload still fits: about 32 chunks of the 252 properties allowed).
pub(crate) const MAX_CHUNK_BYTES: usize = 32 * 1024;
/// Largest entity: 1 MiB, as the service sizes it.
pub(crate) const MAX_ENTITY_BYTES: usize = 1024 * 1024;
/// Largest batch: 100 operations.
pub(crate) const MAX_BATCH_OPS: usize = 100;
/// Largest batch payload: 4 MiB.
pub(crate) const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Name of the property holding the number of body chunks.
const CHUNKS: &str = "DataChunks";

/// The key form of a dispatch partition. `#` is forbidden in keys, so `tenant#YYYYMM`
/// becomes `tenant_YYYYMM`; tenants cannot hold `#` and the month is always six digits, so
/// splitting at the last `_` gives the partition back.
pub(crate) fn partition_key(p: &Partition) -> String {
    let s = p.to_string();
    match s.rsplit_once('#') {
        Some((t, ym)) => format!("{t}_{ym}"),
        None => s,
    }
}

/// The partition a [`partition_key`] names.
pub(crate) fn partition_from_key(key: &str) -> Result<Partition, StoreError> {
    let (t, ym) = key.rsplit_once('_').ok_or_else(|| {
        StoreError::permanent(format!("stored partition key {key:?} is not tenant_YYYYMM"))
    })?;
    Partition::parse(&format!("{t}#{ym}")).map_err(|e| StoreError::permanent(e.to_string()))
}

/// A timestamp as a fixed-width string, so string comparison in a filter is time order.
pub(crate) fn time_key(t: Timestamp) -> String {
    format!("{:020}", t.as_millis().max(0))
}

/// Quotes a string for an OData filter literal.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Builds an entity: keys, the value as JSON chunks (`Data0…`), and extra filterable
/// properties. Refuses, before sending, anything the service would refuse for size.
pub(crate) fn encode<T: Serialize>(
    pk: &str,
    rk: &str,
    what: &str,
    value: &T,
    extra: &[(&str, Value)],
) -> Result<Row, StoreError> {
    let json = serde_json::to_string(value)
        .map_err(|e| StoreError::permanent(format!("cannot serialise {what}: {e}")))?;
    let mut row = Row::new();
    row.insert("PartitionKey".into(), Value::String(pk.to_owned()));
    row.insert("RowKey".into(), Value::String(rk.to_owned()));
    for (k, v) in extra {
        row.insert((*k).to_owned(), v.clone());
    }
    let chunks = chunk(&json);
    row.insert(CHUNKS.into(), Value::from(chunks.len() as i64));
    for (i, c) in chunks.into_iter().enumerate() {
        row.insert(format!("Data{i}"), Value::String(c));
    }
    check_size(&row, what)?;
    Ok(row)
}

/// Decodes an entity built by [`encode`], with its ETag as revision.
pub(crate) fn decode<T: DeserializeOwned>(
    row: &Row,
    what: &str,
) -> Result<(T, Revision), StoreError> {
    let n = row.get(CHUNKS).and_then(Value::as_i64).unwrap_or(1).max(0) as usize;
    let mut json = String::new();
    for i in 0..n {
        match row.get(&format!("Data{i}")) {
            Some(Value::String(s)) => json.push_str(s),
            _ => {
                return Err(StoreError::permanent(format!(
                    "stored {what} lacks body chunk Data{i} of {n}"
                )))
            }
        }
    }
    let value = serde_json::from_str(&json)
        .map_err(|e| StoreError::permanent(format!("stored {what} is not readable: {e}")))?;
    let rev = match row.get("odata.etag").and_then(Value::as_str) {
        Some(e) => Revision::stored(e),
        None => Revision::NEW,
    };
    Ok((value, rev))
}

/// A string property of a row.
pub(crate) fn text<'a>(row: &'a Row, name: &str) -> Option<&'a str> {
    row.get(name).and_then(Value::as_str)
}

/// Splits `s` into pieces of at most [`MAX_STRING_UNITS`] UTF-16 code units and
/// [`MAX_CHUNK_BYTES`] UTF-8 bytes, at char boundaries.
fn chunk(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut units = 0;
    for c in s.chars() {
        let n = c.len_utf16();
        if units + n > MAX_STRING_UNITS || cur.len() + c.len_utf8() > MAX_CHUNK_BYTES {
            out.push(std::mem::take(&mut cur));
            units = 0;
        }
        cur.push(c);
        units += n;
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

/// The entity's size as the service counts it: 4 bytes + keys in UTF-16 + per property
/// 8 bytes + its name in UTF-16 + its value (strings 4 + UTF-16 bytes, numbers 8).
pub(crate) fn entity_size(row: &Row) -> usize {
    let utf16 = |s: &str| s.encode_utf16().count() * 2;
    let mut size = 4;
    for (k, v) in row {
        match k.as_str() {
            "PartitionKey" | "RowKey" => size += utf16(v.as_str().unwrap_or_default()),
            k if k.starts_with("odata.") || k.ends_with("@odata.type") => {}
            k => {
                size += 8 + utf16(k);
                size += match v {
                    Value::String(s) => 4 + utf16(s),
                    Value::Bool(_) => 1,
                    _ => 8,
                };
            }
        }
    }
    size
}

fn check_size(row: &Row, what: &str) -> Result<(), StoreError> {
    let size = entity_size(row);
    if size > MAX_ENTITY_BYTES {
        return Err(StoreError::too_large(format!(
            "{what} needs {size} bytes as a Table entity; the limit is {MAX_ENTITY_BYTES} bytes \
             (1 MiB, strings counted in UTF-16): make the payload smaller"
        )));
    }
    let props = row.len();
    if props > 252 {
        return Err(StoreError::too_large(format!(
            "{what} needs {props} properties; a Table entity holds at most 252"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_round_trip() {
        for p in ["acme#202403", "a_b.c-d#199901", "x_202401#202412"] {
            // The last one is not a valid tenant (no '#' in tenants) but '_' is.
            let Ok(part) = Partition::parse(p) else {
                continue;
            };
            let k = partition_key(&part);
            assert!(!k.contains('#'), "{k}");
            assert_eq!(partition_from_key(&k).unwrap(), part);
        }
        let p = Partition::parse("t_202401#202412").unwrap();
        assert_eq!(partition_key(&p), "t_202401_202412");
        assert_eq!(partition_from_key("t_202401_202412").unwrap(), p);
    }

    #[test]
    fn bodies_split_at_the_utf16_limit_and_join() {
        let big = "ü模".repeat(MAX_STRING_UNITS); // 2 units per pair
        let row = encode("p", "r", "test", &big, &[]).unwrap();
        let n = row["DataChunks"].as_i64().unwrap();
        assert!(n >= 5, "{n}"); // 160 KiB of UTF-8
        for i in 0..n {
            let s = row[&format!("Data{i}")].as_str().unwrap();
            assert!(s.encode_utf16().count() <= MAX_STRING_UNITS);
            assert!(s.len() <= MAX_CHUNK_BYTES);
        }
        let (back, _): (String, _) = decode(&row, "test").unwrap();
        assert_eq!(back, big);
        let emoji = "😀".repeat(MAX_STRING_UNITS); // surrogate pairs never split
        let row = encode("p", "r", "test", &emoji, &[]).unwrap();
        let (back, _): (String, _) = decode(&row, "test").unwrap();
        assert_eq!(back, emoji);
    }

    #[test]
    fn oversized_entities_are_refused_before_sending() {
        let big = "x".repeat(600 * 1024); // 1.2 MB in UTF-16
        let e = encode("p", "r", "job j", &big, &[]).unwrap_err();
        assert_eq!(e.kind, lucius_core::StoreErrorKind::TooLarge);
        assert!(e.message.contains("job j"), "{}", e.message);
        let ok = "x".repeat(400 * 1024);
        assert!(encode("p", "r", "job j", &ok, &[]).is_ok());
    }

    #[test]
    fn time_keys_sort_as_time() {
        assert!(time_key(Timestamp(9)) < time_key(Timestamp(10)));
        assert_eq!(time_key(Timestamp(1)).len(), 20);
        assert_eq!(literal("a'b"), "'a''b'");
    }
}
