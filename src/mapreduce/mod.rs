//! MapReduce: a coordinator that plans a job and hands out tasks under leases, and workers that
//! run map and reduce tasks on every core, surviving crashed and stalled workers and a
//! restarted coordinator (Dean & Ghemawat, OSDI 2004; the MIT 6.5840 lab's rules).
//!
//! # Layout
//! - [`planner`]: the coordinator's brain, a sans-I/O state machine (splits, phases, leases,
//!   first completion wins, backup copies, bounded retries, its durable state). Time arrives as
//!   an argument; it never touches a clock, a file or a socket (`tests/tidy.rs` checks).
//! - [`coordinator`]: the coordinator's runtime on one `shardcore_io` core: worker connections,
//!   the 10 ms tick, persisting the planner's state, progress and the JSON report.
//! - [`state_file`]: the coordinator's checksummed job state, replaced atomically.
//! - [`worker`]: a worker process, one `shardcore_io` executor per core (coordinator connection,
//!   heartbeats, fetch server) and one task thread per core (the task's blocking work).
//! - [`slots`]: machine-wide CPU slots (a `flock` per CPU) so worker processes sharing a
//!   machine run at most one task per CPU, each pinned to its CPU.
//! - [`task`]: running one map or reduce task: reading splits by whole lines, the checksummed
//!   intermediate format, atomic outputs.
//! - [`apps`]: the [`apps::App`] trait and the built-in apps `wc`, `indexer`, `grep`, `exec`.
//! - [`sequential`]: the sequential reference every distributed run must equal.
//! - [`glob`]: input patterns. [`corpus`]: the benchmark's seeded Zipf corpus.
//! - [`cli`]: `shardcore mr run | coordinator | worker | sequential | gen-corpus`.
//!
//! The messages between them are `FrameKind::MapReduce` frames (`crate::wire::mapreduce`),
//! verified on receipt; a bad frame closes its connection.

pub mod apps;
pub mod cli;
pub mod coordinator;
pub mod corpus;
pub mod glob;
pub mod planner;
pub mod sequential;
pub mod slots;
pub mod state_file;
pub mod task;
pub mod worker;
