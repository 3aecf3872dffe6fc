//! A worker process: one executor per core on the `shardcore_io` runtime, each running one task
//! at a time.
//!
//! Each core does three things:
//! - **talks to the coordinator** over its own connection: asks for a task, sends heartbeats
//!   while the task runs, reports it done or failed (the report asks for the next task), and
//!   reconnects with backoff when the coordinator goes away (a restarted coordinator gets the
//!   pending report again; it accepts the first completion of a task whichever attempt sends it);
//! - **serves its map outputs** to reducers over TCP (`FetchRequest` → `FetchReply` in bounded
//!   chunks), for jobs whose work directory is not shared;
//! - **holds a machine-wide CPU slot** (`slots`) before it asks for a task, so the worker
//!   processes of one machine never run more tasks at once than it has CPUs;
//! - **runs the task on a plain thread** of its own (pinned to its slot's CPU with `--pin`), handed over through a `shardcore_io`
//!   bridge. The task's work is blocking file I/O (reading splits, writing intermediate files),
//!   CPU-bound mapping and child processes (`exec`); `shardcore_io` offers no file API, and a
//!   task on the executor would block the heartbeats and the fetch server for its whole run.
//!   So the core's executor stays free for the control plane and the task thread does the data
//!   plane; the kernel schedules both (the executors sleep nearly all the time).

use std::net::{IpAddr, SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shardcore_io::bridge::{self, BridgeReceiver, BridgeSender};
use shardcore_io::framed::{FrameReader, FrameWriter};
use shardcore_io::net::{TcpListener, TcpStream};
use shardcore_io::{Core, Pinning, RuntimeConfig};
use shardcore_protocol::FrameKind;

use super::apps::{app_by_name, TaskContext};
use super::slots::{self, Slot, Slots};
use super::task::{self, intermediate_dir, intermediate_name, TaskError};
use crate::wire::mapreduce::{
    decode_mapreduce, Assignment, FailureKind, JobSpec, MapLocation, MrMessage, TaskAssignment,
    TaskKind, TaskRef,
};
use crate::wire::Encoder;

/// Bytes of a map output sent per `FetchReply`: well under the 16 MiB frame limit, large
/// enough that a fetch is a few round trips.
pub const FETCH_CHUNK_BYTES: usize = 4 << 20;

/// How long a core waits for the coordinator's answer before it drops the connection and
/// reconnects (a coordinator answers at once; silence means it is stuck or gone).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connecting to the coordinator gives up after this long per try.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Reconnect backoff: doubling from the first to the last.
pub const RECONNECT_BACKOFF_MS: (u64, u64) = (20, 1_000);

/// How long a fetch from another worker may take per chunk before the reducer gives up and
/// reports that map's output lost.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The coordinator's address.
    pub coordinator: SocketAddr,
    /// Executors (task slots); 0 means one per CPU this process may use.
    pub cores: usize,
    /// Where map outputs go when the job's work directory is not shared (a fresh temporary
    /// folder if unset; removed when the worker exits).
    pub local_dir: Option<PathBuf>,
    /// The worker exits after failing to reach the coordinator for this long.
    pub give_up_after: Duration,
    /// The address the fetch servers listen on (their port is picked per core).
    pub fetch_host: IpAddr,
    /// Machine-wide CPU slots (see `slots`): the folder of their lock files and their number
    /// (0: no limit, every core runs a task whenever it has one).
    pub slots_dir: PathBuf,
    /// How many slots the machine has (normally its CPU count).
    pub slots: usize,
    /// Whether a task thread runs pinned to its slot's CPU.
    pub pinning: TaskPinning,
}

/// Whether task threads are pinned to their slot's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskPinning {
    /// Each task runs on its slot's CPU: no migrations, warm private caches. Best on a
    /// machine given over to the job.
    Pinned,
    /// The kernel places task threads (the default): on a machine shared with other work, a
    /// pinned thread cannot move away from a CPU someone else keeps busy, and measured runs
    /// of the benchmark beside a parallel build were slower pinned.
    Unpinned,
}

/// How often a core without a slot looks for a free one.
pub const SLOT_POLL: Duration = Duration::from_millis(5);

