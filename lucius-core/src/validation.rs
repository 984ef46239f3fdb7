//! Command validation. Parse, don't validate: raw bytes go in, a [`ValidatedCommand`]
//! (protocol resolved, every payload checked) or an [`InvalidCommand`] listing each failing
//! JSON pointer comes out.
//!
//! The envelope's JSON Schema is derived with `schemars` from [`Envelope`] and compiled
//! once per process; protocol schemas are compiled once when the registry is loaded.
//!
//! Numbers are read exactly: each takes its canonical spelling (`1.0` is `1`) before
//! anything else reads the body, and one that a payload cannot hold exactly is refused
//! (rules in `json/number.rs` and `docs/http.md`), so the stored payloads and the hash see
//! the same values.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::idempotency::request_hash_of_texts;
use crate::ids::TenantId;
use crate::json::number;
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
    /// Stable hash of the request type and the payloads above, so of what the job will
    /// hold (see [`request_hash`](crate::idempotency::request_hash)).
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
    /// A number that a payload cannot hold exactly (it would be rounded).
    InexactNumber,
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
            InvalidCode::InexactNumber => "INEXACT_NUMBER",
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

pub(crate) fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Parses and validates a command body. `header_key` is the `Idempotency-Key` header.
///
/// Its numbers are first given their canonical spelling, or refused
/// ([`InvalidCode::InexactNumber`]). Then a well-formed envelope is read straight into
/// borrowed fields and checked by hand (`fast`); anything else takes the general path, which
/// reports every error.
pub fn validate_command(
    registry: &ProtocolRegistry,
    body: &[u8],
    header_key: Option<&str>,
) -> Result<ValidatedCommand, InvalidCommand> {
    let canonical = canonical_numbers(body)?;
    match fast(registry, &canonical, header_key) {
        Some(result) => result,
        None => validate_slow(registry, &canonical, body, header_key),
    }
}

/// `body` with its numbers spelled canonically, or the refusal of those that cannot be held
/// exactly.
fn canonical_numbers(body: &[u8]) -> Result<Cow<'_, [u8]>, InvalidCommand> {
    number::canonical_body(body, MAX_REPORTED_ERRORS).map_err(|refused| InvalidCommand {
        code: InvalidCode::InexactNumber,
        message: format!(
            "the body holds {} number(s) that cannot be held exactly (they would be rounded)",
            refused.len()
        ),
        errors: refused
            .into_iter()
            .map(|r| FieldError {
                pointer: r.pointer,
                message: r.message,
            })
            .collect(),
    })
}

/// The general path: the body (numbers canonical) as a `Value`, the envelope checked by its
/// JSON Schema. A body that is not JSON is reported as the client sent it (`original`).
fn validate_slow(
    registry: &ProtocolRegistry,
    body: &[u8],
    original: &[u8],
    header_key: Option<&str>,
) -> Result<ValidatedCommand, InvalidCommand> {
    let raw: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        let e = match serde_json::from_slice::<serde_json::Value>(original) {
            Err(theirs) if body != original => theirs,
            _ => e,
        };
        InvalidCommand::one(
            InvalidCode::MalformedJson,
            "",
            format!("body is not valid JSON: {e}"),
        )
    })?;
    validate_parsed(registry, raw, header_key)
}

/// The envelope read in place: strings borrowed from the body where they have no escapes,
/// no map for the envelope itself. A duplicated or unknown field is a parse error here, so
/// such bodies take the general path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Fast<'a> {
    #[serde(borrow)]
    request_type: Text<'a>,
    #[serde(borrow)]
    tenant_id: Text<'a>,
    #[serde(default, borrow)]
    idempotency_key: Option<Text<'a>>,
    #[serde(default, borrow)]
    correlation_id: Option<Text<'a>>,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default, borrow)]
    steps: BTreeMap<Text<'a>, serde_json::Value>,
}

/// A string borrowed from the body unless it has escapes (serde borrows a bare `Cow`
/// field, but neither one in an `Option` nor a map key).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// 1 to `max` ASCII characters, each allowed by `ok` (what the envelope's length and
/// pattern keywords check, for the patterns that only admit ASCII).
fn ascii_field(s: &str, max: usize, ok: impl Fn(u8) -> bool) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || ok(b))
}

