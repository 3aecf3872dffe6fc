//! The MIT 6.5840 lab's KV workload (kvraft's `GenericTest`) as a library, so the tests and the
//! `shardcore sim kv` command run the same scenarios: clients append (50%), put (5%, with random
//! keys) and get in a loop for a few seconds per round, while servers are partitioned at random
//! every 1-1.2 s, crash between rounds, lose messages, and snapshot when their log grows.
//!
//! It checks what the lab checks: a client's read of its own key sees exactly its own appends;
//! at the end of a round each key holds every append once and in order; the persisted Raft
//! state stays within 8 × max_raft_state. [`history`] turns the run into a JSON-lines history
//! for the linearizability checker.

use bytes::Bytes;

use super::{Cluster, CompletedOp, SimConfig, LAB_ELECTION_TIMEOUT_MS};
use crate::history::{HistoryOp, OpKind};
use crate::kv::{Consistency, KvServerConfig, Op, Outcome, Reply};
use crate::raft::{GroupId, NodeId};
use crate::rng::Rng;

/// The group the lab's scenarios use.
pub const GROUP: GroupId = 1;
/// How long clients run in one round (the lab: 5 s).
pub const ROUND_MS: u64 = 5_000;
/// Bound on waiting for clients to finish their last operation once faults are healed.
pub const DRAIN_MS: u64 = 30_000;
/// The lab's maxraftstate in the snapshot scenarios.
pub const LAB_MAX_RAFT_STATE: usize = 1000;

/// One scenario: the lab's GenericTest parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvScenario {
    /// Concurrent clients.
    pub clients: usize,
    /// Servers.
    pub nodes: usize,
    /// The lab's unreliable network.
    pub unreliable: bool,
    /// Crash and restart every server between rounds.
    pub crash: bool,
    /// Re-partition the servers at random every 1-1.2 s.
    pub partitions: bool,
    /// Snapshot once the persisted Raft state passes this (`None`: never).
    pub max_raft_state: Option<usize>,
    /// Clients use random keys (then only linearizability can judge the reads).
    pub random_keys: bool,
    /// Rounds.
    pub rounds: usize,
    /// Length of a round.
    pub round_ms: u64,
}

impl KvScenario {
    /// `clients` clients on `nodes` servers, no faults, three rounds of 5 s.
    pub const fn new(clients: usize, nodes: usize) -> KvScenario {
        KvScenario {
            clients,
            nodes,
            unreliable: false,
            crash: false,
            partitions: false,
            max_raft_state: None,
            random_keys: false,
            rounds: 3,
            round_ms: ROUND_MS,
        }
    }
    /// With the unreliable network.
    pub const fn unreliable(self) -> KvScenario {
        KvScenario {
            unreliable: true,
            ..self
        }
    }
    /// With crashes between rounds.
    pub const fn crash(self) -> KvScenario {
        KvScenario {
            crash: true,
            ..self
        }
    }
    /// With random partitions.
    pub const fn partitions(self) -> KvScenario {
        KvScenario {
            partitions: true,
            ..self
        }
    }
    /// With snapshots at the lab's maxraftstate.
    pub const fn snapshots(self) -> KvScenario {
        KvScenario {
            max_raft_state: Some(LAB_MAX_RAFT_STATE),
            ..self
        }
    }
    /// With random keys.
    pub const fn random_keys(self) -> KvScenario {
        KvScenario {
            random_keys: true,
            ..self
        }
    }

    /// A random mix of everything, drawn from `seed` (the swarm).
    pub fn swarm(seed: u64) -> KvScenario {
        let mut r = Rng::stream(seed, "kv swarm");
        let nodes = [3, 5, 7][r.index(3)];
        let mut s = KvScenario::new(r.range(1, 16) as usize, nodes);
        s.unreliable = r.chance(1, 2);
        s.crash = r.chance(1, 2);
        s.partitions = r.chance(1, 2);
        s.random_keys = r.chance(1, 2);
        if r.chance(1, 2) {
            s.max_raft_state = Some(r.range(500, 5000) as usize);
        }
        s.rounds = r.range(1, 3) as usize;
        s.round_ms = r.range(500, 2000);
        s
    }

    /// The lab scenario of that name (TEST-PARITY.md's KV table, in snake case), or `swarm`.
    pub fn named(name: &str, seed: u64) -> Option<KvScenario> {
        if name == "swarm" {
            return Some(KvScenario::swarm(seed));
        }
        SCENARIOS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }
}

