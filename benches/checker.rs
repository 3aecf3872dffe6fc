//! The linearizability checker's speed on generated key/value histories: operations checked per
//! second and search steps, for the 10,000-operation history from 15 clients that the closing
//! note quotes, larger ones, single-key high-contention ones, and the largest history decided
//! within the default step budget (doubling the length until undecided or past a million).
//!
//! `cargo bench --bench checker [FILTER]` runs the scenarios whose name contains FILTER. It
//! prints numbers and never fails on time: each history is checked a few times and the median
//! wall time is reported. Histories are linearizable by construction
//! (`shardcore::linearizability::generate`), so any verdict but "linearizable" is a finding,
//! except in the "bad read" scenarios, where one read is spoiled to time a refutation.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcore::history::{HistoryOp, OpKind};
use shardcore::linearizability::generate::{linearizable_history, GenerateOptions};
use shardcore::linearizability::{check_history, Report, Verdict, DEFAULT_MAX_STEPS};
use shardcore::rng::Rng;

/// Checks per history for the median (fewer for long ones; see `repetitions`).
const REPETITIONS: usize = 5;
/// The doubling search for the largest history decided stops past this many operations.
const LARGEST_CAP_OPS: usize = 1_000_000;

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    println!("step budget per key: {DEFAULT_MAX_STEPS}");
    println!(
        "{:<34} {:>9} {:>5} {:>7} {:>12} {:>10} {:>12} {:>9}  verdict",
        "scenario", "ops", "keys", "clients", "steps", "seconds", "ops/s", "steps/op"
    );
    let spread = |seed, ops, clients, keys| GenerateOptions {
        seed,
        ops,
        clients,
        keys,
        ..GenerateOptions::default()
    };
    let contended = |seed, ops, clients, timeouts_per_mille| GenerateOptions {
        seed,
        ops,
        clients,
        keys: 1,
        timeouts_per_mille,
        ..GenerateOptions::default()
    };
    let scenarios: Vec<(String, GenerateOptions)> = vec![
        (
            "10k-15clients-5keys seed 1".into(),
            spread(1, 10_000, 15, 5),
        ),
        (
            "10k-15clients-5keys seed 2".into(),
            spread(2, 10_000, 15, 5),
        ),
        (
            "10k-15clients-5keys seed 3".into(),
            spread(3, 10_000, 15, 5),
        ),
        ("50k-15clients-5keys".into(), spread(1, 50_000, 15, 5)),
        ("100k-15clients-5keys".into(), spread(1, 100_000, 15, 5)),
        ("100k-15clients-50keys".into(), spread(1, 100_000, 15, 50)),
        ("onekey-10k-5clients".into(), contended(1, 10_000, 5, 10)),
        ("onekey-10k-15clients".into(), contended(1, 10_000, 15, 10)),
        (
            "onekey-10k-15clients-5%timeouts".into(),
            contended(1, 10_000, 15, 50),
        ),
        (
            "onekey-100k-15clients".into(),
            contended(1, 100_000, 15, 10),
        ),
        ("onekey-10k-20clients".into(), contended(1, 10_000, 20, 10)),
        ("onekey-10k-30clients".into(), contended(1, 10_000, 30, 10)),
    ];
    for (name, options) in scenarios {
        if wanted(&name) {
            run(&name, &options, Corrupt::No);
        }
    }
    for seed in 1..=3 {
        let name = format!("10k-15clients-5keys bad read seed {seed}");
        if wanted(&name) {
            run(&name, &spread(seed, 10_000, 15, 5), Corrupt::OneRead);
        }
    }
    for (name, base) in [
        ("largest-15clients-5keys", spread(1, 0, 15, 5)),
        ("largest-onekey-15clients", contended(1, 0, 15, 10)),
    ] {
        if wanted(name) {
            largest(name, &base);
        }
    }
}

/// Doubles the length from 10,000 until a history is undecided or longer than the cap; prints
/// each and then the largest decided.
fn largest(name: &str, base: &GenerateOptions) {
    let mut ops = 10_000;
    let mut decided = 0;
    loop {
        let options = GenerateOptions {
            ops,
            ..base.clone()
        };
        let report = run(&format!("{name} {ops}"), &options, Corrupt::No);
        if matches!(report.verdict, Verdict::Undecided(_)) {
            break;
        }
        decided = ops;
        if ops > LARGEST_CAP_OPS {
            break;
        }
        ops *= 2;
    }
    println!("{name}: largest history decided: {decided} operations");
}

/// Whether to spoil the generated history.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Corrupt {
    /// Check it as generated (linearizable).
    No,
    /// Change one successful read's output (chosen from the seed) to a value never written, so
    /// that the checker must refute every order of the operations before it on that key.
    OneRead,
}

fn run(name: &str, options: &GenerateOptions, corrupt: Corrupt) -> Report {
    let mut history = linearizable_history(options);
    if corrupt == Corrupt::OneRead {
        let mut rng = Rng::stream(options.seed, "corrupt");
        let target = loop {
            let i = rng.index(history.len());
            if history[i].op == OpKind::Get && history[i].ok == Some(true) {
                break i;
            }
        };
        history[target].output = Some(Bytes::from_static(b"corrupted"));
    }
    let (report, elapsed) = measure(&history);
    let seconds = elapsed.as_secs_f64();
    let verdict = match &report.verdict {
        Verdict::Linearizable => "linearizable".to_string(),
        Verdict::NotLinearizable(violation) if corrupt == Corrupt::OneRead => format!(
            "not linearizable: key {}, operation #{}",
            violation.key_name, violation.blocked.index
        ),
        Verdict::NotLinearizable(violation) => {
            format!("NOT LINEARIZABLE (a checker bug): {violation}")
        }
        Verdict::Undecided(undecided) => format!("undecided (key {})", undecided.key_name),
    };
    println!(
        "{name:<34} {:>9} {:>5} {:>7} {:>12} {:>10.4} {:>12.0} {:>9.1}  {verdict}",
        history.len(),
        report.partitions,
        options.clients,
        report.steps,
        seconds,
        history.len() as f64 / seconds.max(1e-9),
        report.steps as f64 / history.len().max(1) as f64,
    );
    report
}

/// Checks `history` a few times (once when a check takes over a second) and returns the report
/// and the median time.
fn measure(history: &[HistoryOp]) -> (Report, Duration) {
    let mut times = Vec::new();
    let mut report;
    loop {
        let start = Instant::now();
        report = check_history(history);
        times.push(start.elapsed());
        let long = times[0] > Duration::from_secs(1);
        if long || times.len() == REPETITIONS {
            break;
        }
    }
    times.sort();
    (report, times[times.len() / 2])
}
