//! A sans-I/O Raft consensus core (Ongaro & Ousterhout, "In Search of an Understandable Consensus
//! Algorithm", and Ongaro's thesis "Consensus: Bridging Theory and Practice").
//!
//! # Layout
//! - [`types`]: entries, hard state, snapshots, messages, errors: the values at the boundary.
//! - [`config`]: one member's settings and their bounds.
//! - [`log`]: the in-memory log with its handed-out, durable, committed and applied positions.
//! - `progress`: the leader's view of each follower (probe, pipelined replicate, snapshot).
//! - `machine`: the Raft state machine itself: roles, elections, replication, reads, transfer.
//! - [`node`]: [`RawNode`], the whole interface: inputs in, a [`Ready`] out, `advance`.
//! - `rng`: the seeded random stream (no unseeded randomness anywhere in the core).
//!
//! Nothing here awaits, reads a clock, or touches a socket or file: time arrives as ticks,
//! randomness from `Config::seed`. One group is one [`RawNode`]; a process hosts any number.

pub mod config;
pub mod log;
mod machine;
pub mod node;
mod progress;
pub mod types;

pub use config::Config;
pub use node::{RawNode, Ready, Restore};
pub use types::*;

#[cfg(test)]
mod tests;
