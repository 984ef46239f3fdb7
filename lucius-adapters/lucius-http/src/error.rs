//! [`ApiError`]: every refusal as `{"error": {"code", "message", "details"}}`, and the
//! mapping from [`EngineError`] to HTTP statuses and stable error codes.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use lucius_core::validation::InvalidCode;
use lucius_core::{EngineError, StoreErrorKind, TransitionError};
use serde_json::{json, Value};

use crate::views::{ErrorBody, ErrorDetail};

/// A refusal: status, stable code, message and structured details.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) details: Value,
    allow: Option<&'static str>,
    retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
            allow: None,
            retry_after: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("this route only answers {allow}"),
            )
        }
    }

    pub(crate) fn unauthorized(header: &str) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            format!("a valid {header} header is required"),
        )
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
        .with_details(json!({ "maxBodyBytes": limit }))
    }

    /// A malformed JSON body (worker and admin bodies; commands go through the engine).
    pub(crate) fn malformed_json(err: &serde_json::Error) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            InvalidCode::MalformedJson.as_str(),
            format!("body is not valid JSON: {err}"),
        )
        .with_details(json!({ "errors": [{ "pointer": "", "message": err.to_string() }] }))
    }

    /// Field errors in a request body, each with its JSON pointer.
    pub(crate) fn schema(errors: Vec<(String, String)>) -> Self {
        let list: Vec<Value> = errors
            .iter()
            .map(|(p, m)| json!({ "pointer": p, "message": m }))
            .collect();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            InvalidCode::SchemaViolation.as_str(),
            format!("the request body is invalid ({} error(s))", errors.len()),
        )
        .with_details(json!({ "errors": list }))
    }

    /// A bad query parameter.
    pub(crate) fn bad_query(name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
            format!("query parameter {name}: {message}"),
        )
        .with_details(json!({ "parameter": name }))
    }

    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut res = Response::new(Full::new(Bytes::from(bytes)));
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(allow) = self.allow {
            h.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(secs) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::Invalid(inv) => {
                // Bodies the server cannot read as sent are 400; readable ones that break a
                // rule are 422.
                let status = match inv.code {
                    InvalidCode::MalformedJson | InvalidCode::InexactNumber => {
                        StatusCode::BAD_REQUEST
                    }
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError::new(status, inv.code.as_str(), inv.message.clone())
                    .with_details(json!({ "errors": inv.errors }))
            }
            EngineError::IdempotencyConflict { job_id, .. } => {
                ApiError::new(StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT", message)
                    .with_details(json!({ "jobId": job_id }))
            }
            EngineError::JobNotFound(id) => {
                ApiError::new(StatusCode::NOT_FOUND, "JOB_NOT_FOUND", message)
                    .with_details(json!({ "jobId": id }))
            }
            EngineError::StepNotFound { job_id, step_id } => {
                ApiError::new(StatusCode::NOT_FOUND, "STEP_NOT_FOUND", message)
                    .with_details(json!({ "jobId": job_id, "stepId": step_id }))
            }
            EngineError::OutboxNotFound(id) => {
                ApiError::new(StatusCode::NOT_FOUND, "OUTBOX_NOT_FOUND", message)
                    .with_details(json!({ "outboxId": id }))
            }
            EngineError::Transition(t) => transition(t, message),
            EngineError::Store(s) => {
                let (status, code) = match s.kind {
                    StoreErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "ROW_TOO_LARGE"),
                    StoreErrorKind::Transient | StoreErrorKind::Conflict => {
                        (StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE")
                    }
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "STORE_ERROR"),
                };
                tracing::warn!(kind = ?s.kind, error = %s.message, "store error");
                let mut e = ApiError::new(status, code, message);
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    e.retry_after = Some(1);
                }
                e
            }
            EngineError::Contention(id) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "CONTENTION", message)
                    .with_details(json!({ "jobId": id }))
            },
            other => {
                tracing::error!(error = %other, "unexpected engine error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    other.to_string(),
                )
            }
        }
    }
}

