//! The settings of one Raft group member, each with a named bound and the reason for its default.

use super::types::{ConfigError, GroupId, NodeId};

/// How one member of one group behaves. Time is counted in ticks: the caller decides how long a
/// tick is (the server uses 10 ms; the simulator's virtual clock does the same).
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The group this member belongs to.
    pub group: GroupId,
    /// Every voting member, this node included. Membership change is a later feature.
    pub voters: Vec<NodeId>,
    /// The base election timeout; each term draws a randomized timeout in
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)` (Raft §5.2).
    pub election_timeout_ticks: u32,
    /// A leader sends heartbeats this often; must be well below the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// Run a pre-vote round before a real election (Raft thesis §9.6), so a node that was cut off
    /// cannot disrupt the cluster by bumping the term when it rejoins.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an election timeout (thesis
    /// §6.2), and voters ignore campaigns while they hear from a leader.
    pub check_quorum: bool,
    /// Leader lease reads (thesis §6.4.1, TiKV's default): a leader answers a read at once, with
    /// no heartbeat round, while a quorum acknowledged a heartbeat it sent less than
    /// [`Config::lease_ticks`] ago. Safe because a voter that heard from a leader ignores
    /// campaigns for an election timeout (`check_quorum`, required), and ticks track real time
    /// (the caller ticks as many times as periods passed, and before answering a read). Off, or
    /// without `check_quorum`: every read takes a heartbeat round (ReadIndex).
    pub lease_reads: bool,
    /// The member that should lead (0: none). A leader that is not it hands leadership to it
    /// (a transfer, thesis §3.10) once per election timeout while it is a voter, was heard from
    /// in the last period and has every committed entry; it never hands leadership away again.
    /// One leader node for many groups is etcd's shape (one group, one leader) and TiKV's
    /// grant-leader scheduler: the followers get one Append frame per leader turn for every
    /// group and answer with one, and clients talk to one node. Where the nodes share CPUs
    /// (`cluster local`) that halved the server CPU per put.
    pub preferred_leader: NodeId,
    /// Upper bound on the entry bytes in one Append (batching). One entry larger than this still
    /// travels alone.
    pub max_message_bytes: usize,
    /// Upper bound on Appends in flight to one follower (pipelining).
    pub max_inflight_messages: usize,
    /// Upper bound on the bytes of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Upper bound on the bytes of one proposed command.
    pub max_entry_bytes: usize,
    /// Upper bound on the bytes of committed entries handed out in one Ready, so that applying a
    /// long backlog does not stall the caller (at least one entry is always handed out).
    pub max_apply_bytes: usize,
    /// Seeds this member's random stream (election timeouts). Give every member its own.
    pub seed: u64,
}

impl Config {
    /// Defaults that suit a 10 ms tick: heartbeat every 100 ms, elections after 1-2 s (as etcd),
    /// 1 MiB batches, 256 Appends in flight, 1 MiB snapshot chunks.
    pub fn new(id: NodeId, group: GroupId, voters: Vec<NodeId>, seed: u64) -> Config {
        Config {
            id,
            group,
            voters,
            election_timeout_ticks: 100,
            heartbeat_interval_ticks: 10,
            pre_vote: true,
            check_quorum: true,
            lease_reads: true,
            preferred_leader: 0,
            max_message_bytes: 1 << 20,
            max_inflight_messages: 256,
            snapshot_chunk_bytes: 1 << 20,
            max_entry_bytes: 8 << 20,
            max_apply_bytes: 16 << 20,
            seed,
        }
    }

    /// How long a quorum's acknowledgement of a heartbeat lets the leader answer reads, counted
    /// from the heartbeat's sending: 0 when lease reads are off. A voter that acknowledged it
    /// ignores campaigns for `election_timeout_ticks` of its own ticks after receiving it (and a
    /// leader elected without it needs it); the lease ends a fifth earlier, less one tick for the
    /// phase of two ticking clocks, which covers clock rate differences far beyond real ones.
    pub fn lease_ticks(&self) -> u64 {
        if !self.lease_reads || !self.check_quorum {
            return 0;
        }
        let timeout = u64::from(self.election_timeout_ticks);
        (timeout - timeout / 5).saturating_sub(1)
    }

    /// Checks every bound; a node is only built from a valid config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what| Err(ConfigError::Invalid(what));
        if self.id == 0 {
            return bad("id 0 is reserved for 'none'");
        }
        if !self.voters.contains(&self.id) {
            return bad("voters must include this node");
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() || sorted.contains(&0) {
            return bad("voters must be distinct and non-zero");
        }
        if self.heartbeat_interval_ticks == 0 {
            return bad("heartbeat_interval_ticks must be at least 1");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return bad("election_timeout_ticks must exceed heartbeat_interval_ticks");
        }
        if self.max_message_bytes == 0 || self.max_inflight_messages == 0 {
            return bad("max_message_bytes and max_inflight_messages must be at least 1");
        }
        if self.snapshot_chunk_bytes == 0 || self.max_entry_bytes == 0 {
            return bad("snapshot_chunk_bytes and max_entry_bytes must be at least 1");
        }
        if self.max_apply_bytes == 0 {
            return bad("max_apply_bytes must be at least 1");
        }

        Ok(())
    }
}
