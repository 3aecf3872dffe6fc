//! `shardcore mr ...`: run a job locally (`run`: a coordinator and worker processes), run a
//! coordinator or a worker on their own (separate machines), run the sequential reference, or
//! generate the benchmark's corpus. Exit codes: 0 the job is done, 1 it failed, 2 it could not
//! start (bad arguments, no input, a damaged state file).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::apps::app_by_name;
use super::coordinator::{self, CoordinatorOptions, JobOptions, JobReport, ProgressMode};
use super::corpus::{self, CorpusConfig};
use super::planner::{Backups, PlannerConfig};
use super::{glob, sequential, worker};

/// The `mr` subcommands.
#[derive(Subcommand, Debug)]
pub enum MrCommand {
    /// Run a job on this machine: a coordinator and `--workers` worker processes.
    Run(RunArgs),
    /// Run a job's coordinator; workers connect to it (resumes the job in --work-dir if any).
    Coordinator(CoordinatorArgs),
    /// Run a worker: one task per core at a time, until the coordinator says the job is over.
    Worker(WorkerArgs),
    /// Run an app sequentially in this process (the reference a job's output must equal).
    Sequential(SequentialArgs),
    /// Write the benchmark's seeded Zipf corpus.
    GenCorpus(GenCorpusArgs),
}

/// What job to run.
#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    /// The app: wc, indexer, grep, exec.
    #[arg(long, default_value = "wc")]
    app: String,
    /// An argument for the app (grep: the pattern; exec: the map then the reduce executable).
    #[arg(long = "app-arg")]
    app_args: Vec<String>,
    /// Input files or patterns (`*` and `?`), repeatable.
    #[arg(long)]
    input: Vec<String>,
    /// Reduce tasks (output files).
    #[arg(long, default_value_t = 10)]
    reduces: u32,
    /// The largest map split, in MiB.
    #[arg(long, default_value_t = 64)]
    split_mb: u64,
    /// The largest map split in KiB, instead of --split-mb (small jobs, tests).
    #[arg(long)]
    split_kib: Option<u64>,
    /// The job's state file and (when shared) intermediate files.
    #[arg(long, default_value = "mr-work")]
    work_dir: PathBuf,
    /// Where mr-out-<r> files go.
    #[arg(long, default_value = ".")]
    output: PathBuf,
    /// Workers do not share --work-dir: reducers fetch map outputs over TCP.
    #[arg(long)]
    local_intermediate: bool,
    /// A task's lease: without a heartbeat for this long it is given to another worker.
    #[arg(long, default_value_t = 10_000)]
    lease_ms: u64,
    /// How often workers send heartbeats.
    #[arg(long, default_value_t = 1_000)]
    heartbeat_ms: u64,
    /// Failures of one task before the job fails.
    #[arg(long, default_value_t = 3)]
    max_failures: u32,
    /// No backup copies of straggling tasks.
    #[arg(long)]
    no_backups: bool,
    /// Write the JSON job report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

impl JobArgs {
    fn job_options(&self) -> JobOptions {
        let defaults = PlannerConfig::default();
        JobOptions {
            app: self.app.clone(),
            app_args: self.app_args.clone(),
            inputs: self.input.clone(),
            reduces: self.reduces,
            split_bytes: match self.split_kib {
                Some(kib) => kib.max(1) << 10,
                None => self.split_mb.max(1) << 20,
            },
            work_dir: self.work_dir.clone(),
            output_dir: self.output.clone(),
            shared_intermediate: !self.local_intermediate,
            planner: PlannerConfig {
                lease_ms: self.lease_ms.max(1),
                heartbeat_ms: self.heartbeat_ms.max(1),
                max_task_failures: self.max_failures.max(1),
                backups: if self.no_backups {
                    Backups::Off
                } else {
                    defaults.backups
                },
                ..defaults
            },
        }
    }

    fn coordinator_options(&self, listen: SocketAddr, exit_grace: Duration) -> CoordinatorOptions {
        CoordinatorOptions {
            listen,
            job: self.job_options(),
            report: self.report.clone(),
            progress: if self.no_progress {
                ProgressMode::Off
            } else {
                ProgressMode::Auto
            },
            exit_grace,
        }
    }
}

