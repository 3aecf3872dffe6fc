//! A checking workload: concurrent clients run random operations on a small key space against
//! a real cluster, record every operation as a history line, and at the end read every key back
//! to count acknowledged writes that are missing.
//!
//! Appends carry a unique token (`c<client>.<n>;`), so the final value of a key must contain
//! every acknowledged append made to it since the last acknowledged put or delete of that key
//! that did not race with it; the simple, always-valid count used here is over keys that are
//! only ever appended to (half the key space), where every acknowledged append must appear.
//! The history goes to the linearizability checker for everything else.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Client, ClientConfig, ClientError};
use crate::history::{HistoryOp, OpKind};
use crate::rng::Rng;

/// What to run.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Client addresses in node-id order.
    pub endpoints: Vec<SocketAddr>,
    /// The cluster's name.
    pub cluster_id: String,
    /// The cluster's group count.
    pub groups: u64,
    /// Concurrent clients (each one operation at a time).
    pub clients: usize,
    /// Keys in the key space (half append-only, half mixed).
    pub keys: usize,
    /// How long to run (the stop flag can end it sooner).
    pub duration: Duration,
    /// Seeds the operation mix.
    pub seed: u64,
    /// One operation's deadline.
    pub op_timeout: Duration,
    /// Prepended to every key, so runs against the same cluster use fresh keys (the checker
    /// assumes every key starts absent).
    pub key_prefix: String,
    /// The cluster runs the sharded KV: route by the shard controller's configuration.
    pub sharded: bool,
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct WorkloadReport {
    /// Every operation that may have had an effect, as history lines.
    pub history: Vec<HistoryOp>,
    /// Writes the cluster acknowledged.
    pub acknowledged_writes: u64,
    /// Acknowledged appends missing from the final values of append-only keys.
    pub lost_writes: u64,
    /// Which (key: token) were lost, at most 20.
    pub lost_examples: Vec<String>,
    /// Operations that timed out (outcome unknown for writes).
    pub timeouts: u64,
    /// Operations refused.
    pub refused: u64,
    /// Operations completed (acknowledged or answered).
    pub completed: u64,
    /// The final read of some key failed, so the lost-write count is incomplete.
    pub final_read_failed: Option<String>,
    /// The client's counters at the end (retries, sessions, and on the sharded path the
    /// `WrongShard` answers and configuration fetches a migration caused).
    pub client_stats: super::ClientStats,
}

/// Runs the workload on a one-core runtime in the calling thread; `stop` ends it early.
pub fn run(config: WorkloadConfig, stop: Arc<AtomicBool>) -> Result<WorkloadReport, String> {
    run_observed(config, stop, Arc::new(AtomicU64::new(0)))
}

/// [`run`], counting completed operations in `completed` as they complete, so that another
/// thread can pace faults by the cluster's progress rather than by guesses of time.
pub fn run_observed(
    config: WorkloadConfig,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
) -> Result<WorkloadReport, String> {
    let runtime = shardcore_io::RuntimeConfig {
        cores: 1,
        pinning: shardcore_io::runtime::Pinning::Unpinned,
        name: "shardcore-workload".to_string(),
        ..shardcore_io::RuntimeConfig::default()
    };
    let mut results = shardcore_io::run(runtime, move |_core: shardcore_io::Core<()>| {
        let config = config.clone();
        let stop = stop.clone();
        let completed = completed.clone();
        async move { drive(config, stop, completed).await }
    })
    .map_err(|e| format!("cannot start the workload runtime: {e}"))?;
    results.pop().ok_or_else(|| "no result".to_string())
}

fn key_name(prefix: &str, i: usize) -> String {
    if i % 2 == 0 {
        format!("{prefix}append-only-{i}")
    } else {
        format!("{prefix}mixed-{i}")
    }
}

