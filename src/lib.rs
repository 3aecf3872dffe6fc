//! shardcore: a thread-per-core, replicated, sharded key/value server with a MapReduce engine.
//!
//! # Layout
//! - [`client`]: the client library (pipelined connections, leader and group routing, sessions
//!   for exactly-once retries, timeouts) and the `shardcore kv` command.
//! - [`history`]: operation histories as JSON lines (one completed client operation per line),
//!   their reader and writer.
//! - [`kv`]: the fault-tolerant key/value service on Raft: the state machine with exactly-once
//!   sessions, one replica's request handling, and the client's retry logic (all sans-I/O).
//! - [`linearizability`]: the linearizability checker (Wing & Gong / Lowe search, per-key
//!   partitions, a step budget instead of a timeout) and its key/value model.
//! - [`mapreduce`]: the MapReduce engine: a sans-I/O planner behind the coordinator, workers
//!   running one task per core, built-in apps (`wc`, `indexer`, `grep`, `exec`), `shardcore mr`.
//! - [`node`]: the node: key and group placement, one core's groups as a pure state machine,
//!   and that core's durable storage.
//! - [`raft`]: the sans-I/O Raft consensus core (elections, replication, snapshots, ReadIndex,
//!   leadership transfer); one `RawNode` per group, any number of groups per process.
//! - [`rng`]: the seeded pseudo-random generator used by the core and the simulator.
//! - [`shardctl`]: the shard controller: numbered shard-to-group configurations with balanced,
//!   minimal-movement rebalancing, replicated as its own Raft group (sans-I/O).
//! - [`shardkv`]: the sharded key/value service: shard groups that follow the controller's
//!   configurations in order and migrate shards with their sessions (sans-I/O).
//! - [`sim`]: the deterministic cluster simulator: N nodes on virtual time in one thread, a seeded
//!   faulty network, crashes that keep only what was durable, invariant checks after every step.
#![deny(missing_docs)]

pub mod client;
pub mod history;
pub mod kv;
pub mod linearizability;
pub mod mapreduce;
pub mod node;
pub mod raft;
pub mod rng;
pub mod shardctl;
pub mod shardkv;
pub mod sim;
pub mod wire;
