//! [`MemoryPublisher`]: keeps published directives in memory and optionally hands each to
//! a callback (the all-in-one binary's demo worker listens this way).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::directive::Directive;
use crate::ports::{PublishError, Publisher};

type Listener = Arc<dyn Fn(&Directive) + Send + Sync>;

/// An in-process publisher. It never fails; every directive is recorded.
#[derive(Clone, Default)]
pub struct MemoryPublisher {
    published: Arc<Mutex<Vec<Directive>>>,
    listener: Option<Listener>,
    keep: bool,
}

impl std::fmt::Debug for MemoryPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPublisher").finish_non_exhaustive()
    }
}

impl MemoryPublisher {
    /// A publisher that records every directive (see [`MemoryPublisher::drain`]).
    pub fn new() -> MemoryPublisher {
        MemoryPublisher {
            keep: true,
            ..MemoryPublisher::default()
        }
    }

    /// A publisher that records nothing and calls `listener` for every directive.
    pub fn with_listener(listener: impl Fn(&Directive) + Send + Sync + 'static) -> MemoryPublisher {
        MemoryPublisher {
            listener: Some(Arc::new(listener)),
            keep: false,
            ..MemoryPublisher::default()
        }
    }

    /// A publisher that drops every directive (the seeds' noop publisher).
    pub fn noop() -> MemoryPublisher {
        MemoryPublisher::default()
    }

    /// Takes the directives published so far.
    pub fn drain(&self) -> Vec<Directive> {
        std::mem::take(&mut *self.published.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many directives are held.
    pub fn len(&self) -> usize {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish(&self, directive: &Directive) -> Result<(), PublishError> {
        if let Some(l) = &self.listener {
            l(directive);
        }
        if self.keep {
            self.published
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(directive.clone());
        }
        Ok(())
    }
}
