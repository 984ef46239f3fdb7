//! Job routes: intake (`POST /v1/commands`), the job view, worker calls and cancellation.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, LOCATION};
use hyper::{HeaderMap, StatusCode};
use lucius_core::engine::WorkerCall;
use lucius_core::{Failure, JobId};

use crate::api::{json, json_bytes, truncate, Api, HttpResponse};
use crate::error::ApiError;
use crate::request::{json_object, Fields};
use crate::routes::WorkerOp;
use crate::views::{submit_answer, JobView, StepView};

/// Set to `true` on the answer to an idempotent replay.
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Default cancellation reason.
const DEFAULT_CANCEL_REASON: &str = "cancelled by client";

impl Api {
    /// `POST /v1/commands`: validate, persist, answer `202`, publish in the background.
    /// An idempotent replay answers `202` too, with the same job and `Idempotent-Replayed: true`.
    pub(crate) async fn submit(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<HttpResponse, ApiError> {
        let header_key = match headers.get("idempotency-key") {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::schema(vec![(
                    "/idempotencyKey".into(),
                    "the Idempotency-Key header must be 1 to 128 of [A-Za-z0-9._:=+@-]".into(),
                )])
            })?),
        };
        let out = self.engine.submit_bytes(body, header_key).await?;
        let (body, location) = submit_answer(&out.value);
        let mut res = json_bytes(StatusCode::ACCEPTED, body);
        if let Ok(loc) = HeaderValue::from_maybe_shared(location) {
            res.headers_mut().insert(LOCATION, loc);
        }
        if !out.value.created {
            res.headers_mut().insert(
                HeaderName::from_static(REPLAYED_HEADER),
                HeaderValue::from_static("true"),
            );
        }
        self.publish_in_background(out.to_publish);
        Ok(res)
    }

    /// `GET /v1/jobs/{jobId}`.
    pub(crate) async fn job(&self, id: &str) -> Result<HttpResponse, ApiError> {
        let id = parse_job_id(id)?;
        let rec = self.engine.job(&id).await?;
        Ok(json(StatusCode::OK, &JobView::of(&rec)))
    }

    /// `POST /v1/jobs/{jobId}/steps/{stepId}/{ack|heartbeat|complete|fail}`.
    pub(crate) async fn worker(
        &self,
        id: &str,
        step_id: &str,
        op: WorkerOp,
        body: &Bytes,
    ) -> Result<HttpResponse, ApiError> {
        let job_id = parse_job_id(id)?;
        let obj = json_object(body, false)?;
        let mut f = Fields::new(&obj, fields_of(op));
        let attempt = f.int("attempt", 1, u32::MAX);
        let worker_id = f.opt_string("workerId", 128);
        let failure = match op {
            WorkerOp::Fail => {
                let error = f.string("error", 4096);
                let retryable = f.opt_bool("retryable").unwrap_or(false);
                error.map(|error| Failure { error, retryable })
            }
            _ => None,
        };
        let result = f.any("result");
        f.finish()?;
        let call = WorkerCall {
            job_id: &job_id,
            step_id,
            attempt: attempt.unwrap_or_default(),
            worker_id: worker_id.as_deref(),
        };
        let step = match op {
            WorkerOp::Ack => self.engine.ack(call).await?,
            WorkerOp::Heartbeat => self.engine.heartbeat(call).await?,
            WorkerOp::Complete => {
                let out = self.engine.complete(call, result).await?;
                self.publish_in_background(out.to_publish);
                out.value
            }
            WorkerOp::Fail => {
                let failure = failure.ok_or_else(|| {
                    ApiError::schema(vec![("/error".into(), "is required".into())])
                })?;
                let out = self.engine.fail(call, failure).await?;
                self.publish_in_background(out.to_publish);
                out.value
            }
        };
        Ok(json(StatusCode::OK, &StepView::of(&step)))
    }

    /// `POST /v1/jobs/{jobId}/cancel` with an optional `{"reason"}`.
    pub(crate) async fn cancel(&self, id: &str, body: &Bytes) -> Result<HttpResponse, ApiError> {
        let id = parse_job_id(id)?;
        let obj = json_object(body, true)?;
        let mut f = Fields::new(&obj, &["reason"]);
        let reason = f.opt_string("reason", 1024);
        f.finish()?;
        let rec = self
            .engine
            .cancel(&id, reason.as_deref().unwrap_or(DEFAULT_CANCEL_REASON))
            .await?;
        Ok(json(StatusCode::OK, &JobView::of(&rec)))
    }
}

/// The members each worker call accepts (kept equal to the documented body schemas by a test).
fn fields_of(op: WorkerOp) -> &'static [&'static str] {
    match op {
        WorkerOp::Ack | WorkerOp::Heartbeat => &["attempt", "workerId"],
        WorkerOp::Complete => &["attempt", "workerId", "result"],
        WorkerOp::Fail => &["attempt", "workerId", "error", "retryable"],
    }
}

/// A job id from a path; a malformed one names no job (`404`).
fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    JobId::parse(raw).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "JOB_NOT_FOUND",
            format!("job {:?} not found: {e}", truncate(raw, 80)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::{CompleteBody, FailBody, WorkerCallBody};
    use schemars::JsonSchema;

    fn properties<T: JsonSchema>() -> Vec<String> {
        let s = serde_json::to_value(schemars::schema_for!(T)).unwrap();
        let mut p: Vec<String> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        p.sort();
        p
    }

    fn sorted(op: WorkerOp) -> Vec<String> {
        let mut v: Vec<String> = fields_of(op).iter().map(|s| (*s).to_owned()).collect();
        v.sort();
        v
    }

    /// The hand-written checks accept exactly the members the OpenAPI schemas document.
    #[test]
    fn worker_fields_match_the_documented_schemas() {
        assert_eq!(sorted(WorkerOp::Ack), properties::<WorkerCallBody>());
        assert_eq!(sorted(WorkerOp::Heartbeat), properties::<WorkerCallBody>());
        assert_eq!(sorted(WorkerOp::Complete), properties::<CompleteBody>());
        assert_eq!(sorted(WorkerOp::Fail), properties::<FailBody>());
    }
}
