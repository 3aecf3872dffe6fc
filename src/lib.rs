//! shardcore: a thread-per-core, replicated, sharded key/value server with a MapReduce engine.
//!
//! # Layout
//! - [`raft`]: the sans-I/O Raft consensus core (elections, replication, snapshots, ReadIndex,
//!   leadership transfer); one `RawNode` per group, any number of groups per process.
//! - [`rng`]: the seeded pseudo-random generator used by the core and the simulator.
//! - [`sim`]: the deterministic cluster simulator: N nodes on virtual time in one thread, a seeded
//!   faulty network, crashes that keep only what was durable, invariant checks after every step.
#![deny(missing_docs)]

pub mod raft;
pub mod rng;
pub mod sim;
