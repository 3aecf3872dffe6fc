//! The in-memory Raft log of one member: a snapshot position followed by contiguous entries, plus
//! the three positions that move through it (handed out for persisting, durable, committed).
//!
//! The log after the last snapshot is held in memory; the application bounds it by taking
//! snapshots (`compact`). The storage layer keeps the durable copy.

use std::collections::VecDeque;

use super::types::{Entry, Index, SnapshotMeta, Term};

/// A member's log.
#[derive(Debug, Default)]
pub struct RaftLog {
    /// Everything up to and including `snapshot.index` is compacted away.
    snapshot: SnapshotMeta,
    /// Entries `snapshot.index + 1 ..= last_index()`.
    entries: VecDeque<Entry>,
    /// The first index not yet handed to the caller for persisting.
    unstable_from: Index,
    /// The highest index the caller reported durable (and still in this log).
    stable: Index,
    /// The highest index known committed.
    pub committed: Index,
    /// The highest index the caller applied.
    pub applied: Index,
}

impl RaftLog {
    /// A log restored from durable state: everything in it is stable.
    pub fn restored(snapshot: SnapshotMeta, entries: Vec<Entry>, committed: Index) -> RaftLog {
        let mut log = RaftLog {
            snapshot,
            entries: entries.into(),
            unstable_from: 0,
            stable: 0,
            committed: 0,
            applied: snapshot.index,
        };
        log.unstable_from = log.last_index() + 1;
        log.stable = log.last_index();
        // A persisted commit index can run ahead of the persisted log only through a bug in the
        // caller; clamp rather than trust it.
        log.committed = committed.clamp(snapshot.index, log.last_index());
        log
    }

