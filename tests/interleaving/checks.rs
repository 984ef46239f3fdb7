//! The monitor's checks: after every scheduler step on the jobs written since the last
//! one (design §3: structure, progress, no transition applied twice), and at quiescence
//! (every accepted job ended, its status is the one its steps imply, nothing pending is
//! left behind, every attempt was published, intake answered consistently).

use lucius::engine::derived_status;
use lucius::{JobRecord, JobStatus, OutboxId, OutboxStatus, StepStatus, Store};

use crate::actors::{cached_command, TENANTS};
use crate::world::{now_or_never, World};

impl World {
    /// Checks every job written since the last call against its previous snapshot.
    pub(crate) fn check_touched(&mut self, max_publish_attempts: u32) {
        let touched = std::mem::take(&mut self.touched);
        for id in touched {
            let Some(Ok(Some(rec))) = now_or_never(self.rows.load_job(&id)) else {
                if self.seen.contains_key(&id) {
                    self.violation(format!("job {id} disappeared"));
                }
                continue;
            };
            self.check_structure(&rec, max_publish_attempts);
            if let Some(prev) = self.seen.get(&id).cloned() {
                self.check_progress(&prev, &rec);
            }
            self.seen.insert(id, rec);
        }
    }

    fn check_structure(&mut self, rec: &JobRecord, max_publish_attempts: u32) {
        let id = &rec.job.id;
        let live: Vec<_> = rec
            .steps
            .iter()
            .filter(|s| !s.status.is_terminal() && s.status != StepStatus::Pending)
            .collect();
        if live.len() > 1 {
            self.violation(format!("job {id} has {} live steps", live.len()));
        }
        if let Some(l) = live.first() {
            if rec.steps[..l.index as usize]
                .iter()
                .any(|s| s.status != StepStatus::Succeeded)
            {
                self.violation(format!(
                    "job {id}: step {} is live before its predecessors succeeded",
                    l.step_id
                ));
            }
        }
        for s in &rec.steps {
            if s.attempt > s.max_attempts {
                self.violation(format!(
                    "job {id}: step {} at attempt {} of {}",
                    s.step_id, s.attempt, s.max_attempts
                ));
            }
        }
        for e in &rec.outbox {
            if e.partition != rec.job.partition {
                self.violation(format!(
                    "entry {} is in partition {} but its job {id} in {}",
                    e.id, e.partition, rec.job.partition
                ));
            }
            if e.publish_attempts > max_publish_attempts {
                self.violation(format!(
                    "entry {} has {} publish attempts (max {max_publish_attempts})",
                    e.id, e.publish_attempts
                ));
            }
        }
    }

    fn check_progress(&mut self, prev: &JobRecord, now: &JobRecord) {
        let id = &now.job.id;
        let (a, b) = (prev.job.status, now.job.status);
        let job_ok = a == b
            || matches!(
                (a, b),
                (JobStatus::Accepted, _)
                    | (
                        JobStatus::InProgress,
                        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
                    )
            );
        if !job_ok {
            self.violation(format!("job {id} went {} -> {}", a.as_str(), b.as_str()));
        }
        if a.is_terminal() && prev.job != now.job {
            self.violation(format!("terminal job {id} changed"));
        }
        for (p, n) in prev.steps.iter().zip(&now.steps) {
            if n.attempt < p.attempt {
                self.violation(format!("job {id}: step {} attempt went back", n.step_id));
            }
            // One write per scheduler step, each planned on one load: an attempt moves by
            // one per retry. More is a retry applied twice.
            if n.attempt > p.attempt + 1 {
                self.violation(format!(
                    "job {id}: step {} went from attempt {} to {} in one step (a retry applied twice)",
                    n.step_id, p.attempt, n.attempt
                ));
            }
            if p.status.is_terminal() && p != n {
                self.violation(format!(
                    "job {id}: terminal step {} changed ({} -> {})",
                    n.step_id,
                    p.status.as_str(),
                    n.status.as_str()
                ));
            }
            if p.status != StepStatus::Pending && n.status == StepStatus::Pending {
                self.violation(format!("job {id}: step {} went back to PENDING", n.step_id));
            }
        }
        for e in &prev.outbox {
            match now.entry(&e.id) {
                None => self.violation(format!("outbox entry {} disappeared", e.id)),
                Some(n) if e.status == OutboxStatus::Sent && n.status != OutboxStatus::Sent => {
                    self.violation(format!("outbox entry {} left SENT", e.id))
                }
                Some(n) if e.status == OutboxStatus::Dead && n.status != OutboxStatus::Dead => self
                    .violation(format!(
                        "outbox entry {} left DEAD with no admin action",
                        e.id
                    )),
                Some(n) if n.publish_attempts > e.publish_attempts => {
                    self.check_failures_counted(&n.id, n.publish_attempts - e.publish_attempts)
                }
                Some(_) => {}
            }
        }
    }

    /// One failure per failure: each recorded publish failure needs a failed publish call
    /// of its own that started after the previous failure was recorded (a publisher that
    /// loaded the entry before that must not count its outage again).
    fn check_failures_counted(&mut self, id: &OutboxId, added: u32) {
        let since = self.last_failure_tick.get(id).copied().unwrap_or(0);
        let calls = self.bus.failed_calls.entry(id.to_string()).or_default();
        calls.retain(|&t| t > since);
        for _ in 0..added {
            if calls.is_empty() {
                let tick = self.tick;
                self.violation(format!(
                    "entry {id}: a publish failure was recorded at tick {tick} with no failed \
                     publication started since the previous one was recorded (tick {since}): \
                     one failure counted twice"
                ));
                break;
            }
            calls.remove(0);
        }
        let tick = self.tick;
        if let Some(c) = self.bus.failed_calls.get_mut(id.as_str()) {
            // Calls that started before this record cannot justify a later one.
            c.retain(|&t| t > tick);
        }
        self.last_failure_tick.insert(id.clone(), tick);
    }

