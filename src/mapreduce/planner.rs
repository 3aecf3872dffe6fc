//! The coordinator's planner: a sans-I/O state machine that owns one job's tasks.
//!
//! Inputs arrive as calls, with the time as an argument (milliseconds on the caller's monotonic
//! clock): [`Planner::request`] (a worker core asks for work), [`Planner::heartbeat`],
//! [`Planner::done`], [`Planner::failed`], [`Planner::worker_lost`] (its connection closed) and
//! [`Planner::tick`] (leases expire). The planner never reads a clock, opens a file or a socket:
//! the coordinator's runtime (`coordinator.rs`) does that and persists
//! [`Planner::durable_state`] whenever [`Planner::take_dirty`] says it changed.
//!
//! The rules, after Dean & Ghemawat (OSDI 2004) §3:
//! - **Splits**: every input file is cut into byte ranges of at most `split_bytes` (a line
//!   belongs to the split its first byte is in; the worker reads past the end to finish it).
//! - **Phases**: reduce tasks are handed out only once every map task is done (§3.1 step 5);
//!   a map output lost later (a local work directory on a dead worker) sends that map back to
//!   idle and reduces wait again.
//! - **Leases** (§3.3 "worker failure"): a running task belongs to its worker while the worker
//!   heartbeats within `lease_ms`, or until its connection closes; then the task is idle again.
//!   No task is handed out again while its worker is alive and within its lease — except a
//!   **backup copy** (§3.6): when a phase has no idle task left, a request may get a second copy
//!   of the running task that has run longest, if it has run `slowdown_factor` times longer than
//!   the phase's median finished task and at least `min_running_ms`.
//! - **First completion wins**: the first `done` of a task is accepted whichever attempt sent it
//!   (even one whose lease expired, or one from before a coordinator restart); later ones are
//!   ignored. Outputs are named by attempt, so copies never overwrite an accepted output.
//! - **Bounded retries**: a task that fails `max_task_failures` times, or loses its worker
//!   `max_worker_losses` times, fails the job with the task and the last reason named.

use serde::{Deserialize, Serialize};

use crate::wire::mapreduce::{
    Assignment, Counters, FailureKind, JobSpec, MapLocation, MapTaskSpec, ReduceTaskSpec,
    TaskAssignment, TaskKind, TaskRef,
};

/// How far attempt numbers jump when a planner is restored, so an attempt handed out after the
/// last persisted state cannot be handed out again (its output files are named by attempt). The
/// coordinator persists on the tick after every assignment, so between two persisted states a
/// task gets at most a couple of attempts, far below this.
pub const ATTEMPT_GAP_ON_RESTORE: u32 = 64;

/// How many failure reasons the job report keeps (the most recent).
pub const MAX_FAILURES_KEPT: usize = 100;

/// At most this many backup copies run at once: they only pay at the tail of a phase, and each
/// one takes a worker core away from real work.
pub const MAX_BACKUPS_RUNNING: usize = 4;

/// Whether near the end of a phase slow tasks get a second copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backups {
    /// Never: a task runs again only once its worker is gone or out of its lease.
    Off,
    /// Backup copies of stragglers, as the paper's §3.6.
    On {
        /// A task must have run at least this long.
        min_running_ms: u64,
        /// ... and this many times the phase's median finished task.
        slowdown_factor: u32,
    },
}

/// The planner's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannerConfig {
    /// A running task's lease, renewed by every heartbeat.
    pub lease_ms: u64,
    /// How often workers send heartbeats (a few per lease).
    pub heartbeat_ms: u64,
    /// Failures of one task (its own fault) before the job fails.
    pub max_task_failures: u32,
    /// Losses of one task's worker (crash, stall) before the job fails.
    pub max_worker_losses: u32,
    /// Straggler backups.
    pub backups: Backups,
    /// How long a worker waits before asking again when nothing is free.
    pub wait_retry_ms: u32,
}

