//! # lucius-core
//!
//! The deterministic heart of Lucius: models, state machines, the protocol registry,
//! validation, idempotency, the ports and the engine services written against them.
//!
//! ```text
//!   bytes ──validate──▶ ValidatedCommand ──Engine::submit──▶ Store (claim, job, steps,
//!                                                              index, outbox PENDING)
//!   Engine::publish / dispatch ──Publisher──▶ bus ──▶ worker
//!   worker ──ack/heartbeat/complete/fail──▶ Engine ──pure transitions──▶ Store
//!   Engine::sweep (ACK deadline, lease, drift) ──▶ Store
//! ```
//!
//! Architecture invariant: nothing here performs IO or reads a clock. Time comes in as a
//! [`Timestamp`] (the engine reads it from the [`Clock`] port), and every transition is a
//! pure function `(state, event, now) → Result<state, TransitionError>`. Adapters implement
//! [`Store`], [`Publisher`] and [`Clock`]; the in-memory ones live in [`memory`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod directive;
pub mod engine;
pub mod idempotency;
pub mod ids;
pub mod job;
pub mod json;
pub mod lease;
pub mod memory;
pub mod outbox;
pub mod ownership;
pub mod ports;
pub mod protocol;
pub mod record;
pub mod revision;
pub mod step;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;
pub mod transition;
pub mod validation;

pub use directive::{Directive, DIRECTIVE_SCHEMA_VERSION};
pub use engine::{Engine, EngineConfig, EngineError};
pub use ids::{JobId, OutboxId, Partition, StepId, TenantId};
pub use job::{Job, JobStatus};
pub use json::Json;
pub use lease::{Fence, Lease, LeaseError};
pub use outbox::{OutboxEntry, OutboxStatus, PublishRetryPolicy};
pub use ports::{
    Clock, CreateOutcome, EndedJob, LeaseStore, OutboxQuery, PublishError, Publisher, Store,
    StoreError, StoreErrorKind,
};
pub use protocol::{ProtocolRegistry, ProtocolSpec, StepSpec};
pub use record::{Changes, IdempotencyRecord, JobIndexEntry, JobRecord, NewJob};
pub use revision::Revision;
pub use step::{Failure, Step, StepStatus};
pub use time::{Millis, Timestamp};
pub use transition::{Event, TransitionError};
pub use validation::{Envelope, FieldError, InvalidCode, InvalidCommand, ValidatedCommand};