/// `mr run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Worker processes to start.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Cores per worker; 0 means one per CPU.
    #[arg(long, default_value_t = 0)]
    cores_per_worker: usize,
    /// Passed to the workers: machine-wide task slots (see `mr worker --help`).
    #[arg(long)]
    slots: Option<usize>,
    /// Passed to the workers: the folder of the slots' lock files.
    #[arg(long)]
    slots_dir: Option<PathBuf>,
}

/// `mr coordinator`.
#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Where to listen for workers (port 0 picks one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// After the job is over, how long to keep telling workers to exit.
    #[arg(long, default_value_t = 1_000)]
    exit_grace_ms: u64,
}

/// `mr worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The coordinator's address.
    #[arg(long)]
    coordinator: SocketAddr,
    /// Cores (task slots); 0 means one per CPU.
    #[arg(long, default_value_t = 0)]
    cores: usize,
    /// Where map outputs go for jobs with --local-intermediate (default: a temporary folder).
    #[arg(long)]
    local_dir: Option<PathBuf>,
    /// Exit after failing to reach the coordinator for this long.
    #[arg(long, default_value_t = 30_000)]
    give_up_ms: u64,
    /// The address this worker's fetch servers listen on.
    #[arg(long, default_value = "127.0.0.1")]
    fetch_host: IpAddr,
    /// Machine-wide task slots shared by every worker on this machine: at most this many
    /// tasks run at once (default: the CPUs this process may use; 0: no limit).
    #[arg(long)]
    slots: Option<usize>,
    /// The folder of the slots' lock files (default: shardcore-mr-slots in the temp folder).
    #[arg(long)]
    slots_dir: Option<PathBuf>,
    /// Pin each task thread to its slot's CPU (for machines not shared with other work).
    #[arg(long)]
    pin: bool,
}

