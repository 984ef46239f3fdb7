//! Partition leases: which dispatcher owns a partition, until when, under which epoch.
//!
//! A lease is taken when free (never held, released, or expired) and each takeover raises
//! the **epoch**. Dispatchers stamp the outbox entries they write with their epoch (the
//! fencing token), so a dispatcher that was paused past its lease and wakes up finds a
//! newer epoch and stops instead of publishing work it no longer owns.

use serde::{Deserialize, Serialize};

use crate::ids::Partition;
use crate::revision::Revision;
use crate::time::{Millis, Timestamp};

/// One partition's lease row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The partition it covers.
    pub partition: Partition,
    /// The owning dispatcher, `None` once released.
    pub owner: Option<String>,
    /// When the lease ends unless renewed.
    pub expires_at: Timestamp,
    /// Raised by every takeover; the fencing token.
    pub epoch: u64,
    /// Optimistic-concurrency token.
    #[serde(skip)]
    pub revision: Revision,
}

/// Why a lease operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Another dispatcher holds an unexpired lease.
    #[error("partition {partition} is leased to {owner} until {until}")]
    HeldByOther {
        /// The partition.
        partition: Partition,
        /// The holder.
        owner: String,
        /// Its expiry.
        until: Timestamp,
    },
    /// The caller's lease expired or was taken over.
    #[error("the lease on {partition} was lost (now epoch {epoch}, owner {owner:?})")]
    Lost {
        /// The partition.
        partition: Partition,
        /// The current epoch.
        epoch: u64,
        /// The current owner.
        owner: Option<String>,
    },
}

impl Lease {
    /// Whether someone holds it at `now`.
    pub fn is_held(&self, now: Timestamp) -> bool {
        self.owner.is_some() && now < self.expires_at
    }

    /// Whether `me` holds it at `now`.
    pub fn is_held_by(&self, me: &str, now: Timestamp) -> bool {
        self.owner.as_deref() == Some(me) && now < self.expires_at
    }

    /// Takes the lease of `partition` for `me`: a first lease is epoch 1; a takeover of a
    /// free or expired lease raises the epoch. A lease still held is refused, **even under
    /// `me`'s own name**: whoever calls `acquire` does not know that lease's epoch, so the
    /// holder is another process with the same dispatcher id (an earlier incarnation, or
    /// a twin misconfigured with one id) that may still be publishing under its cached
    /// fence. Renewing in place would share its epoch, and taking it over at once would
    /// let it publish on until it next re-reads the row; waiting for the expiry fences it
    /// like any other holder. A holder that knows its epoch extends it with
    /// [`Lease::renew`]; a restarted process regains its partitions within one lease
    /// period (at once after a graceful stop, which releases them).
    pub fn acquire(
        current: Option<&Lease>,
        partition: &Partition,
        me: &str,
        duration: Millis,
        now: Timestamp,
    ) -> Result<Lease, LeaseError> {
        match current {
            None => Ok(Lease {
                partition: partition.clone(),
                owner: Some(me.to_owned()),
                expires_at: now.plus(duration),
                epoch: 1,
                revision: Revision::NEW,
            }),
            Some(l) if l.is_held(now) => Err(LeaseError::HeldByOther {
                partition: partition.clone(),
                owner: l.owner.clone().unwrap_or_default(),
                until: l.expires_at,
            }),
            Some(l) => Ok(Lease {
                owner: Some(me.to_owned()),
                expires_at: now.plus(duration),
                epoch: l.epoch + 1,
                ..l.clone()
            }),
        }
    }

    /// Renews a lease `me` holds at `epoch`.
    pub fn renew(
        &self,
        me: &str,
        epoch: u64,
        duration: Millis,
        now: Timestamp,
    ) -> Result<Lease, LeaseError> {
        if self.epoch == epoch && self.is_held_by(me, now) {
            Ok(Lease {
                expires_at: now.plus(duration),
                ..self.clone()
            })
        } else {
            Err(self.lost())
        }
    }

    /// Gives the lease up so another dispatcher can take it at once.
    pub fn release(&self, me: &str, epoch: u64, now: Timestamp) -> Result<Lease, LeaseError> {
        if self.epoch == epoch && self.owner.as_deref() == Some(me) {
            Ok(Lease {
                owner: None,
                expires_at: now,
                ..self.clone()
            })
        } else {
            Err(self.lost())
        }
    }

    fn lost(&self) -> LeaseError {
        LeaseError::Lost {
            partition: self.partition.clone(),
            epoch: self.epoch,
            owner: self.owner.clone(),
        }
    }
}

/// What a dispatcher proves it owns when it writes: the fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The partition.
    pub partition: Partition,
    /// The dispatcher.
    pub owner: String,
    /// The epoch of its lease.
    pub epoch: u64,
    /// Until when the holder may act without reading the lease again: its expiry less a
    /// margin for clock skew between machines. A publication starts only if it will have
    /// ended (the publish timeout) before this time; otherwise the lease is read again.
    pub valid_until: Timestamp,
    /// The skew margin taken off the lease's expiry to get `valid_until`, applied again
    /// when the lease is re-read.
    pub skew_margin: Millis,
}

