//! `RawNode`: the Raft core's whole interface. Inputs go in, a [`Ready`] comes out, the caller
//! does the I/O it lists and calls [`RawNode::advance`].
//!
//! # One Ready cycle
//! 1. Feed inputs: [`RawNode::tick`] every tick, [`RawNode::step`] for every message received,
//!    [`RawNode::propose`], [`RawNode::read_index`], [`RawNode::transfer_leader`],
//!    [`RawNode::persisted`] when a write completes, [`RawNode::compact`] after taking a snapshot.
//! 2. While [`RawNode::has_ready`], take [`RawNode::ready`] and handle it in this order:
//!    - send `messages` at once: they are the leader's replication traffic, which may go out
//!      before the leader's own append is durable (Raft thesis §10.2.1);
//!    - persist, as one ordered write: `snapshot` (it replaces the whole log), then `entries`
//!      (first drop every stored entry at or after `entries[0].index`, then append), then
//!      `hard_state`;
//!    - when that write is durable: send `persisted_messages` (votes and acknowledgements must
//!      never be sent before what they promise is on disk) and report
//!      [`RawNode::persisted`]`(index, term)` of the last entry written (or of the snapshot when
//!      there were no entries);
//!    - install `snapshot` into the state machine, then apply `committed_entries` in order;
//!      serve `read_states` once the applied index reaches theirs;
//!    - call [`RawNode::advance`].
//!
//!    Writes must become durable in the order their Readies were taken. The caller may take the
//!    next Ready before the previous write completes (the leader pipelines its own appends).
//!
//! ```
//! use bytes::Bytes;
//! use shardcore::raft::{Config, RawNode, Restore};
//!
//! // A single-member group elects itself after one election timeout.
//! let mut node = RawNode::new(Config::new(1, 7, vec![1], 42), Restore::default()).unwrap();
//! let mut applied = Vec::new();
//! for _ in 0..1000 {
//!     node.tick();
//!     if node.is_leader() && applied.is_empty() {
//!         node.propose(vec![Bytes::from_static(b"x=1")]).unwrap();
//!     }
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         // A real caller sends rd.messages now and writes rd.entries and rd.hard_state to disk.
//!         if let Some(last) = rd.entries.last() {
//!             node.persisted(last.index, last.term);
//!         }
//!         applied.extend(rd.committed_entries.iter().filter(|e| !e.data.is_empty()).cloned());
//!         node.advance();
//!     }
//!     if !applied.is_empty() {
//!         break;
//!     }
//! }
//! assert_eq!(applied[0].data, Bytes::from_static(b"x=1"));
//! ```

use bytes::Bytes;

use super::config::Config;
use super::machine::Raft;
use super::types::*;

/// The durable state a node restarts from: what the caller had persisted.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The last persisted snapshot, if any; the caller restores its state machine from it.
    pub snapshot: Option<Snapshot>,
    /// The persisted entries after the snapshot, contiguous and in order.
    pub entries: Vec<Entry>,
}

/// Everything the caller must do after feeding inputs. See the module docs for the order.
#[derive(Debug, Default)]
pub struct Ready {
    /// Role or leader changed (for logs, routing and invariant checks).
    pub soft_state: Option<SoftState>,
    /// Send now, before persisting.
    pub messages: Vec<Message>,
    /// A snapshot received from the leader: persist it (replacing the whole log), then install it.
    pub snapshot: Option<Snapshot>,
    /// Entries to persist: drop stored entries at or after `entries[0].index`, then append.
    pub entries: Vec<Entry>,
    /// Hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Send only once this Ready's writes are durable.
    pub persisted_messages: Vec<Message>,
    /// Entries to apply to the state machine, in order; all are committed and durable here.
    pub committed_entries: Vec<Entry>,
    /// Reads that may be served once the applied index reaches theirs.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// True when the Ready asks for a disk write.
    pub fn must_persist(&self) -> bool {
        self.snapshot.is_some() || !self.entries.is_empty() || self.hard_state.is_some()
    }
}

/// One member of one Raft group. Sans-I/O: it never blocks, reads a clock or touches a socket
/// or file; all randomness comes from `Config::seed`.
pub struct RawNode {
    raft: Raft,
    prev_soft: SoftState,
    prev_hard: HardState,
    /// The Ready handed out and not yet advanced: (last committed entry index handed out, snapshot
    /// index handed out).
    pending: Option<(Index, Option<Index>)>,
}

impl RawNode {
    /// Builds a member from its config and the durable state it had.
    pub fn new(config: Config, restore: Restore) -> Result<RawNode, ConfigError> {
        config.validate()?;
        let raft = Raft::new(config, restore)?;
        let prev_soft = raft.soft_state();
        let prev_hard = raft.hard_state();
        Ok(RawNode {
            raft,
            prev_soft,
            prev_hard,
            pending: None,
        })
    }

