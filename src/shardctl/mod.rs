//! The shard controller: a replicated service, its own Raft group, that publishes numbered
//! configurations assigning each of S shards to a replica group and naming every group's
//! replicas (the lab's shardctrler). Shard groups follow the configurations in order.
//!
//! # Layout
//! - [`config`]: [`Config`] and the pure operations on it (join, leave, move) with the
//!   deterministic, balanced, minimal-movement rebalancing.
//! - [`command`]: the controller's operations ([`CtlOp`]: join, leave, move, query), replies,
//!   errors, and a write's encoding in a log entry.
//! - [`store`]: the state machine: the whole history of configurations and the exactly-once
//!   session table; snapshots of both.
//! - [`client`]: the controller's clerk (leader finding, retries with the same sequence).
//!
//! One replica is the generic [`crate::kv::ReplicaServer`] around [`CtlStore`] ([`CtlServer`]):
//! joins, leaves and moves are proposed and answered when applied; queries go through ReadIndex
//! (linearizable, no log write) and are served once applied ≥ the read index. All of it is
//! sans-I/O and deterministic, like [`crate::kv`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use shardcore::shardctl::{Config, Replica};
//!
//! let c0 = Config::initial(10);
//! let c1 = c0.join(&BTreeMap::from([(1, vec![Replica::on(1)])])).unwrap();
//! let c2 = c1.join(&BTreeMap::from([(2, vec![Replica::on(2)])])).unwrap();
//! // Balanced, and only the shards the new group needed moved.
//! assert_eq!(c2.shards, vec![1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
//! assert_eq!(c2.num, 2);
//! ```

pub mod client;
pub mod command;
pub mod config;
pub mod store;

pub use client::{CtlClerk, CtlOutcome};
pub use command::{CtlError, CtlOp, CtlReply, CtlRequest, CtlResponse, LATEST};
pub use config::{Config, ConfigError, Replica, ShardId, DEFAULT_SHARDS, NO_GROUP};
pub use store::{CtlSettings, CtlStore};

/// One controller replica: the generic replica server around the controller's store.
pub type CtlServer = crate::kv::ReplicaServer<CtlStore>;
