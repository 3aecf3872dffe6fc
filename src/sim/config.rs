//! What a simulated cluster is made of: node and group counts, the Raft tuning every member gets,
//! the application's snapshot policy, the network's and the disk's fault settings, and tracing.

use super::cluster::{ControllerConfig, ShardKvSimConfig};
use crate::kv::KvServerConfig;
use crate::raft::{Config, GroupId, NodeId};

/// The simulator's Raft settings for every member: [`Config::new`]'s, with 10 ms ticks,
/// heartbeats every 100 ms and elections after 500-1000 ms, so scenarios finish in few virtual
/// seconds. Not shorter: Raft needs broadcast time well below the election timeout (§5.6), and
/// check-quorum needs a quorum's answer within one election timeout. Under the lab's long
/// reordering (2/3 of answers 200-2200 ms late) a 300 ms timeout sees only 3 heartbeat answers
/// per follower per window, so healthy leaders stepped down every few seconds and
/// Figure8Unreliable missed its 10 s agreement bound on 1 seed in 3000; at 500 ms none of 3000
/// did. 64 KiB batches and 1 KiB snapshot chunks, small enough that batching and chunking
/// happen in ordinary tests. The identity fields (id, group, voters, seed) are placeholders that
/// [`SimConfig::member_config`] fills in per member.
pub fn sim_raft_defaults() -> Config {
    let mut config = Config::new(1, 1, vec![1], 0);
    config.election_timeout_ticks = 50;
    config.heartbeat_interval_ticks = 10;
    config.max_message_bytes = 64 << 10;
    config.snapshot_chunk_bytes = 1 << 10;
    config.max_apply_bytes = 64 << 10;
    config
}

/// How much of the trace a cluster keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// Keep the last `n` events only; failures print them. Cheap enough to leave on in tests.
    Tail(usize),
    /// Keep every event (the CLI prints them all).
    Full,
}

/// Everything a simulated cluster is built from. Every random choice derives from `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The one seed that reproduces the run.
    pub seed: u64,
    /// Node count; ids are `1..=nodes`.
    pub nodes: usize,
    /// Group count; ids are `1..=groups`. Every node is a voter of every group unless
    /// [`SimConfig::group_members`] says otherwise.
    pub groups: usize,
    /// The voters of each group, indexed by group - 1 (a group not listed, or an empty list:
    /// every node). A node hosts only the groups it is a voter of, so a whole group can be
    /// crashed by crashing its nodes (the lab's "3 groups × 3 nodes + controller").
    pub group_members: Vec<Vec<NodeId>>,
    /// Raft settings for every member (its identity fields are filled in per member; tests
    /// change the others to override them).
    pub raft: Config,
    /// Take an application snapshot (and compact the log) whenever the applied index has moved
    /// this far past the last snapshot. `None`: never.
    pub snapshot_every: Option<u64>,
    /// Extra bytes appended to every snapshot, so that tests can make snapshots span many chunks.
    pub snapshot_padding_bytes: usize,
    /// Start with the lab's unreliable network (delays up to 26 ms, 10% loss).
    pub unreliable: bool,
    /// Start with long reordering of responses (200-2200 ms extra for about two thirds).
    pub long_reordering: bool,
    /// Virtual time between two ticks of a node.
    pub tick_us: u64,
    /// Shortest latency of one disk write.
    pub disk_latency_min_us: u64,
    /// Longest latency of one disk write.
    pub disk_latency_max_us: u64,
    /// How much trace to keep.
    pub trace: TraceMode,
    /// Also trace every message sent (verbose; for debugging a seed).
    pub trace_messages: bool,
    /// Run the KV service on every member of every group, with these settings (its
    /// `max_raft_state_bytes` also triggers snapshots). `None`: Raft and the chain-hash
    /// application only.
    pub kv: Option<KvServerConfig>,
    /// Run the shard controller on one group (instead of KV there). `None`: no controller.
    pub controller: Option<ControllerConfig>,
    /// Run the sharded KV on every group but the controller's (instead of KV there).
    pub shardkv: Option<ShardKvSimConfig>,
}

impl SimConfig {
    /// A cluster of `nodes` nodes and one group on a reliable network, with the sim defaults.
    pub fn new(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            groups: 1,
            raft: sim_raft_defaults(),
            snapshot_every: None,
            snapshot_padding_bytes: 0,
            unreliable: false,
            long_reordering: false,
            tick_us: 10_000,
            disk_latency_min_us: 100,
            disk_latency_max_us: 2_000,
            trace: TraceMode::Tail(64),
            trace_messages: false,
            kv: None,
            controller: None,
            shardkv: None,
            group_members: Vec::new(),
        }
    }

    /// The full config of member `id` of `group`: [`SimConfig::raft`] with its identity.
    pub fn member_config(
        &self,
        id: NodeId,
        group: GroupId,
        voters: Vec<NodeId>,
        seed: u64,
    ) -> Config {
        Config {
            id,
            group,
            voters,
            seed,
            ..self.raft.clone()
        }
    }

    /// The node ids, `1..=nodes`.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> {
        1..=self.nodes as NodeId
    }

    /// The voters of `group`, in id order.
    pub fn members(&self, group: GroupId) -> Vec<NodeId> {
        match self.group_members.get(group as usize - 1) {
            Some(list) if !list.is_empty() => {
                let mut list = list.clone();
                list.sort_unstable();
                list
            }
            _ => self.node_ids().collect(),
        }
    }

    /// True when `node` is a voter of `group` (and so hosts a member of it).
    pub fn hosts(&self, node: NodeId, group: GroupId) -> bool {
        match self.group_members.get(group as usize - 1) {
            Some(list) if !list.is_empty() => list.contains(&node),
            _ => true,
        }
    }

    /// The groups `node` hosts, in id order.
    pub fn groups_of(&self, node: NodeId) -> Vec<GroupId> {
        self.group_ids().filter(|&g| self.hosts(node, g)).collect()
    }

    /// The group ids, `1..=groups`.
    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> {
        1..=self.groups as GroupId
    }
}
