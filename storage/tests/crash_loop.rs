//! The kill -9 loop (after sled's `tests/test_crash_recovery.rs`): this test binary re-runs
//! itself as a child that opens a WAL, appends random batches with two in flight
//! (`Wal::submit`, then `Wal::wait` for the oldest, as the node's log thread does), and prints
//! each batch before submitting it and an acknowledgement after its wait returns. The parent
//! kills the child with SIGKILL after a seeded random delay, reopens the WAL, and checks that
//! every acknowledged batch is there and that of the (up to two) in flight, a prefix is there,
//! each batch entirely or not at all: the second never without the first. The same directory
//! carries over from one iteration to the next, so later children recover logs that earlier
//! kills left, torn tails included.
//!
//! `CRASH_LOOP_ITERATIONS` sets the iterations (default 100); `CRASH_LOOP_SEED` the first
//! iteration's seed (default: from the clock). Each iteration prints `SEED=`.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{entries_record, hard_state_record, Model, Rng, TempDir};
use shardcore_storage::{LogRecord, Wal, WalConfig, MAX_IN_FLIGHT_BATCHES};

const CHILD_DIR_ENV: &str = "SHARDCORE_CRASH_LOOP_CHILD_DIR";
const CHILD_SEED_ENV: &str = "SHARDCORE_CRASH_LOOP_CHILD_SEED";
/// Entry data up to this many bytes.
const MAX_DATA_BYTES: u64 = 1500;
/// Groups 1..=GROUPS.
const GROUPS: u64 = 8;
/// The longest a child runs before stopping on its own, in case its parent is gone. Why 10 s:
/// far past the longest kill delay, short enough not to linger.
const CHILD_LIFETIME: Duration = Duration::from_secs(10);
/// The longest kill delay after spawning. Why 40 ms: a child takes a few milliseconds to
/// start and recover, and an append about a millisecond, so kills land during start-up,
/// recovery, and appends of up to a few dozen batches.
const MAX_KILL_DELAY_MS: u64 = 40;

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 64 << 10,
        max_segments: 4,
        cache_bytes: 64 << 10,
        ..WalConfig::new()
    }
}

/// Runs the parent's loop, or the child's part when started as one.
#[test]
fn crash_loop() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let seed = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
        child(std::path::Path::new(&dir), seed);
        return;
    }
    let iterations: u64 = std::env::var("CRASH_LOOP_ITERATIONS")
        .ok()
        .map_or(100, |v| {
            v.parse().expect("CRASH_LOOP_ITERATIONS is a number")
        });
    let first_seed: u64 = std::env::var("CRASH_LOOP_SEED").ok().map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |v| v.parse().expect("CRASH_LOOP_SEED is a number"),
    );
    let dir = TempDir::new("wal-crash-loop");
    let started = Instant::now();
    let mut model = Model::default();
    let mut acknowledged = 0;
    let mut in_flight_there = 0;
    let mut in_flight_absent = 0;
    let mut torn_tails = 0;
    for iteration in 0..iterations {
        let seed = first_seed.wrapping_add(iteration);
        println!("SEED={seed} (iteration {iteration})");
        let outcome = run_child(dir.path(), seed);
        for batch in &outcome.acknowledged {
            model.apply(batch);
        }
        acknowledged += outcome.acknowledged.len();
        let (wal, recovery) = Wal::open(dir.path(), config())
            .unwrap_or_else(|e| panic!("SEED={seed}: recovery failed: {e}"));
        torn_tails += usize::from(recovery.torn_tail.is_some());
        let Some(difference) = model.difference(&wal) else {
            in_flight_absent += outcome.in_flight.len();
            continue;
        };
        // A prefix of the batches in flight survived, each whole: find how long a one.
        let mut with_in_flight = model.clone();
        let mut survived = None;
        for (count, batch) in outcome.in_flight.iter().enumerate() {
            with_in_flight.apply(batch);
            if with_in_flight.difference(&wal).is_none() {
                survived = Some(count + 1);
                break;
            }
        }
        let Some(survived) = survived else {
            panic!(
                "SEED={seed}: the WAL holds neither the acknowledged batches ({difference}) nor \
                 those and a prefix of the {} in flight: part of a batch survived, or a later \
                 one without an earlier one",
                outcome.in_flight.len()
            );
        };
        model = with_in_flight;
        in_flight_there += survived;
        in_flight_absent += outcome.in_flight.len() - survived;
    }
    println!(
        "{iterations} kills in {:.1} s: {acknowledged} batches acknowledged and found; \
         batches in flight at the kill: {in_flight_there} found whole, {in_flight_absent} absent; \
         torn tails truncated: {torn_tails}",
        started.elapsed().as_secs_f64()
    );
    assert!(acknowledged > 0, "no child acknowledged anything");
}

/// What a child said before it was killed.
struct Outcome {
    acknowledged: Vec<Vec<LogRecord>>,
    /// Submitted and not acknowledged, oldest first.
    in_flight: VecDeque<Vec<LogRecord>>,
}

