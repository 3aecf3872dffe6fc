//! The in-memory side of the WAL: each group's index from log index to on-disk location, its
//! hard state and compaction point, the rules a log change must follow, and the cache of
//! recent entries' data.
//!
//! A group's log is a run of slots `first..=last` (entries past its compaction point that were
//! not truncated away). Appending index `i` drops every slot at or after `i` first, so the live
//! slots' locations only grow with the index: the first slot's segment is the oldest segment
//! the group needs.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::codec::{Decoded, EntryRef, GroupState};
use super::{HardState, WalEntry};

/// Where an entry is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The segment's number.
    pub segment: u64,
    /// The offset of the `Entries` record holding it.
    pub record_offset: u32,
    /// The offset of the entry's meta in that record's payload.
    pub payload_offset: u32,
}

/// One live entry of a group.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Its term.
    pub term: u64,
    /// Its kind byte.
    pub kind: u8,
    /// Its data's length.
    pub data_bytes: u32,
    /// Where it is on disk.
    pub location: Location,
    /// Its data, while cached, with the cache sequence number that put it there.
    pub cached: Option<(u64, Bytes)>,
}

/// One group's state.
#[derive(Clone, Debug, Default)]
pub struct GroupIndex {
    /// The last compaction (snapshot) point: index and term.
    pub compacted: Option<(u64, u64)>,
    /// The index of `slots[0]`.
    pub first_slot: u64,
    /// The live entries, `first_slot..first_slot + slots.len()`.
    pub slots: VecDeque<Slot>,
    /// The latest hard state.
    pub hard_state: Option<HardState>,
    /// Live entries known only from a checkpoint, whose records were in segments deleted
    /// before the first one recovery found: `first..=last`, just before `first_slot`. Only
    /// recovery has them, and only until a later compaction or truncation drops them; any
    /// left at the end of recovery are lost entries, and recovery fails.
    pub missing: Option<(u64, u64)>,
}

impl GroupIndex {
    /// The shape the log-change rules look at.
    pub fn shape(&self) -> Shape {
        let slots = match (self.missing, self.last_slot()) {
            (Some((first, _)), Some(last)) | (Some((first, last)), None) => Some((first, last)),
            (None, Some(last)) => Some((self.first_slot, last)),
            (None, None) => None,
        };
        Shape {
            compacted: self.compacted.map(|(index, _)| index),
            slots,
        }
    }

    /// What a checkpoint records of this group.
    pub fn checkpoint(&self) -> GroupState {
        GroupState {
            hard_state: self.hard_state,
            compacted: self.compacted,
            range: self.shape().slots,
        }
    }

    fn last_slot(&self) -> Option<u64> {
        (!self.slots.is_empty()).then(|| self.first_slot + self.slots.len() as u64 - 1)
    }

    /// The first index that can be read, or the one after the compaction point when no entry
    /// follows it.
    pub fn first_index(&self) -> Option<u64> {
        self.shape().first_index()
    }

    /// The last index: of the last entry, or the compaction point when no entry follows it.
    pub fn last_index(&self) -> Option<u64> {
        self.shape().last_index()
    }

    /// The slot of `index`, if live.
    pub fn slot(&self, index: u64) -> Option<&Slot> {
        let offset = index.checked_sub(self.first_slot)?;
        self.slots.get(usize::try_from(offset).ok()?)
    }

    fn slot_mut(&mut self, index: u64) -> Option<&mut Slot> {
        let offset = index.checked_sub(self.first_slot)?;
        self.slots.get_mut(usize::try_from(offset).ok()?)
    }

    /// The oldest segment this group's entries need.
    pub fn oldest_segment(&self) -> Option<u64> {
        self.slots.front().map(|slot| slot.location.segment)
    }

    /// Whether the group holds anything at all.
    pub fn is_empty(&self) -> bool {
        self.compacted.is_none() && self.slots.is_empty() && self.hard_state.is_none()
    }
}

/// The part of a group's state that decides which log changes are allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// The compaction index.
    pub compacted: Option<u64>,
    /// The live entries' first and last index.
    pub slots: Option<(u64, u64)>,
}

