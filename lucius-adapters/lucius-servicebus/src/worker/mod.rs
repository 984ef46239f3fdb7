//! The worker-side receiver: [`Worker`] receives directives with peek-lock from a queue or
//! subscription, reports `ack`, `heartbeat`, `complete` and `fail` to the orchestrator's
//! HTTP API around a user handler, and settles each message accordingly.
//!
//! ```text
//!  receive (peek-lock) ─▶ parse ─▶ ack ─▶ handler ∥ every lease/3: heartbeat + renew lock
//!                                   │        │
//!        404/409 ─▶ delete ◀────────┘        ├─ Ok(result)  ─▶ complete ─┐
//!     unreachable ─▶ unlock                  └─ Err(Failure) ─▶ fail ────┤
//!                                                      2xx/404/409 ─▶ delete message
//!                                                      unreachable ─▶ unlock message
//! ```
//!
//! The message is deleted once the orchestrator knows the outcome (a retry is a new
//! directive, so the old message must not come back) or the directive is obsolete; it is
//! unlocked for redelivery when the orchestrator cannot be reached or the body is not a
//! directive (the broker dead-letters it after the entity's max delivery count).

mod api;
mod receiver;
mod source;

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

pub use api::{Answer, Call, Orchestrator, MAX_ERROR_CHARS};
pub use lucius_core::Failure;
pub use receiver::{Delivery, Receiver, Source};
pub use source::ServiceBusSource;

use lucius_core::{Directive, DIRECTIVE_SCHEMA_VERSION};
use serde_json::Value;
use url::Url;

use crate::connection::ConnectionString;
use crate::publisher::ConfigError;
use crate::transport;

/// What a [`Worker`] needs.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The Service Bus connection string (as for the publisher).
    pub connection: String,
    /// Where to receive from.
    pub source: Source,
    /// The orchestrator's base URL, e.g. `http://localhost:8000`.
    pub orchestrator_url: String,
    /// This worker's id, sent as `workerId`.
    pub worker_id: String,
    /// The `X-Worker-Key`, when the orchestrator requires one.
    pub worker_key: Option<String>,
    /// Bound on each HTTP request (default 10 s).
    pub request_timeout: Duration,
    /// How long one receive waits for a message (default 30 s; whole seconds).
    pub receive_wait: Duration,
    /// Heartbeat (and lock renewal) period; default a third of the directive's lease.
    pub heartbeat_interval: Option<Duration>,
    /// Tries of a `complete` or `fail` call the orchestrator did not answer (default 3).
    pub report_attempts: u32,
    /// Pause after an empty receive (default 100 ms; the long poll does the waiting).
    pub idle_pause: Duration,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("source", &self.source)
            .field("orchestrator_url", &self.orchestrator_url)
            .field("worker_id", &self.worker_id)
            .field("request_timeout", &self.request_timeout)
            .field("receive_wait", &self.receive_wait)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .finish_non_exhaustive()
    }
}

impl WorkerConfig {
    /// A configuration with the defaults.
    pub fn new(
        connection: impl Into<String>,
        source: Source,
        orchestrator_url: impl Into<String>,
        worker_id: impl Into<String>,
    ) -> WorkerConfig {
        WorkerConfig {
            connection: connection.into(),
            source,
            orchestrator_url: orchestrator_url.into(),
            worker_id: worker_id.into(),
            worker_key: None,
            request_timeout: Duration::from_secs(10),
            receive_wait: Duration::from_secs(30),
            heartbeat_interval: None,
            report_attempts: 3,
            idle_pause: Duration::from_millis(100),
        }
    }
}

/// Why a worker could not start or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The connection string or a timeout is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The worker id is not 1 to 128 characters.
    #[error("the worker id {worker_id:?} is not usable: expected 1 to 128 characters")]
    BadWorkerId {
        /// The id.
        worker_id: String,
    },
    /// The orchestrator URL is not usable.
    #[error("the orchestrator URL {url:?} is not usable: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What was expected.
        reason: String,
    },
    /// A Service Bus call failed.
    #[error("Service Bus: {message}")]
    Broker {
        /// Whether retrying cannot help (credentials, missing entity).
        permanent: bool,
        /// What failed.
        message: String,
    },
    /// An orchestrator call failed.
    #[error("orchestrator: {message}")]
    Orchestrator {
        /// Whether retrying cannot help (refused key, malformed call).
        permanent: bool,
        /// What failed.
        message: String,
    },
}