async fn drive(
    config: WorkloadConfig,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
) -> WorkloadReport {
    let mut client_config = ClientConfig::new(
        config
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, *a))
            .collect(),
    );
    client_config.cluster_id = config.cluster_id.clone();
    client_config.groups = config.groups;
    client_config.op_timeout = config.op_timeout;
    client_config.sharded = config.sharded;
    client_config.attempt_timeout = Duration::from_millis(500).min(config.op_timeout);
    let client = match Client::new(client_config) {
        Ok(c) => Rc::new(c),
        Err(e) => {
            return WorkloadReport {
                final_read_failed: Some(e.to_string()),
                ..WorkloadReport::default()
            }
        }
    };
    let start = Instant::now();
    let deadline = start + config.duration;
    let report = Rc::new(RefCell::new(WorkloadReport::default()));
    // Per append-only key: tokens acknowledged.
    let acked: Rc<RefCell<Vec<Vec<String>>>> =
        Rc::new(RefCell::new(vec![Vec::new(); config.keys.max(1)]));
    let mut tasks = Vec::new();
    for c in 0..config.clients {
        let client = client.clone();
        let report = report.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        let completed = completed.clone();
        let config = config.clone();
        tasks.push(shardcore_io::spawn(async move {
            let mut rng = Rng::stream(config.seed, &format!("workload client {c}"));
            let mut n = 0u64;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                n += 1;
                let k = rng.range(0, config.keys.max(1) as u64) as usize;
                let key = key_name(&config.key_prefix, k);
                let id = c as u64 + 1;
                let token = format!("c{id}.{n};");
                let call_ns = start.elapsed().as_nanos() as u64;
                let dice = rng.range(0, 100);
                let kb = Bytes::from(key.clone());
                let op = if k % 2 == 0 || dice < 40 {
                    if dice < 35 {
                        let r = client.get(kb).await;
                        let ret = start.elapsed().as_nanos() as u64;
                        if record_get(&report, id, &key, r, call_ns, ret) {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    OpKind::Append
                } else if dice < 60 {
                    OpKind::Put
                } else if dice < 75 {
                    OpKind::Delete
                } else {
                    OpKind::Cas
                };
                let value = Bytes::from(token.clone());
                let result = match op {
                    OpKind::Append => client.append(kb, value.clone()).await.map(|_| None),
                    OpKind::Put => client.put(kb, value.clone()).await.map(|_| None),
                    OpKind::Delete => client.delete(kb).await.map(|_| None),
                    _ => {
                        let expected = (rng.range(0, 2) == 0).then(|| Bytes::from("none"));
                        client
                            .compare_and_swap(kb, expected.clone(), value.clone())
                            .await
                            .map(|(swapped, found)| Some((swapped, found, expected)))
                    }
                };
                let ret = start.elapsed().as_nanos() as u64;
                let mut r = report.borrow_mut();
                let mut line = HistoryOp {
                    client: id,
                    op,
                    key: Bytes::from(key.clone()),
                    value: (op != OpKind::Delete).then(|| value.clone()),
                    expected: None,
                    output: None,
                    ok: Some(true),
                    call_ns,
                    return_ns: ret,
                };
                match result {
                    Ok(cas) => {
                        r.completed += 1;
                        completed.fetch_add(1, Ordering::Relaxed);
                        if let Some((swapped, found, expected)) = cas {
                            line.expected = expected;
                            line.ok = Some(swapped);
                            line.output = if swapped { None } else { found };
                        }
                        if line.ok == Some(true) {
                            r.acknowledged_writes += 1;
                        }
                        if op == OpKind::Append && k % 2 == 0 {
                            acked.borrow_mut()[k].push(token);
                        }
                        r.history.push(line);
                    }
                    Err(ClientError::Timeout | ClientError::Unknown) => {
                        r.timeouts += 1;
                        r.history.push(line.timed_out(ret));
                    }
                    Err(_) => r.refused += 1,
                }
            }
        }));
    }
    for task in tasks {
        task.await;
    }
    // The final read: every acknowledged append of an append-only key must be there.
    let mut lost = 0u64;
    let mut examples = Vec::new();
    let mut final_failed = None;
    let acked = acked.take();
    for (k, tokens) in acked.iter().enumerate() {
        if tokens.is_empty() {
            continue;
        }
        let key = key_name(&config.key_prefix, k);
        let mut value = None;
        let mut last_error = None;
        for _ in 0..3 {
            match client.get(Bytes::from(key.clone())).await {
                Ok(v) => {
                    value = Some(v.unwrap_or_default());
                    break;
                }
                Err(e) => last_error = Some(format!("final read of {key}: {e}")),
            }
        }
        let Some(value) = value else {
            final_failed = last_error;
            continue;
        };
        let text = String::from_utf8_lossy(&value);
        for token in tokens {
            if !text.contains(token.as_str()) {
                lost += 1;
                if examples.len() < 20 {
                    examples.push(format!("{key}: {token}"));
                }
            }
        }
    }
    let mut report = report.take();
    report.client_stats = client.stats();
    report.lost_writes = lost;
    report.lost_examples = examples;
    if report.final_read_failed.is_none() {
        report.final_read_failed = final_failed;
    }
    report
}

/// Records a get's outcome; true when it completed.
fn record_get(
    report: &Rc<RefCell<WorkloadReport>>,
    client: u64,
    key: &str,
    result: Result<Option<Bytes>, ClientError>,
    call_ns: u64,
    return_ns: u64,
) -> bool {
    let mut r = report.borrow_mut();
    match result {
        Ok(value) => {
            r.completed += 1;
            let mut line = HistoryOp::get(client, key, None, call_ns, return_ns);
            line.output = value;
            r.history.push(line);
            return true;
        }
        Err(ClientError::Timeout | ClientError::Unknown) => r.timeouts += 1,
        Err(_) => r.refused += 1,
    }
    false
}
