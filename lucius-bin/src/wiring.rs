//! Builds the engine the settings describe: protocols, store, publisher, clock.

use std::sync::Arc;

use anyhow::Context as _;
use lucius_core::memory::{MemoryPublisher, MemoryStore};
use lucius_core::{Directive, Engine, ProtocolRegistry, Publisher, Store};
use tokio::sync::mpsc;

use crate::clock::SystemClock;
use crate::config::{Settings, StorageBackend};

/// An engine and, with the demo worker, the directives it publishes.
pub struct Wired {
    /// The engine.
    pub engine: Engine,
    /// Directives for the in-process demo worker (memory publisher only).
    pub demo_directives: Option<mpsc::UnboundedReceiver<Directive>>,
}

/// Loads the protocols: `LUCIUS_PROTOCOLS_FILE`, or the built-in demo set.
pub fn protocols(settings: &Settings) -> anyhow::Result<ProtocolRegistry> {
    match &settings.protocols_file {
        None => Ok(ProtocolRegistry::demo()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("LUCIUS_PROTOCOLS_FILE: cannot read {path}"))?;
            ProtocolRegistry::from_json(&text)
                .with_context(|| format!("LUCIUS_PROTOCOLS_FILE: {path}"))
        }
    }
}

/// Opens the store `LUCIUS_STORAGE_BACKEND` names.
pub async fn store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match settings.storage {
        StorageBackend::Memory => Ok(Arc::new(MemoryStore::new())),
        StorageBackend::Table | StorageBackend::Ledger => {
            anyhow::bail!("LUCIUS_STORAGE_BACKEND: the Table Storage backend is not built into this binary yet")
        }
    }
}

/// Builds the engine. `demo_worker` routes directives to an in-process worker.
pub async fn build(settings: &Settings, demo_worker: bool) -> anyhow::Result<Wired> {
    let protocols = protocols(settings)?;
    let store = store(settings).await?;
    let (publisher, demo_directives): (Arc<dyn Publisher>, _) = match &settings.servicebus_connection {
        Some(_) if demo_worker => {
            anyhow::bail!("--demo-worker needs the in-memory publisher; unset LUCIUS_SERVICEBUS_CONNECTION")
        }
        Some(_) => anyhow::bail!("LUCIUS_SERVICEBUS_CONNECTION: the Service Bus publisher is not built into this binary yet"),
        None if demo_worker => {
            let (tx, rx) = mpsc::unbounded_channel();
            let p = MemoryPublisher::with_listener(move |d| {
                let _ = tx.send(d.clone());
            });
            (Arc::new(p), Some(rx))
        }
        None => (Arc::new(MemoryPublisher::noop()), None),
    };
    let engine = Engine::new(store, publisher, Arc::new(SystemClock))
        .with_protocols(protocols)
        .with_config(settings.engine.clone());
    Ok(Wired {
        engine,
        demo_directives,
    })
}
