//! The simulated disk of one node: a FIFO queue of pending writes and, per group, the durable
//! state those writes build (hard state, snapshot, log entries).
//!
//! A write is what one Ready asked to persist. Writes of a node complete strictly in the order
//! they were submitted (the Ready contract requires it), each after a seeded latency but never
//! before the write ahead of it; a write that only holds messages waiting for durability is a
//! barrier with no latency of its own. A crash completes a seeded prefix of the pending writes (they
//! had reached the platter) and loses the rest; the durable state survives, everything else of
//! the node does not.

use std::collections::VecDeque;

use crate::raft::{Entry, GroupId, HardState, Index, Message, Restore, Snapshot, Term};

/// One Ready's worth of durable work, plus what to do once it is durable.
#[derive(Clone, Debug)]
pub struct DiskWrite {
    /// Unique per cluster; lets a completion event find its write.
    pub id: u64,
    /// The group the Ready came from.
    pub group: GroupId,
    /// A snapshot received from the leader; it replaces the whole durable log.
    pub snapshot: Option<Snapshot>,
    /// Entries: drop durable entries at or after the first one's index, then append.
    pub entries: Vec<Entry>,
    /// The hard state, when it changed.
    pub hard_state: Option<HardState>,
    /// Messages to send once the write is durable.
    pub persisted_messages: Vec<Message>,
    /// What to report through `RawNode::persisted`: the last entry, else the snapshot.
    pub report: Option<(Index, Term)>,
    /// When the write completes.
    pub done_at_us: u64,
}

/// A node's queue of writes not yet durable.
#[derive(Debug, Default)]
pub struct DiskQueue {
    pending: VecDeque<DiskWrite>,
    /// Completion time of the last write submitted; the next may not complete earlier.
    last_done_at_us: u64,
}

impl DiskQueue {
    /// Queues `write` to complete `latency_us` from `now_us`, but not before the write ahead of
    /// it. Returns its completion time.
    pub fn submit(&mut self, now_us: u64, latency_us: u64, mut write: DiskWrite) -> u64 {
        let done_at_us = (now_us + latency_us).max(self.last_done_at_us);
        self.last_done_at_us = done_at_us;
        write.done_at_us = done_at_us;
        self.pending.push_back(write);
        done_at_us
    }

    /// Number of writes not yet durable.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when no write is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The oldest write completes; it must be the one with `id` (FIFO).
    pub fn complete(&mut self, id: u64) -> DiskWrite {
        let write = self
            .pending
            .pop_front()
            .expect("a completion with no pending write");
        assert_eq!(
            write.id, id,
            "disk writes must complete in submission order"
        );
        write
    }

    /// A crash: the first `reached_disk` pending writes are durable after all, the rest are
    /// lost. Returns the durable ones, in order.
    pub fn crash(&mut self, now_us: u64, reached_disk: usize) -> Vec<DiskWrite> {
        assert!(reached_disk <= self.pending.len());
        let kept: Vec<DiskWrite> = self.pending.drain(..reached_disk).collect();
        self.pending.clear();
        self.last_done_at_us = now_us;
        kept
    }
}

/// What one group member has on disk.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    /// The last hard state written.
    pub hard_state: HardState,
    /// The last snapshot written (received from the leader or taken by the application).
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot, contiguous.
    entries: VecDeque<Entry>,
    /// Sum of the entries' `approx_bytes`, kept as they change: the snapshot policy asks for
    /// it after every Ready, and summing a long log each time made runs quadratic.
    entry_bytes: usize,
}

