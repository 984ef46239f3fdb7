//! Idempotency: a stable hash of what a request asks for. Same tenant + key + hash → the
//! same job; same tenant + key with another hash → a conflict.
//!
//! The hash covers what the job will hold: `requestType`, `payload` and each step's
//! payload, serialised canonically so that two requests the job cannot tell apart hash the
//! same:
//! - object keys sorted, no whitespace, strings escaped as `serde_json` escapes them;
//! - numbers by value, in their canonical spelling (`1`, `1.0` and `1e0` are `1`; `-0` is
//!   `0`). Intake refuses a number it cannot hold exactly, so two different numbers never
//!   hash alike (rules in `json/number.rs` and `docs/http.md`);
//! - a step whose payload is `{}` is left out, as is a step given no payload: intake stores
//!   `{}` for both (absent `steps`, `"steps": {}` and `"steps": {"ocr": {}}` are one
//!   request).
//!
//! The canonical text is `{"payload":…,"requestType":…,"steps":{…}}`, steps sorted by id;
//! a request with no numbers to respell and no `{}` step payload hashes exactly as it did
//! before these rules. It leaves out the tenant and key (they select the claim) and the
//! correlation id (tracing metadata).

use std::fmt;
use std::io;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A request hash: SHA-256 of the canonical request, held as its 32 bytes (a job and its
/// claim each carry one). Rendered, serialised and stored as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHash([u8; 32]);

impl RequestHash {
    /// From the digest's bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> RequestHash {
        RequestHash(bytes)
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (either case).
    pub fn parse(s: &str) -> Option<RequestHash> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = (nibble(s[2 * i])? << 4) | nibble(s[2 * i + 1])?;
        }
        Some(RequestHash(out))
    }
}

impl fmt::Display for RequestHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for RequestHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestHash({self})")
    }
}

impl Serialize for RequestHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RequestHash, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        RequestHash::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("a request hash is 64 hex digits"))
    }
}

/// The request hash: hex SHA-256 of the canonical request.
///
/// Each number is taken as the `Value` holds it and written canonically. `steps` may
/// name every step of the protocol or only those given; a `{}` payload counts as none.
/// The canonical text is streamed into the hasher as it is written: no intermediate
/// string.
pub fn request_hash<'a>(
    request_type: &str,
    payload: &serde_json::Value,
    steps: impl IntoIterator<Item = (&'a String, &'a serde_json::Value)>,
) -> RequestHash {
    let steps = steps.into_iter().map(|(k, v)| (k.as_str(), v)).collect();
    let empty = |v: &serde_json::Value| v.as_object().is_some_and(serde_json::Map::is_empty);
    hash_request(request_type, payload, steps, empty, canonical)
}

/// [`request_hash`] from compact texts already written: `payload` and each step's text
/// as [`Json`](crate::json::Json) holds them after validation (serde_json's compact form
/// of values whose numbers are canonical, which is the canonical form). Intake has those
/// texts anyway, so the values are not walked again. `steps` are the protocol's steps, or
/// only those given, each id once, in any order; a `{}` payload counts as none.
pub fn request_hash_of_texts<'a>(
    request_type: &str,
    payload: &str,
    steps: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> RequestHash {
    let steps = steps.into_iter().collect();
    hash_request(
        request_type,
        payload,
        steps,
        |text: &str| text == "{}",
        |text: &str, h| h.put(text.as_bytes()),
    )
}

