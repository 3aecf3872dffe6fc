//! The node's pure core (`node::core`) driven with its real storage (`node::disk`: the WAL and
//! the snapshot store in temp directories), three nodes in one thread, messages delivered in a
//! seeded random order. What it shows: acknowledged writes survive crashes of one node and of
//! every node at once, snapshots and log compaction happen under load and recover, and group
//! commit puts many groups' Readies into one batch. On sharded cores, shard groups follow the
//! controller hosted beside them and move shards through inquiries answered by the same node's
//! replicas, across crashes, as the node's runtime carries them.
//!
//! `SEED=<n>` replays one seed, `SEEDS=<k>` runs seeds 1..=k; failures print `SEED=`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use shardcore::kv::{Consistency, KvError, KvServerConfig, Op, Reply, Request, Response};
use shardcore::node::core::{
    CoreConfig, CoreNode, HostedRequest, HostedResponse, Service, ServiceKind, ShardedHosting,
};
use shardcore::node::disk::CoreDisk;
use shardcore::node::placement::{group_for_key, CONTROLLER_GROUP};
use shardcore::raft::{Config, GroupId, Message, NodeId};
use shardcore::rng::Rng;
use shardcore::shardctl::{
    Config as ShardConfig, CtlError, CtlOp, CtlReply, CtlRequest, CtlSettings, Replica,
};
use shardcore::shardkv::{key_to_shard, ShardKvError, ShardKvServerConfig, ShardState};
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
    /// Installs the crashed cores had put off (their counters die with them).
    installs_deferred_before: u64,
    /// The groups run the sharded KV.
    sharded: bool,
    dir: PathBuf,
    rng: Rng,
    nodes: BTreeMap<NodeId, Node>,
    wire: Vec<Message>,
    replies: Vec<(u64, HostedResponse)>,
    now_ms: u64,
    batches: u64,
    batched_groups_max: usize,
    /// The largest batch's log bytes (`WriteBatch::approx_log_bytes`).
    batch_bytes_max: usize,
}

fn wal_config() -> WalConfig {
    let mut config = WalConfig::new();
    config.segment_bytes = 64 << 10;
    config.max_segments = 4;
    config
}

/// Shards in the sharded tests' configurations.
const SHARDS: usize = 10;
/// The sharded tests' install budget per turn (see `core_config`): two parts' entries.
const INSTALL_BUDGET_BYTES: usize = 500;

fn core_config(node: NodeId, seed: u64, sharded: bool) -> CoreConfig {
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
        ctl: CtlSettings { shards: SHARDS },
        sharded: sharded.then_some(ShardedHosting {
            server: ShardKvServerConfig {
                server: KvServerConfig {
                    max_raft_state_bytes: Some(8 << 10),
                    ..KvServerConfig::default()
                },
                poll_ticks: 3,
                // A part holds one of the test's pairs (about 120 bytes; two do not fit), so a
                // moving shard takes several parts.
                part_bytes: 200,
            },
            // Small enough that a shard's part (about 200 bytes with its entry's header) often
            // finds the turn's budget taken by other shards' and waits for the next poll.
            max_install_bytes: INSTALL_BUDGET_BYTES,
        }),
        // A quarter of a segment, as the server sets it.
        max_batch_log_bytes: (wal_config().segment_bytes / 4) as usize,
        seed: seed ^ node,
    }
}

impl World {
    fn new(seed: u64, dir: PathBuf) -> World {
        World::with_service(seed, dir, false)
    }