/// What a worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Tasks reported done.
    pub tasks_done: u64,
    /// Tasks reported failed.
    pub tasks_failed: u64,
}

/// Runs a worker until the coordinator says the job is over (or cannot be reached for
/// `give_up_after`).
pub fn run(options: WorkerOptions) -> Result<WorkerSummary, String> {
    let nonce = process_nonce();
    let owned_dir = options.local_dir.is_none();
    let local_dir = options.local_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "shardcore-mr-worker-{}-{nonce:x}",
            std::process::id()
        ))
    });
    let options = Arc::new(WorkerOptions {
        local_dir: Some(local_dir.clone()),
        ..options
    });
    let config = RuntimeConfig {
        cores: options.cores,
        // Several worker processes share the machine's CPUs: pinning each to CPU 0.. would
        // stack them on the same CPUs.
        pinning: Pinning::Unpinned,
        name: "mr-worker".to_string(),
        ..RuntimeConfig::default()
    };
    let slots = match options.slots {
        0 => None,
        count => Some(Slots::new(&options.slots_dir, count)?),
    };
    let results = shardcore_io::run(config, move |core: Core<()>| {
        let options = options.clone();
        let slots = slots.clone();
        async move { core_main(core, options, slots, nonce).await }
    })
    .map_err(|e| format!("worker runtime: {e}"))?;
    if owned_dir {
        let _ = std::fs::remove_dir_all(&local_dir);
    }
    let mut summary = WorkerSummary::default();
    for result in results {
        let core = result?;
        summary.tasks_done += core.tasks_done;
        summary.tasks_failed += core.tasks_failed;
    }
    Ok(summary)
}

/// A process-unique id: the pid and the clock, mixed. Worker core ids are this shifted left by
/// 8 bits plus the core's index, so a restarted worker never reuses a dead one's id.
fn process_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    // SplitMix64's finalizer.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) >> 8
}

/// A task handed to the core's task thread.
struct Work {
    job: JobSpec,
    assignment: Assignment,
    worker: u64,
    fetch_addr: String,
    local_dir: PathBuf,
    /// The CPU of the slot the task runs in, if any.
    cpu: Option<usize>,
}

/// The coordinator connection of one core.
struct Connection {
    reader: FrameReader,
    writer: FrameWriter,
}

