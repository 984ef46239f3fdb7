//! Command validation. Parse, don't validate: raw bytes go in, a [`ValidatedCommand`]
//! (protocol resolved, every payload checked) or an [`InvalidCommand`] listing each failing
//! JSON pointer comes out.
//!
//! The envelope's JSON Schema is derived with `schemars` from [`Envelope`] and compiled
//! once per process; protocol schemas are compiled once when the registry is loaded.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::idempotency::request_hash;
use crate::ids::TenantId;
use crate::json::Json;
use crate::protocol::{Protocol, ProtocolRegistry};

/// The body of `POST /v1/commands`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    /// The protocol to run.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._:-]+$"))]
    pub request_type: String,
    /// The tenant.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub tenant_id: String,
    /// The idempotency key (or the `Idempotency-Key` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._:=+@-]+$"))]
    pub idempotency_key: Option<String>,
    /// A correlation id passed to every directive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub correlation_id: Option<String>,
    /// The command-level payload, checked against the protocol's `payloadSchema`.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Per-step payloads by step id, each checked against its step's `payloadSchema`.
    #[serde(default)]
    pub steps: BTreeMap<String, serde_json::Value>,
}

impl Envelope {
    /// The envelope's JSON Schema (also served in `/openapi.json`).
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Envelope)).unwrap_or_default()
    }
}

/// A command that passed every check.
#[derive(Debug, Clone)]
pub struct ValidatedCommand {
    /// Its protocol.
    pub protocol: Arc<Protocol>,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The idempotency key.
    pub idempotency_key: Arc<str>,
    /// The correlation id.
    pub correlation_id: Option<Arc<str>>,
    /// Command-level payload.
    pub payload: Json,
    /// Step payloads in protocol order (`{}` where none was given).
    pub step_payloads: Vec<Json>,
    /// Stable hash of the request (see [`request_hash`]).
    pub request_hash: crate::idempotency::RequestHash,
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum InvalidCode {
    /// The body is not JSON.
    MalformedJson,
    /// A value breaks the envelope, payload or step schema.
    SchemaViolation,
    /// No protocol has this request type.
    UnknownRequestType,
    /// `steps` names a step the protocol does not have.
    UnknownStep,
    /// No idempotency key in body or header.
    MissingIdempotencyKey,
    /// Body and header carry different idempotency keys.
    IdempotencyKeyMismatch,
}

impl InvalidCode {
    /// The wire code.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidCode::MalformedJson => "MALFORMED_JSON",
            InvalidCode::SchemaViolation => "SCHEMA_VIOLATION",
            InvalidCode::UnknownRequestType => "UNKNOWN_REQUEST_TYPE",
            InvalidCode::UnknownStep => "UNKNOWN_STEP",
            InvalidCode::MissingIdempotencyKey => "MISSING_IDEMPOTENCY_KEY",
            InvalidCode::IdempotencyKeyMismatch => "IDEMPOTENCY_KEY_MISMATCH",
        }
    }
}

/// One failing location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer into the request body.
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

/// A refused command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidCommand {
    /// Machine-readable reason.
    pub code: InvalidCode,
    /// Human-readable summary.
    pub message: String,
    /// Each failing location.
    pub errors: Vec<FieldError>,
}

impl InvalidCommand {
    fn one(code: InvalidCode, pointer: &str, message: String) -> InvalidCommand {
        InvalidCommand {
            code,
            message: message.clone(),
            errors: vec![FieldError {
                pointer: pointer.to_owned(),
                message,
            }],
        }
    }
}

/// Errors are capped so a hostile payload cannot make the response huge.
const MAX_REPORTED_ERRORS: usize = 50;

fn envelope_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        // The schema is derived from a Rust type at compile time; a failure to compile it is
        // a bug caught by the unit tests, never an input error.
        jsonschema::validator_for(&Envelope::json_schema())
            .expect("derived envelope schema compiles")
    })
}

fn collect(
    validator: &jsonschema::Validator,
    instance: &serde_json::Value,
    prefix: &str,
    out: &mut Vec<FieldError>,
) {
    for e in validator.iter_errors(instance) {
        if out.len() >= MAX_REPORTED_ERRORS {
            return;
        }
        out.push(FieldError {
            pointer: format!("{prefix}{}", e.instance_path().as_str()),
            message: e.masked().to_string(),
        });
    }
}

fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Parses and validates a command body. `header_key` is the `Idempotency-Key` header.
pub fn validate_command(
    registry: &ProtocolRegistry,
    body: &[u8],
    header_key: Option<&str>,
) -> Result<ValidatedCommand, InvalidCommand> {
    let raw: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        InvalidCommand::one(
            InvalidCode::MalformedJson,
            "",
            format!("body is not valid JSON: {e}"),
        )
    })?;
    validate_value(registry, raw, header_key)
}