impl Default for PlannerConfig {
    /// A 10 s lease (the lab's), heartbeats every second, 3 failures, 8 worker losses, backups
    /// after 1 s and twice the median, retries after 50 ms.
    fn default() -> PlannerConfig {
        PlannerConfig {
            lease_ms: 10_000,
            heartbeat_ms: 1_000,
            max_task_failures: 3,
            max_worker_losses: 8,
            backups: Backups::On {
                min_running_ms: 1_000,
                slowdown_factor: 2,
            },
            wait_retry_ms: 50,
        }
    }
}

/// One input file as the coordinator found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    /// Its path, as workers will open it.
    pub path: String,
    /// Its size when the job was planned.
    pub bytes: u64,
}

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Map or reduce.
    pub kind: TaskKind,
    /// The task.
    pub task: u32,
    /// Attempts made.
    pub attempts: u32,
    /// What went wrong, last.
    pub reason: String,
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            TaskKind::Map => "map",
            TaskKind::Reduce => "reduce",
        };
        write!(
            f,
            "{kind} task {} failed after {} attempts: {}",
            self.task, self.attempts, self.reason
        )
    }
}

/// The job's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Tasks remain.
    Running,
    /// Every reduce output is in place.
    Done,
    /// A task failed too often.
    Failed(JobError),
}

/// One running copy of a task.
#[derive(Clone, Debug)]
struct Run {
    worker: u64,
    attempt: u32,
    started_ms: u64,
    deadline_ms: u64,
    bytes_done: u64,
}

/// An accepted completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Completion {
    worker: u64,
    attempt: u32,
    addr: String,
    duration_ms: u64,
    #[serde(with = "counters_serde")]
    counters: Counters,
}

/// One task.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Task {
    /// For maps: the split (file index, offset, length); reduces have none.
    split: Option<(usize, u64, u64)>,
    done: Option<Completion>,
    next_attempt: u32,
    failures: u32,
    worker_losses: u32,
    last_error: Option<String>,
    #[serde(skip)]
    runs: Vec<Run>,
}

impl Task {
    fn new(split: Option<(usize, u64, u64)>) -> Task {
        Task {
            split,
            done: None,
            next_attempt: 0,
            failures: 0,
            worker_losses: 0,
            last_error: None,
            runs: Vec::new(),
        }
    }

    fn is_idle(&self) -> bool {
        self.done.is_none() && self.runs.is_empty()
    }
}

/// Statistics for the job report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannerStats {
    /// Tasks handed out, backups included.
    pub assignments: u64,
    /// Backup copies started.
    pub backups: u64,
    /// Leases that expired.
    pub lease_expiries: u64,
    /// Running tasks released because their worker's connection closed.
    pub worker_losses: u64,
    /// Completions ignored because the task was already done.
    pub duplicate_completions: u64,
    /// Map tasks run again because their output was lost.
    pub lost_map_outputs: u64,
    /// Task failures reported, with their reasons (the last [`MAX_FAILURES_KEPT`]).
    pub failures: Vec<String>,
    /// Times the planner was restored from a persisted state.
    pub restores: u64,
}

/// Progress of one phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseProgress {
    /// Tasks in the phase.
    pub tasks: u32,
    /// Tasks done.
    pub done: u32,
    /// Tasks with at least one running copy.
    pub running: u32,
    /// Input bytes of the phase (maps: the splits; reduces: what done maps wrote).
    pub bytes_total: u64,
    /// Input bytes processed: done tasks' plus running tasks' heartbeats.
    pub bytes_done: u64,
    /// Counters of the done tasks.
    pub counters: Counters,
}

/// The planner: one job's tasks, leases and outcome.
#[derive(Clone, Debug)]
pub struct Planner {
    config: PlannerConfig,
    job: JobSpec,
    files: Vec<InputFile>,
    maps: Vec<Task>,
    reduces: Vec<Task>,
    status: JobStatus,
    stats: PlannerStats,
    dirty: bool,
}

