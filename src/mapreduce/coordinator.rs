//! The coordinator's runtime: the thin glue around the [`Planner`] (one `shardcore_io` core).
//!
//! It plans the job (expands the input patterns, sizes the files) or resumes it from the state
//! file, listens for worker cores, hands each decoded message to the planner with the time since
//! start, answers with the planner's assignment, tells the planner when a connection closes
//! (that worker core's running tasks are released at once: a crashed worker closes its sockets,
//! a stalled one keeps them open and loses its tasks when the lease runs out), and on a 10 ms
//! tick expires leases, persists the planner's state when it changed, and draws progress. Once
//! the job is over it answers `Exit` for a short grace period, writes the JSON report and
//! returns.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use shardcore_io::net::{TcpListener, TcpStream};
use shardcore_io::{Core, Pinning, RuntimeConfig};
use shardcore_protocol::FrameKind;

use super::apps::app_by_name;
use super::glob;
use super::planner::{InputFile, JobStatus, PhaseProgress, Planner, PlannerConfig, PlannerStats};
use super::state_file;
use super::task::intermediate_dir;
use crate::wire::mapreduce::{decode_mapreduce, JobSpec, MrMessage, TaskKind};
use crate::wire::Encoder;

/// The state file's name in the work directory.
pub const STATE_FILE: &str = "mr-job.state";

/// The coordinator's tick: leases expire and state is persisted at this granularity.
pub const TICK: Duration = Duration::from_millis(10);

/// How often the progress bar is redrawn on a terminal.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// What job to run (ignored when the work directory holds a job to resume).
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// The app.
    pub app: String,
    /// Its arguments.
    pub app_args: Vec<String>,
    /// Input files or patterns.
    pub inputs: Vec<String>,
    /// Reduce tasks.
    pub reduces: u32,
    /// The largest split.
    pub split_bytes: u64,
    /// The job's state file, and its intermediate files when shared.
    pub work_dir: PathBuf,
    /// Where `mr-out-<r>` goes.
    pub output_dir: PathBuf,
    /// Whether workers share `work_dir` (else reducers fetch over TCP).
    pub shared_intermediate: bool,
    /// Leases, retries, backups.
    pub planner: PlannerConfig,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A redrawn bar on a terminal, else a line per finished phase.
    Auto,
    /// Nothing.
    Off,
}

/// How the coordinator runs.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// Where to listen for workers.
    pub listen: SocketAddr,
    /// The job.
    pub job: JobOptions,
    /// Where to write the JSON report (also printed in summary form by the CLI).
    pub report: Option<PathBuf>,
    /// Progress display.
    pub progress: ProgressMode,
    /// After the job is over, how long to keep answering `Exit` to workers that ask.
    pub exit_grace: Duration,
}

/// One phase in the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    /// Tasks in the phase.
    pub tasks: u32,
    /// Tasks done.
    pub done: u32,
    /// Records read.
    pub records_in: u64,
    /// Records written.
    pub records_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// When the phase ended, in ms since this coordinator started (if it did).
    pub ended_ms: Option<u64>,
}

/// The job report, written as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    /// The job's id.
    pub job: String,
    /// The app.
    pub app: String,
    /// `done` or `failed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Milliseconds this coordinator ran the job (since its start, so after a restart only the
    /// resumed part).
    pub elapsed_ms: u64,
    /// Whether this coordinator resumed a job from its state file.
    pub resumed: bool,
    /// Map phase.
    pub map: PhaseReport,
    /// Reduce phase.
    pub reduce: PhaseReport,
    /// The planner's statistics (assignments, backups, expiries, failures...).
    pub stats: PlannerStats,
    /// Where the outputs are.
    pub output_dir: String,
}

impl JobReport {
    /// Whether the job succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == "done"
    }
}

