//! The `shardcore` command line end to end: a simulated KV run writes a history file,
//! `check-history` accepts it, and rejects the same file with one read changed; `sim` replays a
//! seed line for line; `ctl` exit codes; `cluster local --sharded` joins its groups and serves.
//! Runs the real binary (CARGO_BIN_EXE_shardcore) in a temp directory it removes.

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

/// A base port for `cluster local` of 3 nodes: its client ports (base..base+3) and its peer
/// ports (base+100 and up, 32 a node) all free when probed.
fn free_base_port() -> u16 {
    for _ in 0..200 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
        let base = probe.local_addr().expect("probe address").port();
        drop(probe);
        if base > 65000 - 200 {
            continue;
        }
        let ports = (base..base + 3).chain((0..3).map(|i| base + 100 + 32 * i));
        let free: Vec<std::net::TcpListener> = ports
            .filter_map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if free.len() == 6 {
            return base;
        }
    }
    panic!("no free ports for a local cluster");
}

/// `cluster local --sharded` starts sharded nodes, joins its groups through the controller,
/// prints the configuration and a smoke check through the sharded path, and stops cleanly
/// (exit 0); started again on the same data it finds the groups joined and serves on. A node
/// started on that data without `--sharded` refuses it, naming the mode.
#[test]
fn cluster_local_sharded_joins_its_groups_and_serves() {
    let dir = TempDir::new("local-sharded");
    let base = free_base_port().to_string();
    let data = dir.0.join("data");
    let data = data.to_str().expect("utf-8 path");
    let run = || {
        let out = shardcore()
            .args([
                "cluster",
                "local",
                "--sharded",
                "--groups",
                "3",
                "--shards",
                "6",
            ])
            .args(["--seconds", "1", "--base-port", &base, "--data-dir", data])
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run();
    assert_eq!(code, Some(0), "{out}{err}");
    for says in [
        "shard groups: joined 1..=3",
        "config 1: 6 shards, 3 groups",
        "smoke check: put and linearizable get through the sharded path",
        "kv --sharded --endpoints",
    ] {
        assert!(out.contains(says), "no {says:?} in:\n{out}");
    }
    let (code, out, err) = run();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("already joined (a restart)"), "{out}");
    let server = shardcore()
        .args(["server", "--node-id", "1", "--data-dir"])
        .arg(dir.0.join("data/node-1"))
        .args([
            "--client-addr",
            &dead_endpoint(),
            "--peer-addr",
            &dead_endpoint(),
        ])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&server.stderr);
    assert_eq!(server.status.code(), Some(1), "{err}");
    assert!(err.contains("holds sharded-kv groups"), "{err}");
}
