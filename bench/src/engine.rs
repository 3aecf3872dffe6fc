//! The load itself: one executor per generator core (`shardcore_io::run`), each with its own
//! clients (connections), workers, recorder and history part, sharing nothing but a few
//! progress counters that a monitor thread reads for the progress line and the CPU window.
//!
//! A *worker* is one outstanding request: in the closed loop it sends, waits for the answer and
//! sends the next; in the open loop it takes the next arrival time from its core's
//! [`Schedule`], waits for it if it is still ahead, sends, and charges the operation from that
//! intended time. Workers of a core share its clients, whose connections pipeline their
//! requests.
//!
//! Phases, from one shared epoch: `load_start` (warm-up begins), `measure_start`, `end`. Only
//! operations sent in the measured phase and answered by `end` count; every operation, warm-up
//! included, goes to the history.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcore::client::{Client, ClientConfig, ClientError};
use shardcore::history::{HistoryOp, HistoryWriter, OpKind};
use shardcore::kv::Consistency;
use shardcore::rng::Rng;
use shardcore_io::runtime::Pinning;
use shardcore_io::RuntimeConfig;

use crate::cli::{LoopMode, OpMix};
use crate::keys::{key_name, push_decimal, KeyChooser};
use crate::recorder::{BenchOp, Outcome, Recorder};
use crate::schedule::{Arrival, Schedule};

/// How the load is split over generator cores.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Workers (outstanding requests) on each core; every core listed has at least one.
    pub workers: Vec<u64>,
    /// Clients (one connection per node each) on each core.
    pub connections: Vec<u64>,
    /// Measured operations each core runs at most (`None`: until the end).
    pub quota: Vec<Option<u64>>,
    /// The open loop's rate per core.
    pub rate_per_core: Option<f64>,
}

/// `total` split over `parts` as evenly as possible, the larger shares first.
pub fn split(total: u64, parts: usize) -> Vec<u64> {
    let parts_u64 = parts as u64;
    (0..parts_u64)
        .map(|i| total / parts_u64 + u64::from(i < total % parts_u64))
        .collect()
}

impl Plan {
    /// The plan for `concurrency` workers over at most `cores` cores, with `connections`
    /// clients (0: one per core), `ops` measured operations and `rate` arrivals a second.
    pub fn new(
        cores: usize,
        concurrency: u64,
        connections: u64,
        ops: Option<u64>,
        rate: Option<u64>,
    ) -> Plan {
        let mut used = cores.max(1).min(concurrency as usize);
        if connections > 0 {
            used = used.min(connections as usize);
        }
        let connections = if connections == 0 {
            used as u64
        } else {
            connections
        };
        Plan {
            workers: split(concurrency, used),
            connections: split(connections, used),
            quota: match ops {
                Some(ops) => split(ops, used).into_iter().map(Some).collect(),
                None => vec![None; used],
            },
            rate_per_core: rate.map(|r| r as f64 / used as f64),
        }
    }

    /// Generator cores used.
    pub fn cores(&self) -> usize {
        self.workers.len()
    }
}

/// Where the cluster is.
#[derive(Clone, Debug)]
pub struct Target {
    /// Client addresses, node 1 first.
    pub addrs: Vec<SocketAddr>,
    /// The cluster's name.
    pub cluster_id: String,
    /// Its group count.
    pub groups: u64,
    /// One attempt's deadline.
    pub attempt_timeout: Duration,
    /// One operation's deadline.
    pub op_timeout: Duration,
    /// Route by the shard controller's configuration (a sharded cluster).
    pub sharded: bool,
}

impl Target {
    /// A client of this cluster.
    pub fn client(&self) -> Client {
        let nodes = self
            .addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| (i as u64 + 1, *addr))
            .collect();
        let mut config = ClientConfig::new(nodes);
        config.cluster_id.clone_from(&self.cluster_id);
        config.groups = self.groups;
        config.attempt_timeout = self.attempt_timeout;
        config.op_timeout = self.op_timeout;
        config.sharded = self.sharded;
        Client::new(config).expect("the target has nodes and groups")
    }
}