impl Durable {
    /// The snapshot's index (0 when there is none).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    /// The last durable index: the last entry, else the snapshot.
    pub fn last_index(&self) -> Index {
        self.entries
            .back()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    /// Makes one completed write durable: snapshot (replacing the whole log), then entries
    /// (truncate, then append), then hard state. An `Err` names a broken contract.
    pub fn apply(&mut self, write: &DiskWrite) -> Result<(), String> {
        if let Some(snapshot) = &write.snapshot {
            if snapshot.meta.index <= self.snapshot_index() {
                return Err(format!(
                    "snapshot at {} written over a newer durable snapshot at {}",
                    snapshot.meta.index,
                    self.snapshot_index()
                ));
            }
            self.snapshot = Some(snapshot.clone());
            self.entries.clear();
            self.entry_bytes = 0;
        }
        if let Some(first) = write.entries.first() {
            let first_held = self.snapshot_index() + 1;
            if first.index < first_held || first.index > self.last_index() + 1 {
                return Err(format!(
                    "entries from {} do not attach to the durable log {}..={}",
                    first.index,
                    first_held,
                    self.last_index()
                ));
            }
            let keep = (first.index - first_held) as usize;
            let dropped: usize = self.entries.range(keep..).map(Entry::approx_bytes).sum();
            self.entry_bytes -= dropped;
            self.entries.truncate(keep);
            for (i, entry) in write.entries.iter().enumerate() {
                if entry.index != first.index + i as Index {
                    return Err(format!("entries not contiguous at {}", entry.index));
                }
                self.entry_bytes += entry.approx_bytes();
                self.entries.push_back(entry.clone());
            }
        }
        if let Some(hard_state) = write.hard_state {
            self.hard_state = hard_state;
        }
        Ok(())
    }

    /// The application took `snapshot`: store it and drop the entries it covers, at once.
    pub fn compact(&mut self, snapshot: Snapshot) -> Result<(), String> {
        let index = snapshot.meta.index;
        if index <= self.snapshot_index() || index > self.last_index() {
            return Err(format!(
                "snapshot at {index} outside the durable log {}..={}",
                self.snapshot_index() + 1,
                self.last_index()
            ));
        }
        let covered = (index - self.snapshot_index()) as usize;
        let term = self.entries[covered - 1].term;
        if term != snapshot.meta.term {
            return Err(format!(
                "snapshot at {index} has term {}, durable entry has {term}",
                snapshot.meta.term
            ));
        }
        let dropped: usize = self.entries.range(..covered).map(Entry::approx_bytes).sum();
        self.entry_bytes -= dropped;
        self.entries.drain(..covered);
        self.snapshot = Some(snapshot);
        Ok(())
    }

    /// What a restarting member is built from.
    pub fn restore(&self) -> Restore {
        Restore {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.iter().cloned().collect(),
        }
    }

    /// The lab's RaftStateSize: the hard state plus the durable entries (not the snapshot).
    pub fn raft_bytes(&self) -> usize {
        HardState::BYTES + self.entry_bytes
    }

    /// The durable entries after the snapshot.
    pub fn entries(&self) -> &VecDeque<Entry> {
        &self.entries
    }

    /// Size of the durable snapshot's data.
    pub fn snapshot_bytes(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{EntryKind, SnapshotMeta};
    use bytes::Bytes;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![index as u8; 8]),
        }
    }

    fn write(id: u64, entries: Vec<Entry>) -> DiskWrite {
        DiskWrite {
            id,
            group: 1,
            snapshot: None,
            entries,
            hard_state: None,
            persisted_messages: Vec::new(),
            report: None,
            done_at_us: 0,
        }
    }

    fn snapshot(index: Index, term: Term) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta { index, term },
            data: Bytes::from_static(b"s"),
        }
    }

    /// A fast write queued behind a slow one completes no earlier than it.
    #[test]
    fn writes_complete_in_fifo_order() {
        let mut disk = DiskQueue::default();
        assert_eq!(disk.submit(0, 2_000, write(1, vec![])), 2_000);
        assert_eq!(disk.submit(10, 100, write(2, vec![])), 2_000);
        assert_eq!(disk.submit(3_000, 100, write(3, vec![])), 3_100);
        assert_eq!(disk.complete(1).id, 1);
        assert_eq!(disk.complete(2).id, 2);
        assert_eq!(disk.len(), 1);
    }

    /// A crash keeps exactly the prefix that reached the disk.
    #[test]
    fn crash_keeps_a_prefix() {
        let mut disk = DiskQueue::default();
        for id in 1..=4 {
            disk.submit(0, 500, write(id, vec![]));
        }
        let kept = disk.crash(100, 2);
        assert_eq!(kept.iter().map(|w| w.id).collect::<Vec<_>>(), vec![1, 2]);
        assert!(disk.is_empty());
        assert_eq!(
            disk.submit(100, 50, write(5, vec![])),
            150,
            "queue restarts from now"
        );
    }

    /// Entries truncate then append; a snapshot replaces the log; compaction drops a prefix.
    #[test]
    fn durable_log_follows_the_contract() {
        let mut d = Durable::default();
        d.apply(&write(1, vec![entry(1, 1), entry(2, 1), entry(3, 1)]))
            .unwrap();
        d.apply(&write(2, vec![entry(3, 2), entry(4, 2)])).unwrap();
        let terms: Vec<_> = d.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(terms, vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
        assert!(
            d.apply(&write(3, vec![entry(6, 2)])).is_err(),
            "a gap is refused"
        );

        d.compact(snapshot(2, 1)).unwrap();
        assert_eq!(d.snapshot_index(), 2);
        assert_eq!(d.entries.front().unwrap().index, 3);
        assert!(d.compact(snapshot(3, 1)).is_err(), "wrong term is refused");
        assert_eq!(
            d.raft_bytes(),
            HardState::BYTES + 2 * (Entry::OVERHEAD_BYTES + 8)
        );

        let mut w = write(4, vec![entry(11, 3)]);
        w.snapshot = Some(snapshot(10, 3));
        w.hard_state = Some(HardState {
            term: 3,
            vote: 2,
            commit: 10,
        });
        d.apply(&w).unwrap();
        assert_eq!((d.snapshot_index(), d.last_index()), (10, 11));
        assert_eq!(d.raft_bytes(), HardState::BYTES + Entry::OVERHEAD_BYTES + 8);
        let restore = d.restore();
        assert_eq!(restore.entries.len(), 1);
        assert_eq!(restore.hard_state.commit, 10);
        assert_eq!(d.snapshot_bytes(), 1);
    }
}
