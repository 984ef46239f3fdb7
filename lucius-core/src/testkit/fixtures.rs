//! Fixtures: validated commands and new jobs built the way intake builds them.

use async_trait::async_trait;
use serde_json::json;

use crate::directive::Directive;
use crate::engine::build_new_job;
use crate::ports::{PublishError, Publisher};
use crate::protocol::ProtocolRegistry;
use crate::record::NewJob;
use crate::time::Timestamp;
use crate::validation::{validate_value, ValidatedCommand};

/// A valid `document.process` command of the demo protocols for `tenant` and `key`;
/// `variant` changes the payload (so the request hash) without changing the key.
pub fn command(tenant: &str, key: &str, variant: u32) -> ValidatedCommand {
    command_with_correlation(tenant, key, variant, &format!("corr-{key}"))
}

/// [`command`] with another correlation id (which the request hash leaves out).
fn command_with_correlation(
    tenant: &str,
    key: &str,
    variant: u32,
    correlation: &str,
) -> ValidatedCommand {
    let body = json!({
        "requestType": "document.process",
        "tenantId": tenant,
        "idempotencyKey": key,
        "correlationId": correlation,
        "payload": {"documentUrl": format!("https://example.test/doc-{variant}.pdf"), "language": "en"},
        "steps": {"ocr": {"dpi": 300}, "embed": {"model": "mini-ü-模型"}}
    });
    // The body above satisfies the demo protocol's schemas (checked by the crate's tests).
    validate_value(&ProtocolRegistry::demo(), body, None).expect("fixture command is valid")
}

/// The rows intake writes for [`command`] at `now`.
pub fn new_job(tenant: &str, key: &str, variant: u32, now: Timestamp) -> NewJob {
    build_new_job(&command(tenant, key, variant), now)
}

/// The rows intake writes at `now` for [`command`] sent with another correlation id: the
/// same request (same hash) as [`new_job`]'s, as a client's retry may send it.
pub(crate) fn new_job_with_correlation(
    tenant: &str,
    key: &str,
    variant: u32,
    correlation: &str,
    now: Timestamp,
) -> NewJob {
    build_new_job(
        &command_with_correlation(tenant, key, variant, correlation),
        now,
    )
}

/// A publisher whose publications never complete (to exercise the publish timeout).
#[derive(Debug, Clone, Copy, Default)]
pub struct HangingPublisher;

#[async_trait]
impl Publisher for HangingPublisher {
    async fn publish(&self, _directive: &Directive) -> Result<(), PublishError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}