async fn core_main(
    core: Core<()>,
    options: Arc<WorkerOptions>,
    slots: Option<Slots>,
    nonce: u64,
) -> Result<WorkerSummary, String> {
    let worker = (nonce << 8) | core.id().0 as u64;
    let local_dir = options.local_dir.clone().expect("set by run");
    let listener = TcpListener::bind(SocketAddr::new(options.fetch_host, 0))
        .map_err(|e| format!("fetch server: {e}"))?;
    let fetch_addr = listener
        .local_addr()
        .map_err(|e| format!("fetch server: {e}"))?
        .to_string();
    let fetch_dir = local_dir.clone();
    shardcore_io::spawn(async move { fetch_server(listener, fetch_dir).await }).detach();

    let (work_tx, work_rx) = bridge::channel::<Work>(1);
    let (result_tx, result_rx) = bridge::channel::<MrMessage>(1);
    let progress = Arc::new(AtomicU64::new(0));
    let thread_progress = progress.clone();
    let thread = std::thread::Builder::new()
        .name(format!("mr-task-{}", core.id().0))
        .spawn(move || task_thread(work_rx, result_tx, thread_progress))
        .map_err(|e| format!("task thread: {e}"))?;

    let mut summary = WorkerSummary::default();
    let mut encoder = Encoder::new();
    let mut connection: Option<Connection> = None;
    let mut pending = MrMessage::RequestTask { worker };
    let mut last_contact = Instant::now();
    let mut backoff_ms = RECONNECT_BACKOFF_MS.0;
    // A core asks for work only while it holds a machine-wide slot; it keeps the slot from one
    // task to the next (its report asks for the next task) and gives it up when told to wait.
    let mut slot: Option<Slot> = None;
    let outcome = loop {
        if let (Some(slots), None, MrMessage::RequestTask { .. }) = (&slots, &slot, &pending) {
            slot = loop {
                if let Some(slot) = slots.try_acquire() {
                    break Some(slot);
                }
                shardcore_io::sleep(SLOT_POLL).await;
            };
        }
        let reply = match exchange(&options, &mut connection, &mut encoder, &pending).await {
            Ok(reply) => reply,
            Err(error) => {
                connection = None;
                if last_contact.elapsed() > options.give_up_after {
                    break Err(format!(
                        "coordinator {} unreachable for {:?}: {error}",
                        options.coordinator, options.give_up_after
                    ));
                }
                shardcore_io::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MS.1);
                continue;
            }
        };
        last_contact = Instant::now();
        backoff_ms = RECONNECT_BACKOFF_MS.0;
        let TaskAssignment {
            job,
            heartbeat_ms,
            assignment,
            ..
        } = reply;
        let task = match (&assignment, job) {
            (Assignment::Exit { .. }, _) => break Ok(()),
            (Assignment::Wait { retry_ms }, _) => {
                slot = None;
                shardcore_io::sleep(Duration::from_millis(u64::from(*retry_ms).max(1))).await;
                pending = MrMessage::RequestTask { worker };
                continue;
            }
            (_, Some(job)) => (job, assignment),
            (_, None) => break Err("the coordinator sent a task without its job".to_string()),
        };
        progress.store(0, Ordering::Relaxed);
        let task_ref = task_ref_of(worker, &task.0, &task.1);
        let work = Work {
            job: task.0,
            assignment: task.1,
            worker,
            fetch_addr: fetch_addr.clone(),
            local_dir: local_dir.clone(),
            cpu: match options.pinning {
                TaskPinning::Pinned => slot.as_ref().and_then(|s| s.cpu),
                TaskPinning::Unpinned => None,
            },
        };
        if work_tx.send(work).await.is_err() {
            break Err("the task thread ended".to_string());
        }
        let beat = Duration::from_millis(u64::from(heartbeat_ms).max(10));
        let result = loop {
            match shardcore_io::timeout(beat, result_rx.recv()).await {
                Ok(Some(result)) => break Some(result),
                Ok(None) => break None,
                Err(_) => {
                    let heartbeat = MrMessage::Heartbeat {
                        task: task_ref,
                        bytes_done: progress.load(Ordering::Relaxed),
                    };
                    send_only(&mut connection, &mut encoder, &heartbeat).await;
                }
            }
        };
        let Some(result) = result else {
            break Err("the task thread ended".to_string());
        };
        // The give-up clock starts again: a long task is not an absence of the coordinator.
        last_contact = Instant::now();
        match &result {
            MrMessage::TaskDone { .. } => summary.tasks_done += 1,
            _ => summary.tasks_failed += 1,
        }
        pending = result;
    };
    drop(work_tx);
    let _ = thread.join();
    outcome.map(|()| summary)
}

fn task_ref_of(worker: u64, job: &JobSpec, assignment: &Assignment) -> TaskRef {
    let (kind, task, attempt) = match assignment {
        Assignment::Map(map) => (TaskKind::Map, map.task, map.attempt),
        Assignment::Reduce(reduce) => (TaskKind::Reduce, reduce.task, reduce.attempt),
        _ => unreachable!("only tasks get a task ref"),
    };
    TaskRef {
        worker,
        job: job.id,
        kind,
        task,
        attempt,
    }
}

