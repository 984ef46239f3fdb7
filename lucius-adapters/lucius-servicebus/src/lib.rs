//! # lucius-servicebus
//!
//! Lucius on Azure Service Bus, through `azure_messaging_servicebus` (its REST API):
//! the [`ServiceBusPublisher`] implements the core `Publisher` port, and the [`worker`]
//! module lets a Rust service receive directives and report back to the orchestrator.
//!
//! ```text
//!  Engine ──Publisher::publish(&Directive)──▶ ServiceBusPublisher
//!     │                                         │ DirectiveMessage::render (body = JSON,
//!     │                                         │   MessageId = directiveId, SessionId =
//!     │                                         │   PartitionKey = jobId, properties)
//!     │                                         ▼
//!     │                     azure_messaging_servicebus ──HttpClient──▶ Service Bus
//!     │                     (Redirect rewrites https://{ns}.servicebus.windows.net/…
//!     │                      to http://host:port/… for an emulator or a local fake)
//!     │                                                                  │ peek-lock
//!     ▼                                                                  ▼
//!  orchestrator HTTP API ◀──ack / heartbeat / complete / fail── worker::Worker ──▶ handler
//! ```
//!
//! The wire format (body, headers, properties) is documented for workers in other
//! languages in `docs/directives.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connection;
pub mod message;
pub mod publisher;
pub mod transport;
pub mod worker;

pub use connection::{ConnectionString, ConnectionStringError};
pub use lucius_core::Directive;
pub use message::DirectiveMessage;
pub use publisher::{ConfigError, ServiceBusPublisher};
pub use worker::{Failure, Handled, Source, Worker, WorkerConfig, WorkerError};
