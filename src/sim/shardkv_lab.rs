//! The MIT 6.5840 lab's sharded KV tester (shardkv's `make_config`, `join`, `leave`,
//! `ShutdownGroup`, `check`) as a library for `tests/sim_shardkv.rs`: the lab's setting — three
//! shard groups of three nodes each plus a controller group of three — its operations that must
//! succeed, a concurrent append workload that knows what every key must hold, and the checks:
//! every history linearizable, and the total persisted state of the shard groups.
//!
//! Nodes 1-3 run the controller (group [`CTL_GROUP`]); groups 2, 3 and 4 run on nodes 4-6, 7-9
//! and 10-12 (the lab's groups 100, 101, 102). Configurations name a group's replicas by the
//! nodes that host it, which is how the sharded clerk finds them.

use bytes::Bytes;

use super::kv_lab::{history_line, Learned};
use super::{Cluster, ControllerConfig, ShardCompletedOp, ShardKvSimConfig, SimConfig};
use crate::history::HistoryOp;
use crate::kv::{Op, Reply, ServerConfig, ServiceOutcome};
use crate::linearizability::check_history;
use crate::raft::GroupId;
use crate::rng::Rng;
use crate::shardctl::{Config, CtlOp, CtlOutcome, CtlReply, CtlSettings, Replica, LATEST};
use crate::shardkv::{ShardKvServerConfig, ShardOutcome, ShardState};

/// The controller's group.
pub const CTL_GROUP: GroupId = 1;
/// The shard groups (the lab's 100, 101, 102).
pub const GROUPS: [GroupId; 3] = [2, 3, 4];
/// Nodes per group.
pub const NODES_PER_GROUP: u64 = 3;
/// The lab's shard count (NShards).
pub const SHARDS: usize = 10;
/// Payload bytes per part of a moving shard. Why 64: less than a key and a value of most of
/// the tests' pairs and less than a session table of a few clients, so a shard holding
/// anything moves in several parts (its sessions alone in the last), and every migration
/// exercises the parts' ordering, progress and snapshots.
pub const PART_BYTES: usize = 64;
/// Bound on one operation that must succeed (virtual time): long enough for elections,
/// migrations and the unreliable network, short enough that a stuck run fails promptly.
pub const OP_TIMEOUT_MS: u64 = 30_000;

/// The lab's setting: the controller on nodes 1-3, three shard groups of three nodes each, the
/// unreliable network if asked, and shard groups snapshotting once their durable Raft state
/// passes `max_raft_state` bytes (the lab's maxraftstate; `None`: never).
pub fn lab_config(
    mut cfg: SimConfig,
    unreliable: bool,
    max_raft_state: Option<usize>,
) -> SimConfig {
    let groups = 1 + GROUPS.len();
    cfg.nodes = groups * NODES_PER_GROUP as usize;
    cfg.groups = groups;
    cfg.group_members = (0..groups as u64)
        .map(|g| {
            (1..=NODES_PER_GROUP)
                .map(|i| g * NODES_PER_GROUP + i)
                .collect()
        })
        .collect();
    cfg.unreliable = unreliable;
    cfg.controller = Some(ControllerConfig {
        group: CTL_GROUP,
        server: ServerConfig {
            // The controller's history is small; the lab's controller never snapshots.
            max_raft_state_bytes: None,
            ..ServerConfig::default()
        },
        settings: CtlSettings { shards: SHARDS },
    });
    cfg.shardkv = Some(ShardKvSimConfig {
        server: ShardKvServerConfig {
            server: ServerConfig {
                max_raft_state_bytes: max_raft_state,
                ..ServerConfig::default()
            },
            part_bytes: PART_BYTES,
            ..ShardKvServerConfig::default()
        },
        shards: SHARDS,
    });
    cfg
}

/// Bytes of a string.
pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A random string of `len` letters (the lab's `randstring`).
pub fn rand_string(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| (b'a' + rng.range(0, 26) as u8) as char)
        .collect()
}

/// A lab run: the cluster, an administrator's controller client, and the lab's checker client.
pub struct ShardLab {
    /// The simulated cluster.
    pub c: Cluster,
    /// The controller client that joins and leaves groups.
    pub admin: usize,
    /// The sharded client the lab's `check` and setup puts use (its `ck`).
    pub ck: usize,
    /// The test's own random stream.
    pub rng: Rng,
}

impl ShardLab {
    /// Boots the cluster built from `cfg` (see [`lab_config`]).
    pub fn new(cfg: SimConfig) -> ShardLab {
        let seed = cfg.seed;
        let mut c = Cluster::new(cfg);
        let admin = c.ctl_client();
        let ck = c.shard_client();
        ShardLab {
            c,
            admin,
            ck,
            rng: Rng::stream(seed, "shardkv lab"),
        }
    }

