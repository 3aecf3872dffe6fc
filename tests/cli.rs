//! The `shardcore` command line end to end: a simulated KV run writes a history file,
//! `check-history` accepts it, and rejects the same file with one read changed; `sim` replays a
//! seed line for line. Runs the real binary (CARGO_BIN_EXE_shardcore) in a temp directory it
//! removes.

use std::path::PathBuf;
use std::process::Command;

fn shardcore() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardcore"))
}

/// A scratch directory removed on drop, even when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shardcore-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sim kv --history` writes a history that `check-history` accepts (exit 0); changing one
/// read's output to a value nobody wrote makes it exit 1; a malformed file exits 2.
#[test]
fn sim_kv_history_round_trip() {
    let dir = TempDir::new("history");
    let path = dir.0.join("out.jsonl");
    let run = shardcore()
        .args([
            "sim",
            "kv",
            "--scenario",
            "unreliable",
            "--seed",
            "7",
            "--history",
        ])
        .arg(&path)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "sim kv failed: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.starts_with("SEED=7"), "{stdout}");
    let check = shardcore()
        .arg("check-history")
        .arg(&path)
        .status()
        .expect("runs");
    assert_eq!(check.code(), Some(0));

    let text = std::fs::read_to_string(&path).expect("history written");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let read = lines
        .iter()
        .position(|l| l.contains(r#""op":"get""#) && l.contains(r#""output":"x "#))
        .expect("a read that saw an append");
    let start = lines[read].find(r#""output":""#).expect("output") + r#""output":""#.len();
    lines[read].insert_str(start, "never written ");
    let corrupted = dir.0.join("corrupted.jsonl");
    std::fs::write(&corrupted, lines.join("\n")).expect("write");
    let check = shardcore()
        .arg("check-history")
        .arg(&corrupted)
        .output()
        .expect("runs");
    assert_eq!(
        check.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let malformed = dir.0.join("malformed.jsonl");
    std::fs::write(&malformed, "{\"client\": \"one\"}\n").expect("write");
    let check = shardcore()
        .arg("check-history")
        .arg(&malformed)
        .status()
        .expect("runs");
    assert_eq!(check.code(), Some(2));
}

/// The same seed prints the same run, line for line (the wall-time lines aside).
#[test]
fn sim_replays_a_seed() {
    let run = || {
        let out = shardcore()
            .args(["sim", "--seed", "11", "--seconds", "3", "--faults"])
            .output()
            .expect("runs");
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .filter(|l| !l.contains("wall"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let first = run();
    assert!(first.len() > 10);
    assert_eq!(first, run());
}