/// State shared by the coordinator's tasks (all on its one core).
struct Shared {
    planner: Planner,
    started: Instant,
    state_path: PathBuf,
    connections: usize,
    persist_error: Option<String>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// Plans a new job or resumes the one in `work_dir`; returns the planner and whether it resumed.
pub fn plan_or_resume(job: &JobOptions) -> Result<(Planner, bool), String> {
    std::fs::create_dir_all(&job.work_dir)
        .map_err(|e| format!("creating {}: {e}", job.work_dir.display()))?;
    let state_path = job.work_dir.join(STATE_FILE);
    if let Some(bytes) = state_file::read(&state_path)? {
        return Ok((Planner::restore(&bytes)?, true));
    }
    app_by_name(&job.app, &job.app_args)?;
    let mut files = Vec::new();
    for pattern in &job.inputs {
        for path in glob::expand(pattern)? {
            let metadata =
                std::fs::metadata(&path).map_err(|e| format!("input {}: {e}", path.display()))?;
            let path = path
                .to_str()
                .ok_or_else(|| format!("input {} is not UTF-8", path.display()))?
                .to_string();
            files.push(InputFile {
                path,
                bytes: metadata.len(),
            });
        }
    }
    let spec = JobSpec {
        id: job_id(),
        app: job.app.clone(),
        app_args: job.app_args.clone(),
        map_count: 0,
        reduce_count: job.reduces,
        work_dir: path_string(&job.work_dir)?,
        output_dir: path_string(&job.output_dir)?,
        shared_intermediate: job.shared_intermediate,
    };
    let mut planner = Planner::new(spec, files, job.split_bytes, job.planner)?;
    state_file::write(&state_path, &planner.durable_state())?;
    planner.take_dirty();
    Ok((planner, false))
}

fn path_string(path: &Path) -> Result<String, String> {
    let absolute = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    absolute
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

fn job_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 40)).max(1)
}

