//! [`SimStore`]: the store every simulated process shares. Each call first yields (a round
//! trip another actor may overtake), then goes to one of two models: the memory store
//! (atomic commits) or [`TableModel`] (non-atomic groups, a separate outbox index). Before
//! a write lands, the monitor checks who writes what (see [`check_write`]).

use async_trait::async_trait;
use lucius::memory::MemoryStore;
use lucius::{
    Changes, CreateOutcome, JobId, JobRecord, Lease, LeaseStore, NewJob, OutboxEntry, OutboxQuery,
    Partition, Store, StoreError, StoreErrorKind, Timestamp,
};
use rand::Rng;

use crate::table_model::TableModel;
use crate::world::{lock, now_or_never, yield_now, Shared, World};

/// Which store semantics a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Model {
    Memory,
    Table,
}

enum Backend {
    Memory(MemoryStore),
    Table(TableModel),
}

/// The shared store of a run.
pub(crate) struct SimStore {
    sim: Shared,
    rows: MemoryStore,
    backend: Backend,
}

impl SimStore {
    pub(crate) fn new(sim: &Shared, model: Model) -> SimStore {
        let rows = lock(sim).rows.clone();
        let backend = match model {
            Model::Memory => Backend::Memory(rows.clone()),
            Model::Table => Backend::Table(TableModel::new(sim.clone(), rows.clone())),
        };
        SimStore {
            sim: sim.clone(),
            rows,
            backend,
        }
    }

    async fn round_trip(&self) {
        yield_now(&self.sim).await;
    }
}

/// Under chaos, an occasional store failure before anything is written.
pub(crate) fn injected_failure(w: &mut World) -> Option<StoreError> {
    if !w.chaos {
        return None;
    }
    match w.rng.random_range(0..100) {
        0..2 => Some(StoreError::transient("injected: 503 server busy")),
        2..3 => Some(StoreError::conflict("injected: 412 precondition failed")),
        _ => None,
    }
}

/// Under chaos, an occasional failed read (a partition whose query times out).
fn injected_read_failure(w: &mut World) -> Option<StoreError> {
    (w.chaos && w.rng.random_ratio(1, 25))
        .then(|| StoreError::transient("injected: query timed out"))
}

/// The monitor's rules on a write about to be applied (`changes` against the stored
/// rows): unfenced publishers never overwrite an entry a leased dispatcher stamped, and a
/// worker call never writes a step another worker holds a live lease on.
pub(crate) fn check_write(w: &mut World, rows: &MemoryStore, changes: &Changes) {
    let Some(actor) = w.running().cloned() else {
        return;
    };
    let Some(id) = changes.job_id().cloned() else {
        return;
    };
    w.touched.insert(id.clone());
    let Some(Ok(Some(stored))) = now_or_never(rows.load_job(&id)) else {
        return;
    };
    if actor.kind.is_unfenced_publisher() {
        for e in &changes.outbox {
            if let Some(s) = stored.entry(&e.id) {
                if s.revision == e.revision && s.fence > 0 {
                    w.violation(format!(
                        "{} (unfenced {:?}) overwrote entry {} stamped by dispatcher epoch {} \
                         ({} -> {})",
                        actor.name,
                        actor.kind,
                        e.id,
                        s.fence,
                        s.status.as_str(),
                        e.status.as_str()
                    ));
                }
            }
        }
    }
    if let Some(caller) = &actor.worker_call {
        let now = Timestamp(w.now.0 + actor.skew);
        for s in &changes.steps {
            let Some(old) = stored.steps.iter().find(|x| x.index == s.index) else {
                continue;
            };
            let held = old.status == lucius::StepStatus::Running
                && old.lease_expires_at.is_some_and(|t| now < t);
            if old.revision == s.revision
                && held
                && old.worker_id.is_some()
                && old.worker_id.as_deref() != caller.as_deref()
            {
                w.violation(format!(
                    "worker call by {caller:?} moved step {} of {} ({} -> {}) while {:?} held \
                     its lease until t+{}ms",
                    old.step_id,
                    id,
                    old.status.as_str(),
                    s.status.as_str(),
                    old.worker_id,
                    old.lease_expires_at.map_or(0, |t| t.0 - w.start.0)
                ));
            }
        }
    }
}

