//! The seed harness shared by simulation tests (TigerBeetle's VOPR habit: print the seed first,
//! replay any failure from it).
//!
//! - Every run prints `SEED=<n>` before it starts, so a failure's output names its seed.
//! - `SEED=<n>` in the environment runs exactly that seed; `SEEDS=<k>` runs seeds `1..=k`;
//!   otherwise a test runs its default count.
//! - A failing seed prints `FAILED SEED=<n> test=<name>` and the panic goes on unchanged.
//! - `KEEP_GOING=1` runs every seed even after failures, then fails listing all failing seeds
//!   (for triage sweeps such as `KEEP_GOING=1 SEEDS=5000`).
//! - `TRACE=1` makes [`sim_config`] keep the whole trace, every message included; a failure
//!   then prints all of it (otherwise only the last lines).

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use bytes::Bytes;
use shardcore::rng::Rng;
use shardcore::sim::{SimConfig, TraceMode};

/// Seeds per scenario when neither `SEED` nor `SEEDS` is set.
pub const DEFAULT_SEEDS: u64 = 100;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value} is not a number"),
    }
}

/// The seeds to run: `SEED`, else `1..=SEEDS`, else `1..=default_count`.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SEED") {
        return vec![seed];
    }
    let count = env_u64("SEEDS").unwrap_or(default_count);
    (1..=count).collect()
}

/// Runs `body` once per seed (see the module docs).
pub fn run_seeds(name: &str, default_count: u64, body: impl Fn(u64)) {
    let keep_going = std::env::var_os("KEEP_GOING").is_some();
    let mut failed = Vec::new();
    for seed in seeds(default_count) {
        println!("SEED={seed}");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(seed))) {
            println!("FAILED SEED={seed} test={name}");
            eprintln!("FAILED SEED={seed} test={name}");
            if !keep_going {
                resume_unwind(panic);
            }
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} failing seeds: {failed:?}",
        failed.len()
    );
}

/// The simulator's defaults for `nodes` nodes, with the whole trace kept when `TRACE` is set.
pub fn sim_config(seed: u64, nodes: usize) -> SimConfig {
    let mut cfg = SimConfig::new(seed, nodes);
    if std::env::var_os("TRACE").is_some() {
        cfg.trace = TraceMode::Full;
        cfg.trace_messages = true;
    }
    cfg
}

/// A test's own random stream, independent of the cluster's.
pub fn rng(seed: u64, purpose: &str) -> Rng {
    Rng::stream(seed, purpose)
}

/// A command carrying the number `x` (the lab's commands are ints).
pub fn cmd(x: u64) -> Bytes {
    Bytes::from(x.to_be_bytes().to_vec())
}

/// A command of `len` random bytes.
pub fn random_cmd(rng: &mut Rng, len: usize) -> Bytes {
    Bytes::from((0..len).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>())
}

/// The node `k` places after `node` in a ring of `n` (the lab's `(leader + k) % servers`, with
/// node ids starting at 1).
pub fn after(node: u64, k: u64, n: usize) -> u64 {
    (node - 1 + k) % n as u64 + 1
}
