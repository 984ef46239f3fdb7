//! Pull mode: a [`crate::Lucius`] built without a publisher hands directives to workers
//! that ask for them ([`crate::Lucius::poll`], the in-process source, and the HTTP
//! route `POST /v1/workers/poll`), claiming each from the store's outbox
//! ([`lucius_core::Engine::claim_due`]). Nothing is queued in memory: what this module
//! holds is only the signal that wakes waiting pollers when a call wrote a directive.

use std::sync::atomic::{AtomicBool, Ordering};

use lucius_core::EngineError;
use tokio::sync::Notify;

/// Why [`crate::Lucius::poll`] handed nothing out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The handle publishes to a bus: workers receive directives from it, not by polling.
    #[error("directives are published to a bus; workers receive them from it, not by polling")]
    Bus,
    /// The store failed while looking for or claiming directives.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Wakes waiting pollers.
#[derive(Debug, Default)]
pub(crate) struct Pull {
    ready: Notify,
    closed: AtomicBool,
}

impl Pull {
    /// Something was written that a poller may take.
    pub(crate) fn wake(&self) {
        self.ready.notify_waiters();
    }

    /// The node is shutting down: waiting pollers return what they have (nothing).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.ready.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.ready.notified()
    }
}
