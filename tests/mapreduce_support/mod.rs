//! Harness for `tests/mapreduce_*.rs`: a temporary job folder with seeded text inputs, the
//! `shardcore mr` coordinator and workers as real processes on 127.0.0.1, helpers to kill (-9),
//! stall (SIGSTOP/SIGCONT) and restart them, and the comparison with the sequential reference.
//! Everything it starts is killed and its folder removed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardcore::mapreduce::apps::app_by_name;
use shardcore::mapreduce::corpus::{generate, CorpusConfig};
use shardcore::mapreduce::sequential;

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_shardcore")
}

/// The seed of a randomized test: `SEED` from the environment, else the given default; printed
/// first so a failure names it.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("SEED={seed}");
    seed
}

pub struct MrJob {
    pub dir: PathBuf,
    pub inputs: Vec<String>,
    pub coordinator: Option<Child>,
    pub addr: Option<SocketAddr>,
    pub workers: Vec<Child>,
    /// Extra coordinator arguments (kept for restarts).
    pub coordinator_args: Vec<String>,
}

impl MrJob {
    /// A fresh folder with 8 seeded text inputs of `kib_each` KiB (the lab's 8 inputs).
    pub fn new(name: &str, seed: u64, kib_each: u64) -> MrJob {
        let dir =
            std::env::temp_dir().join(format!("shardcore-mr-{name}-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let config = CorpusConfig {
            seed,
            total_bytes: kib_each * 8 * 1024,
            files: 8,
            vocabulary: 3_000,
        };
        let paths = generate(&config, &dir.join("in")).expect("inputs");
        let inputs = paths
            .iter()
            .map(|p| p.to_str().expect("utf-8").to_string())
            .collect();
        MrJob {
            dir,
            inputs,
            coordinator: None,
            addr: None,
            workers: Vec::new(),
            coordinator_args: Vec::new(),
        }
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    pub fn output_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// Writes an executable shell script into the job folder.
    pub fn script(&self, name: &str, body: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        let status = Command::new("chmod")
            .arg("+x")
            .arg(&path)
            .status()
            .expect("chmod");
        assert!(status.success());
        path.to_str().expect("utf-8").to_string()
    }

    /// Starts the coordinator with `args` (app, reduces, ...) plus the job's folders and
    /// inputs, on `port` (0: any), and waits for its address.
    pub fn start_coordinator(&mut self, args: &[&str], port: u16) -> SocketAddr {
        if !args.is_empty() {
            self.coordinator_args = args.iter().map(|s| s.to_string()).collect();
        }
        let mut command = Command::new(exe());
        command
            .args(["mr", "coordinator", "--no-progress"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--work-dir")
            .arg(self.work_dir())
            .arg("--output")
            .arg(self.output_dir())
            .arg("--report")
            .arg(self.dir.join("report.json"))
            .args(&self.coordinator_args);
        for input in &self.inputs {
            command.args(["--input", input]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the coordinator");
        let stdout = child.stdout.take().expect("piped");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("the coordinator's first line");
        // Drain the rest (the summary) so the coordinator never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("coordinator listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("an address");
        self.coordinator = Some(child);
        self.addr = Some(addr);
        addr
    }

    /// Starts a worker with `cores` cores. Its machine-wide task slots are this job's own (2,
    /// unless `extra` says `--slots`), so tests running at the same time do not share them.
    pub fn start_worker(&mut self, cores: usize, extra: &[&str]) {
        let addr = self.addr.expect("a coordinator first");
        let slots = if extra.contains(&"--slots") {
            vec![]
        } else {
            vec!["--slots", "2"]
        };
        // Inside the job's folder, so a worker killed with -9 leaves nothing behind.
        let local_dir = self.dir.join(format!("local-{}", self.workers.len()));
        let child = Command::new(exe())
            .args(["mr", "worker", "--coordinator", &addr.to_string()])
            .args(["--cores", &cores.to_string(), "--give-up-ms", "8000"])
            .arg("--local-dir")
            .arg(local_dir)
            .arg("--slots-dir")
            .arg(self.dir.join("slots"))
            .args(slots)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a worker");
        self.workers.push(child);
    }

    /// Waits for the coordinator to exit, at most `limit`; returns its exit code.
    pub fn wait_coordinator(&mut self, limit: Duration) -> i32 {
        let child = self.coordinator.as_mut().expect("a coordinator");
        let status = wait_for(child, limit)
            .unwrap_or_else(|| panic!("the coordinator did not finish within {limit:?}"));
        status.code().unwrap_or(-1)
    }

    /// Maps the coordinator has recorded as done, from its durable job state (0 while it has
    /// written none). A file caught mid-replace reads as 0 too: callers poll.
    pub fn done_maps(&self) -> usize {
        let Ok(bytes) = std::fs::read(self.work_dir().join("mr-job.state")) else {
            return 0;
        };
        // Header: magic (8), length (4), crc (4); the payload is JSON.
        let Some(payload) = bytes.get(16..) else {
            return 0;
        };
        let Ok(state) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return 0;
        };
        state["maps"]
            .as_array()
            .map(|maps| maps.iter().filter(|m| !m["done"].is_null()).count())
            .unwrap_or(0)
    }

    /// The job report the coordinator wrote.
    pub fn report(&self) -> serde_json::Value {
        let bytes = std::fs::read(self.dir.join("report.json")).expect("report.json");
        serde_json::from_slice(&bytes).expect("a JSON report")
    }

    /// Every output line of the job, sorted.
    pub fn output_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.output_dir()) else {
            return lines;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name.starts_with("mr-out-") {
                let text = std::fs::read_to_string(&path).expect("output");
                lines.extend(text.lines().map(str::to_string));
            }
        }
        lines.sort();
        lines
    }

    /// The sequential reference's lines, sorted.
    pub fn sequential_lines(&self, app: &str, args: &[String]) -> Vec<String> {
        let app = app_by_name(app, args).expect("an app");
        let out = sequential::run_files(&*app, &self.inputs).expect("sequential run");
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }
}

/// Waits for `child` to exit, at most `limit`.
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a child we started and have not reaped: the pid is ours.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

impl Drop for MrJob {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain(self.coordinator.iter_mut()) {
            signal(child, libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lines of `path` (empty if missing).
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}