/// Validates an already parsed command body.
pub fn validate_value(
    registry: &ProtocolRegistry,
    raw: serde_json::Value,
    header_key: Option<&str>,
) -> Result<ValidatedCommand, InvalidCommand> {
    let mut errors = Vec::new();
    if !envelope_validator().is_valid(&raw) {
        collect(envelope_validator(), &raw, "", &mut errors);
    }
    if !errors.is_empty() {
        return Err(InvalidCommand {
            code: InvalidCode::SchemaViolation,
            message: format!(
                "the command envelope is invalid ({} error(s))",
                errors.len()
            ),
            errors,
        });
    }
    let env = Fields::take(raw).ok_or_else(|| {
        InvalidCommand::one(
            InvalidCode::SchemaViolation,
            "",
            "the command envelope is invalid".into(),
        )
    })?;

    let key = match (env.idempotency_key.as_deref(), header_key) {
        (Some(b), Some(h)) if b != h => {
            return Err(InvalidCommand::one(
                InvalidCode::IdempotencyKeyMismatch,
                "/idempotencyKey",
                format!("idempotencyKey {b:?} differs from the Idempotency-Key header {h:?}"),
            ))
        }
        (Some(k), _) => Arc::from(k),
        (None, Some(h)) => {
            let ok = (1..=128).contains(&h.len())
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:=+@-".contains(c));
            if !ok {
                return Err(InvalidCommand::one(
                    InvalidCode::SchemaViolation,
                    "/idempotencyKey",
                    "the Idempotency-Key header must be 1 to 128 of [A-Za-z0-9._:=+@-]".into(),
                ));
            }
            Arc::from(h)
        }
        (None, None) => return Err(InvalidCommand::one(
            InvalidCode::MissingIdempotencyKey,
            "/idempotencyKey",
            "an idempotency key is required (body field idempotencyKey or header Idempotency-Key)"
                .into(),
        )),
    };

    let protocol = registry.get(&env.request_type).cloned().ok_or_else(|| {
        InvalidCommand::one(
            InvalidCode::UnknownRequestType,
            "/requestType",
            format!("no protocol for requestType {:?}", env.request_type),
        )
    })?;

    let unknown: Vec<FieldError> = env
        .steps
        .keys()
        .filter(|k| protocol.step_index(k).is_none())
        .map(|k| FieldError {
            pointer: format!("/steps/{}", escape_pointer(k)),
            message: format!(
                "protocol {} has no step {k:?} (steps: {})",
                protocol.request_type(),
                protocol
                    .steps
                    .iter()
                    .map(|s| s.step_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect();
    if !unknown.is_empty() {
        return Err(InvalidCommand {
            code: InvalidCode::UnknownStep,
            message: format!("unknown step(s) for {}", protocol.request_type()),
            errors: unknown,
        });
    }

    if !protocol.payload_validator.is_valid(&env.payload) {
        collect(
            &protocol.payload_validator,
            &env.payload,
            "/payload",
            &mut errors,
        );
    }
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let mut step_payloads = Vec::with_capacity(protocol.steps.len());
    for s in &protocol.steps {
        let given = env.steps.get(s.step_id.as_str());
        let v = given.unwrap_or(&empty);
        if !s.validator.is_valid(v) {
            collect(
                &s.validator,
                v,
                &format!("/steps/{}", escape_pointer(s.step_id.as_str())),
                &mut errors,
            );
        }
        // Steps without a payload share one `{}`.
        step_payloads.push(given.map_or_else(empty_object, Json::from_value));
    }
    if !errors.is_empty() {
        return Err(InvalidCommand {
            code: InvalidCode::SchemaViolation,
            message: format!(
                "the payloads break the schemas of {} ({} error(s))",
                protocol.request_type(),
                errors.len()
            ),
            errors,
        });
    }

    let tenant_id = TenantId::parse(&env.tenant_id).map_err(|e| {
        InvalidCommand::one(InvalidCode::SchemaViolation, "/tenantId", e.to_string())
    })?;
    let request_hash = request_hash(&env.request_type, &env.payload, &env.steps);
    Ok(ValidatedCommand {
        protocol,
        tenant_id,
        idempotency_key: key,
        correlation_id: env.correlation_id.map(Arc::from),
        payload: Json::from_value(&env.payload),
        step_payloads,
        request_hash,
    })
}

/// The envelope's fields, moved out of the parsed body. The envelope schema has checked
/// their types, so this is a few map removals (deserialising the `Value` again into
/// [`Envelope`] was a tenth of the intake path).
struct Fields {
    request_type: String,
    tenant_id: String,
    idempotency_key: Option<String>,
    correlation_id: Option<String>,
    payload: serde_json::Value,
    steps: serde_json::Map<String, serde_json::Value>,
}

impl Fields {
    /// `None` if the body does not have the envelope's shape (which the schema refuses
    /// first: this only guards against the two disagreeing).
    fn take(raw: serde_json::Value) -> Option<Fields> {
        use serde_json::Value;
        let Value::Object(mut m) = raw else {
            return None;
        };
        let mut text = |k: &str| match m.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(()),
        };
        let request_type = text("requestType").ok()??;
        let tenant_id = text("tenantId").ok()??;
        let idempotency_key = text("idempotencyKey").ok()?;
        let correlation_id = text("correlationId").ok()?;
        let payload = m.remove("payload").unwrap_or(Value::Null);
        let steps = match m.remove("steps") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(s)) => s,
            Some(_) => return None,
        };
        m.is_empty().then_some(Fields {
            request_type,
            tenant_id,
            idempotency_key,
            correlation_id,
            payload,
            steps,
        })
    }
}

/// The `{}` of steps given no payload: one per process, shared by every job.
fn empty_object() -> Json {
    static EMPTY: OnceLock<Json> = OnceLock::new();
    EMPTY.get_or_init(Json::empty_object).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reg() -> ProtocolRegistry {
        ProtocolRegistry::demo()
    }

    fn check(v: serde_json::Value) -> Result<ValidatedCommand, InvalidCommand> {
        validate_command(&reg(), v.to_string().as_bytes(), None)
    }

    fn good() -> serde_json::Value {
        json!({"requestType": "document.process", "tenantId": "t1", "idempotencyKey": "k1",
               "payload": {"documentUrl": "https://x/y.pdf"}, "steps": {"ocr": {"dpi": 300}}})
    }

    #[test]
    fn a_good_command_resolves_its_protocol() {
        let c = check(good()).unwrap();
        assert_eq!(c.protocol.request_type(), "document.process");
        assert_eq!(
            c.step_payloads,
            vec![json!({"dpi": 300}), json!({}), json!({})]
        );
        assert_eq!(&*c.idempotency_key, "k1");
    }

    #[test]
    fn malformed_json_is_its_own_code() {
        let e = validate_command(&reg(), b"{not json", None).unwrap_err();
        assert_eq!(e.code, InvalidCode::MalformedJson);
    }

    #[test]
    fn envelope_errors_carry_pointers() {
        let e =
            check(json!({"requestType": 5, "tenantId": "a#b", "idempotencyKey": "k"})).unwrap_err();
        assert_eq!(e.code, InvalidCode::SchemaViolation);
        let ptrs: Vec<_> = e.errors.iter().map(|f| f.pointer.as_str()).collect();
        assert!(ptrs.contains(&"/requestType"), "{ptrs:?}");
        assert!(ptrs.contains(&"/tenantId"), "{ptrs:?}");
    }

    #[test]
    fn nested_step_errors_are_prefixed() {
        let mut v = good();
        v["steps"]["ocr"]["dpi"] = json!(5);
        v["steps"]["embed"] = json!({"model": 7});
        let e = check(v).unwrap_err();
        let ptrs: Vec<_> = e.errors.iter().map(|f| f.pointer.clone()).collect();
        assert_eq!(ptrs, ["/steps/ocr/dpi", "/steps/embed/model"]);
    }

    #[test]
    fn unknown_type_step_and_missing_key() {
        let mut v = good();
        v["requestType"] = json!("nope");
        assert_eq!(check(v).unwrap_err().code, InvalidCode::UnknownRequestType);
        let mut v = good();
        v["steps"]["a/b"] = json!({});
        let e = check(v).unwrap_err();
        assert_eq!(e.code, InvalidCode::UnknownStep);
        assert_eq!(e.errors[0].pointer, "/steps/a~1b");
        let mut v = good();
        v.as_object_mut().unwrap().remove("idempotencyKey");
        assert_eq!(
            check(v).unwrap_err().code,
            InvalidCode::MissingIdempotencyKey
        );
    }

    #[test]
    fn header_key_is_used_and_must_agree() {
        let mut v = good();
        v.as_object_mut().unwrap().remove("idempotencyKey");
        let c = validate_command(&reg(), v.to_string().as_bytes(), Some("hk")).unwrap();
        assert_eq!(&*c.idempotency_key, "hk");
        let e = validate_command(&reg(), good().to_string().as_bytes(), Some("other")).unwrap_err();
        assert_eq!(e.code, InvalidCode::IdempotencyKeyMismatch);
        let e = validate_command(&reg(), v.to_string().as_bytes(), Some("bad key")).unwrap_err();
        assert_eq!(e.code, InvalidCode::SchemaViolation);
    }

    #[test]
    fn unknown_envelope_fields_are_refused() {
        let mut v = good();
        v["extra"] = json!(1);
        assert_eq!(check(v).unwrap_err().code, InvalidCode::SchemaViolation);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let body = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            validate_command(&reg(), body.as_bytes(), None)
                .unwrap_err()
                .code,
            InvalidCode::MalformedJson
        );
    }
}
