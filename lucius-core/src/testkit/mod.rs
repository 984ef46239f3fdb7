//! Test support, behind the `testkit` feature: fixtures and the store conformance suite
//! that every [`crate::Store`] implementation runs.

pub mod conformance;
mod fixtures;

pub use fixtures::{command, new_job, HangingPublisher};
