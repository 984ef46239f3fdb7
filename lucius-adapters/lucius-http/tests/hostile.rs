//! A table of bad and hostile requests against a real socket: each gets its exact status
//! and error code, and none changes the store (or publishes anything).

mod common;

use bytes::Bytes;
use common::{command, keyed_config, Server, ADMIN_KEY, WORKER_KEY};
use hyper::Method;
use lucius_http::HttpConfig;
use serde_json::json;

const JSON: (&str, &[u8]) = ("content-type", b"application/json");
const WK: (&str, &[u8]) = ("x-worker-key", WORKER_KEY.as_bytes());
const AK: (&str, &[u8]) = ("x-api-key", ADMIN_KEY.as_bytes());

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, &'static [u8])>,
    body: Bytes,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    headers: &[(&'static str, &'static [u8])],
    body: impl Into<Bytes>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        headers: headers.to_vec(),
        body: body.into(),
        status,
        code,
    }
}

fn with(f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = command("hostile");
    f(&mut v);
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_are_refused_and_change_nothing() {
    let server = Server::start(HttpConfig {
        max_body_bytes: 4096,
        ..keyed_config()
    })
    .await;
    let job = server.submit("seed").await;
    server.settle().await;
    let sent_entry = format!("{job}.0.1");
    let unknown_job = "00000000-0000-8000-8000-000000000000";
    let post = Method::POST;
    let get = Method::GET;
    let cmd = "/v1/commands";
    let ack = format!("/v1/jobs/{job}/steps/ocr/ack");
    let deep = format!(
        "{{\"requestType\":\"demo.echo\",\"tenantId\":\"t1\",\"idempotencyKey\":\"d\",\"payload\":{}{}}}",
        "[".repeat(1500),
        "]".repeat(1500)
    );
    let cases = vec![
        // Intake: JSON and envelope schema.
        case(
            "malformed json",
            post.clone(),
            cmd,
            &[JSON],
            "{not json",
            400,
            "MALFORMED_JSON",
        ),
        case(
            "empty body",
            post.clone(),
            cmd,
            &[JSON],
            "",
            400,
            "MALFORMED_JSON",
        ),
        case(
            "truncated json",
            post.clone(),
            cmd,
            &[JSON],
            "{\"requestType\":",
            400,
            "MALFORMED_JSON",
        ),
        case(
            "non-utf8 body",
            post.clone(),
            cmd,
            &[JSON],
            &b"\xff\xfe{}"[..],
            400,
            "MALFORMED_JSON",
        ),
        case(
            "array body",
            post.clone(),
            cmd,
            &[JSON],
            "[1,2]",
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "string body",
            post.clone(),
            cmd,
            &[JSON],
            "\"hi\"",
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "requestType wrong type",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["requestType"] = json!(5)),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "tenantId wrong type",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["tenantId"] = json!(["t"])),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "missing requestType",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| {
                v.as_object_mut().unwrap().remove("requestType");
            }),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "missing tenantId",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| {
                v.as_object_mut().unwrap().remove("tenantId");
            }),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "missing idempotency key",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| {
                v.as_object_mut().unwrap().remove("idempotencyKey");
            }),
            422,
            "MISSING_IDEMPOTENCY_KEY",
        ),
        case(
            "tenant with #",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["tenantId"] = json!("t#1")),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "unknown envelope field",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["admin"] = json!(true)),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "unknown requestType",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["requestType"] = json!("rm.rf")),
            422,
            "UNKNOWN_REQUEST_TYPE",
        ),
        case(
            "unknown step",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["steps"]["nope"] = json!({})),
            422,
            "UNKNOWN_STEP",
        ),
        case(
            "nested step out of range",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["steps"]["ocr"]["dpi"] = json!(5)),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "nested step wrong type",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["steps"]["embed"] = json!({"model": 7})),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "nested step not an object",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["steps"]["index"] = json!("x")),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "payload missing required",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["payload"] = json!({})),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "huge number overflows",
            post.clone(),
            cmd,
            &[JSON],
            r#"{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"h","payload":1e400}"#,
            400,
            "INEXACT_NUMBER",
        ),
        case(
            "integer beyond 64 bits",
            post.clone(),
            cmd,
            &[JSON],
            r#"{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"h","payload":{"n":18446744073709551616}}"#,
            400,
            "INEXACT_NUMBER",
        ),
        case(
            "integer beyond 64 bits in a step",
            post.clone(),
            cmd,
            &[JSON],
            r#"{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"h","steps":{"echo":[123456789012345678901234567890]}}"#,
            400,
            "INEXACT_NUMBER",
        ),
        case(
            "huge number in a body that is not JSON",
            post.clone(),
            cmd,
            &[JSON],
            r#"{"requestType":"demo.echo","payload":1e400"#,
            400,
            "MALFORMED_JSON",
        ),
        case(
            "huge integer in step",
            post.clone(),
            cmd,
            &[JSON],
            with(|v| v["steps"]["ocr"]["dpi"] = json!(1e300)),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "deep nesting",
            post.clone(),
            cmd,
            &[JSON],
            deep,
            400,
            "MALFORMED_JSON",
        ),
        case(
            "header key mismatch",
            post.clone(),
            cmd,
            &[JSON, ("idempotency-key", b"other")],
            command("seed2").to_string(),
            422,
            "IDEMPOTENCY_KEY_MISMATCH",
        ),
        case(
            "bad header key",
            post.clone(),
            cmd,
            &[JSON, ("idempotency-key", b"bad key")],
            with(|v| {
                v.as_object_mut().unwrap().remove("idempotencyKey");
            }),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "non-utf8 header key",
            post.clone(),
            cmd,
            &[JSON, ("idempotency-key", b"\xffk")],
            with(|v| {
                v.as_object_mut().unwrap().remove("idempotencyKey");
            }),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "idempotency conflict",
            post.clone(),
            cmd,
            &[JSON],
            {
                let mut v = command("seed");
                v["payload"]["language"] = json!("fr");
                v.to_string()
            },
            409,
            "IDEMPOTENCY_CONFLICT",
        ),
        // Transport: size, content type, method, route.
        case(
            "oversize body",
            post.clone(),
            cmd,
            &[JSON],
            "x".repeat(4097),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        case(
            "text/plain",
            post.clone(),
            cmd,
            &[("content-type", b"text/plain")],
            command("ct").to_string(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        case(
            "no content type",
            post.clone(),
            cmd,
            &[],
            command("ct").to_string(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        case(
            "latin1 charset",
            post.clone(),
            cmd,
            &[("content-type", b"application/json; charset=latin1")],
            command("ct").to_string(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        case(
            "form content type",
            post.clone(),
            ack.clone(),
            &[WK, ("content-type", b"application/x-www-form-urlencoded")],
            "attempt=1",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        case(
            "GET on commands",
            get.clone(),
            cmd,
            &[],
            "",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "DELETE on job",
            Method::DELETE,
            format!("/v1/jobs/{job}"),
            &[],
            "",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "PUT on ack",
            Method::PUT,
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":1}"#,
            405,
            "METHOD_NOT_ALLOWED",
        ),
        case(
            "unknown route",
            get.clone(),
            "/v2/commands",
            &[],
            "",
            404,
            "NOT_FOUND",
        ),
        case(
            "unknown worker op",
            post.clone(),
            format!("/v1/jobs/{job}/steps/ocr/explode"),
            &[WK, JSON],
            r#"{"attempt":1}"#,
            404,
            "NOT_FOUND",
        ),
        case(
            "trailing slash",
            get.clone(),
            format!("/v1/jobs/{job}/"),
            &[],
            "",
            404,
            "NOT_FOUND",
        ),
        // Job ids.
        case(
            "bad job id",
            get.clone(),
            "/v1/jobs/not-a-uuid",
            &[],
            "",
            404,
            "JOB_NOT_FOUND",
        ),
        case(
            "upper-case job id",
            get.clone(),
            format!("/v1/jobs/{}", job.to_uppercase()),
            &[],
            "",
            404,
            "JOB_NOT_FOUND",
        ),
        case(
            "encoded dots job id",
            get.clone(),
            "/v1/jobs/%2e%2e",
            &[],
            "",
            404,
            "JOB_NOT_FOUND",
        ),
        case(
            "unknown job",
            get.clone(),
            format!("/v1/jobs/{unknown_job}"),
            &[],
            "",
            404,
            "JOB_NOT_FOUND",
        ),
        case(
            "cancel unknown job",
            post.clone(),
            format!("/v1/jobs/{unknown_job}/cancel"),
            &[],
            "",
            404,
            "JOB_NOT_FOUND",
        ),
        case(
            "cancel bad reason",
            post.clone(),
            format!("/v1/jobs/{job}/cancel"),
            &[JSON],
            r#"{"reason":5}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "cancel unknown field",
            post.clone(),
            format!("/v1/jobs/{job}/cancel"),
            &[JSON],
            r#"{"why":"x"}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        // Worker calls.
        case(
            "no worker key",
            post.clone(),
            ack.clone(),
            &[JSON],
            r#"{"attempt":1}"#,
            401,
            "UNAUTHORIZED",
        ),
        case(
            "wrong worker key",
            post.clone(),
            ack.clone(),
            &[JSON, ("x-worker-key", b"worker-secreT")],
            r#"{"attempt":1}"#,
            401,
            "UNAUTHORIZED",
        ),
        case(
            "worker malformed json",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            "{",
            400,
            "MALFORMED_JSON",
        ),
        case(
            "worker empty body",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            "",
            400,
            "MALFORMED_JSON",
        ),
        case(
            "worker array body",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            "[]",
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "missing attempt",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"workerId":"w"}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "attempt as string",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":"1"}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "attempt zero",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":0}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "attempt negative",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":-1}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "attempt fractional",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":1.5}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "attempt huge",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":1e30}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "attempt over u32",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":4294967296}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "workerId wrong type",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":1,"workerId":7}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "workerId too long",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            format!(r#"{{"attempt":1,"workerId":"{}"}}"#, "w".repeat(129)),
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "worker unknown field",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":1,"lease":999}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "stale attempt",
            post.clone(),
            ack.clone(),
            &[WK, JSON],
            r#"{"attempt":2}"#,
            409,
            "STALE_ATTEMPT",
        ),
        case(
            "unknown step",
            post.clone(),
            format!("/v1/jobs/{job}/steps/nope/ack"),
            &[WK, JSON],
            r#"{"attempt":1}"#,
            404,
            "STEP_NOT_FOUND",
        ),
        case(
            "foreign step id",
            post.clone(),
            format!("/v1/jobs/{job}/steps/echo/ack"),
            &[WK, JSON],
            r#"{"attempt":1}"#,
            404,
            "STEP_NOT_FOUND",
        ),
        case(
            "step not reached",
            post.clone(),
            format!("/v1/jobs/{job}/steps/embed/ack"),
            &[WK, JSON],
            r#"{"attempt":1}"#,
            409,
            "ILLEGAL_TRANSITION",
        ),
        case(
            "complete before ack",
            post.clone(),
            format!("/v1/jobs/{job}/steps/ocr/complete"),
            &[WK, JSON],
            r#"{"attempt":1,"result":{}}"#,
            409,
            "ILLEGAL_TRANSITION",
        ),
        case(
            "heartbeat before ack",
            post.clone(),
            format!("/v1/jobs/{job}/steps/ocr/heartbeat"),
            &[WK, JSON],
            r#"{"attempt":1}"#,
            409,
            "ILLEGAL_TRANSITION",
        ),
        case(
            "fail without error",
            post.clone(),
            format!("/v1/jobs/{job}/steps/ocr/fail"),
            &[WK, JSON],
            r#"{"attempt":1}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "fail retryable as string",
            post.clone(),
            format!("/v1/jobs/{job}/steps/ocr/fail"),
            &[WK, JSON],
            r#"{"attempt":1,"error":"x","retryable":"yes"}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "worker unknown job",
            post.clone(),
            format!("/v1/jobs/{unknown_job}/steps/ocr/ack"),
            &[WK, JSON],
            r#"{"attempt":1}"#,
            404,
            "JOB_NOT_FOUND",
        ),
        case(
            "worker bad job id",
            post.clone(),
            "/v1/jobs/x/steps/ocr/ack",
            &[WK, JSON],
            r#"{"attempt":1}"#,
            404,
            "JOB_NOT_FOUND",
        ),
        // Admin.
        case(
            "admin no key",
            get.clone(),
            "/v1/admin/outbox",
            &[],
            "",
            401,
            "UNAUTHORIZED",
        ),
        case(
            "admin wrong key",
            get.clone(),
            "/v1/admin/outbox",
            &[("x-api-key", b"admin-secre")],
            "",
            401,
            "UNAUTHORIZED",
        ),
        case(
            "admin retry no key",
            post.clone(),
            format!("/v1/admin/outbox/{sent_entry}/retry"),
            &[],
            "",
            401,
            "UNAUTHORIZED",
        ),
        case(
            "admin bad status",
            get.clone(),
            "/v1/admin/outbox?status=LOST",
            &[AK],
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "admin bad partition",
            get.clone(),
            "/v1/admin/outbox?partition=t1",
            &[AK],
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "admin limit zero",
            get.clone(),
            "/v1/admin/outbox?limit=0",
            &[AK],
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "admin limit huge",
            get.clone(),
            "/v1/admin/outbox?limit=99999999999999999999",
            &[AK],
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "admin non-utf8 query",
            get.clone(),
            "/v1/admin/outbox?status=%ff",
            &[AK],
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "admin retry SENT status",
            post.clone(),
            "/v1/admin/outbox/retry?status=SENT",
            &[AK],
            "",
            400,
            "INVALID_QUERY",
        ),
        case(
            "admin retry bad body",
            post.clone(),
            "/v1/admin/outbox/retry",
            &[AK, JSON],
            r#"{"limit":"all"}"#,
            422,
            "SCHEMA_VIOLATION",
        ),
        case(
            "admin retry bad id",
            post.clone(),
            "/v1/admin/outbox/nope/retry",
            &[AK],
            "",
            404,
            "OUTBOX_NOT_FOUND",
        ),
        case(
            "admin retry unknown id",
            post.clone(),
            format!("/v1/admin/outbox/{unknown_job}.0.1/retry"),
            &[AK],
            "",
            404,
            "OUTBOX_NOT_FOUND",
        ),
        case(
            "admin retry unknown attempt",
            post.clone(),
            format!("/v1/admin/outbox/{job}.0.9/retry"),
            &[AK],
            "",
            404,
            "OUTBOX_NOT_FOUND",
        ),
        case(
            "admin retry sent entry",
            post.clone(),
            format!("/v1/admin/outbox/{sent_entry}/retry"),
            &[AK],
            "",
            409,
            "ILLEGAL_TRANSITION",
        ),
        case(
            "admin GET on retry",
            get.clone(),
            "/v1/admin/outbox/retry",
            &[AK],
            "",
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let before = server.snapshot().await;
    assert_eq!(before.job_count, 1);
    for c in &cases {
        let r = server
            .send(c.method.clone(), &c.path, &c.headers, c.body.clone())
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (c.status, c.code),
            "case {:?}: {}",
            c.name,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.headers["content-type"], "application/json",
            "case {:?}",
            c.name
        );
        assert_eq!(
            server.snapshot().await,
            before,
            "case {:?} changed the store",
            c.name
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn schema_errors_list_every_pointer() {
    let server = Server::start(keyed_config()).await;
    let mut v = command("p");
    v["steps"]["ocr"]["dpi"] = json!(5);
    v["steps"]["embed"] = json!({"model": 7});
    let r = server.post("/v1/commands", &v).await;
    assert_eq!(r.status, 422);
    let body = r.json();
    let ptrs: Vec<&str> = body["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(ptrs, ["/steps/ocr/dpi", "/steps/embed/model"]);

    let r = server
        .worker(
            "00000000-0000-8000-8000-000000000000",
            "ocr",
            "fail",
            &json!({"attempt": "x", "retryable": 1}),
        )
        .await;
    assert_eq!(r.status, 422);
    let body = r.json();
    let ptrs: Vec<&str> = body["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(ptrs, ["/attempt", "/error", "/retryable"]);
    assert_eq!(server.store.job_count(), 0);
    server.stop().await.unwrap();
}

/// Posts a raw command body.
async fn submit_raw(server: &Server, body: String) -> common::Resp {
    server
        .send(Method::POST, "/v1/commands", &[JSON], body)
        .await
}

/// The same key with the same request is the same job, whatever the spelling: no step
/// payload is `{}` given, and numbers are equal by value. Another value is `409`.
#[tokio::test]
async fn one_request_whatever_its_spelling_is_one_job() {
    let server = Server::start(keyed_config()).await;
    let doc = |steps: &str| {
        format!(
            r#"{{"requestType":"document.process","tenantId":"t1","idempotencyKey":"same",
                "payload":{{"documentUrl":"https://example.invalid/a.pdf"}}{steps}}}"#
        )
    };
    let first = submit_raw(&server, doc("")).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let job = first.json()["jobId"].as_str().unwrap().to_owned();
    for steps in [
        r#","steps":{}"#,
        r#","steps":{"ocr":{}}"#,
        r#","steps":{"ocr":{},"embed":{},"index":{}}"#,
    ] {
        let r = submit_raw(&server, doc(steps)).await;
        assert_eq!(r.status, 202, "{steps}: {:?}", r.body);
        assert_eq!(r.json()["jobId"], job.as_str(), "{steps}");
        assert_eq!(r.headers["idempotent-replayed"], "true", "{steps}");
    }
    let r = submit_raw(&server, doc(r#","steps":{"ocr":{"dpi":300}}"#)).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "IDEMPOTENCY_CONFLICT")
    );

    let echo = |n: &str| {
        format!(
            r#"{{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"num",
                "payload":{{"n":{n},"deep":[{{"m":{n}}}]}},"steps":{{"echo":{{"x":{n}}}}}}}"#
        )
    };
    let first = submit_raw(&server, echo("1")).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let numbers = first.json()["jobId"].as_str().unwrap().to_owned();
    assert_ne!(numbers, job);
    for n in ["1.0", "1e0", "10e-1", "100E-2"] {
        let r = submit_raw(&server, echo(n)).await;
        assert_eq!(r.status, 202, "{n}: {:?}", r.body);
        assert_eq!(r.json()["jobId"], numbers.as_str(), "{n}");
    }
    for n in ["1.5", "2", "-1"] {
        let r = submit_raw(&server, echo(n)).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (409, "IDEMPOTENCY_CONFLICT"),
            "{n}"
        );
    }
    assert_eq!(server.store.job_count(), 2);

    // A job submitted as 1.0 holds, and hands its worker, the 1 the hash saw.
    let r = submit_raw(&server, echo("1.0").replace("\"num\"", "\"spelled\"")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let spelled = r.json()["jobId"].as_str().unwrap().to_owned();
    let record = server.job(&spelled).await;
    assert_eq!(record.job.payload.as_str(), r#"{"deep":[{"m":1}],"n":1}"#);
    assert_eq!(record.steps[0].payload.as_str(), r#"{"x":1}"#);
    server.settle().await;
    let directive = server
        .publisher
        .inner
        .drain()
        .into_iter()
        .find(|d| *d.job_id == *spelled)
        .expect("the job's first directive was published");
    assert_eq!(directive.command.as_str(), r#"{"deep":[{"m":1}],"n":1}"#);
    assert_eq!(directive.payload.as_str(), r#"{"x":1}"#);
    server.stop().await.unwrap();
}

/// A number that would be rounded is refused, with its pointer, and stores nothing: before,
/// 18446744073709551616 and 18446744073709551617 were one job holding a rounded number.
#[tokio::test]
async fn numbers_that_cannot_be_held_exactly_are_refused() {
    let server = Server::start(keyed_config()).await;
    for n in [
        "18446744073709551616",
        "18446744073709551617",
        "123456789012345678901234567890",
        "1e400",
    ] {
        let body = format!(
            r#"{{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"big",
                "payload":{{"amounts":[1,{{"total":{n}}}]}}}}"#
        );
        let r = submit_raw(&server, body).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (400, "INEXACT_NUMBER"),
            "{n}"
        );
        let v = r.json();
        let errors = v["error"]["details"]["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{v}");
        assert_eq!(errors[0]["pointer"], "/payload/amounts/1/total", "{v}");
        let message = errors[0]["message"].as_str().unwrap();
        assert!(message.starts_with(n), "{v}");
    }
    assert_eq!(server.store.job_count(), 0);
    assert!(server.outbox(None).await.is_empty());
    // 0.1 is its double's shortest spelling: it is held, and shown, as 0.1.
    let r = submit_raw(
        &server,
        r#"{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"small","payload":{"p":0.1}}"#
            .to_owned(),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let job = r.json()["jobId"].as_str().unwrap().to_owned();
    let view = server.get(&format!("/v1/jobs/{job}")).await.json();
    assert_eq!(view["payload"], json!({"p": 0.1}));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn admin_routes_are_hidden_when_disabled() {
    let server = Server::start(HttpConfig {
        admin_enabled: false,
        admin_api_key: Some(ADMIN_KEY.into()),
        ..HttpConfig::default()
    })
    .await;
    for (m, p) in [
        (Method::GET, "/v1/admin/outbox"),
        (Method::POST, "/v1/admin/outbox/retry"),
        (Method::POST, "/v1/admin/outbox/x.0.1/retry"),
        (Method::DELETE, "/v1/admin/outbox"),
    ] {
        let r = server.send(m, p, &[AK], Bytes::new()).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (404, "NOT_FOUND"),
            "{p}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn admin_without_a_configured_key_refuses_everyone() {
    let server = Server::start(HttpConfig {
        admin_enabled: true,
        admin_api_key: None,
        ..HttpConfig::default()
    })
    .await;
    let r = server
        .send(
            Method::GET,
            "/v1/admin/outbox",
            &[("x-api-key", b"")],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (401, "UNAUTHORIZED")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_default_limit_is_one_mebibyte() {
    let server = Server::start(HttpConfig::default()).await;
    let big = format!(
        r#"{{"requestType":"demo.echo","tenantId":"t1","idempotencyKey":"big","payload":"{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let r = server
        .send(Method::POST, "/v1/commands", &[JSON], big)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (413, "PAYLOAD_TOO_LARGE")
    );
    assert_eq!(server.store.job_count(), 0);
    server.stop().await.unwrap();
}

/// A chunked body declares no length: the limit is enforced while reading.
#[tokio::test]
async fn chunked_oversize_bodies_are_cut_off_while_reading() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(HttpConfig {
        max_body_bytes: 2048,
        ..HttpConfig::default()
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = "x".repeat(1000);
    for _ in 0..5 {
        let frame = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        if s.write_all(frame.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("PAYLOAD_TOO_LARGE"), "{text}");
    assert_eq!(server.store.job_count(), 0);
    server.stop().await.unwrap();
}

/// Garbage on the socket is answered (or dropped) by hyper; the server keeps serving.
#[tokio::test]
async fn garbage_requests_do_not_hurt_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(HttpConfig::default()).await;
    for garbage in [
        &b"\x00\x01\x02\x03\r\n\r\n"[..],
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/commands HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let _ = s.write_all(garbage).await;
        let mut buf = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    let r = server.get("/healthz").await;
    assert_eq!(r.status, 200);
    server.stop().await.unwrap();
}