impl Shape {
    /// See [`GroupIndex::first_index`].
    pub fn first_index(&self) -> Option<u64> {
        match (self.slots, self.compacted) {
            (Some((first, _)), _) => Some(first),
            (None, Some(compacted)) => compacted.checked_add(1),
            (None, None) => None,
        }
    }

    /// See [`GroupIndex::last_index`].
    pub fn last_index(&self) -> Option<u64> {
        self.slots.map(|(_, last)| last).or(self.compacted)
    }

    /// The shape after appending `count` entries from `first`, or why that is not allowed.
    pub fn append(self, first: u64, count: u64) -> Result<Shape, String> {
        assert!(count > 0);
        if first == 0 {
            return Err("log indexes start at 1".to_string());
        }
        let last = first
            .checked_add(count - 1)
            .ok_or("entry index overflows u64")?;
        if let Some(compacted) = self.compacted.filter(|c| first <= *c) {
            return Err(format!(
                "entries from {first} start at or below the compaction index {compacted}"
            ));
        }
        if let Some(current) = self.last_index().filter(|l| first > l.saturating_add(1)) {
            return Err(format!(
                "entries from {first} leave a gap after the last index {current}"
            ));
        }
        let slots = match self.slots {
            Some((slot_first, _)) if first > slot_first => (slot_first, last),
            _ => (first, last),
        };
        Ok(Shape {
            compacted: self.compacted,
            slots: Some(slots),
        })
    }

    /// The shape after dropping entries at and after `from`, or why that is not allowed.
    pub fn truncate(self, from: u64) -> Result<Shape, String> {
        if let Some(compacted) = self.compacted.filter(|c| from <= *c) {
            return Err(format!(
                "truncation from {from} reaches the compaction index {compacted}"
            ));
        }
        let slots = match self.slots {
            Some((first, _)) if from <= first => None,
            Some((first, last)) if from <= last => Some((first, from - 1)),
            slots => slots,
        };
        Ok(Shape {
            compacted: self.compacted,
            slots,
        })
    }

    /// The shape after compacting through `index`, or why that is not allowed.
    pub fn compact(self, index: u64) -> Result<Shape, String> {
        if let Some(compacted) = self.compacted.filter(|c| index < *c) {
            return Err(format!(
                "compaction to {index} goes back behind the compaction index {compacted}"
            ));
        }
        let slots = match self.slots {
            Some((_, last)) if last <= index => None,
            Some((first, last)) if first <= index => Some((index + 1, last)),
            slots => slots,
        };
        Ok(Shape {
            compacted: Some(index),
            slots,
        })
    }

    /// The shape after a checkpoint's record of the group, or why it does not match the log.
    pub fn checkpoint(self, state: &GroupState) -> Result<Shape, String> {
        let mut shape = self;
        if let Some((index, _)) = state.compacted {
            shape = shape.compact(index)?;
        }
        match (shape.slots, state.range) {
            (None, Some(range)) if shape.compacted.is_some_and(|c| range.0 <= c) => Err(format!(
                "checkpoint range {range:?} starts at or below the compaction index"
            )),
            (None, Some(range)) => Ok(Shape {
                slots: Some(range),
                ..shape
            }),
            (slots, range) if slots == range => Ok(shape),
            (slots, range) => Err(format!(
                "checkpoint says the live entries are {range:?}, the log holds {slots:?}"
            )),
        }
    }

    /// The shape after `record`, or why it is not allowed.
    pub fn apply(self, record: &Decoded<'_>) -> Result<Shape, String> {
        match record {
            Decoded::GroupState(state) => self.checkpoint(state),
            Decoded::Entries(entries) => {
                let first = entries
                    .first()
                    .expect("decoded entries are never empty")
                    .index;
                self.append(first, entries.len() as u64)
            }
            Decoded::HardState(_) => Ok(self),
            Decoded::Compact { index, .. } => self.compact(*index),
            Decoded::Truncate { from_index } => self.truncate(*from_index),
        }
    }
}

