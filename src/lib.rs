//! keep-rsync: copy Arvados Keep blocks from one cluster to another.
//!
//! # Layout
//!
//! The modules follow the data flow of a run:
//!
//! - [`protocol`]: locators, signatures, rendezvous order (no I/O).
//! - [`sim`]: keepstore-sim, a faithful keepstore for tests, demo and benchmarks.

pub mod protocol;
pub mod sim;
