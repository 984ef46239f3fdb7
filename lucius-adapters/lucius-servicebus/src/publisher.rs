//! [`ServiceBusPublisher`]: the core `Publisher` port on `azure_messaging_servicebus`, with
//! its own per-request timeout and the classification of failures the engine acts on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::HttpClient;
use azure_messaging_servicebus::service_bus::QueueClient;
use lucius_core::{Directive, PublishError, Publisher};

use crate::connection::{check_entity, ConnectionString, ConnectionStringError};
use crate::message::DirectiveMessage;
use crate::transport;

/// Why a publisher could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The connection string is not usable.
    #[error(transparent)]
    Connection(#[from] ConnectionStringError),
    /// The per-request timeout is zero.
    #[error("the Service Bus request timeout must be greater than zero")]
    ZeroTimeout,
}

/// Publishes each [`Directive`] as one Service Bus message (see [`DirectiveMessage`] for
/// the format) to the queue or topic named by `directive.topic`, or to the connection
/// string's `EntityPath` when it has one (then every directive goes there, whatever its
/// topic: scope the string to a single entity only if all steps share it).
///
/// Every send is bounded by the timeout given to [`ServiceBusPublisher::new`] (the crate
/// has none); it must run on a Tokio runtime with timers enabled. The publisher does not
/// retry: the engine does, through the outbox. Failures are classified:
///
/// | Outcome | Class |
/// |---|---|
/// | 400, 401, 403, 404, 410, 413 and other 4xx; bad entity name; id over 128 chars | [`PublishError::Permanent`] |
/// | 408, 429, 5xx; timeout; connection refused or reset; any other failure | [`PublishError::Transient`] |
#[derive(Clone)]
pub struct ServiceBusPublisher {
    conn: Arc<ConnectionString>,
    namespace: String,
    http: Arc<dyn HttpClient>,
    timeout: Duration,
}

impl std::fmt::Debug for ServiceBusPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusPublisher")
            .field("conn", &self.conn)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ServiceBusPublisher {
    /// A publisher for a connection string (see [`ConnectionString::parse`]), each request
    /// bounded by `timeout`. A non-Azure endpoint (or `UseDevelopmentEmulator=true`) is
    /// reached over plain HTTP at the endpoint's host and port.
    pub fn new(conn: &str, timeout: Duration) -> Result<ServiceBusPublisher, ConfigError> {
        let conn = ConnectionString::parse(conn)?;
        let http = transport::client_for(&conn);
        ServiceBusPublisher::with_client(conn, http, timeout)
    }

    /// A publisher over a given HTTP client (used as-is, not redirected).
    pub fn with_client(
        conn: ConnectionString,
        http: Arc<dyn HttpClient>,
        timeout: Duration,
    ) -> Result<ServiceBusPublisher, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(ServiceBusPublisher {
            namespace: conn.namespace(),
            conn: Arc::new(conn),
            http,
            timeout,
        })
    }

    /// The connection it publishes with.
    pub fn connection(&self) -> &ConnectionString {
        &self.conn
    }

    /// The queue or topic a directive is sent to.
    pub fn entity_for<'d>(&'d self, d: &'d Directive) -> &'d str {
        self.conn.entity_path.as_deref().unwrap_or(&d.topic)
    }
}

#[async_trait]
impl Publisher for ServiceBusPublisher {
    async fn publish(&self, d: &Directive) -> Result<(), PublishError> {
        let msg = DirectiveMessage::render(d).map_err(|e| {
            PublishError::Permanent(format!("directive {} cannot be sent: {e}", d.directive_id))
        })?;
        let entity = self.entity_for(d);
        check_entity(entity.to_owned()).map_err(|e| PublishError::Permanent(e.to_string()))?;
        let client = QueueClient::new(
            self.http.clone(),
            self.namespace.clone(),
            entity,
            self.conn.key_name.clone(),
            self.conn.key.clone(),
        )
        .map_err(|e| classify(&e, &d.directive_id, entity))?;
        let send = client.send_message(&msg.body, Some(msg.options()));
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(())) => {
                tracing::debug!(directive = %d.directive_id, entity, "directive sent to Service Bus");
                Ok(())
            }
            Ok(Err(e)) => Err(classify(&e, &d.directive_id, entity)),
            Err(_) => Err(PublishError::Transient(format!(
                "sending directive {} to {entity:?} timed out after {} ms",
                d.directive_id,
                self.timeout.as_millis()
            ))),
        }
    }
}