    /// The checks at quiescence. `all_terminal`: workers finished everything, so every
    /// accepted job must have ended.
    pub(crate) fn check_quiescent(&mut self, all_terminal: bool) {
        let accepted: Vec<_> = self
            .intake
            .accepted
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((tenant, key), (id, variant)) in accepted {
            let Some(Ok(Some(rec))) = now_or_never(self.rows.load_job(&id)) else {
                self.violation(format!("accepted job {id} ({tenant}/{key}) is lost"));
                continue;
            };
            if rec.job.request_hash != hash_of(&tenant, &key, variant) {
                self.violation(format!(
                    "{tenant}/{key}: the 202'd variant {variant} is not the stored request"
                ));
            }
            if all_terminal && !rec.job.status.is_terminal() {
                let live = holds_live_directive(&rec);
                self.violation(format!(
                    "accepted job {id} never ended with no admin action ({}; {}): {}",
                    rec.job.status.as_str(),
                    if live {
                        "holds a live directive"
                    } else {
                        "holds NO live directive"
                    },
                    describe(&rec)
                ));
            } else if !rec.job.status.is_terminal() && !holds_live_directive(&rec) {
                self.violation(format!(
                    "accepted job {id} is stuck: no terminal status, no live directive: {}",
                    describe(&rec)
                ));
            }
            // A job never goes back to ACCEPTED: one whose first step is being retried
            // stays IN_PROGRESS while its steps alone would say ACCEPTED.
            let want = derived_status(&rec);
            let retried_first =
                want == JobStatus::Accepted && rec.job.status == JobStatus::InProgress;
            if want != rec.job.status && !retried_first {
                self.violation(format!(
                    "job {id} is {} but its steps imply {}: {}",
                    rec.job.status.as_str(),
                    want.as_str(),
                    describe(&rec)
                ));
            }
            if rec.job.status.is_terminal() {
                for e in rec
                    .outbox
                    .iter()
                    .filter(|e| e.status == OutboxStatus::Pending)
                {
                    self.violation(format!("terminal job {id} has a PENDING entry {}", e.id));
                }
            }
            for s in &rec.steps {
                let last = match s.status {
                    StepStatus::Pending => 0,
                    StepStatus::Queued | StepStatus::Cancelled => s.attempt.saturating_sub(1),
                    _ => s.attempt,
                };
                for a in 1..=last {
                    let oid = OutboxId::for_attempt(&rec.job.id, s.index, a);
                    let dead = rec
                        .entry(&oid)
                        .is_some_and(|e| e.status == OutboxStatus::Dead);
                    if !dead && !self.bus.delivered.contains(oid.as_str()) {
                        self.violation(format!(
                            "directive {oid} ({} attempt {a}) was never published",
                            s.step_id
                        ));
                    }
                }
            }
        }
        let refused = std::mem::take(&mut self.intake.refused);
        for (tenant, key, variant) in &refused {
            let id = lucius::JobId::derive(
                &lucius::TenantId::parse(tenant).unwrap_or_else(|e| panic!("{e}")),
                key,
            );
            if let Some(Ok(Some(rec))) = now_or_never(self.rows.load_job(&id)) {
                if rec.job.request_hash == hash_of(tenant, key, *variant) {
                    self.violation(format!(
                        "{tenant}/{key} variant {variant} was refused (409) though it is the stored request"
                    ));
                }
            }
        }
    }
}

/// The request hash of a client's command.
fn hash_of(tenant: &str, key: &str, variant: u32) -> lucius::idempotency::RequestHash {
    let t = TENANTS.iter().position(|x| *x == tenant).unwrap_or(0);
    let k = key.trim_start_matches("key-").parse().unwrap_or(0);
    cached_command(t, k, variant).request_hash
}

/// A `PENDING` entry for its live step's current attempt, or an `INITIATED`/`RUNNING`
/// step with a deadline.
pub(crate) fn holds_live_directive(rec: &JobRecord) -> bool {
    rec.steps.iter().any(|s| match s.status {
        StepStatus::Queued => rec
            .entry(&s.outbox_id())
            .is_some_and(|e| e.status == OutboxStatus::Pending),
        StepStatus::Initiated | StepStatus::Running => s.deadline().is_some(),
        _ => false,
    })
}

/// A job in one line: status, steps, entries.
pub(crate) fn describe(rec: &JobRecord) -> String {
    let steps: Vec<String> = rec
        .steps
        .iter()
        .map(|s| format!("{} {}#{}", s.step_id, s.status.as_str(), s.attempt))
        .collect();
    let entries: Vec<String> = rec
        .outbox
        .iter()
        .map(|e| {
            format!(
                "{} {} x{}{}",
                e.id,
                e.status.as_str(),
                e.publish_attempts,
                e.last_error
                    .as_deref()
                    .map_or(String::new(), |m| format!(" ({m})"))
            )
        })
        .collect();
    format!(
        "job {} steps [{}] entries [{}]",
        rec.job.status.as_str(),
        steps.join(", "),
        entries.join(", ")
    )
}
