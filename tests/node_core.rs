//! The node's pure core (`node::core`) driven with its real storage (`node::disk`: the WAL and
//! the snapshot store in temp directories), three nodes in one thread, messages delivered in a
//! seeded random order. What it shows: acknowledged writes survive crashes of one node and of
//! every node at once, snapshots and log compaction happen under load and recover, and group
//! commit puts many groups' Readies into one batch.
//!
//! `SEED=<n>` replays one seed, `SEEDS=<k>` runs seeds 1..=k; failures print `SEED=`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use shardcore::kv::{Consistency, KvError, KvServerConfig, Op, Reply, Request, Response};
use shardcore::node::core::{CoreConfig, CoreNode, HostedRequest, HostedResponse, ServiceKind};
use shardcore::node::disk::CoreDisk;
use shardcore::node::placement::{group_for_key, CONTROLLER_GROUP};
use shardcore::raft::{Config, GroupId, Message, NodeId};
use shardcore::rng::Rng;
use shardcore::shardctl::{CtlError, CtlOp, CtlReply, CtlRequest, CtlSettings, Replica};
use shardcore_storage::WalConfig;

const GROUPS: u64 = 4;
const NODES: u64 = 3;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str, seed: u64) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "shardcore-node-core-{name}-{seed}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Node {
    core: CoreNode,
    disk: CoreDisk,
}

struct World {
    seed: u64,
    dir: PathBuf,
    rng: Rng,
    nodes: BTreeMap<NodeId, Node>,
    wire: Vec<Message>,
    replies: Vec<(u64, HostedResponse)>,
    now_ms: u64,
    batches: u64,
    batched_groups_max: usize,
}

fn wal_config() -> WalConfig {
    let mut config = WalConfig::new();
    config.segment_bytes = 64 << 10;
    config.max_segments = 4;
    config
}

fn core_config(node: NodeId, seed: u64) -> CoreConfig {
    let mut raft = Config::new(node, 0, vec![], seed);
    raft.election_timeout_ticks = 20;
    raft.heartbeat_interval_ticks = 3;
    CoreConfig {
        node,
        voters: (1..=NODES).collect(),
        raft,
        kv: KvServerConfig {
            max_raft_state_bytes: Some(8 << 10),
            ..KvServerConfig::default()
        },
        ctl: CtlSettings { shards: 10 },
        seed: seed ^ node,
    }
}

impl World {
    fn new(seed: u64, dir: PathBuf) -> World {
        let mut world = World {
            seed,
            dir,
            rng: Rng::stream(seed, "world"),
            nodes: BTreeMap::new(),
            wire: Vec::new(),
            replies: Vec::new(),
            now_ms: 0,
            batches: 0,
            batched_groups_max: 0,
        };
        for node in 1..=NODES {
            world.start(node);
        }
        world
    }

    fn start(&mut self, node: NodeId) {
        let mut groups: Vec<u64> = (1..=GROUPS).collect();
        groups.push(CONTROLLER_GROUP);
        let dir = self.dir.join(format!("n{node}"));
        let (disk, boots) = CoreDisk::open(&dir, 0, &groups, wal_config())
            .unwrap_or_else(|e| panic!("SEED={} node {node} recovery: {e}", self.seed));
        let core = CoreNode::new(core_config(node, self.seed), boots)
            .unwrap_or_else(|e| panic!("SEED={} node {node} boot: {e}", self.seed));
        self.nodes.insert(node, Node { core, disk });
    }

    fn crash(&mut self, node: NodeId) {
        self.nodes.remove(&node);
        self.wire.retain(|m| m.to != node && m.from != node);
    }