impl WorkerError {
    /// Whether retrying cannot help: [`Worker::run`] stops on such an error.
    pub fn is_permanent(&self) -> bool {
        match self {
            WorkerError::Config(_)
            | WorkerError::BadUrl { .. }
            | WorkerError::BadWorkerId { .. } => true,
            WorkerError::Broker { permanent, .. } | WorkerError::Orchestrator { permanent, .. } => {
                *permanent
            }
        }
    }
}

/// What became of one receive.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handled {
    /// No message came.
    Empty,
    /// The handler succeeded, `complete` was accepted, the message deleted.
    Completed {
        /// The directive.
        directive_id: String,
    },
    /// The handler failed (or its result was refused), `fail` was accepted, the message
    /// deleted.
    Failed {
        /// The directive.
        directive_id: String,
        /// Whether the failure was reported retryable.
        retryable: bool,
    },
    /// The orchestrator answered `404`/`409` (unknown, stale, taken, finished or
    /// cancelled): the message was deleted; the handler was not run, or was stopped.
    Obsolete {
        /// The directive.
        directive_id: String,
        /// The status.
        status: u16,
        /// The orchestrator's reason.
        message: String,
    },
    /// The orchestrator could not be reached: the message was unlocked for redelivery.
    Abandoned {
        /// The directive.
        directive_id: String,
        /// Why.
        reason: String,
    },
    /// The body is not a directive this worker understands: the message was unlocked (the
    /// broker dead-letters it after the entity's max delivery count).
    Unreadable {
        /// The message id, if any.
        message_id: Option<String>,
        /// Why.
        reason: String,
    },
}

/// Receives directives and runs a handler on each. See the module docs for the flow.
#[derive(Debug, Clone)]
pub struct Worker {
    receiver: Receiver,
    api: Orchestrator,
    receive_wait: Duration,
    heartbeat_interval: Option<Duration>,
    report_attempts: u32,
    idle_pause: Duration,
}