/// What `done` did with a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completed {
    /// The first completion of the task: accepted.
    Accepted,
    /// The task was already done (a backup, or a copy from before a re-run).
    Duplicate,
    /// Another job's, or no such task: ignored.
    Unknown,
}

impl Planner {
    /// Plans a job: `job.map_count` is filled in from the splits. Fails if there is no input or
    /// no reduce.
    pub fn new(
        mut job: JobSpec,
        files: Vec<InputFile>,
        split_bytes: u64,
        config: PlannerConfig,
    ) -> Result<Planner, String> {
        assert!(split_bytes > 0, "split size must be positive");
        if files.is_empty() {
            return Err("no input files".to_string());
        }
        if job.reduce_count == 0 {
            return Err("a job needs at least one reduce task".to_string());
        }
        let maps = splits(&files, split_bytes)
            .into_iter()
            .map(|split| Task::new(Some(split)))
            .collect::<Vec<_>>();
        job.map_count = u32::try_from(maps.len()).map_err(|_| "too many splits".to_string())?;
        let reduces = (0..job.reduce_count).map(|_| Task::new(None)).collect();
        Ok(Planner {
            config,
            job,
            files,
            maps,
            reduces,
            status: JobStatus::Running,
            stats: PlannerStats::default(),
            dirty: true,
        })
    }

    /// The job.
    pub fn job(&self) -> &JobSpec {
        &self.job
    }

    /// The settings.
    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// Running, done or failed.
    pub fn status(&self) -> &JobStatus {
        &self.status
    }

    /// Statistics for the report.
    pub fn stats(&self) -> &PlannerStats {
        &self.stats
    }

    /// Whether the durable state changed since the last call (then persist it).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Progress of the map or the reduce phase.
    pub fn progress(&self, kind: TaskKind) -> PhaseProgress {
        let tasks = self.tasks(kind);
        let mut progress = PhaseProgress {
            tasks: tasks.len() as u32,
            ..PhaseProgress::default()
        };
        for task in tasks {
            let total = match (kind, task.split) {
                (TaskKind::Map, Some((_, _, length))) => length,
                _ => 0,
            };
            progress.bytes_total += total;
            if let Some(done) = &task.done {
                progress.done += 1;
                progress.counters.add(&done.counters);
                progress.bytes_done += if kind == TaskKind::Map {
                    total
                } else {
                    done.counters.bytes_in
                };
            } else if !task.runs.is_empty() {
                progress.running += 1;
                progress.bytes_done += task.runs.iter().map(|r| r.bytes_done).max().unwrap_or(0);
            }
        }
        if kind == TaskKind::Reduce {
            // A reduce reads every map's partition: the phase's input is what the maps wrote.
            let written = self.progress_map_bytes_out();
            progress.bytes_total = progress.bytes_total.max(written);
        }
        progress
    }

    fn progress_map_bytes_out(&self) -> u64 {
        self.maps
            .iter()
            .filter_map(|t| t.done.as_ref())
            .map(|d| d.counters.bytes_out)
            .sum()
    }

    /// A worker core asks for work at `now_ms`.
    pub fn request(&mut self, worker: u64, now_ms: u64) -> TaskAssignment {
        let assignment = match self.status {
            JobStatus::Done => Assignment::Exit { job_failed: false },
            JobStatus::Failed(_) => Assignment::Exit { job_failed: true },
            JobStatus::Running => self.pick(worker, now_ms),
        };
        TaskAssignment {
            job: Some(self.job.clone()),
            lease_ms: self.config.lease_ms as u32,
            heartbeat_ms: self.config.heartbeat_ms as u32,
            assignment,
        }
    }