/// Runs the coordinator until the job is over. `on_listening` is called once with the bound
/// address (before any worker can be served), from the coordinator's thread.
pub fn run(
    options: CoordinatorOptions,
    on_listening: impl FnOnce(SocketAddr) + Send + 'static,
) -> Result<JobReport, String> {
    let (planner, resumed) = plan_or_resume(&options.job)?;
    let state_path = options.job.work_dir.join(STATE_FILE);
    let on_listening = Arc::new(Mutex::new(Some(on_listening)));
    let config = RuntimeConfig {
        cores: 1,
        pinning: Pinning::Unpinned,
        name: "mr-coordinator".to_string(),
        ..RuntimeConfig::default()
    };
    // The runtime calls its closure once per core, by reference: the one core takes the
    // planner out of this slot.
    let slot = Arc::new(Mutex::new(Some(planner)));
    let opts = options.clone();
    let results = shardcore_io::run(config, move |_core: Core<()>| {
        let planner = slot.lock().expect("slot").take().expect("one core");
        let on_listening = on_listening.lock().expect("slot").take();
        let opts = opts.clone();
        let state_path = state_path.clone();
        async move { coordinate(opts, planner, resumed, state_path, on_listening).await }
    })
    .map_err(|e| format!("coordinator runtime: {e}"))?;
    let report = results.into_iter().next().expect("one core")?;
    if let Some(path) = &options.report {
        let json = serde_json::to_vec_pretty(&report).expect("the report serializes");
        std::fs::write(path, json).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(report)
}

async fn coordinate<F: FnOnce(SocketAddr)>(
    options: CoordinatorOptions,
    planner: Planner,
    resumed: bool,
    state_path: PathBuf,
    on_listening: Option<F>,
) -> Result<JobReport, String> {
    let listener = TcpListener::bind(options.listen)
        .map_err(|e| format!("listening on {}: {e}", options.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listener: {e}"))?;
    if let Some(f) = on_listening {
        f(addr);
    }
    let shared = Rc::new(RefCell::new(Shared {
        planner,
        started: Instant::now(),
        state_path,
        connections: 0,
        persist_error: None,
    }));
    let accept_shared = shared.clone();
    let acceptor = shardcore_io::spawn(async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let shared = accept_shared.clone();
                    shared.borrow_mut().connections += 1;
                    shardcore_io::spawn(async move { serve(stream, shared).await }).detach();
                }
                Err(_) => shardcore_io::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    let mut progress = Progress::new(options.progress);
    let mut ticker = shardcore_io::Ticker::new(TICK);
    let mut over_since: Option<Instant> = None;
    loop {
        ticker.tick().await;
        let mut state = shared.borrow_mut();
        let now = state.now_ms();
        state.planner.tick(now);
        if state.planner.take_dirty() {
            let bytes = state.planner.durable_state();
            if let Err(e) = state_file::write(&state.state_path, &bytes) {
                state.persist_error = Some(e);
            }
        }
        if let Some(error) = state.persist_error.take() {
            return Err(format!("cannot persist the job state, stopping: {error}"));
        }
        progress.observe(&state.planner, now);
        if *state.planner.status() != JobStatus::Running {
            let since = *over_since.get_or_insert_with(Instant::now);
            if state.connections == 0 || since.elapsed() >= options.exit_grace {
                break;
            }
        }
    }
    drop(acceptor);
    let state = shared.borrow();
    progress.finish(&state.planner);
    let planner = &state.planner;
    if *planner.status() == JobStatus::Done && planner.job().shared_intermediate {
        let _ = std::fs::remove_dir_all(intermediate_dir(
            Path::new(&planner.job().work_dir),
            planner.job().id,
        ));
    }
    Ok(report(planner, state.now_ms(), resumed, &progress))
}

fn report(planner: &Planner, elapsed_ms: u64, resumed: bool, progress: &Progress) -> JobReport {
    let phase = |kind, ended_ms| {
        let p: PhaseProgress = planner.progress(kind);
        PhaseReport {
            tasks: p.tasks,
            done: p.done,
            records_in: p.counters.records_in,
            records_out: p.counters.records_out,
            bytes_in: p.counters.bytes_in,
            bytes_out: p.counters.bytes_out,
            ended_ms,
        }
    };
    let (status, error) = match planner.status() {
        JobStatus::Done => ("done", None),
        JobStatus::Failed(error) => ("failed", Some(error.to_string())),
        JobStatus::Running => ("running", None),
    };
    JobReport {
        job: format!("{:016x}", planner.job().id),
        app: planner.job().app.clone(),
        status: status.to_string(),
        error,
        elapsed_ms,
        resumed,
        map: phase(TaskKind::Map, progress.map_ended_ms),
        reduce: phase(TaskKind::Reduce, progress.reduce_ended_ms),
        stats: planner.stats().clone(),
        output_dir: planner.job().output_dir.clone(),
    }
}

/// One worker connection: every message goes to the planner; requests and reports are answered
/// with an assignment. A bad frame or message closes the connection (and releases its tasks).
async fn serve(stream: TcpStream, shared: Rc<RefCell<Shared>>) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let (mut reader, writer) = stream.into_framed();
    let mut encoder = Encoder::new();
    let mut workers = BTreeSet::new();
    let refuse =
        |why: String| eprintln!("mr coordinator: closing the connection from {peer}: {why}");
    loop {
        let frame = match reader.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                refuse(e.to_string());
                break;
            }
        };
        if frame.kind != FrameKind::MapReduce {
            refuse(format!("unexpected frame kind {:?}", frame.kind));
            break;
        }
        let message = match decode_mapreduce(&frame.body) {
            Ok(message) => message,
            Err(e) => {
                refuse(e.to_string());
                break;
            }
        };
        let answer = {
            let mut state = shared.borrow_mut();
            let now = state.now_ms();
            let planner = &mut state.planner;
            let asking = match message {
                MrMessage::RequestTask { worker } => worker,
                MrMessage::TaskDone {
                    task,
                    counters,
                    fetch_addr,
                } => {
                    planner.done(&task, counters, &fetch_addr, now);
                    task.worker
                }
                MrMessage::TaskFailed {
                    task,
                    failure,
                    reason,
                } => {
                    planner.failed(&task, &failure, &reason);
                    task.worker
                }
                MrMessage::Heartbeat { task, bytes_done } => {
                    planner.heartbeat(&task, bytes_done, now);
                    workers.insert(task.worker);
                    continue;
                }
                other => {
                    refuse(format!("a worker does not send {other:?}"));
                    break;
                }
            };
            workers.insert(asking);
            MrMessage::Assignment(planner.request(asking, now))
        };
        let Ok(body) = encoder.mapreduce_body(&answer) else {
            break;
        };
        if writer.send(FrameKind::MapReduce, body).await.is_err() {
            break;
        }
    }
    let mut state = shared.borrow_mut();
    state.connections -= 1;
    for worker in workers {
        state.planner.worker_lost(worker);
    }
}

