//! Where Azurite differs from the real service, pinned so a change in either shows up:
//! Azurite applies an entity group transaction spanning two partitions (the service
//! refuses it, so the store checks it itself), and it answers a failed batch with `202`
//! and the failure inside (as the service does).

mod support;

use azure_data_tables::clients::TableServiceClientBuilder;
use lucius_table::Mode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_accepts_a_cross_partition_batch_which_the_store_never_sends() {
    if support::connection() != "UseDevelopmentStorage=true" {
        // Against a real account this difference does not exist.
        eprintln!("not Azurite: nothing to pin");
        return;
    }
    // Connecting creates the tables (and fails loudly if Azurite is not running).
    let store = support::store(Mode::Ledger).await;
    let table = store.config().ledger_table.clone();
    let service = TableServiceClientBuilder::emulator()
        .retry(azure_core::RetryOptions::none())
        .build();
    let t = service.table_client(&table);
    let row = |pk: &str| json!({"PartitionKey": pk, "RowKey": "r", "V": 1});
    let resp = t
        .partition_key_client("a")
        .transaction()
        .insert(row("a"))
        .unwrap()
        .insert(row("b"))
        .unwrap()
        .await
        .unwrap();
    assert!(
        resp.operation_responses
            .iter()
            .all(|r| r.status_code.is_success()),
        "Azurite now refuses cross-partition batches: update docs/storage.md"
    );
    let b = t
        .partition_key_client("b")
        .entity_client("r")
        .get::<Value>()
        .await;
    assert!(b.is_ok(), "Azurite applied the row of the other partition");

    // A failed batch is still a 2xx answer; the failure is inside and nothing applied.
    let resp = t
        .partition_key_client("a")
        .transaction()
        .insert(json!({"PartitionKey": "a", "RowKey": "new", "V": 1}))
        .unwrap()
        .insert(row("a"))
        .unwrap()
        .await
        .expect("a failed batch answers Ok");
    assert!(resp
        .operation_responses
        .iter()
        .any(|r| !r.status_code.is_success()));
    let new = t
        .partition_key_client("a")
        .entity_client("new")
        .get::<Value>()
        .await;
    assert!(new.is_err(), "nothing of a failed batch is applied");
}