/// Which keys a load touches, in what order.
#[derive(Clone, Debug)]
pub enum KeyOrder {
    /// Drawn by the chooser.
    Random(KeyChooser),
    /// Every key once, in order, spread over the cores (the prefill).
    EachOnce {
        /// Keys in the space.
        keys: u64,
    },
}

/// One load: what to send, how fast, for how long.
#[derive(Clone, Debug)]
pub struct Load {
    /// The cluster.
    pub target: Target,
    /// The split over cores.
    pub plan: Plan,
    /// Operation shares.
    pub mix: OpMix,
    /// Key order.
    pub keys: KeyOrder,
    /// Key naming.
    pub key_prefix: String,
    /// With a shard filter: the number in the name of key `i` (`keys::filtered_key_numbers`);
    /// otherwise key `i` is named by `i`.
    pub key_numbers: Option<Arc<Vec<u64>>>,
    /// Bytes per key.
    pub key_bytes: usize,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Gets' consistency.
    pub consistency: Consistency,
    /// Closed or open.
    pub mode: LoopMode,
    /// Open-loop arrivals.
    pub arrival: Arrival,
    /// Seeds every stream of the load.
    pub seed: u64,
    /// Offsets the history's client ids (so two loads of one history never share an id).
    pub first_client_id: u64,
    /// Where each core writes its part of the history (`None`: no history): this path with
    /// `.core<N>.part` appended.
    pub history_parts: Option<PathBuf>,
    /// Timeline interval.
    pub interval: Duration,
}

/// The load's phases; every instant on one clock.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    /// Zero of the history's times.
    pub epoch: Instant,
    /// Load (warm-up) starts.
    pub load_start: Instant,
    /// Measuring starts.
    pub measure_start: Instant,
    /// Nothing is sent after this; answers after it do not count.
    pub end: Instant,
}

/// Counters a core bumps and the monitor thread reads; on their own cache lines so the cores
/// do not share one.
#[derive(Default)]
#[repr(align(64))]
pub struct Progress {
    /// Operations answered (every phase).
    pub done: AtomicU64,
    /// Operations failed (every phase).
    pub failed: AtomicU64,
    /// 1 once this core has finished its measured phase.
    pub finished: AtomicU64,
}

/// What one core hands back.
pub struct CoreResult {
    /// Its measurements.
    pub recorder: Recorder,
    /// Its clients' counters, summed.
    pub stats: shardcore::client::ClientStats,
    /// Its history part, if any, and the operations in it.
    pub history: Option<(PathBuf, u64)>,
    /// An error that stopped it (a history file it could not write).
    pub error: Option<String>,
}

/// Runs `load` over `phases` on its cores and returns each core's result (core order).
pub fn run(
    load: Arc<Load>,
    phases: Phases,
    progress: Arc<Vec<Progress>>,
) -> Result<Vec<CoreResult>, String> {
    let config = RuntimeConfig {
        cores: load.plan.cores(),
        // The generator shares the machine with the servers it measures: pinned threads would
        // fight them for fixed CPUs.
        pinning: Pinning::Unpinned,
        name: "bench".to_string(),
        ..RuntimeConfig::default()
    };
    shardcore_io::run(config, move |core: shardcore_io::Core<()>| {
        let load = load.clone();
        let progress = progress.clone();
        async move { core_main(core.id().0, load, phases, progress).await }
    })
    .map_err(|e| format!("cannot start the generator's runtime: {e}"))
}

/// One core's state, shared by its workers.
struct CoreState {
    core: usize,
    load: Arc<Load>,
    phases: Phases,
    progress: Arc<Vec<Progress>>,
    clients: Vec<Client>,
    recorder: RefCell<Recorder>,
    schedule: RefCell<Option<Schedule>>,
    quota: Cell<Option<u64>>,
    next_key: Cell<u64>,
    /// The value this core last saw per key, for compare-and-swap's `expected`.
    cas_seen: RefCell<HashMap<u64, Bytes>>,
    history: RefCell<Option<HistoryWriter<BufWriter<File>>>>,
    history_error: RefCell<Option<String>>,
}

