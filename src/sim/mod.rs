//! The deterministic cluster simulator: N nodes hosting G Raft groups on one thread and one
//! virtual clock, with a seeded faulty network, disks that complete writes in order after a
//! latency, crashes that keep only what reached the disk, and the Raft safety invariants
//! checked after every event. One `u64` seed reproduces a run exactly: every random choice
//! comes from `Rng::stream(seed, purpose)` with one stream per purpose (network, disk, ticks,
//! crashes, workload, faults, harness), so that draws for one purpose never shift another's.
//! No clock, thread, file or socket is touched.
//!
//! # Layout
//! - [`config`]: [`SimConfig`] and the Raft defaults every member gets: what a cluster is made of.
//! - [`cluster`]: [`Cluster`]: the event loop, the Ready loop, crash and restart, the test API.
//! - [`kv_lab`]: the lab's KV workload (GenericTest) and its scenarios, shared by the tests
//!   and `shardcore sim kv`; its runs become JSON-lines histories.
//! - [`shardctl_lab`]: the lab's shard controller checks (`check`, same config on every
//!   replica) and a history check of linearizable queries and exactly-once changes; the
//!   controller itself runs on one group of a [`Cluster`] (`SimConfig::controller`).
//! - [`shardkv_lab`]: the lab's sharded KV setting (three groups of three nodes and a
//!   controller; `SimConfig::group_members` puts groups on node subsets), its operations,
//!   a concurrent append workload, the history and persisted-size checks; the shard groups run
//!   on a [`Cluster`] (`SimConfig::shardkv`), their inquiries over the simulated network.
//! - [`lab`]: the MIT 6.5840 tester's helpers (`check_one_leader`, `one`, `wait`, ...).
//! - [`network`]: who can talk to whom; delays, losses, reordering.
//! - [`disk`]: per-node FIFO write queues and the durable state they build.
//! - [`app`]: the application state machine (a chain hash) and its snapshots.
//! - [`invariants`]: election safety, log matching, leader completeness, state-machine safety.
//! - [`chaos`]: a random workload and random faults, for the swarm test and the CLI.
//! - [`stats`]: message and byte counters. [`trace`]: the readable event record.
//!
//! ```
//! use bytes::Bytes;
//! use shardcore::sim::{Cluster, SimConfig};
//!
//! // Three nodes, one group, a reliable network; everything follows from seed 7.
//! let mut cluster = Cluster::new(SimConfig::new(7, 3));
//! let leader = cluster.check_one_leader(1);
//! cluster.disconnect(leader);
//! // The other two elect a leader and commit (the lab's `one`: propose, wait for 2 nodes).
//! let index = cluster.one(1, Bytes::from_static(b"x=1"), 2, true);
//! cluster.connect(leader);
//! cluster.one(1, Bytes::from_static(b"x=2"), 3, true);
//! assert_eq!(cluster.committed(1, index).unwrap().data, Bytes::from_static(b"x=1"));
//! assert_eq!(cluster.check_agreement(1, 1_000), cluster.max_committed(1));
//! ```

pub mod app;
pub mod chaos;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod invariants;
pub mod kv_lab;
pub mod lab;
pub mod network;
mod queue;
pub mod shardctl_lab;
pub mod shardkv_lab;
pub mod stats;
pub mod trace;

pub use app::AppState;
pub use chaos::{Chaos, ChaosConfig, ChaosCounts};
pub use cluster::{
    Cluster, CompletedOp, ControllerConfig, CtlCompletedOp, ObservedRead, ShardCompletedOp,
    ShardKvSimConfig,
};
pub use config::{sim_raft_defaults, SimConfig, TraceMode};
pub use invariants::CommittedEntry;
pub use lab::LAB_ELECTION_TIMEOUT_MS;
pub use trace::{TraceEvent, TraceKind};
