//! `POST /v1/workers/poll`: workers without a bus pull directives over HTTP.

mod common;

use std::time::{Duration, Instant};

use common::{command, keyed_config, Server, WORKER_KEY};
use hyper::{Method, StatusCode};
use lucius_core::{JobStatus, Millis, OutboxStatus, StepStatus};
use serde_json::json;

#[tokio::test]
async fn a_worker_pulls_acks_and_completes_every_step_over_http() {
    let s = Server::start_pull(keyed_config()).await;
    let job = s.submit("k1").await;
    let mut steps = Vec::new();
    for _ in 0..3 {
        let r = s
            .poll(&json!({"workerId": "py-1", "max": 5, "waitSeconds": 5}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let v = r.json();
        let ds = v["directives"].as_array().unwrap();
        assert_eq!(ds.len(), 1, "{v}");
        let d = &ds[0];
        assert_eq!(d["jobId"], job.as_str());
        assert_eq!(d["schemaVersion"], 1);
        let step = d["stepId"].as_str().unwrap().to_owned();
        let attempt = d["attempt"].clone();
        assert_eq!(
            d["directiveId"],
            format!("{job}.{}.{attempt}", d["stepIndex"])
        );
        assert!(d["topic"].is_string() && d["ackTimeoutMs"].is_u64());
        let body = json!({"attempt": attempt, "workerId": "py-1"});
        assert_eq!(
            s.worker(&job, &step, "ack", &body).await.status,
            StatusCode::OK
        );
        assert_eq!(
            s.worker(&job, &step, "heartbeat", &body).await.status,
            StatusCode::OK
        );
        let done = json!({"attempt": attempt, "workerId": "py-1", "result": {"step": step}});
        assert_eq!(
            s.worker(&job, &step, "complete", &done).await.status,
            StatusCode::OK
        );
        steps.push(step);
    }
    assert_eq!(steps, ["ocr", "embed", "index"]);
    let rec = s.job(&job).await;
    assert_eq!(rec.job.status, JobStatus::Succeeded);
    assert!(rec.outbox.iter().all(|e| e.status == OutboxStatus::Sent));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_waiting_poll_answers_as_soon_as_a_command_is_accepted() {
    let s = std::sync::Arc::new(Server::start_pull(keyed_config()).await);
    let started = Instant::now();
    let poll = tokio::spawn({
        let s = s.clone();
        async move { s.poll(&json!({"waitSeconds": 30})).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = s.submit("k1").await;
    let r = poll.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["directives"][0]["jobId"], job.as_str());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_poll_with_nothing_due_answers_an_empty_list_when_its_wait_runs_out() {
    let s = Server::start_pull(keyed_config()).await;
    let started = Instant::now();
    let r = s.poll(&json!({"waitSeconds": 0.3})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"directives": []}));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // An empty body takes the defaults (one directive, any topic).
    s.submit("k1").await;
    let r = s
        .send(
            Method::POST,
            "/v1/workers/poll",
            &[("x-worker-key", WORKER_KEY.as_bytes())],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["directives"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn topics_and_steps_filter_what_a_worker_gets() {
    let s = Server::start_pull(keyed_config()).await;
    let job = s.submit("k1").await;
    let topic = s.job(&job).await.outbox[0].directive.topic.to_string();
    for body in [
        json!({"steps": ["embed"], "waitSeconds": 0}),
        json!({"topics": ["lucius.nothing"], "waitSeconds": 0}),
        json!({"topics": [topic], "steps": ["index"], "waitSeconds": 0}),
    ] {
        let r = s.poll(&body).await;
        assert_eq!(r.json(), json!({"directives": []}), "{body}");
    }
    let r = s
        .poll(&json!({"topics": [topic, topic], "steps": ["ocr"], "waitSeconds": 0}))
        .await;
    assert_eq!(r.json()["directives"][0]["stepId"], "ocr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_polls_never_hand_out_one_directive_twice() {
    let s = std::sync::Arc::new(Server::start_pull(keyed_config()).await);
    for i in 0..10 {
        s.submit(&format!("k{i}")).await;
    }
    let polls: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.poll(&json!({"max": 3, "waitSeconds": 0.5})).await })
        })
        .collect();
    let mut ids = Vec::new();
    for p in polls {
        let r = p.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        for d in r.json()["directives"].as_array().unwrap() {
            ids.push(d["directiveId"].as_str().unwrap().to_owned());
        }
    }
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(n, ids.len(), "a directive was handed out twice");
    assert_eq!(n, 10);
}

#[tokio::test]
async fn a_directive_never_acknowledged_is_handed_out_again_after_its_ack_deadline() {
    let s = Server::start_pull(keyed_config()).await;
    let job = s.submit("k1").await;
    let first = s.poll(&json!({"waitSeconds": 0})).await.json();
    assert_eq!(first["directives"][0]["attempt"], 1);
    // Held by the first poller while its ACK deadline runs.
    assert_eq!(
        s.poll(&json!({"waitSeconds": 0})).await.json(),
        json!({"directives": []})
    );
    let deadline = s.job(&job).await.steps[0].ack_deadline.unwrap();
    s.clock.set(deadline.plus(Millis(1)));
    let swept = s.engine.sweep_all().await.unwrap();
    assert_eq!(swept.value.retried, 1);
    let again = s.poll(&json!({"waitSeconds": 0})).await.json();
    assert_eq!(again["directives"][0]["attempt"], 2);
    assert_eq!(again["directives"][0]["jobId"], job.as_str());
}

#[tokio::test]
async fn bad_polls_are_refused_with_structured_errors_and_change_nothing() {
    let s = Server::start_pull(keyed_config()).await;
    let job = s.submit("k1").await;
    for (body, field) in [
        (json!({"max": 0}), "/max"),
        (json!({"max": 101}), "/max"),
        (json!({"max": "3"}), "/max"),
        (json!({"waitSeconds": 61}), "/waitSeconds"),
        (json!({"waitSeconds": -1}), "/waitSeconds"),
        (json!({"topics": "lucius.ocr"}), "/topics"),
        (json!({"topics": [1]}), "/topics/0"),
        (json!({"steps": [""]}), "/steps/0"),
        (json!({"workerId": ""}), "/workerId"),
        (json!({"workerid": "x"}), "/workerid"),
    ] {
        let r = s.poll(&body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(r.code(), "SCHEMA_VIOLATION", "{body}");
        let errors = r.json()["error"]["details"]["errors"].to_string();
        assert!(errors.contains(field), "{body}: {errors}");
    }
    let r = s
        .send(
            Method::POST,
            "/v1/workers/poll",
            &[
                ("x-worker-key", WORKER_KEY.as_bytes()),
                ("content-type", b"application/json"),
            ],
            "{not json",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = s
        .send(
            Method::POST,
            "/v1/workers/poll",
            &[
                ("x-worker-key", WORKER_KEY.as_bytes()),
                ("content-type", b"text/plain"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = s.post("/v1/workers/poll", &json!({})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s
        .post_with(
            "/v1/workers/poll",
            &[("x-worker-key", b"wrong")],
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s.get("/v1/workers/poll").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // None of it handed anything out.
    let rec = s.job(&job).await;
    assert_eq!(rec.outbox[0].status, OutboxStatus::Pending);
    assert_eq!(rec.steps[0].status, StepStatus::Queued);
}

#[tokio::test]
async fn a_node_with_a_bus_refuses_polls() {
    let s = Server::start(keyed_config()).await;
    s.post("/v1/commands", &command("k1")).await;
    let r = s.poll(&json!({"waitSeconds": 0})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "PULL_DISABLED");
}

#[tokio::test]
async fn the_route_is_in_the_openapi_document() {
    let s = Server::start_pull(keyed_config()).await;
    let doc = s.get("/openapi.json").await.json();
    let op = &doc["paths"]["/v1/workers/poll"]["post"];
    assert!(op.is_object(), "{doc}");
    for status in ["200", "401", "409", "422"] {
        assert!(op["responses"][status].is_object(), "{status}");
    }
    let body = &doc["components"]["schemas"]["PollBody"]["properties"];
    for field in ["workerId", "topics", "steps", "max", "waitSeconds"] {
        assert!(body[field].is_object(), "{field}");
    }
}

#[tokio::test]
async fn stopping_the_server_answers_waiting_polls_at_once() {
    let mut s = Server::start_pull(keyed_config()).await;
    let addr = s.addr;
    let poll = tokio::spawn(async move {
        let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<bytes::Bytes>>();
        let req = hyper::Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/v1/workers/poll"))
            .header("content-type", "application/json")
            .header("x-worker-key", WORKER_KEY)
            .body(http_body_util::Full::new(bytes::Bytes::from(
                r#"{"waitSeconds": 60}"#,
            )))
            .unwrap();
        let res = c.request(req).await.unwrap();
        let status = res.status();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, body)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    s.trigger_shutdown();
    let (status, body) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], br#"{"directives":[]}"#);
    s.join().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the drain waited for the poll: {:?}",
        started.elapsed()
    );
}
