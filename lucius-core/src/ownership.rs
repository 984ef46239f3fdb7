//! [`PartitionOwner`]: one dispatcher's view of which partitions it owns.
//!
//! Every round, the dispatcher announces itself, counts the live dispatchers `n`, and aims
//! to hold `ceil(m / n)` of the `m` candidate partitions: it renews what it holds, releases
//! what is over its share (so newcomers get work), and takes free or expired leases up to
//! its share. A dispatcher that dies stops renewing; its leases expire within one lease
//! period and the others take them over (with a higher epoch) in their next rounds.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::ids::Partition;
use crate::lease::{Fence, Lease};
use crate::ports::{Clock, LeaseStore, StoreError, StoreErrorKind};
use crate::time::{Millis, Timestamp};

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnershipConfig {
    /// How long a lease lasts without renewal (`LUCIUS_LEASE_DURATION`, default 30 s).
    /// Rounds must come well within it: the binaries require the round interval to be at
    /// most a third of it.
    pub lease_duration: Millis,
    /// Margin for clock skew between machines: a holder stops trusting its lease this long
    /// before it expires and reads it again before each publication (default 2 s).
    pub skew_margin: Millis,
}

impl Default for OwnershipConfig {
    fn default() -> Self {
        OwnershipConfig {
            lease_duration: Millis(30_000),
            skew_margin: Millis(2_000),
        }
    }
}

/// What one round of [`PartitionOwner::rebalance`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebalance {
    /// Live dispatchers seen, this one included.
    pub members: usize,
    /// The share this dispatcher aims for.
    pub target: usize,
    /// Leases taken this round.
    pub acquired: Vec<Partition>,
    /// Leases found lost this round.
    pub lost: Vec<Partition>,
    /// Leases given up this round.
    pub released: Vec<Partition>,
    /// Fences of every partition held after the round.
    pub held: Vec<Fence>,
}

/// One dispatcher's leases.
pub struct PartitionOwner {
    me: String,
    leases: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    config: OwnershipConfig,
    held: BTreeMap<Partition, Lease>,
}

impl std::fmt::Debug for PartitionOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionOwner")
            .field("me", &self.me)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PartitionOwner {
    /// A dispatcher named `me` (unique among dispatchers) holding nothing yet.
    pub fn new(
        me: impl Into<String>,
        leases: Arc<dyn LeaseStore>,
        clock: Arc<dyn Clock>,
        config: OwnershipConfig,
    ) -> Self {
        PartitionOwner {
            me: me.into(),
            leases,
            clock,
            config,
            held: BTreeMap::new(),
        }
    }

    /// This dispatcher's name.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// Fences of the partitions held now.
    pub fn fences(&self) -> Vec<Fence> {
        self.held.values().map(|l| self.fence(l)).collect()
    }

    fn fence(&self, l: &Lease) -> Fence {
        Fence {
            partition: l.partition.clone(),
            owner: self.me.clone(),
            epoch: l.epoch,
            valid_until: Timestamp(
                l.expires_at
                    .0
                    .saturating_sub(self.config.skew_margin.0 as i64),
            ),
            skew_margin: self.config.skew_margin,
        }
    }

    /// One round: announce, renew, release extras, acquire up to the fair share of
    /// `candidates`.
    pub async fn rebalance(&mut self, candidates: &[Partition]) -> Result<Rebalance, StoreError> {
        let now = self.clock.now();
        let d = self.config.lease_duration;
        self.leases.announce(&self.me, now.plus(d)).await?;
        let members = self
            .leases
            .members()
            .await?
            .into_iter()
            .filter(|(m, until)| *until > now || m == &self.me)
            .count()
            .max(1);
        let rows: BTreeMap<Partition, Lease> = self
            .leases
            .leases()
            .await?
            .into_iter()
            .map(|l| (l.partition.clone(), l))
            .collect();
        let target = candidates.len().div_ceil(members);
        let mut out = Rebalance {
            members,
            target,
            ..Rebalance::default()
        };

        // Renew what is held; drop what was lost or is no longer a candidate.
        for (p, mine) in std::mem::take(&mut self.held) {
            let row = rows.get(&p);
            let renewed = row.and_then(|r| r.renew(&self.me, mine.epoch, d, now).ok());
            match renewed {
                Some(next) if candidates.contains(&p) => match self.leases.put_lease(next).await {
                    Ok(stored) => {
                        self.held.insert(p, stored);
                    }
                    Err(e) if e.kind == StoreErrorKind::Conflict => out.lost.push(p),
                    Err(e) => {
                        // Unknown outcome: keep the lease we believe we hold; the fence
                        // check before publishing protects against being wrong.
                        self.held.insert(p, mine);
                        return Err(e);
                    }
                },
                Some(_) => {
                    if let Some(r) = row {
                        self.give_up(r, &mut out).await;
                    }
                }
                None => out.lost.push(p),
            }
        }

        // Release what is over the share, so newcomers get work.
        while self.held.len() > target {
            let Some((p, _)) = self
                .held
                .iter()
                .next_back()
                .map(|(p, l)| (p.clone(), l.clone()))
            else {
                break;
            };
            if let Some(l) = self.held.remove(&p) {
                self.give_up(&l, &mut out).await;
            }
        }

        // Take free or expired leases up to the share, starting at an offset of our own so
        // that dispatchers starting together try different partitions first.
        if self.held.len() < target && !candidates.is_empty() {
            let start = offset(&self.me, candidates.len());
            for i in 0..candidates.len() {
                if self.held.len() >= target {
                    break;
                }
                let p = &candidates[(start + i) % candidates.len()];
                if self.held.contains_key(p) {
                    continue;
                }
                let row = rows.get(p);
                let Ok(next) = Lease::acquire(row, p, &self.me, d, now) else {
                    continue;
                };
                match self.leases.put_lease(next).await {
                    Ok(stored) => {
                        out.acquired.push(p.clone());
                        self.held.insert(p.clone(), stored);
                    }
                    Err(e) if e.kind == StoreErrorKind::Conflict => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        out.held = self.fences();
        Ok(out)
    }

    /// Releases every lease (on shutdown), so others can take them at once.
    pub async fn release_all(&mut self) -> Vec<Partition> {
        let mut out = Rebalance::default();
        for (_, l) in std::mem::take(&mut self.held) {
            self.give_up(&l, &mut out).await;
        }
        // Leaving the member list lets the others' shares grow at once.
        let _ = self.leases.announce(&self.me, self.clock.now()).await;
        out.released
    }

    async fn give_up(&self, l: &Lease, out: &mut Rebalance) {
        if let Ok(r) = l.release(&self.me, l.epoch, self.clock.now()) {
            if self.leases.put_lease(r).await.is_ok() {
                out.released.push(l.partition.clone());
            }
        }
    }
}

fn offset(me: &str, n: usize) -> usize {
    // FNV-1a: stable across runs and platforms.
    let h = me.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % n as u64) as usize
}

#[cfg(test)]
mod tests;
