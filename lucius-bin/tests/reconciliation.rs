//! The seed's three `lucius-reconciliation` command lines, verbatim, against `ledger` on
//! Azurite: `dispatch --partition`, `sweep --job-id --tenant --bucket`, `loop --partition
//! --interval` (stopped with SIGTERM, releasing its lease).

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lucius_core::memory::MemoryPublisher;
use lucius_core::testkit::command;
use lucius_core::{Clock, Engine, LeaseStore, Millis, Timestamp};
use lucius_table::{Mode, TableConfig, TableStore};

struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp(ms as i64)
    }
    fn sleep(&self, d: Millis) -> lucius_core::ports::Sleep {
        Box::pin(tokio::time::sleep(d.to_std()))
    }
}

fn connection() -> String {
    let conn = std::env::var("LUCIUS_TEST_TABLE_CONNECTION")
        .unwrap_or_else(|_| "UseDevelopmentStorage=true".into());
    if conn == "UseDevelopmentStorage=true"
        && std::net::TcpStream::connect("127.0.0.1:10002").is_err()
    {
        panic!(
            "Azurite is not running on 127.0.0.1:10002{}: start it with scripts/azurite.sh start (scripts/test.sh does)",
            if std::env::var_os("CI").is_some() { " in CI" } else { "" }
        );
    }
    conn
}

fn reconciliation(env: &[(&str, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lucius-reconciliation"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_command_lines_work_on_ledger() {
    let conn = connection();
    let suffix = format!(
        "{}x{}",
        std::process::id(),
        WallClock.now().0 % 1_000_000_000
    );
    let mut config = TableConfig::new(Mode::Ledger);
    config.ledger_table = format!("Rl{suffix}");
    config.leases = format!("Rk{suffix}");
    let table = TableStore::connect(&conn, config.clone())
        .await
        .expect("Azurite answers");
    // A job whose first directive was never published (the orchestrator died after 202).
    let engine = Engine::new(
        Arc::new(table.clone()),
        Arc::new(MemoryPublisher::noop()),
        Arc::new(WallClock),
    );
    let sub = engine.submit(command("t1", "seed-1", 0)).await.unwrap();
    let p = sub.value.partition.to_string();
    let job = sub.value.job_id.to_string();
    let env = vec![
        ("LUCIUS_STORAGE_BACKEND", "ledger".to_owned()),
        ("LUCIUS_TABLE_CONNECTION", conn.clone()),
        ("LUCIUS_LEDGER_TABLE", config.ledger_table.clone()),
        ("LUCIUS_LEASES_TABLE", config.leases.clone()),
        ("LUCIUS_DISPATCHER_ID", "seed-test".to_owned()),
    ];

    let out = reconciliation(&env, &["dispatch", "--partition", &p])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // No bus: workers pull, so dispatch reports what is due and publishes nothing (it
    // must not mark a directive sent that nobody received).
    assert!(
        stdout(&out).contains("due=1 published=0"),
        "{}",
        stdout(&out)
    );
    let rec = engine.job(&sub.value.job_id).await.unwrap();
    assert_eq!(rec.outbox[0].status, lucius_core::OutboxStatus::Pending);
    assert_eq!(rec.outbox[0].publish_attempts, 0);

    let out = reconciliation(
        &env,
        &["sweep", "--job-id", &job, "--tenant", "t1", "--bucket", &p],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).starts_with(&format!("sweep job={job} ")),
        "{}",
        stdout(&out)
    );
    // The wrong tenant is refused with a clear message and a non-zero exit.
    let out = reconciliation(
        &env,
        &["sweep", "--job-id", &job, "--tenant", "t2", "--bucket", &p],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    // A partition that is not tenant#YYYYMM is refused.
    let out = reconciliation(&env, &["dispatch", "--partition", "t1-2024"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut child = reconciliation(
        &env,
        &[
            "loop",
            "--partition",
            &p,
            "--interval",
            "0.2",
            "--metrics-listen",
            &metrics_addr,
        ],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let leases: Arc<dyn LeaseStore> = Arc::new(TableStore::connect(&conn, config).await.unwrap());
    let partition = sub.value.partition.clone();
    let mut owned = false;
    for _ in 0..100 {
        if let Ok(Some(l)) = leases.lease(&partition).await {
            if l.owner.as_deref() == Some("seed-test") {
                owned = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(owned, "the loop never took the partition's lease");
    // The watchdog figures name the owner and the age of the oldest pending directive.
    let mut text = String::new();
    for _ in 0..50 {
        text = scrape(&metrics_addr);
        if text.contains("owner=\"seed-test\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.contains(&format!(
            "lucius_partition_lease_owner{{partition=\"{p}\",owner=\"seed-test\"}} 1"
        )),
        "{text}"
    );
    // The directive waits for a worker to pull it: its age shows.
    assert!(
        text.contains(&format!(
            "lucius_outbox_oldest_pending_age_seconds{{partition=\"{p}\"}} "
        )),
        "{text}"
    );
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "loop exit {status:?}");
    let l = leases.lease(&partition).await.unwrap().unwrap();
    assert_eq!(l.owner, None, "the lease was not released on SIGTERM");
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