/// Every group's index, and the cache of recent entries' data.
#[derive(Debug, Default)]
pub struct Index {
    /// The groups, by id (ordered, so checkpoints are written in a stable order).
    pub groups: BTreeMap<u64, GroupIndex>,
    cache: Cache,
}

#[derive(Debug, Default)]
struct Cache {
    budget_bytes: usize,
    cached_bytes: usize,
    cached_entries: usize,
    next_sequence: u64,
    /// Cached entries in the order they were cached: (group, index, sequence). An entry that
    /// was since dropped or replaced leaves a stale item, skipped when it reaches the front.
    order: VecDeque<(u64, u64, u64)>,
}

/// The bound on stale items in the cache's order queue, relative to the live ones. Why 2x:
/// truncations and compactions leave stale items; past twice the live count the queue is
/// trimmed from the front so it cannot grow without bound while the byte budget is not reached.
const CACHE_ORDER_SLACK: usize = 2;

impl Index {
    /// An empty index whose cache holds up to `cache_bytes` of entry data.
    pub fn new(cache_bytes: usize) -> Index {
        Index {
            groups: BTreeMap::new(),
            cache: Cache {
                budget_bytes: cache_bytes,
                ..Cache::default()
            },
        }
    }

    /// Applies one checked record of `group`, found at `record_offset` of `segment`. The
    /// caller checked it against the group's [`Shape`] first.
    pub fn apply(&mut self, group: u64, record: &Decoded<'_>, segment: u64, record_offset: u32) {
        let Index { groups, cache } = self;
        let state = groups.entry(group).or_default();
        match record {
            Decoded::Entries(entries) => {
                let first = entries[0].index;
                drop_from(state, first, cache);
                if state.slots.is_empty() {
                    state.first_slot = first;
                }
                for entry in entries {
                    state.slots.push_back(slot(entry, segment, record_offset));
                }
            }
            Decoded::HardState(hard_state) => state.hard_state = Some(*hard_state),
            Decoded::Compact { index, term } => compact(state, *index, *term, cache),
            Decoded::Truncate { from_index } => drop_from(state, *from_index, cache),
            Decoded::GroupState(checkpoint) => {
                if let Some(hard_state) = checkpoint.hard_state {
                    state.hard_state = Some(hard_state);
                }
                if let Some((index, term)) = checkpoint.compacted {
                    compact(state, index, term, cache);
                }
                if let Some((first, last)) = checkpoint.range {
                    if state.slots.is_empty() && state.missing.is_none() {
                        state.missing = Some((first, last));
                        state.first_slot = last + 1;
                    }
                }
            }
        }
    }

    /// Caches the data of `group`'s live entries `entries` (each by its index), evicting the
    /// oldest cached entries beyond the budget.
    pub fn cache(&mut self, group: u64, entries: &[WalEntry]) {
        let Some(state) = self.groups.get_mut(&group) else {
            return;
        };
        let cache = &mut self.cache;
        for entry in entries {
            let data = &entry.data;
            if data.len() > cache.budget_bytes {
                continue;
            }
            let Some(slot) = state.slot_mut(entry.index) else {
                continue;
            };
            if slot.data_bytes as usize != data.len() {
                continue;
            }
            cache.next_sequence += 1;
            if let Some((_, old)) = slot.cached.replace((cache.next_sequence, data.clone())) {
                cache.cached_bytes -= old.len();
                cache.cached_entries -= 1;
            }
            cache.cached_bytes += data.len();
            cache.cached_entries += 1;
            cache
                .order
                .push_back((group, entry.index, cache.next_sequence));
        }
        self.evict();
    }

    fn evict(&mut self) {
        let cache = &mut self.cache;
        while cache.cached_bytes > cache.budget_bytes
            || cache.order.len() > CACHE_ORDER_SLACK * cache.cached_entries + 64
        {
            let Some((group, index, sequence)) = cache.order.pop_front() else {
                break;
            };
            let Some(slot) = self.groups.get_mut(&group).and_then(|g| g.slot_mut(index)) else {
                continue;
            };
            if slot.cached.as_ref().is_some_and(|(s, _)| *s == sequence) {
                let (_, data) = slot.cached.take().expect("checked");
                cache.cached_bytes -= data.len();
                cache.cached_entries -= 1;
            }
        }
    }

