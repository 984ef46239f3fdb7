//! A missing table is reported as one, never as a missing job or row: tables never created
//! (`create_tables = false`, on any service) and a table deleted after the store connected
//! (Azurite, whose tables the test may delete).

mod support;

use azure_data_tables::clients::TableServiceClientBuilder;
use lucius_core::testkit::new_job;
use lucius_core::{
    Changes, LeaseStore, Millis, Partition, Store, StoreErrorKind, TenantId, Timestamp,
};
use lucius_table::Mode;

const T0: Timestamp = Timestamp(1_709_596_800_000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_never_created_are_reported_as_missing_tables() {
    // Fails loudly (with the hint to start Azurite) if the service is not there.
    support::store(Mode::Ledger).await;
    let partition = Partition::of(&TenantId::parse("acme").unwrap(), T0);
    for mode in [Mode::Table, Mode::Ledger] {
        let mut config = support::config(mode);
        config.create_tables = false;
        let store = support::connect_with(config.clone()).await;
        let new = new_job("acme", "never-created", 0, T0);
        // A read: an error, not "no such job".
        let e = store.load_job(&new.job.id).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Permanent, "{mode:?}: {e}");
        assert!(e.message.contains("TableNotFound"), "{mode:?}: {e}");
        assert!(e.message.contains("does not exist"), "{mode:?}: {e}");
        // A write (a single insert in table mode, a batch in ledger mode) names its table.
        let first = match mode {
            Mode::Table => &config.idempotency_table,
            _ => &config.ledger_table,
        };
        let e = store.create_job(new.clone()).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Permanent, "{mode:?}: {e}");
        assert!(
            e.message.contains(&format!("table {first} does not exist")),
            "{mode:?}: {e}"
        );
        assert!(e.message.contains("create_tables"), "{mode:?}: {e}");
        // A point read of the leases table: an error, not "no lease yet".
        let e = store.lease(&partition).await.unwrap_err();
        assert!(
            e.message
                .contains(&format!("table {} does not exist", config.leases)),
            "{mode:?}: {e}"
        );
        assert!(store.ping().await.is_err(), "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_deleted_after_connect_is_an_error_not_a_missing_job() {
    if support::connection() != "UseDevelopmentStorage=true" {
        eprintln!("not Azurite: the test deletes tables only of the emulator");
        return;
    }
    let store = support::store(Mode::Table).await;
    let new = new_job("acme", "deleted-table", 0, T0);
    store.create_job(new.clone()).await.unwrap();
    let record = store.load_job(&new.job.id).await.unwrap().unwrap();
    let jobs = store.config().jobs_table.clone();
    TableServiceClientBuilder::emulator()
        .retry(azure_core::RetryOptions::none())
        .build()
        .table_client(&jobs)
        .delete()
        .await
        .unwrap();
    let e = store.load_job(&new.job.id).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Permanent, "{e}");
    assert!(
        e.message
            .contains(&format!("get from {jobs} ({}, JOB)", new.job.id)),
        "{e}"
    );
    assert!(
        e.message.contains(&format!(
            "table {jobs} does not exist (deleted after the store connected"
        )),
        "{e}"
    );
    // A write of the job row.
    let started = record.job.on_start(T0.plus(Millis(5))).unwrap();
    let e = store
        .commit(Changes {
            job: Some(started),
            ..Changes::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Permanent, "{e}");
    assert!(
        e.message.contains(&format!("table {jobs} does not exist")),
        "{e}"
    );
}
