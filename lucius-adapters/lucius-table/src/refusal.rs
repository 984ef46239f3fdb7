//! [`Refusal`]: what the table service said when it refused a request — status, error code,
//! message, and for an entity group transaction the index of the operation that failed —
//! read from the response by [`ReadRefusals`], a policy in the SDK's pipeline.
//!
//! The SDK keeps only the `x-ms-error-code` header of a failed request (its body parser does
//! not know the Table service's `odata.error` shape), and it answers a failed batch (`202`,
//! the failure inside one changeset response) with a bare status per operation. The policy
//! sees every response before the SDK does and turns a refusal into an
//! [`azure_core::Error`] of kind `HttpResponse { status, error_code }` whose source is the
//! [`Refusal`]; for a failed batch the status and code are the failing operation's.
//!
//! The bodies, as the service and Azurite send them (JSON because the SDK asks for it):
//!
//! ```text
//! {"odata.error":{"code":"EntityTooLarge","message":{"lang":"en-US",
//!   "value":"2:The entity is larger than the maximum allowed size.\nRequestId:…\nTime:…"}}}
//! ```
//!
//! In a batch the message starts with the 0-based index of the failing operation and a
//! colon. Older service versions answer XML (`<error><code>…</code><message>…</message>`);
//! that is read too.

use std::sync::Arc;

use azure_core::error::ErrorKind;
use azure_core::headers::{self, Headers};
use azure_core::{Context, Policy, PolicyResult, Request, Response, StatusCode};
use serde_json::Value;

/// A refusal by the service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) struct Refusal {
    /// The HTTP status (of the failing operation, in a batch).
    pub(crate) status: u16,
    /// The service's error code (`EntityTooLarge`, `TableNotFound`, …).
    pub(crate) code: Option<String>,
    /// The first line of the service's message, without the index prefix.
    pub(crate) message: Option<String>,
    /// In a batch: the 0-based index of the operation that failed, when the service said.
    pub(crate) operation: Option<usize>,
    /// In a batch: what that operation was (filled in by the client, which knows the ops).
    pub(crate) operation_label: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.operation, &self.operation_label) {
            (Some(i), Some(label)) => write!(f, "batch operation {i} ({label}) failed: ")?,
            (Some(i), None) => write!(f, "batch operation {i} failed: ")?,
            (None, _) => {}
        }
        write!(f, "HTTP {}", self.status)?;
        if let Some(c) = &self.code {
            write!(f, " {c}")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

impl Refusal {
    /// Reads a refusal from an error body (`odata.error` JSON or `<error>` XML); `header_code`
    /// (`x-ms-error-code`) wins over the body's code. `in_batch`: the message may start with
    /// the failing operation's index.
    pub(crate) fn read(
        status: u16,
        header_code: Option<String>,
        body: &[u8],
        in_batch: bool,
    ) -> Refusal {
        let text = String::from_utf8_lossy(body);
        let (code, message) = odata_error(&text).unwrap_or_default();
        let mut refusal = Refusal {
            status,
            code: header_code.or(code),
            message: None,
            operation: None,
            operation_label: None,
        };
        if let Some(m) = message {
            let first = m.lines().next().unwrap_or_default().trim();
            let (index, rest) = if in_batch {
                split_index(first)
            } else {
                (None, first)
            };
            refusal.operation = index;
            // Without its full stop: the store's reading follows after a colon.
            let rest = rest.trim_end_matches('.');
            refusal.message = Some(rest.to_owned()).filter(|m| !m.is_empty());
        }
        refusal
    }

    /// The failed operation of an entity group transaction answered `2xx`, if one failed:
    /// the first changeset response whose status is not a success.
    pub(crate) fn in_batch_response(body: &[u8]) -> Option<Refusal> {
        let text = String::from_utf8_lossy(body);
        for part in text.split("--changesetresponse_") {
            let Some(status_line) = part.lines().find(|l| l.starts_with("HTTP/1.1 ")) else {
                continue;
            };
            let Some(status) = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
            else {
                continue;
            };
            if (200..300).contains(&status) {
                continue;
            }
            // The part's headers hold no braces or tags: the error body is found in it.
            let mut refusal = Refusal::read(status, None, part.as_bytes(), true);
            if refusal.operation.is_none() {
                refusal.operation = content_id(part);
            }
            return Some(refusal);
        }
        None
    }

    /// As an SDK error the client maps like any other HTTP failure.
    pub(crate) fn into_error(self) -> azure_core::Error {
        let status = StatusCode::try_from(self.status).unwrap_or(StatusCode::BadRequest);
        let kind = ErrorKind::HttpResponse {
            status,
            error_code: self.code.clone(),
        };
        azure_core::Error::new(kind, self)
    }
}

/// `(code, message)` of an `odata.error` JSON body or an `<error>` XML body.
fn odata_error(text: &str) -> Option<(Option<String>, Option<String>)> {
    let json = text
        .find('{')
        .zip(text.rfind('}'))
        .and_then(|(a, b)| serde_json::from_str::<Value>(&text[a..=b]).ok());
    if let Some(v) = json {
        let e = v.get("odata.error")?;
        let code = e.get("code").and_then(Value::as_str).map(str::to_owned);
        let message = match e.get("message") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(m) => m.get("value").and_then(Value::as_str).map(str::to_owned),
            None => None,
        };
        return Some((code, message));
    }
    let tag = |name: &str| {
        let open = text.find(&format!("<{name}"))?;
        let start = open + text[open..].find('>')? + 1;
        let end = start + text[start..].find(&format!("</{name}>"))?;
        Some(text[start..end].trim().to_owned())
    };
    let code = tag("code").or_else(|| tag("Code"));
    let message = tag("message").or_else(|| tag("Message"));
    (code.is_some() || message.is_some()).then_some((code, message))
}

