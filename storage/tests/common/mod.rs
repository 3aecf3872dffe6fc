//! Helpers shared by the WAL's integration tests: temporary directories, and batches whose
//! contents can be rebuilt from a few numbers so a test can check what it reads back.
#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use shardcore_storage::{HardState, LogRecord, WalConfig, WalEntry};

/// A directory under the system's temp dir, removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new, empty, uniquely named directory.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "shardcore-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A config with segments of `segment_bytes` and the default cache.
pub fn small_config(segment_bytes: u64) -> WalConfig {
    WalConfig {
        segment_bytes,
        ..WalConfig::new()
    }
}

/// The data of `group`'s entry `index` written in term `term`: rebuildable, distinct per
/// (group, index, term), of a length between `max_bytes / 2` and `max_bytes` that varies
/// with them.
pub fn data(group: u64, index: u64, term: u64, max_bytes: u64) -> Bytes {
    let len = max_bytes / 2 + (group * 7 + index * 13 + term) % (max_bytes / 2 + 1);
    let byte = (group * 31 + index * 17 + term * 5) as u8;
    Bytes::from(vec![byte; len as usize])
}

/// Entries `from..from + count` of `group` in `term`, with [`data`].
pub fn entries(group: u64, from: u64, count: u64, term: u64, max_bytes: u64) -> Vec<WalEntry> {
    (from..from + count)
        .map(|index| WalEntry {
            index,
            term,
            kind: (index % 3) as u8,
            data: data(group, index, term, max_bytes),
        })
        .collect()
}

/// An entries record.
pub fn entries_record(group: u64, from: u64, count: u64, term: u64, max_bytes: u64) -> LogRecord {
    LogRecord::Entries {
        group,
        entries: entries(group, from, count, term, max_bytes),
    }
}

/// A hard-state record.
pub fn hard_state_record(group: u64, term: u64, vote: u64, commit: u64) -> LogRecord {
    LogRecord::HardState {
        group,
        state: HardState { term, vote, commit },
    }
}

/// A seeded generator (SplitMix64): tests replay from the seed they print.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// What a WAL should hold: the same rules applied to plain maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// Per group.
    pub groups: std::collections::BTreeMap<u64, ModelGroup>,
}

/// One group of the [`Model`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelGroup {
    /// Live entries by index.
    pub entries: std::collections::BTreeMap<u64, WalEntry>,
    /// The latest hard state.
    pub hard_state: Option<HardState>,
    /// The compaction point.
    pub compacted: Option<(u64, u64)>,
}

impl ModelGroup {
    /// The last index, as the WAL defines it.
    pub fn last_index(&self) -> Option<u64> {
        let last = self.entries.keys().next_back().copied();
        last.or(self.compacted.map(|c| c.0))
    }

    /// The first index, as the WAL defines it.
    pub fn first_index(&self) -> Option<u64> {
        let first = self.entries.keys().next().copied();
        first.or(self.compacted.map(|c| c.0 + 1))
    }
}

impl Model {
    /// Applies a batch the WAL accepted.
    pub fn apply(&mut self, batch: &[LogRecord]) {
        for record in batch {
            let group = self.groups.entry(record.group()).or_default();
            match record {
                LogRecord::Entries { entries, .. } => {
                    if let Some(first) = entries.first() {
                        group.entries.split_off(&first.index);
                        for entry in entries {
                            group.entries.insert(entry.index, entry.clone());
                        }
                    }
                }
                LogRecord::HardState { state, .. } => group.hard_state = Some(*state),
                LogRecord::Truncate { from_index, .. } => {
                    group.entries.split_off(from_index);
                }
                LogRecord::Compact { index, term, .. } => {
                    group.entries = group.entries.split_off(&(index + 1));
                    group.compacted = Some((*index, *term));
                }
            }
        }
    }

    /// Asserts the WAL holds exactly what the model does.
    pub fn check(&self, wal: &shardcore_storage::Wal, context: &str) {
        if let Some(difference) = self.difference(wal) {
            panic!("{context}: {difference}");
        }
    }

    /// How the WAL differs from the model, if it does.
    pub fn difference(&self, wal: &shardcore_storage::Wal) -> Option<String> {
        for (id, group) in &self.groups {
            let id = *id;
            let seen = (
                wal.hard_state(id),
                wal.compacted(id),
                wal.first_index(id),
                wal.last_index(id),
            );
            let expected = (
                group.hard_state,
                group.compacted,
                group.first_index(),
                group.last_index(),
            );
            if seen != expected {
                return Some(format!(
                    "group {id}: (hard state, compacted, first, last) is {seen:?}, expected \
                     {expected:?}"
                ));
            }
            if let (Some(first), Some(last)) = (
                group.entries.keys().next().copied(),
                group.entries.keys().next_back().copied(),
            ) {
                let read = match wal.entries(id, first, last) {
                    Ok(read) => read,
                    Err(error) => return Some(format!("group {id}: {error}")),
                };
                let expected: Vec<WalEntry> = group.entries.values().cloned().collect();
                if read != expected {
                    return Some(format!("group {id}: entries {first}..={last} differ"));
                }
            }
        }
        let groups: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| *g != &ModelGroup::default())
            .map(|(id, _)| *id)
            .collect();
        if wal.groups() != groups {
            return Some(format!("groups {:?}, expected {groups:?}", wal.groups()));
        }
        None
    }
}

/// A random batch of 1..=`max_records` records over groups `1..=groups`, valid against
/// `model`: appends (mostly at the end, sometimes over a conflicting suffix), hard states,
/// truncations and compactions. `term` tags the entries so rewritten ones differ.
pub fn random_batch(
    rng: &mut Rng,
    model: &Model,
    groups: u64,
    max_records: u64,
    max_bytes: u64,
    term: u64,
) -> Vec<LogRecord> {
    let mut shadow = model.clone();
    let mut batch = Vec::new();
    for _ in 0..1 + rng.below(max_records) {
        let group = 1 + rng.below(groups);
        let state = shadow.groups.get(&group).cloned().unwrap_or_default();
        let floor = state.compacted.map_or(1, |c| c.0 + 1);
        let next = state.last_index().map_or(1, |l| l + 1);
        let record = match rng.below(10) {
            0..=4 => {
                let from = if next > floor && rng.below(5) == 0 {
                    floor + rng.below(next - floor)
                } else {
                    next
                };
                entries_record(group, from, 1 + rng.below(4), term, max_bytes)
            }
            5 | 6 => hard_state_record(group, term, rng.below(5), next - 1),
            7 => LogRecord::Truncate {
                group,
                from_index: floor + rng.below(next - floor + 1),
            },
            _ => {
                let index = state.compacted.map_or(0, |c| c.0) + rng.below(next - floor + 1);
                LogRecord::Compact { group, index, term }
            }
        };
        shadow.apply(std::slice::from_ref(&record));
        batch.push(record);
    }
    batch
}
