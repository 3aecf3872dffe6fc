//! The values that cross the Raft core's boundary: log entries, hard state, snapshots, messages,
//! and the errors its inputs can return.
//!
//! Everything here is plain data. The wire encoding lives in `protocol/`; the on-disk encoding in
//! `storage/`. Sizes that the transport or the simulator needs are estimated by
//! [`Message::approx_bytes`].

use bytes::Bytes;

/// A node's identity within the cluster. `0` is reserved for "none".
pub type NodeId = u64;
/// A Raft group's identity; a node hosts any number of groups.
pub type GroupId = u64;
/// A Raft term (Raft §5.1).
pub type Term = u64;
/// A log position; the first entry has index 1, index 0 is "before the log".
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A command proposed by the application.
    Normal,
    /// The empty entry a new leader appends so that it can commit entries of earlier terms
    /// (Raft §5.4.2, §8).
    Noop,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position in the log.
    pub index: Index,
    /// Command or no-op.
    pub kind: EntryKind,
    /// The command's bytes (empty for a no-op).
    pub data: Bytes,
}

impl Entry {
    /// Fixed per-entry overhead used in size estimates (term, index, kind, length).
    pub const OVERHEAD_BYTES: usize = 24;

    /// Approximate encoded size of the entry.
    pub fn approx_bytes(&self) -> usize {
        Self::OVERHEAD_BYTES + self.data.len()
    }
}

/// The state that must be durable before a node answers anyone (Raft §5, Figure 2 "persistent
/// state"), plus the commit index so that a restarted node can re-apply without waiting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term` (0: none).
    pub vote: NodeId,
    /// The highest index known committed.
    pub commit: Index,
}

impl HardState {
    /// Encoded size of a hard state record.
    pub const BYTES: usize = 24;
}

/// Identifies a snapshot: the state machine's state after applying every entry up to `index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
}

/// A whole snapshot: its position and the application's serialized state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Where the snapshot stands in the log.
    pub meta: SnapshotMeta,
    /// The application's bytes, opaque to Raft.
    pub data: Bytes,
}

/// The two kinds of election (Raft thesis §9.6: pre-vote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VoteKind {
    /// A trial election that changes no term and no vote; it only asks "would you vote for me?".
    Pre,
    /// A real election (Raft §5.2).
    Real,
}

/// Why a campaign starts: an election timeout, or a leadership transfer (TimeoutNow). Voters
/// honor a transfer campaign even while they still hear from a leader (Raft thesis §3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CampaignReason {
    /// The election timer fired.
    Timeout,
    /// The leader asked this node to take over.
    Transfer,
}

/// A message between two members of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The group this message belongs to.
    pub group: GroupId,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// The kinds of Raft message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// RequestVote (Raft §5.2) or PreVote (thesis §9.6).
    Vote {
        /// Pre-vote or real vote.
        kind: VoteKind,
        /// The candidate's last log index.
        last_index: Index,
        /// The candidate's last log term.
        last_term: Term,
        /// Set when the campaign comes from a leadership transfer.
        reason: CampaignReason,
    },
    /// The answer to a vote request.
    VoteResponse {
        /// Pre-vote or real vote.
        kind: VoteKind,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (Raft §5.3): entries following `prev_index`, plus the leader's commit.
    Append {
        /// The index just before the first entry.
        prev_index: Index,
        /// The term at `prev_index`.
        prev_term: Term,
        /// The entries, possibly none (then it only carries `commit`).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The answer to an Append.
    AppendResponse(AppendResponse),
    /// A heartbeat (Raft §5.2): keeps followers from campaigning, carries the commit index (capped
    /// at what the follower is known to hold) and the newest ReadIndex round (thesis §6.4).
    Heartbeat {
        /// min(leader commit, follower's match index).
        commit: Index,
        /// The newest ReadIndex round this heartbeat confirms leadership for (0: none).
        read_round: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// Echo of the heartbeat's `read_round`.
        read_round: u64,
    },
    /// One chunk of an InstallSnapshot transfer (Raft §7), sent in bounded pieces.
    SnapshotChunk {
        /// The snapshot being sent.
        meta: SnapshotMeta,
        /// Total size of the snapshot data.
        total_bytes: u64,
        /// Where this chunk starts in the data.
        offset: u64,
        /// The chunk's bytes.
        data: Bytes,
    },
    /// The answer to a snapshot chunk.
    SnapshotResponse {
        /// The snapshot the answer is about.
        index: Index,
        /// The offset the follower expects next; equals the total when done.
        next_offset: u64,
        /// The snapshot is installed and durable on the follower.
        done: bool,
    },
    /// Leadership transfer: "start a real election now" (Raft thesis §3.10).
    TimeoutNow,
    /// A follower forwards a ReadIndex request to its leader.
    ReadIndex {
        /// The caller's context, echoed in the answer.
        context: Bytes,
    },
    /// The leader's answer to a forwarded ReadIndex.
    ReadIndexResponse {
        /// The caller's context.
        context: Bytes,
        /// The read index.
        index: Index,
    },
}

/// The answer to an Append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResponse {
    /// The follower's log now matches the leader's up to `match_index`, durably.
    Accepted {
        /// The last index known to match.
        match_index: Index,
    },
    /// `prev_index`/`prev_term` did not match. The hint lets the leader skip a whole term per
    /// round trip (Raft §5.3 "fast backup", as etcd does it).
    Rejected {
        /// The `prev_index` that did not match.
        rejected_index: Index,
        /// The largest index at or below `rejected_index` whose term is ≤ the leader's
        /// `prev_term` (or the follower's last index when its log is shorter).
        hint_index: Index,
        /// The term of the entry at `hint_index`.
        hint_term: Term,
    },
}

