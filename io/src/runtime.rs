//! Starting the cores: [`run`] starts one executor thread per core, hands each a [`Core`] handle,
//! and returns every core's result once all have finished.
//!
//! Start-up is all or nothing. The locked-memory limit is checked (and raised) first; then every
//! thread creates its executor and reports; only when all have one are they told to go. If any
//! could not be created, none runs the caller's function and [`run`] reports the first failure. A core that panics
//! marks the mesh failed, so the other cores' receives end and their sends fail instead of
//! waiting forever, and [`run`] reports the panic.

use std::future::Future;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

use crate::error::{IoError, SendError, TrySendError};
use crate::limits::{
    EXECUTOR_IO_MEMORY_BYTES, MAX_CORES, MAX_IDLE_SPIN_US, MAX_MESH_QUEUE_CAPACITY,
    MESH_QUEUE_CAPACITY,
};
use crate::memlock::{ensure_memlock, GLOMMIO_MIN_MEMLOCK_BYTES};
use crate::mesh::{Mesh, MeshReceiver};
use crate::placement::CoreId;

/// Whether each core's thread is bound to one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Core `i` runs on the `i`-th CPU this process may use. Falls back to [`Pinning::Unpinned`]
    /// when more cores are asked for than there are such CPUs (a test on a small machine).
    Pinned,
    /// The kernel places the threads.
    Unpinned,
}

/// How to start the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// How many cores (executor threads) to run; 0 means one per CPU this process may use (its
    /// affinity mask, which respects `taskset` and cgroup cpusets). At most [`MAX_CORES`].
    pub cores: usize,
    /// Whether to bind each core to a CPU.
    pub pinning: Pinning,
    /// Names the threads: `{name}-{core}`.
    pub name: String,
    /// Slots in each mesh queue (one queue per ordered pair of cores); at most
    /// [`MAX_MESH_QUEUE_CAPACITY`].
    pub mesh_capacity: usize,
    /// How long an idle core keeps polling for work before it sleeps in the kernel; at most
    /// [`MAX_IDLE_SPIN_US`] microseconds. Zero (the default) sleeps at once: the least CPU, and
    /// right on a shared machine. Tens of microseconds cut the latency of a message from another
    /// core or thread (the wakeup of a sleeping core is most of it) at the cost of CPU; `cargo
    /// bench -p shardcore-io` shows both.
    pub idle_spin: Duration,
    /// How long a task queue may run before the executor's preemption timer asks it to yield
    /// (glommio's `preempt_timer`; nonzero). The default, 100 ms, is glommio's. Shorter makes
    /// the timer fire often: the runtime's tests use that to exercise a timer that fires
    /// between the executor's poll and its look at its task queues.
    pub preempt_timer: Duration,
}

/// glommio's own default preemption timer ([`RuntimeConfig::preempt_timer`]).
pub const DEFAULT_PREEMPT_TIMER: Duration = Duration::from_millis(100);

impl Default for RuntimeConfig {
    /// Every CPU, pinned, named `shardcore`, with [`MESH_QUEUE_CAPACITY`], no idle spin.
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            cores: 0,
            pinning: Pinning::Pinned,
            name: "shardcore".to_string(),
            mesh_capacity: MESH_QUEUE_CAPACITY,
            idle_spin: Duration::ZERO,
            preempt_timer: DEFAULT_PREEMPT_TIMER,
        }
    }
}

