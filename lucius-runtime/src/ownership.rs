//! The lease-owned dispatcher loop: each round, rebalance partition leases, then dispatch
//! and sweep the partitions this instance owns. Idle partitions are polled with backoff
//! up to a ceiling; the watchdog figures (oldest pending age, owner) are logged once per ceiling.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use lucius_core::engine::EngineError;
use lucius_core::ownership::PartitionOwner;
use lucius_core::{
    Clock, Engine, LeaseStore, Millis, OutboxQuery, OutboxStatus, Partition, Timestamp,
};

use crate::handle::Lucius;
use crate::settings::{Candidates, Owned};
use crate::shutdown::Shutdown;

#[derive(Debug, Clone, Copy)]
struct LoopConfig {
    interval: Millis,
    idle_ceiling: Millis,
}

/// Per-partition poll schedule with exponential backoff while idle.
#[derive(Debug, Default)]
struct Backoff {
    next: BTreeMap<Partition, (Timestamp, Millis)>,
}

impl Backoff {
    fn due(&self, p: &Partition, now: Timestamp) -> bool {
        self.next.get(p).is_none_or(|(at, _)| now >= *at)
    }

    fn record(&mut self, p: &Partition, busy: bool, now: Timestamp, cfg: LoopConfig) {
        let wait = match (busy, self.next.get(p)) {
            (true, _) | (false, None) => cfg.interval,
            (false, Some((_, w))) => {
                Millis((w.0.saturating_mul(2)).min(cfg.idle_ceiling.0.max(cfg.interval.0)))
            }
        };
        self.next.insert(p.clone(), (now.plus(wait), wait));
    }
}

/// Runs rounds until shutdown, then releases every lease.
pub(crate) async fn run(
    lucius: Lucius,
    leases: Arc<dyn LeaseStore>,
    settings: Owned,
    shutdown: Shutdown,
) {
    let engine = lucius.engine().clone();
    let clock = lucius.clock().clone();
    let board = lucius.board();
    let mut owner = PartitionOwner::new(
        settings.dispatcher_id.clone(),
        leases.clone(),
        clock.clone(),
        settings.ownership,
    );
    let cfg = LoopConfig {
        interval: settings.interval,
        idle_ceiling: settings.idle_ceiling,
    };
    tracing::info!(dispatcher = %settings.dispatcher_id, candidates = ?settings.candidates, interval_ms = cfg.interval.0, "lease-owned dispatcher started");
    let mut backoff = Backoff::default();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut last_watch: Option<Timestamp> = None;
    while !shutdown.is_triggered() {
        let list = round(
            &lucius,
            leases.as_ref(),
            clock.as_ref(),
            &mut owner,
            &settings.candidates,
            cfg,
            &mut backoff,
        )
        .await;
        // The watchdog reads every candidate's oldest entry: once per idle ceiling is enough
        // to see a stuck partition, and keeps an idle dispatcher cheap.
        let now = clock.now();
        if last_watch.is_none_or(|t| now >= t.plus(cfg.idle_ceiling)) {
            board.set(watchdog(&engine, leases.as_ref(), now, &list).await);
            last_watch = Some(now);
        }
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = clock.sleep(cfg.interval) => {}
        }
        tokio::task::yield_now().await;
    }
    let released = owner.release_all().await;
    tracing::info!(
        dispatcher = owner.id(),
        released = released.len(),
        "leases released"
    );
}

async fn round(
    lucius: &Lucius,
    leases: &dyn LeaseStore,
    clock: &dyn Clock,
    owner: &mut PartitionOwner,
    candidates: &Candidates,
    cfg: LoopConfig,
    backoff: &mut Backoff,
) -> Vec<Partition> {
    let engine = lucius.engine();
    let list = match candidates {
        Candidates::Fixed(v) => v.clone(),
        Candidates::Discover => match engine.store().partitions().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "partition discovery failed");
                return Vec::new();
            }
        },
    };
    let r = match owner.rebalance(&list).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(dispatcher = owner.id(), error = %e, "lease round failed");
            return list;
        }
    };
    if !r.acquired.is_empty() || !r.lost.is_empty() || !r.released.is_empty() {
        tracing::info!(
            dispatcher = owner.id(),
            members = r.members,
            target = r.target,
            acquired = ?r.acquired.iter().map(ToString::to_string).collect::<Vec<_>>(),
            lost = ?r.lost.iter().map(ToString::to_string).collect::<Vec<_>>(),
            released = ?r.released.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "leases changed"
        );
    }
    for fence in &r.held {
        let now = clock.now();
        if !backoff.due(&fence.partition, now) {
            continue;
        }
        // In pull mode workers claim directives: the owner only sweeps.
        let dispatched = if lucius.pulls() {
            Ok(lucius_core::engine::DispatchReport::default())
        } else {
            engine.dispatch_fenced(fence, leases).await
        };
        let busy = match dispatched {
            Ok(d) => {
                tracing::info!(
                    partition = %fence.partition, epoch = fence.epoch, due = d.due, published = d.published,
                    retrying = d.retrying, dead = d.dead, skipped = d.skipped, errors = d.errors, deferred = d.deferred, "dispatch round"
                );
                d.due > 0
            }
            Err(EngineError::Fenced { .. }) => {
                tracing::warn!(partition = %fence.partition, epoch = fence.epoch, "lease lost mid-round; stopped dispatching it");
                continue;
            }
            Err(e) => {
                tracing::warn!(partition = %fence.partition, error = %e, "dispatch failed");
                false
            }
        };
        match engine.sweep_partition(&fence.partition).await {
            Ok(o) => {
                let published = lucius.publish_now(&o.to_publish).await;
                let s = o.value;
                if s.retried + s.failed + s.repaired + s.reindexed > 0 {
                    tracing::info!(partition = %fence.partition, retried = s.retried, failed = s.failed, repaired = s.repaired, reindexed = s.reindexed, published, "sweep round");
                }
            }
            Err(e) => tracing::warn!(partition = %fence.partition, error = %e, "sweep failed"),
        }
        backoff.record(&fence.partition, busy, clock.now(), cfg);
    }
    list
}