    /// One round: every node's output carried out (batches written synchronously), then every
    /// message on the wire delivered in a random order (10% lost).
    fn round(&mut self) {
        for node in 1..=NODES {
            for _ in 0..20 {
                let Some(n) = self.nodes.get_mut(&node) else {
                    break;
                };
                let out = n.core.take_output();
                if out.is_empty() {
                    break;
                }
                self.wire.extend(out.messages);
                self.replies.extend(out.replies);
                if let Some(batch) = out.batch {
                    let mut groups: Vec<u64> = batch.records.iter().map(|r| r.group()).collect();
                    groups.dedup();
                    self.batched_groups_max = self.batched_groups_max.max(groups.len());
                    self.batches += 1;
                    let pinning = n
                        .disk
                        .write(&batch)
                        .unwrap_or_else(|e| panic!("SEED={} node {node} write: {e}", self.seed));
                    n.core.persisted(batch.ticket);
                    for group in pinning {
                        n.core.request_snapshot(group);
                    }
                }
            }
        }
        let mut wire = std::mem::take(&mut self.wire);
        for i in (1..wire.len()).rev() {
            let j = self.rng.range(0, i as u64 + 1) as usize;
            wire.swap(i, j);
        }
        for message in wire {
            if self.rng.range(0, 10) == 0 {
                continue;
            }
            if let Some(n) = self.nodes.get_mut(&message.to) {
                n.core.step(message);
            }
        }
    }

    fn tick(&mut self) {
        self.now_ms += 10;
        let now = self.now_ms;
        for n in self.nodes.values_mut() {
            n.core.tick(now);
        }
        self.round();
    }

    fn leader(&self, group: u64) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.core.role(group) == Some(shardcore::raft::Role::Leader))
            .map(|(&id, _)| id)
    }

    /// Sends `request` to the group's leader until it is answered with something other than
    /// "wrong leader" or "timeout", within a bounded number of ticks.
    fn call(&mut self, key: &[u8], request: Request) -> Result<Reply, KvError> {
        let group = group_for_key(key, GROUPS);
        match self.call_hosted(group, HostedRequest::Kv(request)) {
            HostedResponse::Kv(Response { result, .. }) => result,
            other => panic!("SEED={} a KV request answered {other:?}", self.seed),
        }
    }

    /// Sends `request` to `group`'s leader until it is answered with something other than
    /// "wrong leader" or "timeout", within a bounded number of ticks.
    fn call_hosted(&mut self, group: GroupId, request: HostedRequest) -> HostedResponse {
        let token = self.rng.next_u64();
        for _attempt in 0..400 {
            let Some(leader) = self.leader(group) else {
                self.tick();
                continue;
            };
            self.nodes
                .get_mut(&leader)
                .expect("leader is up")
                .core
                .on_hosted_request(group, token, request.clone());
            for _ in 0..60 {
                self.round();
                if let Some(pos) = self.replies.iter().position(|(t, _)| *t == token) {
                    let (_, response) = self.replies.remove(pos);
                    let retry = match &response {
                        HostedResponse::Kv(r) => {
                            matches!(
                                r.result,
                                Err(KvError::WrongLeader { .. } | KvError::Timeout)
                            )
                        }
                        HostedResponse::Ctl(r) => {
                            matches!(
                                r.result,
                                Err(CtlError::WrongLeader { .. } | CtlError::Timeout)
                            )
                        }
                    };
                    if retry {
                        break;
                    }
                    return response;
                }
                self.tick();
            }
        }
        panic!("SEED={} request {request:?} never answered", self.seed);
    }

    fn register(&mut self, key: &[u8]) -> u64 {
        let request = Request {
            client: 0,
            seq: 0,
            op: Op::Register,
            consistency: Consistency::Linearizable,
        };
        match self.call(key, request) {
            Ok(Reply::Registered { client }) => client,
            other => panic!("SEED={} register: {other:?}", self.seed),
        }
    }

    /// One controller operation in session `client` with sequence `seq`.
    fn ctl(&mut self, client: u64, seq: u64, op: CtlOp) -> Result<CtlReply, CtlError> {
        let request = CtlRequest {
            client,
            seq,
            op,
            consistency: Consistency::Linearizable,
        };
        match self.call_hosted(CONTROLLER_GROUP, HostedRequest::Ctl(request)) {
            HostedResponse::Ctl(response) => response.result,
            other => panic!("SEED={} a controller request answered {other:?}", self.seed),
        }
    }
}

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SEED") {
        return vec![s.parse().expect("SEED is a number")];
    }
    let count = std::env::var("SEEDS").map_or(default, |s| s.parse().expect("SEEDS is a number"));
    (1..=count).collect()
}

