//! The safety properties of Raft (Raft §5.2-§5.4, Figure 3), checked incrementally as the
//! simulation runs. Each check is fed by the cluster at the moment the fact appears (a Ready's
//! role change, entries, applied entries, installed snapshots) and costs little per event:
//!
//! 1. election safety: at most one leader per term per group;
//! 2. log matching: two entries with the same index and term carry the same data and follow
//!    the same term at index - 1 (so, inductively, the logs agree up to there);
//! 3. leader completeness: a new leader's log holds every entry known committed in an earlier
//!    term;
//! 4. state-machine safety: every member that applies an index applies the same entry, and
//!    reaches the same chain hash;
//! 5. a member's applied index goes up by one per entry (or jumps forward to a snapshot) and
//!    never back, within one incarnation.
//!
//! A check returns `Err(description)`; the cluster turns it into a panic that names the seed,
//! the time, the node and the group, with the recent trace.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::app::entry_hash;
use crate::raft::{Entry, EntryKind, GroupId, Index, NodeId, RawNode, SnapshotMeta, Term};

/// What the cluster learned about one committed index, from the first member that applied it.
#[derive(Clone, Debug)]
pub struct CommittedEntry {
    /// The entry's term.
    pub term: Term,
    /// Command or no-op.
    pub kind: EntryKind,
    /// Hash of the entry's payload.
    pub data_hash: u64,
    /// The application's chain hash after applying it.
    pub chain: u64,
    /// The command's bytes (empty for a no-op).
    pub data: Bytes,
}

#[derive(Default)]
struct GroupFacts {
    /// Term → the leader observed in it.
    leaders: HashMap<Term, NodeId>,
    /// (index, term) → (payload hash, term at index - 1 when known).
    log: HashMap<(Index, Term), (u64, Option<Term>)>,
    /// Index i at position i - 1.
    committed: Vec<CommittedEntry>,
    /// Term → the highest index some member applied while in that term. An index applied by a
    /// member in term t was committed in a term ≤ t (a member only learns of a commit from a
    /// leader of its own term or earlier), so this bounds the commit term from above.
    committed_by_term: BTreeMap<Term, Index>,
}

/// The invariant checker of one cluster.
#[derive(Default)]
pub struct Checker {
    groups: HashMap<GroupId, GroupFacts>,
    /// (node, group) → applied index of the current incarnation's application.
    applied: HashMap<(NodeId, GroupId), Index>,
}

type Check = Result<(), String>;

impl Checker {
    /// An empty checker.
    pub fn new() -> Checker {
        Checker::default()
    }

    fn group(&mut self, group: GroupId) -> &mut GroupFacts {
        self.groups.entry(group).or_default()
    }

    /// The entry committed at `index` in `group`, as first applied.
    pub fn committed(&self, group: GroupId, index: Index) -> Option<&CommittedEntry> {
        let facts = self.groups.get(&group)?;
        facts.committed.get(index.checked_sub(1)? as usize)
    }

    /// The highest index applied anywhere in `group`.
    pub fn max_committed(&self, group: GroupId) -> Index {
        self.groups
            .get(&group)
            .map_or(0, |f| f.committed.len() as Index)
    }

    /// The leader observed in `term`, if any.
    pub fn leader_of(&self, group: GroupId, term: Term) -> Option<NodeId> {
        self.groups.get(&group)?.leaders.get(&term).copied()
    }

    /// Invariant 1: `node` reports itself leader of `term`.
    pub fn on_leader(&mut self, group: GroupId, term: Term, node: NodeId) -> Check {
        let leader = *self.group(group).leaders.entry(term).or_insert(node);
        if leader != node {
            return Err(format!(
                "election safety: n{node} and n{leader} both lead g{group} in term {term}"
            ));
        }
        Ok(())
    }

    /// Invariant 2: entries that a member appended to its log; `prev_term` is the term its log
    /// holds just before the first one (None when that is below its snapshot).
    pub fn on_entries(
        &mut self,
        group: GroupId,
        entries: &[Entry],
        prev_term: Option<Term>,
    ) -> Check {
        let facts = self.group(group);
        let mut prev = prev_term;
        for entry in entries {
            let hash = entry_hash(entry);
            let key = (entry.index, entry.term);
            match facts.log.get_mut(&key) {
                None => {
                    facts.log.insert(key, (hash, prev));
                }
                Some((known_hash, known_prev)) => {
                    if *known_hash != hash {
                        return Err(format!(
                            "log matching: two different entries at index {} term {}",
                            entry.index, entry.term
                        ));
                    }
                    match (*known_prev, prev) {
                        (Some(a), Some(b)) if a != b => {
                            return Err(format!(
                                "log matching: entry {} term {} follows term {a} in one log and \
                                 term {b} in another",
                                entry.index, entry.term
                            ));
                        }
                        (None, Some(_)) => *known_prev = prev,
                        _ => {}
                    }
                }
            }
            prev = Some(entry.term);
        }
        Ok(())
    }

