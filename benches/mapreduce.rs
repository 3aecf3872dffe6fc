//! MapReduce word count against a plain single-thread word count, in the same run, over a
//! generated corpus (seeded Zipf words, `shardcore mr gen-corpus`, default 1 GiB in 8 files,
//! written to a temporary folder and removed at the end).
//!
//! Rows: the single-thread baseline (read each file, count words in one hash map: the same
//! word rule and hasher as the `wc` app, so only the parallelism differs); the MapReduce job
//! with a coordinator and 2 worker processes of 2 cores each (64 MiB splits, 10 reduces,
//! intermediate files in a shared folder); the same job with one worker killed (-9) mid-map.
//! Every job's output is checked against the baseline's counts. Numbers only, never pass/fail:
//! the table says how far from the targets (>= 1.5x the baseline; killed <= 1.5x failure-free)
//! a run was, with the load average before and after, since the machine is shared.
//!
//! `cargo bench --bench mapreduce`; `MR_BENCH_MIB` (default 1024), `MR_BENCH_SEED` (default
//! 1), `MR_BENCH_KILL_AT` (fraction of the failure-free time at which to kill, default 0.4),
//! `MR_BENCH_CORES` (cores per worker, default 2).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardcore::mapreduce::apps::{count_words, FxHashMap, WordKey};
use shardcore::mapreduce::corpus::{generate, CorpusConfig};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

/// The baseline: one thread, one hash map, each file read whole.
fn single_thread(files: &[PathBuf]) -> FxHashMap<WordKey, u64> {
    let mut counts = FxHashMap::default();
    for file in files {
        let bytes = std::fs::read(file).expect("read corpus");
        count_words(&mut counts, &bytes).expect("the corpus is UTF-8");
    }
    counts
}

/// CPU seconds (user + system) of this process or of its waited-for children.
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the plain struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

struct JobRun {
    seconds: f64,
    cpu_seconds: f64,
    correct: bool,
    report: String,
}

fn spawn(args: &[&str], stdout: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shardcore"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .spawn()
        .expect("start shardcore")
}

/// One MapReduce job: a coordinator and 2 workers of `cores` cores; optionally worker 0 is killed
/// after `kill_after`.
fn mapreduce(
    cores: usize,
    dir: &Path,
    inputs: &str,
    kill_after: Option<Duration>,
    expected: &FxHashMap<WordKey, u64>,
) -> JobRun {
    let work = dir.join("work");
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&out);
    let report = dir.join("report.json");
    let cpu_before = cpu_seconds(libc::RUSAGE_CHILDREN);
    let started = Instant::now();
    let mut coordinator = spawn(
        &[
            "mr",
            "coordinator",
            "--no-progress",
            "--app",
            "wc",
            "--reduces",
            "10",
            "--split-mb",
            "64",
            "--input",
            inputs,
            "--work-dir",
            work.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        Stdio::piped(),
    );
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(coordinator.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut reader, &mut line).expect("address");
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let mut workers: Vec<Child> = (0..2)
        .map(|i| {
            let local = dir.join(format!("local-{i}"));
            spawn(
                &[
                    "mr",
                    "worker",
                    "--coordinator",
                    &addr,
                    "--cores",
                    &cores.to_string(),
                    "--local-dir",
                    local.to_str().unwrap(),
                    "--slots-dir",
                    dir.join("slots").to_str().unwrap(),
                ],
                Stdio::null(),
            )
        })
        .collect();
    if let Some(after) = kill_after {
        std::thread::sleep(after.saturating_sub(started.elapsed()));
        let _ = workers[0].kill();
        let _ = workers[0].wait();
    }
    let status = coordinator.wait().expect("coordinator");
    let seconds = started.elapsed().as_secs_f64();
    for worker in &mut workers {
        let _ = worker.wait();
    }
    let cpu_seconds = cpu_seconds(libc::RUSAGE_CHILDREN) - cpu_before;
    let correct = status.success() && outputs_match(&out, expected);
    let report = std::fs::read_to_string(&report).unwrap_or_default();
    JobRun {
        seconds,
        cpu_seconds,
        correct,
        report,
    }
}

