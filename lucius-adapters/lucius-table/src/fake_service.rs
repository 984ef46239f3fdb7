//! A scripted table service for unit tests: the SDK pipeline's transport replaced by a
//! policy that records each request (method and URL, exactly as it would go on the wire)
//! and answers from a script. No network; with tokio's paused clock a hanging answer costs
//! no real time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::headers::{self, Headers};
use azure_core::{Context, Policy, PolicyResult, Request, Response, StatusCode, TransportOptions};
use azure_data_tables::clients::TableServiceClientBuilder;

use crate::client::{pipeline_options, Client};
use crate::config::RetryPolicy;

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// This status, an `x-ms-error-code` header when given, and this body.
    Reply {
        status: u16,
        code: Option<&'static str>,
        body: String,
    },
    /// A write accepted: `204` with the headers the SDK requires of an insert, update or
    /// upsert answer (ETag, request id, version, date, server, `return-no-content`).
    Written,
    /// No answer for an hour (the client's timeout fires first).
    Hang,
}

impl Answer {
    /// A refusal as the service words it: `odata.error` with code and message.
    pub(crate) fn refusal(status: u16, code: &'static str, message: &str) -> Answer {
        Answer::Reply {
            status,
            code: Some(code),
            body: serde_json::json!({"odata.error": {
                "code": code,
                "message": {"lang": "en-US", "value": format!("{message}\nRequestId:r\nTime:t")}
            }})
            .to_string(),
        }
    }
}

/// The service: answers from the script, then `otherwise` forever.
#[derive(Debug)]
pub(crate) struct FakeService {
    script: Mutex<VecDeque<Answer>>,
    otherwise: Answer,
    seen: Mutex<Vec<(String, String)>>,
}

impl FakeService {
    pub(crate) fn new(script: Vec<Answer>, otherwise: Answer) -> Arc<FakeService> {
        Arc::new(FakeService {
            script: Mutex::new(script.into()),
            otherwise,
            seen: Mutex::default(),
        })
    }

    /// `(method, url)` of every request so far.
    pub(crate) fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().expect("no test panics holding it").clone()
    }

    /// A client on this service (Azurite's account and address, never contacted).
    pub(crate) fn client(self: &Arc<FakeService>, retry: RetryPolicy) -> Client {
        let options =
            pipeline_options(&retry).transport(TransportOptions::new_custom_policy(self.clone()));
        let service = TableServiceClientBuilder::emulator()
            .client_options(options)
            .build();
        Client::new(service, retry)
    }
}

#[async_trait::async_trait]
impl Policy for FakeService {
    async fn send(
        &self,
        _ctx: &Context,
        request: &mut Request,
        _next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        self.seen
            .lock()
            .expect("no test panics holding it")
            .push((request.method().to_string(), request.url().to_string()));
        let answer = self
            .script
            .lock()
            .expect("no test panics holding it")
            .pop_front()
            .unwrap_or_else(|| self.otherwise.clone());
        match answer {
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Err(azure_core::Error::message(
                    azure_core::error::ErrorKind::Io,
                    "the fake service hung for an hour",
                ))
            }
            Answer::Written => {
                let mut h = Headers::new();
                for (name, value) in [
                    ("etag", "W/\"datetime'2024-03-05T00%3A00%3A00.0000000Z'\""),
                    ("x-ms-request-id", "00000000-0000-0000-0000-000000000000"),
                    ("x-ms-version", "2019-02-02"),
                    ("date", "Tue, 05 Mar 2024 00:00:00 GMT"),
                    ("server", "fake"),
                    ("preference-applied", "return-no-content"),
                ] {
                    h.insert(headers::HeaderName::from_static(name), value);
                }
                let stream = futures::stream::once(async { Ok(bytes::Bytes::new()) });
                Ok(Response::new(StatusCode::NoContent, h, Box::pin(stream)))
            }
            Answer::Reply { status, code, body } => {
                let mut h = Headers::new();
                h.insert(
                    headers::CONTENT_TYPE,
                    "application/json;odata=minimalmetadata",
                );
                if let Some(c) = code {
                    h.insert(headers::ERROR_CODE, c);
                }
                let status = StatusCode::try_from(status).expect("scripts use real statuses");
                let body = bytes::Bytes::from(body);
                let stream = futures::stream::once(async move { Ok(body) });
                Ok(Response::new(status, h, Box::pin(stream)))
            }
        }
    }
}