/// Writes a metric's `# HELP` and `# TYPE` lines (Prometheus text format).
pub fn metric_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value for the Prometheus text format.
pub fn escape_label(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Logs, per partition, the age of its oldest pending directive and its lease owner, so a
/// partition nobody dispatches is visible.
async fn watchdog(
    engine: &Engine,
    leases: &dyn LeaseStore,
    now: Timestamp,
    partitions: &[Partition],
) -> String {
    let owners: BTreeMap<Partition, (Option<String>, bool, u64)> = leases
        .leases()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|l| {
            (
                l.partition.clone(),
                (l.owner.clone(), l.is_held(now), l.epoch),
            )
        })
        .collect();
    let gauge = |name: &str, help: &str| {
        let mut out = String::new();
        metric_header(&mut out, name, "gauge", help);
        out
    };
    let mut age = gauge(
        "lucius_outbox_oldest_pending_age_seconds",
        "Age of the oldest PENDING directive per partition.",
    );
    let mut owned = gauge(
        "lucius_partition_lease_owner",
        "1 for the dispatcher holding the partition's live lease; owner=\"\" when none does.",
    );
    let mut epochs = gauge(
        "lucius_partition_lease_epoch",
        "Epoch of the partition's lease (raised by every takeover).",
    );
    for p in partitions {
        let q = OutboxQuery {
            status: Some(OutboxStatus::Pending),
            partition: Some(p.clone()),
            due_by: None,
            after: None,
            limit: 1,
        };
        let oldest = engine
            .list_outbox(&q)
            .await
            .ok()
            .and_then(|v| v.first().map(|e| now.since(e.created_at).0 / 1000));
        let (owner, held, epoch) = owners.get(p).cloned().unwrap_or((None, false, 0));
        let owner = owner.filter(|_| held);
        tracing::info!(
            partition = %p,
            oldest_pending_age_seconds = oldest.unwrap_or(0),
            owner = owner.as_deref().unwrap_or("(none)"),
            "watchdog"
        );
        let lp = escape_label(&p.to_string());
        let _ = writeln!(
            age,
            "lucius_outbox_oldest_pending_age_seconds{{partition=\"{lp}\"}} {}",
            oldest.unwrap_or(0)
        );
        let _ = writeln!(
            owned,
            "lucius_partition_lease_owner{{partition=\"{lp}\",owner=\"{}\"}} {}",
            escape_label(owner.as_deref().unwrap_or("")),
            u8::from(owner.is_some())
        );
        let _ = writeln!(
            epochs,
            "lucius_partition_lease_epoch{{partition=\"{lp}\"}} {epoch}"
        );
    }
    age + &owned + &epochs
}

/// The latest watchdog figures in Prometheus text (empty until the lease-owned dispatcher's
/// first round): the age of each partition's oldest `PENDING` directive, its lease owner and
/// epoch.
#[derive(Debug, Default)]
pub struct Board {
    text: std::sync::Mutex<String>,
}

impl Board {
    pub(crate) fn set(&self, text: String) {
        *self.text.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }

    /// The current exposition text.
    pub fn render(&self) -> String {
        self.text.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn idle_partitions_back_off_to_the_ceiling_and_reset_on_work() {
        let cfg = LoopConfig {
            interval: Millis(1_000),
            idle_ceiling: Millis(8_000),
        };
        let p = Partition::parse("t#202401").unwrap();
        let mut b = Backoff::default();
        let mut now = Timestamp(0);
        let mut waits = Vec::new();
        for _ in 0..6 {
            assert!(b.due(&p, now));
            b.record(&p, false, now, cfg);
            let (at, w) = b.next[&p];
            waits.push(w.0);
            assert!(!b.due(&p, Timestamp(at.0 - 1)));
            now = at;
        }
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
        b.record(&p, true, now, cfg);
        assert_eq!(b.next[&p].1, Millis(1_000));
    }
}
