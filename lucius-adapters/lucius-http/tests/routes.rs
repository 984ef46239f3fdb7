//! Every route over a real socket: intake, job view, the worker flow to `SUCCEEDED`,
//! cancellation, protocols, admin outbox, health, metrics and OpenAPI; idempotent replay,
//! conflicts, concurrent submits, publish timeouts and graceful shutdown.

mod common;

use bytes::Bytes;
use common::{command, keyed_config, Mode, Server, WORKER_KEY};
use hyper::{Method, StatusCode};
use lucius_core::{JobStatus, OutboxStatus, StepStatus};
use lucius_http::HttpConfig;
use serde_json::json;

#[tokio::test]
async fn intake_answers_202_with_location_and_publishes_in_the_background() {
    let server = Server::start(keyed_config()).await;
    let r = server.post("/v1/commands", &command("k1")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let body = r.json();
    let id = body["jobId"].as_str().unwrap();
    assert_eq!(body["status"], "ACCEPTED");
    assert_eq!(body["statusUrl"], format!("/v1/jobs/{id}"));
    assert_eq!(r.headers["location"], format!("/v1/jobs/{id}"));
    assert!(r.headers.get("idempotent-replayed").is_none());
    server.settle().await;
    assert_eq!(server.publisher.inner.len(), 1);

    let r = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(r.status, 200);
    let job = r.json();
    assert_eq!(job["jobId"], id);
    assert_eq!(job["status"], "IN_PROGRESS");
    assert_eq!(job["tenantId"], "t1");
    assert_eq!(job["partition"], "t1#202403");
    assert_eq!(job["createdAt"], "2024-03-01T00:00:00.000Z");
    assert_eq!(job["stepCount"], 3);
    let steps = job["steps"].as_array().unwrap();
    let ids: Vec<_> = steps
        .iter()
        .map(|s| s["stepId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ocr", "embed", "index"]);
    assert_eq!(steps[0]["status"], "INITIATED");
    assert_eq!(steps[0]["attempt"], 1);
    assert_eq!(steps[0]["directiveId"], format!("{id}.0.1"));
    assert!(steps[0]["ackDeadline"].as_str().unwrap().ends_with('Z'));
    assert_eq!(steps[0]["payload"], json!({"dpi": 300}));
    assert_eq!(steps[1]["status"], "PENDING");
    assert!(steps[1]["directiveId"].is_null());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_idempotency_key_header_is_accepted() {
    let server = Server::start(keyed_config()).await;
    let mut v = command("x");
    v.as_object_mut().unwrap().remove("idempotencyKey");
    let r = server
        .post_with("/v1/commands", &[("idempotency-key", b"hdr-1")], &v)
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["jobId"].as_str().unwrap().to_owned();
    assert_eq!(&*server.job(&id).await.job.idempotency_key, "hdr-1");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn replay_returns_the_same_job_and_a_different_request_conflicts() {
    let server = Server::start(keyed_config()).await;
    let first = server.submit("same").await;
    server.settle().await;
    let r = server.post("/v1/commands", &command("same")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.json()["jobId"], first.as_str());
    assert_eq!(r.json()["status"], "IN_PROGRESS");
    assert_eq!(r.headers["idempotent-replayed"], "true");
    assert_eq!(r.headers["location"], format!("/v1/jobs/{first}"));

    let mut other = command("same");
    other["payload"]["documentUrl"] = json!("https://example.invalid/other.pdf");
    let r = server.post("/v1/commands", &other).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "IDEMPOTENCY_CONFLICT");
    assert_eq!(r.json()["error"]["details"]["jobId"], first.as_str());
    assert_eq!(server.store.job_count(), 1);
    assert_eq!(server.publisher.inner.len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_submits_create_one_job() {
    let server = std::sync::Arc::new(Server::start(keyed_config()).await);
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let s = server.clone();
        tasks.push(tokio::spawn(async move {
            let r = s.post("/v1/commands", &command("race")).await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
            r.json()["jobId"].as_str().unwrap().to_owned()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(server.store.job_count(), 1);
    server.settle().await;
    assert_eq!(server.outbox(None).await.len(), 1);
    let server = std::sync::Arc::try_unwrap(server).ok().unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_publish_timeout_keeps_the_202_and_leaves_the_entry_pending() {
    let server = Server::start_with(keyed_config(), Mode::Hang).await;
    let r = server.post("/v1/commands", &command("slow")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let id = r.json()["jobId"].as_str().unwrap().to_owned();
    server.settle().await;
    let rec = server.job(&id).await;
    assert_eq!(rec.job.status, JobStatus::Accepted);
    assert_eq!(rec.steps[0].status, StepStatus::Queued);
    let e = &rec.outbox[0];
    assert_eq!(e.status, OutboxStatus::Pending);
    assert_eq!(e.publish_attempts, 1);
    assert!(
        e.last_error.as_deref().unwrap().contains("timed out"),
        "{e:?}"
    );
    let m = server.get("/metrics").await;
    let text = String::from_utf8_lossy(&m.body).into_owned();
    assert!(text.contains("lucius_publish_failures_total 1"), "{text}");
    assert!(
        text.contains("lucius_outbox_entries{status=\"PENDING\",partition=\"t1#202403\"} 1"),
        "{text}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn workers_drive_a_job_to_success() {
    let server = Server::start(keyed_config()).await;
    let id = server.submit("flow").await;
    server.settle().await;

    let r = server
        .worker(&id, "ocr", "ack", &json!({"attempt": 1, "workerId": "w1"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["status"], "RUNNING");
    assert_eq!(r.json()["workerId"], "w1");
    let r = server
        .worker(
            &id,
            "ocr",
            "heartbeat",
            &json!({"attempt": 1, "workerId": "w1"}),
        )
        .await;
    assert_eq!(r.status, 200);
    // Another worker cannot take a live lease.
    let r = server
        .worker(
            &id,
            "ocr",
            "heartbeat",
            &json!({"attempt": 1, "workerId": "w2"}),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "LEASE_HELD_BY_OTHER")
    );
    let r = server
        .worker(
            &id,
            "ocr",
            "complete",
            &json!({"attempt": 1, "workerId": "w1", "result": {"pages": 3}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "SUCCEEDED");
    assert_eq!(r.json()["result"], json!({"pages": 3}));
    // Repeating the same completion answers the step as it is.
    let r = server
        .worker(
            &id,
            "ocr",
            "complete",
            &json!({"attempt": 1, "workerId": "w1", "result": {"pages": 3}}),
        )
        .await;
    assert_eq!(r.status, 200);
    server.settle().await;

    // embed: a retryable failure makes attempt 2.
    let r = server
        .worker(
            &id,
            "embed",
            "fail",
            &json!({"attempt": 1, "error": "gpu busy", "retryable": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "QUEUED");
    assert_eq!(r.json()["attempt"], 2);
    server.settle().await;
    let r = server
        .worker(&id, "embed", "ack", &json!({"attempt": 1}))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "STALE_ATTEMPT")
    );
    for (step, attempt) in [("embed", 2), ("index", 1)] {
        let r = server
            .worker(&id, step, "ack", &json!({"attempt": attempt}))
            .await;
        assert_eq!(r.status, 200, "{step}: {:?}", r.body);
        let r = server
            .worker(&id, step, "complete", &json!({"attempt": attempt}))
            .await;
        assert_eq!(r.status, 200, "{step}: {:?}", r.body);
        server.settle().await;
    }
    let job = server.get(&format!("/v1/jobs/{id}")).await.json();
    assert_eq!(job["status"], "SUCCEEDED");
    assert!(job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "SUCCEEDED"));
    assert_eq!(server.publisher.inner.len(), 4);

    // A finished job cannot be cancelled.
    let r = server
        .send(
            Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "ILLEGAL_TRANSITION")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_non_retryable_failure_fails_the_job() {
    let server = Server::start(keyed_config()).await;
    let id = server.submit("doomed").await;
    server.settle().await;
    let r = server
        .worker(
            &id,
            "ocr",
            "fail",
            &json!({"attempt": 1, "error": "corrupt pdf"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "FAILED");
    assert_eq!(server.job(&id).await.job.status, JobStatus::Failed);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_call_naming_no_worker_cannot_act_on_a_step_leased_to_one() {
    let server = Server::start(keyed_config()).await;
    let id = server.submit("anon").await;
    server.settle().await;
    let r = server
        .worker(&id, "ocr", "ack", &json!({"attempt": 1, "workerId": "w1"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for (op, body) in [
        ("ack", json!({"attempt": 1})),
        ("heartbeat", json!({"attempt": 1})),
        ("complete", json!({"attempt": 1, "result": {"pages": 1}})),
        ("fail", json!({"attempt": 1, "error": "duplicate delivery"})),
    ] {
        let r = server.worker(&id, "ocr", op, &body).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (409, "LEASE_HELD_BY_OTHER"),
            "{op}: {:?}",
            r.body
        );
        let details = &r.json()["error"]["details"];
        assert_eq!(
            (&details["holder"], &details["caller"], &details["stepId"]),
            (&json!("w1"), &json!(null), &json!("ocr")),
            "{op}"
        );
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("leased to worker w1"));
    }
    let step = &server.job(&id).await.steps[0];
    assert_eq!(
        (step.status, step.worker_id.as_deref()),
        (StepStatus::Running, Some("w1"))
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_repeated_complete_is_200_with_the_same_result_and_409_with_another() {
    let server = Server::start(keyed_config()).await;
    let id = server.submit("again").await;
    server.settle().await;
    server
        .worker(&id, "ocr", "ack", &json!({"attempt": 1, "workerId": "w1"}))
        .await;
    let path = format!("/v1/jobs/{id}/steps/ocr/complete");
    let headers: [(&str, &[u8]); 2] = [
        ("content-type", b"application/json"),
        ("x-worker-key", WORKER_KEY.as_bytes()),
    ];
    let complete = |body: &'static str| server.send(Method::POST, &path, &headers, body);
    let first = complete(r#"{"attempt": 1, "workerId": "w1", "result": {"b": 2, "a": 1}}"#).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    server.settle().await;
    // The same result by value (members in another order), from another worker: 200.
    let again = complete(r#"{"attempt": 1, "workerId": "w2", "result": {"a": 1, "b": 2}}"#).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.json(), first.json());
    let other = complete(r#"{"attempt": 1, "workerId": "w1", "result": {"a": 1}}"#).await;
    assert_eq!(
        (other.status.as_u16(), other.code().as_str()),
        (409, "ALREADY_APPLIED"),
        "{:?}",
        other.body
    );
    assert_eq!(
        other.json()["error"]["details"],
        json!({"stepId": "ocr", "event": "complete", "attempt": 1})
    );
    let job = server.job(&id).await;
    assert_eq!(
        job.steps[0].result.as_ref().map(|r| r.to_value()),
        Some(json!({"a": 1, "b": 2}))
    );
    // embed got exactly one directive.
    assert_eq!(job.outbox.iter().filter(|e| e.step_index == 1).count(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_repeated_fail_is_200_with_the_same_body_and_409_with_another() {
    let server = Server::start(keyed_config()).await;
    let id = server.submit("fail-again").await;
    server.settle().await;
    let gpu = json!({"attempt": 1, "workerId": "w1", "error": "gpu busy", "retryable": true});
    let first = server.worker(&id, "ocr", "fail", &gpu).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(
        (&first.json()["status"], &first.json()["attempt"]),
        (&json!("QUEUED"), &json!(2))
    );
    server.settle().await;
    let again = server.worker(&id, "ocr", "fail", &gpu).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.json()["attempt"], 2);
    for other in [
        json!({"attempt": 1, "workerId": "w1", "error": "gpu on fire", "retryable": true}),
        json!({"attempt": 1, "workerId": "w1", "error": "gpu busy"}),
    ] {
        let r = server.worker(&id, "ocr", "fail", &other).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (409, "ALREADY_APPLIED"),
            "{other}: {:?}",
            r.body
        );
    }
    // Attempt 2 fails for good; repeating that is 200 too, and the job stays FAILED once.
    let fatal = json!({"attempt": 2, "workerId": "w1", "error": "corrupt pdf"});
    assert_eq!(server.worker(&id, "ocr", "fail", &fatal).await.status, 200);
    let r = server.worker(&id, "ocr", "fail", &fatal).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["status"], "FAILED");
    let r = server
        .worker(&id, "ocr", "fail", &json!({"attempt": 2, "error": "other"}))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "ALREADY_APPLIED")
    );
    let job = server.job(&id).await;
    assert_eq!(job.job.status, JobStatus::Failed);
    assert_eq!(job.outbox.len(), 2, "one directive per attempt");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn worker_routes_are_open_when_no_worker_key_is_configured() {
    let server = Server::start(HttpConfig::default()).await;
    let id = server.submit("open").await;
    server.settle().await;
    let r = server
        .post(
            &format!("/v1/jobs/{id}/steps/ocr/ack"),
            &json!({"attempt": 1}),
        )
        .await;
    assert_eq!(r.status, 200);
    // A configured key is required exactly.
    let keyed = Server::start(keyed_config()).await;
    let id = keyed.submit("closed").await;
    let r = keyed
        .post_with(
            &format!("/v1/jobs/{id}/steps/ocr/ack"),
            &[("x-worker-key", WORKER_KEY.as_bytes())],
            &json!({"attempt": 1}),
        )
        .await;
    assert_eq!(r.status, 200);
    server.stop().await.unwrap();
    keyed.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_stops_a_job_with_a_reason() {
    let server = Server::start(keyed_config()).await;
    let id = server.submit("c1").await;
    server.settle().await;
    let r = server
        .post(
            &format!("/v1/jobs/{id}/cancel"),
            &json!({"reason": "user asked"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let job = r.json();
    assert_eq!(job["status"], "CANCELLED");
    assert_eq!(job["error"], "user asked");
    assert!(job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "CANCELLED"));
    // Without a body the default reason is used.
    let id2 = server.submit("c2").await;
    let r = server
        .send(
            Method::POST,
            &format!("/v1/jobs/{id2}/cancel"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["error"], "cancelled by client");
    // A worker call after cancellation is refused.
    let r = server
        .worker(&id, "ocr", "ack", &json!({"attempt": 1}))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "ILLEGAL_TRANSITION")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn protocols_health_and_readiness() {
    let server = Server::start(HttpConfig::default()).await;
    let r = server.get("/v1/protocols").await;
    assert_eq!(r.status, 200);
    let p = r.json();
    let types: Vec<_> = p["protocols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["requestType"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"document.process") && types.contains(&"demo.echo"),
        "{types:?}"
    );
    assert_eq!(server.get("/healthz").await.json(), json!({"status": "ok"}));
    assert_eq!(
        server.get("/readyz").await.json(),
        json!({"status": "ready"})
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn admin_lists_and_retries_dead_entries() {
    let server = Server::start_with(keyed_config(), Mode::Fail).await;
    let a = server.submit("a1").await;
    let b = server.submit("b1").await;
    server.settle().await;
    assert_eq!(server.outbox(Some(OutboxStatus::Dead)).await.len(), 2);

    let r = server
        .admin_get("/v1/admin/outbox?status=DEAD&partition=t1%23202403&limit=10")
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let list = r.json();
    assert_eq!(list["count"], 2);
    let e = &list["entries"][0];
    assert_eq!(e["status"], "DEAD");
    assert_eq!(e["partition"], "t1#202403");
    assert_eq!(e["directive"]["stepId"], "ocr");
    assert!(e["lastError"].as_str().unwrap().contains("refuses"));
    let r = server.admin_get("/v1/admin/outbox?status=SENT").await;
    assert_eq!(r.json()["count"], 0);

    // Retry one entry once the bus works again: it is PENDING now, then published.
    server.publisher.set(Mode::Ok);
    let r = server
        .admin_post(&format!("/v1/admin/outbox/{a}.0.1/retry"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["status"], "PENDING");
    assert_eq!(r.json()["publishAttempts"], 0);
    server.settle().await;
    assert_eq!(server.job(&a).await.outbox[0].status, OutboxStatus::Sent);

    // Retry the rest by filter (JSON body form).
    let r = server
        .admin_post(
            "/v1/admin/outbox/retry",
            &json!({"status": "DEAD", "partition": "t1#202403"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json(), json!({"retried": 1}));
    server.settle().await;
    assert_eq!(server.job(&b).await.job.status, JobStatus::InProgress);
    // Nothing left: the query form retries zero.
    let r = server
        .send(
            Method::POST,
            "/v1/admin/outbox/retry?limit=5",
            &[("x-api-key", common::ADMIN_KEY.as_bytes())],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.json(), json!({"retried": 0}));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_transitions_and_backlog() {
    let server = Server::start_with(keyed_config(), Mode::Fail).await;
    server.submit("m1").await;
    server.settle().await;
    let _ = server.get("/nope").await;
    let r = server.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    for needle in [
        "lucius_http_requests_total{route=\"/v1/commands\",status=\"202\"} 1",
        "lucius_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        "lucius_job_transitions_total{from=\"NEW\",to=\"ACCEPTED\"} 1",
        "lucius_step_transitions_total{from=\"NEW\",to=\"QUEUED\"} 1",
        "lucius_outbox_transitions_total{from=\"PENDING\",to=\"DEAD\"} 1",
        "lucius_publish_total{result=\"error\"} 1",
        "lucius_outbox_entries{status=\"DEAD\",partition=\"t1#202403\"} 1",
        "lucius_publish_latency_seconds_count 1",
        "lucius_store_up 1",
        "# TYPE lucius_publish_latency_seconds histogram",
        "lucius_background_publications 0",
        "lucius_background_overflow_total 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oldest_pending_age_follows_the_clock() {
    let server = Server::start_with(keyed_config(), Mode::Hang).await;
    server.submit("old").await;
    server.settle().await;
    let created = server.outbox(None).await[0].created_at;
    server.clock.set(lucius_core::Timestamp(created.0 + 90_000));
    let text = String::from_utf8(server.get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        text.contains("lucius_outbox_oldest_pending_age_seconds{partition=\"t1#202403\"} 90"),
        "{text}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn openapi_describes_every_route_with_schemars_schemas() {
    let server = Server::start(HttpConfig::default()).await;
    let r = server.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/commands",
        "/v1/jobs/{jobId}",
        "/v1/jobs/{jobId}/cancel",
        "/v1/jobs/{jobId}/steps/{stepId}/ack",
        "/v1/jobs/{jobId}/steps/{stepId}/heartbeat",
        "/v1/jobs/{jobId}/steps/{stepId}/complete",
        "/v1/jobs/{jobId}/steps/{stepId}/fail",
        "/v1/protocols",
        "/v1/admin/outbox",
        "/v1/admin/outbox/retry",
        "/v1/admin/outbox/{outboxId}/retry",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Envelope"]["required"],
        json!(["requestType", "tenantId"])
    );
    assert!(schemas["Directive"]["properties"]["directiveId"].is_object());
    assert!(schemas["ErrorBody"]["properties"]["error"].is_object());
    server.stop().await.unwrap();
}

/// A request whose body is still arriving when shutdown starts is finished and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = Server::start(HttpConfig::default()).await;
    let body = command("inflight").to_string();
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    server.trigger_shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    s.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 202"), "{text}");
    let store = server.store.clone();
    server.join().await.unwrap();
    assert_eq!(store.job_count(), 1);
    // The listener is closed.
    let addr_refused = tokio::net::TcpStream::connect(s.peer_addr().unwrap()).await;
    assert!(addr_refused.is_err());
}

#[tokio::test]
async fn store_failures_map_to_503_and_413() {
    use lucius_core::memory::Fault;
    use lucius_core::StoreErrorKind;
    let server = Server::start(keyed_config()).await;
    for (kind, status, code) in [
        (StoreErrorKind::Transient, 503, "STORE_UNAVAILABLE"),
        (StoreErrorKind::TooLarge, 413, "ROW_TOO_LARGE"),
        (StoreErrorKind::Permanent, 500, "STORE_ERROR"),
    ] {
        server.store.inject(Fault::Fail(kind));
        let r = server.post("/v1/commands", &command("faulty")).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (status, code),
            "{kind:?}"
        );
        if status == 503 {
            assert_eq!(r.headers["retry-after"], "1");
        }
    }
    assert_eq!(server.store.job_count(), 0);
    // The store works again: the same request is accepted.
    assert_eq!(
        server.post("/v1/commands", &command("faulty")).await.status,
        202
    );
    server.stop().await.unwrap();
}
