//! Reading requests: content-type checks, the bounded body read, query strings, and the
//! field checks of small JSON bodies (each failure named by its JSON pointer).

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Refuses a body that is not declared JSON (`415`). An empty body needs no content type.
pub(crate) fn check_json_content_type(
    headers: &HeaderMap,
    body_len: usize,
) -> Result<(), ApiError> {
    if body_len == 0 {
        return Ok(());
    }
    let refuse = |found: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("expected Content-Type application/json, found {found}"),
        )
    };
    let Some(v) = headers.get(CONTENT_TYPE) else {
        return Err(refuse("none"));
    };
    let Ok(v) = v.to_str() else {
        return Err(refuse("a non-ASCII value"));
    };
    let mut parts = v.split(';');
    let mime = parts.next().unwrap_or_default().trim().as_bytes();
    // Compared without a lower-cased copy: this runs on every command.
    let (app, suffix) = (b"application/", b"+json");
    let json = mime.eq_ignore_ascii_case(b"application/json")
        || (mime.len() >= app.len() + suffix.len()
            && mime[..app.len()].eq_ignore_ascii_case(app)
            && mime[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix));
    let charset_ok = parts.all(|p| match p.trim().split_once('=') {
        Some((k, val)) if k.trim().eq_ignore_ascii_case("charset") => {
            let val = val.trim().trim_matches('"');
            val.eq_ignore_ascii_case("utf-8") || val.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    if json && charset_ok {
        Ok(())
    } else {
        Err(refuse(&format!(
            "{:?}",
            v.chars().take(100).collect::<String>()
        )))
    }
}

/// Refuses early a body whose declared length is over the limit.
pub(crate) fn check_declared_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(ApiError::too_large(limit)),
        _ => Ok(()),
    }
}

/// Reads the whole body, stopping with `413` as soon as it passes `limit` bytes.
pub(crate) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// Query parameters, percent-decoded (`+` is a space). Invalid UTF-8 is a `400`.
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = percent_decode(k).ok_or_else(|| ApiError::bad_query("?", "not UTF-8"))?;
            let v = percent_decode(v).ok_or_else(|| ApiError::bad_query(&k, "not UTF-8"))?;
            Ok((k, v))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Parses a small JSON body that must be an object (empty means `{}` if `empty_ok`).
pub(crate) fn json_object(body: &Bytes, empty_ok: bool) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() && empty_ok {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(&e))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::schema(vec![(
            String::new(),
            format!("expected a JSON object, found {}", kind(&other)),
        )])),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks the fields of a JSON object, collecting every failure with its pointer.
pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<(String, String)>,
}

impl<'a> Fields<'a> {
    /// Starts checking `obj`, refusing members not in `allowed`.
    pub(crate) fn new(obj: &'a Map<String, Value>, allowed: &[&str]) -> Fields<'a> {
        let errors = obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| {
                (
                    format!("/{}", k.replace('~', "~0").replace('/', "~1")),
                    format!("unknown field (allowed: {})", allowed.join(", ")),
                )
            })
            .collect();
        Fields { obj, errors }
    }

    fn fail(&mut self, name: &str, message: String) {
        self.errors.push((format!("/{name}"), message));
    }

    /// A required integer in `min..=max`.
    pub(crate) fn int(&mut self, name: &str, min: u32, max: u32) -> Option<u32> {
        match self.obj.get(name) {
            None => {
                self.fail(name, "is required".into());
                None
            }
            Some(v) => match v.as_u64() {
                Some(n) if (u64::from(min)..=u64::from(max)).contains(&n) => u32::try_from(n).ok(),
                _ => {
                    self.fail(
                        name,
                        format!(
                            "expected an integer from {min} to {max}, found {}",
                            brief(v)
                        ),
                    );
                    None
                }
            },
        }
    }