impl Fence {
    /// Takes a freshly read lease row into account: the fence stays valid while the row
    /// is held by this owner at this epoch, until the row's expiry less the skew margin.
    /// Returns whether the lease is still this fence's.
    pub fn refresh(&mut self, row: Option<&Lease>, now: Timestamp) -> bool {
        match row {
            Some(l) if l.epoch == self.epoch && l.is_held_by(&self.owner, now) => {
                self.valid_until =
                    Timestamp(l.expires_at.0.saturating_sub(self.skew_margin.0 as i64));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Partition {
        Partition::parse("t#202401").unwrap()
    }

    const D: Millis = Millis(10_000);

    #[test]
    fn first_lease_then_renew_then_takeover_after_expiry() {
        let a = Lease::acquire(None, &p(), "a", D, Timestamp(0)).unwrap();
        assert_eq!(
            (a.epoch, a.owner.as_deref(), a.expires_at),
            (1, Some("a"), Timestamp(10_000))
        );
        let a2 = a.renew("a", 1, D, Timestamp(5_000)).unwrap();
        assert_eq!((a2.epoch, a2.expires_at), (1, Timestamp(15_000)));
        // A process with the same name that does not know the epoch waits for the expiry,
        // then takes over with a new epoch.
        assert!(matches!(
            Lease::acquire(Some(&a2), &p(), "a", D, Timestamp(6_000)),
            Err(LeaseError::HeldByOther { .. })
        ));
        let restarted = Lease::acquire(Some(&a2), &p(), "a", D, Timestamp(15_000)).unwrap();
        assert_eq!(
            (restarted.epoch, restarted.expires_at),
            (2, Timestamp(25_000))
        );
        assert!(restarted.renew("a", 1, D, Timestamp(16_000)).is_err());
        assert!(matches!(
            Lease::acquire(Some(&a2), &p(), "b", D, Timestamp(14_999)),
            Err(LeaseError::HeldByOther { .. })
        ));
        let b = Lease::acquire(Some(&a2), &p(), "b", D, Timestamp(15_000)).unwrap();
        assert_eq!((b.epoch, b.owner.as_deref()), (2, Some("b")));
        // The old holder can neither renew nor release the new lease.
        assert!(matches!(
            b.renew("a", 1, D, Timestamp(15_001)),
            Err(LeaseError::Lost { epoch: 2, .. })
        ));
        assert!(b.release("a", 1, Timestamp(15_001)).is_err());
    }

    #[test]
    fn a_fence_refreshes_only_on_its_own_live_lease_at_its_epoch() {
        let a = Lease::acquire(None, &p(), "a", D, Timestamp(0)).unwrap();
        let fresh = || Fence {
            partition: p(),
            owner: "a".into(),
            epoch: 1,
            valid_until: Timestamp(8_000),
            skew_margin: Millis(2_000),
        };
        let renewed = a.renew("a", 1, D, Timestamp(5_000)).unwrap();
        let mut f = fresh();
        assert!(f.refresh(Some(&renewed), Timestamp(5_000)));
        assert_eq!(f.valid_until, Timestamp(13_000));
        // Same epoch but expired: no longer this fence's.
        assert!(!fresh().refresh(Some(&a), Timestamp(10_000)));
        // Held by me under another epoch (a restart took it over): not this fence's.
        let restarted = Lease::acquire(Some(&a), &p(), "a", D, Timestamp(10_000)).unwrap();
        assert!(!fresh().refresh(Some(&restarted), Timestamp(10_001)));
        // Another owner at my epoch number, or no row at all.
        let other = Lease {
            owner: Some("b".into()),
            ..renewed.clone()
        };
        assert!(!fresh().refresh(Some(&other), Timestamp(5_000)));
        assert!(!fresh().refresh(None, Timestamp(5_000)));
    }

    #[test]
    fn release_frees_at_once_and_the_next_owner_gets_a_new_epoch() {
        let a = Lease::acquire(None, &p(), "a", D, Timestamp(0)).unwrap();
        let r = a.release("a", 1, Timestamp(1)).unwrap();
        assert!(!r.is_held(Timestamp(1)));
        let b = Lease::acquire(Some(&r), &p(), "b", D, Timestamp(2)).unwrap();
        assert_eq!(b.epoch, 2);
    }

    #[test]
    fn an_expired_holder_cannot_renew() {
        let a = Lease::acquire(None, &p(), "a", D, Timestamp(0)).unwrap();
        assert!(a.renew("a", 1, D, Timestamp(10_000)).is_err());
        assert!(a.renew("a", 1, D, Timestamp(9_999)).is_ok());
    }
}
