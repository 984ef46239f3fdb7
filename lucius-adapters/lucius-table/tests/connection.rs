//! Connection strings and connection failures: account-style strings reach Azurite, a
//! wrong key is a permanent error naming the permission, an unreachable service is
//! retried with backoff and then reported.

mod support;

use std::time::Duration;

use lucius_core::{Store, StoreErrorKind};
use lucius_table::{ConnectError, Mode, TableConfig, TableStore};

/// Azurite's well-known development account key (public, documented by Microsoft).
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn azurite_only() -> bool {
    support::connection() == "UseDevelopmentStorage=true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_connection_string_with_a_table_endpoint_works() {
    if !azurite_only() {
        eprintln!(
            "LUCIUS_TEST_TABLE_CONNECTION is not Azurite: the account string below is Azurite's"
        );
        return;
    }
    // Fails loudly (with the hint to start Azurite) if it is not running.
    support::store(Mode::Ledger).await;
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};\
         TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
    );
    let store = TableStore::connect(&conn, support::config(Mode::Ledger))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.ping().await.unwrap();
    let new = lucius_core::testkit::new_job("acme", "acct", 0, lucius_core::Timestamp(0));
    store.create_job(new.clone()).await.unwrap();
    assert!(store.load_job(&new.job.id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_a_permanent_error_naming_the_permission() {
    if !azurite_only() {
        eprintln!("not Azurite: skipped the wrong-key check");
        return;
    }
    support::store(Mode::Ledger).await;
    let conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
                AccountKey=d3Jvbmcta2V5LXdyb25nLWtleQ==;\
                TableEndpoint=http://127.0.0.1:10002/devstoreaccount1";
    match TableStore::connect(conn, support::config(Mode::Table)).await {
        Err(ConnectError::Service { error, endpoint }) => {
            assert_eq!(error.kind, StoreErrorKind::Permanent, "{error}");
            assert!(error.message.contains("permission"), "{error}");
            assert!(endpoint.contains("devstoreaccount1"), "{endpoint}");
            assert!(!error.message.contains("d3Jvbmc"), "the key is never shown");
        }
        other => panic!("expected an authorization failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_is_retried_then_reported() {
    let mut config = TableConfig::new(Mode::Ledger);
    config.retry.attempts = 3;
    config.retry.base_delay = Duration::from_millis(10);
    // Nothing listens on port 9 (discard) of the loopback on these machines.
    let started = std::time::Instant::now();
    let err = TableStore::connect(
        "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1:9",
        config,
    )
    .await
    .unwrap_err();
    match &err {
        ConnectError::Service { error, .. } => {
            assert_eq!(error.kind, StoreErrorKind::Transient, "{err}");
            assert!(error.message.contains("cannot reach"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    // Two backoffs (10 ms, 20 ms) between three attempts.
    assert!(started.elapsed() >= Duration::from_millis(30), "no backoff");
}

#[tokio::test]
async fn bad_connection_strings_are_refused_before_any_request() {
    for (conn, says) in [
        ("AccountName=acct", "AccountKey"),
        ("nonsense", "key=value"),
        ("UseDevelopmentStorage=maybe", "true or false"),
    ] {
        let err = TableStore::connect(conn, TableConfig::new(Mode::Table))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::ConnectionString(_)), "{err:?}");
        assert!(err.to_string().contains(says), "{conn}: {err}");
    }
    let mut bad = TableConfig::new(Mode::Ledger);
    bad.ledger_table = "bad-name".into();
    let err = TableStore::connect("UseDevelopmentStorage=true", bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad-name"), "{err}");
}