/// The canonical request, `write` rendering each value (a payload or a step's), streamed
/// into SHA-256: `{"payload":…,"requestType":…,"steps":{…}}` with the steps sorted by id,
/// less those whose payload is `empty` (`{}`).
fn hash_request<T: ?Sized>(
    request_type: &str,
    payload: &T,
    mut steps: Vec<(&str, &T)>,
    empty: impl Fn(&T) -> bool,
    write: impl Fn(&T, &mut HashWriter),
) -> RequestHash {
    let mut h = HashWriter(Sha256::new());
    h.put(b"{\"payload\":");
    write(payload, &mut h);
    h.put(b",\"requestType\":");
    h.string(request_type);
    h.put(b",\"steps\":{");
    steps.retain(|(_, v)| !empty(v));
    steps.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (i, (k, v)) in steps.into_iter().enumerate() {
        if i > 0 {
            h.put(b",");
        }
        h.string(k);
        h.put(b":");
        write(v, &mut h);
    }
    h.put(b"}}");
    RequestHash(h.0.finalize().into())
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Feeds what is written to SHA-256.
struct HashWriter(Sha256);

impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HashWriter {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// A JSON string literal, escaped exactly as `serde_json` escapes it.
    fn string(&mut self, s: &str) {
        // Writing to a hasher cannot fail.
        let _ = serde_json::to_writer(&mut *self, s);
    }
}

/// Writes `v` as canonical JSON: object keys sorted, no insignificant whitespace, numbers
/// in their canonical form.
fn canonical(v: &serde_json::Value, out: &mut HashWriter) {
    match v {
        serde_json::Value::Object(m) => {
            out.put(b"{");
            // serde_json's map iterates sorted unless its `preserve_order` feature is on
            // somewhere in the build; sort only then.
            let sorted = m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b);
            let mut write = |i: usize, k: &String, x: &serde_json::Value| {
                if i > 0 {
                    out.put(b",");
                }
                out.string(k);
                out.put(b":");
                canonical(x, out);
            };
            if sorted {
                for (i, (k, x)) in m.iter().enumerate() {
                    write(i, k, x);
                }
            } else {
                let mut entries: Vec<(&String, &serde_json::Value)> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (i, (k, x)) in entries.into_iter().enumerate() {
                    write(i, k, x);
                }
            }
            out.put(b"}");
        }
        serde_json::Value::Array(a) => {
            out.put(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                canonical(x, out);
            }
            out.put(b"]");
        }
        serde_json::Value::Number(n) => {
            let canonical = crate::json::number::canonical_number(n);
            // Writing to a hasher cannot fail.
            let _ = serde_json::to_writer(&mut *out, canonical.as_ref().unwrap_or(n));
        }
        // Other leaves: exactly serde_json's compact rendering. Writing to a hasher cannot
        // fail.
        leaf => {
            let _ = serde_json::to_writer(&mut *out, leaf);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter_but_values_do() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"a":1,"b":{"c":2,"d":[1,2]}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"b":{"d":[1,2],"c":2},"a":1}"#).unwrap();
        let steps = BTreeMap::new();
        assert_eq!(request_hash("r", &a, &steps), request_hash("r", &b, &steps));
        assert_ne!(
            request_hash("r", &a, &steps),
            request_hash("r2", &a, &steps)
        );
        let c = json!({"a": 1, "b": {"c": 2, "d": [2, 1]}});
        assert_ne!(request_hash("r", &a, &steps), request_hash("r", &c, &steps));
        // A step given `{}` is a step given nothing (intake stores `{}` for both); a step
        // with a payload is another request.
        let mut s2 = BTreeMap::new();
        s2.insert("ocr".to_owned(), json!({}));
        assert_eq!(request_hash("r", &a, &steps), request_hash("r", &a, &s2));
        s2.insert("embed".to_owned(), json!({"m": 1}));
        assert_ne!(request_hash("r", &a, &steps), request_hash("r", &a, &s2));
        assert_eq!(
            request_hash_of_texts("r", "null", [("ocr", "{}"), ("index", "{}")]),
            request_hash_of_texts("r", "null", [])
        );
        assert_ne!(
            request_hash_of_texts("r", "null", [("ocr", "{\"a\":{}}")]),
            request_hash_of_texts("r", "null", [])
        );
    }

    /// Numbers hash by value: every spelling of one value alike, other values apart, at
    /// any depth, in the payload and in the steps.
    #[test]
    fn numbers_hash_by_value() {
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let hash = |n: &str| {
            let payload = parse(&format!(r#"{{"n":{n},"a":[{{"m":[{n}]}}]}}"#));
            let mut steps = BTreeMap::new();
            steps.insert("s".to_owned(), parse(&format!(r#"{{"x":{n}}}"#)));
            request_hash("r", &payload, &steps)
        };
        for (a, b) in [
            ("1", "1.0"),
            ("1", "1e0"),
            ("1", "10e-1"),
            ("0", "-0"),
            ("0", "-0.0"),
            ("1000", "1e3"),
            ("-7", "-7.0"),
            ("0.5", "5e-1"),
            ("1e300", "1.0e300"),
        ] {
            assert_eq!(hash(a), hash(b), "{a} / {b}");
        }
        for (a, b) in [
            ("1", "2"),
            ("1", "1.5"),
            ("0.1", "0.2"),
            ("1", "-1"),
            ("1", "\"1\""),
        ] {
            assert_ne!(hash(a), hash(b), "{a} / {b}");
        }
        // The canonical text is the integer's: sha256 of
        // {"payload":{"x":1},"requestType":"r","steps":{}}, as `hash_is_pinned`.
        assert_eq!(
            request_hash("r", &json!({"x": 1.0}), &BTreeMap::new()).to_string(),
            "6063748a2b6cbaf274712ee15362446d60f7dc7cfb4e6a8f28418877c1f61f6a"
        );
    }

    /// The canonical text as first written: built in a `String`, keys sorted explicitly.
    fn reference(
        request_type: &str,
        payload: &serde_json::Value,
        steps: &BTreeMap<String, serde_json::Value>,
    ) -> RequestHash {
        fn canon(v: &serde_json::Value, out: &mut String) {
            match v {
                serde_json::Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    out.push('{');
                    for (i, k) in keys.into_iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&serde_json::Value::String(k.clone()).to_string());
                        out.push(':');
                        canon(&m[k], out);
                    }
                    out.push('}');
                }
                serde_json::Value::Array(a) => {
                    out.push('[');
                    for (i, x) in a.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        canon(x, out);
                    }
                    out.push(']');
                }
                // Integral floats as integers, zero as `0` (the test values stay far
                // inside the 64-bit range).
                serde_json::Value::Number(n) => match n.as_f64() {
                    Some(f) if n.is_f64() && f.fract() == 0.0 => {
                        out.push_str(&format!("{}", f as i64));
                    }
                    _ => out.push_str(&n.to_string()),
                },
                other => out.push_str(&other.to_string()),
            }
        }
        let mut s = String::from("{\"payload\":");
        canon(payload, &mut s);
        s.push_str(",\"requestType\":");
        canon(&serde_json::Value::String(request_type.to_owned()), &mut s);
        s.push_str(",\"steps\":");
        let given: BTreeMap<&String, &serde_json::Value> = steps
            .iter()
            .filter(|(_, v)| **v != serde_json::json!({}))
            .collect();
        canon(&serde_json::to_value(given).unwrap(), &mut s);
        s.push('}');
        RequestHash(Sha256::digest(s.as_bytes()).into())
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e6f64..1e6).prop_map(serde_json::Value::from),
            (-1e6f64..1e6).prop_map(|f| serde_json::Value::from(f.trunc())),
            Just(serde_json::Value::from(-0.0)),
            "[a-z\\\\\"\\n\\u{1}é€]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z\\\\\"é]{0,4}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn streaming_equals_the_reference_text(
            rt in "[a-z.\\\\\"]{1,12}",
            payload in json_value(),
            steps in prop::collection::btree_map("[a-z\\\\\"]{1,6}", json_value(), 0..4),
        ) {
            prop_assert_eq!(request_hash(&rt, &payload, &steps), reference(&rt, &payload, &steps));
        }

        #[test]
        fn hashing_the_texts_equals_hashing_the_values(
            rt in "[a-z.\\\\\"é]{1,12}",
            payload in json_value(),
            steps in prop::collection::btree_map("[a-z\\\\\"é/~]{0,6}", json_value(), 0..4),
        ) {
            // The texts of a validated command: its numbers are canonical.
            let text = |v: &serde_json::Value| {
                let mut v = v.clone();
                crate::json::number::canonicalize(&mut v);
                crate::json::Json::from_value(&v)
            };
            let payload_text = text(&payload);
            let texts: Vec<(&String, crate::json::Json)> =
                steps.iter().map(|(k, v)| (k, text(v))).collect();
            // In reverse: the function sorts the steps itself.
            let of_texts = request_hash_of_texts(
                &rt,
                payload_text.as_str(),
                texts.iter().rev().map(|(k, t)| (k.as_str(), t.as_str())),
            );
            prop_assert_eq!(of_texts, request_hash(&rt, &payload, &steps));
        }
    }

    #[test]
    fn hash_of_a_rich_request_is_pinned() {
        // Computed independently with Python's json.dumps(sort_keys=True,
        // separators=(',', ':'), ensure_ascii=False) and hashlib.sha256.
        let payload =
            json!({"z": [1, -2.5, true, null, "é\"\\\n\t\u{1}"], "a": {"y": {}, "x": []}});
        let mut steps = BTreeMap::new();
        steps.insert("ocr".to_owned(), json!({"dpi": 300}));
        steps.insert("embed".to_owned(), json!({"m": "x"}));
        let h = request_hash("doc.p", &payload, &steps);
        assert_eq!(
            h.to_string(),
            "6e20f7c21c0b2bcc373dde7d819a39c46f8d1a32829da7cd5803996779774613"
        );
        assert_eq!(RequestHash::parse(&h.to_string()), Some(h));
        assert_eq!(RequestHash::parse(&h.to_string().to_uppercase()), Some(h));
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<RequestHash>(&json).unwrap(), h);
        assert_eq!(RequestHash::parse("abc"), None);
        assert_eq!(RequestHash::parse(&"g".repeat(64)), None);
    }

    #[test]
    fn hash_of_texts_is_pinned() {
        // The vector of `hash_is_pinned`, from the texts.
        let h = request_hash_of_texts("r", r#"{"x":1}"#, []);
        assert_eq!(
            h.to_string(),
            "6063748a2b6cbaf274712ee15362446d60f7dc7cfb4e6a8f28418877c1f61f6a"
        );
    }

    #[test]
    fn hash_is_pinned() {
        // Changing the canonical form would split idempotency across versions: pin it to
        // SHA-256 of the canonical text, computed independently.
        // sha256('{"payload":{"x":1},"requestType":"r","steps":{}}')
        let h = request_hash("r", &json!({"x": 1}), &BTreeMap::new());
        assert_eq!(
            h.to_string(),
            "6063748a2b6cbaf274712ee15362446d60f7dc7cfb4e6a8f28418877c1f61f6a"
        );
    }
}