impl Worker {
    /// A worker for this configuration (nothing is contacted yet).
    pub fn new(config: WorkerConfig) -> Result<Worker, WorkerError> {
        if config.request_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout.into());
        }
        if !(1..=128).contains(&config.worker_id.chars().count()) {
            return Err(WorkerError::BadWorkerId {
                worker_id: config.worker_id.chars().take(140).collect(),
            });
        }
        let conn = ConnectionString::parse(&config.connection).map_err(ConfigError::from)?;
        let base = Url::parse(&config.orchestrator_url).map_err(|e| WorkerError::BadUrl {
            url: config.orchestrator_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(WorkerError::BadUrl {
                url: config.orchestrator_url,
                reason: "expected an http:// or https:// URL".into(),
            });
        }
        let receiver = Receiver::new(
            &conn,
            transport::client_for(&conn),
            config.source,
            config.request_timeout,
        )?;
        let api = Orchestrator::new(
            base,
            azure_core::new_http_client(),
            config.worker_id,
            config.worker_key,
            config.request_timeout,
        );
        Ok(Worker {
            receiver,
            api,
            receive_wait: config.receive_wait,
            heartbeat_interval: config.heartbeat_interval,
            report_attempts: config.report_attempts.max(1),
            idle_pause: config.idle_pause,
        })
    }

    /// The orchestrator client.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.api
    }

    /// Receives and handles messages until `shutdown` completes (a message being handled
    /// is finished first), one at a time, on the runtime's [`lucius_runtime::Worker`] over
    /// a [`ServiceBusSource`]: heartbeats and lock renewals while the handler runs, backoff
    /// while the orchestrator is unreachable. A permanent error (refused key or signature,
    /// missing entity) stops the worker with that error.
    pub async fn run<H, Fut>(
        &self,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), WorkerError>
    where
        H: Fn(Directive) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, Failure>> + Send + 'static,
    {
        let source = std::sync::Arc::new(ServiceBusSource::of(self.clone()));
        let report = lucius_runtime::Worker::new(source.clone())
            .id(self.api.worker_id())
            .concurrency(1)
            .fallback(move |d, _ctx| {
                let work = handler(d);
                async move {
                    work.await.map_err(|f| lucius_runtime::StepFailure {
                        message: f.error,
                        retryable: f.retryable,
                    })
                }
            })
            .run(shutdown)
            .await;
        if let Some(e) = source.error() {
            return Err(e);
        }
        match report.fatal {
            Some(message) => Err(WorkerError::Orchestrator {
                permanent: true,
                message,
            }),
            None => Ok(()),
        }
    }

    /// Receives one message (waiting up to the receive wait) and handles it.
    pub async fn run_once<H, Fut>(&self, handler: &H) -> Result<Handled, WorkerError>
    where
        H: Fn(Directive) -> Fut,
        Fut: Future<Output = Result<Value, Failure>>,
    {
        match self.receiver.receive(self.receive_wait).await? {
            Some(delivery) => self.handle(delivery, handler).await,
            None => Ok(Handled::Empty),
        }
    }

    /// Handles one received message: ack, handler with heartbeats, complete or fail, and
    /// the message settled. Errors are returned only after the message was unlocked.
    pub async fn handle<H, Fut>(
        &self,
        delivery: Delivery,
        handler: &H,
    ) -> Result<Handled, WorkerError>
    where
        H: Fn(Directive) -> Fut,
        Fut: Future<Output = Result<Value, Failure>>,
    {
        let d = match parse(delivery.body()) {
            Ok(d) => d,
            Err(reason) => {
                tracing::warn!(message_id = ?delivery.message_id(), %reason, "unreadable message; unlocking it");
                settle(&delivery, false).await;
                return Ok(Handled::Unreadable {
                    message_id: delivery.message_id().map(str::to_owned),
                    reason,
                });
            }
        };
        let id = d.directive_id.to_string();
        match self.api.ack(&d).await {
            Ok(Answer::Accepted) => {}
            Ok(Answer::Obsolete { status, message }) => {
                settle(&delivery, true).await;
                return Ok(Handled::Obsolete {
                    directive_id: id,
                    status,
                    message,
                });
            }
            Err(e) => return abandon(&delivery, id, e).await,
        }

        let outcome = match race(handler(d.clone()), self.keep_alive(&d, &delivery)).await {
            Either::Left(outcome) => outcome,
            Either::Right((status, message)) => {
                tracing::info!(directive = %id, status, %message, "lease lost; handler stopped");
                settle(&delivery, true).await;
                return Ok(Handled::Obsolete {
                    directive_id: id,
                    status,
                    message,
                });
            }
        };

        let mut failure = outcome.as_ref().err().cloned();
        let mut answer = self.report(&d, &outcome).await;
        if let (Ok(_), Err(e)) = (&outcome, &answer) {
            if e.is_permanent() {
                // The orchestrator refused the result itself (too large, malformed): the
                // step cannot succeed with it, so say so rather than redeliver forever.
                let f = Failure {
                    error: format!("the orchestrator refused the result: {e}"),
                    retryable: false,
                };
                answer = self.report(&d, &Err(f.clone())).await;
                failure = Some(f);
            }
        }
        match answer {
            Ok(Answer::Accepted) => {
                settle(&delivery, true).await;
                Ok(match failure {
                    None => Handled::Completed { directive_id: id },
                    Some(f) => Handled::Failed {
                        directive_id: id,
                        retryable: f.retryable,
                    },
                })
            }
            Ok(Answer::Obsolete { status, message }) => {
                settle(&delivery, true).await;
                Ok(Handled::Obsolete {
                    directive_id: id,
                    status,
                    message,
                })
            }
            Err(e) => abandon(&delivery, id, e).await,
        }
    }

    /// `complete` or `fail`, retried while the orchestrator is unreachable.
    async fn report(
        &self,
        d: &Directive,
        outcome: &Result<Value, Failure>,
    ) -> Result<Answer, WorkerError> {
        let mut attempt = 0;
        loop {
            let r = match outcome {
                Ok(v) => self.api.complete(d, v).await,
                Err(f) => self.api.fail(d, f).await,
            };
            attempt += 1;
            match r {
                Err(e) if !e.is_permanent() && attempt < self.report_attempts => {
                    tracing::warn!(directive = %d.directive_id, error = %e, "report failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Heartbeats and renews the message lock until the orchestrator says the directive
    /// is obsolete; returns its status and reason then (never otherwise).
    async fn keep_alive(&self, d: &Directive, delivery: &Delivery) -> (u16, String) {
        let every = self
            .heartbeat_interval
            .unwrap_or(Duration::from_millis(d.lease_duration_ms / 3))
            .max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = delivery.renew().await {
                tracing::warn!(directive = %d.directive_id, error = %e, "lock renewal failed");
            }
            match self.api.heartbeat(d).await {
                Ok(Answer::Accepted) => {}
                Ok(Answer::Obsolete { status, message }) => return (status, message),
                Err(e) => {
                    tracing::warn!(directive = %d.directive_id, error = %e, "heartbeat failed")
                }
            }
        }
    }
}

/// Doubles the pause after a failure, from 200 ms up to 30 s.
fn next_backoff(last: Duration) -> Duration {
    (last * 2).clamp(Duration::from_millis(200), Duration::from_secs(30))
}

/// The directive in a body, or why there is none this worker understands.
fn parse(body: &str) -> Result<Directive, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("schemaVersion").and_then(Value::as_u64) {
        Some(n) if n == u64::from(DIRECTIVE_SCHEMA_VERSION) => {}
        Some(n) => return Err(format!("directive schemaVersion {n} is not supported (this worker knows {DIRECTIVE_SCHEMA_VERSION})")),
        None => return Err("not a directive: no schemaVersion".into()),
    }
    serde_json::from_value(v).map_err(|e| format!("not a directive: {e}"))
}

/// Deletes (`done`) or unlocks the message; a failure is only logged (a message that
/// stays locked comes back when its lock expires, and the orchestrator answers `409`).
async fn settle(delivery: &Delivery, done: bool) {
    let r = if done {
        delivery.complete().await
    } else {
        delivery.abandon().await
    };
    if let Err(e) = r {
        tracing::warn!(message_id = ?delivery.message_id(), error = %e, "settling the message failed");
    }
}

async fn abandon(delivery: &Delivery, id: String, e: WorkerError) -> Result<Handled, WorkerError> {
    settle(delivery, false).await;
    if e.is_permanent() {
        return Err(e);
    }
    Ok(Handled::Abandoned {
        directive_id: id,
        reason: e.to_string(),
    })
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls `a` first, then `b`; the first to finish wins.
async fn race<A, B>(a: impl Future<Output = A>, b: impl Future<Output = B>) -> Either<A, B> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        assert_eq!(next_backoff(Duration::ZERO), Duration::from_millis(200));
        assert_eq!(
            next_backoff(Duration::from_millis(200)),
            Duration::from_millis(400)
        );
        assert_eq!(
            next_backoff(Duration::from_secs(20)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn only_version_1_directives_are_read() {
        assert!(parse("nope").unwrap_err().contains("not JSON"));
        assert!(parse("{}").unwrap_err().contains("no schemaVersion"));
        assert!(parse(r#"{"schemaVersion": 2}"#)
            .unwrap_err()
            .contains("not supported"));
        assert!(parse(r#"{"schemaVersion": 1}"#)
            .unwrap_err()
            .contains("not a directive"));
    }

    #[test]
    fn bad_configuration_is_refused() {
        let conn = "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=s";
        let cfg = |url: &str| WorkerConfig::new(conn, Source::Queue("q".into()), url, "w");
        assert!(matches!(
            Worker::new(cfg("not a url")),
            Err(WorkerError::BadUrl { .. })
        ));
        assert!(matches!(
            Worker::new(cfg("mailto:x@y")),
            Err(WorkerError::BadUrl { .. })
        ));
        assert!(matches!(
            Worker::new(WorkerConfig::new(
                "x",
                Source::Queue("q".into()),
                "http://h",
                "w"
            )),
            Err(WorkerError::Config(_))
        ));
        assert!(Worker::new(cfg("http://127.0.0.1:8000")).is_ok());
        for id in [String::new(), "w".repeat(129)] {
            let mut c = cfg("http://h");
            c.worker_id = id;
            assert!(matches!(
                Worker::new(c),
                Err(WorkerError::BadWorkerId { .. })
            ));
        }
        let mut c = cfg("http://h");
        c.request_timeout = Duration::ZERO;
        assert!(Worker::new(c).unwrap_err().is_permanent());
    }
}