    /// Advances logical time by one tick: elections, heartbeats, check-quorum, retransmission.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Handles one message received from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        if message.group != self.raft.group() {
            return Err(StepError::WrongGroup);
        }
        if message.to != self.raft.id() || !self.raft.is_voter(message.from) {
            return Err(StepError::UnknownPeer);
        }
        self.raft.step(message);
        Ok(())
    }

    /// Proposes a batch of commands; on the leader they are appended as consecutive entries and
    /// the index of the last one is returned. Commitment is reported by applying it.
    pub fn propose(&mut self, batch: Vec<Bytes>) -> Result<Index, ProposeError> {
        self.raft.propose(batch)
    }

    /// Asks for a linearizable read point (Raft thesis §6.4). On success a [`ReadState`] with the
    /// same context appears in a later Ready, unless leadership changes first (then the caller
    /// retries after its own timeout). A follower forwards the request to its leader.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), ReadError> {
        self.raft.read_index(context)
    }

    /// Asks the leader to hand leadership to `to` (Raft thesis §3.10). Proposals are refused
    /// until the transfer completes or times out after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.raft.transfer_leader(to)
    }

    /// Reports that the log up to `index` (whose entry has `term`) is durable.
    pub fn persisted(&mut self, index: Index, term: Term) {
        self.raft.persisted(index, term);
    }

    /// Tells Raft that the application took a snapshot of its state at `index` (which it has
    /// applied): entries up to `index` are dropped, and `data` is what lagging followers get.
    /// The caller persists the snapshot itself before calling this.
    pub fn compact(&mut self, index: Index, data: Bytes) -> Result<(), CompactError> {
        self.raft.compact(index, data)
    }

    /// True when [`RawNode::ready`] has something to hand out.
    pub fn has_ready(&self) -> bool {
        assert!(self.pending.is_none(), "has_ready called before advance");
        self.raft.soft_state() != self.prev_soft
            || self.raft.hard_state() != self.prev_hard
            || self.raft.has_ready_work()
    }

    /// Takes everything the caller must do now. Call [`RawNode::advance`] once it is handled.
    pub fn ready(&mut self) -> Ready {
        assert!(self.pending.is_none(), "ready called twice without advance");
        let soft = self.raft.soft_state();
        let hard = self.raft.hard_state();
        let mut rd = self.raft.take_ready();
        if soft != self.prev_soft {
            rd.soft_state = Some(soft);
            self.prev_soft = soft;
        }
        if hard != self.prev_hard {
            rd.hard_state = Some(hard);
            self.prev_hard = hard;
        }
        let last_committed = rd.committed_entries.last().map(|e| e.index).unwrap_or(0);
        self.pending = Some((last_committed, rd.snapshot.as_ref().map(|s| s.meta.index)));
        rd
    }

    /// Acknowledges the last Ready: its snapshot is installed and its committed entries applied.
    pub fn advance(&mut self) {
        let (last_committed, snapshot) = self.pending.take().expect("advance without ready");
        if let Some(index) = snapshot {
            self.raft.applied_to(index);
        }
        if last_committed > 0 {
            self.raft.applied_to(last_committed);
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.raft.id()
    }
    /// The group's id.
    pub fn group(&self) -> GroupId {
        self.raft.group()
    }
    /// The current role.
    pub fn role(&self) -> Role {
        self.raft.role()
    }
    /// True when this node leads its group.
    pub fn is_leader(&self) -> bool {
        self.raft.role() == Role::Leader
    }
    /// The leader this node knows of (0: none).
    pub fn leader(&self) -> NodeId {
        self.raft.leader()
    }
    /// The current term.
    pub fn term(&self) -> Term {
        self.raft.hard_state().term
    }
    /// The current hard state (not necessarily durable yet).
    pub fn hard_state(&self) -> HardState {
        self.raft.hard_state()
    }
    /// The highest index known committed.
    pub fn commit_index(&self) -> Index {
        self.raft.hard_state().commit
    }
    /// The highest index applied (as acknowledged by `advance`).
    pub fn applied_index(&self) -> Index {
        self.raft.applied()
    }
    /// The highest index reported durable.
    pub fn persisted_index(&self) -> Index {
        self.raft.stable_index()
    }
    /// The last index in the log.
    pub fn last_index(&self) -> Index {
        self.raft.log().last_index()
    }
    /// The term of the entry at `index`, if it is in the log or is the snapshot's last index.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.raft.log().term_at(index)
    }
    /// The current snapshot's position (index 0 when there is none).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.raft.log().snapshot_meta()
    }
    /// The entries held after the snapshot, in order (for invariant checks and tests).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.raft.log().iter()
    }
}