async fn core_main(
    core: usize,
    load: Arc<Load>,
    phases: Phases,
    progress: Arc<Vec<Progress>>,
) -> CoreResult {
    let (history, history_path) = match &load.history_parts {
        None => (None, None),
        Some(base) => {
            let mut path = base.clone().into_os_string();
            path.push(format!(".core{core}.part"));
            let path = PathBuf::from(path);
            match File::create(&path) {
                Ok(file) => (Some(HistoryWriter::new(BufWriter::new(file))), Some(path)),
                Err(e) => {
                    return CoreResult {
                        recorder: Recorder::new(load.interval.as_nanos() as u64),
                        stats: Default::default(),
                        history: None,
                        error: Some(format!("cannot create {}: {e}", path.display())),
                    }
                }
            }
        }
    };
    let schedule = load.plan.rate_per_core.map(|rate| {
        let cores = load.plan.cores() as f64;
        // Core c's arrivals are shifted by c / (total rate), so uniform streams interleave.
        let offset_ns = (core as f64 * 1e9 / (rate * cores)) as u64;
        let rng = Rng::stream(load.seed, &format!("arrivals core {core}"));
        Schedule::new(load.arrival, rate, offset_ns, rng)
    });
    let state = Rc::new(CoreState {
        core,
        clients: (0..load.plan.connections[core])
            .map(|_| load.target.client())
            .collect(),
        recorder: RefCell::new(Recorder::new(load.interval.as_nanos() as u64)),
        schedule: RefCell::new(schedule),
        quota: Cell::new(load.plan.quota[core]),
        next_key: Cell::new(core as u64),
        cas_seen: RefCell::new(HashMap::new()),
        history: RefCell::new(history),
        history_error: RefCell::new(None),
        load: load.clone(),
        phases,
        progress,
    });
    let first_worker: u64 = load.plan.workers[..core].iter().sum();
    let workers: Vec<_> = (0..load.plan.workers[core])
        .map(|w| shardcore_io::spawn(worker(state.clone(), first_worker + w, w as usize)))
        .collect();
    for worker in workers {
        worker.await;
    }
    state.progress[core].finished.store(1, Ordering::Relaxed);
    let mut stats = shardcore::client::ClientStats::default();
    for client in &state.clients {
        let s = client.stats();
        stats.attempts += s.attempts;
        stats.retries += s.retries;
        stats.sessions_opened += s.sessions_opened;
        stats.connects += s.connects;
        stats.wrong_shard += s.wrong_shard;
        stats.router_refreshes += s.router_refreshes;
    }
    let mut error = state.history_error.borrow_mut().take();
    let history = match (state.history.borrow_mut().take(), history_path) {
        (Some(writer), Some(path)) => {
            let ops = writer.ops();
            if let Err(e) = writer.finish() {
                error.get_or_insert(format!("writing {}: {e}", path.display()));
            }
            Some((path, ops))
        }
        _ => None,
    };
    CoreResult {
        recorder: state.recorder.replace(Recorder::new(1)),
        stats,
        history,
        error,
    }
}

/// The operation a draw in [0, PPM) picks.
pub fn pick_op(mix: &OpMix, draw: u32) -> BenchOp {
    let mut bound = mix.get_ppm;
    if draw < bound {
        return BenchOp::Get;
    }
    bound += mix.put_ppm;
    if draw < bound {
        return BenchOp::Put;
    }
    bound += mix.append_ppm;
    if draw < bound {
        return BenchOp::Append;
    }
    BenchOp::Cas
}

/// A value unique to (client, sequence), padded with `x` to `bytes` (cut when shorter), so a
/// history names which write a read saw.
pub fn value_for(client: u64, seq: u64, bytes: usize) -> Bytes {
    let mut value = Vec::with_capacity(bytes.max(43));
    value.push(b'c');
    push_decimal(&mut value, client, 0);
    value.push(b'.');
    push_decimal(&mut value, seq, 0);
    value.push(b';');
    value.resize(bytes, b'x');
    Bytes::from(value)
}

