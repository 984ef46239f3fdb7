//! The OpenAPI 3.1 document served at `/openapi.json`. Schemas come from `schemars`: the
//! core's [`Envelope`] and [`Directive`] schemas and this crate's wire views.

use std::sync::OnceLock;

use bytes::Bytes;
use lucius_core::protocol::ProtocolsFile;
use lucius_core::{Directive, Envelope};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::views::{
    CancelBody, CompleteBody, ErrorBody, FailBody, Health, JobView, OutboxEntryView, OutboxList,
    PollBody, PollResponse, RetryMatchingBody, RetryReport, StepView, SubmitResponse,
    WorkerCallBody,
};

const REF: &str = "#/components/schemas/";

/// The OpenAPI document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

pub(crate) fn document_bytes() -> Bytes {
    static BYTES: OnceLock<Bytes> = OnceLock::new();
    BYTES
        .get_or_init(|| Bytes::from(serde_json::to_vec(document()).unwrap_or_default()))
        .clone()
}

fn schemas() -> Map<String, Value> {
    let mut g = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    fn add<T: JsonSchema>(g: &mut schemars::SchemaGenerator) {
        let _ = g.subschema_for::<T>();
    }
    add::<ErrorBody>(&mut g);
    add::<SubmitResponse>(&mut g);
    add::<JobView>(&mut g);
    add::<StepView>(&mut g);
    add::<WorkerCallBody>(&mut g);
    add::<CompleteBody>(&mut g);
    add::<FailBody>(&mut g);
    add::<CancelBody>(&mut g);
    add::<PollBody>(&mut g);
    add::<PollResponse>(&mut g);
    add::<RetryMatchingBody>(&mut g);
    add::<RetryReport>(&mut g);
    add::<OutboxEntryView>(&mut g);
    add::<OutboxList>(&mut g);
    add::<Health>(&mut g);
    add::<ProtocolsFile>(&mut g);
    let mut defs = g.take_definitions(true);
    // The core's own schema functions are the source of truth for its wire types.
    for (name, schema) in [
        ("Envelope", Envelope::json_schema()),
        ("Directive", Directive::json_schema()),
    ] {
        hoist(name, schema, &mut defs);
    }
    defs
}

/// Adds a root schema as a component: its `$defs` become components too and its
/// `#/$defs/` references are rewritten to point at them.
fn hoist(name: &str, schema: Value, defs: &mut Map<String, Value>) {
    let text = serde_json::to_string(&schema)
        .unwrap_or_default()
        .replace("\"#/$defs/", &format!("\"{REF}"));
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    obj.remove("$schema");
    if let Some(Value::Object(inner)) = obj.remove("$defs") {
        defs.extend(inner);
    }
    defs.insert(name.to_owned(), Value::Object(obj));
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF}{name}") })
}

fn body(name: &str, required: bool) -> Value {
    json!({
        "required": required,
        "content": { "application/json": { "schema": schema_ref(name) } }
    })
}

fn ok(status: &str, description: &str, name: &str) -> (String, Value) {
    (
        status.to_owned(),
        json!({
            "description": description,
            "content": { "application/json": { "schema": schema_ref(name) } }
        }),
    )
}

fn errors(list: &[(&str, &str)]) -> Vec<(String, Value)> {
    list.iter()
        .map(|(status, description)| ok(status, description, "ErrorBody"))
        .collect()
}

fn op(
    summary: &str,
    params: &[&str],
    request: Option<Value>,
    responses: Vec<(String, Value)>,
    security: Option<&str>,
) -> Value {
    let mut o = json!({
        "summary": summary,
        "parameters": params.iter().map(|p| json!({"$ref": format!("#/components/parameters/{p}")})).collect::<Vec<_>>(),
        "responses": responses.into_iter().collect::<Map<String, Value>>(),
    });
    if let Some(r) = request {
        o["requestBody"] = r;
    }
    if let Some(s) = security {
        o["security"] = json!([{ s: [] }]);
    }
    o
}