/// Runs `f` once on each of `cfg.cores` cores, each in its own executor thread, and returns the
/// results in core order once every core has finished.
///
/// `f` builds the core's main future from its [`Core`] handle; that future runs on its core
/// only, so it need not be `Send`. The core's executor stops when the main future finishes:
/// tasks it spawned and detached are dropped then. `M` is the type of the mesh's messages.
pub fn run<M, T, F, Fut>(cfg: RuntimeConfig, f: F) -> Result<Vec<T>, IoError>
where
    M: Send + 'static,
    T: Send + 'static,
    F: Fn(Core<M>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    let cpus = allowed_cpus().map_err(|error| IoError::Config {
        reason: format!("cannot read this process's CPU affinity: {error}"),
    })?;
    let cores = validate(&cfg, cpus.len())?;
    ensure_memlock(GLOMMIO_MIN_MEMLOCK_BYTES)?;
    let placements = placements(cfg.pinning, cores, &cpus);
    let mesh = Arc::new(Mesh::<M>::new(cores, cfg.mesh_capacity));
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(cores);
    let mut start_error = None;
    for (index, cpu) in placements.into_iter().enumerate() {
        let core = CoreId(index);
        let (go_tx, go_rx) = mpsc::channel();
        let (mesh, ready_tx, f) = (mesh.clone(), ready_tx.clone(), f.clone());
        let name = format!("{}-{index}", cfg.name);
        let tuning = Tuning {
            idle_spin: cfg.idle_spin,
            preempt_timer: cfg.preempt_timer,
        };
        let start = StartLine {
            ready: ready_tx,
            go: go_rx,
        };
        let spawned = thread::Builder::new()
            .name(name.clone())
            .spawn(move || core_thread(core, cpu, &name, tuning, mesh, start, f));
        match spawned {
            Ok(handle) => threads.push((handle, go_tx)),
            Err(error) => {
                start_error = Some(IoError::Start {
                    core,
                    reason: format!("cannot spawn its thread: {error}"),
                });
                break;
            }
        }
    }
    drop(ready_tx);
    // Every started thread reports whether its executor exists; only if all do does any run.
    for _ in 0..threads.len() {
        let (core, made) = ready_rx
            .recv()
            .expect("a core thread reports before it ends");
        if let Err(reason) = made {
            start_error.get_or_insert(IoError::Start { core, reason });
        }
    }
    for (_, go) in &threads {
        // A thread that is gone has nothing left to be told.
        let _ = go.send(start_error.is_none());
    }
    let outcomes = threads.into_iter().map(|(handle, _)| handle.join());
    let results = collect(outcomes);
    match start_error {
        Some(error) => Err(error),
        None => results,
    }
}

/// One core thread's side of the start: it reports whether its executor exists, then waits to
/// be told whether every core's does.
struct StartLine {
    ready: mpsc::Sender<(CoreId, Result<(), String>)>,
    go: mpsc::Receiver<bool>,
}

/// What one core thread ended with.
enum CoreOutcome<T> {
    Finished(T),
    /// Some core's executor could not be created (reported through the start line), so this one
    /// did not run.
    NotStarted,
}

fn core_thread<M, T, F, Fut>(
    id: CoreId,
    cpu: Option<usize>,
    name: &str,
    tuning: Tuning,
    mesh: Arc<Mesh<M>>,
    start: StartLine,
    f: F,
) -> CoreOutcome<T>
where
    M: Send + 'static,
    F: Fn(Core<M>) -> Fut,
    Fut: Future<Output = T> + 'static,
{
    // A panic while making the executor is reported like an error, so that the runtime, which
    // waits for every core's report, is not left waiting.
    let executor = std::panic::catch_unwind(|| make_executor(cpu, name, tuning))
        .unwrap_or_else(|payload| Err(panic_message(payload.as_ref())));
    let made = executor.as_ref().map(|_| ()).map_err(Clone::clone);
    // The runtime is waiting for this report; if it is gone, so is the run.
    let _ = start.ready.send((id, made));
    let executor = match executor {
        Ok(executor) if start.go.recv() == Ok(true) => executor,
        _ => return CoreOutcome::NotStarted,
    };
    // Marks the mesh failed if this thread unwinds, whether the panic came from the main
    // future or from a task it spawned.
    let guard = FailOnPanic(mesh.clone());
    let core = Core::new(id, cpu, mesh);
    let output = executor.run(f(core));
    drop(guard);
    CoreOutcome::Finished(output)
}

