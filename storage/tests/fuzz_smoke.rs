//! The fuzz targets' bodies (storage/fuzz/src/lib.rs) run on the stable toolchain over seeded
//! random inputs, so `cargo test` exercises them without cargo-fuzz or nightly. `SEED=<u64>`
//! replays a run; each failure prints the seed and the input's index.

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

/// Inputs per target: a few thousand, a second or two of a test run.
const INPUTS_PER_TARGET: usize = 4000;
/// Inputs for wal_open, each a real WAL on disk: a few hundred, a few seconds.
const WAL_OPEN_INPUTS: usize = 300;
/// The longest input generated: long enough for several records with payloads and damage.
const MAX_INPUT_BYTES: usize = 2048;

fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f022);
    println!("SEED={seed}");
    seed
}

/// xorshift64*: a seeded generator without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// An input whose bytes are mostly small numbers, so that recipes ask for short payloads
    /// and damage lands inside the segment, with now and then a wholly random byte.
    fn input(&mut self) -> Vec<u8> {
        let length_bytes = (self.next() as usize) % (MAX_INPUT_BYTES + 1);
        (0..length_bytes)
            .map(|_| match self.next() % 4 {
                0 => self.next() as u8,
                _ => (self.next() % 16) as u8,
            })
            .collect()
    }
}

fn run(target: fn(&[u8]), salt: u64) {
    run_inputs(target, salt, INPUTS_PER_TARGET);
}

fn run_inputs(target: fn(&[u8]), salt: u64, inputs: usize) {
    let seed = seed();
    let mut rng = Rng((seed ^ salt) | 1);
    for index in 0..inputs {
        let input = rng.input();
        let result = std::panic::catch_unwind(|| target(&input));
        if result.is_err() {
            panic!("SEED={seed}: input {index} failed: {input:?}");
        }
    }
}

/// record_decode never panics and its checks hold on a few thousand seeded inputs.
#[test]
fn record_decode_holds_on_seeded_inputs() {
    run(fuzz::record_decode, 0x7265_636f_7264);
}

/// recovery_scan never panics and its checks hold on a few thousand seeded inputs.
#[test]
fn recovery_scan_holds_on_seeded_inputs() {
    run(fuzz::recovery_scan, 0x7265_636f_7665);
}

/// wal_open never panics and its checks hold on a few hundred seeded inputs: fewer than the
/// pure targets get, as each one makes, appends to (one `fdatasync` a batch) and reopens a
/// real WAL on disk.
#[test]
fn wal_open_holds_on_seeded_inputs() {
    let started = std::time::Instant::now();
    run_inputs(fuzz::wal_open, 0x7761_6c6f_7065, WAL_OPEN_INPUTS);
    println!(
        "wal_open: {WAL_OPEN_INPUTS} inputs in {:?}",
        started.elapsed()
    );
}

/// The recipe mode builds real records: the generated inputs must reach whole records, torn
/// tails and corruption, or the smoke test would be checking nothing.
#[test]
fn seeded_inputs_reach_records_tears_and_corruption() {
    use shardcore_storage::record::{scan, ReadOutcome, SegmentState};
    let mut rng = Rng(0x5eed | 1);
    let (mut records, mut torn, mut corrupt) = (0, 0, 0);
    for _ in 0..INPUTS_PER_TARGET {
        let input = rng.input();
        // Recipe mode: the segment starts after the 4-byte probe and the mode byte.
        if input.len() < 5 || input[4] % 2 == 0 {
            continue;
        }
        let segment = fuzz::segment_of(&input);
        let (found, end) = scan(&segment, SegmentState::Open);
        records += found.len();
        match end {
            ReadOutcome::Torn(_) => torn += 1,
            ReadOutcome::Corrupt(_) => corrupt += 1,
            _ => {}
        }
    }
    println!("records {records}, torn {torn}, corrupt {corrupt}");
    assert!(records > 1000 && torn > 100 && corrupt > 100);
}

/// The wal_open inputs reach what the target is for: acknowledged batches, rotations, damage
/// that recovery survives with every batch, with only a prefix, and that it refuses.
#[test]
fn seeded_wal_open_inputs_reach_rotation_prefixes_and_corruption() {
    let mut rng = Rng(0x5eed | 1);
    let (mut acknowledged, mut rotated, mut whole, mut prefix, mut corrupt) = (0, 0, 0, 0, 0);
    for _ in 0..WAL_OPEN_INPUTS {
        let outcome = fuzz::wal_open_outcome(&rng.input());
        acknowledged += outcome.acknowledged;
        rotated += outcome.rotations;
        match outcome.recovered {
            Some(k) if outcome.damaged && k == outcome.distinct => whole += 1,
            Some(_) if outcome.damaged => prefix += 1,
            Some(_) => {}
            None => corrupt += 1,
        }
    }
    println!(
        "acknowledged {acknowledged}, rotated {rotated}, damaged and whole {whole}, \
         prefix {prefix}, corrupt {corrupt}"
    );
    assert!(acknowledged > 1000 && rotated > 20 && whole > 10 && prefix > 10 && corrupt > 10);
}
