//! shardcore-bench: the load generator, its latency reports, and the operation histories that
//! the linearizability checker reads.
//!
//! `shardcore-bench` drives a running cluster (or three local `shardcore server` processes it
//! starts itself) through the client library with a chosen workload and reports throughput,
//! latency and CPU per operation. It measures; it never passes or fails: timings are numbers for
//! people, never assertions in tests.
//!
//! # Layout
//! - [`cli`]: the command line (workload and read fraction, loop mode and rate, duration or op
//!   count, warm-up, concurrency and connections, key space, distribution and sizes, reports,
//!   history, seed), its bounds, and each workload's operation mix; `compare`.
//! - [`keys`]: key names and the uniform and zipfian key choices (seeded).
//! - [`schedule`]: the open loop's arrival times (uniform or Poisson); latency counts from them,
//!   so a stalled server is charged for every arrival it delayed (no coordinated omission).
//! - [`engine`]: the load: one executor per generator core, workers (outstanding requests)
//!   sharing their core's pipelined connections, phases (warm-up, measured), history parts.
//! - [`recorder`]: one core's latency histograms (HdrHistogram, µs, 3 digits), counters and
//!   throughput timeline; merged after the run.
//! - [`report`]: the run's [`report::Summary`] (JSON), its text form and its `RESULT` line
//!   (etcd-bench's fields, so one script reads both tools).
//! - [`hgrm`]: the HdrHistogram percentile distribution text format.
//! - [`svg`]: latency-by-percentile and throughput-over-time plots, written by hand.
//! - [`compare`]: runs side by side with ratios.
//! - [`procfs`]: other processes' CPU time from `/proc`, and finding a cluster's servers.
//! - [`cluster`]: `--cluster local`, three server processes for the length of a run.
//! - [`bench`]: one run start to finish: readiness, prefill, the measured load, the monitor
//!   thread (progress line, CPU window), the reports.
//! - [`history`]: one JSON line per operation: a re-export of [`shardcore::history`], whose
//!   reader the linearizability checker uses.
#![deny(missing_docs)]

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod compare;
pub mod engine;
pub mod hgrm;
pub mod history;
pub mod keys;
pub mod procfs;
pub mod recorder;
pub mod report;
pub mod schedule;
pub mod svg;