/// `"2:The entity …"` → `(Some(2), "The entity …")`.
fn split_index(message: &str) -> (Option<usize>, &str) {
    match message.split_once(':') {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (n.parse().ok(), rest.trim_start())
        }
        _ => (None, message),
    }
}

/// The `Content-ID` of a changeset response: the 1-based number of its request.
fn content_id(part: &str) -> Option<usize> {
    part.lines()
        .find_map(|l| l.strip_prefix("Content-ID:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
}

/// The pipeline policy that reads refusals (see the module docs). It sits after the
/// signing policy, just before the transport, so it sees each attempt's response.
#[derive(Debug, Default)]
pub(crate) struct ReadRefusals;

#[async_trait::async_trait]
impl Policy for ReadRefusals {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let response = next[0].send(ctx, request, &next[1..]).await?;
        let batch = request.url().path().ends_with("/$batch");
        if response.status().is_success() && !batch {
            return Ok(response);
        }
        let (status, headers, body) = response.deconstruct();
        let body = body.collect().await?;
        if !status.is_success() {
            let code = error_code(&headers);
            return Err(Refusal::read(u16::from(status), code, &body, batch).into_error());
        }
        if let Some(refusal) = Refusal::in_batch_response(&body) {
            return Err(refusal.into_error());
        }
        // A batch that succeeded: hand the SDK the body it would have read.
        let stream = futures::stream::once(async move { Ok(body) });
        Ok(Response::new(status, headers, Box::pin(stream)))
    }
}

fn error_code(headers: &Headers) -> Option<String> {
    headers.get_optional_string(&headers::ERROR_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_error_body_gives_code_and_first_line() {
        let body = br#"{"odata.error":{"code":"TableNotFound","message":{"lang":"en-US","value":"The table specified does not exist.\nRequestId:abc\nTime:2024-01-01T00:00:00Z"}}}"#;
        let r = Refusal::read(404, None, body, false);
        assert_eq!(r.code.as_deref(), Some("TableNotFound"));
        assert_eq!(
            r.message.as_deref(),
            Some("The table specified does not exist")
        );
        assert_eq!(r.operation, None);
        assert_eq!(
            r.to_string(),
            "HTTP 404 TableNotFound: The table specified does not exist"
        );
        // The header's code wins; a digit prefix outside a batch is part of the message.
        let body = br#"{"odata.error":{"code":"X","message":{"value":"3:odd"}}}"#;
        let r = Refusal::read(400, Some("InvalidInput".into()), body, false);
        assert_eq!(r.code.as_deref(), Some("InvalidInput"));
        assert_eq!(r.message.as_deref(), Some("3:odd"));
        // No body at all (a HEAD, a proxy's answer): the status alone.
        let r = Refusal::read(503, None, b"", false);
        assert_eq!(r.to_string(), "HTTP 503");
        let r = Refusal::read(502, None, b"<html>Bad gateway</html>", false);
        assert_eq!((r.code, r.message), (None, None));
    }

    #[test]
    fn xml_error_bodies_are_read_too() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?><error xmlns="x"><code>EntityTooLarge</code><message xml:lang="en-US">1:The entity is larger than allowed.
RequestId:r</message></error>"#;
        let r = Refusal::read(400, None, body, true);
        assert_eq!(r.code.as_deref(), Some("EntityTooLarge"));
        assert_eq!(r.operation, Some(1));
        assert_eq!(
            r.message.as_deref(),
            Some("The entity is larger than allowed")
        );
    }

    /// A failed batch as Azurite 3.37 answers it (its serializer, with the service's shape).
    const FAILED_BATCH: &str = "--batchresponse_1\r\n\
        Content-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n\
        --changesetresponse_2\r\n\
        Content-Type: application/http\r\n\
        Content-Transfer-Encoding: binary\r\n\r\n\
        HTTP/1.1 409 Conflict\r\n\
        Content-ID: 3\r\n\
        DataServiceVersion: 3.0;\r\n\
        Content-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n\r\n\
        {\"odata.error\":{\"code\":\"EntityAlreadyExists\",\"message\":{\"lang\":\"en-US\",\"value\":\"2:The specified entity already exists.\\nRequestId:x\\nTime:y\"}}}\r\n\
        --changesetresponse_2--\r\n\
        --batchresponse_1--\r\n";

    #[test]
    fn a_failed_batch_names_its_operation_and_code() {
        let r = Refusal::in_batch_response(FAILED_BATCH.as_bytes()).unwrap();
        assert_eq!(r.status, 409);
        assert_eq!(r.code.as_deref(), Some("EntityAlreadyExists"));
        assert_eq!(r.operation, Some(2));
        assert_eq!(
            r.to_string(),
            "batch operation 2 failed: HTTP 409 EntityAlreadyExists: The specified entity already exists"
        );
        let labelled = Refusal {
            operation_label: Some("insert (a, b)".into()),
            ..r
        };
        assert!(labelled
            .to_string()
            .starts_with("batch operation 2 (insert (a, b)) failed: HTTP 409"));
        // Without the index in the message, the Content-ID (1-based) says which.
        let no_prefix = FAILED_BATCH.replace(r#""value":"2:"#, r#""value":""#);
        assert_ne!(no_prefix, FAILED_BATCH);
        let r = Refusal::in_batch_response(no_prefix.as_bytes()).unwrap();
        assert_eq!(r.operation, Some(2));
        assert_eq!(
            r.message.as_deref(),
            Some("The specified entity already exists")
        );
    }

    #[test]
    fn a_successful_batch_has_no_refusal() {
        let ok = "--batchresponse_1\r\n\
            Content-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n\
            --changesetresponse_2\r\n\
            Content-Type: application/http\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\
            Content-ID: 1\r\n\
            ETag: W/\"datetime'2024'\"\r\n\r\n\r\n\
            --changesetresponse_2\r\n\
            Content-Type: application/http\r\n\r\n\
            HTTP/1.1 201 Created\r\n\
            Content-ID: 2\r\n\r\n{}\r\n\
            --changesetresponse_2--\r\n\
            --batchresponse_1--\r\n";
        assert_eq!(Refusal::in_batch_response(ok.as_bytes()), None);
    }

    #[test]
    fn a_refusal_becomes_an_http_error_with_the_operations_status() {
        let r = Refusal::in_batch_response(FAILED_BATCH.as_bytes()).unwrap();
        let e = r.clone().into_error();
        match e.kind() {
            ErrorKind::HttpResponse { status, error_code } => {
                assert_eq!(u16::from(*status), 409);
                assert_eq!(error_code.as_deref(), Some("EntityAlreadyExists"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.downcast_ref::<Refusal>(), Some(&r));
    }

    #[test]
    fn index_prefixes_are_digits_and_a_colon() {
        assert_eq!(split_index("12:x"), (Some(12), "x"));
        assert_eq!(split_index("x:y"), (None, "x:y"));
        assert_eq!(split_index(":y"), (None, ":y"));
        assert_eq!(split_index("no colon"), (None, "no colon"));
    }
}