    /// The snapshot's position.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot
    }

    /// The first index held in memory (the snapshot index + 1).
    pub fn first_index(&self) -> Index {
        self.snapshot.index + 1
    }

    /// The last index of the log (the snapshot index when no entries follow it).
    pub fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as Index
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot.term, |e| e.term)
    }

    /// The highest index reported durable.
    pub fn stable(&self) -> Index {
        self.stable
    }

    /// The term at `index`: from the entries, or the snapshot's term at its own index.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot.index || index > self.last_index() {
            return None;
        }
        self.entries.get((index - self.snapshot.index - 1) as usize)
    }

    /// All held entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Raft §5.4.1: a candidate's log is at least as up-to-date as ours.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// True when the log holds `index` with `term`.
    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term_at(index) == Some(term)
    }

    /// Appends entries created by this node as leader.
    pub fn append_new(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "leader append must be contiguous"
        );
        assert!(
            entry.term >= self.last_term(),
            "leader append must not go back in term"
        );
        self.entries.push_back(entry);
    }

    /// Raft §5.3: entries that follow `prev_index` (which is known to match). An existing entry
    /// that conflicts (same index, other term) is dropped with all that follow it; entries
    /// already held are skipped. Returns the index of the last entry now known to match.
    pub fn append_from_leader(&mut self, prev_index: Index, entries: &[Entry]) -> Index {
        let mut new_start = entries.len();
        for (i, entry) in entries.iter().enumerate() {
            debug_assert_eq!(entry.index, prev_index + 1 + i as Index);
            if entry.index <= self.snapshot.index {
                continue; // Already covered by our snapshot, so committed and identical.
            }
            match self.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    assert!(
                        entry.index > self.committed,
                        "conflict at committed index {} (commit {})",
                        entry.index,
                        self.committed
                    );
                    self.truncate_from(entry.index);
                    new_start = i;
                    break;
                }
                None => {
                    new_start = i;
                    break;
                }
            }
        }
        for entry in &entries[new_start..] {
            if entry.index > self.snapshot.index {
                assert_eq!(entry.index, self.last_index() + 1);
                self.entries.push_back(entry.clone());
            }
        }
        prev_index + entries.len() as Index
    }

    /// Drops every entry at or after `index`; what was handed out or durable there no longer is.
    fn truncate_from(&mut self, index: Index) {
        assert!(index > self.snapshot.index);
        self.entries
            .truncate((index - self.snapshot.index - 1) as usize);
        self.unstable_from = self.unstable_from.min(index);
        self.stable = self.stable.min(index - 1);
    }

    /// The entries not yet handed out for persisting; marks them handed out.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(self.first_index());
        let out: Vec<Entry> = (from..=self.last_index())
            .filter_map(|i| self.entry(i).cloned())
            .collect();
        self.unstable_from = self.last_index() + 1;
        out
    }

    /// True when entries wait to be handed out for persisting.
    pub fn has_unstable(&self) -> bool {
        self.unstable_from.max(self.first_index()) <= self.last_index()
    }

    /// The caller reports the log durable up to `index` with `term`. A report about an entry that
    /// has since been replaced is stale and ignored: the replacing write reports on its own.
    pub fn stable_to(&mut self, index: Index, term: Term) -> bool {
        if index <= self.stable || index >= self.unstable_from || !self.matches(index, term) {
            return false;
        }
        self.stable = index;
        true
    }

    /// Entries committed, durable and not yet applied, up to `max_bytes` (at least one).
    pub fn next_committed(&self, max_bytes: usize) -> Vec<Entry> {
        let from = self.applied.max(self.snapshot.index) + 1;
        let to = self.committed.min(self.stable);
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in from..=to {
            let entry = self.entry(index).expect("committed entry is held");
            bytes += entry.approx_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// True when committed, durable entries wait to be applied.
    pub fn has_next_committed(&self) -> bool {
        self.committed.min(self.stable) > self.applied.max(self.snapshot.index)
    }

    /// Entries from `from` on, up to `max_bytes` (at least one when any exist).
    pub fn slice(&self, from: Index, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in from..=self.last_index() {
            let entry = self.entry(index).expect("slice starts after the snapshot");
            bytes += entry.approx_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Fast backup (Raft §5.3, etcd's `findConflictByTerm`): the largest index at or below `index`
    /// whose term is at most `term`, with that term. Below the snapshot we answer the snapshot.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term_at(i) {
                Some(t) if t <= term => return (i, t),
                Some(_) if i > self.snapshot.index => i -= 1,
                _ => return (self.snapshot.index, self.snapshot.term),
            }
        }
    }

    /// Drops entries up to `meta.index` after the application snapshotted there.
    pub fn compact_to(&mut self, meta: SnapshotMeta) {
        assert!(meta.index > self.snapshot.index && meta.index <= self.applied);
        assert_eq!(self.term_at(meta.index), Some(meta.term));
        let drop = (meta.index - self.snapshot.index) as usize;
        self.entries.drain(..drop);
        self.snapshot = meta;
    }

    /// Replaces the whole log with a snapshot received from the leader (Raft §7: the log does not
    /// contain the snapshot's last entry, so everything held is discarded).
    pub fn restore_snapshot(&mut self, meta: SnapshotMeta) {
        assert!(
            meta.index > self.committed,
            "snapshot must move commit forward"
        );
        self.entries.clear();
        self.snapshot = meta;
        self.committed = meta.index;
        self.unstable_from = meta.index + 1;
        // The snapshot itself is handed out in the Ready and reported persisted like an entry.
        self.stable = meta.index - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;
    use bytes::Bytes;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn log_of(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as Index + 1, t))
            .collect();
        RaftLog::restored(SnapshotMeta::default(), entries, 0)
    }

    /// Raft §5.3: a conflicting suffix is replaced; matching entries are kept and what was
    /// durable past the conflict no longer counts as durable.
    #[test]
    fn append_replaces_conflicting_suffix() {
        let mut log = log_of(&[1, 1, 2, 2]);
        assert_eq!(log.stable(), 4);
        let last = log.append_from_leader(2, &[entry(3, 3), entry(4, 3), entry(5, 3)]);
        assert_eq!(last, 5);
        assert_eq!(log.term_at(3), Some(3));
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.stable(), 2);
        assert_eq!(log.take_unstable().len(), 3);
    }

    /// A duplicate, older Append must not truncate entries that follow it.
    #[test]
    fn stale_append_keeps_longer_log() {
        let mut log = log_of(&[1, 1, 1, 1]);
        log.append_from_leader(1, &[entry(2, 1)]);
        assert_eq!(log.last_index(), 4);
        assert!(!log.has_unstable());
    }

    /// Fast backup finds the last entry of a term no newer than the leader's.
    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_of(&[1, 1, 4, 4, 4, 5, 5]);
        assert_eq!(log.find_conflict_by_term(7, 3), (2, 1));
        assert_eq!(log.find_conflict_by_term(7, 4), (5, 4));
        assert_eq!(log.find_conflict_by_term(20, 6), (7, 5));
        assert_eq!(log.find_conflict_by_term(2, 0), (0, 0));
    }

    /// Raft §5.4.1: up-to-date compares last terms first, then lengths.
    #[test]
    fn up_to_date_rule() {
        let log = log_of(&[1, 2, 2]);
        assert!(log.is_up_to_date(3, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(9, 1));
    }

    /// Compaction keeps terms answerable at the snapshot index and drops the prefix.
    #[test]
    fn compaction_keeps_snapshot_term() {
        let mut log = log_of(&[1, 1, 2, 2]);
        log.committed = 3;
        log.applied = 3;
        log.compact_to(SnapshotMeta { index: 3, term: 2 });
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(2), None);
        assert_eq!(log.last_index(), 4);
    }
}
