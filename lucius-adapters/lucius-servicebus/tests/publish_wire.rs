//! The publisher on the wire: what it sends to a fake Service Bus that verifies the
//! SharedAccessSignature, and how each failure is classified.

mod common;

use std::time::Duration;

use common::{Fake, Fault, KEY, KEY_NAME};
use lucius_core::{Directive, PublishError, Publisher, DIRECTIVE_SCHEMA_VERSION};
use lucius_servicebus::ServiceBusPublisher;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(5);

fn directive() -> Directive {
    Directive {
        schema_version: DIRECTIVE_SCHEMA_VERSION,
        directive_id: "5f0c8a2e-1b7d-5c3e-9a41-2d6f0e8b7c10.0.1".into(),
        job_id: "5f0c8a2e-1b7d-5c3e-9a41-2d6f0e8b7c10".into(),
        tenant_id: "acme".into(),
        request_type: "document.process".into(),
        correlation_id: Some("corr-42".into()),
        step_id: "ocr".into(),
        step_index: 0,
        step_count: 3,
        attempt: 1,
        max_attempts: 3,
        topic: "lucius.ocr".into(),
        ack_timeout_ms: 30_000,
        lease_duration_ms: 120_000,
        issued_at: lucius_core::Timestamp::parse_rfc3339("2024-03-05T00:00:00Z").unwrap(),
        payload: json!({"dpi": 300}).into(),
        command: json!({"documentUrl": "https://example.test/a.pdf"}).into(),
        input: None,
    }
}

#[tokio::test]
async fn sends_one_signed_message_with_ids_properties_and_body() {
    let fake = Fake::start().await;
    let p = ServiceBusPublisher::new(&fake.connection(), TIMEOUT).unwrap();
    let d = directive();
    p.publish(&d).await.unwrap();

    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let req = &seen[0];
    assert_eq!(req.method, hyper::Method::POST);
    assert_eq!(req.path, "/lucius.ocr/messages");
    assert_eq!(req.status, 201, "the fake accepted the signature");

    let auth = req.header("authorization").unwrap();
    assert!(
        auth.starts_with(&format!(
            "SharedAccessSignature sr=https%3A%2F%2F{}%2Flucius.ocr%2Fmessages&sig=",
            common::NAMESPACE_HOST
        )),
        "{auth}"
    );
    assert!(auth.ends_with(&format!("&skn={KEY_NAME}")), "{auth}");

    let broker: Value = serde_json::from_str(req.header("brokerproperties").unwrap()).unwrap();
    assert_eq!(
        broker,
        json!({
            "MessageId": d.directive_id,
            "SessionId": d.job_id,
            "PartitionKey": d.job_id,
            "CorrelationId": "corr-42",
            "Label": "ocr",
        })
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    // Custom properties travel as headers; HTTP/1 lower-cases their names.
    for (name, value) in [
        ("jobid", &*d.job_id),
        ("stepid", "ocr"),
        ("attempt", "1"),
        ("tenantid", "acme"),
        ("requesttype", "document.process"),
        ("schemaversion", "1"),
        ("correlationid", "corr-42"),
    ] {
        assert_eq!(req.header(name), Some(value), "{name}");
    }
    let body: Directive = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body, d);
    assert_eq!(fake.ready("lucius.ocr").len(), 1);
}

