//! Routing: a path and method become a [`Route`] (with its path parameters) or a refusal.
//! Paths are matched segment by segment; nothing is decoded, so ids stay as sent.

use hyper::Method;

/// A worker call on a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerOp {
    Ack,
    Heartbeat,
    Complete,
    Fail,
}

impl WorkerOp {
    fn parse(s: &str) -> Option<WorkerOp> {
        match s {
            "ack" => Some(WorkerOp::Ack),
            "heartbeat" => Some(WorkerOp::Heartbeat),
            "complete" => Some(WorkerOp::Complete),
            "fail" => Some(WorkerOp::Fail),
            _ => None,
        }
    }
}

/// A matched route with its raw path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Commands,
    Job(&'a str),
    Worker(&'a str, &'a str, WorkerOp),
    Cancel(&'a str),
    Poll,
    Protocols,
    AdminOutbox,
    AdminRetryMatching,
    AdminRetryOne(&'a str),
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

impl<'a> Route<'a> {
    /// The route a path names, if any.
    pub(crate) fn of(path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix('/')?;
        let segs: Vec<&str> = rest.split('/').collect();
        Some(match segs.as_slice() {
            ["v1", "commands"] => Route::Commands,
            ["v1", "jobs", id] => Route::Job(id),
            ["v1", "jobs", id, "cancel"] => Route::Cancel(id),
            ["v1", "jobs", id, "steps", step, op] => Route::Worker(id, step, WorkerOp::parse(op)?),
            ["v1", "workers", "poll"] => Route::Poll,
            ["v1", "protocols"] => Route::Protocols,
            ["v1", "admin", "outbox"] => Route::AdminOutbox,
            ["v1", "admin", "outbox", "retry"] => Route::AdminRetryMatching,
            ["v1", "admin", "outbox", id, "retry"] => Route::AdminRetryOne(id),
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            ["openapi.json"] => Route::OpenApi,
            _ => return None,
        })
    }

    /// The one method the route answers.
    pub(crate) fn method(&self) -> Method {
        match self {
            Route::Commands
            | Route::Worker(..)
            | Route::Cancel(_)
            | Route::Poll
            | Route::AdminRetryMatching
            | Route::AdminRetryOne(_) => Method::POST,
            _ => Method::GET,
        }
    }

    /// The `Allow` header value of the route.
    pub(crate) fn allow(&self) -> &'static str {
        if self.method() == Method::POST {
            "POST"
        } else {
            "GET"
        }
    }

    /// The route's template, the `route` label of the request metrics.
    pub(crate) fn template(&self) -> &'static str {
        match self {
            Route::Commands => "/v1/commands",
            Route::Job(_) => "/v1/jobs/{jobId}",
            Route::Worker(_, _, WorkerOp::Ack) => "/v1/jobs/{jobId}/steps/{stepId}/ack",
            Route::Worker(_, _, WorkerOp::Heartbeat) => "/v1/jobs/{jobId}/steps/{stepId}/heartbeat",
            Route::Worker(_, _, WorkerOp::Complete) => "/v1/jobs/{jobId}/steps/{stepId}/complete",
            Route::Worker(_, _, WorkerOp::Fail) => "/v1/jobs/{jobId}/steps/{stepId}/fail",
            Route::Cancel(_) => "/v1/jobs/{jobId}/cancel",
            Route::Poll => "/v1/workers/poll",
            Route::Protocols => "/v1/protocols",
            Route::AdminOutbox => "/v1/admin/outbox",
            Route::AdminRetryMatching => "/v1/admin/outbox/retry",
            Route::AdminRetryOne(_) => "/v1/admin/outbox/{outboxId}/retry",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
        }
    }

    /// Whether the route is an admin route.
    pub(crate) fn is_admin(&self) -> bool {
        matches!(
            self,
            Route::AdminOutbox | Route::AdminRetryMatching | Route::AdminRetryOne(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_routes() {
        assert_eq!(Route::of("/v1/commands"), Some(Route::Commands));
        assert_eq!(Route::of("/v1/jobs/abc"), Some(Route::Job("abc")));
        assert_eq!(Route::of("/v1/workers/poll"), Some(Route::Poll));
        assert_eq!(Route::Poll.method(), Method::POST);
        assert_eq!(
            Route::of("/v1/jobs/j/steps/ocr/ack"),
            Some(Route::Worker("j", "ocr", WorkerOp::Ack))
        );
        assert_eq!(
            Route::of("/v1/admin/outbox/retry"),
            Some(Route::AdminRetryMatching)
        );
        assert_eq!(
            Route::of("/v1/admin/outbox/x.0.1/retry"),
            Some(Route::AdminRetryOne("x.0.1"))
        );
        for bad in [
            "",
            "/",
            "/v1",
            "/v1/jobs",
            "/v1/jobs/j/steps/ocr/explode",
            "/v1/commands/",
            "v1/commands",
            "/healthz/x",
        ] {
            assert_eq!(Route::of(bad), None, "{bad}");
        }
    }

    #[test]
    fn methods_and_templates() {
        assert_eq!(Route::Commands.method(), Method::POST);
        assert_eq!(Route::Job("x").method(), Method::GET);
        assert_eq!(Route::Job("x").template(), "/v1/jobs/{jobId}");
        assert!(Route::AdminRetryOne("x").is_admin());
        assert!(!Route::Metrics.is_admin());
    }
}
