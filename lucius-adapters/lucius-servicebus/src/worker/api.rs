//! [`Orchestrator`]: the worker's client of the orchestrator's worker routes
//! (`POST /v1/jobs/{jobId}/steps/{stepId}/ack|heartbeat|complete|fail`), over the same
//! `azure_core` HTTP client the Service Bus calls use.

use std::sync::Arc;
use std::time::Duration;

use azure_core::{HttpClient, Method, Request};
use lucius_core::{Directive, Failure};
use serde_json::{json, Value};
use url::Url;

use super::WorkerError;
use crate::publisher::error_chain;

/// A worker call the orchestrator did not refuse outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `2xx`: done.
    Accepted,
    /// `404` or `409`: the job, step or attempt is unknown, stale or finished: the
    /// directive is no longer this worker's to act on.
    Obsolete {
        /// The status.
        status: u16,
        /// The orchestrator's message.
        message: String,
    },
}

/// The four worker calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Take the lease.
    Ack,
    /// Extend it.
    Heartbeat,
    /// Report success.
    Complete,
    /// Report failure.
    Fail,
}

impl Call {
    /// The route's last segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Ack => "ack",
            Call::Heartbeat => "heartbeat",
            Call::Complete => "complete",
            Call::Fail => "fail",
        }
    }
}

/// The orchestrator's worker API.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    base: Url,
    http: Arc<dyn HttpClient>,
    worker_id: String,
    worker_key: Option<String>,
    timeout: Duration,
}

impl Orchestrator {
    /// A client of the orchestrator at `base` (e.g. `http://localhost:8000`).
    pub fn new(
        base: Url,
        http: Arc<dyn HttpClient>,
        worker_id: String,
        worker_key: Option<String>,
        timeout: Duration,
    ) -> Orchestrator {
        Orchestrator {
            base,
            http,
            worker_id,
            worker_key,
            timeout,
        }
    }

    /// `ack` the directive's attempt.
    pub async fn ack(&self, d: &Directive) -> Result<Answer, WorkerError> {
        self.call(d, Call::Ack, self.body(d)).await
    }

    /// `heartbeat` the directive's attempt.
    pub async fn heartbeat(&self, d: &Directive) -> Result<Answer, WorkerError> {
        self.call(d, Call::Heartbeat, self.body(d)).await
    }

    /// `complete` the directive's attempt with `result`.
    pub async fn complete(&self, d: &Directive, result: &Value) -> Result<Answer, WorkerError> {
        let mut body = self.body(d);
        body["result"] = result.clone();
        self.call(d, Call::Complete, body).await
    }

    /// `fail` the directive's attempt.
    pub async fn fail(&self, d: &Directive, failure: &Failure) -> Result<Answer, WorkerError> {
        let mut body = self.body(d);
        body["error"] = json!(error_text(&failure.error));
        body["retryable"] = json!(failure.retryable);
        self.call(d, Call::Fail, body).await
    }

    fn body(&self, d: &Directive) -> Value {
        json!({"attempt": d.attempt, "workerId": self.worker_id})
    }

    /// The URL of a call.
    /// The worker id every call sends.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The route of `call` on a step.
    pub fn url(&self, job_id: &str, step_id: &str, call: Call) -> Result<Url, WorkerError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| WorkerError::BadUrl {
                url: self.base.to_string(),
                reason: "it cannot have a path".into(),
            })?
            .pop_if_empty()
            .extend(["v1", "jobs", job_id, "steps", step_id, call.as_str()]);
        Ok(url)
    }

    async fn call(&self, d: &Directive, call: Call, body: Value) -> Result<Answer, WorkerError> {
        let url = self.url(&d.job_id, &d.step_id, call)?;
        let what = format!("{} of {} to {url}", call.as_str(), d.directive_id);
        let mut req = Request::new(url, Method::Post);
        req.insert_header("content-type", "application/json");
        if let Some(k) = &self.worker_key {
            req.insert_header("x-worker-key", k.clone());
        }
        req.set_body(body.to_string());
        let exchange = async {
            let rsp = self.http.execute_request(&req).await?;
            let (status, _, body) = rsp.deconstruct();
            let body = body.collect().await?;
            Ok::<_, azure_core::Error>((u16::from(status), body))
        };
        let (status, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                return Err(WorkerError::Orchestrator {
                    permanent: false,
                    message: format!("{what} timed out after {} ms", self.timeout.as_millis()),
                })
            }
            Ok(Err(e)) => {
                return Err(WorkerError::Orchestrator {
                    permanent: false,
                    message: format!("{what}: {}", error_chain(&e)),
                })
            }
            Ok(Ok(r)) => r,
        };
        let message = error_message(&body);
        match status {
            200..=299 => Ok(Answer::Accepted),
            404 | 409 => Ok(Answer::Obsolete { status, message }),
            408 | 429 | 500..=599 => Err(WorkerError::Orchestrator {
                permanent: false,
                message: format!("{what}: HTTP {status}: {message}"),
            }),
            _ => Err(WorkerError::Orchestrator {
                permanent: true,
                message: format!("{what}: HTTP {status}: {message}"),
            }),
        }
    }
}

/// Longest `error` the orchestrator accepts in a `fail` call, in characters.
pub const MAX_ERROR_CHARS: usize = 4096;

/// A failure reason as the orchestrator accepts it: 1 to [`MAX_ERROR_CHARS`] characters
/// (longer ones are cut, an empty one is replaced), so a handler's message can never get
/// the report itself refused.
fn error_text(error: &str) -> String {
    if error.is_empty() {
        return "(no reason given)".into();
    }
    if error.chars().count() <= MAX_ERROR_CHARS {
        return error.to_owned();
    }
    let cut = error
        .char_indices()
        .nth(MAX_ERROR_CHARS - 1)
        .map_or(error.len(), |(i, _)| i);
    format!("{}…", &error[..cut])
}

/// `error.message` of a Lucius error body, or the body itself (truncated).
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_ids_and_keep_a_base_path() {
        let o = Orchestrator::new(
            Url::parse("http://h:8000/lucius/").unwrap(),
            azure_core::new_http_client(),
            "w".into(),
            None,
            Duration::from_secs(1),
        );
        assert_eq!(
            o.url("j/1", "a b", Call::Ack).unwrap().as_str(),
            "http://h:8000/lucius/v1/jobs/j%2F1/steps/a%20b/ack"
        );
    }

    #[test]
    fn failure_reasons_fit_the_orchestrator_limits() {
        assert_eq!(error_text(""), "(no reason given)");
        assert_eq!(error_text("jammed"), "jammed");
        let exact = "é".repeat(MAX_ERROR_CHARS);
        assert_eq!(error_text(&exact), exact);
        let long = error_text(&"é".repeat(MAX_ERROR_CHARS + 10));
        assert_eq!(long.chars().count(), MAX_ERROR_CHARS);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn error_messages_come_from_lucius_error_bodies() {
        assert_eq!(
            error_message(br#"{"error": {"code": "stale", "message": "attempt 1 is stale"}}"#),
            "attempt 1 is stale"
        );
        assert_eq!(error_message(b"nope"), "nope");
    }
}
