//! Key checks for admin (`X-API-Key`) and worker (`X-Worker-Key`) routes, in constant time.

use hyper::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The admin key header.
pub(crate) const ADMIN_KEY_HEADER: &str = "x-api-key";
/// The worker key header.
pub(crate) const WORKER_KEY_HEADER: &str = "x-worker-key";

/// Requires `header` to carry `expected`. A configured but empty key, or none at all when
/// `required`, matches nothing (fail closed).
pub(crate) fn require_key(
    headers: &HeaderMap,
    header: &'static str,
    expected: Option<&str>,
) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::unauthorized(header_name(header)));
    };
    let given = headers
        .get(header)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let equal: bool = given.ct_eq(expected.as_bytes()).into();
    if equal && !expected.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unauthorized(header_name(header)))
    }
}

fn header_name(h: &str) -> &'static str {
    if h == ADMIN_KEY_HEADER {
        "X-API-Key"
    } else {
        "X-Worker-Key"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn keys_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(require_key(&h, ADMIN_KEY_HEADER, Some("k")).is_err());
        h.insert(ADMIN_KEY_HEADER, HeaderValue::from_static("k"));
        assert!(require_key(&h, ADMIN_KEY_HEADER, Some("k")).is_ok());
        assert!(require_key(&h, ADMIN_KEY_HEADER, Some("kk")).is_err());
        assert!(require_key(&h, ADMIN_KEY_HEADER, None).is_err());
        h.insert(ADMIN_KEY_HEADER, HeaderValue::from_static(""));
        assert!(require_key(&h, ADMIN_KEY_HEADER, Some("")).is_err());
    }
}
