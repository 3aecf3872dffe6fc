//! The write-ahead log of one core, shared by every Raft group on that core.
//!
//! # What it stores
//! Logical records tagged with their group ([`LogRecord`]): runs of entries, hard states,
//! truncations of a conflicting suffix, and compactions (a group's snapshot passed an index).
//! [`Wal::append`] takes records of many groups and returns after **one** `fdatasync` that
//! covers them all (group commit).
//!
//! # On disk
//! A directory of segment files `wal-00000001.seg`, `wal-00000002.seg`, ... (see
//! [`crate::segment`]), each preallocated to [`WalConfig::segment_bytes`]. A segment holds
//! batches, one per `append`: a [`RecordKind::Batch`] record giving the length, CRC-32C and
//! sequence number of its body and the number of the segment it is written in, then the
//! body: the batch's records, each with its own header and checksums ([`crate::record`]).
//! The batch envelope makes a batch atomic: recovery applies a batch only when its whole body
//! checks, so a crash leaves an unacknowledged batch entirely there or entirely absent, never
//! in part. Every write ends with the *end mark*: a record header's worth of zeros after the
//! batch (in the padding to a whole block, or one more block when the padding is shorter),
//! which is where recovery finds the end of the log.
//!
//! # Writes: the partial last block is rewritten
//! Writes use `O_DIRECT` with 4096-byte aligned buffers, offsets and lengths. A batch rarely
//! ends on a block boundary; the WAL keeps the partial last block of the open segment in
//! memory and starts the next write with it, rewriting the acknowledged bytes in that block
//! identically. A torn rewrite leaves each sector either old or new, and both hold the same
//! acknowledged bytes, so it cannot lose them (PostgreSQL rewrites its partial WAL page the
//! same way). The alternative, padding each batch to a block boundary with a skip marker,
//! costs up to 4 KiB of segment space per batch: with small group commits (one Raft entry of
//! a few hundred bytes) that fills segments ten times faster and multiplies rotations and
//! snapshots; the rewrite costs no space and the same one-block write.
//!
//! # Segment space is written before it is used
//! Every segment is made in full before any batch goes into it: created, preallocated
//! (`fallocate`, so a full disk shows here, before any data is written), **written with
//! zeros** over its whole size, and `fsync`ed. Why the zeros: `fallocate` leaves *unwritten*
//! extents on ext4 and xfs, and the first write into one must convert it to written; that
//! conversion is metadata, so the `fdatasync` that follows must also commit it through the
//! journal. A log appending into merely preallocated space pays a journal commit on every
//! sync: measured here, small synced writes ran about 1.5x slower into a fallocated file
//! than into a zero-written one, and the WAL's small batches at 50% of raw. With the zeros
//! written (and synced) up front, an append's `fdatasync` carries only the data: the
//! segment's size, its blocks and their written state are all durable already, which is what
//! `fdatasync` may skip. The cost is writing each segment twice (zeros, then log), which
//! shows at batches large enough to be bound by the disk's bandwidth; so deleted segments are
//! reused (recycled, as RocksDB's `recycle_log_file_num`), and in steady state no segment is
//! zero-written at all: see Recycling.
//!
//! The same holds after recovery truncates a file that was cut short: the missing part is
//! preallocated again and its zeros written and synced before the first append.
//!
//! # Recycling
//! A segment that deletion removes is renamed to `wal-NNNNNNNN.free` (after its number; at
//! most [`RECYCLED_MAX_SEGMENTS`] are kept, the rest unlinked) and rotation renames one of
//! these into place as the next segment, before it turns to the zero-written spare. Its
//! blocks are all allocated and written (zeros once, then an earlier log), so appends into it
//! carry only data to the disk, as into a zero-written file. Its earlier log stays in it past
//! the new log's end, and must never be read as part of it:
//! - the writer puts the end mark after every batch, so the log's end is found right after
//!   the last batch, never in the earlier content;
//! - every batch names its segment, and recovery, looking past a bad spot for batches of this
//!   segment (proof that acknowledged writes follow, that is corruption rather than a torn
//!   tail), counts only batches that name it with a later sequence; a recycled file's batches
//!   name the older segment it was;
//! - reads follow only the index, which holds only records of batches recovery (or the
//!   writer) checked in this segment.
//!
//! A recycled file renamed into place but never written (a crash before its first batch)
//! still has its earlier header: recovery hands it back to the pool. The pool survives
//! restarts; a WAL with no segment at all (new) removes it, so that segment numbers starting
//! again at 1 cannot meet an old file's batches naming the same numbers.
//!
//! # Rotation
//! When a batch does not fit in the rest of the open segment, the WAL seals it and opens the
//! next: a recycled file when one waits (renamed into place, directory `fsync`ed). Else the
//! next segment is normally made ahead of need by a background thread, as the spare
//! file [`SPARE_FILE_NAME`] (created, preallocated, zero-written, `fsync`ed; never a segment
//! name, so recovery never reads it, and removes a leftover one at open). Rotation waits for
//! that thread if it is still running, renames the spare to the new segment's name and
//! `fsync`s the directory, so the name survives a crash. A new spare is started after the
//! append, once deletion has had its chance to refill the pool, and only if the pool is
//! empty: in steady state no spare is made. Without
//! a good spare (the thread failed, say on a full disk, or could not start, or the rename
//! failed) rotation makes the segment itself, the same steps in the foreground under the new
//! name, then its directory `fsync`. Either way a crash leaves the new segment either absent
//! or present and never written (zeros, or a recycled file's earlier header), which recovery
//! releases as a never-written last segment.
//! The sealed segment needs no sync of its own: every batch in it was synced before it was
//! acknowledged. So a batch that crosses into a new segment costs, besides its one
//! `fdatasync`, one `fsync` of the directory (and, without a spare, the making of the
//! segment). The first
//! batch of every segment starts with a *checkpoint*: one record per group with its hard
//! state, compaction point and the range of its live entries, so that older segments never
//! hold the only copy of a hard state or compaction point, and recovery that starts at a
//! later segment (the older ones deleted) knows which entries lived in the deleted ones: they
//! must be compacted or truncated away by the end of the log, or recovery fails.
//!
//! # Deletion
//! A segment is deleted once no group needs anything in it: every group's live entries start
//! in a later segment (each entry in it is at or below its group's compaction index, or was
//! truncated away), and the checkpoint of the open segment holds every hard state.
//! Segments are deleted oldest first (renamed into the recycling pool or unlinked), each
//! followed by a directory `fsync`, so that the segments on disk are always a contiguous run. With more than [`WalConfig::max_segments`]
//! on disk, [`Wal::groups_to_snapshot`] names the groups whose entries pin the oldest one.
//!
//! # Reads
//! [`Wal::entries`] serves from the in-memory cache of recent entries (the data the caller
//! appended, bounded by [`WalConfig::cache_bytes`]), else from disk: sealed segments through a
//! read-only `mmap`, the open segment through `pread`. Every record read from disk has its
//! checksums verified again; a bad one is an error, never data.
//!
//! # One writer, and a killed writer's last writes
//! The WAL holds an exclusive `flock` on `wal.lock` in its directory while open. Its io_uring
//! holds a reference to that lock file too (a registered file), so the lock outlives a process
//! killed with writes in flight until the kernel has completed them and torn the ring down.
//! Without this, a successor could recover while a dead predecessor's `O_DIRECT` write was
//! still landing: it would see the batch absent, append over it, and have its own acknowledged
//! batch overwritten (the kill -9 test caught exactly this). [`Wal::open`] waits up to
//! [`LOCK_WAIT`] for the lock.
//!
//! # Failures
//! A failed write or `fdatasync` poisons the WAL: the kernel may have dropped the dirty data
//! and cleared the error ("fsyncgate"), so nothing written since the last good sync can be
//! trusted, and every later `append` or `entries` returns [`WalError::Poisoned`]; restart and
//! recover from what is on disk. A rotation that fails before any byte of the batch was
//! written (a full disk at `fallocate`) returns its error and leaves the WAL usable.

