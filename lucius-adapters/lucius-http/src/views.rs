//! Wire views: the JSON this crate sends and receives, with their `schemars` schemas (the
//! same types feed `/openapi.json`). Core types stay wire-agnostic; these convert from them.

use lucius_core::engine::Submission;
use lucius_core::{Directive, JobRecord};
use lucius_core::{Json, OutboxEntry, Step, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The error body of every refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`SCHEMA_VIOLATION`, `STALE_ATTEMPT`, …).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured details; validation errors list `errors[]` of `{pointer, message}`.
    pub details: serde_json::Value,
}

/// The answer to `POST /v1/commands`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitResponse {
    /// The job (the same one for an idempotent replay).
    pub job_id: String,
    /// The job's status when the answer was written.
    pub status: String,
    /// Where to poll the job (`/v1/jobs/{jobId}`, also in `Location`).
    pub status_url: String,
}

impl SubmitResponse {
    pub(crate) fn of(s: &Submission) -> SubmitResponse {
        SubmitResponse {
            job_id: s.job_id.to_string(),
            status: s.status.as_str().to_owned(),
            status_url: job_url(s.job_id.as_str()),
        }
    }
}

/// The URL of a job.
pub(crate) fn job_url(job_id: &str) -> String {
    format!("/v1/jobs/{job_id}")
}

/// The `202` body ([`SubmitResponse`]) and its `Location`, written straight into one
/// buffer: this answer goes out for every accepted command, and building the struct,
/// formatting the URL and serialising it was 3% of the intake path. The location is a slice
/// of the body, not a copy. Ids that would need JSON escaping (the engine never makes one)
/// go through `serde_json`.
pub(crate) fn submit_answer(s: &Submission) -> (bytes::Bytes, bytes::Bytes) {
    let id = s.job_id.as_str();
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        let view = SubmitResponse::of(s);
        let body = serde_json::to_vec(&view).unwrap_or_default();
        return (body.into(), view.status_url.into_bytes().into());
    }
    const URL: &str = "/v1/jobs/";
    let status = s.status.as_str();
    let mut b = Vec::with_capacity(48 + 2 * id.len() + status.len());
    b.extend_from_slice(b"{\"jobId\":\"");
    b.extend_from_slice(id.as_bytes());
    b.extend_from_slice(b"\",\"status\":\"");
    b.extend_from_slice(status.as_bytes());
    b.extend_from_slice(b"\",\"statusUrl\":\"");
    let url_at = b.len();
    b.extend_from_slice(URL.as_bytes());
    b.extend_from_slice(id.as_bytes());
    let url_end = b.len();
    b.extend_from_slice(b"\"}");
    let body = bytes::Bytes::from(b);
    let location = body.slice(url_at..url_end);
    (body, location)
}

fn time(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// A job with its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// The job id.
    pub job_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The protocol.
    pub request_type: String,
    /// The client's idempotency key.
    pub idempotency_key: String,
    /// The client's correlation id.
    pub correlation_id: Option<String>,
    /// `ACCEPTED`, `IN_PROGRESS`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub status: String,
    /// Why the job failed or was cancelled.
    pub error: Option<String>,
    /// Dispatch partition (`tenant#YYYYMM`).
    pub partition: String,
    /// The command-level payload.
    pub payload: Json,
    /// Number of steps.
    pub step_count: u32,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// The steps, in order.
    pub steps: Vec<StepView>,
}

impl JobView {
    pub(crate) fn of(rec: &JobRecord) -> JobView {
        let j = &rec.job;
        JobView {
            job_id: j.id.to_string(),
            tenant_id: j.tenant_id.to_string(),
            request_type: j.request_type.to_string(),
            idempotency_key: j.idempotency_key.to_string(),
            correlation_id: j.correlation_id.as_deref().map(str::to_owned),
            status: j.status.as_str().to_owned(),
            error: j.error.as_deref().map(str::to_owned),
            partition: j.partition.to_string(),
            payload: j.payload.clone(),
            step_count: j.step_count,
            created_at: time(j.created_at),
            updated_at: time(j.updated_at),
            steps: rec.steps.iter().map(StepView::of).collect(),
        }
    }
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    /// The step id.
    pub step_id: String,
    /// Position, from 0.
    pub index: u32,
    /// Where its directives go.
    pub topic: String,
    /// `PENDING`, `QUEUED`, `INITIATED`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub status: String,
    /// Current attempt (0 until queued); worker calls must name it.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The current attempt's directive id, once queued.
    pub directive_id: Option<String>,
    /// When an ACK is due (`INITIATED`).
    pub ack_deadline: Option<String>,
    /// When the lease ends (`RUNNING`).
    pub lease_expires_at: Option<String>,
    /// The worker holding or last holding the lease.
    pub worker_id: Option<String>,
    /// The step payload from the command.
    pub payload: Json,
    /// The worker's result (`SUCCEEDED`).
    pub result: Option<Json>,
    /// The last error.
    pub error: Option<String>,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl StepView {
    pub(crate) fn of(s: &Step) -> StepView {
        StepView {
            step_id: s.step_id.to_string(),
            index: s.index,
            topic: s.topic.to_string(),
            status: s.status.as_str().to_owned(),
            attempt: s.attempt,
            max_attempts: s.max_attempts,
            directive_id: (s.attempt > 0).then(|| s.outbox_id().to_string()),
            ack_deadline: s.ack_deadline.map(time),
            lease_expires_at: s.lease_expires_at.map(time),
            worker_id: s.worker_id.as_deref().map(str::to_owned),
            payload: s.payload.clone(),
            result: s.result.clone(),
            error: s.error.as_deref().map(str::to_owned),
            updated_at: time(s.updated_at),
        }
    }
}

/// Body of `ack` and `heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerCallBody {
    /// The attempt the worker acts on (from the directive), at least 1.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// The worker's id (1–128 characters), used for lease ownership.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128))]
    pub worker_id: Option<String>,
}

