//! shardcore-io: the runtime a node runs on, and the only crate that names it.
//!
//! A node runs one executor per CPU core, pinned to that core. A core owns its Raft groups and
//! their data outright (shared-nothing): a request that arrives on the wrong core travels to the
//! owner as a message, never through a lock. This crate owns the machinery for that: executors,
//! the cross-core message mesh, sockets and timers. The system in `shardcore` (`src/`) drives it
//! and stays unaware of which runtime is underneath, so moving to another io_uring runtime touches
//! this crate only.
//!
//! # Layout
//! - [`limits`]: the named bounds of the runtime (mesh queue capacity, connections, buffers,
//!   the tick), each with the reason for its number.
//! - [`placement`]: which core of a node owns a Raft group, a pure function pinned by a golden
//!   test because it is part of the on-disk layout.
//!
//! # What exists and what comes
//! Built now: the bounds and the placement function above.
//!
//! Not built yet (arrives with the server):
//! - one glommio executor per core, pinned, each with its own io_uring;
//! - the mesh: a bounded lock-free queue for every ordered pair of cores (crossbeam), drained
//!   every scheduler turn; a full queue pushes back on the sender, which stops reading its
//!   sockets until the queue drains, so overload slows clients instead of growing memory;
//! - TCP: listeners on every core (SO_REUSEPORT), client connections with framing from
//!   `shardcore-protocol` (a malformed frame closes that connection and nothing else), and one
//!   connection per peer node that coalesces the Raft traffic of all groups bound for that node
//!   into shared frames (one heartbeat frame carries many groups);
//! - timers: a tick every [`limits::TICK_INTERVAL_MS`] delivered to each core's groups.
#![deny(missing_docs)]

pub mod limits;
pub mod placement;

pub use placement::{core_for_group, CoreId};