mod codec;
mod index;
mod recovery;

pub use recovery::{LOCK_FILE_NAME, LOCK_WAIT};

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::Mmap;

use crate::fault::{
    injected_error, FaultKind, FaultPoints, WAL_FALLOCATE, WAL_FDATASYNC, WAL_ROTATE, WAL_WRITE,
};
use crate::record::{
    encode_record, read_record, ReadOutcome, RecordHeader, RecordKind, SegmentState, HEADER_BYTES,
};
use crate::segment::{
    create_direct, free_path, open_direct, preallocate, segment_path, sync_dir, write_zeros,
    SegmentHeader, SEGMENT_HEADER_BYTES,
};
use crate::uring::{AlignedBuf, Ring, Step, Sync, WriteRequest, BLOCK_BYTES};

use codec::{encode_log_record, entry_at, BatchHeader, BATCH_RECORD_BYTES};
use index::{GroupIndex, Index, Location, Shape};

/// The smallest segment: two blocks. Tests use segments this small to rotate often.
pub const MIN_SEGMENT_BYTES: u64 = 2 * BLOCK_BYTES as u64;
/// The largest segment. Why 1 GiB: record offsets are kept as u32, and one write (a whole
/// batch) must stay under Linux's 2 GiB limit per write call.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// How a WAL is sized, and its fault points.
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// The size each segment is preallocated to, a multiple of 4096 between
    /// [`MIN_SEGMENT_BYTES`] and [`MAX_SEGMENT_BYTES`]; default 64 MiB. A batch (with a
    /// checkpoint of every group) must fit in one segment.
    pub segment_bytes: u64,
    /// How many segments may be on disk before [`Wal::groups_to_snapshot`] names the groups
    /// pinning the oldest; default 16.
    pub max_segments: usize,
    /// How many bytes of recent entries' data are kept in memory; default 64 MiB.
    pub cache_bytes: usize,
    /// Fault points for tests; default: none armed.
    pub faults: FaultPoints,
}

impl WalConfig {
    /// The defaults.
    pub fn new() -> WalConfig {
        WalConfig {
            segment_bytes: 64 << 20,
            max_segments: 16,
            cache_bytes: 64 << 20,
            faults: FaultPoints::default(),
        }
    }

    fn check(&self) -> Result<(), WalError> {
        let bytes = self.segment_bytes;
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&bytes)
            || bytes % BLOCK_BYTES as u64 != 0
        {
            return Err(WalError::Invalid(format!(
                "segment_bytes {bytes} must be a multiple of {BLOCK_BYTES} between \
                 {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}"
            )));
        }
        if self.max_segments < 2 {
            return Err(WalError::Invalid(
                "max_segments must be at least 2 (the open segment and one sealed)".to_string(),
            ));
        }
        Ok(())
    }
}

impl Default for WalConfig {
    fn default() -> WalConfig {
        WalConfig::new()
    }
}

/// One Raft log entry as the WAL stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalEntry {
    /// Its log index (from 1).
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// Its kind (normal, configuration change, ...), opaque to the WAL.
    pub kind: u8,
    /// Its data, opaque to the WAL.
    pub data: Bytes,
}

/// A group's Raft hard state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The current term.
    pub term: u64,
    /// Who this replica voted for in it (0: nobody).
    pub vote: u64,
    /// The commit index.
    pub commit: u64,
}