    /// Stops the run with the seed.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n  SEED={} at {:.3}s\n{}",
            self.c.seed(),
            self.c.now_us() as f64 / 1e6,
            self.describe()
        )
    }

    /// Every shard group replica's configuration, leadership and shard states, one per line.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for &g in &GROUPS {
            for node in self.c.config().members(g) {
                let Some(store) = self.c.shard_store(node, g) else {
                    out.push_str(&format!("  g{g} n{node}: down\n"));
                    continue;
                };
                let states: Vec<String> = (0..store.config().shards.len() as u32)
                    .map(|s| match store.shard_state(s) {
                        ShardState::Absent => "-".to_string(),
                        ShardState::Serving => "S".to_string(),
                        // `+`: some of its parts are installed.
                        ShardState::Pulling { from } if store.shard(s).progress().is_some() => {
                            format!("P<{from}+")
                        }
                        ShardState::Pulling { from } => format!("P<{from}"),
                        ShardState::BePulled { to } => format!("B>{to}"),
                    })
                    .collect();
                let leader = if self.c.is_leader(node, g) {
                    " leader"
                } else {
                    ""
                };
                out.push_str(&format!(
                    "  g{g} n{node}{leader}: config {} shards {:?} [{}] applied {:?}\n",
                    store.config().num,
                    store.config().shards,
                    states.join(" "),
                    self.c.applied_index(node, g),
                ));
            }
        }
        let ck = self.c.shard_clerk(self.ck).describe();
        out.push_str(&format!("  checker client: {ck}\n"));
        out
    }

    fn ctl(&mut self, op: CtlOp) -> CtlReply {
        match self.c.ctl_do(self.admin, op.clone(), OP_TIMEOUT_MS) {
            Some(CtlOutcome::Completed(Ok(reply))) => reply,
            other => self.fail(&format!("{op:?} ended with {other:?}")),
        }
    }

    /// The lab's `join`: groups join with the nodes that host them as replicas.
    pub fn join(&mut self, groups: &[GroupId]) {
        let cfg = self.c.config().clone();
        let groups = groups
            .iter()
            .map(|&g| {
                let replicas = cfg.members(g).into_iter().map(Replica::on).collect();
                (g, replicas)
            })
            .collect();
        self.ctl(CtlOp::Join { groups });
    }

    /// The lab's `leave`.
    pub fn leave(&mut self, groups: &[GroupId]) {
        self.ctl(CtlOp::Leave {
            groups: groups.to_vec(),
        });
    }

    /// The latest configuration (the lab's `mck.Query(-1)`).
    pub fn latest(&mut self) -> Config {
        match self.ctl(CtlOp::Query { num: LATEST }) {
            CtlReply::Config(config) => config,
            other => self.fail(&format!("a query answered {other:?}")),
        }
    }

    /// Runs `op` on sharded client `client` to its end; anything but success fails the run.
    pub fn must(&mut self, client: usize, op: Op) -> Reply {
        match self.c.shard_do(client, op.clone(), OP_TIMEOUT_MS) {
            Some(ServiceOutcome::Completed(Ok(reply))) => reply,
            other => self.fail(&format!("{op:?} by client {client} ended with {other:?}")),
        }
    }

    /// Puts through client `client`.
    pub fn put(&mut self, client: usize, key: &str, value: &str) {
        self.must(
            client,
            Op::Put {
                key: b(key),
                value: b(value),
            },
        );
    }

    /// Appends through client `client`.
    pub fn append(&mut self, client: usize, key: &str, value: &str) {
        self.must(
            client,
            Op::Append {
                key: b(key),
                value: b(value),
            },
        );
    }

    /// Reads through client `client`.
    pub fn get(&mut self, client: usize, key: &str) -> Option<Bytes> {
        match self.must(client, Op::Get { key: b(key) }) {
            Reply::Value(value) => value,
            other => self.fail(&format!("a get answered {other:?}")),
        }
    }

    /// The lab's `check`: the key holds exactly `expected`.
    pub fn check(&mut self, key: &str, expected: &str) {
        let ck = self.ck;
        let got = self.get(ck, key);
        if got.as_deref() != Some(expected.as_bytes()) {
            self.fail(&format!("get({key}): expected {expected:?}, got {got:?}"));
        }
    }

    /// Total durable bytes (Raft state and snapshots) of every member of every shard group.
    pub fn total_persisted_bytes(&self) -> usize {
        GROUPS
            .iter()
            .map(|&g| self.c.persisted_group_bytes(g))
            .sum()
    }

    /// Fails the run unless its whole history is linearizable.
    pub fn check_linearizable(&self) {
        let history = history(self.c.shard_history());
        let report = check_history(&history);
        if !report.verdict.is_linearizable() {
            self.fail(&format!(
                "history of {} operations: {}",
                history.len(),
                report.verdict
            ));
        }
    }
}

/// Clients each appending to their own key in a loop (the lab's concurrent tests), keeping what
/// every key must hold.
pub struct AppendWorkload {
    /// Each worker's client handle.
    pub clients: Vec<usize>,
    /// Each worker's key.
    pub keys: Vec<String>,
    /// What each key must hold.
    pub expected: Vec<String>,
    /// The value each worker's operation in flight appends.
    pending: Vec<Option<String>>,
    /// Length of each appended value.
    value_len: usize,
    /// Also mix in reads and puts of random keys (the lab's Unreliable3); then only the
    /// linearizability check judges the values.
    mixed: bool,
    /// A worker waits this long after an operation ends before it starts the next (the lab's
    /// `time.Sleep` in the worker loop).
    pause_ms: u64,
    /// When each worker may start its next operation (virtual ms).
    next_start_ms: Vec<u64>,
}