/// The generic rows of TEST-PARITY.md's KV table.
pub const SCENARIOS: &[(&str, KvScenario)] = &[
    ("basic", KvScenario::new(1, 5)),
    ("concurrent", KvScenario::new(5, 5)),
    ("unreliable", KvScenario::new(5, 5).unreliable()),
    (
        "many_partitions_one_client",
        KvScenario::new(1, 5).partitions(),
    ),
    (
        "many_partitions_many_clients",
        KvScenario::new(5, 5).partitions(),
    ),
    ("persist_one_client", KvScenario::new(1, 5).crash()),
    ("persist_concurrent", KvScenario::new(5, 5).crash()),
    (
        "persist_concurrent_unreliable",
        KvScenario::new(5, 5).unreliable().crash(),
    ),
    (
        "persist_partition",
        KvScenario::new(5, 5).crash().partitions(),
    ),
    (
        "persist_partition_unreliable",
        KvScenario::new(5, 5).unreliable().crash().partitions(),
    ),
    (
        "persist_partition_unreliable_linearizable",
        KvScenario::new(15, 7)
            .unreliable()
            .crash()
            .partitions()
            .random_keys(),
    ),
    (
        "snapshot_recover",
        KvScenario::new(1, 5).crash().snapshots(),
    ),
    (
        "snapshot_recover_many_clients",
        KvScenario::new(20, 5).crash().snapshots(),
    ),
    (
        "snapshot_unreliable",
        KvScenario::new(5, 5).unreliable().snapshots(),
    ),
    (
        "snapshot_unreliable_recover",
        KvScenario::new(5, 5).unreliable().crash().snapshots(),
    ),
    (
        "snapshot_unreliable_recover_concurrent_partition",
        KvScenario::new(5, 5)
            .unreliable()
            .crash()
            .partitions()
            .snapshots(),
    ),
    (
        "snapshot_unreliable_recover_concurrent_partition_linearizable",
        KvScenario::new(15, 7)
            .unreliable()
            .crash()
            .partitions()
            .snapshots()
            .random_keys(),
    ),
];

/// A cluster running the KV service on `nodes` servers.
pub fn kv_cluster(mut cfg: SimConfig, unreliable: bool, max_raft_state: Option<usize>) -> Cluster {
    cfg.unreliable = unreliable;
    cfg.kv = Some(KvServerConfig {
        max_raft_state_bytes: max_raft_state,
        ..KvServerConfig::default()
    });
    Cluster::new(cfg)
}