/// One logical record of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRecord {
    /// Entries with contiguous indexes. An append that starts at or below the group's last
    /// index first drops the entries from there on (a follower's conflicting suffix, Raft
    /// §5.3); one that starts past the last index + 1 is refused.
    Entries {
        /// The group.
        group: u64,
        /// The entries, contiguous.
        entries: Vec<WalEntry>,
    },
    /// The group's hard state.
    HardState {
        /// The group.
        group: u64,
        /// Its state.
        state: HardState,
    },
    /// Drop the group's entries at and after `from_index`.
    Truncate {
        /// The group.
        group: u64,
        /// The first index dropped.
        from_index: u64,
    },
    /// The group's snapshot covers entries up to `index` (of `term`): they are no longer
    /// needed, and segments holding only such entries can be deleted.
    Compact {
        /// The group.
        group: u64,
        /// The snapshot's last index.
        index: u64,
        /// The term of that entry.
        term: u64,
    },
}

impl LogRecord {
    /// The record's group.
    pub fn group(&self) -> u64 {
        match self {
            LogRecord::Entries { group, .. }
            | LogRecord::HardState { group, .. }
            | LogRecord::Truncate { group, .. }
            | LogRecord::Compact { group, .. } => *group,
        }
    }
}

/// What one [`Wal::append`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Records written, the rotation checkpoint's included.
    pub records: u64,
    /// Bytes the log grew by.
    pub log_bytes: u64,
    /// Bytes handed to the disk: the log bytes plus the rewritten partial block and the
    /// padding to a whole block.
    pub bytes_written: u64,
    /// `fdatasync` calls on the data (one for any non-empty batch).
    pub fdatasyncs: u32,
    /// Whether the batch went into a new segment.
    pub rotated: bool,
    /// Whether the new segment (when `rotated`) reused a deleted segment's file rather than a
    /// newly made one: no zeros were written for it.
    pub recycled: bool,
    /// Segments deleted after the batch was durable (kept for reuse or unlinked).
    pub segments_deleted: usize,
}

/// What opening a WAL found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The groups with any state (entries, hard state or compaction), in order.
    pub groups: Vec<u64>,
    /// The records recovered (batch envelopes not counted).
    pub records: u64,
    /// The bytes of valid log scanned, over all segments.
    pub bytes: u64,
    /// The torn write cut off the end of the last segment, if any.
    pub torn_tail: Option<TornTail>,
}

/// A torn write cut off the end of the log at recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment it was in (the last one).
    pub file: PathBuf,
    /// Where the log now ends: the torn batch started here.
    pub offset: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// Why a WAL operation failed.