/// Body of `complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteBody {
    /// The attempt the worker acts on, at least 1.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// The worker's id.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128))]
    pub worker_id: Option<String>,
    /// The step's result (any JSON; `null` when absent), handed to the next step as `input`.
    #[serde(default)]
    pub result: serde_json::Value,
}

/// Body of `fail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailBody {
    /// The attempt the worker acts on, at least 1.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// The worker's id.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128))]
    pub worker_id: Option<String>,
    /// What went wrong (1–4096 characters).
    #[schemars(length(min = 1, max = 4096))]
    pub error: String,
    /// Whether another attempt may succeed (default `false`: the step fails for good).
    #[serde(default)]
    pub retryable: bool,
}

/// Body of `POST /v1/workers/poll` (every member optional: `{}` takes one directive of
/// any topic, waiting up to 20 s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollBody {
    /// The polling worker's id (1–128 characters), for logs; the lease is taken by `ack`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128))]
    pub worker_id: Option<String>,
    /// Only directives of these topics (a step's `topic`, e.g. `lucius.ocr`); absent or
    /// empty: any topic. At most 100 distinct names of 1–260 characters.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub topics: Vec<String>,
    /// Only directives of these steps (e.g. `ocr`); absent or empty: any step. At most 100.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub steps: Vec<String>,
    /// At most this many directives (1–100, default 1).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub max: Option<u32>,
    /// Seconds to wait for a directive when none is due (0–60, default 20; 0 answers at
    /// once).
    #[serde(default)]
    #[schemars(range(min = 0, max = 60))]
    pub wait_seconds: Option<f64>,
}

/// Answer of `POST /v1/workers/poll`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse {
    /// The directives handed out (empty when the wait ran out). Each is this worker's
    /// until its `ackTimeoutMs` runs out: `ack` it, then heartbeat and complete or fail.
    pub directives: Vec<Directive>,
}

/// Optional body of `cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelBody {
    /// Why (1–1024 characters; default `cancelled by client`).
    #[serde(default)]
    #[schemars(length(min = 1, max = 1024))]
    pub reason: Option<String>,
}

/// Optional body of `POST /v1/admin/outbox/retry` (query parameters of the same names work too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryMatchingBody {
    /// `DEAD` or `PENDING`; both when absent.
    #[serde(default)]
    pub status: Option<String>,
    /// Only this partition (`tenant#YYYYMM`).
    #[serde(default)]
    pub partition: Option<String>,
    /// At most this many (1–1000, default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
}

/// The answer to a bulk retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RetryReport {
    /// Entries moved to `PENDING` (and handed to the publisher).
    pub retried: usize,
}

/// An outbox entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntryView {
    /// Also the directive id: `<jobId>.<stepIndex>.<attempt>`.
    pub id: String,
    /// The job.
    pub job_id: String,
    /// Dispatch partition.
    pub partition: String,
    /// The step's index.
    pub step_index: u32,
    /// The step attempt.
    pub attempt: u32,
    /// `PENDING`, `SENT` or `DEAD`.
    pub status: String,
    /// Failed publications so far.
    pub publish_attempts: u32,
    /// Earliest next publication (RFC 3339).
    pub next_attempt_at: String,
    /// Last publication error.
    pub last_error: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// When it was published (RFC 3339).
    pub sent_at: Option<String>,
    /// What is (or was) published.
    pub directive: Directive,
}

impl OutboxEntryView {
    pub(crate) fn of(e: &OutboxEntry) -> OutboxEntryView {
        OutboxEntryView {
            id: e.id.to_string(),
            job_id: e.job_id.to_string(),
            partition: e.partition.to_string(),
            step_index: e.step_index,
            attempt: e.attempt,
            status: e.status.as_str().to_owned(),
            publish_attempts: e.publish_attempts,
            next_attempt_at: time(e.next_attempt_at),
            last_error: e.last_error.as_deref().map(str::to_owned),
            created_at: time(e.created_at),
            updated_at: time(e.updated_at),
            sent_at: e.sent_at.map(time),
            directive: e.directive.as_ref().clone(),
        }
    }
}

/// The answer to `GET /v1/admin/outbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutboxList {
    /// Matching entries, oldest `nextAttemptAt` first.
    pub entries: Vec<OutboxEntryView>,
    /// How many were returned.
    pub count: usize,
}

/// The answer to `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucius_core::{JobId, JobStatus, Partition, TenantId, Timestamp};

    fn submission(id: JobId, status: JobStatus) -> Submission {
        let tenant = TenantId::parse("acme").unwrap();
        Submission {
            job_id: id,
            status,
            partition: Partition::of(&tenant, Timestamp(0)),
            created: true,
        }
    }

    /// The hand-written `202` body is what serialising [`SubmitResponse`] gives, and the
    /// location is its `statusUrl`.
    #[test]
    fn submit_answer_is_the_serialised_view() {
        let tenant = TenantId::parse("acme").unwrap();
        let derived = JobId::derive(&tenant, "k-1");
        // Not a UUID (only deserialisation makes one): the serde_json path.
        let odd: JobId = serde_json::from_str(r#""we\"ird/\\id""#).unwrap();
        for id in [derived, odd] {
            for status in [
                JobStatus::Accepted,
                JobStatus::InProgress,
                JobStatus::Failed,
            ] {
                let s = submission(id.clone(), status);
                let (body, location) = submit_answer(&s);
                let view = SubmitResponse::of(&s);
                let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(parsed, serde_json::to_value(&view).unwrap());
                assert_eq!(&location[..], view.status_url.as_bytes());
            }
        }
    }
}
