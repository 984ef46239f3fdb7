//! [`DirectiveMessage`]: how a [`Directive`] is rendered as a Service Bus message (body,
//! broker properties, application properties). This file owns the wire format.

use std::collections::HashMap;

use azure_messaging_servicebus::service_bus::{SendMessageOptions, SettableBrokerProperties};
use lucius_core::Directive;

/// Service Bus limit on `MessageId`, `SessionId` and `PartitionKey`.
pub const MAX_ID_LEN: usize = 128;

/// The message's `Content-Type`.
pub const CONTENT_TYPE: &str = "application/json";

/// Names of the application (custom) properties. Sent as HTTP headers, which are
/// case-insensitive: over the REST API they reach the broker lower-cased (`jobid`, …).
pub mod property {
    /// The job id.
    pub const JOB_ID: &str = "jobId";
    /// The step id.
    pub const STEP_ID: &str = "stepId";
    /// The attempt.
    pub const ATTEMPT: &str = "attempt";
    /// The tenant.
    pub const TENANT_ID: &str = "tenantId";
    /// The request type.
    pub const REQUEST_TYPE: &str = "requestType";
    /// The directive format version.
    pub const SCHEMA_VERSION: &str = "schemaVersion";
    /// The client's correlation id (only when it has one).
    pub const CORRELATION_ID: &str = "correlationId";
}

/// A directive as a Service Bus message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveMessage {
    /// The body: the directive as JSON.
    pub body: String,
    /// `MessageId`: the directive id, so duplicate detection drops republishes.
    pub message_id: String,
    /// `SessionId` and `PartitionKey`: the job id, so one job's directives stay in order
    /// on one partition (and in one session where sessions are enabled).
    pub session_id: String,
    /// `CorrelationId`: the client's correlation id, if any.
    pub correlation_id: Option<String>,
    /// `Label`: the step id, handy for subscription filters.
    pub label: String,
    /// Application properties.
    pub properties: Vec<(&'static str, String)>,
}

/// Why a directive cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// An id is longer than Service Bus allows.
    #[error("{field} is {len} characters; Service Bus allows at most {MAX_ID_LEN}")]
    TooLong {
        /// `MessageId` or `SessionId`.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// An id is empty.
    #[error("{field} is empty")]
    Empty {
        /// `MessageId` or `SessionId`.
        field: &'static str,
    },
    /// The directive does not serialise (cannot happen for well-formed JSON values).
    #[error("the directive does not serialise: {0}")]
    Serialise(String),
}

impl DirectiveMessage {
    /// Renders a directive.
    pub fn render(d: &Directive) -> Result<DirectiveMessage, MessageError> {
        let body = serde_json::to_string(d).map_err(|e| MessageError::Serialise(e.to_string()))?;
        let mut properties = vec![
            (property::JOB_ID, d.job_id.to_string()),
            (property::STEP_ID, d.step_id.to_string()),
            (property::ATTEMPT, d.attempt.to_string()),
            (property::TENANT_ID, d.tenant_id.to_string()),
            (property::REQUEST_TYPE, d.request_type.to_string()),
            (property::SCHEMA_VERSION, d.schema_version.to_string()),
        ];
        if let Some(c) = &d.correlation_id {
            properties.push((property::CORRELATION_ID, c.to_string()));
        }
        // A value a header cannot carry (only the free-form correlation id can hold one)
        // is left out rather than failing the publish: the body still has it.
        properties.retain(|(name, value)| {
            let ok = header_safe(value);
            if !ok {
                tracing::warn!(property = name, directive = %d.directive_id, "application property left out: not a valid HTTP header value");
            }
            ok
        });
        Ok(DirectiveMessage {
            body,
            message_id: check_id("MessageId", &d.directive_id)?,
            session_id: check_id("SessionId", &d.job_id)?,
            // Service Bus caps CorrelationId at 128 characters too; a longer one stays in
            // the body only.
            correlation_id: d
                .correlation_id
                .as_deref()
                .map(str::to_owned)
                .filter(|c| !c.is_empty() && c.chars().count() <= MAX_ID_LEN),
            label: d.step_id.to_string(),
            properties,
        })
    }

