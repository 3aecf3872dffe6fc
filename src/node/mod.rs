//! The node: a process serving KV groups from every core.
//!
//! - [`placement`]: key to group, group to core (pure, pinned by golden tests).
//! - [`core`]: one core's groups as a pure state machine: Readies in, one write batch per turn
//!   (group commit), messages and replies out. The simulator and the unit tests drive it
//!   without any I/O.
//! - [`disk`]: one core's write-ahead log and snapshot store: recovery into each group's boot
//!   state, and the blocking write of a batch.

pub mod core;
pub mod disk;
pub mod placement;