fn run_child(dir: &std::path::Path, seed: u64) -> Outcome {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_loop",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        // A line cut by the kill has no newline: it was not said.
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
            lines.push(std::mem::take(&mut line));
        }
        lines
    });
    let delay = Rng::new(seed).below(MAX_KILL_DELAY_MS + 1);
    std::thread::sleep(Duration::from_millis(delay));
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = reader.join().unwrap();
    let mut outcome = Outcome {
        acknowledged: Vec::new(),
        in_flight: VecDeque::new(),
    };
    for line in lines {
        // The test harness may print "test crash_loop ... " before the child's first line.
        let line = line.trim_end();
        let line = line.find("BEGIN ").map_or(line, |at| &line[at..]);
        if let Some(description) = line.strip_prefix("BEGIN ") {
            assert!(
                outcome.in_flight.len() < MAX_IN_FLIGHT_BATCHES,
                "SEED={seed}: more batches in flight than the WAL allows"
            );
            outcome.in_flight.push_back(parse(description));
        } else if line == "ACK" {
            let batch = outcome
                .in_flight
                .pop_front()
                .expect("an acknowledged batch");
            outcome.acknowledged.push(batch);
        } else if let Some(error) = line.strip_prefix("ERROR ") {
            panic!("SEED={seed}: the child failed: {error}");
        }
    }
    outcome
}

/// The child: recover, then append random batches until killed, two in flight, saying each
/// before it is submitted and acknowledging the oldest once its wait returns.
fn child(dir: &std::path::Path, seed: u64) {
    let started = Instant::now();
    let (mut wal, _) = match Wal::open(dir, config()) {
        Ok(opened) => opened,
        Err(error) => {
            println!("ERROR open: {error}");
            return;
        }
    };
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut in_flight = VecDeque::new();
    for round in 0.. {
        if started.elapsed() > CHILD_LIFETIME {
            return;
        }
        if in_flight.len() == MAX_IN_FLIGHT_BATCHES {
            if let Err(error) = wal.wait(in_flight.pop_front().expect("in flight")) {
                println!("ERROR wait: {error}");
                return;
            }
            println!("ACK");
        }
        // Valid against the WAL's state with the batches in flight applied: the index has them.
        let term = seed % 1_000_000 * 1000 + round;
        let batch = random_batch(&wal, &mut rng, term);
        println!("BEGIN {}", describe(&batch));
        match wal.submit(&batch) {
            Ok(ticket) => in_flight.push_back(ticket),
            Err(error) => {
                println!("ERROR submit: {error}");
                return;
            }
        }
    }
}

/// One record for each of one to three distinct groups, valid against the WAL's state.
fn random_batch(wal: &Wal, rng: &mut Rng, term: u64) -> Vec<LogRecord> {
    let mut groups: Vec<u64> = (1..=GROUPS).collect();
    let mut batch = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let group = groups.swap_remove(rng.below(groups.len() as u64) as usize);
        let compacted = wal.compacted(group).map(|c| c.0);
        let floor = compacted.map_or(1, |c| c + 1);
        let next = wal.last_index(group).map_or(1, |l| l + 1);
        batch.push(match rng.below(10) {
            0..=5 => {
                let from = if next > floor && rng.below(6) == 0 {
                    floor + rng.below(next - floor)
                } else {
                    next
                };
                entries_record(group, from, 1 + rng.below(4), term, MAX_DATA_BYTES)
            }
            6 | 7 => hard_state_record(group, term, group, next - 1),
            8 => LogRecord::Truncate {
                group,
                from_index: floor + rng.below(next - floor + 1),
            },
            _ => LogRecord::Compact {
                group,
                index: compacted.unwrap_or(0) + rng.below(next - floor + 1),
                term,
            },
        });
    }
    batch
}

/// A batch in one line; entries' data is rebuilt from (group, index, term).
fn describe(batch: &[LogRecord]) -> String {
    let records: Vec<String> = batch
        .iter()
        .map(|record| match record {
            LogRecord::Entries { group, entries } => format!(
                "E,{group},{},{},{}",
                entries[0].index,
                entries.len(),
                entries[0].term
            ),
            LogRecord::HardState { group, state } => {
                format!("H,{group},{},{},{}", state.term, state.vote, state.commit)
            }
            LogRecord::Truncate { group, from_index } => format!("T,{group},{from_index}"),
            LogRecord::Compact { group, index, term } => format!("C,{group},{index},{term}"),
        })
        .collect();
    records.join(";")
}

fn parse(description: &str) -> Vec<LogRecord> {
    description
        .split(';')
        .map(|record| {
            let fields: Vec<&str> = record.split(',').collect();
            let n = |i: usize| -> u64 { fields[i].parse().unwrap() };
            match fields[0] {
                "E" => entries_record(n(1), n(2), n(3), n(4), MAX_DATA_BYTES),
                "H" => hard_state_record(n(1), n(2), n(3), n(4)),
                "T" => LogRecord::Truncate {
                    group: n(1),
                    from_index: n(2),
                },
                "C" => LogRecord::Compact {
                    group: n(1),
                    index: n(2),
                    term: n(3),
                },
                other => panic!("unknown record {other:?} in {description:?}"),
            }
        })
        .collect()
}

/// A batch survives being described and parsed.
#[test]
fn descriptions_round_trip() {
    let batch = vec![
        entries_record(3, 7, 2, 11, MAX_DATA_BYTES),
        hard_state_record(3, 11, 3, 8),
        LogRecord::Truncate {
            group: 2,
            from_index: 4,
        },
        LogRecord::Compact {
            group: 1,
            index: 9,
            term: 5,
        },
    ];
    assert_eq!(parse(&describe(&batch)), batch);
}
