//! shardcore-bench: the load generator, its latency reports, and the operation histories that
//! the linearizability checker reads.
//!
//! `shardcore-bench` drives a running cluster through the client library with a chosen workload
//! and reports throughput and latency. It measures; it never passes or fails: timings are numbers
//! for people, never assertions in tests.
//!
//! # Layout
//! - [`cli`]: the command line (workload, loop mode, rate, duration, concurrency, key space,
//!   key and value sizes, history file, seed), its bounds, and the operation mix of each workload.
//! - [`history`]: one JSON line per operation (client, op, key, value, expected, output, ok,
//!   call and return times in nanoseconds): a re-export of [`shardcore::history`], whose
//!   reader the linearizability checker uses.
//! - the binary (`src/main.rs`): parses and checks the command line.
//!
//! # What exists and what comes
//! Built now: the command line and its checks, the workloads' operation mixes, and (from
//! `shardcore`) the history record with its writer, reader and checker.
//!
//! Not built yet (arrives with the server and the client library):
//! - the closed loop: each of `--concurrency` clients sends its next operation when the previous
//!   one returns;
//! - the open loop: operations are scheduled at `--rate` per second from a seeded schedule, and
//!   latency is measured from the *scheduled* send time, not the actual one, so a stalled server
//!   is charged for every request that queued behind the stall (no coordinated omission, as in
//!   wrk2);
//! - the report: throughput and latency percentiles (p50, p90, p99, p99.9, max, in microseconds)
//!   from HdrHistogram, per operation kind, as text and as JSON;
//! - writing `--history` as it runs, for the linearizability checker.
#![deny(missing_docs)]

pub mod cli;
pub mod history;
