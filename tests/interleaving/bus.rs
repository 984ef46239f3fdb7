//! The simulated bus: a [`Publisher`] whose `publish` performs its effect at the call
//! (delivers, possibly twice, or not) and then yields; under chaos it fails, answers `401`,
//! or hangs forever after delivering or not. At each call by a dispatcher it checks the
//! dispatcher's lease is still valid.

use std::sync::Arc;

use async_trait::async_trait;
use lucius::{Directive, PublishError, Publisher};
use rand::Rng;

use crate::world::{lock, yield_now, Shared, World};

/// What a publish call does.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Deliver(usize),
    Transient,
    Permanent,
    Hang { delivered: bool },
}

/// The bus every process publishes to.
pub(crate) struct SimBus {
    pub(crate) sim: Shared,
}

#[async_trait]
impl Publisher for SimBus {
    async fn publish(&self, d: &Directive) -> Result<(), PublishError> {
        let fate = lock(&self.sim).on_publish(d);
        yield_now(&self.sim).await;
        match fate {
            Fate::Deliver(_) => Ok(()),
            Fate::Transient => Err(PublishError::Transient("503 server busy".into())),
            Fate::Permanent => Err(PublishError::Permanent("401 unauthorized".into())),
            Fate::Hang { .. } => {
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    }
}

impl World {
    /// The effect of a publish call, at the call.
    fn on_publish(&mut self, d: &Directive) -> Fate {
        self.check_publisher_lease(d);
        let fate = if !self.chaos {
            Fate::Deliver(1)
        } else if self.now < self.bus.outage_until {
            match self.rng.random_range(0..10) {
                0..7 => Fate::Transient,
                _ => Fate::Hang { delivered: false },
            }
        } else {
            match self.rng.random_range(0..1000) {
                0..750 => Fate::Deliver(1),
                750..850 => Fate::Deliver(2),
                850..920 => Fate::Transient,
                920..925 => Fate::Permanent,
                925..965 => Fate::Hang { delivered: false },
                _ => Fate::Hang { delivered: true },
            }
        };
        let copies = match fate {
            Fate::Deliver(n) => n,
            Fate::Hang { delivered: true } => 1,
            _ => 0,
        };
        let id = d.directive_id.to_string();
        if copies == 0 || matches!(fate, Fate::Hang { .. }) {
            let tick = self.tick;
            self.bus
                .failed_calls
                .entry(id.clone())
                .or_default()
                .push(tick);
        }
        for _ in 0..copies {
            self.bus.queue.push(Arc::new(d.clone()));
        }
        self.bus.deliveries += copies;
        if copies > 0 {
            self.bus.delivered.insert(id.clone());
        }
        self.note(format!("publish {id}: {fate:?}"));
        fate
    }

    /// No publication by a dispatcher after its lease's validity: the true lease row must
    /// still carry the dispatcher's epoch and outlive `now` by more than any clock's skew
    /// (so no other dispatcher can have taken it over).
    fn check_publisher_lease(&mut self, d: &Directive) {
        let Some(f) = self.running().and_then(|a| a.fence.clone()) else {
            return;
        };
        let row = self.lease_row(&f.partition);
        let ok = row.as_ref().is_some_and(|l| {
            l.epoch == f.epoch
                && l.owner.as_deref() == Some(f.owner.as_str())
                && self.now.plus(self.max_skew) < l.expires_at
        });
        if !ok {
            let found = row.map_or_else(
                || "no lease row".to_owned(),
                |l| {
                    format!(
                        "owner {:?} epoch {} expiring at t+{}ms",
                        l.owner,
                        l.epoch,
                        l.expires_at.0 - self.start.0
                    )
                },
            );
            self.violation(format!(
                "dispatcher {} published {} under epoch {} of {} at t+{}ms (+{} ms max skew), \
                 but the lease row shows {found}",
                f.owner,
                d.directive_id,
                f.epoch,
                f.partition,
                self.now.0 - self.start.0,
                self.max_skew.0
            ));
        }
    }
}
