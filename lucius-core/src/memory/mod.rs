//! In-process adapters: the [`MemoryStore`] (the default backend), the [`MemoryPublisher`]
//! and the [`ManualClock`] tests and simulations drive by hand.

mod clock;
mod publisher;
mod store;

pub use clock::ManualClock;
pub use publisher::MemoryPublisher;
pub use store::{Fault, MemoryStore};