impl MessageBody {
    /// Requests start an exchange; responses answer one. The simulator's fault model drops and
    /// delays the two classes differently (a dropped response means the handler already ran).
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            MessageBody::VoteResponse { .. }
                | MessageBody::AppendResponse(_)
                | MessageBody::HeartbeatResponse { .. }
                | MessageBody::SnapshotResponse { .. }
                | MessageBody::ReadIndexResponse { .. }
        )
    }

    /// A short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::Vote {
                kind: VoteKind::Pre,
                ..
            } => "PreVote",
            MessageBody::Vote {
                kind: VoteKind::Real,
                ..
            } => "Vote",
            MessageBody::VoteResponse {
                kind: VoteKind::Pre,
                ..
            } => "PreVoteResponse",
            MessageBody::VoteResponse {
                kind: VoteKind::Real,
                ..
            } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse(_) => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::SnapshotChunk { .. } => "SnapshotChunk",
            MessageBody::SnapshotResponse { .. } => "SnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}

impl Message {
    /// Fixed per-message overhead used in size estimates (header, group, ids, term, kind).
    pub const OVERHEAD_BYTES: usize = 40;

    /// Approximate encoded size: the header plus entries, snapshot bytes and contexts.
    pub fn approx_bytes(&self) -> usize {
        let body = match &self.body {
            MessageBody::Append { entries, .. } => {
                24 + entries.iter().map(Entry::approx_bytes).sum::<usize>()
            }
            MessageBody::SnapshotChunk { data, .. } => 32 + data.len(),
            MessageBody::ReadIndex { context } => 4 + context.len(),
            MessageBody::ReadIndexResponse { context, .. } => 12 + context.len(),
            _ => 16,
        };
        Self::OVERHEAD_BYTES + body
    }
}

/// The role a node plays in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Running a pre-vote round.
    PreCandidate,
    /// Running a real election.
    Candidate,
    /// Leads the group for its term.
    Leader,
}

/// State that is not persisted and changes rarely; reported in a Ready when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this node knows of (0: none).
    pub leader: NodeId,
    /// This node's role.
    pub role: Role,
    /// The current term (informational; the durable copy is in [`HardState`]).
    pub term: Term,
}

/// A completed ReadIndex request (Raft thesis §6.4): once the node has applied `index`, a read
/// tagged `context` may be served from the state machine and is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's context, as given to `read_index`.
    pub context: Bytes,
    /// Serve the read once `applied >= index`.
    pub index: Index,
}

/// Why a proposal was refused. Nothing was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node does not lead the group; `leader` is its best guess (0: unknown).
    NotLeader {
        /// The leader hint.
        leader: NodeId,
    },
    /// A leadership transfer is in progress; retry on the new leader.
    TransferInProgress,
    /// The batch is empty or one command exceeds `max_entry_bytes`.
    TooLarge,
    /// The named node is not a voter of this group (leadership transfer).
    UnknownNode,
}

/// Why a ReadIndex request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// No leader is known to forward the request to.
    NoLeader,
}

/// Why an input was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepError {
    /// The message is for another group.
    WrongGroup,
    /// The message is not addressed to this node, or comes from a node outside the group.
    UnknownPeer,
}

/// Why a compaction was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactError {
    /// The index is at or below the current snapshot: nothing to do.
    AlreadyCompacted,
    /// The index has not been applied yet.
    NotApplied,
}

/// Why a node could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting is out of range; the text says which.
    Invalid(&'static str),
    /// The restored state is inconsistent; the text says how.
    BadRestore(&'static str),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Invalid(what) => write!(f, "invalid raft config: {what}"),
            ConfigError::BadRestore(what) => write!(f, "inconsistent restored raft state: {what}"),
        }
    }
}

impl std::error::Error for ConfigError {}
