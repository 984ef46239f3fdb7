//! [`HttpConfig`]: the HTTP front end's settings (the binaries fill them from `LUCIUS_*`).

use std::fmt;

/// Default body limit: 1 MiB (`LUCIUS_MAX_BODY_BYTES`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Settings of the HTTP front end. This crate reads no environment; the binaries do.
///
/// Keys are compared in constant time. A key that is configured but empty matches nothing
/// (fail closed), and admin routes with no key configured answer `401` to every call.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes (`LUCIUS_MAX_BODY_BYTES`); larger is `413`.
    pub max_body_bytes: usize,
    /// Whether the `/v1/admin/*` routes exist (`LUCIUS_ADMIN_ENABLED`); if not they are `404`.
    pub admin_enabled: bool,
    /// The `X-API-Key` admin callers must send (`LUCIUS_ADMIN_API_KEY`).
    pub admin_api_key: Option<String>,
    /// The `X-Worker-Key` worker calls must send, if set (`LUCIUS_WORKER_API_KEY`).
    pub worker_api_key: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            admin_enabled: false,
            admin_api_key: None,
            worker_api_key: None,
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |k: &Option<String>| k.as_ref().map(|_| "<redacted>");
        f.debug_struct("HttpConfig")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("admin_enabled", &self.admin_enabled)
            .field("admin_api_key", &redact(&self.admin_api_key))
            .field("worker_api_key", &redact(&self.worker_api_key))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_keys() {
        let c = HttpConfig {
            admin_api_key: Some("s3cret".into()),
            worker_api_key: Some("w0rker".into()),
            ..HttpConfig::default()
        };
        let s = format!("{c:?}");
        assert!(!s.contains("s3cret") && !s.contains("w0rker"), "{s}");
        assert!(s.contains("redacted"));
    }
}