    /// Invariants 2 and 3 when `node` has just become leader of `term`: its whole log feeds the
    /// log matching map, and it must hold every entry known committed in an earlier term.
    pub fn on_become_leader(
        &mut self,
        group: GroupId,
        node: NodeId,
        term: Term,
        raw: &RawNode,
    ) -> Check {
        let snapshot = raw.snapshot_meta();
        let entries: Vec<Entry> = raw.entries().cloned().collect();
        self.on_entries(group, &entries, Some(snapshot.term))?;
        let facts = self.group(group);
        let known = facts
            .committed_by_term
            .range(..term)
            .map(|(_, &i)| i)
            .max()
            .unwrap_or(0);
        if raw.last_index() < known {
            return Err(format!(
                "leader completeness: n{node} leads term {term} with last index {} but index \
                 {known} was committed before",
                raw.last_index()
            ));
        }
        if snapshot.index > 0 {
            if let Some(c) = facts.committed.get(snapshot.index as usize - 1) {
                if c.term != snapshot.term {
                    return Err(format!(
                        "leader completeness: n{node}'s snapshot at {} has term {}, committed \
                         term {}",
                        snapshot.index, snapshot.term, c.term
                    ));
                }
            }
        }
        for index in snapshot.index + 1..=known {
            let want = facts.committed[index as usize - 1].term;
            let have = raw.term_at(index);
            if have != Some(want) {
                return Err(format!(
                    "leader completeness: n{node} leads term {term} holding term {have:?} at \
                     committed index {index} (committed term {want})"
                ));
            }
        }
        Ok(())
    }

    /// Invariants 4 and 5: `node` (now in `node_term`) applied `entry`, reaching `chain`.
    pub fn on_apply(
        &mut self,
        group: GroupId,
        node: NodeId,
        node_term: Term,
        entry: &Entry,
        chain: u64,
    ) -> Check {
        let applied = self.applied.entry((node, group)).or_insert(0);
        if entry.index != *applied + 1 {
            return Err(format!(
                "applied index of n{node} went from {} to {} (must go up by one)",
                *applied, entry.index
            ));
        }
        *applied = entry.index;
        let facts = self.group(group);
        let by_term = facts.committed_by_term.entry(node_term).or_insert(0);
        *by_term = (*by_term).max(entry.index);
        let data_hash = entry_hash(entry);
        let position = entry.index as usize - 1;
        if let Some(known) = facts.committed.get(position) {
            if (known.term, known.data_hash, known.chain) != (entry.term, data_hash, chain) {
                return Err(format!(
                    "state machine safety: n{node} applied index {} term {} (chain {chain:x}); \
                     it was applied elsewhere with term {} (chain {:x}){}",
                    entry.index,
                    entry.term,
                    known.term,
                    known.chain,
                    if known.data_hash != data_hash {
                        ", other data"
                    } else {
                        ""
                    }
                ));
            }
            return Ok(());
        }
        if position != facts.committed.len() {
            return Err(format!(
                "state machine safety: n{node} applied index {} but the highest applied \
                 anywhere is {}",
                entry.index,
                facts.committed.len()
            ));
        }
        facts.committed.push(CommittedEntry {
            term: entry.term,
            kind: entry.kind,
            data_hash,
            chain,
            data: entry.data.clone(),
        });
        Ok(())
    }

    /// Invariants 4 and 5: `node` installed a snapshot from its leader, reaching `chain`.
    pub fn on_snapshot_install(
        &mut self,
        group: GroupId,
        node: NodeId,
        meta: SnapshotMeta,
        chain: u64,
    ) -> Check {
        let applied = self.applied.entry((node, group)).or_insert(0);
        if meta.index <= *applied {
            return Err(format!(
                "applied index of n{node} went back from {} to snapshot {}",
                *applied, meta.index
            ));
        }
        *applied = meta.index;
        self.check_snapshot_state(group, node, meta, chain)
    }