    /// The crate's send options: `Content-Type`, `BrokerProperties` and the properties.
    pub fn options(&self) -> SendMessageOptions {
        SendMessageOptions {
            content_type: Some(CONTENT_TYPE.to_owned()),
            broker_properties: Some(SettableBrokerProperties {
                message_id: Some(self.message_id.clone()),
                session_id: Some(self.session_id.clone()),
                partition_key: Some(self.session_id.clone()),
                correlation_id: self.correlation_id.clone(),
                label: Some(self.label.clone()),
                ..SettableBrokerProperties::default()
            }),
            custom_properties: Some(
                self.properties
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
        }
    }
}

/// Printable ASCII (and tab), no leading or trailing whitespace: safe as a header value.
fn header_safe(v: &str) -> bool {
    v.trim() == v && v.chars().all(|c| c == '\t' || (' '..='~').contains(&c))
}

fn check_id(field: &'static str, id: &str) -> Result<String, MessageError> {
    match id.chars().count() {
        0 => Err(MessageError::Empty { field }),
        n if n > MAX_ID_LEN => Err(MessageError::TooLong { field, len: n }),
        _ => Ok(id.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn directive() -> Directive {
        Directive {
            schema_version: lucius_core::DIRECTIVE_SCHEMA_VERSION,
            directive_id: "job-1.0.1".into(),
            job_id: "job-1".into(),
            tenant_id: "acme".into(),
            request_type: "document.process".into(),
            correlation_id: Some("corr-9".into()),
            step_id: "ocr".into(),
            step_index: 0,
            step_count: 3,
            attempt: 1,
            max_attempts: 3,
            topic: "ocr".into(),
            ack_timeout_ms: 30_000,
            lease_duration_ms: 60_000,
            issued_at: lucius_core::Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
            payload: serde_json::json!({"page": 1}).into(),
            command: serde_json::json!({}).into(),
            input: None,
        }
    }

    #[test]
    fn renders_ids_and_properties() {
        let m = DirectiveMessage::render(&directive()).unwrap();
        assert_eq!(m.message_id, "job-1.0.1");
        assert_eq!(m.session_id, "job-1");
        assert_eq!(m.label, "ocr");
        let back: Directive = serde_json::from_str(&m.body).unwrap();
        assert_eq!(back, directive());
        let props: HashMap<_, _> = m.properties.iter().cloned().collect();
        assert_eq!(props["attempt"], "1");
        assert_eq!(props["correlationId"], "corr-9");
        assert_eq!(props["schemaVersion"], "1");
        let bp = serde_json::to_value(m.options().broker_properties.unwrap()).unwrap();
        assert_eq!(bp["PartitionKey"], bp["SessionId"]);
    }

    #[test]
    fn refuses_ids_over_the_limit_and_drops_unsafe_headers() {
        let mut d = directive();
        d.directive_id = "x".repeat(129).into();
        assert_eq!(
            DirectiveMessage::render(&d),
            Err(MessageError::TooLong {
                field: "MessageId",
                len: 129
            })
        );
        let mut d = directive();
        d.job_id = "".into();
        assert!(matches!(
            DirectiveMessage::render(&d),
            Err(MessageError::Empty { .. })
        ));
        let mut d = directive();
        d.correlation_id = Some("é\nb".into());
        let m = DirectiveMessage::render(&d).unwrap();
        assert!(m.properties.iter().all(|(k, _)| *k != "correlationId"));
        assert_eq!(m.correlation_id.as_deref(), Some("é\nb"));
        d.correlation_id = Some("c".repeat(129).into());
        assert_eq!(DirectiveMessage::render(&d).unwrap().correlation_id, None);
        let mut d = directive();
        d.directive_id = "x".repeat(128).into();
        assert!(DirectiveMessage::render(&d).is_ok());
    }
}
