//! The [`Directive`]: what a worker receives for one attempt of one step. Version 1.
//!
//! This is the contract between Lucius and its workers; adapters render it on the wire
//! (the Service Bus adapter as the message body, with ids mirrored in headers).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::json::Json;

/// The directive format version carried in every directive.
pub const DIRECTIVE_SCHEMA_VERSION: u32 = 1;

/// One step attempt to perform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Directive {
    /// Format version, currently 1.
    pub schema_version: u32,
    /// Unique per job, step and attempt (`<jobId>.<stepIndex>.<attempt>`); republishing the
    /// same attempt reuses it, so receivers can drop duplicates.
    pub directive_id: Arc<str>,
    /// The job.
    pub job_id: Arc<str>,
    /// The tenant.
    pub tenant_id: Arc<str>,
    /// The command's request type.
    pub request_type: Arc<str>,
    /// The client's correlation id, if any.
    pub correlation_id: Option<Arc<str>>,
    /// The step to perform.
    pub step_id: Arc<str>,
    /// Its position, from 0.
    pub step_index: u32,
    /// Number of steps in the job.
    pub step_count: u32,
    /// The attempt: every worker call for this directive must name it.
    pub attempt: u32,
    /// Attempts allowed for the step.
    pub max_attempts: u32,
    /// Topic (or queue) the directive is published to.
    pub topic: Arc<str>,
    /// Milliseconds the worker has to ACK after publication.
    pub ack_timeout_ms: u64,
    /// Milliseconds of lease each ACK or heartbeat grants.
    pub lease_duration_ms: u64,
    /// When the directive was created (RFC 3339, UTC).
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "String")]
    pub issued_at: crate::time::Timestamp,
    /// The step's payload from the command.
    pub payload: Json,
    /// The command-level payload.
    pub command: Json,
    /// The result of the previous step, if this is not the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Json>,
}

impl Directive {
    /// The JSON Schema of the directive format.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Directive)).unwrap_or_default()
    }
}
