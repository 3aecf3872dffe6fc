//! One core's durable state: its write-ahead log and its snapshot store, opened and recovered
//! together; then handed to their writers ([`CoreDisk::into_parts`]): the log to the core's
//! [`super::log_writer::LogWriter`], the snapshot store to its snapshot thread. Any error is
//! final for the node: the WAL poisons itself after a failed write or fdatasync, and the caller
//! stops rather than acknowledge anything unsaved.
//!
//! Layout under the node's data directory: `core-<n>/wal/` (segments) and `core-<n>/snap/`
//! (one snapshot file per group).

use std::fmt;
use std::path::{Path, PathBuf};

use shardcore_storage::snapshot::{SnapshotError, SnapshotStore};
use shardcore_storage::{Recovery, Wal, WalConfig, WalError};

use super::core::{from_wal_entry, GroupBoot, WriteBatch};
use crate::raft::{GroupId, HardState, Snapshot, SnapshotMeta};

/// Why a core's storage failed; the node stops on any of these.
#[derive(Debug)]
pub enum DiskError {
    /// The log failed (I/O, full disk, corruption found at recovery, poisoned).
    Wal(WalError),
    /// The snapshot store failed.
    Snapshot(SnapshotError),
    /// The durable state is inconsistent with itself or with this node's layout.
    Inconsistent(String),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Wal(e) => write!(f, "write-ahead log: {e}"),
            DiskError::Snapshot(e) => write!(f, "snapshot store: {e}"),
            DiskError::Inconsistent(what) => write!(f, "durable state: {what}"),
        }
    }
}

impl std::error::Error for DiskError {}

impl From<WalError> for DiskError {
    fn from(e: WalError) -> DiskError {
        DiskError::Wal(e)
    }
}

impl From<SnapshotError> for DiskError {
    fn from(e: SnapshotError) -> DiskError {
        DiskError::Snapshot(e)
    }
}

/// The directory of core `core` under a node's data directory.
pub fn core_dir(data_dir: &Path, core: usize) -> PathBuf {
    data_dir.join(format!("core-{core}"))
}

/// A core's log and snapshots.
pub struct CoreDisk {
    wal: Wal,
    snapshots: SnapshotStore,
    recovery: Recovery,
}

impl CoreDisk {
    /// Opens (creating if new) the storage of core `core` under `data_dir` and recovers the
    /// durable state of `groups` (the groups placement gives this core). A group found on disk
    /// that is not in `groups` is an error: it means the node restarted with another core count
    /// or group count, which would strand that group's log.
    pub fn open(
        data_dir: &Path,
        core: usize,
        groups: &[GroupId],
        config: WalConfig,
    ) -> Result<(CoreDisk, Vec<GroupBoot>), DiskError> {
        let dir = core_dir(data_dir, core);
        let (wal, recovery) = Wal::open(&dir.join("wal"), config)?;
        let mut snapshots = SnapshotStore::open(dir.join("snap"))?;
        for group in wal.groups().into_iter().chain(snapshots.groups()) {
            if !groups.contains(&group) {
                return Err(DiskError::Inconsistent(format!(
                    "{} holds state of group {group}, which core {core} does not own with this \
                     configuration (was the node restarted with another --cores or group count?)",
                    dir.display()
                )));
            }
        }
        let mut boots = Vec::with_capacity(groups.len());
        for &group in groups {
            boots.push(recover_group(&wal, &mut snapshots, group)?);
        }
        Ok((
            CoreDisk {
                wal,
                snapshots,
                recovery,
            },
            boots,
        ))
    }

    /// What recovery found in the log (records, bytes, a torn tail cut off).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Makes `batch` durable and returns when it is: its snapshots first (each fsynced and
    /// renamed into place), then its records under one fdatasync. Returns the groups the log
    /// asks to snapshot because they pin its oldest segment. Blocking: for tests and tools
    /// that drive a core without the runtime (the node writes through
    /// [`super::log_writer::LogWriter`]).
    pub fn write(&mut self, batch: &WriteBatch) -> Result<Vec<GroupId>, DiskError> {
        for s in &batch.snapshots {
            let meta = s.snapshot.meta;
            match self
                .snapshots
                .write(s.group, meta.index, meta.term, &s.snapshot.data)
            {
                Ok(_) | Err(SnapshotError::NotNewer { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !batch.records.is_empty() {
            self.wal.append(&batch.records)?;
        }
        Ok(self.wal.groups_to_snapshot())
    }

    /// The log and the snapshot store, to hand to their writers
    /// ([`super::log_writer::LogWriter`] on the executor, the snapshot thread).
    pub fn into_parts(self) -> (Wal, SnapshotStore) {
        (self.wal, self.snapshots)
    }

    /// Segments on disk now.
    pub fn segments(&self) -> usize {
        self.wal.segments()
    }
}

fn recover_group(
    wal: &Wal,
    snapshots: &mut SnapshotStore,
    group: GroupId,
) -> Result<GroupBoot, DiskError> {
    let snapshot = match snapshots.latest(group).cloned() {
        None => None,
        Some(meta) => Some(Snapshot {
            meta: SnapshotMeta {
                index: meta.index,
                term: meta.term,
            },
            data: snapshots.read_all(group, meta.index)?,
        }),
    };
    let snap_index = snapshot.as_ref().map_or(0, |s| s.meta.index);
    if let Some((compacted, _)) = wal.compacted(group) {
        if compacted > snap_index {
            return Err(DiskError::Inconsistent(format!(
                "group {group}: the log is compacted to index {compacted} but the latest \
                 snapshot is at {snap_index}"
            )));
        }
    }
    let hard_state = wal
        .hard_state(group)
        .map(|hs| HardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        })
        .unwrap_or_default();
    let mut entries = Vec::new();
    if let (Some(first), Some(last)) = (wal.first_index(group), wal.last_index(group)) {
        let from = first.max(snap_index + 1);
        if from > snap_index + 1 && from <= last {
            return Err(DiskError::Inconsistent(format!(
                "group {group}: the log starts at {first} but the snapshot ends at {snap_index}; \
                 entries in between are missing"
            )));
        }
        if from <= last {
            for entry in wal.entries(group, from, last)? {
                let index = entry.index;
                let entry = from_wal_entry(entry).ok_or_else(|| {
                    DiskError::Inconsistent(format!(
                        "group {group}: entry {index} has an unknown kind"
                    ))
                })?;
                entries.push(entry);
            }
        }
    }
    let mut hard_state = hard_state;
    // The commit index is only a hint of progress; it cannot point past what is held.
    let held = entries.last().map_or(snap_index, |e| e.index);
    hard_state.commit = hard_state.commit.min(held).max(snap_index);
    Ok(GroupBoot {
        group,
        hard_state,
        snapshot,
        entries,
    })
}