async fn worker(state: Rc<CoreState>, worker_index: u64, local_index: usize) {
    let load = state.load.clone();
    let phases = state.phases;
    let client_id = load.first_client_id + worker_index;
    let mut rng = Rng::stream(load.seed, &format!("worker {worker_index}"));
    let client = &state.clients[local_index % state.clients.len()];
    let mut seq = 0u64;
    // The clock is read twice an operation in the closed loop (when it is sent, when it is
    // answered; the answer's time is the next one's send time), three times in the open loop.
    // Why it matters: at 64 clients on one core the clock was a tenth of the generator's CPU.
    let mut now = Instant::now();
    loop {
        let intended = match state.schedule.borrow_mut().as_mut() {
            Some(schedule) => phases.load_start + Duration::from_nanos(schedule.next_ns()),
            None => now.max(phases.load_start),
        };
        // Nothing is sent after the end: an open loop behind its schedule stops there too,
        // instead of draining its backlog.
        if intended >= phases.end || now >= phases.end {
            break;
        }
        if intended > now {
            shardcore_io::sleep_until(intended).await;
            now = Instant::now();
        }
        let measured = intended >= phases.measure_start;
        if measured {
            match state.quota.get() {
                Some(0) => break,
                Some(n) => state.quota.set(Some(n - 1)),
                None => {}
            }
        }
        let (op, key_index) = match &load.keys {
            KeyOrder::Random(chooser) => {
                let draw = rng.range(0, u64::from(crate::cli::PPM)) as u32;
                (pick_op(&load.mix, draw), chooser.next(&mut rng))
            }
            KeyOrder::EachOnce { keys } => {
                let index = state.next_key.get();
                if index >= *keys {
                    break;
                }
                state.next_key.set(index + state.load.plan.cores() as u64);
                (BenchOp::Put, index)
            }
        };
        seq += 1;
        let sent = now;
        if measured {
            let lag = sent.saturating_duration_since(intended).as_nanos() as u64;
            let mut recorder = state.recorder.borrow_mut();
            recorder.max_send_lag_ns = recorder.max_send_lag_ns.max(lag);
        }
        let (result, line) = execute(&state, client, op, key_index, client_id, seq, sent).await;
        let done = Instant::now();
        now = done;
        let (outcome, history) = judge(result, line, ns_since(phases.epoch, done));
        let progress = &state.progress[state.core];
        progress.done.fetch_add(1, Ordering::Relaxed);
        if outcome != Outcome::Done {
            progress.failed.fetch_add(1, Ordering::Relaxed);
        }
        if measured && done <= phases.end {
            let latency = done.duration_since(intended).as_nanos() as u64;
            let since = done.duration_since(phases.measure_start).as_nanos() as u64;
            state
                .recorder
                .borrow_mut()
                .record(op, &outcome, latency, since);
        }
        if let Some(line) = history {
            write_history(&state, &line);
        }
    }
}

fn write_history(state: &CoreState, line: &HistoryOp) {
    let mut history = state.history.borrow_mut();
    if let Some(writer) = history.as_mut() {
        if let Err(e) = writer.record(line) {
            state
                .history_error
                .borrow_mut()
                .get_or_insert(format!("history: {e}"));
            *history = None;
        }
    }
}

/// Nanoseconds from `epoch` to `at`.
fn ns_since(epoch: Instant, at: Instant) -> u64 {
    at.duration_since(epoch).as_nanos() as u64
}

/// Sends one operation; returns its result and its history line, whose return time
/// [`judge`] fills in.
async fn execute(
    state: &CoreState,
    client: &Client,
    op: BenchOp,
    key_index: u64,
    client_id: u64,
    seq: u64,
    sent: Instant,
) -> (Result<(), ClientError>, HistoryOp) {
    let load = &state.load;
    let number = match &load.key_numbers {
        Some(numbers) => numbers[key_index as usize],
        None => key_index,
    };
    let key = Bytes::from(key_name(&load.key_prefix, number, load.key_bytes));
    let value = value_for(client_id, seq, load.value_bytes);
    let mut line = HistoryOp {
        client: client_id,
        op: OpKind::Get,
        key: key.clone(),
        value: None,
        expected: None,
        output: None,
        ok: Some(true),
        call_ns: ns_since(state.phases.epoch, sent),
        return_ns: 0,
    };
    let result: Result<(), ClientError> = match op {
        BenchOp::Get => client.get_with(key, load.consistency).await.map(|found| {
            line.output = found;
        }),
        BenchOp::Put => {
            line.op = OpKind::Put;
            line.value = Some(value.clone());
            client.put(key, value).await
        }
        BenchOp::Append => {
            line.op = OpKind::Append;
            line.value = Some(value.clone());
            client.append(key, value).await
        }
        BenchOp::Cas => {
            let expected = state.cas_seen.borrow().get(&key_index).cloned();
            line.op = OpKind::Cas;
            line.value = Some(value.clone());
            line.expected.clone_from(&expected);
            let result = client.compare_and_swap(key, expected, value.clone()).await;
            result.map(|(swapped, found)| {
                let mut seen = state.cas_seen.borrow_mut();
                if swapped {
                    seen.insert(key_index, value);
                } else {
                    line.ok = Some(false);
                    line.output.clone_from(&found);
                    state.recorder.borrow_mut().cas_mismatches += 1;
                    match found {
                        Some(found) => seen.insert(key_index, found),
                        None => seen.remove(&key_index),
                    };
                }
            })
        }
    };
    (result, line)
}