/// Sends `message` and waits for the coordinator's assignment, connecting first if needed.
async fn exchange(
    options: &WorkerOptions,
    connection: &mut Option<Connection>,
    encoder: &mut Encoder,
    message: &MrMessage,
) -> Result<TaskAssignment, String> {
    if connection.is_none() {
        let stream = TcpStream::connect_timeout(options.coordinator, CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let (reader, writer) = stream.into_framed();
        *connection = Some(Connection { reader, writer });
    }
    let conn = connection.as_mut().expect("connected above");
    let body = encoder
        .mapreduce_body(message)
        .map_err(|e| format!("encoding: {e}"))?;
    conn.writer
        .send(FrameKind::MapReduce, body)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let frame = shardcore_io::timeout(REPLY_TIMEOUT, conn.reader.next_frame())
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| format!("reading: {e}"))?
        .ok_or("the coordinator closed the connection")?;
    if frame.kind != FrameKind::MapReduce {
        return Err(format!("unexpected frame kind {:?}", frame.kind));
    }
    match decode_mapreduce(&frame.body).map_err(|e| format!("bad answer: {e}"))? {
        MrMessage::Assignment(assignment) => Ok(assignment),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Sends a message that gets no answer (a heartbeat); a failure drops the connection, which
/// the next exchange re-opens.
async fn send_only(
    connection: &mut Option<Connection>,
    encoder: &mut Encoder,
    message: &MrMessage,
) {
    let Some(conn) = connection.as_mut() else {
        return;
    };
    let Ok(body) = encoder.mapreduce_body(message) else {
        return;
    };
    if conn.writer.try_send(FrameKind::MapReduce, body).is_err() {
        *connection = None;
    }
}

/// The task thread: runs each task it is handed and sends back the report.
fn task_thread(
    work: BridgeReceiver<Work>,
    results: BridgeSender<MrMessage>,
    progress: Arc<AtomicU64>,
) {
    let cpus = slots::allowed_cpus();
    while let Some(work) = work.recv_blocking() {
        // With pinning, a task runs on its slot's CPU.
        match work.cpu {
            Some(cpu) => slots::pin_current_thread(cpu),
            None => slots::unpin_current_thread(&cpus),
        }
        let report =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_work(&work, &progress)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    report_of(
                        &work,
                        Err(TaskError::Failed(format!("the app panicked: {what}"))),
                    )
                });
        if results.send_blocking(report).is_err() {
            return;
        }
    }
}

fn run_work(work: &Work, progress: &AtomicU64) -> MrMessage {
    let job = &work.job;
    let app = match app_by_name(&job.app, &job.app_args) {
        Ok(app) => app,
        Err(reason) => return report_of(work, Err(TaskError::Failed(reason))),
    };
    let own_dir = if job.shared_intermediate {
        intermediate_dir(Path::new(&job.work_dir), job.id)
    } else {
        intermediate_dir(&work.local_dir, job.id)
    };
    let result = match &work.assignment {
        Assignment::Map(spec) => {
            let ctx = TaskContext {
                app_args: job.app_args.clone(),
                file: spec.file.clone(),
                kind: "map",
                task: spec.task,
                attempt: spec.attempt,
                worker: work.worker,
            };
            task::run_map(&*app, job, spec, &ctx, &own_dir, progress)
        }
        Assignment::Reduce(spec) => {
            let ctx = TaskContext {
                app_args: job.app_args.clone(),
                file: String::new(),
                kind: "reduce",
                task: spec.task,
                attempt: spec.attempt,
                worker: work.worker,
            };
            let partition = spec.task;
            task::run_reduce(&*app, job, spec, &ctx, progress, |location| {
                if job.shared_intermediate {
                    let name = intermediate_name(location.map, partition, location.attempt);
                    std::fs::read(own_dir.join(&name)).map_err(|e| format!("reading {name}: {e}"))
                } else {
                    fetch_remote(job.id, location, partition)
                }
            })
        }
        _ => unreachable!("only tasks reach the task thread"),
    };
    report_of(work, result)
}

fn report_of(
    work: &Work,
    result: Result<crate::wire::mapreduce::Counters, TaskError>,
) -> MrMessage {
    let task = task_ref_of(work.worker, &work.job, &work.assignment);
    match result {
        Ok(counters) => MrMessage::TaskDone {
            task,
            counters,
            fetch_addr: work.fetch_addr.clone(),
        },
        Err(TaskError::Failed(reason)) => MrMessage::TaskFailed {
            task,
            failure: FailureKind::TaskError,
            reason,
        },
        Err(TaskError::MapOutputLost { map, reason }) => MrMessage::TaskFailed {
            task,
            failure: FailureKind::MapOutputLost { map },
            reason,
        },
    }
}

