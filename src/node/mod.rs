//! The node: a process serving, from every core, the KV groups — or, on a sharded node, the
//! sharded KV's shard groups — and the shard controller's group (every node hosts a replica of
//! every group).
//!
//! - [`cli`]: the `server`, `kv`, `ctl` and `cluster local` commands' arguments and runners.
//! - [`config`]: the node's configuration (TOML and embedded defaults).
//! - [`placement`]: key to group, group to core, the controller's reserved group id (pure,
//!   pinned by golden tests).
//! - [`core`]: one core's groups as a pure state machine, each group running one hosted service
//!   (KV, the controller, or a shard group): Readies in, one write batch per turn (group
//!   commit), messages, replies and shard groups' inquiries out. The unit tests drive it
//!   without any I/O.
//! - [`disk`]: one core's write-ahead log and snapshot store: recovery into each group's boot
//!   state.
//! - [`log_writer`]: the core's log writes, driven from its executor (submissions into the
//!   WAL's io_uring, completions through an eventfd), and the snapshot thread.
//! - [`server`]: the runtime glue: a `CoreNode` per core on `shardcore_io`, its log writer,
//!   client and peer sockets, the mesh between cores (requests, replies, Raft messages, shard
//!   groups' inquiries and answers), graceful shutdown.
//! - [`local`]: `shardcore cluster local`, a cluster of server processes on 127.0.0.1.

pub mod cli;
pub mod config;
pub mod core;
pub mod disk;
pub mod local;
pub mod log_writer;
pub mod placement;
pub mod server;