fn outputs_match(out: &Path, expected: &FxHashMap<WordKey, u64>) -> bool {
    let mut got: HashMap<Vec<u8>, u64> = HashMap::new();
    for r in 0..10 {
        let Ok(text) = std::fs::read(out.join(format!("mr-out-{r}"))) else {
            return false;
        };
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let space = line.iter().rposition(|&b| b == b' ').expect("word count");
            let count = std::str::from_utf8(&line[space + 1..])
                .unwrap()
                .parse()
                .unwrap();
            got.insert(line[..space].to_vec(), count);
        }
    }
    got.len() == expected.len()
        && expected
            .iter()
            .all(|(k, v)| got.get(k.as_bytes()) == Some(v))
}

fn stat(report: &str, key: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(report).unwrap_or_default();
    value["stats"][key].to_string()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: run only
    // when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mib: u64 = env_or("MR_BENCH_MIB", 1024);
    let seed: u64 = env_or("MR_BENCH_SEED", 1);
    let kill_at: f64 = env_or("MR_BENCH_KILL_AT", 0.4);
    let cores: usize = env_or("MR_BENCH_CORES", 2);
    let dir = std::env::temp_dir().join(format!("shardcore-mr-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("load average before: {}", load_average());
    let t = Instant::now();
    let config = CorpusConfig {
        seed,
        total_bytes: mib << 20,
        files: 8,
        vocabulary: 100_000,
    };
    let files = generate(&config, &dir.join("in")).expect("generate the corpus");
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let mb = bytes as f64 / 1e6;
    println!(
        "corpus: {} files, {:.0} MB, seed {seed}, Zipf s=1 over 100,000 words, generated in {:.1} s",
        files.len(),
        mb,
        t.elapsed().as_secs_f64()
    );
    let inputs = format!("{}/*.txt", dir.join("in").display());

    let t = Instant::now();
    let cpu_before = cpu_seconds(libc::RUSAGE_SELF);
    let expected = single_thread(&files);
    let baseline = t.elapsed().as_secs_f64();
    let baseline_cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu_before;

    let clean = mapreduce(cores, &dir, &inputs, None, &expected);
    let kill_after = Duration::from_secs_f64(clean.seconds * kill_at);
    let killed = mapreduce(cores, &dir, &inputs, Some(kill_after), &expected);

    println!();
    println!("| run | seconds | MB/s | vs single-thread | CPU seconds | output |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| single-thread word count | {baseline:.2} | {:.0} | 1.00x | {baseline_cpu:.2} | {} words |",
        mb / baseline,
        expected.len()
    );
    for (name, run) in [
        (format!("MapReduce, 2 workers x {cores} cores"), &clean),
        (
            format!(
                "MapReduce, worker killed at {:.1} s",
                kill_after.as_secs_f64()
            ),
            &killed,
        ),
    ] {
        println!(
            "| {name} | {:.2} | {:.0} | {:.2}x | {:.2} | {} |",
            run.seconds,
            mb / run.seconds,
            baseline / run.seconds,
            run.cpu_seconds,
            if run.correct { "correct" } else { "WRONG" }
        );
    }
    println!();
    println!(
        "killed / failure-free time: {:.2}x (target <= 1.5x); failure-free speedup {:.2}x \
         (target >= 1.5x)",
        killed.seconds / clean.seconds,
        baseline / clean.seconds
    );
    println!(
        "killed run: worker losses {}, assignments {}, backups {}",
        stat(&killed.report, "worker_losses"),
        stat(&killed.report, "assignments"),
        stat(&killed.report, "backups")
    );
    println!("load average after: {}", load_average());
    let _ = std::fs::remove_dir_all(&dir);
}
