//! The protocol registry: `requestType` → ordered steps, each with its topic, payload
//! schema, ACK timeout, lease and attempts. Schemas are compiled once, at load.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::StepId;
use crate::time::Millis;

/// A protocol as written in a protocols file (`LUCIUS_PROTOCOLS_FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtocolSpec {
    /// The request type clients name.
    pub request_type: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the command-level `payload` (default: anything).
    #[serde(default = "any_schema")]
    pub payload_schema: serde_json::Value,
    /// The steps, in order (at least one).
    pub steps: Vec<StepSpec>,
}

/// One step of a protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepSpec {
    /// The step id (`[A-Za-z0-9._-]{1,64}`).
    pub step_id: String,
    /// Topic (or queue) its directives are published to.
    pub topic: String,
    /// JSON Schema of the step's payload; a missing payload is validated as `{}`.
    #[serde(default = "any_schema")]
    pub payload_schema: serde_json::Value,
    /// Seconds a worker has to ACK a published directive (default 30).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_seconds: f64,
    /// Seconds of lease an ACK or heartbeat grants (default 60).
    #[serde(default = "default_lease")]
    pub lease_duration_seconds: f64,
    /// Attempts before the step fails (default 3).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

/// The document a protocols file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtocolsFile {
    /// The protocols.
    pub protocols: Vec<ProtocolSpec>,
}

fn any_schema() -> serde_json::Value {
    serde_json::json!({})
}
fn default_ack_timeout() -> f64 {
    30.0
}
fn default_lease() -> f64 {
    60.0
}
fn default_max_attempts() -> u32 {
    3
}

/// A protocol with compiled schemas.
#[derive(Debug)]
pub struct Protocol {
    /// As specified.
    pub spec: ProtocolSpec,
    /// The request type, shared by every job of this protocol.
    name: Arc<str>,
    pub(crate) payload_validator: jsonschema::Validator,
    /// Compiled steps, in order.
    pub steps: Vec<CompiledStep>,
}

/// A step with its compiled schema and typed settings.
#[derive(Debug)]
pub struct CompiledStep {
    /// The step id.
    pub step_id: StepId,
    /// Its topic (shared by every step of this kind).
    pub topic: Arc<str>,
    /// ACK timeout.
    pub ack_timeout: Millis,
    /// Lease duration.
    pub lease_duration: Millis,
    /// Attempts allowed.
    pub max_attempts: u32,
    pub(crate) validator: jsonschema::Validator,
}

/// Why protocols could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid protocol {request_type:?}: {message}")]
pub struct ProtocolError {
    /// The protocol at fault (empty when the document itself is malformed).
    pub request_type: String,
    /// What is wrong.
    pub message: String,
}

impl Protocol {
    /// Checks and compiles a protocol.
    pub fn compile(spec: ProtocolSpec) -> Result<Protocol, ProtocolError> {
        let err = |message: String| ProtocolError {
            request_type: spec.request_type.clone(),
            message,
        };
        if spec.request_type.is_empty()
            || spec.request_type.len() > 128
            || !spec
                .request_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
        {
            return Err(err("requestType must be 1 to 128 of [A-Za-z0-9._:-]".into()));
        }
        if spec.steps.is_empty() {
            return Err(err("a protocol needs at least one step".into()));
        }
        let payload_validator = jsonschema::validator_for(&spec.payload_schema)
            .map_err(|e| err(format!("payloadSchema does not compile: {e}")))?;
        let mut steps = Vec::with_capacity(spec.steps.len());
        for s in &spec.steps {
            let step_id = StepId::parse(&s.step_id).map_err(|e| err(e.to_string()))?;
            if steps.iter().any(|c: &CompiledStep| c.step_id == step_id) {
                return Err(err(format!("step {step_id:?} appears twice")));
            }
            if s.topic.is_empty() || s.topic.len() > 260 {
                return Err(err(format!(
                    "step {step_id:?}: topic must be 1 to 260 characters"
                )));
            }
            if s.max_attempts == 0 {
                return Err(err(format!(
                    "step {step_id:?}: maxAttempts must be at least 1"
                )));
            }
            for (name, v) in [
                ("ackTimeoutSeconds", s.ack_timeout_seconds),
                ("leaseDurationSeconds", s.lease_duration_seconds),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(err(format!(
                        "step {step_id:?}: {name} must be a positive number"
                    )));
                }
            }
            let validator = jsonschema::validator_for(&s.payload_schema).map_err(|e| {
                err(format!(
                    "step {step_id:?}: payloadSchema does not compile: {e}"
                ))
            })?;
            steps.push(CompiledStep {
                step_id,
                topic: s.topic.as_str().into(),
                ack_timeout: Millis::from_secs_f64(s.ack_timeout_seconds),
                lease_duration: Millis::from_secs_f64(s.lease_duration_seconds),
                max_attempts: s.max_attempts,
                validator,
            });
        }
        Ok(Protocol {
            name: spec.request_type.as_str().into(),
            spec,
            payload_validator,
            steps,
        })
    }

    /// The request type.
    pub fn request_type(&self) -> &str {
        &self.name
    }

    /// The request type as a shared string (no allocation per job).
    pub fn shared_request_type(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The index of a step id.
    pub fn step_index(&self, step_id: &str) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.step_id.as_str() == step_id)
    }
}

/// All known protocols, by request type.
#[derive(Debug, Clone, Default)]
pub struct ProtocolRegistry {
    by_type: BTreeMap<String, Arc<Protocol>>,
}

impl ProtocolRegistry {
    /// An empty registry.
    pub fn new() -> ProtocolRegistry {
        ProtocolRegistry::default()
    }

