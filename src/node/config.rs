//! A node's configuration: a TOML file, overridden by command-line flags, every value with an
//! embedded default so that `shardcore server` alone runs a single-node cluster.
//!
//! ```toml
//! node_id = 1
//! cluster_id = "local"
//! client_addr = "127.0.0.1:7001"   # clients connect here (every core accepts)
//! peer_addr = "127.0.0.1:7101"     # peers connect to this port + core index
//! data_dir = "shardcore-data/node-1"
//! cores = 0                        # 0: every online CPU
//! pin = true                       # bind core i to CPU i (off for several nodes per machine)
//! groups = 8                       # KV groups in the cluster (same on every node)
//! shards = 64                      # the shard controller's shard count (same on every node)
//! sharded = false                  # true: groups 1..=groups are shard groups of the sharded KV
//! log_level = "info"
//!
//! [[peers]]                        # every other member; none: a single-node cluster
//! id = 2
//! peer_addr = "127.0.0.1:7102"
//! client_addr = "127.0.0.1:7002"
//!
//! [raft]
//! tick_ms = 10
//! election_ticks = 100
//! heartbeat_ticks = 10
//! lease_reads = true                # leaders answer reads from a lease (false: a round each)
//! preferred_leader = 0              # the node that should lead every group (0: none)
//!
//! [kv]
//! max_raft_state_bytes = 67108864
//! request_timeout_ms = 3000
//! shard_part_bytes = 262144        # a moving shard travels in parts of about this size
//!
//! [wal]
//! segment_bytes = 67108864
//! max_segments = 16
//! ```
//!
//! Parsing is pure (text in, value out); reading the file belongs to the caller.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::raft::NodeId;

/// Another member of the cluster.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id (1..).
    pub id: NodeId,
    /// Where its peer listener's core 0 is (core `k` listens on this port + `k`).
    pub peer_addr: SocketAddr,
    /// Where its clients connect (for leader hints given to clients).
    pub client_addr: SocketAddr,
}

/// Raft timing.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// Milliseconds per tick.
    pub tick_ms: u64,
    /// Election timeout in ticks (randomized over [this, 2 x this)).
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// Leaders answer linearizable reads from a lease, with no heartbeat round while a quorum
    /// acknowledged one within the last 4/5 of an election timeout (TiKV's default; it assumes
    /// clocks that run at about the same rate). False: every read takes a round (ReadIndex,
    /// etcd's default).
    pub lease_reads: bool,
    /// The node that should lead every group (0: none, leaders fall where elections put them).
    /// A leader elsewhere hands its group to it once it is up and caught up. One leader node is
    /// etcd's shape; `cluster local` picks node 1, since its nodes share the machine's CPUs
    /// and one leader node halved the server CPU per put there. Must be 0 or a member.
    pub preferred_leader: NodeId,
}

impl Default for RaftSection {
    /// 10 ms ticks, 1-2 s elections and 100 ms heartbeats, as etcd.
    fn default() -> RaftSection {
        RaftSection {
            tick_ms: 10,
            election_ticks: 100,
            heartbeat_ticks: 10,
            lease_reads: true,
            preferred_leader: 0,
        }
    }
}

/// The KV service's bounds.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KvSection {
    /// A group snapshots once its log holds this many bytes.
    pub max_raft_state_bytes: usize,
    /// A request unanswered for this long is answered `Timeout` (the client retries).
    pub request_timeout_ms: u64,
    /// Requests waiting per group at most.
    pub max_pending_requests: usize,
    /// Sharded nodes: a shard moving between groups travels in parts of at most this many
    /// bytes of keys and values (less when one log entry may hold less: see
    /// [`NodeConfig::sharded_hosting`]); a single key and value larger than this moves alone.
    pub shard_part_bytes: usize,
}

impl Default for KvSection {
    fn default() -> KvSection {
        let kv = crate::kv::KvServerConfig::default();
        KvSection {
            max_raft_state_bytes: kv.max_raft_state_bytes.unwrap_or(64 << 20),
            request_timeout_ms: kv.request_timeout_ticks * 10,
            max_pending_requests: kv.max_pending_requests,
            shard_part_bytes: crate::shardkv::server::DEFAULT_PART_BYTES,
        }
    }
}