fn transition(t: TransitionError, message: String) -> ApiError {
    let conflict = |code| ApiError::new(StatusCode::CONFLICT, code, message.clone());
    match t {
        TransitionError::Illegal {
            machine,
            from,
            event,
        } => conflict("ILLEGAL_TRANSITION").with_details(json!({
            "machine": machine, "from": from, "event": event.to_string()
        })),
        TransitionError::StaleAttempt { current, got } => conflict("STALE_ATTEMPT")
            .with_details(json!({ "currentAttempt": current, "givenAttempt": got })),
        TransitionError::LeaseHeldByOther {
            step,
            holder,
            caller,
            until,
        } => conflict("LEASE_HELD_BY_OTHER").with_details(json!({
            "stepId": step, "holder": holder, "caller": caller, "leaseExpiresAt": until.to_rfc3339()
        })),
        TransitionError::AlreadyApplied {
            step,
            event,
            attempt,
        } => conflict("ALREADY_APPLIED").with_details(json!({
            "stepId": step, "event": event.to_string(), "attempt": attempt
        })),
        TransitionError::NotDue { due_at, now } => conflict("NOT_DUE").with_details(json!({
            "dueAt": due_at.to_rfc3339(), "now": now.to_rfc3339()
        })),
        _ => conflict("TRANSITION_REFUSED"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucius_core::{JobId, StoreError};

    #[test]
    fn engine_errors_map_to_statuses() {
        let id = JobId::parse("00000000-0000-8000-8000-000000000000").unwrap();
        let cases = [
            (EngineError::JobNotFound(id.clone()), 404, "JOB_NOT_FOUND"),
            (EngineError::Contention(id.clone()), 503, "CONTENTION"),
            (
                EngineError::Store(StoreError::too_large("x")),
                413,
                "ROW_TOO_LARGE",
            ),
            (
                EngineError::Store(StoreError::transient("x")),
                503,
                "STORE_UNAVAILABLE",
            ),
            (
                EngineError::Store(StoreError::permanent("x")),
                500,
                "STORE_ERROR",
            ),
            (
                EngineError::Transition(TransitionError::StaleAttempt { current: 2, got: 1 }),
                409,
                "STALE_ATTEMPT",
            ),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.code), (status, code));
        }
    }

    #[test]
    fn refused_commands_map_to_400_or_422() {
        use lucius_core::validation::{FieldError, InvalidCommand};
        let invalid = |code| {
            EngineError::Invalid(InvalidCommand {
                code,
                message: "m".into(),
                errors: vec![FieldError {
                    pointer: "/payload/n".into(),
                    message: "e".into(),
                }],
            })
        };
        for (code, status) in [
            (InvalidCode::MalformedJson, 400),
            (InvalidCode::InexactNumber, 400),
            (InvalidCode::SchemaViolation, 422),
            (InvalidCode::UnknownStep, 422),
        ] {
            let a = ApiError::from(invalid(code));
            assert_eq!((a.status.as_u16(), a.code), (status, code.as_str()));
            assert_eq!(a.details["errors"][0]["pointer"], "/payload/n");
        }
    }

    #[test]
    fn worker_refusals_name_the_holder_and_the_repeated_attempt() {
        let a = ApiError::from(EngineError::Transition(TransitionError::LeaseHeldByOther {
            step: "ocr".into(),
            holder: "w1".into(),
            caller: None,
            until: lucius_core::Timestamp(1_000),
        }));
        assert_eq!((a.status.as_u16(), a.code), (409, "LEASE_HELD_BY_OTHER"));
        assert_eq!(
            a.details,
            json!({"stepId": "ocr", "holder": "w1", "caller": null,
                   "leaseExpiresAt": "1970-01-01T00:00:01.000Z"})
        );
        assert!(
            a.message.contains("this call names no worker"),
            "{}",
            a.message
        );
        let a = ApiError::from(EngineError::Transition(TransitionError::AlreadyApplied {
            step: "ocr".into(),
            event: lucius_core::Event::Complete,
            attempt: 1,
        }));
        assert_eq!((a.status.as_u16(), a.code), (409, "ALREADY_APPLIED"));
        assert_eq!(
            a.details,
            json!({"stepId": "ocr", "event": "complete", "attempt": 1})
        );
    }

    #[test]
    fn responses_are_json_with_headers() {
        let r = ApiError::method_not_allowed("GET").into_response();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "GET");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}