    /// Adds a protocol; a request type may appear once.
    pub fn register(&mut self, spec: ProtocolSpec) -> Result<(), ProtocolError> {
        if self.by_type.contains_key(&spec.request_type) {
            return Err(ProtocolError {
                request_type: spec.request_type,
                message: "defined twice".into(),
            });
        }
        let p = Protocol::compile(spec)?;
        self.by_type
            .insert(p.request_type().to_owned(), Arc::new(p));
        Ok(())
    }

    /// Loads a protocols document (`{"protocols": [...]}`).
    pub fn from_json(json: &str) -> Result<ProtocolRegistry, ProtocolError> {
        let file: ProtocolsFile = serde_json::from_str(json).map_err(|e| ProtocolError {
            request_type: String::new(),
            message: format!("protocols document is not valid: {e}"),
        })?;
        let mut r = ProtocolRegistry::new();
        for p in file.protocols {
            r.register(p)?;
        }
        Ok(r)
    }

    /// The built-in demo protocols: `document.process` (`ocr` → `embed` → `index`) and
    /// `demo.echo` (one step), so Lucius runs with no configuration.
    pub fn demo() -> ProtocolRegistry {
        // The document is a constant checked by a unit test, so loading it cannot fail.
        ProtocolRegistry::from_json(DEMO_PROTOCOLS).unwrap_or_default()
    }

    /// The protocol of a request type.
    pub fn get(&self, request_type: &str) -> Option<&Arc<Protocol>> {
        self.by_type.get(request_type)
    }

    /// All protocols, by request type.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Protocol>> {
        self.by_type.values()
    }

    /// Number of protocols.
    pub fn len(&self) -> usize {
        self.by_type.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }
}

/// The demo protocols document.
pub const DEMO_PROTOCOLS: &str = r#"{
  "protocols": [
    {
      "requestType": "document.process",
      "description": "OCR a document, embed its text, index the embeddings.",
      "payloadSchema": {
        "type": "object",
        "required": ["documentUrl"],
        "properties": {
          "documentUrl": {"type": "string", "minLength": 1, "maxLength": 2048},
          "language": {"type": "string", "pattern": "^[a-z]{2}(-[A-Z]{2})?$"}
        },
        "additionalProperties": false
      },
      "steps": [
        {"stepId": "ocr", "topic": "lucius.ocr",
         "payloadSchema": {"type": "object", "properties": {"dpi": {"type": "integer", "minimum": 72, "maximum": 1200}}, "additionalProperties": false},
         "ackTimeoutSeconds": 30, "leaseDurationSeconds": 120, "maxAttempts": 3},
        {"stepId": "embed", "topic": "lucius.embed",
         "payloadSchema": {"type": "object", "properties": {"model": {"type": "string", "minLength": 1, "maxLength": 128}}, "additionalProperties": false},
         "ackTimeoutSeconds": 30, "leaseDurationSeconds": 60, "maxAttempts": 3},
        {"stepId": "index", "topic": "lucius.index",
         "payloadSchema": {"type": "object", "properties": {"indexName": {"type": "string", "minLength": 1, "maxLength": 128}}, "additionalProperties": false},
         "ackTimeoutSeconds": 30, "leaseDurationSeconds": 60, "maxAttempts": 3}
      ]
    },
    {
      "requestType": "demo.echo",
      "description": "One step that echoes its payload.",
      "steps": [
        {"stepId": "echo", "topic": "lucius.echo", "ackTimeoutSeconds": 10, "leaseDurationSeconds": 30, "maxAttempts": 3}
      ]
    }
  ]
}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_protocols_load() {
        let r = ProtocolRegistry::from_json(DEMO_PROTOCOLS).unwrap();
        assert_eq!(r.len(), 2);
        let p = r.get("document.process").unwrap();
        let ids: Vec<_> = p.steps.iter().map(|s| s.step_id.as_str()).collect();
        assert_eq!(ids, ["ocr", "embed", "index"]);
        assert_eq!(p.steps[0].lease_duration, Millis(120_000));
        assert_eq!(ProtocolRegistry::demo().len(), 2);
    }

    #[test]
    fn bad_protocols_are_refused_with_reasons() {
        let cases = [
            (
                r#"{"protocols": [{"requestType": "a", "steps": []}]}"#,
                "at least one step",
            ),
            (
                r#"{"protocols": [{"requestType": "a b", "steps": [{"stepId": "s", "topic": "t"}]}]}"#,
                "requestType",
            ),
            (
                r#"{"protocols": [{"requestType": "a", "steps": [{"stepId": "s", "topic": "t"}, {"stepId": "s", "topic": "t"}]}]}"#,
                "twice",
            ),
            (
                r#"{"protocols": [{"requestType": "a", "steps": [{"stepId": "s", "topic": "t", "maxAttempts": 0}]}]}"#,
                "maxAttempts",
            ),
            (
                r#"{"protocols": [{"requestType": "a", "steps": [{"stepId": "s", "topic": "t", "payloadSchema": {"type": 5}}]}]}"#,
                "does not compile",
            ),
            (
                r#"{"protocols": [{"requestType": "a", "steps": [{"stepId": "s", "topic": "t", "ackTimeoutSeconds": -1}]}]}"#,
                "positive",
            ),
            (
                r#"{"protocols": [{"requestType": "a", "steps": [{"stepId": "s", "topic": "t"}]}, {"requestType": "a", "steps": [{"stepId": "s", "topic": "t"}]}]}"#,
                "defined twice",
            ),
            (
                r#"{"protocols": [{"requestType": "a", "stepz": []}]}"#,
                "not valid",
            ),
        ];
        for (doc, needle) in cases {
            let e = ProtocolRegistry::from_json(doc).unwrap_err();
            assert!(e.to_string().contains(needle), "{doc}: {e}");
        }
    }
}