#[tokio::test]
async fn republishing_sends_the_same_message_id() {
    let fake = Fake::start().await;
    let p = ServiceBusPublisher::new(&fake.connection(), TIMEOUT).unwrap();
    p.publish(&directive()).await.unwrap();
    p.publish(&directive()).await.unwrap();
    let ids: Vec<Value> = fake
        .seen()
        .iter()
        .map(|s| {
            serde_json::from_str::<Value>(s.header("brokerproperties").unwrap()).unwrap()
                ["MessageId"]
                .clone()
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
}

#[tokio::test]
async fn no_correlation_id_means_no_such_property() {
    let fake = Fake::start().await;
    let p = ServiceBusPublisher::new(&fake.connection(), TIMEOUT).unwrap();
    let d = Directive {
        correlation_id: None,
        ..directive()
    };
    p.publish(&d).await.unwrap();
    let req = &fake.seen()[0];
    assert_eq!(req.header("correlationid"), None);
    let broker: Value = serde_json::from_str(req.header("brokerproperties").unwrap()).unwrap();
    assert_eq!(broker.get("CorrelationId"), None);
}

#[tokio::test]
async fn entity_path_takes_every_directive() {
    let fake = Fake::start().await;
    let conn = format!("{};EntityPath=all-steps", fake.connection());
    let p = ServiceBusPublisher::new(&conn, TIMEOUT).unwrap();
    p.publish(&directive()).await.unwrap();
    assert_eq!(fake.seen()[0].path, "/all-steps/messages");
    assert_eq!(fake.seen()[0].status, 201);
}

async fn publish_against(
    fault: Option<Fault>,
    conn: Option<String>,
    timeout: Duration,
) -> PublishError {
    let fake = Fake::start().await;
    if let Some(f) = fault {
        fake.fault("/messages", f);
    }
    let conn = conn.unwrap_or_else(|| fake.connection());
    let p = ServiceBusPublisher::new(&conn, timeout).unwrap();
    p.publish(&directive()).await.unwrap_err()
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_the_signature_check_and_is_permanent() {
    let fake = Fake::start().await;
    let p = ServiceBusPublisher::new(&fake.connection_with(KEY_NAME, "bm90LXRoZS1rZXk="), TIMEOUT)
        .unwrap();
    let err = p.publish(&directive()).await.unwrap_err();
    assert!(
        matches!(&err, PublishError::Permanent(m) if m.contains("401") && m.contains("lucius.ocr")),
        "{err}"
    );
    assert_eq!(fake.seen()[0].status, 401);
    // The right key is accepted by the same check (so the check can pass and fail).
    assert!(KEY != "bm90LXRoZS1rZXk=");
}

#[tokio::test]
async fn forbidden_missing_and_gone_are_permanent() {
    for status in [401, 403, 404, 410, 400] {
        let err = publish_against(Some(Fault::Status(status)), None, TIMEOUT).await;
        assert!(
            matches!(&err, PublishError::Permanent(m) if m.contains(&status.to_string())),
            "{status}: {err}"
        );
    }
}

#[tokio::test]
async fn throttling_and_server_errors_are_transient() {
    for status in [429, 500, 503] {
        let err = publish_against(Some(Fault::Status(status)), None, TIMEOUT).await;
        assert!(
            matches!(&err, PublishError::Transient(m) if m.contains(&status.to_string())),
            "{status}: {err}"
        );
    }
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_transient() {
    let started = std::time::Instant::now();
    let err = publish_against(
        Some(Fault::Delay(Duration::from_secs(3))),
        None,
        Duration::from_millis(200),
    )
    .await;
    assert!(
        matches!(&err, PublishError::Transient(m) if m.contains("timed out after 200 ms")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout bounded the wait"
    );
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let port = common::refused_port().await;
    let conn = format!(
        "Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY};UseDevelopmentEmulator=true"
    );
    let err = publish_against(None, Some(conn), TIMEOUT).await;
    assert!(matches!(&err, PublishError::Transient(_)), "{err}");
}

#[tokio::test]
async fn a_topic_that_is_not_an_entity_name_is_permanent_and_sends_nothing() {
    let fake = Fake::start().await;
    let p = ServiceBusPublisher::new(&fake.connection(), TIMEOUT).unwrap();
    let d = Directive {
        topic: "no spaces?".into(),
        ..directive()
    };
    let err = p.publish(&d).await.unwrap_err();
    assert!(
        matches!(&err, PublishError::Permanent(m) if m.contains("no spaces?")),
        "{err}"
    );
    let d = Directive {
        topic: "".into(),
        ..directive()
    };
    let err = p.publish(&d).await.unwrap_err();
    assert!(
        matches!(&err, PublishError::Permanent(m) if m.contains("empty")),
        "{err}"
    );
    assert!(fake.seen().is_empty());
}

#[test]
fn the_fake_signature_check_rejects_what_it_should() {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let sr = format!("https%3A%2F%2F{}%2Fq%2Fmessages", common::NAMESPACE_HOST);
    let sign = |key: &str, se: u64| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{sr}\n{se}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={KEY_NAME}")
    };
    let now = 1_000_000;
    assert_eq!(
        common::verify_sas(&sign(KEY, now + 60), "/q/messages", now),
        Ok(())
    );
    assert!(common::verify_sas(&sign(KEY, now - 1), "/q/messages", now)
        .unwrap_err()
        .contains("expired"));
    assert!(
        common::verify_sas(&sign("other", now + 60), "/q/messages", now)
            .unwrap_err()
            .contains("mismatch")
    );
    assert!(
        common::verify_sas(&sign(KEY, now + 60), "/other/messages", now)
            .unwrap_err()
            .contains("does not cover")
    );
    let wrong_name = sign(KEY, now + 60).replace(KEY_NAME, "Other");
    assert!(common::verify_sas(&wrong_name, "/q/messages", now).is_err());
    assert!(common::verify_sas("Bearer x", "/q/messages", now).is_err());
}