fn build() -> Value {
    let common = [
        ("400", "Malformed JSON or bad query parameter"),
        ("404", "Not found (also: malformed ids, admin disabled)"),
        ("405", "Wrong method"),
        ("413", "Body too large"),
        ("415", "Body is not JSON"),
        ("422", "Schema violation"),
        ("503", "Store unavailable or contention"),
    ];
    let with = |mut v: Vec<(String, Value)>, extra: &[(&str, &str)]| {
        v.extend(errors(&common));
        v.extend(errors(extra));
        v
    };
    let worker = |summary: &str, body_name: &str| {
        json!({ "post": op(
            summary,
            &["jobId", "stepId"],
            Some(body(body_name, true)),
            with(vec![ok("200", "The step after the call", "StepView")],
                 &[("401", "Missing or wrong X-Worker-Key"), ("409", "Illegal transition, stale attempt, lease held by another worker (or the call names no worker while a named one holds it), or a repeated complete/fail whose body differs from the one applied")]),
            Some("workerKey"),
        ) })
    };
    let admin = &[("401", "Missing or wrong X-API-Key")];
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Lucius",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Durable command orchestration. Errors are {\"error\": {\"code\", \"message\", \"details\"}}; see docs/http.md."
        },
        "paths": {
            "/v1/commands": { "post": op(
                "Submit a command; answers 202 with the job (also for an idempotent replay, with Idempotent-Replayed: true)",
                &["idempotencyKey"],
                Some(body("Envelope", true)),
                with(vec![ok("202", "Accepted; Location names the job", "SubmitResponse")],
                     &[("400", "Malformed JSON (MALFORMED_JSON), or a number that cannot be held exactly (INEXACT_NUMBER: storing it would round it, e.g. an integer beyond 64 bits or 1e400; details.errors[] name each pointer)"),
                       ("409", "Idempotency key used for a different request")]),
                None,
            ) },
            "/v1/jobs/{jobId}": { "get": op("A job and its steps", &["jobId"], None,
                with(vec![ok("200", "The job", "JobView")], &[]), None) },
            "/v1/jobs/{jobId}/cancel": { "post": op("Cancel a job", &["jobId"], Some(body("CancelBody", false)),
                with(vec![ok("200", "The cancelled job", "JobView")], &[("409", "The job has finished")]), None) },
            "/v1/jobs/{jobId}/steps/{stepId}/ack": worker("Acknowledge a step (takes the lease)", "WorkerCallBody"),
            "/v1/jobs/{jobId}/steps/{stepId}/heartbeat": worker("Extend the lease", "WorkerCallBody"),
            "/v1/jobs/{jobId}/steps/{stepId}/complete": worker("Complete a step with its result", "CompleteBody"),
            "/v1/jobs/{jobId}/steps/{stepId}/fail": worker("Fail a step (retryable or not)", "FailBody"),
            "/v1/workers/poll": { "post": op(
                "Workers without a bus: claim up to `max` due directives of the given topics and steps, waiting up to `waitSeconds` for one. Each directive returned is the caller's until its ACK deadline (ackTimeoutMs): ack it, or it is retried as a new attempt. Concurrent pollers never get the same directive.",
                &[],
                Some(body("PollBody", false)),
                with(vec![ok("200", "The directives handed out (empty when the wait ran out or the node is shutting down)", "PollResponse")],
                     &[("401", "Missing or wrong X-Worker-Key"), ("409", "PULL_DISABLED: directives are published to Service Bus; workers receive them there")]),
                Some("workerKey"),
            ) },
            "/v1/protocols": { "get": op("The protocol registry", &[], None,
                vec![ok("200", "Protocols", "ProtocolsFile")], None) },
            "/v1/admin/outbox": { "get": op("List outbox entries", &["status", "partition", "limit"], None,
                with(vec![ok("200", "Entries", "OutboxList")], admin), Some("adminKey")) },
            "/v1/admin/outbox/retry": { "post": op("Retry DEAD/PENDING entries matching the filters",
                &["status", "partition", "limit"], Some(body("RetryMatchingBody", false)),
                with(vec![ok("200", "How many were retried", "RetryReport")], admin), Some("adminKey")) },
            "/v1/admin/outbox/{outboxId}/retry": { "post": op("Retry one entry", &["outboxId"], None,
                with(vec![ok("200", "The entry, PENDING", "OutboxEntryView")],
                     &[("401", "Missing or wrong X-API-Key"), ("409", "The entry cannot be retried")]), Some("adminKey")) },
            "/healthz": { "get": op("Liveness", &[], None, vec![ok("200", "Alive", "Health")], None) },
            "/readyz": { "get": op("Readiness (the store answers)", &[], None,
                vec![ok("200", "Ready", "Health"), ok("503", "Store unavailable", "ErrorBody")], None) },
            "/metrics": { "get": {
                "summary": "Prometheus metrics",
                "responses": { "200": { "description": "Text format 0.0.4",
                    "content": { "text/plain": { "schema": { "type": "string" } } } } }
            } },
            "/openapi.json": { "get": {
                "summary": "This document",
                "responses": { "200": { "description": "OpenAPI 3.1",
                    "content": { "application/json": { "schema": { "type": "object" } } } } }
            } }
        },
        "components": {
            "schemas": schemas(),
            "parameters": {
                "jobId": { "name": "jobId", "in": "path", "required": true,
                    "schema": { "type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$" } },
                "stepId": { "name": "stepId", "in": "path", "required": true, "schema": { "type": "string" } },
                "outboxId": { "name": "outboxId", "in": "path", "required": true,
                    "schema": { "type": "string", "description": "<jobId>.<stepIndex>.<attempt>" } },
                "idempotencyKey": { "name": "Idempotency-Key", "in": "header", "required": false,
                    "schema": { "type": "string" }, "description": "Used when the body has no idempotencyKey; must agree with it otherwise" },
                "status": { "name": "status", "in": "query", "required": false,
                    "schema": { "type": "string", "enum": ["PENDING", "SENT", "DEAD"] } },
                "partition": { "name": "partition", "in": "query", "required": false,
                    "schema": { "type": "string", "description": "tenant#YYYYMM (encode # as %23)" } },
                "limit": { "name": "limit", "in": "query", "required": false,
                    "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }
            },
            "securitySchemes": {
                "adminKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
                "workerKey": { "type": "apiKey", "in": "header", "name": "X-Worker-Key" }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in the document resolves.
    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(doc, &mut refs);
        assert!(refs.len() > 20);
        for r in refs {
            let ptr = r.trim_start_matches('#');
            assert!(doc.pointer(ptr).is_some(), "dangling {r}");
        }
        assert_eq!(doc["openapi"], "3.1.0");
        for name in ["Envelope", "Directive", "JobView", "ErrorBody"] {
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
    }

    #[test]
    fn intake_names_its_400_codes() {
        let doc = document();
        let commands = &doc["paths"]["/v1/commands"]["post"]["responses"]["400"]["description"];
        let text = commands.as_str().unwrap();
        assert!(
            text.contains("MALFORMED_JSON") && text.contains("INEXACT_NUMBER"),
            "{text}"
        );
        // Other routes keep the common description.
        let jobs = &doc["paths"]["/v1/jobs/{jobId}"]["get"]["responses"]["400"]["description"];
        assert_eq!(jobs, "Malformed JSON or bad query parameter");
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(s)) => out.push(s.clone()),
                        _ => collect_refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }
}