    /// The bytes of entry data cached now.
    pub fn cached_bytes(&self) -> usize {
        self.cache.cached_bytes
    }
}

impl Cache {
    /// `slot` left the index: its cached data no longer counts.
    fn forget(&mut self, slot: &Slot) {
        if let Some((_, data)) = &slot.cached {
            self.cached_bytes -= data.len();
            self.cached_entries -= 1;
        }
    }
}

// Both drop slots in place, each forgotten by the cache as it goes: a compaction drops a
// snapshot's worth of slots at once (hundreds of thousands), and collecting them first grew a
// vector of that size (page faults and copies) on every node at the same moment.
fn drop_from(state: &mut GroupIndex, from: u64, cache: &mut Cache) {
    let keep = from.saturating_sub(state.first_slot);
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    if keep < state.slots.len() {
        for slot in state.slots.drain(keep..) {
            cache.forget(&slot);
        }
    }
    state.missing = match state.missing {
        Some((first, _)) if from <= first => None,
        Some((first, last)) if from <= last => Some((first, from - 1)),
        missing => missing,
    };
}

fn compact(state: &mut GroupIndex, index: u64, term: u64, cache: &mut Cache) {
    // The slots at indexes up to `index`: from `first_slot`, as many as there are.
    let through = index.saturating_sub(state.first_slot).saturating_add(1);
    let count = if state.first_slot <= index {
        usize::try_from(through).map_or(state.slots.len(), |n| n.min(state.slots.len()))
    } else {
        0
    };
    for slot in state.slots.drain(..count) {
        cache.forget(&slot);
    }
    state.first_slot += count as u64;
    state.missing = match state.missing {
        Some((_, last)) if last <= index => None,
        Some((first, last)) if first <= index => Some((index + 1, last)),
        missing => missing,
    };
    state.compacted = Some((index, term));
}

fn slot(entry: &EntryRef<'_>, segment: u64, record_offset: u32) -> Slot {
    Slot {
        term: entry.term,
        kind: entry.kind,
        data_bytes: entry.data.len() as u32,
        location: Location {
            segment,
            record_offset,
            payload_offset: entry.payload_offset,
        },
        cached: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log-change rules: appends truncate a conflicting suffix, may not leave gaps or
    /// reach behind a compaction; truncation and compaction move the ends as documented.
    #[test]
    fn shapes_follow_the_rules() {
        let empty = Shape::default();
        assert_eq!(empty.first_index(), None);
        let log = empty.append(5, 6).unwrap(); // 5..=10
        assert_eq!((log.first_index(), log.last_index()), (Some(5), Some(10)));
        assert!(log.append(12, 1).is_err(), "gap");
        assert!(empty.append(0, 1).is_err(), "index 0");
        let conflict = log.append(8, 1).unwrap();
        assert_eq!(conflict.slots, Some((5, 8)));
        let whole = log.append(3, 2).unwrap();
        assert_eq!(whole.slots, Some((3, 4)));
        let cut = log.truncate(7).unwrap();
        assert_eq!(cut.slots, Some((5, 6)));
        assert_eq!(log.truncate(5).unwrap().slots, None);
        assert_eq!(log.truncate(20).unwrap(), log);
        let compacted = log.compact(7).unwrap();
        assert_eq!(
            (compacted.first_index(), compacted.last_index()),
            (Some(8), Some(10))
        );
        assert!(compacted.compact(6).is_err(), "backwards");
        assert!(compacted.truncate(7).is_err(), "behind the compaction");
        assert!(compacted.append(7, 1).is_err(), "behind the compaction");
        let past = log.compact(20).unwrap();
        assert_eq!(
            (past.first_index(), past.last_index()),
            (Some(21), Some(20))
        );
        assert!(past.append(22, 1).is_err());
        assert_eq!(past.append(21, 1).unwrap().slots, Some((21, 21)));
    }
}
