//! The Raft state machine of one group member: roles, elections (with pre-vote and
//! check-quorum), log replication (batched, pipelined, with fast backup), commitment, snapshots
//! streamed in chunks, ReadIndex and leadership transfer.
//!
//! Handlers follow one pattern: `step` settles the term first (Raft §5.1: a newer term turns
//! anyone into a follower; an older one is answered or ignored), then dispatches on the message
//! kind and the role. Outputs accumulate in buffers that `take_ready` hands to the caller.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::config::Config;
use super::log::RaftLog;
use super::node::{Ready, Restore};
use super::progress::{Progress, ReplicationState};
use super::types::*;
use crate::rng::Rng;

/// A ReadIndex request waiting for its heartbeat round to be acknowledged by a quorum.
#[derive(Debug)]
struct PendingRead {
    round: u64,
    index: Index,
    context: Bytes,
    /// Who asked: this node, or a follower that forwarded the request.
    from: NodeId,
}

/// A snapshot being received in chunks.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    data: Vec<u8>,
}

/// Whether an Append with no entries is worth sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Empty {
    /// Send it anyway: it carries the commit index or probes for the follower's log.
    Send,
    /// Only send when there are entries.
    Skip,
}

/// One member of one Raft group.
pub struct Raft {
    cfg: Config,
    rng: Rng,
    role: Role,
    term: Term,
    vote: NodeId,
    leader: NodeId,
    log: RaftLog,
    /// The latest snapshot this node holds (taken locally or installed), sent to lagging peers.
    snapshot: Snapshot,

    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,

    /// Candidate: answers received in the current campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Leader: one record per peer (never for itself: its match is the durable log).
    progress: BTreeMap<NodeId, Progress>,
    /// Leader: the peer leadership is being handed to (0: none), and for how long.
    transferee: NodeId,
    transfer_elapsed: u32,

    /// Leader: the newest ReadIndex round handed out (monotonic across terms). Every heartbeat
    /// broadcast is a round of its own, so an acknowledgement dates the heartbeat it answers.
    read_round: u64,
    /// Ticks since this member started (every role); lease times are counted in them.
    ticks: u64,
    /// This member restarted with state (a term): it may have acknowledged a heartbeat just
    /// before, so with lease reads it ignores campaigns for its first election timeout.
    restarted: bool,
    /// Leader: the tick each round not yet confirmed by a quorum was broadcast at, oldest
    /// first (at most [`MAX_TRACKED_ROUNDS`]).
    round_sent: VecDeque<(u64, u64)>,
    /// Leader: when the newest round a quorum confirmed was broadcast: reads are answered at
    /// once until `lease_from + cfg.lease_ticks()`.
    lease_from: Option<u64>,
    /// Leader: this term's leadership is being or was handed over (TimeoutNow sent). A transfer
    /// campaign is honored inside a lease, so this leader answers no more reads from its lease.
    lease_revoked: bool,
    pending_reads: VecDeque<PendingRead>,
    /// Leader: reads that arrived before the leader committed an entry of its own term (thesis
    /// §6.4 step 1: until then it does not know the commit index).
    reads_before_commit: Vec<(Bytes, NodeId)>,

    incoming_snapshot: Option<IncomingSnapshot>,

    // Buffers for the next Ready.
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    snapshot_to_install: Option<Snapshot>,
    /// Leader: new entries to broadcast, a new commit index, a read round to broadcast. Set by
    /// inputs and served once per Ready, so that everything proposed between two Readies travels
    /// in one Append per follower (batching).
    pending_append: bool,
    pending_commit: bool,
    pending_read_round: bool,
    /// Leader: the commit index advanced and a follower may not have heard; at the next tick,
    /// each follower that no Append or heartbeat told since gets a commit-only Append.
    commit_broadcast_due: bool,
}

impl Raft {
    pub fn new(cfg: Config, restore: Restore) -> Result<Raft, ConfigError> {
        let snapshot = restore.snapshot.unwrap_or_default();
        check_restore(&restore.hard_state, &snapshot.meta, &restore.entries)?;
        let log = RaftLog::restored(snapshot.meta, restore.entries, restore.hard_state.commit);
        let rng = Rng::stream(cfg.seed, "raft-election-timeout");
        let mut raft = Raft {
            rng,
            role: Role::Follower,
            term: restore.hard_state.term,
            vote: restore.hard_state.vote,
            leader: 0,
            log,
            snapshot,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            transferee: 0,
            transfer_elapsed: 0,
            read_round: 0,
            ticks: 0,
            restarted: restore.hard_state.term > 0,
            round_sent: VecDeque::new(),
            lease_from: None,
            lease_revoked: false,
            pending_reads: VecDeque::new(),
            reads_before_commit: Vec::new(),
            incoming_snapshot: None,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            snapshot_to_install: None,
            pending_append: false,
            pending_commit: false,
            commit_broadcast_due: false,
            pending_read_round: false,
            cfg,
        };
        raft.reset_election_timer();
        Ok(raft)
    }

