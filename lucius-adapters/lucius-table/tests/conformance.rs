//! The core store conformance suite, on Azurite, in both modes.

mod support;

use std::sync::Arc;

use lucius_core::testkit::conformance::{run_all, Capabilities};
use lucius_core::Store;
use lucius_table::Mode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_mode_passes_the_conformance_suite() {
    run_all(
        || async { Arc::new(support::store(Mode::Ledger).await) as Arc<dyn Store> },
        Capabilities {
            atomic_commit: true,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_mode_passes_the_conformance_suite() {
    run_all(
        || async { Arc::new(support::store(Mode::Table).await) as Arc<dyn Store> },
        Capabilities {
            atomic_commit: false,
        },
    )
    .await;
}