/// How a failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Retry later.
    Transient,
    /// Do not retry.
    Permanent,
}

/// The class of an HTTP status from Service Bus.
pub(crate) fn class_of_status(status: u16) -> Class {
    match status {
        408 | 429 => Class::Transient,
        400..=499 => Class::Permanent,
        _ => Class::Transient,
    }
}

/// What a status means, for error messages.
pub(crate) fn meaning(status: u16) -> &'static str {
    match status {
        400 => "bad request (a broker or application property was refused)",
        401 => "the SharedAccessKeyName/SharedAccessKey were refused",
        403 => "forbidden: the policy lacks the Send or Listen claim, the quota is exceeded or the message is too large",
        404 | 410 => "the queue or topic does not exist",
        408 => "the broker timed out",
        413 => "the message is too large",
        429 => "throttled",
        500..=599 => "the broker is failing or unavailable",
        _ => "unexpected answer",
    }
}

/// Maps a crate error to the engine's kinds, with a message naming directive and entity.
pub(crate) fn classify(e: &azure_core::Error, directive: &str, entity: &str) -> PublishError {
    let what = format!("sending directive {directive} to Service Bus entity {entity:?}");
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            let code = u16::from(*status);
            let text = format!(
                "{what}: HTTP {code} ({}{})",
                meaning(code),
                error_code
                    .as_deref()
                    .map(|c| format!(", code {c}"))
                    .unwrap_or_default()
            );
            match class_of_status(code) {
                Class::Permanent => PublishError::Permanent(text),
                Class::Transient => PublishError::Transient(text),
            }
        }
        // Requests that cannot be built (a URL that does not parse) will never work.
        ErrorKind::DataConversion => PublishError::Permanent(format!("{what}: {e}")),
        // Connection refused or reset, DNS, TLS, a broken body stream: try again later.
        _ => PublishError::Transient(format!("{what}: {}", error_chain(e))),
    }
}

/// An error with its sources, so "connection refused" is not hidden behind the context.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_engine_needs() {
        for s in [400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(class_of_status(s), Class::Permanent, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 302] {
            assert_eq!(class_of_status(s), Class::Transient, "{s}");
        }
    }

    #[test]
    fn zero_timeout_and_bad_strings_are_config_errors() {
        let ok = "Endpoint=sb://a.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s";
        assert_eq!(
            ServiceBusPublisher::new(ok, Duration::ZERO).unwrap_err(),
            ConfigError::ZeroTimeout
        );
        let err = ServiceBusPublisher::new("Endpoint=sb://a/", Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("SharedAccessKey"), "{err}");
        let p = ServiceBusPublisher::new(ok, Duration::from_secs(1)).unwrap();
        assert!(!format!("{p:?}").contains("SharedAccessKey=s"));
    }

    #[test]
    fn http_errors_name_status_directive_and_entity() {
        let e = ErrorKind::http_response(azure_core::StatusCode::Unauthorized, None).into_error();
        let p = classify(&e, "j.0.1", "ocr");
        assert!(
            matches!(&p, PublishError::Permanent(m) if m.contains("401") && m.contains("j.0.1") && m.contains("ocr")),
            "{p}"
        );
        let e =
            ErrorKind::http_response(azure_core::StatusCode::TooManyRequests, None).into_error();
        assert!(matches!(
            classify(&e, "j.0.1", "ocr"),
            PublishError::Transient(_)
        ));
        let e = azure_core::Error::message(ErrorKind::Io, "connection refused");
        assert!(matches!(
            classify(&e, "j.0.1", "ocr"),
            PublishError::Transient(_)
        ));
    }
}