    /// A restarted member's application starts from its durable snapshot (or from nothing).
    pub fn on_restart(
        &mut self,
        group: GroupId,
        node: NodeId,
        meta: SnapshotMeta,
        chain: u64,
    ) -> Check {
        self.applied.insert((node, group), meta.index);
        if meta.index == 0 {
            return Ok(());
        }
        self.check_snapshot_state(group, node, meta, chain)
    }

    /// A crashed member applies nothing until it restarts.
    pub fn on_crash(&mut self, node: NodeId) {
        self.applied.retain(|&(n, _), _| n != node);
    }

    fn check_snapshot_state(
        &mut self,
        group: GroupId,
        node: NodeId,
        meta: SnapshotMeta,
        chain: u64,
    ) -> Check {
        let Some(known) = self.committed(group, meta.index) else {
            return Err(format!(
                "state machine safety: n{node} has a snapshot at {} beyond the highest index \
                 applied anywhere ({})",
                meta.index,
                self.max_committed(group)
            ));
        };
        if (known.term, known.chain) != (meta.term, chain) {
            return Err(format!(
                "state machine safety: n{node}'s snapshot at {} has term {} chain {chain:x}; \
                 applied elsewhere with term {} chain {:x}",
                meta.index, meta.term, known.term, known.chain
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::app::AppState;

    fn entry(index: Index, term: Term, data: &'static [u8]) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::from_static(data),
        }
    }

    /// Two leaders in one term are caught; the same leader reported twice is fine.
    #[test]
    fn election_safety() {
        let mut c = Checker::new();
        c.on_leader(1, 3, 1).unwrap();
        c.on_leader(1, 3, 1).unwrap();
        c.on_leader(2, 3, 2).unwrap();
        assert!(c
            .on_leader(1, 3, 2)
            .unwrap_err()
            .contains("election safety"));
    }

    /// Same (index, term) with other data, or after another term, is caught.
    #[test]
    fn log_matching() {
        let mut c = Checker::new();
        c.on_entries(1, &[entry(1, 1, b"a"), entry(2, 1, b"b")], Some(0))
            .unwrap();
        c.on_entries(1, &[entry(2, 1, b"b")], Some(1)).unwrap();
        assert!(c.on_entries(1, &[entry(2, 1, b"x")], Some(1)).is_err());
        assert!(c.on_entries(1, &[entry(2, 1, b"b")], Some(7)).is_err());
        c.on_entries(1, &[entry(3, 2, b"c")], None).unwrap();
        assert!(
            c.on_entries(1, &[entry(3, 2, b"c")], Some(1)).is_ok(),
            "learns prev"
        );
        assert!(c.on_entries(1, &[entry(3, 2, b"c")], Some(2)).is_err());
    }

    /// Applies must agree across members and go up by one; snapshots must match the chain.
    #[test]
    fn state_machine_safety_and_monotonic_apply() {
        let mut c = Checker::new();
        let mut a = AppState::default();
        for e in [entry(1, 1, b"a"), entry(2, 1, b"b")] {
            a.apply(&e);
            c.on_apply(1, 1, 1, &e, a.chain).unwrap();
        }
        assert_eq!(c.max_committed(1), 2);
        assert_eq!(c.committed(1, 2).unwrap().data, Bytes::from_static(b"b"));

        let mut b = AppState::default();
        let e1 = entry(1, 1, b"a");
        b.apply(&e1);
        c.on_apply(1, 2, 1, &e1, b.chain).unwrap();
        let wrong = entry(2, 1, b"z");
        b.apply(&wrong);
        assert!(c
            .on_apply(1, 2, 1, &wrong, b.chain)
            .unwrap_err()
            .contains("state machine"));

        assert!(c
            .on_apply(1, 1, 1, &entry(4, 1, b"d"), 0)
            .unwrap_err()
            .contains("by one"));

        let meta = SnapshotMeta { index: 2, term: 1 };
        c.on_snapshot_install(1, 3, meta, a.chain).unwrap();
        assert!(c
            .on_snapshot_install(1, 3, meta, a.chain)
            .unwrap_err()
            .contains("back"));
        assert!(c.on_snapshot_install(1, 4, meta, 12345).is_err());
        c.on_crash(3);
        c.on_restart(1, 3, meta, a.chain).unwrap();
        assert!(c
            .on_restart(1, 3, SnapshotMeta { index: 9, term: 1 }, 0)
            .is_err());
    }
}