    /// An idle task of the current phase, else a backup, else wait.
    fn pick(&mut self, worker: u64, now_ms: u64) -> Assignment {
        let maps_done = self.maps.iter().all(|t| t.done.is_some());
        let kind = if maps_done {
            TaskKind::Reduce
        } else {
            TaskKind::Map
        };
        let chosen = self
            .tasks(kind)
            .iter()
            .position(Task::is_idle)
            .or_else(|| self.backup_candidate(kind, worker, now_ms));
        match chosen {
            Some(index) => self.start(kind, index as u32, worker, now_ms),
            None => Assignment::Wait {
                retry_ms: self.config.wait_retry_ms,
            },
        }
    }

    /// The running task most worth a backup copy on `worker`, if any (§3.6).
    fn backup_candidate(&self, kind: TaskKind, worker: u64, now_ms: u64) -> Option<usize> {
        let Backups::On {
            min_running_ms,
            slowdown_factor,
        } = self.config.backups
        else {
            return None;
        };
        let running_backups = self.all_tasks().filter(|t| t.runs.len() > 1).count();
        if running_backups >= MAX_BACKUPS_RUNNING {
            return None;
        }
        let tasks = self.tasks(kind);
        let mut durations: Vec<u64> = tasks
            .iter()
            .filter_map(|t| t.done.as_ref().map(|d| d.duration_ms))
            .collect();
        if durations.is_empty() {
            return None;
        }
        durations.sort_unstable();
        let median = durations[durations.len() / 2];
        let threshold = min_running_ms.max(median.saturating_mul(u64::from(slowdown_factor)));
        tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.done.is_none() && t.runs.len() == 1 && t.runs[0].worker != worker)
            .map(|(i, t)| (i, now_ms.saturating_sub(t.runs[0].started_ms)))
            .filter(|&(_, running)| running >= threshold)
            .max_by_key(|&(i, running)| (running, std::cmp::Reverse(i)))
            .map(|(i, _)| i)
    }

    fn start(&mut self, kind: TaskKind, index: u32, worker: u64, now_ms: u64) -> Assignment {
        let lease_ms = self.config.lease_ms;
        let task = &mut self.tasks_mut(kind)[index as usize];
        let attempt = task.next_attempt;
        assert!(task.done.is_none(), "a done task is never handed out");
        assert!(task.runs.len() < 2, "at most one backup copy per task");
        task.next_attempt += 1;
        let backup = !task.runs.is_empty();
        task.runs.push(Run {
            worker,
            attempt,
            started_ms: now_ms,
            deadline_ms: now_ms + lease_ms,
            bytes_done: 0,
        });
        self.stats.assignments += 1;
        if backup {
            self.stats.backups += 1;
        }
        self.dirty = true;
        match kind {
            TaskKind::Map => {
                let (file, offset, length) = self.maps[index as usize].split.expect("a map split");
                Assignment::Map(MapTaskSpec {
                    task: index,
                    attempt,
                    file: self.files[file].path.clone(),
                    offset,
                    length,
                })
            }
            TaskKind::Reduce => Assignment::Reduce(ReduceTaskSpec {
                task: index,
                attempt,
                inputs: self
                    .maps
                    .iter()
                    .enumerate()
                    .map(|(map, t)| {
                        let done = t.done.as_ref().expect("reduces start after every map");
                        MapLocation {
                            map: map as u32,
                            attempt: done.attempt,
                            addr: done.addr.clone(),
                        }
                    })
                    .collect(),
            }),
        }
    }

    /// A heartbeat: renews the lease of that run.
    pub fn heartbeat(&mut self, task: &TaskRef, bytes_done: u64, now_ms: u64) {
        let lease_ms = self.config.lease_ms;
        if let Some(run) = self.run_mut(task) {
            run.deadline_ms = now_ms + lease_ms;
            run.bytes_done = bytes_done;
        }
    }

    /// A completion. The first for a task is accepted, whichever attempt sent it.
    pub fn done(
        &mut self,
        task: &TaskRef,
        counters: Counters,
        fetch_addr: &str,
        now_ms: u64,
    ) -> Completed {
        if !self.known(task) {
            return Completed::Unknown;
        }
        let entry = &mut self.tasks_mut(task.kind)[task.task as usize];
        if entry.done.is_some() {
            // This copy's run ends; the accepted output stands.
            entry.runs.retain(|r| r.attempt != task.attempt);
            self.stats.duplicate_completions += 1;
            return Completed::Duplicate;
        }
        let started_ms = entry
            .runs
            .iter()
            .find(|r| r.attempt == task.attempt)
            .map_or(now_ms, |r| r.started_ms);
        entry.runs.clear();
        entry.done = Some(Completion {
            worker: task.worker,
            attempt: task.attempt,
            addr: fetch_addr.to_string(),
            duration_ms: now_ms.saturating_sub(started_ms),
            counters,
        });
        self.dirty = true;
        if self.all_tasks().all(|t| t.done.is_some()) && self.status == JobStatus::Running {
            self.status = JobStatus::Done;
        }
        Completed::Accepted
    }

    /// A failure report.
    pub fn failed(&mut self, task: &TaskRef, failure: &FailureKind, reason: &str) {
        if !self.known(task) {
            return;
        }
        let label = format!(
            "{} task {} attempt {} on worker {:#x}: {reason}",
            kind_name(task.kind),
            task.task,
            task.attempt,
            task.worker
        );
        self.stats.failures.push(label);
        if self.stats.failures.len() > MAX_FAILURES_KEPT {
            self.stats.failures.remove(0);
        }
        self.dirty = true;
        let max_failures = self.config.max_task_failures;
        let max_losses = self.config.max_worker_losses;
        let entry = &mut self.tasks_mut(task.kind)[task.task as usize];
        entry.runs.retain(|r| r.attempt != task.attempt);
        if entry.done.is_some() {
            return;
        }
        match failure {
            FailureKind::TaskError => {
                entry.failures += 1;
                entry.last_error = Some(reason.to_string());
                if entry.failures >= max_failures {
                    let error = JobError {
                        kind: task.kind,
                        task: task.task,
                        attempts: entry.next_attempt,
                        reason: reason.to_string(),
                    };
                    self.fail(error);
                }
            }
            FailureKind::MapOutputLost { map } => {
                // Not the reduce's fault, but bounded all the same: a map output that keeps
                // vanishing must not loop forever.
                entry.worker_losses += 1;
                let losses = entry.worker_losses;
                let attempts = entry.next_attempt;
                if losses >= max_losses {
                    self.fail(JobError {
                        kind: task.kind,
                        task: task.task,
                        attempts,
                        reason: format!("map outputs lost {losses} times; last: {reason}"),
                    });
                    return;
                }
                self.lose_map_output(*map);
            }
        }
    }

    /// Sends a done map back to idle: its output cannot be read any more.
    fn lose_map_output(&mut self, map: u32) {
        if let Some(task) = self.maps.get_mut(map as usize) {
            if task.done.take().is_some() {
                self.stats.lost_map_outputs += 1;
                self.dirty = true;
            }
        }
    }

    /// A worker core's connection closed: its running tasks are idle again. Without a shared
    /// work directory its finished map outputs went with it, so those maps run again while a
    /// reduce still needs them.
    pub fn worker_lost(&mut self, worker: u64) {
        let mut lost = Vec::new();
        for kind in [TaskKind::Map, TaskKind::Reduce] {
            for (index, task) in self.tasks_mut(kind).iter_mut().enumerate() {
                let before = task.runs.len();
                task.runs.retain(|r| r.worker != worker);
                if task.runs.len() < before {
                    task.worker_losses += 1;
                    lost.push((kind, index as u32));
                }
            }
        }
        self.stats.worker_losses += lost.len() as u64;
        self.check_losses(&lost, "its worker went away");
        if !self.job.shared_intermediate && self.reduces.iter().any(|t| t.done.is_none()) {
            let gone: Vec<u32> = (0..self.maps.len() as u32)
                .filter(|&m| {
                    self.maps[m as usize]
                        .done
                        .as_ref()
                        .is_some_and(|d| d.worker == worker)
                })
                .collect();
            for map in gone {
                self.lose_map_output(map);
            }
        }
    }

    /// Expires leases at `now_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        let mut lost = Vec::new();
        for kind in [TaskKind::Map, TaskKind::Reduce] {
            for (index, task) in self.tasks_mut(kind).iter_mut().enumerate() {
                let before = task.runs.len();
                task.runs.retain(|r| r.deadline_ms > now_ms);
                if task.runs.len() < before {
                    task.worker_losses += 1;
                    lost.push((kind, index as u32));
                }
            }
        }
        self.stats.lease_expiries += lost.len() as u64;
        self.check_losses(&lost, "its worker stopped reporting within the lease");
    }

    fn check_losses(&mut self, lost: &[(TaskKind, u32)], why: &str) {
        if !lost.is_empty() {
            self.dirty = true;
        }
        for &(kind, index) in lost {
            let task = &self.tasks(kind)[index as usize];
            if task.done.is_none() && task.worker_losses >= self.config.max_worker_losses {
                let error = JobError {
                    kind,
                    task: index,
                    attempts: task.next_attempt,
                    reason: format!("lost {} times: {why}", task.worker_losses),
                };
                self.fail(error);
            }
        }
    }

    fn fail(&mut self, error: JobError) {
        if self.status == JobStatus::Running {
            self.status = JobStatus::Failed(error);
            self.dirty = true;
        }
    }

    fn known(&self, task: &TaskRef) -> bool {
        task.job == self.job.id && (task.task as usize) < self.tasks(task.kind).len()
    }

    fn run_mut(&mut self, task: &TaskRef) -> Option<&mut Run> {
        if !self.known(task) {
            return None;
        }
        self.tasks_mut(task.kind)[task.task as usize]
            .runs
            .iter_mut()
            .find(|r| r.attempt == task.attempt && r.worker == task.worker)
    }

    fn tasks(&self, kind: TaskKind) -> &[Task] {
        match kind {
            TaskKind::Map => &self.maps,
            TaskKind::Reduce => &self.reduces,
        }
    }

    fn tasks_mut(&mut self, kind: TaskKind) -> &mut [Task] {
        match kind {
            TaskKind::Map => &mut self.maps,
            TaskKind::Reduce => &mut self.reduces,
        }
    }

    fn all_tasks(&self) -> impl Iterator<Item = &Task> {
        self.maps.iter().chain(self.reduces.iter())
    }

    /// The state a restarted coordinator needs, as bytes (JSON): the job, the splits, every
    /// task's completion, attempt counter and failure counts, the status, the statistics.
    /// Running copies are not kept: after a restart they are idle, and a copy that still
    /// finishes is accepted as a first completion.
    pub fn durable_state(&self) -> Vec<u8> {
        let state = DurableState {
            version: DURABLE_STATE_VERSION,
            config: self.config,
            job: JobSpecState::from(&self.job),
            files: self
                .files
                .iter()
                .map(|f| (f.path.clone(), f.bytes))
                .collect(),
            maps: self.maps.clone(),
            reduces: self.reduces.clone(),
            status: self.status.clone(),
            stats: self.stats.clone(),
        };
        serde_json::to_vec(&state).expect("the state serializes")
    }

    /// A planner from [`Planner::durable_state`]'s bytes. Attempt numbers jump by
    /// [`ATTEMPT_GAP_ON_RESTORE`].
    pub fn restore(bytes: &[u8]) -> Result<Planner, String> {
        let state: DurableState =
            serde_json::from_slice(bytes).map_err(|e| format!("job state: {e}"))?;
        if state.version != DURABLE_STATE_VERSION {
            return Err(format!(
                "job state version {} (this build reads {DURABLE_STATE_VERSION})",
                state.version
            ));
        }
        let job = state.job.into_spec();
        let consistent = state.maps.len() == job.map_count as usize
            && state.reduces.len() == job.reduce_count as usize
            && state
                .maps
                .iter()
                .all(|t| t.split.is_some_and(|(file, _, _)| file < state.files.len()));
        if !consistent {
            return Err("job state: tasks do not match the job".to_string());
        }
        let mut planner = Planner {
            config: state.config,
            job,
            files: state
                .files
                .into_iter()
                .map(|(path, bytes)| InputFile { path, bytes })
                .collect(),
            maps: state.maps,
            reduces: state.reduces,
            status: state.status,
            stats: state.stats,
            dirty: false,
        };
        for task in planner.maps.iter_mut().chain(planner.reduces.iter_mut()) {
            task.next_attempt += ATTEMPT_GAP_ON_RESTORE;
        }
        planner.stats.restores += 1;
        planner.dirty = true;
        Ok(planner)
    }
}