#[async_trait]
impl Store for SimStore {
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        self.round_trip().await;
        {
            let mut w = lock(&self.sim);
            w.touched.insert(new.job.id.clone());
            if let Some(e) = injected_failure(&mut w) {
                return Err(e);
            }
        }
        match &self.backend {
            Backend::Memory(m) => m.create_job(new).await,
            Backend::Table(t) => t.create_job(new).await,
        }
    }

    async fn load_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.round_trip().await;
        self.rows.load_job(id).await
    }

    async fn commit(&self, changes: Changes) -> Result<Changes, StoreError> {
        self.round_trip().await;
        match &self.backend {
            Backend::Memory(m) => {
                {
                    let mut w = lock(&self.sim);
                    if let Some(e) = injected_failure(&mut w) {
                        return Err(e);
                    }
                    check_write(&mut w, m, &changes);
                }
                m.commit(changes).await
            }
            Backend::Table(t) => t.commit(changes).await,
        }
    }

    async fn outbox(&self, query: &OutboxQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        self.round_trip().await;
        match &self.backend {
            Backend::Memory(m) => m.outbox(query).await,
            Backend::Table(t) => t.outbox(query).await,
        }
    }

    async fn active_jobs(
        &self,
        partition: &Partition,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        self.round_trip().await;
        {
            let mut w = lock(&self.sim);
            let failure = injected_read_failure(&mut w);
            let cur = w.current;
            if let Some(call) = w.actors.get_mut(cur).and_then(|a| a.sweep_all.as_mut()) {
                call.visited.insert(partition.clone());
                if failure.is_some() {
                    call.failed.insert(partition.clone());
                }
            }
            if let Some(e) = failure {
                w.note(format!("active_jobs({partition}) fails: {e}"));
                return Err(e);
            }
        }
        self.rows.active_jobs(partition, after, limit).await
    }

    async fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        self.round_trip().await;
        let out = self.rows.partitions().await;
        let mut w = lock(&self.sim);
        let cur = w.current;
        if let (Ok(list), Some(call)) = (
            &out,
            w.actors.get_mut(cur).and_then(|a| a.sweep_all.as_mut()),
        ) {
            call.listed.get_or_insert_with(|| list.clone());
        }
        out
    }

    async fn retire_partition(&self, partition: &Partition) -> Result<bool, StoreError> {
        self.round_trip().await;
        self.rows.retire_partition(partition).await
    }

    async fn ended_jobs(
        &self,
        ended_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<lucius::ports::EndedJob>, StoreError> {
        self.round_trip().await;
        self.rows.ended_jobs(ended_by, limit).await
    }

    async fn purge_job(&self, id: &JobId, revision: &lucius::Revision) -> Result<(), StoreError> {
        self.round_trip().await;
        self.rows.purge_job(id, revision).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.round_trip().await;
        Ok(())
    }

    async fn index_pending(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.round_trip().await;
        if let Some(e) = injected_failure(&mut lock(&self.sim)) {
            return Err(e);
        }
        if let Backend::Table(t) = &self.backend {
            t.index_pending(entry);
        }
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for SimStore {
    async fn lease(&self, partition: &Partition) -> Result<Option<Lease>, StoreError> {
        self.round_trip().await;
        self.rows.lease(partition).await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.round_trip().await;
        self.rows.leases().await
    }

    async fn put_lease(&self, lease: Lease) -> Result<Lease, StoreError> {
        self.round_trip().await;
        let what = format!(
            "put_lease {} owner {:?} epoch {} expiring at t+{}ms",
            lease.partition,
            lease.owner,
            lease.epoch,
            lease.expires_at.0 - lock(&self.sim).start.0
        );
        let out = self.rows.put_lease(lease).await;
        lock(&self.sim).note(format!(
            "{what}: {}",
            if out.is_ok() { "ok" } else { "conflict" }
        ));
        out
    }

    async fn announce(&self, member: &str, until: Timestamp) -> Result<(), StoreError> {
        self.round_trip().await;
        self.rows.announce(member, until).await
    }

    async fn members(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.round_trip().await;
        self.rows.members().await
    }
}

/// A plain error when nothing was written, `Partial` once a group landed.
pub(crate) fn after_groups(applied: bool, e: StoreError) -> StoreError {
    if applied && e.kind != StoreErrorKind::Partial {
        StoreError::partial(format!(
            "a later group failed after earlier ones applied: {e}"
        ))
    } else {
        e
    }
}
