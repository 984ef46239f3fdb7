//! `docs/directives.md` cannot go stale: its JSON Schema is the generated one, its example
//! body is a valid directive, and its example headers are what the adapter sends for it.

use std::collections::HashMap;

use lucius_core::Directive;
use lucius_servicebus::DirectiveMessage;
use serde_json::Value;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/directives.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The first fenced block (its body) after the line holding `marker`.
fn block_after(doc: &str, marker: &str) -> String {
    let start = doc
        .find(marker)
        .unwrap_or_else(|| panic!("docs/directives.md lost its {marker:?} marker"));
    let rest = &doc[start..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body_start = open + rest[open..].find('\n').expect("fence line ends") + 1;
    let close = rest[body_start..]
        .find("\n```")
        .expect("the block is closed");
    rest[body_start..body_start + close].to_owned()
}

#[test]
fn the_schema_in_the_doc_is_the_generated_one() {
    let doc = doc();
    let written: Value = serde_json::from_str(&block_after(&doc, "<!-- directive-schema"))
        .expect("the schema block is JSON");
    let generated = Directive::json_schema();
    assert!(
        written == generated,
        "docs/directives.md's schema is stale; replace the block with:\n{}",
        serde_json::to_string_pretty(&generated).unwrap_or_default()
    );
}

#[test]
fn the_example_is_a_directive_and_its_headers_are_what_is_sent() {
    let doc = doc();
    let body = block_after(&doc, "<!-- example-body");
    let d: Directive = serde_json::from_str(&body).expect("the example body is a directive");
    assert_eq!(d.schema_version, lucius_core::DIRECTIVE_SCHEMA_VERSION);
    assert_eq!(
        *d.directive_id,
        format!("{}.{}.{}", d.job_id, d.step_index, d.attempt)
    );
    let msg = DirectiveMessage::render(&d).unwrap();

    // The request block: `Name: value` lines after the request line.
    let http = block_after(&doc, "```http");
    let mut lines = http.lines();
    let request_line = lines.next().unwrap();
    assert_eq!(request_line, format!("POST /{}/messages HTTP/1.1", d.topic));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    assert_eq!(headers["content-type"], "application/json");
    let sent = serde_json::to_value(msg.options().broker_properties.unwrap()).unwrap();
    let written: Value = serde_json::from_str(&headers["brokerproperties"]).unwrap();
    assert_eq!(written, sent);
    for (name, value) in &msg.properties {
        assert_eq!(
            headers.get(&name.to_ascii_lowercase()),
            Some(value),
            "property {name}"
        );
    }
    let custom = headers
        .keys()
        .filter(|k| {
            !["host", "authorization", "content-type", "brokerproperties"].contains(&k.as_str())
        })
        .count();
    assert_eq!(custom, msg.properties.len(), "no undocumented properties");

    // What a receiver sees keeps every property that was sent.
    let received: Value = serde_json::from_str(&block_after(
        &doc,
        "<!-- example-received-broker-properties",
    ))
    .unwrap();
    for (k, v) in sent.as_object().unwrap() {
        assert_eq!(&received[k], v, "{k}");
    }
}