/// Fetches one partition of one map's output from the worker core that wrote it (blocking: this
/// runs on the task thread).
fn fetch_remote(job: u64, location: &MapLocation, partition: u32) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let addr: SocketAddr = location
        .addr
        .parse()
        .map_err(|_| format!("bad fetch address {:?}", location.addr))?;
    let fail = |e: std::io::Error| format!("fetching map {} from {addr}: {e}", location.map);
    let mut stream = StdTcpStream::connect_timeout(&addr, FETCH_TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(FETCH_TIMEOUT)).map_err(fail)?;
    stream.set_nodelay(true).map_err(fail)?;
    let mut encoder = Encoder::new();
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut scratch = vec![0u8; 64 << 10];
    loop {
        let request = MrMessage::FetchRequest {
            job,
            map: location.map,
            attempt: location.attempt,
            partition,
            offset: out.len() as u64,
        };
        let body = encoder
            .mapreduce_body(&request)
            .map_err(|e| format!("encoding: {e}"))?;
        let mut frame = BytesMut::new();
        shardcore_protocol::encode(FrameKind::MapReduce, body, &mut frame)
            .map_err(|e| format!("framing: {e}"))?;
        stream.write_all(&frame).map_err(fail)?;
        let frame = loop {
            match shardcore_protocol::decode(&mut buf) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(e) => return Err(format!("fetching from {addr}: malformed frame: {e}")),
            }
            let n = stream.read(&mut scratch).map_err(fail)?;
            if n == 0 {
                return Err(format!("fetching from {addr}: the connection closed"));
            }
            buf.extend_from_slice(&scratch[..n]);
        };
        match decode_mapreduce(&frame.body) {
            Ok(MrMessage::FetchReply {
                total_bytes,
                data,
                error: None,
            }) => {
                out.extend_from_slice(&data);
                if out.len() as u64 >= total_bytes {
                    return Ok(out);
                }
                if data.is_empty() {
                    return Err(format!("fetching from {addr}: no progress"));
                }
            }
            Ok(MrMessage::FetchReply {
                error: Some(error), ..
            }) => return Err(format!("fetching from {addr}: {error}")),
            Ok(other) => return Err(format!("fetching from {addr}: unexpected {other:?}")),
            Err(e) => return Err(format!("fetching from {addr}: {e}")),
        }
    }
}

/// Serves this core's map outputs.
async fn fetch_server(listener: TcpListener, dir: PathBuf) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let dir = dir.clone();
                shardcore_io::spawn(async move { serve_fetches(stream, dir).await }).detach();
            }
            Err(_) => shardcore_io::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_fetches(stream: TcpStream, dir: PathBuf) {
    let (mut reader, writer) = stream.into_framed();
    let mut encoder = Encoder::new();
    while let Ok(Some(frame)) = reader.next_frame().await {
        let Ok(MrMessage::FetchRequest {
            job,
            map,
            attempt,
            partition,
            offset,
        }) = decode_mapreduce(&frame.body)
        else {
            return;
        };
        let path = intermediate_dir(&dir, job).join(intermediate_name(map, partition, attempt));
        // A blocking read of at most one chunk, usually from the page cache: it holds this
        // core for about a millisecond.
        let reply = match read_chunk(&path, offset) {
            Ok((total_bytes, data)) => MrMessage::FetchReply {
                total_bytes,
                data: Bytes::from(data),
                error: None,
            },
            Err(e) => MrMessage::FetchReply {
                total_bytes: 0,
                data: Bytes::new(),
                error: Some(format!("{}: {e}", path.display())),
            },
        };
        let Ok(body) = encoder.mapreduce_body(&reply) else {
            return;
        };
        if writer.send(FrameKind::MapReduce, body).await.is_err() {
            return;
        }
    }
}

fn read_chunk(path: &Path, offset: u64) -> std::io::Result<(u64, Vec<u8>)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let total = file.metadata()?.len();
    file.seek(SeekFrom::Start(offset.min(total)))?;
    let want = (total.saturating_sub(offset)).min(FETCH_CHUNK_BYTES as u64) as usize;
    let mut data = vec![0u8; want];
    file.read_exact(&mut data)?;
    Ok((total, data))
}