/// The write-ahead log's sizes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WalSection {
    /// Bytes per segment file (a multiple of 4096).
    pub segment_bytes: u64,
    /// Segments on disk before the groups pinning the oldest are asked to snapshot.
    pub max_segments: usize,
}

impl Default for WalSection {
    fn default() -> WalSection {
        let wal = shardcore_storage::WalConfig::new();
        WalSection {
            segment_bytes: wal.segment_bytes,
            max_segments: wal.max_segments,
        }
    }
}

/// A node's whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (1..), unique in the cluster.
    pub node_id: NodeId,
    /// A name every member and client must agree on; a connection from another cluster is
    /// refused at its first frame.
    pub cluster_id: String,
    /// Where clients connect.
    pub client_addr: SocketAddr,
    /// Where peers connect (core `k` listens on this port + `k`).
    pub peer_addr: SocketAddr,
    /// Where the node keeps its logs and snapshots.
    pub data_dir: PathBuf,
    /// Executor threads, one per core; 0: every online CPU.
    pub cores: usize,
    /// Bind core `i` to the `i`-th CPU. Right for one node per machine; wrong for several nodes
    /// on one machine (their core 0s would all share CPU 0), so `cluster local` turns it off.
    pub pin: bool,
    /// KV groups in the cluster; must be the same on every node and never change.
    pub groups: u64,
    /// Shards in the shard controller's configurations (1..=4096). Every node hosts a replica
    /// of the controller's group, which starts from config 0 with this many shards; like
    /// `groups` it must be the same on every node and never change (a replica replaying its
    /// log from the start rebuilds config 0 from it).
    pub shards: usize,
    /// Groups `1..=groups` run the sharded KV (shard groups that serve the shards the
    /// controller's configurations give them and migrate shards between them) instead of the
    /// fixed-placement KV. Like `groups`, the same on every node and never changed: the two
    /// services' logs and snapshots differ, and the node refuses a data directory written in
    /// the other mode.
    pub sharded: bool,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// The other members.
    pub peers: Vec<PeerConfig>,
    /// Raft timing.
    pub raft: RaftSection,
    /// KV bounds.
    pub kv: KvSection,
    /// Log sizes.
    pub wal: WalSection,
}

impl Default for NodeConfig {
    /// A single-node cluster on 127.0.0.1:7001 with its data in `./shardcore-data/node-1`.
    fn default() -> NodeConfig {
        NodeConfig {
            node_id: 1,
            cluster_id: "local".to_string(),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 7101)),
            data_dir: PathBuf::from("shardcore-data/node-1"),
            cores: 0,
            pin: true,
            groups: 8,
            shards: crate::shardctl::DEFAULT_SHARDS,
            sharded: false,
            log_level: "info".to_string(),
            peers: Vec::new(),
            raft: RaftSection::default(),
            kv: KvSection::default(),
            wal: WalSection::default(),
        }
    }
}