/// The executor settings a core thread takes from [`RuntimeConfig`].
#[derive(Clone, Copy)]
struct Tuning {
    idle_spin: Duration,
    preempt_timer: Duration,
}

fn make_executor(cpu: Option<usize>, name: &str, tuning: Tuning) -> Result<LocalExecutor, String> {
    let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
    let mut builder = LocalExecutorBuilder::new(placement).preempt_timer(tuning.preempt_timer);
    if !tuning.idle_spin.is_zero() {
        builder = builder.spin_before_park(tuning.idle_spin);
    }
    builder
        .name(name)
        .io_memory(EXECUTOR_IO_MEMORY_BYTES)
        .make()
        .map_err(|error| explain_start_error(&error.to_string()))
}

/// Adds what is known about why io_uring may be refused.
fn explain_start_error(reason: &str) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "absent".to_string());
    format!(
        "{reason} (kernel.io_uring_disabled = {disabled}; io_uring needs Linux >= 5.8, must not \
         be disabled by that sysctl, and must not be blocked by a seccomp profile, as docker's \
         default one does)"
    )
}

struct FailOnPanic<M>(Arc<Mesh<M>>);

impl<M> Drop for FailOnPanic<M> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.fail();
        }
    }
}

fn collect<T>(
    outcomes: impl Iterator<Item = thread::Result<CoreOutcome<T>>>,
) -> Result<Vec<T>, IoError> {
    let mut outputs = Vec::new();
    let mut first_panic = None;
    for (index, outcome) in outcomes.enumerate() {
        match outcome {
            Ok(CoreOutcome::Finished(output)) => outputs.push(output),
            Ok(CoreOutcome::NotStarted) => {}
            Err(payload) => {
                first_panic.get_or_insert(IoError::CorePanicked {
                    core: CoreId(index),
                    message: panic_message(payload.as_ref()),
                });
            }
        }
    }
    match first_panic {
        Some(error) => Err(error),
        None => Ok(outputs),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Checks the configuration and resolves `cores: 0`.
fn validate(cfg: &RuntimeConfig, cpu_count: usize) -> Result<usize, IoError> {
    let cores = if cfg.cores == 0 { cpu_count } else { cfg.cores };
    let reason = if !(1..=MAX_CORES).contains(&cores) {
        format!("{cores} cores requested; the runtime runs 1 to {MAX_CORES}")
    } else if !(1..=MAX_MESH_QUEUE_CAPACITY).contains(&cfg.mesh_capacity) {
        format!(
            "mesh capacity {} is outside 1 to {MAX_MESH_QUEUE_CAPACITY}",
            cfg.mesh_capacity
        )
    } else if cfg.preempt_timer.is_zero() {
        "a preemption timer of zero".to_string()
    } else if cfg.idle_spin > Duration::from_micros(MAX_IDLE_SPIN_US) {
        format!(
            "idle spin of {:?} is over the limit of {MAX_IDLE_SPIN_US} us",
            cfg.idle_spin
        )
    } else {
        return Ok(cores);
    };
    Err(IoError::Config { reason })
}

/// The CPU for each core, or `None` for every core when it runs unpinned.
fn placements(pinning: Pinning, cores: usize, cpus: &[usize]) -> Vec<Option<usize>> {
    match pinning {
        Pinning::Pinned if cores <= cpus.len() => cpus[..cores].iter().copied().map(Some).collect(),
        Pinning::Pinned | Pinning::Unpinned => vec![None; cores],
    }
}

/// The CPUs this process may run on, in increasing order.
fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into `set`.
    let status =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads the set for a CPU number below its capacity.
    let cpus: Vec<usize> = (0..max)
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
        .collect();
    assert!(
        !cpus.is_empty(),
        "a running thread may run on at least one CPU"
    );
    Ok(cpus)
}

/// One core's handle: who it is, how many cores there are, and its end of the mesh.
///
/// Cheap to clone (a reference count) and confined to its core: it is not `Send`, so other cores
/// are addressed by [`CoreId`], never by handle. Once all of a core's handles are dropped, the
/// other cores' receivers stop waiting for it (see [`MeshReceiver::recv`]).
pub struct Core<M> {
    inner: Rc<CoreInner<M>>,
}

struct CoreInner<M> {
    id: CoreId,
    cpu: Option<usize>,
    mesh: Arc<Mesh<M>>,
    receiver: std::cell::RefCell<Option<MeshReceiver<M>>>,
}

impl<M> Clone for Core<M> {
    fn clone(&self) -> Core<M> {
        Core {
            inner: self.inner.clone(),
        }
    }
}

impl<M> Drop for CoreInner<M> {
    fn drop(&mut self) {
        self.mesh.core_closed(self.id);
    }
}

impl<M> Core<M> {
    fn new(id: CoreId, cpu: Option<usize>, mesh: Arc<Mesh<M>>) -> Core<M> {
        let receiver = MeshReceiver::new(mesh.clone(), id);
        Core {
            inner: Rc::new(CoreInner {
                id,
                cpu,
                mesh,
                receiver: std::cell::RefCell::new(Some(receiver)),
            }),
        }
    }

    /// This core's number, from 0.
    pub fn id(&self) -> CoreId {
        self.inner.id
    }

    /// How many cores the runtime runs.
    pub fn count(&self) -> usize {
        self.inner.mesh.cores()
    }

    /// The CPU this core is pinned to, or `None` when it runs unpinned.
    pub fn cpu(&self) -> Option<usize> {
        self.inner.cpu
    }

    /// This core's end of the mesh; `Some` the first time only. Dropping it closes this core's
    /// inbox: sends to this core then fail.
    pub fn take_receiver(&self) -> Option<MeshReceiver<M>> {
        self.inner.receiver.borrow_mut().take()
    }

    /// Queues `message` for core `to` (which may be this core), waiting while that queue is full
    /// so that a slow receiver slows its senders instead of growing memory. Fails, handing the
    /// message back, when `to`'s receiver is gone or a core panicked.
    ///
    /// Sending to this core from the task that also receives can wait forever once the queue is
    /// full: use `try_send` there. Panics when `to` is not a core of this runtime.
    pub async fn send(&self, to: CoreId, message: M) -> Result<(), SendError<M>> {
        self.inner.mesh.send(self.inner.id, to, message).await
    }

    /// Queues `message` for core `to` if its queue has room now.
    pub fn try_send(&self, to: CoreId, message: M) -> Result<(), TrySendError<M>> {
        self.inner.mesh.try_send(self.inner.id, to, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinning takes the allowed CPUs in order and falls back to unpinned when there are too few.
    #[test]
    fn placements_follow_the_allowed_cpus() {
        assert_eq!(
            placements(Pinning::Pinned, 2, &[3, 5, 7]),
            vec![Some(3), Some(5)]
        );
        assert_eq!(placements(Pinning::Pinned, 4, &[3, 5, 7]), vec![None; 4]);
        assert_eq!(placements(Pinning::Unpinned, 2, &[3, 5]), vec![None; 2]);
    }

    /// Zero cores means every allowed CPU; out-of-bounds settings are refused with a reason.
    #[test]
    fn config_bounds() {
        let cfg = |cores, mesh_capacity| RuntimeConfig {
            cores,
            mesh_capacity,
            ..RuntimeConfig::default()
        };
        assert_eq!(validate(&cfg(0, 8), 6).unwrap(), 6);
        assert_eq!(validate(&cfg(3, 8), 6).unwrap(), 3);
        for (cores, capacity) in [(MAX_CORES + 1, 8), (2, 0), (2, MAX_MESH_QUEUE_CAPACITY + 1)] {
            let error = validate(&cfg(cores, capacity), 6).unwrap_err();
            assert!(matches!(error, IoError::Config { .. }), "{error}");
        }
    }

    /// The allowed CPUs include at least one.
    #[test]
    fn allowed_cpus_are_found() {
        assert!(!allowed_cpus().unwrap().is_empty());
    }
}
