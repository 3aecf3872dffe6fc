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

/// A loopback address nothing listens on: bound to find a free port, then released.
fn dead_endpoint() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    let addr = probe.local_addr().expect("probe address");
    drop(probe);
    addr.to_string()
}

/// `shardcore ctl` exit codes without a cluster: bad arguments exit 2 with the reason on
/// stderr (a missing operand, a malformed `--replica`, the controller's own reserved group id,
/// `--cores 0`), and a cluster that does not answer exits 3 once the timeout passes, naming it.
/// Refusals (exit 1) and successes (exit 0) need a cluster: `tests/cluster_shardctl.rs`.
#[test]
fn ctl_usage_and_unreachable_exit_codes() {
    let endpoint = dead_endpoint();
    let ctl = |args: &[&str]| {
        let out = shardcore()
            .args(["ctl", "--timeout-secs", "1", "--endpoints", &endpoint])
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, says) in [
        (&["join"][..], "required"),
        (&["move", "1"][..], "required"),
        (&["join", "1", "--replica", "1:x"][..], "NODE or NODE:CORE"),
        (&["join", "18446744073709551615"][..], "reserved"),
        (&["join", "1", "--cores", "0"][..], "--cores"),
        (&["query", "latest"][..], "invalid value"),
    ] {
        let (code, out, err) = ctl(args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?} printed {out:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, out, err) = ctl(&["query"]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("no answer within 1 s"), "{err}");
    let (code, _, err) = ctl(&["join", "7", "--replica", "1:0"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("a change may still take effect"), "{err}");
}
