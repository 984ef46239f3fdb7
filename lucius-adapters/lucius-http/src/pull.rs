//! `POST /v1/workers/poll`: workers without a bus long-poll for directives.

use bytes::Bytes;
use hyper::StatusCode;
use lucius_core::Millis;
use lucius_runtime::{PollError, PullFilter};

use crate::api::{json, Api, HttpResponse};
use crate::error::ApiError;
use crate::request::{json_object, Fields};
use crate::views::PollResponse;

/// The members the poll body accepts (kept equal to the documented schema by a test).
pub(crate) const POLL_FIELDS: &[&str] = &["workerId", "topics", "steps", "max", "waitSeconds"];

/// Longest wait a poll may ask for, in seconds.
pub(crate) const MAX_WAIT_SECONDS: f64 = 60.0;
/// Wait when the body names none, in seconds.
const DEFAULT_WAIT_SECONDS: f64 = 20.0;
/// Most directives one poll may take.
const MAX_PER_POLL: u32 = 100;

impl Api {
    /// `POST /v1/workers/poll` with `{"workerId", "topics", "steps", "max", "waitSeconds"}`:
    /// claims up to `max` due directives of those topics and steps, waiting up to
    /// `waitSeconds` for one; answers `{"directives": [...]}` (empty when the wait ran out).
    pub(crate) async fn poll(&self, body: &Bytes) -> Result<HttpResponse, ApiError> {
        let obj = json_object(body, true)?;
        let mut f = Fields::new(&obj, POLL_FIELDS);
        let worker = f.opt_string("workerId", 128);
        let topics = f.opt_strings("topics", 100, 260);
        let steps = f.opt_strings("steps", 100, 128);
        let max = f.opt_int("max", 1, MAX_PER_POLL).unwrap_or(1);
        let wait = f
            .opt_number("waitSeconds", 0.0, MAX_WAIT_SECONDS)
            .unwrap_or(DEFAULT_WAIT_SECONDS);
        f.finish()?;
        let filter = PullFilter { topics, steps };
        let directives = self
            .lucius
            .poll(&filter, max as usize, Millis::from_secs_f64(wait))
            .await
            .map_err(|e| match e {
                PollError::Engine(e) => ApiError::from(e),
                other => ApiError::new(
                    StatusCode::CONFLICT,
                    "PULL_DISABLED",
                    format!("{other} (LUCIUS_SERVICEBUS_CONNECTION is set)"),
                ),
            })?;
        if !directives.is_empty() {
            tracing::debug!(
                worker = worker.as_deref().unwrap_or(""),
                count = directives.len(),
                "directives handed out"
            );
        }
        Ok(json(StatusCode::OK, &PollResponse { directives }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::PollBody;

    /// The hand-written checks accept exactly the members the OpenAPI schema documents.
    #[test]
    fn poll_fields_match_the_documented_schema() {
        let s = serde_json::to_value(schemars::schema_for!(PollBody)).unwrap();
        let mut documented: Vec<&str> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        let mut accepted = POLL_FIELDS.to_vec();
        accepted.sort_unstable();
        assert_eq!(accepted, documented);
    }
}