/// The fast path: `None` when the body is not an envelope it is sure the schema accepts
/// (then [`validate_slow`] decides, with its error messages). It must never accept what
/// the general path refuses, nor build a different command.
fn fast(
    registry: &ProtocolRegistry,
    body: &[u8],
    header_key: Option<&str>,
) -> Option<Result<ValidatedCommand, InvalidCommand>> {
    // A derived struct also reads a JSON array (fields by position); the schema wants an
    // object.
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return None;
    }
    let f: Fast<'_> = serde_json::from_slice(body).ok()?;
    // The envelope schema's keywords, by hand (`Envelope`'s `schemars` attributes). JSON
    // Schema lengths count code points: only the correlation id may hold non-ASCII.
    let checked = ascii_field(f.request_type.as_str(), 128, |b| b"._:-".contains(&b))
        && ascii_field(f.tenant_id.as_str(), 64, |b| b"._-".contains(&b))
        && f.idempotency_key
            .as_ref()
            .map(Text::as_str)
            .is_none_or(|k| ascii_field(k, 128, |b| b"._:=+@-".contains(&b)))
        && f.correlation_id
            .as_ref()
            .map(Text::as_str)
            .is_none_or(|c| (1..=128).contains(&c.chars().count()));
    if !checked {
        return None;
    }
    let steps: Vec<(&str, &serde_json::Value)> =
        f.steps.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Some(finish(
        registry,
        Parts {
            request_type: f.request_type.as_str(),
            tenant_id: f.tenant_id.as_str(),
            idempotency_key: f.idempotency_key.as_ref().map(Text::as_str),
            correlation_id: f.correlation_id.as_ref().map(Text::as_str),
            payload: &f.payload,
            steps: &steps,
        },
        header_key,
    ))
}

/// Validates an already parsed command body. Its numbers are taken as the `Value` holds
/// them (a float is exact: no text is left to refuse) and given their canonical form.
pub fn validate_value(
    registry: &ProtocolRegistry,
    mut raw: serde_json::Value,
    header_key: Option<&str>,
) -> Result<ValidatedCommand, InvalidCommand> {
    number::canonicalize(&mut raw);
    validate_parsed(registry, raw, header_key)
}

/// Validates a parsed body whose numbers are canonical.
fn validate_parsed(
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
    let steps: Vec<(&str, &serde_json::Value)> =
        env.steps.iter().map(|(k, v)| (k.as_str(), v)).collect();
    finish(
        registry,
        Parts {
            request_type: &env.request_type,
            tenant_id: &env.tenant_id,
            idempotency_key: env.idempotency_key.as_deref(),
            correlation_id: env.correlation_id.as_deref(),
            payload: &env.payload,
            steps: &steps,
        },
        header_key,
    )
}

/// An envelope that passed its schema, as either path read it.
struct Parts<'a> {
    request_type: &'a str,
    tenant_id: &'a str,
    idempotency_key: Option<&'a str>,
    correlation_id: Option<&'a str>,
    payload: &'a serde_json::Value,
    /// The steps given, sorted by step id, each once.
    steps: &'a [(&'a str, &'a serde_json::Value)],
}