/// The progress display: a bar per phase redrawn on a terminal, or one line per finished phase.
struct Progress {
    mode: ProgressMode,
    tty: bool,
    last_draw: Option<Instant>,
    map_ended_ms: Option<u64>,
    reduce_ended_ms: Option<u64>,
}

impl Progress {
    fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode,
            tty: std::io::stderr().is_terminal(),
            last_draw: None,
            map_ended_ms: None,
            reduce_ended_ms: None,
        }
    }

    fn observe(&mut self, planner: &Planner, now_ms: u64) {
        let map = planner.progress(TaskKind::Map);
        let reduce = planner.progress(TaskKind::Reduce);
        if map.done == map.tasks && self.map_ended_ms.is_none() {
            self.map_ended_ms = Some(now_ms);
            self.line(&format_phase("map", &map, now_ms, 0));
        }
        if reduce.done == reduce.tasks && self.reduce_ended_ms.is_none() {
            self.reduce_ended_ms = Some(now_ms);
            let start = self.map_ended_ms.unwrap_or(0);
            self.line(&format_phase("reduce", &reduce, now_ms, start));
        }
        let due = self
            .last_draw
            .is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
        if self.mode == ProgressMode::Auto && self.tty && due {
            self.last_draw = Some(Instant::now());
            let text = match self.map_ended_ms {
                None => format_phase("map", &map, now_ms, 0),
                Some(start) => format_phase("reduce", &reduce, now_ms, start),
            };
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
        }
    }

    fn line(&self, text: &str) {
        if self.mode == ProgressMode::Auto {
            if self.tty {
                eprintln!("\r\x1b[2K{text}");
            } else {
                eprintln!("{text}");
            }
        }
    }

    fn finish(&self, planner: &Planner) {
        if let JobStatus::Failed(error) = planner.status() {
            self.line(&format!("job failed: {error}"));
        }
    }
}

/// `map     12/16 tasks [############----]  768.0/1024.0 MiB  210.3 MB/s  ETA 1s`
fn format_phase(name: &str, p: &PhaseProgress, now_ms: u64, start_ms: u64) -> String {
    const WIDTH: u32 = 24;
    let filled = (p.done * WIDTH).checked_div(p.tasks).unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let elapsed_s = (now_ms.saturating_sub(start_ms)) as f64 / 1000.0;
    let rate = if elapsed_s > 0.0 {
        p.bytes_done as f64 / elapsed_s
    } else {
        0.0
    };
    let left = p.bytes_total.saturating_sub(p.bytes_done) as f64;
    let eta = if p.done == p.tasks {
        "done".to_string()
    } else if rate > 0.0 {
        format!("ETA {:.0}s", left / rate)
    } else {
        "ETA ?".to_string()
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    format!(
        "{name:<7}{:>4}/{:<4} tasks [{bar}] {:>8.1}/{:.1} MiB {:>8.1} MB/s  {eta}",
        p.done,
        p.tasks,
        mib(p.bytes_done),
        mib(p.bytes_total),
        rate / 1e6,
    )
}