/// Sequential puts over many keys with crashes of one node and of all nodes in between; after
/// the last restart every key reads back its last acknowledged value.
#[test]
fn acknowledged_writes_survive_crashes_and_compaction() {
    for seed in seeds(4) {
        let tmp = TempDir::new("crash", seed);
        let mut world = World::new(seed, tmp.0.clone());
        let mut sessions: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut expected: BTreeMap<Vec<u8>, Bytes> = BTreeMap::new();
        for i in 0..240u64 {
            let key = format!("key-{}", i % 24).into_bytes();
            let group = group_for_key(&key, GROUPS);
            if let std::collections::btree_map::Entry::Vacant(slot) = sessions.entry(group) {
                slot.insert((world.register(&key), 0));
            }
            let (client, seq) = sessions.get_mut(&group).expect("session");
            *seq += 1;
            let value = Bytes::from(format!("v{i}-{}", "x".repeat(200)));
            let request = Request {
                client: *client,
                seq: *seq,
                op: Op::Put {
                    key: Bytes::from(key.clone()),
                    value: value.clone(),
                },
                consistency: Consistency::Linearizable,
            };
            match world.call(&key, request) {
                Ok(Reply::Done) => {
                    expected.insert(key, value);
                }
                other => panic!("SEED={seed} put {i}: {other:?}"),
            }
            if i % 60 == 30 {
                let victim = 1 + world.rng.range(0, NODES);
                world.crash(victim);
                for _ in 0..30 {
                    world.tick();
                }
                world.start(victim);
            }
            if i % 80 == 79 {
                for node in 1..=NODES {
                    world.crash(node);
                }
                for node in 1..=NODES {
                    world.start(node);
                }
            }
        }
        for (key, value) in &expected {
            let group = group_for_key(key, GROUPS);
            let (client, seq) = sessions.get_mut(&group).expect("session");
            *seq += 1;
            let request = Request {
                client: *client,
                seq: *seq,
                op: Op::Get {
                    key: Bytes::from(key.clone()),
                },
                consistency: Consistency::Linearizable,
            };
            match world.call(key, request) {
                Ok(Reply::Value(Some(got))) => assert_eq!(
                    &got,
                    value,
                    "SEED={seed} key {}",
                    String::from_utf8_lossy(key)
                ),
                other => panic!(
                    "SEED={seed} get {}: {other:?}",
                    String::from_utf8_lossy(key)
                ),
            }
        }
        assert!(
            world.batched_groups_max >= 2,
            "SEED={seed} no batch ever carried two groups (group commit is not happening)"
        );
        for node in 1..=NODES {
            let snap_dir = tmp.0.join(format!("n{node}/core-0/snap"));
            let snapshots = std::fs::read_dir(&snap_dir).map(|d| d.count()).unwrap_or(0);
            assert!(
                snapshots >= 1,
                "SEED={seed} node {node} never wrote a snapshot ({})",
                snap_dir.display()
            );
        }
        let segments: Vec<usize> = world.nodes.values().map(|n| n.disk.segments()).collect();
        assert!(
            segments.iter().all(|&s| s <= 6),
            "SEED={seed} compaction did not bound the log: segments {segments:?}"
        );
    }
}