/// The durable state's format version.
const DURABLE_STATE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct DurableState {
    version: u32,
    config: PlannerConfig,
    job: JobSpecState,
    files: Vec<(String, u64)>,
    maps: Vec<Task>,
    reduces: Vec<Task>,
    status: JobStatus,
    stats: PlannerStats,
}

#[derive(Serialize, Deserialize)]
struct JobSpecState {
    id: u64,
    app: String,
    app_args: Vec<String>,
    map_count: u32,
    reduce_count: u32,
    work_dir: String,
    output_dir: String,
    shared_intermediate: bool,
}

impl JobSpecState {
    fn from(job: &JobSpec) -> JobSpecState {
        JobSpecState {
            id: job.id,
            app: job.app.clone(),
            app_args: job.app_args.clone(),
            map_count: job.map_count,
            reduce_count: job.reduce_count,
            work_dir: job.work_dir.clone(),
            output_dir: job.output_dir.clone(),
            shared_intermediate: job.shared_intermediate,
        }
    }

    fn into_spec(self) -> JobSpec {
        JobSpec {
            id: self.id,
            app: self.app,
            app_args: self.app_args,
            map_count: self.map_count,
            reduce_count: self.reduce_count,
            work_dir: self.work_dir,
            output_dir: self.output_dir,
            shared_intermediate: self.shared_intermediate,
        }
    }
}

