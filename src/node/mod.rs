//! The node: a process serving KV groups from every core.
//!
//! - [`cli`]: the `server`, `kv` and `cluster local` commands' arguments and runners.
//! - [`config`]: the node's configuration (TOML and embedded defaults).
//! - [`placement`]: key to group, group to core (pure, pinned by golden tests).
//! - [`core`]: one core's groups as a pure state machine: Readies in, one write batch per turn
//!   (group commit), messages and replies out. The simulator and the unit tests drive it
//!   without any I/O.
//! - [`disk`]: one core's write-ahead log and snapshot store: recovery into each group's boot
//!   state, and the blocking write of a batch.
//! - [`server`]: the runtime glue: a `CoreNode` per core on `shardcore_io`, its log thread,
//!   client and peer sockets, the mesh between cores, graceful shutdown.
//! - [`local`]: `shardcore cluster local`, a cluster of server processes on 127.0.0.1.

pub mod cli;
pub mod config;
pub mod core;
pub mod disk;
pub mod local;
pub mod placement;
pub mod server;