/// The controller's group is hosted beside the KV groups on the same core and WAL: joins and
/// leaves interleaved with crashes of one node and of every node make consecutive configs, a
/// retry of an applied change (same sequence) is answered from the session table instead of
/// making another config, snapshots cover the controller's log, and every historical config
/// survives. A KV request sent to the controller's group is refused, not misapplied.
#[test]
fn controller_group_is_hosted_and_durable() {
    for seed in seeds(3) {
        let tmp = TempDir::new("ctl", seed);
        let mut world = World::new(seed, tmp.0.clone());
        let node = world.nodes.values().next().expect("a node");
        assert_eq!(
            node.core.service(CONTROLLER_GROUP).map(|s| s.kind()),
            Some(ServiceKind::Ctl)
        );
        assert_eq!(
            node.core.service(1).map(|s| s.kind()),
            Some(ServiceKind::Kv)
        );
        let client = match world.ctl(0, 0, CtlOp::Register) {
            Ok(CtlReply::Registered { client }) => client,
            other => panic!("SEED={seed} register: {other:?}"),
        };
        let mut history = Vec::new();
        // Twelve replicas a group make each join entry a few hundred bytes, so the controller's
        // log passes the 8 KiB snapshot bound well within the run.
        let replicas: Vec<Replica> = (1..=12).map(Replica::on).collect();
        for i in 1..=60u64 {
            let group = 100 + i;
            let op = if i % 3 == 0 {
                CtlOp::Leave {
                    groups: vec![group - 1],
                }
            } else {
                CtlOp::Join {
                    groups: BTreeMap::from([(group, replicas.clone())]),
                }
            };
            match world.ctl(client, i, op.clone()) {
                Ok(CtlReply::Changed { num }) => assert_eq!(num, i, "SEED={seed} op {i}"),
                other => panic!("SEED={seed} op {i}: {other:?}"),
            }
            // The same sequence again is a retry: answered, never applied twice.
            match world.ctl(client, i, op) {
                Ok(CtlReply::Changed { num }) => assert_eq!(num, i, "SEED={seed} retry {i}"),
                other => panic!("SEED={seed} retry {i}: {other:?}"),
            }
            match world.ctl(client, 0, CtlOp::latest()) {
                Ok(CtlReply::Config(config)) => {
                    assert_eq!(config.num, i, "SEED={seed}");
                    assert!(config.is_balanced(), "SEED={seed} {config:?}");
                    history.push(config);
                }
                other => panic!("SEED={seed} query: {other:?}"),
            }
            if i % 20 == 10 {
                let victim = 1 + world.rng.range(0, NODES);
                world.crash(victim);
                for _ in 0..30 {
                    world.tick();
                }
                world.start(victim);
            }
            if i % 25 == 24 {
                for node in 1..=NODES {
                    world.crash(node);
                }
                for node in 1..=NODES {
                    world.start(node);
                }
            }
        }
        for config in &history {
            match world.ctl(client, 0, CtlOp::Query { num: config.num }) {
                Ok(CtlReply::Config(got)) => assert_eq!(&got, config, "SEED={seed}"),
                other => panic!("SEED={seed} query {}: {other:?}", config.num),
            }
        }
        let kv_at_controller = Request {
            client: 0,
            seq: 0,
            op: Op::Register,
            consistency: Consistency::Linearizable,
        };
        let leader = world.leader(CONTROLLER_GROUP).unwrap_or(1);
        let token = world.rng.next_u64();
        world
            .nodes
            .get_mut(&leader)
            .expect("up")
            .core
            .on_hosted_request(CONTROLLER_GROUP, token, HostedRequest::Kv(kv_at_controller));
        world.round();
        let refused = world.replies.iter().find(|(t, _)| *t == token);
        assert!(
            matches!(
                refused,
                Some((
                    _,
                    HostedResponse::Kv(Response {
                        result: Err(KvError::WrongLeader { leader: 0 }),
                        ..
                    })
                ))
            ),
            "SEED={seed} {refused:?}"
        );
        let snapshots = (1..=NODES)
            .flat_map(|node| {
                std::fs::read_dir(tmp.0.join(format!("n{node}/core-0/snap")))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("snap-{CONTROLLER_GROUP}-"))
            })
            .count();
        assert!(
            snapshots >= 1,
            "SEED={seed} the controller never snapshotted"
        );
    }
}