/// How an operation answered at `returned` (ns since the epoch) ended, and its history line
/// (`None` for an operation refused without effect).
fn judge(
    result: Result<(), ClientError>,
    mut line: HistoryOp,
    returned: u64,
) -> (Outcome, Option<HistoryOp>) {
    line.return_ns = returned;
    match result {
        Ok(()) => (Outcome::Done, Some(line)),
        Err(ClientError::Timeout) => (Outcome::Timeout, Some(line.timed_out(returned))),
        // The session expired mid-retry: the write may or may not have happened.
        Err(error @ ClientError::Unknown) => (
            Outcome::Error(error.to_string()),
            Some(line.timed_out(returned)),
        ),
        Err(error) => (Outcome::Error(error.to_string()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Workload, PPM};

    /// Work is split evenly, larger shares first, never over more cores than workers or
    /// connections.
    #[test]
    fn plans_split_evenly() {
        assert_eq!(split(10, 3), [4, 3, 3]);
        assert_eq!(split(1, 1), [1]);
        let plan = Plan::new(2, 1, 0, None, None);
        assert_eq!(
            (plan.workers.clone(), plan.connections.clone()),
            (vec![1], vec![1])
        );
        let plan = Plan::new(2, 64, 0, Some(1001), Some(1000));
        assert_eq!(plan.workers, [32, 32]);
        assert_eq!(plan.connections, [1, 1]);
        assert_eq!(plan.quota, [Some(501), Some(500)]);
        assert_eq!(plan.rate_per_core, Some(500.0));
        let plan = Plan::new(4, 64, 2, None, None);
        assert_eq!((plan.cores(), plan.connections.clone()), (2, vec![1, 1]));
        let plan = Plan::new(2, 256, 5, None, None);
        assert_eq!(plan.connections, [3, 2]);
    }

    /// Draws pick operations by the mix's shares, at the exact boundaries.
    #[test]
    fn picks_by_share() {
        let mix = Workload::Mixed.mix(None);
        assert_eq!(pick_op(&mix, 0), BenchOp::Get);
        assert_eq!(pick_op(&mix, 449_999), BenchOp::Get);
        assert_eq!(pick_op(&mix, 450_000), BenchOp::Put);
        assert_eq!(pick_op(&mix, 500_000), BenchOp::Append);
        assert_eq!(pick_op(&mix, PPM - 1), BenchOp::Append);
        let cas = Workload::Cas.mix(Some(0.5));
        assert_eq!(pick_op(&cas, 500_000), BenchOp::Cas);
        let put = Workload::Put.mix(None);
        assert!((0..PPM)
            .step_by(997)
            .all(|d| pick_op(&put, d) == BenchOp::Put));
    }

    /// Values are unique per client and sequence and exactly the asked size.
    #[test]
    fn values_are_unique_and_sized() {
        assert_eq!(&value_for(3, 7, 12)[..], b"c3.7;xxxxxxx");
        assert_eq!(value_for(3, 7, 2).len(), 2);
        assert_ne!(value_for(3, 7, 128), value_for(3, 8, 128));
        assert_ne!(value_for(3, 17, 128), value_for(31, 7, 128));
    }
}