/// `mr sequential`.
#[derive(Args, Debug)]
pub struct SequentialArgs {
    /// The app.
    #[arg(long, default_value = "wc")]
    app: String,
    /// An argument for the app.
    #[arg(long = "app-arg")]
    app_args: Vec<String>,
    /// Input files or patterns, repeatable.
    #[arg(long, required = true)]
    input: Vec<String>,
    /// Write the output here (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// `mr gen-corpus`.
#[derive(Args, Debug)]
pub struct GenCorpusArgs {
    /// The folder to write corpus-<i>.txt into.
    #[arg(long)]
    dir: PathBuf,
    /// Total size in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Files.
    #[arg(long, default_value_t = 8)]
    files: u32,
    /// The seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct words.
    #[arg(long, default_value_t = 100_000)]
    vocabulary: u32,
}

impl MrCommand {
    /// Runs the subcommand.
    pub fn run(self) -> ExitCode {
        match self {
            MrCommand::Run(args) => run_local(args),
            MrCommand::Coordinator(args) => {
                let options = args
                    .job
                    .coordinator_options(args.listen, Duration::from_millis(args.exit_grace_ms));
                let result = coordinator::run(options, |addr| {
                    let mut stdout = std::io::stdout();
                    let _ = writeln!(stdout, "coordinator listening on {addr}");
                    let _ = stdout.flush();
                });
                finish(result)
            }
            MrCommand::Worker(args) => {
                let options = worker::WorkerOptions {
                    coordinator: args.coordinator,
                    cores: args.cores,
                    local_dir: args.local_dir,
                    give_up_after: Duration::from_millis(args.give_up_ms),
                    fetch_host: args.fetch_host,
                    slots: args
                        .slots
                        .unwrap_or_else(|| super::slots::allowed_cpus().len().max(1)),
                    slots_dir: args
                        .slots_dir
                        .unwrap_or_else(|| std::env::temp_dir().join("shardcore-mr-slots")),
                    pinning: if args.pin {
                        worker::TaskPinning::Pinned
                    } else {
                        worker::TaskPinning::Unpinned
                    },
                };
                match worker::run(options) {
                    Ok(summary) => {
                        eprintln!(
                            "worker: {} tasks done, {} failed",
                            summary.tasks_done, summary.tasks_failed
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("worker: {e}");
                        ExitCode::from(1)
                    }
                }
            }
            MrCommand::Sequential(args) => sequential_cmd(args),
            MrCommand::GenCorpus(args) => {
                let config = CorpusConfig {
                    seed: args.seed,
                    total_bytes: args.mib << 20,
                    files: args.files,
                    vocabulary: args.vocabulary.max(1),
                };
                match corpus::generate(&config, &args.dir) {
                    Ok(paths) => {
                        println!("wrote {} files into {}", paths.len(), args.dir.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("gen-corpus: {e}");
                        ExitCode::from(2)
                    }
                }
            }
        }
    }
}

fn run_local(args: RunArgs) -> ExitCode {
    let options = args.job.coordinator_options(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Duration::from_secs(1),
    );
    let children: Arc<Mutex<Vec<Child>>> = Arc::new(Mutex::new(Vec::new()));
    let spawned = children.clone();
    let workers = args.workers.max(1);
    let cores = args.cores_per_worker;
    let mut slot_args: Vec<String> = Vec::new();
    if let Some(slots) = args.slots {
        slot_args.extend(["--slots".to_string(), slots.to_string()]);
    }
    if let Some(dir) = &args.slots_dir {
        slot_args.extend([
            "--slots-dir".to_string(),
            dir.to_string_lossy().into_owned(),
        ]);
    }
    let result = coordinator::run(options, move |addr| {
        let exe = std::env::current_exe().expect("the running binary's path");
        for _ in 0..workers {
            let child = Command::new(&exe)
                .args(["mr", "worker", "--coordinator", &addr.to_string()])
                .args(["--cores", &cores.to_string()])
                .args(&slot_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn();
            match child {
                Ok(child) => spawned.lock().expect("children").push(child),
                Err(e) => eprintln!("starting a worker: {e}"),
            }
        }
    });
    // Workers exit when told; any still running after a grace (one busy with a backup copy)
    // is stopped.
    let deadline = Instant::now() + Duration::from_secs(3);
    for child in children.lock().expect("children").iter_mut() {
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
    finish(result)
}

fn finish(result: Result<JobReport, String>) -> ExitCode {
    match result {
        Ok(report) => {
            // Not println!: a reader that went away (`| head`, a harness that read only the
            // address) must not turn a finished job into a panic.
            let _ = writeln!(std::io::stdout(), "{}", summary(&report));
            if report.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("mr: {e}");
            ExitCode::from(2)
        }
    }
}

/// The final summary: status, time, counters per phase.
pub fn summary(report: &JobReport) -> String {
    let mut out = format!(
        "job {} ({}) {} in {:.2} s{}",
        report.job,
        report.app,
        report.status,
        report.elapsed_ms as f64 / 1000.0,
        if report.resumed { " (resumed)" } else { "" }
    );
    if let Some(error) = &report.error {
        out.push_str(&format!(": {error}"));
    }
    for (name, phase) in [("map", &report.map), ("reduce", &report.reduce)] {
        out.push_str(&format!(
            "\n  {name:<6} {}/{} tasks  records {} in, {} out  bytes {} in, {} out",
            phase.done,
            phase.tasks,
            phase.records_in,
            phase.records_out,
            phase.bytes_in,
            phase.bytes_out
        ));
    }
    let s = &report.stats;
    out.push_str(&format!(
        "\n  assignments {}, backups {}, lease expiries {}, worker losses {}, duplicates {}, \
         lost map outputs {}, failures {}, restores {}",
        s.assignments,
        s.backups,
        s.lease_expiries,
        s.worker_losses,
        s.duplicate_completions,
        s.lost_map_outputs,
        s.failures.len(),
        s.restores
    ));
    for failure in s.failures.iter().rev().take(5) {
        out.push_str(&format!("\n  failure: {failure}"));
    }
    if report.succeeded() {
        out.push_str(&format!("\n  outputs: {}/mr-out-*", report.output_dir));
    }
    out
}

fn sequential_cmd(args: SequentialArgs) -> ExitCode {
    let run = || -> Result<String, String> {
        let app = app_by_name(&args.app, &args.app_args)?;
        let mut files = Vec::new();
        for pattern in &args.input {
            for path in glob::expand(pattern)? {
                files.push(path.to_string_lossy().into_owned());
            }
        }
        sequential::run_files(&*app, &files)
    };
    match run() {
        Ok(output) => {
            let written = match &args.output {
                Some(path) => std::fs::write(path, output).map_err(|e| e.to_string()),
                None => std::io::stdout()
                    .write_all(output.as_bytes())
                    .map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mr sequential: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Err(e) => {
            eprintln!("mr sequential: {e}");
            ExitCode::from(1)
        }
    }
}