mod counters_serde {
    //! `Counters` lives in the wire module, which does not depend on serde.
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::wire::mapreduce::Counters;

    pub fn serialize<S: Serializer>(c: &Counters, s: S) -> Result<S::Ok, S::Error> {
        [c.records_in, c.records_out, c.bytes_in, c.bytes_out].serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Counters, D::Error> {
        let [records_in, records_out, bytes_in, bytes_out] = <[u64; 4]>::deserialize(d)?;
        Ok(Counters {
            records_in,
            records_out,
            bytes_in,
            bytes_out,
        })
    }
}

impl Serialize for TaskKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind_name(*self))
    }
}

impl<'de> Deserialize<'de> for TaskKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TaskKind, D::Error> {
        match String::deserialize(d)?.as_str() {
            "map" => Ok(TaskKind::Map),
            "reduce" => Ok(TaskKind::Reduce),
            other => Err(serde::de::Error::custom(format!(
                "unknown task kind {other}"
            ))),
        }
    }
}

/// `map` or `reduce`.
pub fn kind_name(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Map => "map",
        TaskKind::Reduce => "reduce",
    }
}

/// Cuts files into splits of at most `split_bytes`: (file index, offset, length). An empty file
/// still gets one (empty) split, so every input shows up in the job.
pub fn splits(files: &[InputFile], split_bytes: u64) -> Vec<(usize, u64, u64)> {
    let mut out = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let mut offset = 0;
        loop {
            let length = split_bytes.min(file.bytes - offset);
            out.push((index, offset, length));
            offset += length;
            if offset >= file.bytes {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