    /// An optional integer in `min..=max`.
    pub(crate) fn opt_int(&mut self, name: &str, min: u32, max: u32) -> Option<u32> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(_) => self.int(name, min, max),
        }
    }

    /// An optional string of 1 to `max` characters.
    pub(crate) fn opt_string(&mut self, name: &str, max: usize) -> Option<String> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => Some(s.clone()),
            Some(v) => {
                self.fail(
                    name,
                    format!(
                        "expected a string of 1 to {max} characters, found {}",
                        brief(v)
                    ),
                );
                None
            }
        }
    }

    /// A required string of 1 to `max` characters.
    pub(crate) fn string(&mut self, name: &str, max: usize) -> Option<String> {
        if self.obj.get(name).is_none_or(Value::is_null) {
            self.fail(name, "is required".into());
            return None;
        }
        self.opt_string(name, max)
    }

    /// An optional number in `min..=max` (integer or not).
    pub(crate) fn opt_number(&mut self, name: &str, min: f64, max: f64) -> Option<f64> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    self.fail(
                        name,
                        format!("expected a number from {min} to {max}, found {}", brief(v)),
                    );
                    None
                }
            },
        }
    }

    /// An optional array of at most `max_items` distinct strings of 1 to `max_len`
    /// characters (absent or `null`: empty).
    pub(crate) fn opt_strings(
        &mut self,
        name: &str,
        max_items: usize,
        max_len: usize,
    ) -> Vec<String> {
        let items = match self.obj.get(name) {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) if items.len() <= max_items => items,
            Some(v) => {
                self.fail(
                    name,
                    format!(
                        "expected an array of at most {max_items} strings, found {}",
                        brief(v)
                    ),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            match v {
                Value::String(s) if !s.is_empty() && s.chars().count() <= max_len => {
                    if !out.contains(s) {
                        out.push(s.clone());
                    }
                }
                _ => self.errors.push((
                    format!("/{name}/{i}"),
                    format!(
                        "expected a string of 1 to {max_len} characters, found {}",
                        brief(v)
                    ),
                )),
            }
        }
        out
    }

    /// An optional boolean.
    pub(crate) fn opt_bool(&mut self, name: &str) -> Option<bool> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                self.fail(name, format!("expected a boolean, found {}", brief(v)));
                None
            }
        }
    }

    /// Any JSON value (`null` when absent).
    pub(crate) fn any(&self, name: &str) -> Value {
        self.obj.get(name).cloned().unwrap_or(Value::Null)
    }

    /// The collected failures, if any.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::schema(self.errors))
        }
    }
}

fn brief(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let s = n.to_string();
            if s.len() > 40 {
                "a very large number".to_owned()
            } else {
                s
            }
        }
        other => kind(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(check_json_content_type(&h, 0).is_ok());
        assert!(check_json_content_type(&h, 1).is_err());
        for ok in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/problem+json",
            "APPLICATION/VND.API+JSON",
            "application/+json",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(check_json_content_type(&h, 1).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/json; charset=latin1",
            "application/jsonx",
            "application/json+",
            "text/x+json",
            "application+json",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(bad));
            assert_eq!(
                check_json_content_type(&h, 1).unwrap_err().status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{bad}"
            );
        }
    }

    #[test]
    fn queries_decode() {
        let q = query_pairs(Some("partition=t1%23202401&status=DEAD&x=a+b&&flag")).unwrap();
        assert_eq!(
            q,
            [
                ("partition".into(), "t1#202401".into()),
                ("status".into(), "DEAD".into()),
                ("x".into(), "a b".into()),
                ("flag".into(), String::new()),
            ]
        );
        assert!(query_pairs(Some("a=%ff")).is_err());
        assert_eq!(query_pairs(Some("a=%2")).unwrap()[0].1, "%2");
        assert_eq!(query_pairs(Some("a=%zz")).unwrap_err().status, 400);
    }

    #[test]
    fn fields_collect_every_failure() {
        let m = serde_json::json!({"attempt": "1", "workerId": "", "extra": 1});
        let m = m.as_object().unwrap();
        let mut f = Fields::new(m, &["attempt", "workerId"]);
        assert_eq!(f.int("attempt", 1, 10), None);
        assert_eq!(f.opt_string("workerId", 10), None);
        let e = f.finish().unwrap_err();
        let ptrs: Vec<_> = e.details["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["pointer"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ptrs, ["/extra", "/attempt", "/workerId"]);
    }
}
