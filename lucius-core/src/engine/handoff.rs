//! The hand-off of a new job's record from intake to its inline publication.
//!
//! [`Engine::submit`](super::Engine::submit) gets the job back from the store exactly as
//! written ([`crate::CreateOutcome::Created`]); the runtime publishes the first directive
//! later, from a background task that holds only its id ([`super::Outcome::to_publish`]).
//! Intake leaves the record here, keyed by that id, and the publication (or a pull claim)
//! takes it once and plans its commit on it instead of reading the job again: one store
//! round trip fewer on the path every command takes.
//!
//! A record is only a starting point. Every commit is revision-guarded, so a record that
//! went stale costs a conflict and a reload, never a wrong write; but the publication
//! itself happens before its commit, so a stale record could send a directive whose step
//! has moved on. Stale records are kept rare on both sides of the process boundary:
//! * any commit this engine (or a clone of it) makes to the job drops its record (a worker
//!   acknowledging early, a cancel, an admin retry, a sweep);
//! * writers in other processes leave a new entry alone for the dispatch grace (see
//!   [`EngineConfig::dispatch_grace`](super::EngineConfig::dispatch_grace)), so a record
//!   is used only while its entry is younger than that; an older one is dropped and the
//!   publisher reads the job as before.
//!
//! What is left — say a cancel through another node in the first seconds of a job — may
//! publish a directive that is no longer wanted; the worker's calls for it are refused,
//! and the directive id lets brokers drop a duplicate.
//!
//! The map is bounded ([`CAPACITY`] records, oldest first out): records nobody takes (a
//! pull-mode entry another node claims, a publication the background pool had no room
//! for) are pushed out by newer ones, and a publication that finds nothing reads the job.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::ids::{JobId, OutboxId};
use crate::record::JobRecord;
use crate::time::Timestamp;

/// Records held at most. A record is a few hundred bytes beside what it shares with the
/// store (payloads and directives are reference-counted), and the background publishers
/// take one within milliseconds of intake, so this covers bursts of thousands of
/// commands per second while bounding memory at a few megabytes.
pub(crate) const CAPACITY: usize = 4096;

/// Records of new jobs waiting for their first publication.
#[derive(Debug)]
pub(crate) struct HandOff {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By job: the entry the record was left for, the record, and until when it may be
    /// used (exclusive).
    records: HashMap<JobId, Left>,
    /// Jobs in the order their records were left, including ones already taken: its
    /// length bounds the map (every key of `records` is in it).
    order: VecDeque<JobId>,
}

#[derive(Debug)]
struct Left {
    entry: OutboxId,
    record: Box<JobRecord>,
    until: Timestamp,
}

impl Default for HandOff {
    fn default() -> Self {
        HandOff::new(CAPACITY)
    }
}

impl HandOff {
    /// A hand-off holding at most `capacity` records (0 holds none).
    pub(crate) fn new(capacity: usize) -> HandOff {
        HandOff {
            capacity,
            inner: Mutex::default(),
        }
    }

    /// Leaves `rec` for the publication of entry `id`, usable before `until`; the oldest
    /// record goes if the map is full.
    pub(crate) fn leave(&self, id: OutboxId, rec: Box<JobRecord>, until: Timestamp) {
        if self.capacity == 0 {
            return;
        }
        let job = rec.job.id.clone();
        let mut g = self.lock();
        while g.order.len() >= self.capacity {
            if let Some(old) = g.order.pop_front() {
                g.records.remove(&old);
            }
        }
        g.order.push_back(job.clone());
        let left = Left {
            entry: id,
            record: rec,
            until,
        };
        g.records.insert(job, left);
    }

    /// Takes the record left for entry `id`, if there is one and it may still be used at
    /// `now`. Either way nothing is left for `id` afterwards.
    pub(crate) fn take(&self, id: &OutboxId, now: Timestamp) -> Option<JobRecord> {
        let job = id.job_id();
        let mut g = self.lock();
        if g.records.get(&job).is_none_or(|l| l.entry != *id) {
            return None;
        }
        let left = g.records.remove(&job)?;
        (now < left.until).then_some(*left.record)
    }

    /// Drops the record left for `job`, if any: the job was just changed, so the record is
    /// stale.
    pub(crate) fn forget(&self, job: &JobId) {
        let mut g = self.lock();
        if !g.records.is_empty() {
            g.records.remove(job);
        }
    }

    /// Records held (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().records.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map is a cache: a panic elsewhere while it was held leaves it consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::command;
    use crate::time::Millis;

    const T0: Timestamp = Timestamp(1_709_596_800_000);

    fn record(key: &str) -> (OutboxId, Box<JobRecord>) {
        let new = crate::engine::build_new_job(&command("acme", key, 0), T0);
        let id = new.outbox.id.clone();
        let rec = JobRecord {
            job: new.job,
            steps: new.steps,
            outbox: vec![new.outbox],
        };
        (id, Box::new(rec))
    }

    #[test]
    fn a_record_is_taken_once_and_only_while_it_may_be_used() {
        let h = HandOff::new(8);
        let until = T0.plus(Millis(5_000));
        let (a, rec_a) = record("a");
        let (b, rec_b) = record("b");
        h.leave(a.clone(), rec_a.clone(), until);
        h.leave(b.clone(), rec_b, until);
        assert_eq!(h.take(&a, T0), Some(*rec_a));
        assert_eq!(h.take(&a, T0), None, "taken once");
        assert_eq!(h.take(&b, until), None, "too old: dropped");
        assert_eq!(h.len(), 0, "and not kept");
    }

    #[test]
    fn the_oldest_records_make_room() {
        let h = HandOff::new(2);
        let until = T0.plus(Millis(5_000));
        let recs: Vec<_> = ["a", "b", "c"].into_iter().map(record).collect();
        for (id, rec) in &recs {
            h.leave(id.clone(), rec.clone(), until);
        }
        assert_eq!(h.len(), 2);
        assert_eq!(h.take(&recs[0].0, T0), None, "the oldest went");
        assert!(h.take(&recs[1].0, T0).is_some());
        assert!(h.take(&recs[2].0, T0).is_some());
        // Taken ids still count against the bound until newer ones push them out.
        let (d, rec_d) = record("d");
        h.leave(d.clone(), rec_d, until);
        assert!(h.take(&d, T0).is_some());
        // A change to the job drops its record; another entry of the job takes nothing.
        let (e, rec_e) = record("e");
        h.leave(e.clone(), rec_e.clone(), until);
        let other = OutboxId::for_attempt(&rec_e.job.id, 0, 2);
        assert_eq!(h.take(&other, T0), None);
        h.forget(&rec_e.job.id);
        assert_eq!(h.take(&e, T0), None, "forgotten");
        let none = HandOff::new(0);
        none.leave(recs[0].0.clone(), recs[0].1.clone(), until);
        assert_eq!(none.len(), 0, "capacity 0 holds nothing");
    }
}
