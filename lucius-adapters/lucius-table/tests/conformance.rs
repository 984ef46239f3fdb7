//! The core store conformance suite, on Azurite, in both modes.

mod support;

use std::sync::Arc;

use lucius_core::testkit::conformance::{run_all, Capabilities, Subject};
use lucius_core::{NewJob, Store};
use lucius_table::Mode;

/// A store on fresh tables whose interrupted intake crashes after `writes` write requests:
/// before its first directive is findable.
async fn subject(mode: Mode, writes: usize) -> Subject {
    let store = support::store(mode).await;
    let crashing = store.clone();
    Subject::new(Arc::new(store), move |new: NewJob| {
        let store = crashing.clone();
        async move {
            store.crash_after_writes(Some(writes));
            let _ = store.create_job(new).await;
            store.crash_after_writes(None);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_mode_passes_the_conformance_suite() {
    run_all(
        // One batch holds every row of the job; the index batch that makes it and its first
        // directive visible (live row, queue row) comes after it.
        || subject(Mode::Ledger, 1),
        Capabilities {
            atomic_commit: true,
            retention: true,
            retires_partitions: true,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_mode_passes_the_conformance_suite() {
    run_all(
        // Claim, job and steps (one batch) come before the index batch (the job's live row
        // and its first directive's queue row) and the outbox row.
        || subject(Mode::Table, 3),
        Capabilities {
            atomic_commit: false,
            retention: true,
            retires_partitions: true,
        },
    )
    .await;
}