/// One lab client: its key, what the key should hold, and how many appends it made.
struct LabClient {
    handle: usize,
    index: usize,
    last: String,
    appends: usize,
    started: bool,
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Runs a scenario on a cluster built from `cfg` (its seed drives everything) and returns the
/// cluster for further checks, or what went wrong.
pub fn run(cfg: SimConfig, scenario: KvScenario) -> Result<Cluster, String> {
    let seed = cfg.seed;
    let mut c = kv_cluster(
        SimConfig {
            nodes: scenario.nodes,
            ..cfg
        },
        scenario.unreliable,
        scenario.max_raft_state,
    );
    let mut r = Rng::stream(seed, "kv lab");
    let mut clients: Vec<LabClient> = (0..scenario.clients)
        .map(|index| LabClient {
            handle: c.kv_client(GROUP),
            index,
            last: String::new(),
            appends: 0,
            started: false,
        })
        .collect();
    let handles: Vec<usize> = clients.iter().map(|cl| cl.handle).collect();
    let mut seen = 0;
    for _round in 0..scenario.rounds {
        let end_ms = c.now_ms() + scenario.round_ms;
        let mut next_partition_ms = c.now_ms() + r.range(1000, 1200);
        while c.now_ms() < end_ms {
            seen = settle(&c, &clients, seen, scenario.random_keys)?;
            for client in clients.iter_mut() {
                if c.kv_idle(client.handle) {
                    start_next(&mut c, client, &mut r, scenario);
                }
            }
            let until = end_ms.min(next_partition_ms);
            let remaining = until.saturating_sub(c.now_ms()).max(1);
            c.run_until(|c| handles.iter().any(|&h| c.kv_idle(h)), remaining);
            if scenario.partitions && c.now_ms() >= next_partition_ms {
                random_partition(&mut c, &mut r, scenario.nodes);
                next_partition_ms = c.now_ms() + r.range(1000, 1200);
            }
        }
        if scenario.partitions {
            c.heal();
            c.run_for(LAB_ELECTION_TIMEOUT_MS);
        }
        if scenario.crash {
            c.crash_all();
            c.restart_crashed();
        }
        let drained = c.run_until(|c| handles.iter().all(|&h| c.kv_idle(h)), DRAIN_MS);
        ensure!(
            drained,
            "clients did not finish within {DRAIN_MS} ms of healing"
        );
        seen = settle(&c, &clients, seen, scenario.random_keys)?;
        if !scenario.random_keys {
            for client in clients.iter().filter(|cl| cl.started) {
                let key = client.index.to_string();
                let value = match c.kv_do(
                    client.handle,
                    Op::Get {
                        key: Bytes::from(key.clone()),
                    },
                    DRAIN_MS,
                ) {
                    Some(Outcome::Completed(Ok(Reply::Value(v)))) => v.unwrap_or_default(),
                    other => return Err(format!("final Get({key}) ended with {other:?}")),
                };
                ensure!(
                    value == client.last.as_bytes(),
                    "client {} key holds the wrong value",
                    client.index
                );
                check_client_appends(
                    client.index,
                    &String::from_utf8_lossy(&value),
                    client.appends,
                )?;
            }
            seen = c.kv_history().len();
        }
        if let Some(max) = scenario.max_raft_state {
            let size = c.max_persisted_raft_bytes(GROUP);
            ensure!(
                size <= 8 * max,
                "persisted Raft state {size} B > 8 × max_raft_state {max} B"
            );
        }
    }
    Ok(c)
}

/// Starts a client's next operation, as the lab's client loop chooses it.
fn start_next(c: &mut Cluster, client: &mut LabClient, r: &mut Rng, scenario: KvScenario) {
    let mut key = client.index.to_string();
    if !client.started {
        client.started = true;
        c.kv_start(
            client.handle,
            Op::Put {
                key: Bytes::from(key),
                value: Bytes::new(),
            },
            Consistency::Linearizable,
        );
        return;
    }
    if scenario.random_keys {
        key = r.range(0, scenario.clients as u64).to_string();
    }
    let value = format!("x {} {} y", client.index, client.appends);
    let op = if r.chance(500, 1000) {
        client.appends += 1;
        if !scenario.random_keys {
            client.last.push_str(&value);
        }
        Op::Append {
            key: Bytes::from(key),
            value: Bytes::from(value),
        }
    } else if scenario.random_keys && r.chance(100, 1000) {
        client.appends += 1;
        Op::Put {
            key: Bytes::from(key),
            value: Bytes::from(value),
        }
    } else {
        Op::Get {
            key: Bytes::from(key),
        }
    };
    c.kv_start(client.handle, op, Consistency::Linearizable);
}

/// Checks the operations that ended since `seen`: no error reached a client (it retries
/// everything retryable), and a client's read of its own key returns exactly its own appends
/// (the lab's "get wrong value": a client does one operation at a time, so its reads follow
/// all its appends). Returns the new `seen`.
fn settle(
    c: &Cluster,
    clients: &[LabClient],
    seen: usize,
    random_keys: bool,
) -> Result<usize, String> {
    let history = c.kv_history();
    for done in &history[seen..] {
        if let Outcome::Completed(Err(e)) = &done.outcome {
            return Err(format!(
                "client {} got an error it should have retried: {e}",
                done.client
            ));
        }
        if random_keys {
            continue;
        }
        if let (Op::Get { .. }, Outcome::Completed(Ok(Reply::Value(value)))) =
            (&done.op, &done.outcome)
        {
            let client = clients
                .iter()
                .find(|cl| cl.handle == done.client)
                .expect("our client");
            let value = value.as_deref().unwrap_or_default();
            ensure!(
                value == client.last.as_bytes(),
                "client {} read the wrong value",
                client.index
            );
        }
    }
    Ok(history.len())
}

/// The lab's checkClntAppends: "x <client> <j> y" appears exactly once for every j below
/// `count`, in order. One linear pass over the value's records.
pub fn check_client_appends(client: usize, value: &str, count: usize) -> Result<(), String> {
    let mut next = 0;
    for (c, j) in parse_appends(value)? {
        if c == client {
            ensure!(j == next, "client {client}: append {j} where {next} was due (missing, duplicate or out of order)");
            next += 1;
        }
    }
    ensure!(
        next == count,
        "client {client}: {next} of {count} appends present"
    );
    Ok(())
}

/// The (client, j) of every "x <client> <j> y" record in a value made only of such records.
fn parse_appends(value: &str) -> Result<Vec<(usize, usize)>, String> {
    let mut records = Vec::new();
    let mut rest = value;
    let bad = |at: &str| format!("not an append record at {:?}", &at[..at.len().min(20)]);
    while !rest.is_empty() {
        let body = rest.strip_prefix("x ").ok_or_else(|| bad(rest))?;
        let (client, body) = body.split_once(' ').ok_or_else(|| bad(rest))?;
        let (j, body) = body.split_once(' ').ok_or_else(|| bad(rest))?;
        let next = body.strip_prefix('y').ok_or_else(|| bad(rest))?;
        let client = client.parse().map_err(|_| bad(rest))?;
        let j = j.parse().map_err(|_| bad(rest))?;
        records.push((client, j));
        rest = next;
    }
    Ok(records)
}

/// The lab's partitioner: every server goes to one of two sides at random.
fn random_partition(c: &mut Cluster, r: &mut Rng, nodes: usize) {
    let mut sides: [Vec<NodeId>; 2] = [Vec::new(), Vec::new()];
    for node in 1..=nodes as NodeId {
        sides[r.index(2)].push(node);
    }
    c.partition(&[&sides[0], &sides[1]]);
}

/// The run's history, one operation per completed client operation, in the format of
/// [`crate::history`]. Operations the servers refused outright (a key or value over its bound)
/// changed nothing and are left out; an operation whose outcome the client cannot know is
/// recorded with `ok: null`.
pub fn history(c: &Cluster) -> Vec<HistoryOp> {
    c.kv_history().iter().filter_map(history_op).collect()
}

/// One completed operation as a history line (None: it cannot have had an effect).
pub fn history_op(done: &CompletedOp) -> Option<HistoryOp> {
    let learned = match &done.outcome {
        Outcome::Unknown => Learned::Unknown,
        Outcome::Completed(Err(_)) => Learned::Refused,
        Outcome::Completed(Ok(reply)) => Learned::Replied(reply),
    };
    history_line(done.client, &done.op, learned, done.call_us, done.return_us)
}

/// What a client learned of one KV operation it ran (in any service that takes KV ops).
#[derive(Clone, Copy, Debug)]
pub enum Learned<'a> {
    /// Nothing: it may or may not have taken effect.
    Unknown,
    /// It was refused outright and changed nothing.
    Refused,
    /// This reply.
    Replied(&'a Reply),
}

/// The history line of client `client`'s operation `op`, called at `call_us` and answered at
/// `return_us` (virtual time) with what the client `learned`; `None` when it cannot have had
/// an effect (a registration, a refusal).
pub fn history_line(
    client: usize,
    op: &Op,
    learned: Learned<'_>,
    call_us: u64,
    return_us: u64,
) -> Option<HistoryOp> {
    let (op, key, value, expected) = match op {
        Op::Register => return None,
        Op::Get { key } => (OpKind::Get, key.clone(), None, None),
        Op::Put { key, value } => (OpKind::Put, key.clone(), Some(value.clone()), None),
        Op::Append { key, value } => (OpKind::Append, key.clone(), Some(value.clone()), None),
        Op::Delete { key } => (OpKind::Delete, key.clone(), None, None),
        Op::CompareAndSwap { key, expected, new } => (
            OpKind::Cas,
            key.clone(),
            Some(new.clone()),
            expected.clone(),
        ),
    };
    let (ok, output) = match learned {
        Learned::Unknown => (None, None),
        Learned::Refused => return None,
        Learned::Replied(Reply::Value(v)) => (Some(true), v.clone()),
        Learned::Replied(Reply::Swapped { swapped: true, .. }) => (Some(true), None),
        Learned::Replied(Reply::Swapped {
            swapped: false,
            found,
        }) => (Some(false), found.clone()),
        Learned::Replied(Reply::Done | Reply::Registered { .. }) => (Some(true), None),
    };
    Some(HistoryOp {
        client: client as u64,
        op,
        key,
        value,
        expected,
        output,
        ok,
        call_ns: call_us * 1000,
        return_ns: return_us * 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The append check accepts exactly the values the lab's would.
    #[test]
    fn client_appends_are_checked() {
        assert!(check_client_appends(0, "x 0 0 yx 1 0 yx 0 1 y", 2).is_ok());
        assert!(
            check_client_appends(0, "x 0 1 yx 0 0 y", 2).is_err(),
            "out of order"
        );
        assert!(
            check_client_appends(0, "x 0 0 yx 0 0 y", 1).is_err(),
            "duplicate"
        );
        assert!(check_client_appends(0, "x 0 0 y", 2).is_err(), "missing");
        assert!(
            check_client_appends(0, "x 0 0 yjunk", 1).is_err(),
            "not a record"
        );
    }

    /// Every scenario name resolves, and the swarm draws from its seed.
    #[test]
    fn scenarios_resolve() {
        for (name, scenario) in SCENARIOS {
            assert_eq!(KvScenario::named(name, 1), Some(*scenario));
        }
        assert_eq!(KvScenario::named("swarm", 5), Some(KvScenario::swarm(5)));
        assert_eq!(KvScenario::named("nope", 1), None);
    }
}