    // ----- accessors -----

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn group(&self) -> GroupId {
        self.cfg.group
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> NodeId {
        self.leader
    }
    pub fn applied(&self) -> Index {
        self.log.applied
    }
    pub fn stable_index(&self) -> Index {
        self.log.stable()
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.cfg.voters.contains(&id)
    }
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
            term: self.term,
        }
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }
    fn quorum(&self) -> usize {
        self.cfg.voters.len() / 2 + 1
    }
    fn peers(&self) -> Vec<NodeId> {
        self.cfg
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.cfg.id)
            .collect()
    }

    // ----- inputs -----

    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.election_elapsed >= self.randomized_election_timeout {
                self.campaign(CampaignReason::Timeout);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.transferee != 0 {
            self.transfer_elapsed += 1;
            // Thesis §3.10: a transfer that has not completed within an election timeout is
            // abandoned so the leader accepts proposals again.
            if self.transfer_elapsed >= self.cfg.election_timeout_ticks {
                self.transferee = 0;
            }
        }
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.election_elapsed = 0;
            let preferred_ready = self.preferred_leader_ready();
            // Thesis §6.2: a leader that has not heard from a quorum within an election timeout
            // may have been deposed without knowing it; it steps down so clients go elsewhere.
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                let term = self.term;
                self.become_follower(term, 0);
                return;
            }
            if preferred_ready {
                // Cannot fail: the leader checked it is a leader and the target a voter.
                let _ = self.transfer_leader(self.cfg.preferred_leader);
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        self.send_due_commits();
    }

    /// Tells each follower in Replicate that has not heard the current commit index (from an
    /// Append or a heartbeat) with a commit-only Append, once per tick at most. A commit-only
    /// Append sent at once, as etcd does, costs each follower a wake-up, a receive and a Ready
    /// per commit: at one client that was two of the eleven thread wake-ups of every put, off
    /// its critical path but on the same two CPUs (p50 0.63-0.74 -> 0.53 ms, server CPU per
    /// put -25%). Under load the next Append carries the commit; when idle a follower applies
    /// at most a tick (10 ms) later. Nothing waits for a follower to apply: clients are
    /// answered by the leader, and a sharded group's questions to a lagging replica are asked
    /// again at the next poll.
    fn send_due_commits(&mut self) {
        if !std::mem::take(&mut self.commit_broadcast_due) {
            return;
        }
        let committed = self.log.committed;
        for peer in self.peers() {
            let pr = &self.progress[&peer];
            if pr.commit_sent < committed && pr.state == ReplicationState::Replicate {
                self.send_append(peer, Empty::Send);
            }
        }
    }

    /// Whether this leader should hand leadership to the preferred leader now
    /// ([`Config::preferred_leader`]): it is another voter, no transfer is under way, it was
    /// heard from in this check period (read before the period is reset), and it has every
    /// committed entry, so the transfer's catch-up (during which proposals wait) is short.
    fn preferred_leader_ready(&self) -> bool {
        let to = self.cfg.preferred_leader;
        if to == 0 || to == self.cfg.id || self.transferee != 0 || !self.is_voter(to) {
            return false;
        }
        self.progress.get(&to).is_some_and(|pr| {
            pr.recent_active
                && pr.state == ReplicationState::Replicate
                && pr.match_index >= self.log.committed
        })
    }

    /// Counts this leader and every peer heard from since the last check, then starts a new
    /// check period.
    fn quorum_recently_active(&mut self) -> bool {
        let mut active = 1;
        for pr in self.progress.values_mut() {
            if pr.recent_active {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= self.quorum()
    }

    pub fn propose(&mut self, batch: Vec<Bytes>) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee != 0 {
            return Err(ProposeError::TransferInProgress);
        }
        if batch.is_empty() || batch.iter().any(|d| d.len() > self.cfg.max_entry_bytes) {
            return Err(ProposeError::TooLarge);
        }
        for data in batch {
            let index = self.log.last_index() + 1;
            self.log.append_new(Entry {
                term: self.term,
                index,
                kind: EntryKind::Normal,
                data,
            });
        }
        self.pending_append = true;
        Ok(self.log.last_index())
    }

    pub fn read_index(&mut self, context: Bytes) -> Result<(), ReadError> {
        if self.role == Role::Leader {
            self.leader_read(context, self.cfg.id);
            return Ok(());
        }
        if self.leader == 0 {
            return Err(ReadError::NoLeader);
        }
        let to = self.leader;
        self.send(to, self.term, MessageBody::ReadIndex { context });
        Ok(())
    }

    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.is_voter(to) {
            return Err(ProposeError::UnknownNode);
        }
        if to == self.cfg.id || to == self.transferee {
            return Ok(());
        }
        self.transferee = to;
        self.transfer_elapsed = 0;
        // Thesis §3.10: bring the target up to date first, then tell it to campaign at once.
        // A delayed TimeoutNow may start the target's campaign at any time later in this term.
        self.lease_revoked = true;
        if self.progress[&to].match_index == self.log.last_index() {
            self.send(to, self.term, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, Empty::Send);
        }
        Ok(())
    }

    pub fn persisted(&mut self, index: Index, term: Term) {
        if self.log.stable_to(index, term) && self.role == Role::Leader {
            // Thesis §10.2.1: the leader's own append counts toward the quorum only now.
            self.maybe_commit();
        }
    }

    pub fn compact(&mut self, index: Index, data: Bytes) -> Result<(), CompactError> {
        if index <= self.log.snapshot_meta().index {
            return Err(CompactError::AlreadyCompacted);
        }
        if index > self.log.applied {
            return Err(CompactError::NotApplied);
        }
        let term = self.log.term_at(index).expect("applied entry is held");
        let meta = SnapshotMeta { index, term };
        self.log.compact_to(meta);
        self.snapshot = Snapshot { meta, data };
        Ok(())
    }

    pub fn applied_to(&mut self, index: Index) {
        assert!(index <= self.log.committed, "applied {index} beyond commit");
        self.log.applied = self.log.applied.max(index);
    }

    // ----- Ready -----

    pub fn has_ready_work(&self) -> bool {
        !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || self.snapshot_to_install.is_some()
            || self.log.has_unstable()
            || self.log.has_next_committed()
            || self.pending_append
            || self.pending_commit
            || self.pending_read_round
    }

    pub fn take_ready(&mut self) -> Ready {
        self.flush_broadcasts();
        Ready {
            soft_state: None,
            messages: std::mem::take(&mut self.messages),
            snapshot: self.snapshot_to_install.take(),
            entries: self.log.take_unstable(),
            hard_state: None,
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries: self.log.next_committed(self.cfg.max_apply_bytes),
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// Sends what inputs since the last Ready asked to broadcast, once each.
    fn flush_broadcasts(&mut self) {
        if self.role != Role::Leader {
            self.pending_append = false;
            self.pending_commit = false;
            self.pending_read_round = false;
            self.commit_broadcast_due = false;
            return;
        }
        if std::mem::take(&mut self.pending_append) {
            for peer in self.peers() {
                self.send_append(peer, Empty::Skip);
            }
        }
        if std::mem::take(&mut self.pending_commit) {
            // Followers learn the new commit index from the Appends above when there were any;
            // the rest wait for the next tick (see `send_due_commits`).
            self.commit_broadcast_due = true;
        }
        if std::mem::take(&mut self.pending_read_round) {
            self.broadcast_heartbeat();
        }
    }

    // ----- sending -----

    /// Queues a message. Only messages that promise something this Ready writes wait until the
    /// write is durable: a granted vote (Raft §5.2: at most one vote per term, even across a
    /// crash), a candidate's vote request (it votes for itself), an accepted Append or a finished
    /// snapshot (the leader counts them toward commitment). Everything else (the leader's
    /// replication traffic, thesis §10.2.1; pre-votes; refusals; heartbeat answers; forwarded
    /// reads) goes out at once and does not queue behind other groups' writes.
    fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let promises_durable_state = match &body {
            MessageBody::Vote { kind, .. } => *kind == VoteKind::Real,
            MessageBody::VoteResponse { kind, granted } => *kind == VoteKind::Real && *granted,
            MessageBody::AppendResponse(AppendResponse::Accepted { .. }) => true,
            MessageBody::SnapshotResponse { done, .. } => *done,
            _ => false,
        };
        let immediate = !promises_durable_state;
        let message = Message {
            group: self.cfg.group,
            from: self.cfg.id,
            to,
            term,
            body,
        };
        if immediate {
            self.messages.push(message);
        } else {
            self.persisted_messages.push(message);
        }
    }

    /// Sends the follower what it needs next: entries (pipelined in Replicate), a probe, or the
    /// next snapshot chunk.
    fn send_append(&mut self, to: NodeId, empty: Empty) {
        let max_inflight = self.cfg.max_inflight_messages;
        let mut empty = empty;
        loop {
            let pr = self.progress.get_mut(&to).expect("progress for every peer");
            if let ReplicationState::Snapshot {
                chunk_in_flight, ..
            } = pr.state
            {
                if !chunk_in_flight {
                    self.send_snapshot_chunk(to);
                }
                return;
            }
            if pr.is_paused(max_inflight) {
                return;
            }
            let prev_index = pr.next_index - 1;
            let Some(prev_term) = self.log.term_at(prev_index) else {
                // Raft §7: the entries this follower needs were compacted away.
                let meta = self.snapshot.meta;
                pr.become_snapshot(meta);
                self.send_snapshot_chunk(to);
                return;
            };
            let entries = if pr.next_index <= self.log.last_index() {
                self.log.slice(pr.next_index, self.cfg.max_message_bytes)
            } else {
                Vec::new()
            };
            if entries.is_empty() && empty == Empty::Skip {
                return;
            }
            let last = entries.last().map_or(prev_index, |e| e.index);
            let commit = self.log.committed;
            pr.commit_sent = commit;
            if !entries.is_empty() {
                pr.sent_entries(last);
            } else if let ReplicationState::Probe { paused } = &mut pr.state {
                *paused = true;
            }
            let replicating = pr.state == ReplicationState::Replicate;
            let more = replicating && last < self.log.last_index();
            let body = MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            };
            self.send(to, self.term, body);
            // Pipelining: keep sending batches until the window is full or the log is sent.
            if !more {
                return;
            }
            empty = Empty::Skip;
        }
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let chunk_bytes = self.cfg.snapshot_chunk_bytes as u64;
        let current = self.snapshot.meta;
        let total = self.snapshot.data.len() as u64;
        let pr = self.progress.get_mut(&to).expect("progress for every peer");
        let ReplicationState::Snapshot {
            meta,
            offset,
            chunk_in_flight,
        } = &mut pr.state
        else {
            unreachable!("snapshot chunk outside the snapshot state");
        };
        if *meta != current {
            // A newer snapshot replaced the one being streamed: start over with it.
            *meta = current;
            *offset = 0;
        }
        let start = (*offset).min(total);
        let end = (start + chunk_bytes).min(total);
        *chunk_in_flight = true;
        let data = self.snapshot.data.slice(start as usize..end as usize);
        let body = MessageBody::SnapshotChunk {
            meta: current,
            total_bytes: total,
            offset: start,
            data,
        };
        self.send(to, self.term, body);
    }

    fn broadcast_heartbeat(&mut self) {
        self.pending_read_round = false;
        self.read_round += 1;
        let round = self.read_round;
        if self.round_sent.len() >= MAX_TRACKED_ROUNDS {
            // Unanswered for this long: dropping the oldest only ever shortens a lease.
            self.round_sent.pop_front();
        }
        self.round_sent.push_back((round, self.ticks));
        for peer in self.peers() {
            let pr = self
                .progress
                .get_mut(&peer)
                .expect("progress for every peer");
            // Raft §5.3: only what the follower is known to hold may be marked committed there.
            let commit = pr.match_index.min(self.log.committed);
            pr.commit_sent = pr.commit_sent.max(commit);
            // A snapshot chunk unanswered for a whole heartbeat interval is sent again.
            let mut resend_chunk = false;
            if let ReplicationState::Snapshot {
                chunk_in_flight, ..
            } = &mut pr.state
            {
                if !pr.snapshot_answered {
                    *chunk_in_flight = false;
                    resend_chunk = true;
                }
                pr.snapshot_answered = false;
            }
            self.send(
                peer,
                self.term,
                MessageBody::Heartbeat {
                    commit,
                    read_round: round,
                },
            );
            if resend_chunk {
                self.send_snapshot_chunk(peer);
            }
        }
    }

    // ----- roles -----

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.cfg.election_timeout_ticks as u64;
        self.randomized_election_timeout = self.rng.range(base, 2 * base) as u32;
    }

    /// Leaves whatever role for follower in `term`; a new term clears the vote (Raft §5.1).
    fn become_follower(&mut self, term: Term, leader: NodeId) {
        assert!(term >= self.term, "terms never go backwards");
        if term > self.term {
            self.term = term;
            self.vote = 0;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.leave_leadership();
        self.reset_election_timer();
    }

    /// Drops leader-only state; reads in flight are abandoned (callers retry after a timeout).
    fn leave_leadership(&mut self) {
        self.progress.clear();
        self.transferee = 0;
        self.pending_reads.clear();
        self.reads_before_commit.clear();
        self.pending_append = false;
        self.pending_commit = false;
        self.pending_read_round = false;
        self.commit_broadcast_due = false;
        self.heartbeat_elapsed = 0;
        self.round_sent.clear();
        self.lease_from = None;
        self.lease_revoked = false;
    }

    fn campaign(&mut self, reason: CampaignReason) {
        if self.cfg.pre_vote && reason == CampaignReason::Timeout {
            // Thesis §9.6: ask first whether we could win; change no term until we know.
            self.role = Role::PreCandidate;
            self.leader = 0;
            self.leave_leadership();
            self.reset_election_timer();
            self.votes.clear();
            self.request_votes(VoteKind::Pre, self.term + 1, reason);
        } else {
            self.become_candidate(reason);
        }
    }

    /// Raft §5.2: a new term, a vote for ourselves, and vote requests to every peer.
    fn become_candidate(&mut self, reason: CampaignReason) {
        self.term += 1;
        self.vote = self.cfg.id;
        self.role = Role::Candidate;
        self.leader = 0;
        self.leave_leadership();
        self.reset_election_timer();
        self.votes.clear();
        self.request_votes(VoteKind::Real, self.term, reason);
    }

    fn request_votes(&mut self, kind: VoteKind, term: Term, reason: CampaignReason) {
        self.votes.insert(self.cfg.id, true);
        if self.tally() == Tally::Won {
            self.on_campaign_won(kind, reason);
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers() {
            let body = MessageBody::Vote {
                kind,
                last_index,
                last_term,
                reason,
            };
            self.send(peer, term, body);
        }
    }

    fn on_campaign_won(&mut self, kind: VoteKind, reason: CampaignReason) {
        match kind {
            VoteKind::Pre => self.become_candidate(reason),
            VoteKind::Real => self.become_leader(),
        }
    }

    fn tally(&self) -> Tally {
        let granted = self.votes.values().filter(|&&g| g).count();
        let rejected = self.votes.len() - granted;
        if granted >= self.quorum() {
            Tally::Won
        } else if rejected > self.cfg.voters.len() - self.quorum() {
            Tally::Lost
        } else {
            Tally::Pending
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader = self.cfg.id;
        self.leave_leadership();
        self.election_elapsed = 0;
        let next = self.log.last_index() + 1;
        for peer in self.peers() {
            self.progress.insert(peer, Progress::new(next));
        }
        // Raft §8: a no-op entry of the new term lets the leader commit what earlier terms left
        // (§5.4.2 forbids counting replicas of older entries) and learn the commit index.
        let index = self.log.last_index() + 1;
        self.log.append_new(Entry {
            term: self.term,
            index,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        });
        self.pending_append = true;
    }

    // ----- step -----

    pub fn step(&mut self, m: Message) {
        if m.from == self.cfg.id {
            return;
        }
        if m.term > self.term {
            if !self.accept_higher_term(&m) {
                return;
            }
        } else if m.term < self.term {
            self.answer_stale(&m);
            return;
        }
        match m.body {
            MessageBody::Vote {
                kind,
                last_index,
                last_term,
                ..
            } => self.handle_vote(m.from, m.term, kind, last_index, last_term),
            MessageBody::TimeoutNow => {
                if self.role == Role::Follower {
                    // Thesis §3.10: the leader asks us to take over; skip pre-vote.
                    self.campaign(CampaignReason::Transfer);
                }
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    /// A message from a newer term. Returns whether to go on handling it.
    fn accept_higher_term(&mut self, m: &Message) -> bool {
        if let MessageBody::Vote { reason, .. } = m.body {
            // Thesis §4.2.3 / §6.2: while we hear from a leader, a campaign is most likely from a
            // node that was cut off; ignoring it keeps it from deposing a working leader. A
            // transfer campaign was asked for by the leader itself, so it is honored.
            let in_lease = self.cfg.check_quorum
                && self.leader != 0
                && self.election_elapsed < self.cfg.election_timeout_ticks;
            // With lease reads, a member that restarted may have acknowledged a leader's
            // heartbeat just before: it ignores campaigns for its first election timeout too,
            // or a leader could still be answering reads from a lease it helped grant.
            let just_started = self.restarted
                && self.cfg.lease_ticks() > 0
                && self.ticks < u64::from(self.cfg.election_timeout_ticks);
            let in_lease = in_lease || (self.cfg.check_quorum && just_started);
            if in_lease && reason == CampaignReason::Timeout {
                return false;
            }
        }
        match m.body {
            // A pre-vote request or a granted pre-vote changes no term (thesis §9.6).
            MessageBody::Vote {
                kind: VoteKind::Pre,
                ..
            } => {}
            MessageBody::VoteResponse {
                kind: VoteKind::Pre,
                granted: true,
            } => {}
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::SnapshotChunk { .. } => self.become_follower(m.term, m.from),
            _ => self.become_follower(m.term, 0),
        }
        true
    }

    /// A message from an older term.
    fn answer_stale(&mut self, m: &Message) {
        match m.body {
            // A deposed leader (say, after a partition heals) must learn the newer term, or with
            // pre-vote on it would never hear of it; any reply with our term deposes it.
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                if self.cfg.check_quorum || self.cfg.pre_vote =>
            {
                self.send(
                    m.from,
                    self.term,
                    MessageBody::HeartbeatResponse { read_round: 0 },
                );
            }
            // A pre-candidate with an older term learns it would lose.
            MessageBody::Vote {
                kind: VoteKind::Pre,
                ..
            } => {
                let body = MessageBody::VoteResponse {
                    kind: VoteKind::Pre,
                    granted: false,
                };
                self.send(m.from, self.term, body);
            }
            _ => {}
        }
    }

    /// Raft §5.2 and §5.4.1: one vote per term, only for a candidate whose log is at least as
    /// up-to-date as ours. A pre-vote is granted on the same log rule without recording a vote.
    fn handle_vote(
        &mut self,
        from: NodeId,
        term: Term,
        kind: VoteKind,
        last_index: Index,
        last_term: Term,
    ) {
        let free_to_vote = self.vote == from
            || (self.vote == 0 && self.leader == 0)
            || (kind == VoteKind::Pre && term > self.term);
        let granted = free_to_vote && self.log.is_up_to_date(last_index, last_term);
        if granted && kind == VoteKind::Real {
            self.vote = from;
            self.election_elapsed = 0;
        }
        // A granted answer carries the candidate's term; a refusal carries ours, so a stale
        // candidate learns the newer term.
        let answer_term = if granted { term } else { self.term };
        self.send(
            from,
            answer_term,
            MessageBody::VoteResponse { kind, granted },
        );
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::SnapshotChunk { .. } => {
                // Raft §5.2: a leader of our term exists; we lost.
                self.become_follower(m.term, m.from);
                self.step_follower(m);
            }
            MessageBody::VoteResponse { kind, granted } => {
                let expected = if self.role == Role::PreCandidate {
                    VoteKind::Pre
                } else {
                    VoteKind::Real
                };
                if kind != expected {
                    return;
                }
                self.votes.entry(m.from).or_insert(granted);
                match self.tally() {
                    Tally::Won => self.on_campaign_won(kind, CampaignReason::Timeout),
                    Tally::Lost => {
                        let term = self.term;
                        self.become_follower(term, 0);
                    }
                    Tally::Pending => {}
                }
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.hear_from_leader(m.from);
                self.handle_append(m.from, prev_index, prev_term, &entries, commit);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.hear_from_leader(m.from);
                let commit = commit.min(self.log.last_index());
                self.commit_to(commit);
                self.send(
                    m.from,
                    self.term,
                    MessageBody::HeartbeatResponse { read_round },
                );
            }
            MessageBody::SnapshotChunk {
                meta,
                total_bytes,
                offset,
                data,
            } => {
                self.hear_from_leader(m.from);
                self.handle_snapshot_chunk(m.from, meta, total_bytes, offset, data);
            }
            MessageBody::ReadIndexResponse { context, index } => {
                self.read_states.push(ReadState { context, index });
            }
            MessageBody::ReadIndex { .. } => {
                // Forwarded to us by mistake (we are not the leader); the asker retries.
            }
            _ => {}
        }
    }

    fn hear_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        self.leader = leader;
    }

    fn commit_to(&mut self, index: Index) {
        if index > self.log.committed {
            self.log.committed = index;
        }
    }

    /// Raft §5.3: accept entries that follow a matching `prev_index`, else reject with a hint.
    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
        commit: Index,
    ) {
        let committed = self.log.committed;
        if prev_index < committed {
            // Everything up to our commit index already matches; say so and let the leader
            // continue from there.
            let body = MessageBody::AppendResponse(AppendResponse::Accepted {
                match_index: committed,
            });
            self.send(from, self.term, body);
            return;
        }
        if self.log.matches(prev_index, prev_term) {
            let last_new = self.log.append_from_leader(prev_index, entries);
            self.commit_to(commit.min(last_new));
            let body = MessageBody::AppendResponse(AppendResponse::Accepted {
                match_index: last_new,
            });
            self.send(from, self.term, body);
            return;
        }
        let probe = prev_index.min(self.log.last_index());
        let (hint_index, hint_term) = self.log.find_conflict_by_term(probe, prev_term);
        let body = MessageBody::AppendResponse(AppendResponse::Rejected {
            rejected_index: prev_index,
            hint_index,
            hint_term,
        });
        self.send(from, self.term, body);
    }

    /// Raft §7, chunked: chunks arrive in order; a gap is answered with the offset we expect.
    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Bytes,
    ) {
        if meta.index <= self.log.committed {
            // We already hold everything the snapshot covers.
            self.incoming_snapshot = None;
            let body = MessageBody::SnapshotResponse {
                index: meta.index,
                next_offset: total_bytes,
                done: true,
            };
            self.send(from, self.term, body);
            return;
        }
        let fresh = self
            .incoming_snapshot
            .as_ref()
            .is_none_or(|s| s.meta != meta || s.total_bytes != total_bytes);
        if fresh {
            if offset != 0 {
                let body = MessageBody::SnapshotResponse {
                    index: meta.index,
                    next_offset: 0,
                    done: false,
                };
                self.send(from, self.term, body);
                return;
            }
            let capacity = total_bytes.min(self.cfg.snapshot_chunk_bytes as u64 * 4) as usize;
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta,
                total_bytes,
                data: Vec::with_capacity(capacity),
            });
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        if offset == incoming.data.len() as u64 && offset + data.len() as u64 <= total_bytes {
            incoming.data.extend_from_slice(&data);
        }
        let have = incoming.data.len() as u64;
        if have < total_bytes {
            // Either more to come, or a chunk arrived out of order: ask for what we expect.
            let body = MessageBody::SnapshotResponse {
                index: meta.index,
                next_offset: have,
                done: false,
            };
            self.send(from, self.term, body);
            return;
        }
        let incoming = self.incoming_snapshot.take().expect("set above");
        self.install_snapshot(Snapshot {
            meta,
            data: Bytes::from(incoming.data),
        });
        let body = MessageBody::SnapshotResponse {
            index: meta.index,
            next_offset: total_bytes,
            done: true,
        };
        self.send(from, self.term, body);
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        if self.log.matches(meta.index, meta.term) {
            // Raft §7: our log already holds the snapshot's last entry; keep what follows it.
            self.commit_to(meta.index);
            return;
        }
        self.log.restore_snapshot(meta);
        self.snapshot = snapshot.clone();
        self.snapshot_to_install = Some(snapshot);
    }

    fn step_leader(&mut self, m: Message) {
        let from = m.from;
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.recent_active = true;
        }
        match m.body {
            MessageBody::AppendResponse(AppendResponse::Accepted { match_index }) => {
                self.handle_append_accepted(from, match_index)
            }
            MessageBody::AppendResponse(AppendResponse::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            }) => self.handle_append_rejected(from, rejected_index, hint_index, hint_term),
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(from, read_round)
            }
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                done,
            } => self.handle_snapshot_response(from, index, next_offset, done),
            MessageBody::ReadIndex { context } => self.leader_read(context, from),
            _ => {}
        }
    }

    fn handle_append_accepted(&mut self, from: NodeId, match_index: Index) {
        let pr = self.progress.get_mut(&from).expect("peer");
        if !pr.update_match(match_index) {
            return;
        }
        match pr.state {
            ReplicationState::Probe { .. } => pr.become_replicate(),
            ReplicationState::Snapshot { meta, .. } if pr.match_index >= meta.index => {
                let next = pr.match_index + 1;
                pr.become_probe(next);
            }
            _ => {}
        }
        if self.maybe_commit() {
            self.pending_commit = true;
        }
        if from == self.transferee && self.progress[&from].match_index == self.log.last_index() {
            self.send(from, self.term, MessageBody::TimeoutNow);
        }
        self.send_append(from, Empty::Skip);
    }

    /// Fast backup (Raft §5.3, as etcd): in probe, jump to just after the last entry of a term
    /// both logs may share; in replicate, fall back to probing from the match.
    fn handle_append_rejected(
        &mut self,
        from: NodeId,
        rejected: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let probe_index = if hint_term > 0 {
            self.log.find_conflict_by_term(hint_index, hint_term).0
        } else {
            hint_index
        };
        let pr = self.progress.get_mut(&from).expect("peer");
        if rejected <= pr.match_index {
            return; // stale: the follower has since acknowledged more
        }
        let next = match pr.state {
            ReplicationState::Replicate => pr.match_index + 1,
            ReplicationState::Probe { .. } if rejected == pr.next_index - 1 => {
                rejected.min(probe_index + 1).max(pr.match_index + 1)
            }
            _ => return, // stale probe answer, or snapshotting
        };
        pr.become_probe(next);
        self.send_append(from, Empty::Send);
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last = self.log.last_index();
        let pr = self.progress.get_mut(&from).expect("peer");
        pr.read_round_acked = pr.read_round_acked.max(read_round);
        pr.unpause_probe();
        if pr.match_index < last {
            // A pipeline that acknowledged nothing for a whole heartbeat interval may have lost
            // an Append (a lost message is never answered): probe again from the match. While
            // acknowledgements flow, nothing is resent.
            if pr.state == ReplicationState::Replicate && !pr.progressed {
                let next = pr.match_index + 1;
                pr.become_probe(next);
            }
            pr.progressed = false;
            self.send_append(from, Empty::Send);
        }
        if read_round > 0 {
            self.release_reads();
        }
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: Index,
        next_offset: u64,
        done: bool,
    ) {
        let pr = self.progress.get_mut(&from).expect("peer");
        let ReplicationState::Snapshot {
            meta,
            offset,
            chunk_in_flight,
        } = &mut pr.state
        else {
            return;
        };
        if meta.index != index {
            return; // about an older snapshot
        }
        pr.snapshot_answered = true;
        if done {
            pr.update_match(index);
            let next = pr.match_index + 1;
            pr.become_probe(next);
        } else {
            *offset = next_offset;
            *chunk_in_flight = false;
        }
        self.send_append(from, Empty::Send);
    }

    /// Raft §5.3/§5.4.2: commit the highest index a quorum holds durably, but only by counting
    /// replicas of an entry from the current term. The leader counts itself at its durable index.
    fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<Index> = self.progress.values().map(|pr| pr.match_index).collect();
        matched.push(self.log.stable());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_index = matched[self.quorum() - 1];
        if quorum_index <= self.log.committed || self.log.term_at(quorum_index) != Some(self.term) {
            return false;
        }
        self.log.committed = quorum_index;
        self.pending_commit = true;
        // Thesis §6.4: reads that waited for the first commit of this term can go now.
        for (context, from) in std::mem::take(&mut self.reads_before_commit) {
            self.leader_read(context, from);
        }
        true
    }

    // ----- ReadIndex (thesis §6.4) -----

    fn leader_read(&mut self, context: Bytes, from: NodeId) {
        if self.log.term_at(self.log.committed) != Some(self.term) {
            self.reads_before_commit.push((context, from));
            return;
        }
        let index = self.log.committed;
        if self.cfg.voters.len() == 1 || self.in_lease() {
            self.answer_read(context, from, index);
            return;
        }
        // The next broadcast is the read's round: its acknowledgement by a quorum confirms
        // leadership after the read arrived.
        self.pending_reads.push_back(PendingRead {
            round: self.read_round + 1,
            index,
            context,
            from,
        });
        self.pending_read_round = true;
    }

    /// Thesis §6.4.1: a quorum acknowledged a heartbeat sent less than a lease ago, and each of
    /// those voters ignores campaigns for an election timeout after receiving it, so no other
    /// leader can exist yet and this one's commit index covers every acknowledged write.
    fn in_lease(&self) -> bool {
        let lease = self.cfg.lease_ticks();
        // `lease_revoked` is set with every transfer (`transferee`) and lasts the term.
        lease > 0
            && self.role == Role::Leader
            && !self.lease_revoked
            && self
                .lease_from
                .is_some_and(|from| self.ticks < from + lease)
    }

    /// Releases every read whose round a quorum (this leader included) has acknowledged: an
    /// acknowledgement of round r confirms leadership for every round up to r.
    fn release_reads(&mut self) {
        let mut acked: Vec<u64> = self
            .progress
            .values()
            .map(|pr| pr.read_round_acked)
            .collect();
        acked.push(u64::MAX);
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acked[self.quorum() - 1];
        while let Some(&(round, sent)) = self.round_sent.front() {
            if round > confirmed {
                break;
            }
            if round == confirmed {
                self.lease_from = Some(self.lease_from.map_or(sent, |from| from.max(sent)));
            }
            self.round_sent.pop_front();
        }
        while self
            .pending_reads
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            let read = self.pending_reads.pop_front().expect("checked");
            self.answer_read(read.context, read.from, read.index);
        }
    }

    fn answer_read(&mut self, context: Bytes, from: NodeId, index: Index) {
        if from == self.cfg.id {
            self.read_states.push(ReadState { context, index });
        } else {
            self.send(
                from,
                self.term,
                MessageBody::ReadIndexResponse { context, index },
            );
        }
    }
}

/// Heartbeat rounds a leader remembers the sending tick of, waiting for a quorum's answer:
/// more than an election timeout's worth of heartbeats and read rounds (a leader that heard
/// nothing for an election timeout steps down).
const MAX_TRACKED_ROUNDS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tally {
    Won,
    Lost,
    Pending,
}

/// Rejects restored state that no correct caller could have persisted.
fn check_restore(
    hard: &HardState,
    snapshot: &SnapshotMeta,
    entries: &[Entry],
) -> Result<(), ConfigError> {
    for (i, entry) in entries.iter().enumerate() {
        if entry.index != snapshot.index + 1 + i as Index {
            return Err(ConfigError::BadRestore(
                "entries must follow the snapshot contiguously",
            ));
        }
        let prev_term = if i == 0 {
            snapshot.term
        } else {
            entries[i - 1].term
        };
        if entry.term < prev_term {
            return Err(ConfigError::BadRestore("entry terms must not decrease"));
        }
    }
    let last_term = entries.last().map_or(snapshot.term, |e| e.term);
    if hard.term < last_term {
        return Err(ConfigError::BadRestore(
            "hard state term is older than the log",
        ));
    }
    Ok(())
}