impl NodeConfig {
    /// Parses a TOML document; absent keys keep their defaults, unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<NodeConfig, String> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Checks the values that parsing cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id must be at least 1".to_string());
        }
        if self.groups == 0 || self.groups > 4096 {
            return Err(format!("groups must be in 1..=4096, not {}", self.groups));
        }
        let max_shards = crate::shardctl::config::MAX_SHARDS;
        if self.shards == 0 || self.shards > max_shards {
            return Err(format!(
                "shards must be in 1..={max_shards}, not {}",
                self.shards
            ));
        }
        if self.kv.shard_part_bytes == 0 {
            return Err("kv.shard_part_bytes must be at least 1".to_string());
        }
        if self.raft.tick_ms == 0 || self.raft.heartbeat_ticks == 0 {
            return Err("raft.tick_ms and raft.heartbeat_ticks must be at least 1".to_string());
        }
        if self.raft.election_ticks <= self.raft.heartbeat_ticks {
            return Err(format!(
                "raft.election_ticks ({}) must exceed raft.heartbeat_ticks ({})",
                self.raft.election_ticks, self.raft.heartbeat_ticks
            ));
        }
        let mut ids: Vec<NodeId> = self.peers.iter().map(|p| p.id).collect();
        ids.push(self.node_id);
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) || ids[0] == 0 {
            return Err(format!(
                "node ids must be distinct and at least 1: this node {} and peers {:?}",
                self.node_id,
                self.peers.iter().map(|p| p.id).collect::<Vec<_>>()
            ));
        }
        let preferred = self.raft.preferred_leader;
        if preferred != 0 && ids.binary_search(&preferred).is_err() {
            return Err(format!(
                "raft.preferred_leader {preferred} is not a member (members: {ids:?}; 0: none)"
            ));
        }
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(format!(
                "log_level must be error, warn, info, debug or trace, not {:?}",
                self.log_level
            ));
        }
        Ok(())
    }

    /// Every member's id, ascending.
    pub fn voters(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.peers.iter().map(|p| p.id).collect();
        ids.push(self.node_id);
        ids.sort_unstable();
        ids
    }

    /// The KV replica's settings.
    pub fn kv_server(&self) -> crate::kv::KvServerConfig {
        crate::kv::KvServerConfig {
            max_raft_state_bytes: Some(self.kv.max_raft_state_bytes),
            max_pending_requests: self.kv.max_pending_requests,
            request_timeout_ticks: (self.kv.request_timeout_ms / self.raft.tick_ms).max(1),
            sessions: crate::kv::SessionLimits::default(),
        }
    }

    /// What the controller's replica starts from.
    pub fn ctl_settings(&self) -> crate::shardctl::CtlSettings {
        crate::shardctl::CtlSettings {
            shards: self.shards,
        }
    }

    /// The Raft settings every group starts from. One entry may take at most half a WAL
    /// segment: the WAL refuses a batch larger than a segment, and that refusal stops the node,
    /// whereas Raft refuses an oversized proposal to the client that made it. (With the default
    /// 64 MiB segments the Raft core's own 8 MiB bound is the smaller one.)
    pub fn raft_config(&self) -> crate::raft::Config {
        let mut raft = crate::raft::Config::new(self.node_id, 0, self.voters(), 0);
        raft.election_timeout_ticks = self.raft.election_ticks;
        raft.heartbeat_interval_ticks = self.raft.heartbeat_ticks;
        raft.lease_reads = self.raft.lease_reads;
        raft.preferred_leader = self.raft.preferred_leader;
        let half_segment = usize::try_from(self.wal.segment_bytes / 2).unwrap_or(usize::MAX);
        raft.max_entry_bytes = raft.max_entry_bytes.min(half_segment);
        raft
    }

    /// How shard groups run on a sharded node (`None` otherwise). The leader polls every
    /// 100 ms whatever the tick (the lab's period). A part's entry is bounded by what one log
    /// entry may carry ([`NodeConfig::raft_config`]) and by the sharded KV's own part bound;
    /// parts are cut to `kv.shard_part_bytes` or, when smaller, to that bound less the most a
    /// part's entry adds to its payload (its header and cursor key), so every part fits.
    pub fn sharded_hosting(&self) -> Option<super::core::ShardedHosting> {
        use crate::shardkv::command::{MAX_PART_OVERHEAD_BYTES, MAX_SHARD_PART_BYTES};
        if !self.sharded {
            return None;
        }
        let max_install_bytes = self.raft_config().max_entry_bytes.min(MAX_SHARD_PART_BYTES);
        let fitting_part_bytes = max_install_bytes.saturating_sub(MAX_PART_OVERHEAD_BYTES);
        let server = crate::shardkv::ShardKvServerConfig {
            server: self.kv_server(),
            poll_ticks: (100 / self.raft.tick_ms).max(1),
            part_bytes: self.kv.shard_part_bytes.min(fitting_part_bytes).max(1),
        };
        Some(super::core::ShardedHosting {
            server,
            max_install_bytes,
        })
    }

    /// The WAL's settings.
    pub fn wal_config(&self) -> shardcore_storage::WalConfig {
        let mut wal = shardcore_storage::WalConfig::new();
        wal.segment_bytes = self.wal.segment_bytes;
        wal.max_segments = self.wal.max_segments;
        wal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults_and_valid() {
        let config = NodeConfig::from_toml("").expect("parses");
        assert_eq!(config, NodeConfig::default());
        config.validate().expect("defaults are valid");
        assert_eq!(config.voters(), vec![1]);
    }

    #[test]
    fn module_doc_example_parses() {
        let text = "node_id = 1\ncluster_id = \"local\"\nclient_addr = \"127.0.0.1:7001\"\n\
            peer_addr = \"127.0.0.1:7101\"\ndata_dir = \"d\"\ncores = 2\ngroups = 8\n\
            [[peers]]\nid = 2\npeer_addr = \"127.0.0.1:7102\"\nclient_addr = \"127.0.0.1:7002\"\n\
            [raft]\ntick_ms = 10\nelection_ticks = 100\nheartbeat_ticks = 10\n\
            [kv]\nrequest_timeout_ms = 2000\n[wal]\nmax_segments = 8\n";
        let config = NodeConfig::from_toml(text).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.voters(), vec![1, 2]);
        assert_eq!(config.kv_server().request_timeout_ticks, 200);
        assert_eq!(config.wal_config().max_segments, 8);
    }

    #[test]
    fn mistakes_are_named() {
        let err = NodeConfig::from_toml("node_idd = 1").expect_err("unknown key");
        assert!(err.contains("node_idd"), "{err}");
        let stranger = NodeConfig::from_toml("[raft]\npreferred_leader = 2").expect("parses");
        let err = stranger.validate().expect_err("not a member");
        assert!(err.contains("raft.preferred_leader 2"), "{err}");
        let itself = NodeConfig::from_toml("[raft]\npreferred_leader = 1").expect("parses");
        itself.validate().expect("a member");
        assert_eq!(itself.raft_config().preferred_leader, 1);
        let mut config = NodeConfig::default();
        config.peers.push(PeerConfig {
            id: 1,
            peer_addr: "127.0.0.1:1".parse().unwrap(),
            client_addr: "127.0.0.1:2".parse().unwrap(),
        });
        assert!(config.validate().unwrap_err().contains("distinct"));
        config.peers.clear();
        config.groups = 0;
        assert!(config.validate().unwrap_err().contains("groups"));
        config.groups = 8;
        for bad in [0, 4097] {
            config.shards = bad;
            let err = config.validate().unwrap_err();
            assert!(err.contains("shards must be in 1..=4096"), "{err}");
        }
        config.shards = 4096;
        config.validate().expect("4096 shards are allowed");
        let parsed = NodeConfig::from_toml("shards = 16").expect("parses");
        assert_eq!(parsed.ctl_settings().shards, 16);
    }

    /// A sharded node's shard groups poll every 100 ms and install at most what one entry of
    /// its log may hold: half a segment when segments are small. Parts are cut to the setting,
    /// or smaller when an entry could not hold a part of that size with its header and cursor.
    #[test]
    fn sharded_hosting_follows_the_log_bounds() {
        use crate::shardkv::command::{MAX_PART_OVERHEAD_BYTES, MAX_SHARD_PART_BYTES};
        assert_eq!(NodeConfig::default().sharded_hosting(), None);
        let config = NodeConfig::from_toml("sharded = true\n[wal]\nsegment_bytes = 262144\n")
            .expect("parses");
        config.validate().expect("valid");
        let hosting = config.sharded_hosting().expect("sharded");
        assert_eq!(hosting.server.poll_ticks, 10);
        assert_eq!(hosting.max_install_bytes, 128 << 10);
        assert_eq!(config.raft_config().max_entry_bytes, 128 << 10);
        assert_eq!(
            hosting.server.part_bytes,
            (128 << 10) - MAX_PART_OVERHEAD_BYTES
        );
        let big = NodeConfig::from_toml("sharded = true").expect("parses");
        let hosting = big.sharded_hosting().expect("sharded");
        assert_eq!(hosting.max_install_bytes, MAX_SHARD_PART_BYTES);
        assert_eq!(hosting.server.part_bytes, 256 << 10, "the setting");
        let small = NodeConfig::from_toml("sharded = true\n[kv]\nshard_part_bytes = 4096\n")
            .expect("parses");
        let part_bytes = small.sharded_hosting().expect("sharded").server.part_bytes;
        assert_eq!(part_bytes, 4096);
    }
}