/// Everything after the envelope, shared by both paths: the idempotency key (body or
/// header), the protocol, unknown steps, the payload schemas, the tenant, the texts and
/// the hash.
fn finish(
    registry: &ProtocolRegistry,
    env: Parts<'_>,
    header_key: Option<&str>,
) -> Result<ValidatedCommand, InvalidCommand> {
    let key = match (env.idempotency_key, header_key) {
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

    let protocol = registry.get(env.request_type).cloned().ok_or_else(|| {
        InvalidCommand::one(
            InvalidCode::UnknownRequestType,
            "/requestType",
            format!("no protocol for requestType {:?}", env.request_type),
        )
    })?;

    // Each given step's index in the protocol, in step id order.
    let mut given = Vec::with_capacity(env.steps.len());
    let mut unknown = Vec::new();
    for &(k, v) in env.steps {
        match protocol.step_index(k) {
            Some(i) => given.push((i, v)),
            None => unknown.push(FieldError {
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
            }),
        }
    }
    if !unknown.is_empty() {
        return Err(InvalidCommand {
            code: InvalidCode::UnknownStep,
            message: format!("unknown step(s) for {}", protocol.request_type()),
            errors: unknown,
        });
    }

    let mut errors = Vec::new();
    if !protocol.payload_validator.is_valid(env.payload) {
        collect(
            &protocol.payload_validator,
            env.payload,
            "/payload",
            &mut errors,
        );
    }
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let mut step_payloads = Vec::with_capacity(protocol.steps.len());
    for (i, s) in protocol.steps.iter().enumerate() {
        let given = given.iter().find(|g| g.0 == i).map(|g| g.1);
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

    let tenant_id = TenantId::parse(env.tenant_id).map_err(|e| {
        InvalidCommand::one(InvalidCode::SchemaViolation, "/tenantId", e.to_string())
    })?;
    let payload = Json::from_value(env.payload);
    // The hash is over what the job will hold: the payload and every step's payload, `{}`
    // where none was given (so giving `{}` is the same request as giving nothing). The
    // compact texts are the canonical form (numbers included: the body's were respelled):
    // hash them rather than walk the values again.
    let request_hash = request_hash_of_texts(
        env.request_type,
        payload.as_str(),
        protocol
            .steps
            .iter()
            .zip(&step_payloads)
            .map(|(s, p)| (s.step_id.as_str(), p.as_str())),
    );
    Ok(ValidatedCommand {
        protocol,
        tenant_id,
        idempotency_key: key,
        correlation_id: env.correlation_id.map(Arc::from),
        payload,
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
    use proptest::prelude::*;
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

    /// The hash is over what the job holds: a step given `{}` is a step given nothing.
    #[test]
    fn an_empty_step_payload_is_the_same_request_as_none() {
        let hash = |steps: Option<serde_json::Value>| {
            let mut v = good();
            match steps {
                Some(s) => v["steps"] = s,
                None => {
                    v.as_object_mut().unwrap().remove("steps");
                }
            }
            check(v).unwrap().request_hash
        };
        let none = hash(None);
        for same in [
            json!({}),
            json!({"ocr": {}}),
            json!({"index": {}, "ocr": {}}),
            json!({"ocr": {}, "embed": {}, "index": {}}),
        ] {
            assert_eq!(hash(Some(same.clone())), none, "{same}");
        }
        for other in [
            json!({"ocr": {"dpi": 300}}),
            json!({"ocr": {}, "embed": {"model": "m"}}),
        ] {
            assert_ne!(hash(Some(other.clone())), none, "{other}");
        }
        assert_ne!(
            hash(Some(json!({"ocr": {"dpi": 300}}))),
            hash(Some(json!({"ocr": {"dpi": 301}})))
        );
        // Unchanged by the rule: sha256 of
        // {"payload":{"documentUrl":"https://x/y.pdf"},"requestType":"document.process","steps":{}}
        assert_eq!(
            none.to_string(),
            "46abea3f5a2e5e3faa390e40b1e6dfd4573a454b1af71e85775d2bfc108071cf"
        );
    }

    fn echo(number: &str) -> Result<ValidatedCommand, InvalidCommand> {
        let body = format!(
            r#"{{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"k",
                "payload":{{"n":{number},"deep":[{{"m":{number}}}]}},"steps":{{"echo":{{"x":{number}}}}}}}"#
        );
        validate_command(&reg(), body.as_bytes(), None)
    }

    /// Numbers are one request by value, and the job holds the spelling the hash saw.
    #[test]
    fn numbers_are_the_same_request_by_value() {
        let one = echo("1").unwrap();
        for same in ["1.0", "1e0", "10e-1", "0.1e1", "100E-2", "1.000"] {
            let c = echo(same).unwrap();
            assert_eq!(c.request_hash, one.request_hash, "{same}");
            assert_eq!(c.payload.as_str(), r#"{"deep":[{"m":1}],"n":1}"#, "{same}");
            assert_eq!(c.step_payloads[0].as_str(), r#"{"x":1}"#, "{same}");
        }
        for other in ["2", "1.5", "0.1", "-1", "1e20", "\"1\""] {
            assert_ne!(
                echo(other).unwrap().request_hash,
                one.request_hash,
                "{other}"
            );
        }
        // -0 is 0.
        assert_eq!(
            echo("-0").unwrap().request_hash,
            echo("0").unwrap().request_hash
        );
        // A step payload of `null` is held as `null`: not the `{}` of a step given none.
        let echo_steps = |steps: &str| {
            let body = format!(
                r#"{{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"k"{steps}}}"#
            );
            validate_command(&reg(), body.as_bytes(), None).unwrap()
        };
        let none = echo_steps("");
        assert_eq!(
            echo_steps(r#","steps":{"echo":{}}"#).request_hash,
            none.request_hash
        );
        let null = echo_steps(r#","steps":{"echo":null}"#);
        assert_eq!(null.step_payloads[0].as_str(), "null");
        assert_ne!(null.request_hash, none.request_hash);
        assert_eq!(
            echo("-0.0").unwrap().payload.as_str(),
            r#"{"deep":[{"m":0}],"n":0}"#
        );
        // The nearest double of 0.1 is held and shown as 0.1.
        assert_eq!(
            echo("0.1").unwrap().payload.as_str(),
            r#"{"deep":[{"m":0.1}],"n":0.1}"#
        );
        // An integer is kept exactly even where a float would round it.
        let c = echo("9007199254740993.0").unwrap();
        assert_eq!(
            c.payload.as_str(),
            r#"{"deep":[{"m":9007199254740993}],"n":9007199254740993}"#
        );
        assert_ne!(
            c.request_hash,
            echo("9007199254740992").unwrap().request_hash
        );
        // A step payload of the document protocol: `300.0` is the integer 300 for its schema
        // and for the job.
        let mut v = good();
        let plain = check(v.clone()).unwrap();
        v["steps"]["ocr"]["dpi"] = json!(300.0);
        let c = check(v).unwrap();
        assert_eq!(c.step_payloads[0].as_str(), r#"{"dpi":300}"#);
        assert_eq!(c.request_hash, plain.request_hash);
    }

    #[test]
    fn numbers_that_cannot_be_held_exactly_are_refused_with_their_pointers() {
        for number in [
            "123456789012345678901234567890",
            "18446744073709551616",
            "1e400",
        ] {
            let e = echo(number).unwrap_err();
            assert_eq!(e.code, InvalidCode::InexactNumber, "{number}");
            let ptrs: Vec<_> = e.errors.iter().map(|f| f.pointer.as_str()).collect();
            assert_eq!(
                ptrs,
                ["/payload/n", "/payload/deep/0/m", "/steps/echo/x"],
                "{number}"
            );
            assert!(e.errors[0].message.starts_with(number), "{e:?}");
            assert!(e.message.contains("3 number(s)"), "{}", e.message);
        }
        // Through `validate_value` too: a Value has no text left, its floats are exact.
        let mut v = good();
        v["steps"]["ocr"]["dpi"] = json!(300.0);
        let c = validate_value(&reg(), v, None).unwrap();
        assert_eq!(c.step_payloads[0].as_str(), r#"{"dpi":300}"#);
    }

    #[test]
    fn a_body_that_is_not_json_stays_malformed_whatever_its_numbers() {
        for body in [
            &br#"{"requestType":"demo.echo","payload":1e400"#[..],
            br#"{"requestType":"demo.echo","payload":123456789012345678901234567890,}"#,
        ] {
            let e = validate_command(&reg(), body, None).unwrap_err();
            assert_eq!(e.code, InvalidCode::MalformedJson);
        }
        // The message points into the body as sent, not as respelled.
        let e = validate_command(&reg(), br#"{"a":1.000,}"#, None).unwrap_err();
        assert_eq!(e.code, InvalidCode::MalformedJson);
        assert!(e.message.contains("column 12"), "{}", e.message);
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

    #[test]
    fn a_good_command_takes_the_fast_path() {
        let body = good().to_string();
        let c = match fast(&reg(), body.as_bytes(), None) {
            Some(Ok(c)) => c,
            other => panic!("the general path decided: {other:?}"),
        };
        let slow = validate_slow(&reg(), body.as_bytes(), body.as_bytes(), None).unwrap();
        assert_eq!(c.step_payloads, slow.step_payloads);
        // The hash of the texts is the hash of the values.
        let v = good();
        let steps: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(v["steps"].clone()).unwrap();
        assert_eq!(
            c.request_hash,
            crate::idempotency::request_hash("document.process", &v["payload"], &steps)
        );
        // Escaped strings, a header key, a correlation id and layout do not leave it either.
        let body = "\n {\"requestType\": \"document.pro\\u0063ess\", \"tenantId\": \"t1\",
            \"correlationId\": \"caf\u{e9} \u{1f600}\", \"payload\": {\"documentUrl\": \"d\"},
            \"steps\": {\"\\u006fcr\": {\"dpi\": 300}, \"index\": {}}} ";
        assert!(matches!(
            fast(&reg(), body.as_bytes(), Some("hk")),
            Some(Ok(_))
        ));
    }

    #[test]
    fn the_fast_path_holds_to_the_length_limits() {
        let body = |rt: &str, tenant: &str, key: &str, corr: &str| {
            json!({"requestType": rt, "tenantId": tenant, "idempotencyKey": key,
                   "correlationId": corr, "payload": {"documentUrl": "d"}})
            .to_string()
        };
        let rt = "document.process";
        let key = "k=+@:._-".repeat(16);
        // 128 code points, 512 bytes: JSON Schema counts code points.
        let corr = "\u{1f600}".repeat(128);
        let at_limits = body(rt, &"t".repeat(64), &key, &corr);
        assert!(matches!(
            fast(&reg(), at_limits.as_bytes(), None),
            Some(Ok(_))
        ));
        let long_type = body(&"d".repeat(128), "t", "k", "c");
        assert!(matches!(
            fast(&reg(), long_type.as_bytes(), None),
            Some(Err(InvalidCommand {
                code: InvalidCode::UnknownRequestType,
                ..
            }))
        ));
        for over in [
            body(&"d".repeat(129), "t", "k", "c"),
            body(rt, &"t".repeat(65), "k", "c"),
            body(rt, "t", &"k".repeat(129), "c"),
            body(rt, "t", "k", &"\u{e9}".repeat(129)),
            body(rt, "", "k", "c"),
            body(rt, "t", "k", ""),
            body(rt, "t:1", "k", "c"),
        ] {
            assert!(fast(&reg(), over.as_bytes(), None).is_none(), "{over}");
            let e = validate_command(&reg(), over.as_bytes(), None).unwrap_err();
            assert_eq!(e.code, InvalidCode::SchemaViolation, "{over}");
        }
    }

    #[test]
    fn an_envelope_written_as_an_array_is_refused() {
        // A derived struct would read it field by field; the schema wants an object.
        let body = br#"["document.process", "t1", "k1", null, {"documentUrl": "d"}, {}]"#;
        assert!(fast(&reg(), body, None).is_none());
        assert_eq!(
            validate_command(&reg(), body, None).unwrap_err().code,
            InvalidCode::SchemaViolation
        );
    }

    /// Both paths agree: equal commands (`ValidatedCommand` has no `PartialEq`) or equal
    /// refusals.
    fn same(
        a: &Result<ValidatedCommand, InvalidCommand>,
        b: &Result<ValidatedCommand, InvalidCommand>,
    ) -> Result<(), TestCaseError> {
        match (a, b) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.protocol.request_type(), b.protocol.request_type());
                prop_assert!(Arc::ptr_eq(&a.protocol, &b.protocol));
                prop_assert_eq!(&a.tenant_id, &b.tenant_id);
                prop_assert_eq!(&a.idempotency_key, &b.idempotency_key);
                prop_assert_eq!(&a.correlation_id, &b.correlation_id);
                prop_assert_eq!(a.payload.as_str(), b.payload.as_str());
                let texts = |c: &ValidatedCommand| {
                    c.step_payloads
                        .iter()
                        .map(|j| j.as_str().to_owned())
                        .collect::<Vec<_>>()
                };
                prop_assert_eq!(texts(a), texts(b));
                prop_assert_eq!(a.request_hash, b.request_hash);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            _ => prop_assert!(false, "the paths disagree: {a:?} / {b:?}"),
        }
        Ok(())
    }

    /// `s` as a JSON string literal; with `escape`, its letters as `\u00XX` escapes (the
    /// fast path then owns the string rather than borrowing it).
    fn literal(s: &str, escape: bool) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 || (escape && c.is_ascii_alphabetic()) => {
                    out.push_str(&format!("\\u{:04x}", u32::from(c)));
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// Strings around the length limits (0, 1, 64, 128, 140): letters and digits plus
    /// `extra`, or half non-ASCII; sometimes one character swapped for one that this or
    /// another field's pattern refuses.
    fn text(extra: &'static str) -> impl Strategy<Value = String> {
        let allowed = prop_oneof![
            6 => prop::char::ranges(vec!['a'..='z', 'A'..='Z', '0'..='9'].into()),
            1 => prop::sample::select(extra.chars().collect::<Vec<_>>()),
        ];
        let wide = prop_oneof![
            Just('a'),
            Just('\u{e9}'),
            Just('\u{1f600}'),
            Just('\u{20ac}'),
        ];
        let chars = prop_oneof![
            4 => prop::collection::vec(allowed.clone(), 0..=2),
            4 => prop::collection::vec(allowed.clone(), 62..=66),
            4 => prop::collection::vec(allowed.clone(), 126..=130),
            2 => prop::collection::vec(allowed, 0..=140),
            2 => prop::collection::vec(wide.clone(), 126..=130),
            1 => prop::collection::vec(wide, 0..=140),
        ];
        let bad = prop::option::weighted(
            0.25,
            (
                any::<prop::sample::Index>(),
                prop::sample::select(
                    " #/\n\"\\\u{e9}\u{1f600}:=+@._-"
                        .chars()
                        .collect::<Vec<_>>(),
                ),
            ),
        );
        (chars, bad).prop_map(|(mut cs, bad)| {
            if let Some((i, c)) = bad {
                if cs.is_empty() {
                    cs.push(c);
                } else {
                    let at = i.index(cs.len());
                    cs[at] = c;
                }
            }
            cs.into_iter().collect()
        })
    }

    /// A string field's raw JSON (`None`: absent): mostly `common`, else a drawn string,
    /// `null` or another type.
    fn string_field(
        common: &'static [&'static str],
        extra: &'static str,
    ) -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            1 => Just(None),
            8 => (prop::sample::select(common), any::<bool>())
                .prop_map(|(s, e)| Some(literal(s, e))),
            4 => (text(extra), any::<bool>()).prop_map(|(s, e)| Some(literal(&s, e))),
            1 => prop::sample::select(vec!["null", "5", "true", "[]", "{}", "\"\""])
                .prop_map(|s| Some(s.to_owned())),
        ]
    }

    fn payload_field() -> impl Strategy<Value = Option<String>> {
        let good = prop::sample::select(vec![
            r#"{"documentUrl":"https://x/y.pdf"}"#,
            r#"{"language":"en", "documentUrl":"https://x/y.pdf"}"#,
            r#"{"documentUrl":"a","documentUrl":"b"}"#,
            r#"{"documentUrl":"\u00e9 \ud83d\ude00 \"q\" \/"}"#,
        ]);
        let other = prop::sample::select(vec![
            r#"{"documentUrl":"d","language":"english"}"#,
            r#"{"documentUrl":""}"#,
            r#"{"z":{"b":1,"a":[true,null,1.50,-0,1e3]},"documentUrl":"x"}"#,
            r#"{"documentUrl":"x","n":[1.0,10e-1,0.1,-0.0,1e20,9007199254740993.0]}"#,
            r#"{"documentUrl":"x","n":18446744073709551616}"#,
            r#"{"documentUrl":"x","n":{"m":[1e400]}}"#,
            r#"{"x": 1}"#,
            "{}",
            "null",
            "5",
            "[1, 2]",
        ]);
        prop::option::weighted(
            0.95,
            prop_oneof![4 => good, 1 => other].prop_map(str::to_owned),
        )
    }

    fn steps_field() -> impl Strategy<Value = Option<String>> {
        let good = prop::sample::select(vec![
            "{}",
            r#"{"ocr":{"dpi":300}}"#,
            r#"{"embed":{"model":"m"}, "ocr":{"dpi":300}, "index":{"indexName":"i"}}"#,
            r#"{"ocr":{"dpi":300},"ocr":{"dpi":72}}"#,
            r#"{"\u006fcr":{"dpi":300},"embed":{}}"#,
            r#"{"ocr":{}}"#,
            r#"{"ocr":{},"embed":{},"index":{}}"#,
            r#"{"ocr":{"dpi":3e2}}"#,
            r#"{"ocr":{"dpi":300.0}, "index":{}}"#,
        ]);
        let other = prop::sample::select(vec![
            r#"{"ocr":{"dpi":5}}"#,
            r#"{"a/b":{},"ocr":{}}"#,
            r#"{"index":{"indexName":"i"},"embed":null}"#,
            r#"{"echo":{"x":[1,{"b":2,"a":1}]}}"#,
            r#"{"ocr":{"dpi":123456789012345678901234567890}}"#,
            "null",
            "[]",
            "5",
        ]);
        prop::option::weighted(
            0.9,
            prop_oneof![4 => good, 1 => other].prop_map(str::to_owned),
        )
    }

    /// A raw command body: each field present or not, in any order, sometimes an unknown
    /// or duplicated field, sometimes not an object at all.
    fn body() -> impl Strategy<Value = String> {
        let fields = (
            string_field(
                &["document.process", "document.process", "demo.echo", "nope"],
                "._:-",
            ),
            string_field(&["t1", "acme.eu-1"], "._-"),
            string_field(&["k1", "k-1:a=b+c@d"], "._:=+@-"),
            string_field(&["c1", "caf\u{e9}"], "._:=+@-#/ "),
            payload_field(),
            steps_field(),
        );
        let shape = (
            prop::collection::vec(any::<u8>(), 8),
            prop::option::weighted(0.1, Just(r#""extra":1"#)),
            prop::option::weighted(0.1, (any::<prop::sample::Index>(), any::<bool>())),
            prop::sample::select(vec!["", " ", "\n\t"]),
            prop_oneof![12 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        );
        (fields, shape).prop_map(|((rt, tenant, key, corr, payload, steps), shape)| {
            let (order, extra, dup, ws, form) = shape;
            let names = [
                "requestType",
                "tenantId",
                "idempotencyKey",
                "correlationId",
                "payload",
                "steps",
            ];
            let mut entries: Vec<(String, String)> = names
                .iter()
                .zip([rt, tenant, key, corr, payload, steps])
                .filter_map(|(n, v)| v.map(|v| (literal(n, false), v)))
                .collect();
            if let Some(e) = extra {
                let (k, v) = e.split_once(':').unwrap_or_default();
                entries.push((k.to_owned(), v.to_owned()));
            }
            if let (Some((i, same_value)), false) = (dup, entries.is_empty()) {
                let (k, v) = entries[i.index(entries.len())].clone();
                let v = if same_value { v } else { "\"k2\"".to_owned() };
                entries.push((k, v));
            }
            let mut keyed: Vec<_> = entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| (order[i % order.len()], i, e))
                .collect();
            keyed.sort();
            let sep = format!(",{ws}");
            match form {
                // The values alone, as an array.
                1 => format!(
                    "[{}]",
                    keyed
                        .iter()
                        .map(|(_, _, (_, v))| v.as_str())
                        .collect::<Vec<_>>()
                        .join(&sep)
                ),
                _ => {
                    let inner = keyed
                        .iter()
                        .map(|(_, _, (k, v))| format!("{k}:{ws}{v}"))
                        .collect::<Vec<_>>()
                        .join(&sep);
                    match form {
                        2 => format!("{{{inner}}} x"),
                        3 => format!(" \t\r\n{{{ws}{inner}{ws}}}{ws}"),
                        _ => format!("{{{inner}}}"),
                    }
                }
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn the_fast_path_decides_as_the_general_path(
            body in body(),
            header in prop_oneof![
                6 => Just(None),
                1 => prop::sample::select(vec![Some("k1"), Some("hk"), Some("bad key"), Some("")]),
            ],
        ) {
            let registry = reg();
            let command = validate_command(&registry, body.as_bytes(), header);
            let canonical = match canonical_numbers(body.as_bytes()) {
                Ok(canonical) => canonical,
                Err(refusal) => {
                    prop_assert_eq!(command.unwrap_err(), refusal);
                    return Ok(());
                }
            };
            let slow = validate_slow(&registry, &canonical, body.as_bytes(), header);
            if let Some(fast) = fast(&registry, &canonical, header) {
                same(&fast, &slow)?;
            }
            same(&command, &slow)?;
            // The hash of the texts is the hash of the values as the body gave them.
            if let Ok(c) = &slow {
                let v: serde_json::Value = serde_json::from_slice(&canonical).unwrap();
                let steps: BTreeMap<String, serde_json::Value> = match v.get("steps") {
                    Some(serde_json::Value::Object(m)) => m.clone().into_iter().collect(),
                    _ => BTreeMap::new(),
                };
                let payload = v.get("payload").cloned().unwrap_or_default();
                prop_assert_eq!(
                    c.request_hash,
                    crate::idempotency::request_hash(c.protocol.request_type(), &payload, &steps)
                );
            }
        }
    }
}
