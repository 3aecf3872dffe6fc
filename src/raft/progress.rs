//! The leader's view of one follower: how far its log matches, what to send next, and how much
//! may be in flight (etcd's `tracker.Progress`, Raft §5.3 `nextIndex`/`matchIndex`).

use std::collections::VecDeque;

use super::types::{Index, SnapshotMeta};

/// How the leader replicates to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// The leader does not know where the follower's log matches: one Append at a time, the
    /// next only after an answer or a heartbeat response.
    Probe {
        /// An Append is out and unanswered.
        paused: bool,
    },
    /// The logs match up to `match_index`: Appends are pipelined, up to the inflight bound.
    Replicate,
    /// The entries the follower needs were compacted: a snapshot is streamed in chunks.
    Snapshot {
        /// The snapshot being sent.
        meta: SnapshotMeta,
        /// The next byte to send.
        offset: u64,
        /// A chunk is out and unanswered.
        chunk_in_flight: bool,
    },
}

/// The leader's record of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log durably on the follower.
    pub match_index: Index,
    /// The next index to send.
    pub next_index: Index,
    /// How replication proceeds.
    pub state: ReplicationState,
    /// The last index of each Append in flight (Replicate only), oldest first.
    inflight: VecDeque<Index>,
    /// Heard from since the last check-quorum round (thesis §6.2).
    pub recent_active: bool,
    /// Heard a snapshot answer since the last heartbeat (retransmission of a lost chunk).
    pub snapshot_answered: bool,
    /// The newest ReadIndex round the follower acknowledged (thesis §6.4).
    pub read_round_acked: u64,
    /// The commit index last sent in an Append, so commit-only Appends go out only when needed.
    pub commit_sent: Index,
    /// The match index moved since the last heartbeat answer: pipelined replication is alive.
    pub progressed: bool,
}

impl Progress {
    /// A fresh record, as a new leader makes it: probe from the end of its log (Raft §5.3).
    pub fn new(next_index: Index) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe { paused: false },
            inflight: VecDeque::new(),
            recent_active: false,
            snapshot_answered: false,
            read_round_acked: 0,
            commit_sent: 0,
            progressed: false,
        }
    }

    /// Records an acknowledged match; false when it is stale (no news).
    pub fn update_match(&mut self, match_index: Index) -> bool {
        if match_index <= self.match_index {
            return false;
        }
        self.match_index = match_index;
        self.progressed = true;
        self.next_index = self.next_index.max(match_index + 1);
        while self
            .inflight
            .front()
            .is_some_and(|&last| last <= match_index)
        {
            self.inflight.pop_front();
        }
        true
    }

    /// Back to one-at-a-time probing from `next_index`.
    pub fn become_probe(&mut self, next_index: Index) {
        assert!(
            next_index > self.match_index,
            "probe must start after the match"
        );
        self.state = ReplicationState::Probe { paused: false };
        self.next_index = next_index;
        self.inflight.clear();
    }

    /// Pipelined replication from just after the match.
    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
    }

    /// Starts streaming a snapshot from its first byte.
    pub fn become_snapshot(&mut self, meta: SnapshotMeta) {
        self.state = ReplicationState::Snapshot {
            meta,
            offset: 0,
            chunk_in_flight: false,
        };
        self.inflight.clear();
        self.snapshot_answered = false;
    }

    /// True when no further Append may be sent now.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ReplicationState::Probe { paused } => paused,
            ReplicationState::Replicate => self.inflight.len() >= max_inflight,
            ReplicationState::Snapshot { .. } => true,
        }
    }

    /// Notes an Append whose last entry is `last_index` as sent.
    pub fn sent_entries(&mut self, last_index: Index) {
        match &mut self.state {
            ReplicationState::Replicate => {
                self.next_index = last_index + 1;
                self.inflight.push_back(last_index);
            }
            ReplicationState::Probe { paused } => *paused = true,
            ReplicationState::Snapshot { .. } => unreachable!("no Appends while snapshotting"),
        }
    }

    /// A heartbeat answer lets a paused probe try again.
    pub fn unpause_probe(&mut self) {
        if let ReplicationState::Probe { paused } = &mut self.state {
            *paused = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pipelining is bounded by the inflight window, and acknowledgements free it in order.
    #[test]
    fn inflight_window_bounds_pipelining() {
        let mut pr = Progress::new(1);
        pr.update_match(0);
        pr.become_replicate();
        for last in [3, 6, 9] {
            assert!(!pr.is_paused(3));
            pr.sent_entries(last);
        }
        assert!(pr.is_paused(3));
        assert_eq!(pr.next_index, 10);
        assert!(pr.update_match(6));
        assert!(!pr.is_paused(3));
        assert!(!pr.update_match(5), "a stale acknowledgement is no news");
    }

    /// A probe sends one Append and waits.
    #[test]
    fn probe_sends_one_at_a_time() {
        let mut pr = Progress::new(5);
        assert!(!pr.is_paused(8));
        pr.sent_entries(7);
        assert!(pr.is_paused(8));
        assert_eq!(
            pr.next_index, 5,
            "a probe does not advance next optimistically"
        );
        pr.unpause_probe();
        assert!(!pr.is_paused(8));
    }
}
