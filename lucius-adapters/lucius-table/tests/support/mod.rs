//! Shared test support: a store on fresh, uniquely named tables of the Azurite (or account)
//! named by `LUCIUS_TEST_TABLE_CONNECTION` (default `UseDevelopmentStorage=true`).
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use lucius_table::{ConnectError, Mode, TableConfig, TableStore};

/// The connection string the tests use.
pub fn connection() -> String {
    std::env::var("LUCIUS_TEST_TABLE_CONNECTION")
        .unwrap_or_else(|_| "UseDevelopmentStorage=true".to_owned())
}

/// A table-name prefix no other test (or run) uses.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!(
        "T{}x{}x{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The configuration of a fresh set of tables for `mode`.
pub fn config(mode: Mode) -> TableConfig {
    TableConfig::new(mode).with_prefix(&unique_prefix())
}

/// Connects with `config`, failing loudly when the service is not there.
pub async fn connect_with(config: TableConfig) -> TableStore {
    match TableStore::connect(&connection(), config).await {
        Ok(s) => s,
        Err(e @ ConnectError::Service { .. }) => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI: the table service is required and did not answer: {e}. \
                     CI must start it with scripts/azurite.sh start"
                );
            }
            panic!(
                "the table service did not answer: {e}.\n\
                 Start Azurite with `scripts/azurite.sh start` (or point \
                 LUCIUS_TEST_TABLE_CONNECTION at a storage account) and run the tests again."
            )
        }
        Err(e) => panic!("cannot connect: {e}"),
    }
}

/// A store on fresh tables.
pub async fn store(mode: Mode) -> TableStore {
    connect_with(config(mode)).await
}
