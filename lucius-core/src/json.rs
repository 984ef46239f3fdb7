//! [`Json`]: an immutable JSON value held as its compact text, shared by reference count.
//!
//! Payloads and results are written once (at intake, or when a worker completes a step)
//! and then only copied: into the steps, into every directive, into store rows. Held as a
//! `serde_json::Value`, each object costs a B-tree node of about 650 bytes and every copy
//! is a deep clone; held as text behind an `Arc`, a copy is a reference-count increment and
//! a payload costs its length. It is written to the wire as is, without re-serialising.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

pub(crate) mod number;

/// An immutable JSON value, stored as compact JSON text.
///
/// Two `Json`s are equal when their texts are: every constructor writes the compact form
/// that `serde_json` produces for a [`serde_json::Value`] (object keys sorted, no
/// whitespace), so equal values have equal texts.
#[derive(Clone)]
pub struct Json(Arc<str>);

/// Buffers larger than this are not kept for the next text.
const KEEP_BUFFER: usize = 64 * 1024;

thread_local! {
    /// Where [`Json::from_value`] writes a text before copying it into its `Arc`, kept
    /// between calls: intake writes four texts a command, and writing each into a fresh
    /// `String` that is then shrunk and copied cost three allocator calls instead of one.
    static TEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Json {
    /// The compact text of `value`.
    pub fn from_value(value: &serde_json::Value) -> Json {
        TEXT.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            // Serialising a `Value` cannot fail: its keys are strings and its numbers
            // finite; and serde_json writes UTF-8.
            serde_json::to_writer(&mut *buf, value)
                .unwrap_or_else(|_| unreachable!("a serde_json::Value always serialises"));
            let json = Json(Arc::from(
                std::str::from_utf8(&buf).unwrap_or_else(|_| unreachable!("JSON is UTF-8")),
            ));
            if buf.capacity() > KEEP_BUFFER {
                *buf = Vec::new();
            }
            json
        })
    }

    /// `{}`.
    pub fn empty_object() -> Json {
        Json::from_value(&serde_json::Value::Object(serde_json::Map::new()))
    }

    /// `null`.
    pub fn null() -> Json {
        Json::from_value(&serde_json::Value::Null)
    }

    /// The value, parsed (a fresh tree: use it to inspect, not to store).
    pub fn to_value(&self) -> serde_json::Value {
        // The text was produced by serde_json from a `Value`, so it parses back.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// Deserialises the value into `T` (a worker's typed view of its payload, say).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is JSON `null`.
    pub fn is_null(&self) -> bool {
        &*self.0 == "null"
    }
}

impl Default for Json {
    fn default() -> Json {
        Json::null()
    }
}

impl From<serde_json::Value> for Json {
    fn from(value: serde_json::Value) -> Json {
        Json::from_value(&value)
    }
}

impl From<&serde_json::Value> for Json {
    fn from(value: &serde_json::Value) -> Json {
        Json::from_value(value)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Json {}

impl PartialEq<serde_json::Value> for Json {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.to_value() == *other
    }
}

impl PartialEq<Json> for serde_json::Value {
    fn eq(&self, other: &Json) -> bool {
        *self == other.to_value()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Borrowed as a `RawValue` (a scan of the text, nothing built), so serde_json's
        // writer copies it verbatim and its `Value` serializer parses it. Only texts that
        // serde_json wrote are ever held, so the scan does not fail.
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        // Through a `Value`, so the stored text is the compact form whatever the input's
        // layout was (equality compares texts).
        serde_json::Value::deserialize(deserializer).map(|v| Json::from_value(&v))
    }
}

impl schemars::JsonSchema for Json {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <serde_json::Value as schemars::JsonSchema>::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <serde_json::Value as schemars::JsonSchema>::json_schema(generator)
    }

    fn inline_schema() -> bool {
        <serde_json::Value as schemars::JsonSchema>::inline_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_compact_and_sorted_so_equal_values_are_equal() {
        let a: Json =
            serde_json::from_str(r#"{ "b": [1, 2], "a": {"y": null, "x": "s"} }"#).unwrap();
        let b = Json::from(json!({"a": {"x": "s", "y": null}, "b": [1, 2]}));
        assert_eq!(a.as_str(), r#"{"a":{"x":"s","y":null},"b":[1,2]}"#);
        assert_eq!(a, b);
        assert_eq!(a, json!({"a": {"x": "s", "y": null}, "b": [1, 2]}));
        assert_ne!(a, Json::empty_object());
    }

    #[test]
    fn it_serialises_as_the_value_not_as_a_string() {
        let j = Json::from(json!({"k": [true, 1.5, "é\"q"]}));
        let wrapped = json!({"payload": j.to_value()});
        assert_eq!(
            serde_json::to_string(&serde_json::json!({"payload": j.to_value()})).unwrap(),
            wrapped.to_string()
        );
        #[derive(Serialize, Deserialize)]
        struct Holder {
            payload: Json,
        }
        let text = serde_json::to_string(&Holder { payload: j.clone() }).unwrap();
        assert_eq!(text, r#"{"payload":{"k":[true,1.5,"é\"q"]}}"#);
        let back: Holder = serde_json::from_str(&text).unwrap();
        assert_eq!(back.payload, j);
        // Through a `Value` too (the HTTP views and table rows do this).
        assert_eq!(
            serde_json::to_value(&Holder { payload: j.clone() }).unwrap(),
            wrapped
        );
        let back: Holder = serde_json::from_value(wrapped).unwrap();
        assert_eq!(back.payload, j);
    }

    /// The reused buffer leaves nothing behind: each text is its own value's, whatever the
    /// size of the one written before it (past the size a buffer is kept at, too).
    #[test]
    fn texts_do_not_leak_into_each_other() {
        let big = json!({"big": "x".repeat(KEEP_BUFFER + 10)});
        let values = [json!({"a": 1}), big.clone(), json!([]), big, json!("é")];
        for v in &values {
            let j = Json::from_value(v);
            assert_eq!(j.as_str(), serde_json::to_string(v).unwrap());
            assert_eq!(j.to_value(), *v);
        }
    }

    #[test]
    fn copies_share_their_text() {
        let j = Json::from(json!({"big": "x".repeat(1000)}));
        let k = j.clone();
        assert!(Arc::ptr_eq(&j.0, &k.0));
        assert!(Json::null().is_null());
        assert_eq!(Json::default(), Json::null());
    }
}