    fn with_service(seed: u64, dir: PathBuf, sharded: bool) -> World {
        let mut world = World {
            seed,
            installs_deferred_before: 0,
            sharded,
            dir,
            rng: Rng::stream(seed, "world"),
            nodes: BTreeMap::new(),
            wire: Vec::new(),
            replies: Vec::new(),
            now_ms: 0,
            batches: 0,
            batched_groups_max: 0,
            batch_bytes_max: 0,
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
        let core = CoreNode::new(core_config(node, self.seed, self.sharded), boots)
            .unwrap_or_else(|e| panic!("SEED={} node {node} boot: {e}", self.seed));
        self.nodes.insert(node, Node { core, disk });
    }

    fn crash(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.remove(&node) {
            self.installs_deferred_before += n.core.installs_deferred();
        }
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
                    if n.core.apply_committed() {
                        continue;
                    }
                    break;
                }
                // The server applies once the write is submitted and the messages sent, and
                // other inputs may come first: here committed entries are applied at once,
                // later in the round, or rounds later (messages delivered, batches persisted
                // and ticks in between).
                if self.rng.range(0, 2) == 0 {
                    n.core.apply_committed();
                }
                self.wire.extend(out.messages);
                self.replies.extend(out.replies);
                assert!(
                    out.refused_transfers.is_empty(),
                    "SEED={} {:?}",
                    self.seed,
                    out.refused_transfers
                );
                // Every group is on this one core: the node answers its inquiries itself.
                for outbound in out.inquiries {
                    let target = CoreNode::target_group(outbound.to);
                    if let Some(answer) = n.core.answer_inquiry(target, &outbound.inquiry) {
                        n.core.on_inquiry_answer(outbound.from, answer);
                    }
                }
                if let Some(batch) = out.batch {
                    let mut groups: Vec<u64> = batch.records.iter().map(|r| r.group()).collect();
                    groups.dedup();
                    self.batched_groups_max = self.batched_groups_max.max(groups.len());
                    self.batch_bytes_max = self.batch_bytes_max.max(batch.approx_log_bytes());
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
                        HostedResponse::ShardKv(r) => {
                            matches!(
                                r.result,
                                Err(ShardKvError::WrongLeader { .. } | ShardKvError::Timeout)
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

    /// One sharded KV request, sent to the group `config` gives the key's shard and retried
    /// (bounded) while that group answers "wrong group" (it is still pulling the shard).
    fn shard_call(
        &mut self,
        config: &ShardConfig,
        request: Request,
    ) -> Result<Reply, ShardKvError> {
        let shard = key_to_shard(request.op.key(), SHARDS);
        let group = config.shards[shard as usize];
        for _ in 0..300 {
            match self.call_hosted(group, HostedRequest::ShardKv(request.clone())) {
                HostedResponse::ShardKv(response) => match response.result {
                    Err(ShardKvError::WrongGroup { .. }) => {
                        for _ in 0..3 {
                            self.tick();
                        }
                    }
                    result => return result,
                },
                other => panic!("SEED={} a shard request answered {other:?}", self.seed),
            }
        }
        panic!(
            "SEED={} shard {shard} never served by g{group} in config {}",
            self.seed, config.num
        );
    }

    /// A controller change in session `client` (the sequence counted in `seq`), then the
    /// configuration it made.
    fn change(&mut self, client: u64, seq: &mut u64, op: CtlOp) -> ShardConfig {
        *seq += 1;
        let num = match self.ctl(client, *seq, op.clone()) {
            Ok(CtlReply::Changed { num }) => num,
            other => panic!("SEED={} {op:?}: {other:?}", self.seed),
        };
        match self.ctl(client, 0, CtlOp::Query { num }) {
            Ok(CtlReply::Config(config)) => config,
            other => panic!("SEED={} query {num}: {other:?}", self.seed),
        }
    }

    /// Every live replica of every shard group has applied `config` and holds exactly the
    /// shards it gives that group (serving them) and nothing else.
    fn shard_groups_settled_at(&self, config: &ShardConfig) -> bool {
        self.nodes.values().all(|n| {
            (1..=GROUPS).all(|group| {
                let Some(Service::ShardKv(server)) = n.core.service(group) else {
                    return false;
                };
                let store = server.store();
                store.config().num == config.num
                    && (0..SHARDS as u32).all(|shard| {
                        let owner = config.shards[shard as usize] == group;
                        let want = if owner {
                            ShardState::Serving
                        } else {
                            ShardState::Absent
                        };
                        store.shard_state(shard) == want
                    })
            })
        })
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
        // A turn stops adding groups at a quarter of a segment, so no batch nears a segment
        // (the WAL would refuse it and stop the node).
        let half_segment = (wal_config().segment_bytes / 2) as usize;
        assert!(
            world.batch_bytes_max <= half_segment,
            "SEED={seed} a batch of {} bytes, over half a segment",
            world.batch_bytes_max
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

/// Sharded cores: groups 1..=4 are shard groups beside the controller on the same core and WAL.
/// Joins, a move and leaves make the groups pull shards through inquiries their own node's
/// replicas answer (as the runtime routes them), with a crash of one node and of every node in
/// between. Every acknowledged put reads back; an append retried with its sequence after its
/// shard moved is answered from the session that moved with the shard, not applied twice; and
/// once settled every replica of every group holds exactly its shards. The install budget per
/// turn is small, so shards arriving together wait for later polls, and still all arrive.
#[test]
fn shard_groups_migrate_through_local_inquiries_across_crashes() {
    for seed in seeds(2) {
        let tmp = TempDir::new("shardkv", seed);
        let mut world = World::with_service(seed, tmp.0.clone(), true);
        let node = world.nodes.values().next().expect("a node");
        assert_eq!(
            node.core.service(1).map(|s| s.kind()),
            Some(ServiceKind::ShardKv)
        );
        assert_eq!(
            node.core.service(CONTROLLER_GROUP).map(|s| s.kind()),
            Some(ServiceKind::Ctl)
        );
        let ctl_client = match world.ctl(0, 0, CtlOp::Register) {
            Ok(CtlReply::Registered { client }) => client,
            other => panic!("SEED={seed} register: {other:?}"),
        };
        let every: Vec<Replica> = (1..=NODES).map(Replica::on).collect();
        let join = |groups: &[GroupId]| CtlOp::Join {
            groups: groups.iter().map(|&g| (g, every.clone())).collect(),
        };
        let steps = [
            join(&[1, 2]),
            join(&[3]),
            CtlOp::Move { shard: 0, group: 1 },
            CtlOp::Leave { groups: vec![1] },
            join(&[1]),
            CtlOp::Leave { groups: vec![2, 3] },
        ];
        let mut ctl_seq = 0;
        // The sharded client's own session id: never registered.
        let client = 4242;
        let mut seq = 0;
        let mut expected: BTreeMap<Vec<u8>, Bytes> = BTreeMap::new();
        let mut config = ShardConfig::initial(SHARDS);
        for (step, op) in steps.into_iter().enumerate() {
            config = world.change(ctl_client, &mut ctl_seq, op);
            for i in 0..12 {
                let key = format!("k{}", (step * 12 + i) % 20).into_bytes();
                let value = Bytes::from(format!("v{step}.{i}-{}", "x".repeat(100)));
                seq += 1;
                let request = Request {
                    client,
                    seq,
                    op: Op::Put {
                        key: Bytes::from(key.clone()),
                        value: value.clone(),
                    },
                    consistency: Consistency::Linearizable,
                };
                match world.shard_call(&config, request) {
                    Ok(Reply::Done) => {
                        expected.insert(key, value);
                    }
                    other => panic!("SEED={seed} step {step} put {i}: {other:?}"),
                }
            }
            if step == 2 {
                let victim = 1 + world.rng.range(0, NODES);
                world.crash(victim);
                for _ in 0..30 {
                    world.tick();
                }
                world.start(victim);
            }
            if step == 4 {
                for node in 1..=NODES {
                    world.crash(node);
                }
                for node in 1..=NODES {
                    world.start(node);
                }
            }
        }
        // An append applied by one group, then retried with the same sequence at the shard's
        // next owner: the session moved with the shard, so the retry gets the remembered reply.
        let key = b"retried".to_vec();
        let shard = key_to_shard(&key, SHARDS);
        seq += 1;
        let append = Request {
            client,
            seq,
            op: Op::Append {
                key: Bytes::from(key.clone()),
                value: Bytes::from_static(b"once;"),
            },
            consistency: Consistency::Linearizable,
        };
        assert_eq!(
            world.shard_call(&config, append.clone()),
            Ok(Reply::Done),
            "SEED={seed}"
        );
        config = world.change(ctl_client, &mut ctl_seq, join(&[2]));
        let elsewhere = if config.shards[shard as usize] == 1 {
            2
        } else {
            1
        };
        config = world.change(
            ctl_client,
            &mut ctl_seq,
            CtlOp::Move {
                shard,
                group: elsewhere,
            },
        );
        assert_eq!(
            world.shard_call(&config, append),
            Ok(Reply::Done),
            "SEED={seed}"
        );
        expected.insert(key, Bytes::from_static(b"once;"));
        for (key, value) in &expected {
            let get = Request {
                client: 0,
                seq: 0,
                op: Op::Get {
                    key: Bytes::from(key.clone()),
                },
                consistency: Consistency::Linearizable,
            };
            match world.shard_call(&config, get) {
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
        let mut settled = false;
        for _ in 0..500 {
            if world.shard_groups_settled_at(&config) {
                settled = true;
                break;
            }
            world.tick();
        }
        assert!(
            settled,
            "SEED={seed} the shard groups never settled at config {}",
            config.num
        );
        let deferred = world.installs_deferred_before
            + world
                .nodes
                .values()
                .map(|n| n.core.installs_deferred())
                .sum::<u64>();
        assert!(
            deferred > 0,
            "SEED={seed} no install waited for the turn's budget: the test does not exercise it"
        );
    }
}
