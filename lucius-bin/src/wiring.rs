//! Builds the [`Lucius`] handle the settings describe: protocols, store and lease store,
//! publisher, engine settings, and the loops the binary runs.

use std::sync::Arc;

use anyhow::Context as _;
use lucius_core::memory::MemoryStore;
use lucius_core::{LeaseStore, ProtocolRegistry, Store};
use lucius_embedded::EmbeddedStore;
use lucius_runtime::Lucius;
use lucius_servicebus::ServiceBusPublisher;
use lucius_table::{Mode, TableConfig, TableStore};

use crate::config::{Settings, StorageBackend};

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

/// Opens the store `LUCIUS_STORAGE_BACKEND` names, with its lease store.
pub async fn store(settings: &Settings) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn LeaseStore>)> {
    match settings.storage {
        StorageBackend::Memory => {
            let m = MemoryStore::new();
            Ok((Arc::new(m.clone()), Arc::new(m)))
        }
        StorageBackend::Embedded => {
            let e = embedded(settings)?;
            Ok((Arc::new(e.clone()), Arc::new(e)))
        }
        StorageBackend::Table | StorageBackend::Ledger => {
            let mode = if settings.storage == StorageBackend::Table {
                Mode::Table
            } else {
                Mode::Ledger
            };
            let conn = settings.table_connection.as_deref().unwrap_or_default();
            let mut config = TableConfig::new(mode).with_names_from(|k| std::env::var(k).ok());
            config.retry = settings.table_retry;
            let table = TableStore::connect(conn, config)
                .await
                .map_err(|e| anyhow::anyhow!("LUCIUS_TABLE_CONNECTION: {e}"))?;
            Ok((Arc::new(table.clone()), Arc::new(table)))
        }
    }
}

/// Opens the embedded store in `LUCIUS_DATA_DIR` (created if absent). Errors name the
/// variable and say why: not creatable or writable, locked by another process, written
/// by a newer Lucius.
pub fn embedded(settings: &Settings) -> anyhow::Result<EmbeddedStore> {
    let store = EmbeddedStore::open(&settings.data_dir)
        .map_err(|e| anyhow::anyhow!("LUCIUS_DATA_DIR: {e}"))?;
    tracing::info!(
        data_dir = %store.dir().display(),
        database = %store.database_path().display(),
        "embedded store open"
    );
    Ok(store)
}

/// Builds the handle. With `LUCIUS_SERVICEBUS_CONNECTION`, directives are published to
/// Service Bus; without it the node runs in pull mode: workers take directives with
/// `POST /v1/workers/poll` (or, with `demo_worker`, the in-process source of
/// [`crate::demo::run`]), claimed from the store's outbox.
pub async fn build(
    settings: &Settings,
    runtime: lucius_runtime::Settings,
    demo_worker: bool,
) -> anyhow::Result<Lucius> {
    let protocols = protocols(settings)?;
    let (store, leases) = store(settings).await?;
    let mut builder = Lucius::builder()
        .store_arc(store)
        .leases_arc(leases)
        .protocols(protocols)
        .engine_config(settings.engine.clone())
        .settings(runtime);
    match &settings.servicebus_connection {
        Some(_) if demo_worker => anyhow::bail!(
            "--demo-worker pulls its directives, which a node with a bus does not hand out; unset LUCIUS_SERVICEBUS_CONNECTION"
        ),
        Some(conn) => {
            let p = ServiceBusPublisher::new(conn, settings.engine.publish_timeout.to_std())
                .map_err(|e| anyhow::anyhow!("LUCIUS_SERVICEBUS_CONNECTION: {e}"))?;
            builder = builder.publisher(p);
        }
        // No publisher: pull mode.
        None => {}
    }
    Ok(builder.build()?)
}