impl AppendWorkload {
    /// `keys.len()` workers, one per key, each with its own client; `expected` is what the keys
    /// hold now.
    pub fn new(lab: &mut ShardLab, keys: &[String], expected: &[String], value_len: usize) -> Self {
        let clients = keys.iter().map(|_| lab.c.shard_client()).collect();
        AppendWorkload {
            clients,
            keys: keys.to_vec(),
            expected: expected.to_vec(),
            pending: vec![None; keys.len()],
            value_len,
            mixed: false,
            pause_ms: 0,
            next_start_ms: vec![0; keys.len()],
        }
    }

    /// Workers pause `ms` between operations.
    pub fn pause(mut self, ms: u64) -> Self {
        self.pause_ms = ms;
        self
    }

    /// Workers pick random keys and mix appends (50%), puts (5%) and gets.
    pub fn mixed(mut self) -> Self {
        self.mixed = true;
        self
    }

    /// Runs the cluster for `ms` of virtual time, starting a worker's next operation as soon as
    /// its last one ends (`stop`: start none, let the last ones finish).
    pub fn run(&mut self, lab: &mut ShardLab, ms: u64, stop: bool) {
        /// Workers are looked at every 5 ms of virtual time: well under an operation's time.
        const STEP_MS: u64 = 5;
        let deadline_ms = lab.c.now_ms() + ms;
        loop {
            for i in 0..self.clients.len() {
                if lab.c.shard_idle(self.clients[i]) {
                    if self.pending[i].is_some() {
                        self.next_start_ms[i] = lab.c.now_ms() + self.pause_ms;
                    }
                    self.collect(lab, i);
                    if !stop && lab.c.now_ms() >= self.next_start_ms[i] {
                        self.start(lab, i);
                    }
                }
            }
            if lab.c.now_ms() >= deadline_ms {
                return;
            }
            lab.c.run_for(STEP_MS.min(deadline_ms - lab.c.now_ms()));
        }
    }

    /// Lets every worker finish its last operation (fails after [`OP_TIMEOUT_MS`]).
    pub fn finish(&mut self, lab: &mut ShardLab) {
        let clients = self.clients.clone();
        let done = lab
            .c
            .run_until(|c| clients.iter().all(|&w| c.shard_idle(w)), OP_TIMEOUT_MS);
        if !done {
            lab.fail("workers did not finish their last operations");
        }
        self.run(lab, 0, true);
    }

    fn collect(&mut self, lab: &ShardLab, i: usize) {
        let Some(value) = self.pending[i].take() else {
            return;
        };
        let client = self.clients[i];
        let last = lab
            .c
            .shard_history()
            .iter()
            .rev()
            .find(|d| d.client == client)
            .map(|d| d.outcome.clone());
        match last {
            Some(ServiceOutcome::Completed(Ok(_))) => self.expected[i].push_str(&value),
            other => lab.fail(&format!("worker {i}'s append ended with {other:?}")),
        }
    }

    fn start(&mut self, lab: &mut ShardLab, i: usize) {
        let value = rand_string(&mut lab.rng, self.value_len);
        if self.mixed {
            let key = b(&self.keys[lab.rng.index(self.keys.len())]);
            let op = match lab.rng.range(0, 1000) {
                0..500 => Op::Append {
                    key,
                    value: b(&value),
                },
                500..550 => Op::Put {
                    key,
                    value: b(&value),
                },
                _ => Op::Get { key },
            };
            lab.c.shard_start(self.clients[i], op);
            return;
        }
        let op = Op::Append {
            key: b(&self.keys[i]),
            value: b(&value),
        };
        self.pending[i] = Some(value);
        lab.c.shard_start(self.clients[i], op);
    }

    /// Checks every key holds what it must (not for a mixed workload).
    pub fn check(&self, lab: &mut ShardLab) {
        assert!(
            !self.mixed,
            "a mixed workload's values are judged by history"
        );
        for (key, expected) in self.keys.iter().zip(&self.expected) {
            lab.check(key, expected);
        }
    }
}

/// The run's history in the format of [`crate::history`]: operations that could not have had an
/// effect (refused outright) are left out; an unknown outcome is recorded with `ok: null`.
pub fn history(done: &[ShardCompletedOp]) -> Vec<HistoryOp> {
    done.iter().filter_map(history_op).collect()
}

fn history_op(done: &ShardCompletedOp) -> Option<HistoryOp> {
    let learned = match &done.outcome {
        ShardOutcome::Unknown => Learned::Unknown,
        ShardOutcome::Completed(Err(_)) => Learned::Refused,
        ShardOutcome::Completed(Ok(reply)) => Learned::Replied(reply),
    };
    history_line(done.client, &done.op, learned, done.call_us, done.return_us)
}