#[derive(Debug)]
pub enum WalError {
    /// A bad record that is not a torn tail: the WAL refuses to serve or recover past it.
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// The offset of the bad record (or batch) in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An I/O operation failed.
    Io {
        /// Which operation.
        op: &'static str,
        /// On which file or directory.
        file: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The disk is full (`ENOSPC` or `EDQUOT`).
    DiskFull {
        /// The file that could not grow or be written.
        file: PathBuf,
    },
    /// An earlier write or `fdatasync` failed: the WAL stops.
    Poisoned,
    /// A request the WAL refuses (bad config, a batch too large, a log change that breaks the
    /// rules, entries not in the log).
    Invalid(String),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "WAL corrupt in {} at offset {offset}: {reason}; this is not a torn write at the \
                 end of the log, so the WAL refuses to start rather than serve or drop records \
                 past it: restore this replica from its peers, or move the file aside after \
                 inspecting it",
                file.display()
            ),
            WalError::Io { op, file, source } => write!(
                f,
                "WAL I/O error: {op} on {} failed: {source}; the WAL stops, restart the node to \
                 recover from what is on disk",
                file.display()
            ),
            WalError::DiskFull { file } => write!(
                f,
                "WAL disk full: no space left on the device for {}; nothing unsaved was \
                 acknowledged and what was saved is kept: free space (or snapshot groups so old \
                 segments can be deleted) and retry or restart",
                file.display()
            ),
            WalError::Poisoned => write!(
                f,
                "WAL stopped after an earlier write or fdatasync failure; nothing after it was \
                 acknowledged: restart the node to recover from what is on disk"
            ),
            WalError::Invalid(what) => write!(f, "invalid WAL request: {what}"),
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A sealed segment, mapped for reads.
struct SealedSegment {
    number: u64,
    path: PathBuf,
    map: Mmap,
}

/// The segment appends go to.
struct OpenSegment {
    number: u64,
    path: PathBuf,
    /// Opened with `O_DIRECT`, for the ring's writes and syncs.
    direct: File,
    /// Opened without it, for `pread`.
    read: File,
    /// The size it was preallocated to: batches go up to here.
    capacity_bytes: u64,
    /// Where the next batch goes; 0 when the segment has no header yet.
    write_pos: u64,
    /// The bytes from the last block boundary at or before `write_pos` up to it: written and
    /// acknowledged, and rewritten identically at the start of the next write.
    tail: Vec<u8>,
}

/// The write-ahead log of one core; see the module docs.
pub struct Wal {
    /// The directory's lock, held while the WAL is open.
    _lock: File,
    dir: PathBuf,
    config: WalConfig,
    ring: Ring,
    /// The write buffer, reused; `None` only while the ring holds it.
    buf: Option<AlignedBuf>,
    records_buf: Vec<u8>,
    checkpoint_buf: Vec<u8>,
    sealed: VecDeque<SealedSegment>,
    open: OpenSegment,
    index: Index,
    next_sequence: u64,
    poisoned: bool,
    /// Whether a segment may have become deletable since the last check.
    deletion_due: bool,
    /// The next segment's space, being made (written with zeros and synced) in the
    /// background under [`SPARE_FILE_NAME`]; see the module docs.
    spare: Option<std::thread::JoinHandle<io::Result<File>>>,
    /// Deleted segments kept for reuse, by their old numbers (files `wal-NNNNNNNN.free`, each
    /// of `segment_bytes`, every block written), at most [`RECYCLED_MAX_SEGMENTS`].
    recycled: Vec<u64>,
}

/// The most deleted segments kept for reuse. Why 4: a node's compaction usually frees one
/// segment per rotation, sometimes a few at once (a lagging group's snapshot); four covers
/// those bursts, so rotation almost never waits for a zero-written spare, and holds at most
/// 4 segments (256 MiB by default) of disk that a `df` shows as used. Beyond it, deleted
/// segments are unlinked.
pub const RECYCLED_MAX_SEGMENTS: usize = 4;

/// The zeros written after every batch, in the same write: a record header's worth, which
/// recovery reads as the end of the log. In a recycled segment the bytes after the log's end
/// are the file's earlier content; the end mark keeps them from ever being read as the next
/// batch (see `recovery`).
const END_MARK_BYTES: usize = HEADER_BYTES;

/// The name of the spare segment file in a WAL directory: the next segment, made ahead of
/// need. Not a segment name, so recovery never reads it; it removes it.
pub const SPARE_FILE_NAME: &str = "wal-spare.tmp";

/// Starts making the spare segment in the background: create it, preallocate it, write its
/// zeros, `fsync` it. `None` if no thread could be started (rotation then makes the segment
/// itself).
fn start_spare(
    dir: &Path,
    segment_bytes: u64,
) -> Option<std::thread::JoinHandle<io::Result<File>>> {
    let path = dir.join(SPARE_FILE_NAME);
    let make = move || {
        let result = (|| {
            let file = create_direct(&path)?;
            preallocate(&file, segment_bytes)?;
            write_zeros(&file, 0, segment_bytes)?;
            file.sync_all()?;
            Ok(file)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result
    };
    std::thread::Builder::new()
        .name("wal-spare".to_string())
        .spawn(make)
        .ok()
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Leave no thread writing into the directory; the spare stays, recovery removes it.
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
    }
}

impl Wal {
    /// Opens the WAL in `dir` (created if missing) and recovers it: scans the segments in
    /// order, rebuilds every group's index, hard state and compaction point, and truncates a
    /// torn write at the end of the last segment (reported in [`Recovery::torn_tail`]). A bad
    /// record anywhere else is [`WalError::Corrupt`], naming the file and offset.
    ///
    /// Only one `Wal` may have a directory open: it holds the directory's lock file
    /// (`wal.lock`) until it is dropped, and after a kill -9 until the dead process's last
    /// write has landed. Opening waits up to [`LOCK_WAIT`] for the lock, then fails.
    pub fn open(dir: &Path, config: WalConfig) -> Result<(Wal, Recovery), WalError> {
        recovery::open(dir, config, LOCK_WAIT)
    }

    /// [`Wal::open`], waiting up to `lock_wait` for the directory's lock.
    pub fn open_waiting(
        dir: &Path,
        config: WalConfig,
        lock_wait: std::time::Duration,
    ) -> Result<(Wal, Recovery), WalError> {
        recovery::open(dir, config, lock_wait)
    }

    /// Appends `batch` (records of any groups, applied in order) and returns once it is
    /// durable: after one `fdatasync` of the open segment covering the whole batch. A batch
    /// that does not fit in the open segment goes into a new one: the spare segment made in
    /// the background renamed into place and the directory `fsync`ed (without a spare, the
    /// segment is made here first); the sealed segment was synced already.
    ///
    /// A batch with no records (or only empty runs of entries) writes nothing and returns at
    /// once, with zero stats. The batch is checked first: a log change that breaks the rules (a gap, entries not
    /// contiguous, reaching behind a compaction) is [`WalError::Invalid`] and writes nothing.
    /// A failed write or `fdatasync` poisons the WAL (see the module docs). After the batch is
    /// durable, segments no group needs any more are deleted; should that fail, the error is
    /// returned although the batch is durable (the caller does not acknowledge it; recovery
    /// finds it whole, which Raft allows for an unacknowledged append).
    pub fn append(&mut self, batch: &[LogRecord]) -> Result<AppendStats, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        self.check_batch(batch)?;
        self.records_buf.clear();
        let mut records = 0u32;
        for record in batch {
            records += encode_log_record(record, &mut self.records_buf)?;
        }
        if records == 0 {
            return Ok(AppendStats::default());
        }
        let mut stats = AppendStats::default();
        let fits = self.open.write_pos > 0
            && self.open.write_pos + (BATCH_RECORD_BYTES + self.records_buf.len()) as u64
                <= self.open.capacity_bytes;
        self.checkpoint_buf.clear();
        let mut checkpoint_records = 0;
        if !fits {
            checkpoint_records = self.encode_checkpoint();
            let fresh_bytes = (SEGMENT_HEADER_BYTES
                + BATCH_RECORD_BYTES
                + self.checkpoint_buf.len()
                + self.records_buf.len()) as u64;
            if fresh_bytes > self.config.segment_bytes {
                return Err(WalError::Invalid(format!(
                    "a batch of {} bytes (with a checkpoint of {} groups) does not fit in a \
                     segment of {} bytes: split it, or raise segment_bytes",
                    fresh_bytes,
                    self.index.groups.len(),
                    self.config.segment_bytes
                )));
            }
            if self.open.write_pos > 0 {
                stats.recycled = self.rotate()?;
                stats.rotated = true;
            }
            assert!(fresh_bytes <= self.open.capacity_bytes);
        }
        self.write_batch(checkpoint_records + records, &mut stats)?;
        for record in batch {
            if let LogRecord::Entries { group, entries } = record {
                for entry in entries {
                    self.index.cache(*group, entry.index, &entry.data);
                }
            }
            if matches!(
                record,
                LogRecord::Compact { .. } | LogRecord::Truncate { .. }
            ) {
                self.deletion_due = true;
            }
        }
        if stats.rotated || self.deletion_due {
            stats.segments_deleted = self.delete_obsolete_segments()?;
        }
        self.ensure_spare();
        Ok(stats)
    }

    /// Entries `from..=to_inclusive` of `group`: from the cache, else from disk, each record's
    /// checksums verified again. An empty range gives no entries; a range outside the
    /// group's `first_index..=last_index` is [`WalError::Invalid`].
    pub fn entries(
        &self,
        group: u64,
        from: u64,
        to_inclusive: u64,
    ) -> Result<Vec<WalEntry>, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        if from > to_inclusive {
            return Ok(Vec::new());
        }
        let state = self.index.groups.get(&group);
        let slots = state.and_then(|s| s.shape().slots);
        let Some((state, (first, last))) = state.zip(slots) else {
            return Err(WalError::Invalid(format!(
                "entries {from}..={to_inclusive} of group {group}: the WAL holds no entries of it"
            )));
        };
        if from < first || to_inclusive > last {
            return Err(WalError::Invalid(format!(
                "entries {from}..={to_inclusive} of group {group}: the WAL holds {first}..={last}"
            )));
        }
        let mut out = Vec::with_capacity((to_inclusive - from + 1).min(1 << 16) as usize);
        let mut loaded: Option<(Location, Cow<'_, [u8]>)> = None;
        for index in from..=to_inclusive {
            let Some(slot) = state.slot(index) else {
                return Err(WalError::Invalid(format!(
                    "entry {index} of group {group} is not indexed"
                )));
            };
            let data = match &slot.cached {
                Some((_, data)) => data.clone(),
                None => {
                    let location = slot.location;
                    let same_record = loaded.as_ref().is_some_and(|(at, _)| {
                        (at.segment, at.record_offset) == (location.segment, location.record_offset)
                    });
                    if !same_record {
                        loaded = Some((location, self.read_entries_payload(group, location)?));
                    }
                    let payload = &loaded.as_ref().expect("loaded above").1;
                    let (term, kind, data) = entry_at(payload, location.payload_offset)
                        .map_err(|what| self.corrupt(location, what.to_string()))?;
                    if (term, kind, data.len()) != (slot.term, slot.kind, slot.data_bytes as usize)
                    {
                        return Err(self.corrupt(
                            location,
                            format!("entry {index} differs from the one indexed"),
                        ));
                    }
                    Bytes::copy_from_slice(data)
                }
            };
            out.push(WalEntry {
                index,
                term: slot.term,
                kind: slot.kind,
                data,
            });
        }
        Ok(out)
    }

    /// The group's latest hard state.
    pub fn hard_state(&self, group: u64) -> Option<HardState> {
        self.index.groups.get(&group)?.hard_state
    }

    /// The group's first index: of its first entry, or the one after its compaction point
    /// when no entry follows it. `None` when the WAL holds neither.
    pub fn first_index(&self, group: u64) -> Option<u64> {
        self.index.groups.get(&group)?.first_index()
    }

    /// The group's last index: of its last entry, or its compaction point when no entry
    /// follows it. `None` when the WAL holds neither.
    pub fn last_index(&self, group: u64) -> Option<u64> {
        self.index.groups.get(&group)?.last_index()
    }

    /// The term of the group's entry `index`, or of its compaction point.
    pub fn term(&self, group: u64, index: u64) -> Option<u64> {
        let state = self.index.groups.get(&group)?;
        match state.compacted {
            Some((compacted, term)) if compacted == index => Some(term),
            _ => state.slot(index).map(|slot| slot.term),
        }
    }

    /// The group's compaction point (index, term), if it has one.
    pub fn compacted(&self, group: u64) -> Option<(u64, u64)> {
        self.index.groups.get(&group)?.compacted
    }

    /// Every group with any state, in order.
    pub fn groups(&self) -> Vec<u64> {
        let groups = self.index.groups.iter();
        groups
            .filter(|(_, g)| !g.is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The groups whose entries pin the oldest segment, when more than
    /// [`WalConfig::max_segments`] are on disk: each should snapshot (and append a
    /// [`LogRecord::Compact`]) so the segment can be deleted. Empty otherwise.
    pub fn groups_to_snapshot(&self) -> Vec<u64> {
        let Some(oldest) = self.sealed.front() else {
            return Vec::new();
        };
        if self.segments() <= self.config.max_segments {
            return Vec::new();
        }
        let groups = self.index.groups.iter();
        groups
            .filter(|(_, g)| g.oldest_segment() == Some(oldest.number))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The segments on disk, the open one included.
    pub fn segments(&self) -> usize {
        self.sealed.len() + 1
    }

    /// The numbers of the segments on disk, oldest first.
    pub fn segment_numbers(&self) -> Vec<u64> {
        let sealed = self.sealed.iter().map(|s| s.number);
        sealed.chain([self.open.number]).collect()
    }

    /// Whether a failed write or sync stopped the WAL.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// How many deleted segments wait for reuse as new ones.
    pub fn recycled_segments(&self) -> usize {
        self.recycled.len()
    }

    /// The bytes of entry data in the cache.
    pub fn cached_bytes(&self) -> usize {
        self.index.cached_bytes()
    }

    /// The WAL's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks `batch` against the rules of [`Shape`], group by group, as it would evolve.
    fn check_batch(&self, batch: &[LogRecord]) -> Result<(), WalError> {
        let mut shapes: HashMap<u64, Shape> = HashMap::new();
        for record in batch {
            let group = record.group();
            let shape = shapes.entry(group).or_insert_with(|| {
                let state = self.index.groups.get(&group);
                state.map(GroupIndex::shape).unwrap_or_default()
            });
            let next = match record {
                LogRecord::Entries { entries, .. } => {
                    let Some(first) = entries.first() else {
                        continue;
                    };
                    let contiguous = entries
                        .iter()
                        .zip(0u64..)
                        .all(|(e, i)| first.index.checked_add(i) == Some(e.index));
                    if !contiguous {
                        return Err(WalError::Invalid(format!(
                            "group {group}: entries from {} are not contiguous",
                            first.index
                        )));
                    }
                    shape.append(first.index, entries.len() as u64)
                }
                LogRecord::HardState { .. } => Ok(*shape),
                LogRecord::Truncate { from_index, .. } => shape.truncate(*from_index),
                LogRecord::Compact { index, .. } => shape.compact(*index),
            };
            *shape = next.map_err(|e| WalError::Invalid(format!("group {group}: {e}")))?;
        }
        Ok(())
    }

    /// Encodes every group's state (hard state, compaction point, range of live entries) into
    /// `checkpoint_buf`, one record per group.
    fn encode_checkpoint(&mut self) -> u32 {
        let out = &mut self.checkpoint_buf;
        let mut records = 0;
        for (group, state) in &self.index.groups {
            if state.is_empty() {
                continue;
            }
            let payload = state.checkpoint().to_bytes();
            encode_record(*group, RecordKind::GroupState, &payload, out).expect("small");
            records += 1;
        }
        records
    }

    /// Writes the batch (checkpoint and records, already encoded) with one linked write and
    /// `fdatasync`, then applies it to the index.
    fn write_batch(&mut self, records: u32, stats: &mut AppendStats) -> Result<(), WalError> {
        let open = &self.open;
        debug_assert_eq!(open.tail.len() as u64, open.write_pos % BLOCK_BYTES as u64);
        let write_offset = open.write_pos - open.tail.len() as u64;
        let mut buf = self.buf.take().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&open.tail);
        let mut position = open.write_pos;
        if position == 0 {
            let header = SegmentHeader::new(open.number, open.capacity_bytes);
            buf.extend_from_slice(&header.to_bytes());
            position = SEGMENT_HEADER_BYTES as u64;
        }
        let batch_offset = position;
        let body_bytes = self.checkpoint_buf.len() + self.records_buf.len();
        let body_checksum =
            crc32c::crc32c_append(crc32c::crc32c(&self.checkpoint_buf), &self.records_buf);
        let header = BatchHeader {
            body_bytes: body_bytes as u64,
            body_checksum,
            records,
            sequence: self.next_sequence,
            segment: open.number,
        };
        let mut envelope = Vec::with_capacity(BATCH_RECORD_BYTES);
        encode_record(0, RecordKind::Batch, &header.to_bytes(), &mut envelope).expect("small");
        buf.extend_from_slice(&envelope);
        let body_start = buf.len();
        buf.extend_from_slice(&self.checkpoint_buf);
        buf.extend_from_slice(&self.records_buf);
        let end = batch_offset + (BATCH_RECORD_BYTES + body_bytes) as u64;
        let mark = (open.capacity_bytes - end).min(END_MARK_BYTES as u64) as usize;
        buf.extend_from_slice(&[0u8; END_MARK_BYTES][..mark]);
        buf.pad_to_block();
        debug_assert!(write_offset + buf.len() as u64 <= open.capacity_bytes);

        let buf = self.submit_and_wait(write_offset, buf)?;
        let body = &buf.as_slice()[body_start..body_start + body_bytes];
        let body_base = (batch_offset as usize) + BATCH_RECORD_BYTES;
        recovery::apply_body(&mut self.index, self.open.number, body_base, body, records)
            .unwrap_or_else(|(offset, reason)| {
                panic!("a batch checked before writing fails to apply at {offset}: {reason}")
            });
        let tail_start = (end - end % BLOCK_BYTES as u64 - write_offset) as usize;
        let tail_end = (end - write_offset) as usize;
        self.open.tail = buf.as_slice()[tail_start..tail_end].to_vec();
        stats.records = u64::from(records);
        stats.log_bytes = end - self.open.write_pos;
        stats.bytes_written = buf.len() as u64;
        stats.fdatasyncs = 1;
        self.open.write_pos = end;
        self.next_sequence += 1;
        self.buf = Some(buf);
        Ok(())
    }

    /// Writes `buf` at `offset` of the open segment and `fdatasync`s it, acting out armed
    /// fault points; poisons the WAL on any failure.
    fn submit_and_wait(&mut self, offset: u64, buf: AlignedBuf) -> Result<AlignedBuf, WalError> {
        let faults = &self.config.faults;
        let mut request = WriteRequest {
            fd: self.open.direct.as_raw_fd(),
            offset,
            write_bytes: buf.len(),
            sync: Sync::Fdatasync,
        };
        let mut injected = None;
        match faults.fire(WAL_WRITE) {
            Some(FaultKind::ShortWrite) => {
                // Half the blocks reach the disk, unsynced: a torn write the WAL saw fail.
                request.write_bytes = buf.len() / BLOCK_BYTES / 2 * BLOCK_BYTES;
                request.sync = Sync::None;
                injected = Some((
                    Step::Write,
                    injected_error(WAL_WRITE, FaultKind::ShortWrite),
                ));
            }
            Some(kind) => {
                self.buf = Some(buf);
                return Err(self.poison(Step::Write, injected_error(WAL_WRITE, kind)));
            }
            None => {
                if let Some(kind) = faults.fire(WAL_FDATASYNC) {
                    request.sync = Sync::None;
                    injected = Some((Step::Fdatasync, injected_error(WAL_FDATASYNC, kind)));
                }
            }
        }
        let (buf, result) = if request.write_bytes == 0 {
            (buf, Ok(()))
        } else {
            match self.ring.begin(request, buf) {
                Ok(ticket) => {
                    let completion = self.ring.wait(ticket);
                    (completion.buf, completion.result)
                }
                Err((buf, error)) => (buf, Err((Step::Write, error))),
            }
        };
        match result.and(injected.map_or(Ok(()), Err)) {
            Ok(()) => Ok(buf),
            Err((step, error)) => {
                self.buf = Some(buf);
                Err(self.poison(step, error))
            }
        }
    }

    fn poison(&mut self, step: Step, error: io::Error) -> WalError {
        self.poisoned = true;
        let op = match step {
            Step::Write => "write",
            Step::Fdatasync => "fdatasync",
        };
        wal_io_error(op, &self.open.path, error)
    }

    /// Seals the open segment and opens the next; see the module docs. Says whether the next
    /// one is a recycled file. Fails without poisoning: nothing of the batch was written yet.
    fn rotate(&mut self) -> Result<bool, WalError> {
        // SAFETY: the open segment is written only by this WAL, and no more once sealed.
        let map = unsafe { Mmap::map(&self.open.read) }
            .map_err(|e| wal_io_error("mmap sealed segment", &self.open.path, e))?;
        let number = self.open.number + 1;
        let path = segment_path(&self.dir, number);
        let (direct, recycled) = match self.take_recycled(&path)? {
            Some(direct) => (direct, true),
            None => (self.make_next_segment(&path)?, false),
        };
        let read = File::open(&path).map_err(|e| wal_io_error("open segment", &path, e))?;
        let next = OpenSegment {
            number,
            path,
            direct,
            read,
            capacity_bytes: self.config.segment_bytes,
            write_pos: 0,
            tail: Vec::new(),
        };
        let sealed = std::mem::replace(&mut self.open, next);
        self.sealed.push_back(SealedSegment {
            number: sealed.number,
            path: sealed.path,
            map,
        });
        Ok(recycled)
    }

    /// The next segment, at `path`, from a deleted segment's file: renamed into place and the
    /// directory synced. Its blocks are all written (zeros when it was made, then its earlier
    /// log), so appends into it need no zeros written first; its earlier content past the new
    /// log's end is told apart by the segment number in every batch and by the end mark (see
    /// the module docs). `None` when there is none to take, or the rename failed (the next
    /// way is tried); on a failed directory sync the file goes back to the pool.
    fn take_recycled(&mut self, path: &Path) -> Result<Option<File>, WalError> {
        let Some(number) = self.recycled.pop() else {
            return Ok(None);
        };
        let free = free_path(&self.dir, number);
        if std::fs::rename(&free, path).is_err() {
            let _ = std::fs::remove_file(&free);
            return Ok(None);
        }
        let synced = self
            .config
            .faults
            .check(WAL_ROTATE)
            .and_then(|()| sync_dir(&self.dir));
        if let Err(error) = synced {
            if std::fs::rename(path, &free).is_ok() {
                self.recycled.push(number);
            } else {
                let _ = std::fs::remove_file(path);
            }
            return Err(wal_io_error("directory fsync", &self.dir, error));
        }
        match open_direct(path) {
            Ok(file) => Ok(Some(file)),
            Err(error) => {
                let _ = std::fs::remove_file(path);
                Err(recovery::direct_error(path, error))
            }
        }
    }

    /// Starts making a zero-written spare when no deleted segment waits for reuse and none is
    /// being made: the next rotation then finds one or the other ready. In steady state
    /// (compaction deleting old segments as new ones fill) the recycled files suffice and no
    /// zeros are written.
    fn ensure_spare(&mut self) {
        if self.recycled.is_empty() && self.spare.is_none() {
            self.spare = start_spare(&self.dir, self.config.segment_bytes);
        }
    }

    /// The next segment, at `path`, durably: the spare renamed into place and the directory
    /// synced, or, without a good spare, made here ([`create_segment`]). The next spare is
    /// started after the batch (`ensure_spare`), once deletion may have refilled the pool of
    /// recycled files. On failure nothing is left at `path`.
    fn make_next_segment(&mut self, path: &Path) -> Result<File, WalError> {
        if let Some(spare) = self.spare.take() {
            // The fault point of the step that gives the segment its space, wherever it runs.
            if let Err(error) = self.config.faults.check(WAL_FALLOCATE) {
                self.spare = Some(spare);
                return Err(wal_io_error("fallocate", path, error));
            }
            if let Ok(Ok(file)) = spare.join() {
                if std::fs::rename(self.dir.join(SPARE_FILE_NAME), path).is_ok() {
                    let synced = self
                        .config
                        .faults
                        .check(WAL_ROTATE)
                        .and_then(|()| sync_dir(&self.dir));
                    if let Err(error) = synced {
                        let _ = std::fs::remove_file(path);
                        return Err(wal_io_error("directory fsync", &self.dir, error));
                    }
                    return Ok(file);
                }
            }
        }
        create_segment(&self.dir, path, &self.config)
    }

    /// Deletes the oldest segments while no group needs them; see the module docs.
    fn delete_obsolete_segments(&mut self) -> Result<usize, WalError> {
        assert!(
            self.open.write_pos > 0,
            "the open segment's checkpoint is written"
        );
        self.deletion_due = false;
        let groups = self.index.groups.values();
        let needed = groups.filter_map(GroupIndex::oldest_segment).min();
        let needed = needed.unwrap_or(self.open.number).min(self.open.number);
        let mut deleted = 0;
        while let Some(oldest) = self.sealed.front().filter(|s| s.number < needed) {
            // Kept for reuse while the pool has room and the file is of the size new segments
            // get (a segment recovered from an older config may not be); else unlinked.
            let reuse = self.recycled.len() < RECYCLED_MAX_SEGMENTS
                && oldest.map.len() as u64 == self.config.segment_bytes;
            if reuse {
                let free = free_path(&self.dir, oldest.number);
                std::fs::rename(&oldest.path, &free)
                    .map_err(|e| wal_io_error("rename segment for reuse", &oldest.path, e))?;
                self.recycled.push(oldest.number);
            } else {
                std::fs::remove_file(&oldest.path)
                    .map_err(|e| wal_io_error("remove segment", &oldest.path, e))?;
            }
            self.sealed.pop_front();
            if let Err(error) = sync_dir(&self.dir) {
                // Whether the removal is durable is unknown: stop, as after a failed fdatasync.
                self.poisoned = true;
                return Err(wal_io_error("directory fsync", &self.dir, error));
            }
            deleted += 1;
        }
        Ok(deleted)
    }

    /// The payload of the `Entries` record at `location`, checksums verified.
    fn read_entries_payload(
        &self,
        group: u64,
        location: Location,
    ) -> Result<Cow<'_, [u8]>, WalError> {
        let offset = location.record_offset as usize;
        let (bytes, record_offset): (Cow<'_, [u8]>, usize) = if location.segment == self.open.number
        {
            (Cow::Owned(self.pread_record(location)?), 0)
        } else {
            let sealed = self.sealed_segment(location.segment)?;
            (Cow::Borrowed(&sealed.map[..]), offset)
        };
        let record = match read_record(&bytes, record_offset, SegmentState::Sealed) {
            ReadOutcome::Record(record) => record,
            ReadOutcome::End => {
                return Err(self.corrupt(location, "zeros where a record was written".to_string()))
            }
            ReadOutcome::Torn(damage) | ReadOutcome::Corrupt(damage) => {
                return Err(self.corrupt(location, damage.reason.to_string()))
            }
        };
        if record.header.kind != RecordKind::Entries || record.header.group != group {
            return Err(self.corrupt(location, "not the entries record indexed here".to_string()));
        }
        let (start, end) = (record.offset + HEADER_BYTES, record.next_offset());
        Ok(match bytes {
            Cow::Borrowed(map) => Cow::Borrowed(&map[start..end]),
            Cow::Owned(mut owned) => {
                owned.truncate(end);
                owned.drain(..start);
                Cow::Owned(owned)
            }
        })
    }

    /// Reads the whole record at `location` of the open segment.
    fn pread_record(&self, location: Location) -> Result<Vec<u8>, WalError> {
        let offset = u64::from(location.record_offset);
        let read_error = |e| wal_io_error("pread", &self.open.path, e);
        let mut header = [0u8; HEADER_BYTES];
        self.open
            .read
            .read_exact_at(&mut header, offset)
            .map_err(read_error)?;
        let decoded = RecordHeader::decode(&header)
            .map_err(|reason| self.corrupt(location, reason.to_string()))?;
        let mut bytes = vec![0u8; HEADER_BYTES + decoded.length_bytes as usize];
        self.open
            .read
            .read_exact_at(&mut bytes, offset)
            .map_err(read_error)?;
        Ok(bytes)
    }

    fn sealed_segment(&self, number: u64) -> Result<&SealedSegment, WalError> {
        let first = self.sealed.front().map_or(u64::MAX, |s| s.number);
        number
            .checked_sub(first)
            .and_then(|i| self.sealed.get(usize::try_from(i).ok()?))
            .ok_or_else(|| WalError::Invalid(format!("segment {number} is not on disk")))
    }

    fn corrupt(&self, location: Location, reason: String) -> WalError {
        let file = if location.segment == self.open.number {
            self.open.path.clone()
        } else {
            segment_path(&self.dir, location.segment)
        };
        WalError::Corrupt {
            file,
            offset: u64::from(location.record_offset),
            reason,
        }
    }
}

/// Creates segment `path` durably: the file, its preallocation, its `fsync`, and the
/// directory's `fsync`. On failure the file is removed again and nothing else changed.
fn create_segment(dir: &Path, path: &Path, config: &WalConfig) -> Result<File, WalError> {
    let faults = &config.faults;
    let result = (|| {
        let file = create_direct(path).map_err(|e| recovery::direct_error(path, e))?;
        faults
            .check(WAL_FALLOCATE)
            .and_then(|()| preallocate(&file, config.segment_bytes))
            .map_err(|e| wal_io_error("fallocate", path, e))?;
        write_zeros(&file, 0, config.segment_bytes)
            .map_err(|e| wal_io_error("write zeros to new segment", path, e))?;
        file.sync_all()
            .map_err(|e| wal_io_error("fsync new segment", path, e))?;
        faults
            .check(WAL_ROTATE)
            .and_then(|()| sync_dir(dir))
            .map_err(|e| wal_io_error("directory fsync", dir, e))?;
        Ok(file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// An I/O error as a [`WalError`]: a full disk is [`WalError::DiskFull`].
fn wal_io_error(op: &'static str, file: &Path, source: io::Error) -> WalError {
    if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        return WalError::DiskFull {
            file: file.to_path_buf(),
        };
    }
    WalError::Io {
        op,
        file: file.to_path_buf(),
        source,
    }
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segments", &self.segment_numbers())
            .field("write_pos", &self.open.write_pos)
            .field("groups", &self.index.groups.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}
