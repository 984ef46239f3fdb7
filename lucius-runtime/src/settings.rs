//! [`Settings`]: what the runtime runs, as a typed struct with documented defaults. The
//! binaries fill it from `LUCIUS_*` variables; an embedder fills it in code.

use lucius_core::ownership::OwnershipConfig;
use lucius_core::{Millis, Partition};

use crate::background::{PUBLISHERS, QUEUE_PER_PUBLISHER};

/// What [`crate::Lucius::run`] runs, and how the handle publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Republish the due `PENDING` entries of every partition this often (the
    /// orchestrator's outbox retry loop, `LUCIUS_OUTBOX_RETRY_*`). Default: off. When
    /// dispatchers own partitions it publishes only unfenced entries (`docs/operations.md`).
    pub outbox_retry: Option<Millis>,
    /// How partitions are dispatched. Default: [`Dispatch::All`] every second.
    pub dispatch: Dispatch,
    /// Sweep every partition this often (missing ACKs, expired leases, `DEAD` directives,
    /// drift). Default: every 5 s. With [`Dispatch::Owned`] each dispatcher sweeps the
    /// partitions it owns instead, and this is not used.
    pub sweep: Option<Millis>,
    /// Background publishing tasks: publications in flight at once (default 16).
    pub publishers: usize,
    /// Directives each publishing task may hold queued (default 1024). What does not fit
    /// stays `PENDING` for the loops: nothing is lost, only delayed.
    pub queue_per_publisher: usize,
    /// How long [`crate::Lucius::run`] waits, after shutdown, for the round in flight of each
    /// loop and for queued publications (default 30 s).
    pub shutdown_grace: Millis,
    /// Pull mode: how often a waiting poller looks at the store again, for directives that
    /// came due by time (a retry's backoff) or were written by another process (default
    /// 500 ms). A call of this handle that writes a directive wakes pollers at once.
    pub pull_recheck: Millis,
    /// Purge finished jobs older than the engine's retention
    /// ([`lucius_core::EngineConfig::retention`]) this often (default every 60 s; `None`:
    /// never, as with no retention).
    pub purge: Option<Millis>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            outbox_retry: None,
            dispatch: Dispatch::All {
                interval: Millis(1_000),
            },
            sweep: Some(Millis(5_000)),
            publishers: PUBLISHERS,
            queue_per_publisher: QUEUE_PER_PUBLISHER,
            shutdown_grace: Millis(30_000),
            pull_recheck: Millis(500),
            purge: Some(Millis(60_000)),
        }
    }
}

impl Settings {
    /// Settings that run no loop at all: the handle still publishes after each call, and
    /// another process (a dispatcher, `lucius-reconciliation loop`) does the rest.
    pub fn no_loops() -> Settings {
        Settings {
            dispatch: Dispatch::Off,
            sweep: None,
            purge: None,
            ..Settings::default()
        }
    }

    /// With the outbox retry loop every `interval` (`None`: off).
    #[must_use]
    pub fn with_outbox_retry(mut self, interval: Option<Millis>) -> Settings {
        self.outbox_retry = interval;
        self
    }

    /// With this dispatch.
    #[must_use]
    pub fn with_dispatch(mut self, dispatch: Dispatch) -> Settings {
        self.dispatch = dispatch;
        self
    }

    /// With the sweep of every partition every `interval` (`None`: off).
    #[must_use]
    pub fn with_sweep(mut self, interval: Option<Millis>) -> Settings {
        self.sweep = interval;
        self
    }

    /// With this many background publishers, each with `queue` places.
    #[must_use]
    pub fn with_publishers(mut self, publishers: usize, queue: usize) -> Settings {
        self.publishers = publishers;
        self.queue_per_publisher = queue;
        self
    }

    /// With pollers looking at the store again this often.
    #[must_use]
    pub fn with_pull_recheck(mut self, every: Millis) -> Settings {
        self.pull_recheck = every;
        self
    }

    /// With the purge of finished jobs every `interval` (`None`: off).
    #[must_use]
    pub fn with_purge(mut self, interval: Option<Millis>) -> Settings {
        self.purge = interval;
        self
    }

    /// With this shutdown grace.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Millis) -> Settings {
        self.shutdown_grace = grace;
        self
    }
}

/// How partitions are dispatched (their due `PENDING` directives published).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dispatch {
    /// Not by this process (another one dispatches, or nobody needs to).
    Off,
    /// Every partition that holds jobs, unfenced, every `interval`: one process alone
    /// (the all-in-one `lucius`).
    All {
        /// Time between rounds.
        interval: Millis,
    },
    /// Partitions owned through fenced leases shared with other dispatchers
    /// (`lucius-reconciliation loop`); needs a lease store
    /// ([`crate::Builder::leases`]).
    Owned(Owned),
}

/// The lease-owned dispatcher's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// This dispatcher's name among dispatchers (`LUCIUS_DISPATCHER_ID`). Every start
    /// gets a fresh lease epoch even under the same name.
    pub dispatcher_id: String,
    /// What it competes for.
    pub candidates: Candidates,
    /// Time between rounds: at most a third of the lease duration, so leases are renewed
    /// in time ([`crate::Builder::build`] refuses more).
    pub interval: Millis,
    /// The longest wait between polls of a partition that had no work (default 60 s).
    pub idle_ceiling: Millis,
    /// Lease duration and skew margin.
    pub ownership: OwnershipConfig,
}

impl Owned {
    /// A dispatcher named `dispatcher_id` competing for `candidates`, with a 10 s interval,
    /// a 60 s idle ceiling and the default lease timing (30 s, 2 s skew margin).
    pub fn new(dispatcher_id: impl Into<String>, candidates: Candidates) -> Owned {
        Owned {
            dispatcher_id: dispatcher_id.into(),
            candidates,
            interval: Millis(10_000),
            idle_ceiling: Millis(60_000),
            ownership: OwnershipConfig::default(),
        }
    }
}

/// Which partitions a lease-owned dispatcher competes for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// A fixed list.
    Fixed(Vec<Partition>),
    /// Every partition that holds jobs, rediscovered each round.
    Discover,
}
