//! The write-ahead log of one core, shared by every Raft group on that core.
//!
//! # What it stores
//! Logical records tagged with their group ([`LogRecord`]): runs of entries, hard states,
//! truncations of a conflicting suffix, and compactions (a group's snapshot passed an index).
//! [`Wal::append`] takes records of many groups and returns after **one** synced write that
//! covers them all (group commit); [`Wal::submit`] and [`Wal::wait`] do the same in two
//! steps, so that the next batch is encoded while this one is written (see Pipelined
//! appends).
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
//! # Pipelined appends
//! [`Wal::submit`] checks a batch, encodes it straight into a 4096-aligned write buffer (one
//! copy of the data; each record's checksum summed over bytes just written, and the batch's
//! body checksum combined from those rather than computed in a second pass, see
//! `codec::BodyEncoder`), applies it to the index, and sends its write out; [`Wal::wait`] or
//! [`Wal::poll`] report it durable. Up to
//! [`MAX_IN_FLIGHT_BATCHES`] (two) may be submitted and not yet reported, each with its own
//! buffer: the caller encodes batch k+1 while batch k's write and sync run, which is where an
//! append's CPU time went before (encoding, checksums and copies in series with the disk).
//!
//! # The sync is the write's own
//! Each write is `O_DSYNC` (`RWF_DSYNC` on the io_uring write, [`crate::uring::Sync::Dsync`]):
//! it completes once its data is durable, the device's cache flushed, in one request. It was
//! a write linked to an `fdatasync`, which io_uring always hands to a worker thread, queued
//! from the submitter's task work (one more wake of the core's thread per write); the `O_DSYNC`
//! write cut context switches to a third and server CPU per put by 20-25% on the test VM. What
//! the sections below say of "the write and its `fdatasync`" holds of this one request: the
//! flush a dsync write waits for is the same cache flush, and the same blocks are written.
//! The `wal.fdatasync` fault point still acts out a write that landed but did not sync.
//!
//! # Overlapping writes
//! Batch k+1's write and `fdatasync` go out **while k's are still in flight** when k+1 is
//! submitted before k is durable: a node under load then waits for one `fdatasync` period per
//! batch, not for the rest of the previous one's and then its own. Two things had kept writes
//! serial, and each has its answer:
//! - k+1 would start by rewriting k's partial last block, and two writes of one block in
//!   flight may land in either order. So a batch submitted while an earlier one is not
//!   durable is placed on **fresh blocks**, where the earlier batch's write ends (after its
//!   end mark and padding): no block is in two writes at once. Recovery, at the end mark
//!   after a batch, looks at the block boundary where such a batch would start, and goes on
//!   there when it finds this segment's next batch (exactly the next sequence). It costs up
//!   to a block of segment space per overlapped batch, only under load.
//! - A power cut could keep k+1 and lose part of k, and recovery, finding a later batch of the
//!   segment past a damaged one, took that for corruption. So every batch records **synced
//!   through**: the highest sequence durable when it was encoded. A later batch whose synced
//!   through is below the damaged batch's sequence was written while that one was in flight;
//!   neither was acknowledged (batches are acknowledged in order), so the damage is a torn
//!   tail, and both are cut off; recovery also zeroes the discarded batches, so that a later
//!   batch ending where they start never leads a scan into them. A later batch whose synced
//!   through reaches the damaged one proves it was durable: corruption, refused as before.
//!   The price: damage in the last two batches of the log (the second-to-last too, when the
//!   last overlapped it) reads as a torn tail, where before only the last one's did.
//!
//! A batch that opens a new segment still waits until every earlier one is durable, so a
//! sealed segment is always whole (recovery's rule for sealed segments is unchanged); k+1 may
//! be encoded into the new segment while k is written to the old one (whose file stays open
//! until k completes).
//!
//! Batches are reported in the order they were submitted: k+1 never before k, and waiting for
//! k+1 first completes k too. A failed write or `fdatasync` of batch k poisons the WAL; k
//! reports the error, and every batch submitted after it reports [`WalError::Poisoned`]: its
//! write never went out. A submitted batch is in the index at once, so the next one is checked
//! against it, and reads serve its entries (from the cache, or from its write buffer while it
//! is not durable): a Raft leader may send entries to followers before its own write
//! completes (Raft thesis §10.2.1), but counts itself toward a commit only once `wait`
//! reported them. Segment deletion that a batch allows (a compaction in it, or its
//! checkpoint) runs only when that batch is reported durable.
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
//! next: a recycled file when one waits (renamed into place). Else the
//! next segment is normally made ahead of need by a background thread, as the spare
//! file [`SPARE_FILE_NAME`] (created, preallocated, zero-written, `fsync`ed; never a segment
//! name, so recovery never reads it, and removes a leftover one at open). Rotation waits for
//! that thread if it is still running and renames the spare to the new segment's name.
//! The name must survive a crash before any data is written under it (else a recycled
//! file's new batches could be found under its old name): the directory's `fsync` goes out
//! **linked ahead of the first write into the segment**, in the same io_uring chain
//! (directory `fsync` → write → `fdatasync`), so the batch is acknowledged only after all
//! three, and the thread that submits does not block on it. It used to run inline at
//! rotation, where it also waited for the previous batch's write still in flight (a
//! directory `fsync` flushes the device): with 16 MiB batches that stalled every third
//! submit by 6-8 ms. A failed directory `fsync` poisons the WAL like a failed `fdatasync`
//! (fault point `wal.dir_fsync`). A new spare is started after the
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
//! segment), which runs ahead of that batch's write, not in the submitting thread. The first
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
//! appended, bounded by [`WalConfig::cache_bytes`]), else from the write buffer of a batch not
//! yet durable, else from disk: sealed segments through a read-only `mmap`, the open segment
//! through `pread`. Every record read from a buffer or the disk has its checksums verified
//! again; a bad one is an error, never data.
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
//! trusted, and every later `submit`, `append` or `entries` (and the wait of every batch
//! submitted after the failed one) returns [`WalError::Poisoned`]; restart and
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
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

use crate::fault::{
    injected_error, FaultKind, FaultPoints, WAL_DIR_FSYNC, WAL_FALLOCATE, WAL_FDATASYNC,
    WAL_ROTATE, WAL_WRITE,
};
use crate::record::{
    read_record, ReadOutcome, RecordHeader, RecordKind, SegmentState, HEADER_BYTES,
};
use crate::segment::{
    create_direct, free_path, open_direct, preallocate, segment_path, sync_dir, write_zeros,
    SegmentHeader, SEGMENT_HEADER_BYTES,
};
use crate::uring::{self, AlignedBuf, Ring, Step, Sync, WriteRequest, BLOCK_BYTES};

use codec::{batch_record_bytes, entry_at, BatchHeader, BodyEncoder, BATCH_RECORD_BYTES};
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
    /// Whether the batch was placed on fresh blocks, so that its write could go out while an
    /// earlier batch's was still in flight (see Overlapping writes).
    pub overlapped: bool,
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
    /// Opened with `O_DIRECT`, for the ring's writes and syncs; shared with the batches in
    /// flight to it.
    direct: Arc<File>,
    /// Opened without it, for `pread`.
    read: File,
    /// The size it was preallocated to: batches go up to here.
    capacity_bytes: u64,
    /// Where the next batch goes; 0 when the segment has no header yet.
    write_pos: u64,
    /// Where the last write into it ends (a block boundary; its end mark and padding before
    /// it): where a batch that overlaps that write starts.
    write_end: u64,
    /// The sequence of its first batch, which carries its header (0: recovered, durable). No
    /// batch overlaps that one's write: a segment whose header is lost while a later batch of
    /// it survives would read as corrupt.
    first_sequence: u64,
    /// The bytes from the last block boundary at or before `write_pos` up to it: written and
    /// acknowledged, and rewritten identically at the start of the next write.
    tail: Vec<u8>,
}

/// The write-ahead log of one core; see the module docs.
pub struct Wal {
    /// The directory's lock, held while the WAL is open.
    _lock: File,
    dir: PathBuf,
    /// The directory, open for the `fsync` a rotation's rename needs (see Rotation).
    dir_file: File,
    /// A rotation renamed a file into place as this segment, and the name is not durable yet:
    /// the first write into it syncs the directory first, linked ahead of its data.
    dir_sync_due: Option<u64>,
    config: WalConfig,
    ring: Ring,
    /// Write buffers not in use, kept for reuse: at most [`MAX_IN_FLIGHT_BATCHES`] exist.
    free_bufs: Vec<AlignedBuf>,
    /// Submitted batches not yet claimed by [`Wal::wait`] or [`Wal::poll`], oldest first; at
    /// most [`MAX_IN_FLIGHT_BATCHES`].
    pending: VecDeque<Pending>,
    /// The next [`Ticket`]'s number.
    next_ticket: u64,
    sealed: VecDeque<SealedSegment>,
    open: OpenSegment,
    index: Index,
    next_sequence: u64,
    /// The highest batch sequence known durable: a new batch's synced through.
    durable_sequence: u64,
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

/// The most batches submitted and not yet claimed. Why 2: the caller encodes the next batch
/// while the last one's write and `fdatasync` are in flight, which is all the overlap there
/// is (writes go to the disk one batch at a time, see the module docs); a deeper queue would
/// only hold encoded batches waiting, and their buffers (up to a whole batch each).
pub const MAX_IN_FLIGHT_BATCHES: usize = 2;

/// A submitted batch, to pass to [`Wal::wait`] or [`Wal::poll`]; batches are reported in the
/// order they were submitted.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a submitted batch is durable only once waited for"]
pub struct Ticket(u64);

/// A batch between [`Wal::submit`] and its claim.
struct Pending {
    ticket: u64,
    /// Its batch sequence (0 for a batch with nothing to write).
    sequence: u64,
    /// Placed on fresh blocks: its write may go out while earlier ones are in flight.
    overlaps: bool,
    /// The segment it is written in, and that segment's `O_DIRECT` file: held open here until
    /// the write and its `fdatasync` completed, also when a later batch rotated away from it
    /// (a closed descriptor under a queued `fdatasync` could name another file by then).
    segment: u64,
    file: Arc<File>,
    /// Where the write buffer starts in the segment.
    write_offset: u64,
    /// The batch's bytes in the segment, `start..end`: reads of its entries come from its
    /// buffer until it is durable.
    log_range: std::ops::Range<u64>,
    stats: AppendStats,
    /// Segments below this one are deletable once this batch is durable (see Deletion).
    deletable_below: Option<u64>,
    state: PendingState,
}

enum PendingState {
    /// Encoded, waiting for every earlier batch to be durable before its write goes out.
    Encoded(AlignedBuf),
    /// Its write (and `fdatasync`) in flight; `injected` is a fault point's failure to report
    /// when it completes.
    Writing {
        ticket: uring::Ticket,
        injected: Option<(Step, io::Error)>,
    },
    /// Durable (or failed), waiting to be claimed.
    Done(Result<AppendStats, WalError>),
}

/// The most deleted segments kept for reuse. Why 4: a node's compaction usually frees one
/// segment per rotation, sometimes a few at once (a lagging group's snapshot); four covers
/// those bursts, so rotation almost never waits for a zero-written spare, and holds at most
/// 4 segments (256 MiB by default) of disk that a `df` shows as used. Beyond it, deleted
/// segments are unlinked.
pub const RECYCLED_MAX_SEGMENTS: usize = 4;

/// Whether a batch starts a segment, and so carries a checkpoint of this many bytes.
#[derive(Clone, Copy, Debug)]
enum Checkpoint {
    With { bytes: usize },
    Without,
}

impl Pending {
    fn is_done(&self) -> bool {
        matches!(self.state, PendingState::Done(_))
    }
}

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
        // A write in flight completes before its segment's file can close; an encoded batch
        // that never went out is dropped (it was never reported durable).
        for pending in std::mem::take(&mut self.pending) {
            if let PendingState::Writing { ticket, .. } = pending.state {
                let _ = self.ring.wait(ticket);
            }
        }
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
    ///
    /// This is [`Wal::submit`] then [`Wal::wait`], for a caller with no batch in flight
    /// ([`WalError::Invalid`] otherwise).
    pub fn append(&mut self, batch: &[LogRecord]) -> Result<AppendStats, WalError> {
        if !self.pending.is_empty() {
            return Err(WalError::Invalid(format!(
                "append with {} submitted batches not yet waited for: wait for them first",
                self.pending.len()
            )));
        }
        let ticket = self.submit(batch)?;
        self.wait(ticket)
    }

    /// Submits `batch` (as [`Wal::append`] describes) without waiting for it to be durable,
    /// so that the caller can prepare and submit the next one meanwhile; [`Wal::wait`] or
    /// [`Wal::poll`] reports it. At most [`MAX_IN_FLIGHT_BATCHES`] may be submitted and not
    /// yet claimed ([`WalError::Invalid`] beyond).
    ///
    /// The batch is checked, encoded into a write buffer and applied to the index here: reads
    /// see it at once (see Pipelined appends in the module docs). Its write goes out now when
    /// no earlier batch is in flight, else as soon as the earlier one is durable, from
    /// whichever of `submit`, `poll` or `wait` sees that first. An error here (a bad batch, a
    /// rotation that failed, a poisoned WAL) means the batch was not submitted.
    pub fn submit(&mut self, batch: &[LogRecord]) -> Result<Ticket, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        if self.pending.len() >= MAX_IN_FLIGHT_BATCHES {
            return Err(WalError::Invalid(format!(
                "{MAX_IN_FLIGHT_BATCHES} batches are in flight already: wait for the oldest \
                 before submitting another"
            )));
        }
        self.check_batch(batch)?;
        let (mut records_bytes, mut records) = (0, 0);
        for record in batch {
            let (bytes, count) = codec::encoded_bytes(record)?;
            records_bytes += bytes;
            records += count;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if records == 0 {
            let done = PendingState::Done(Ok(AppendStats::default()));
            self.pending.push_back(self.pending_at_end(ticket, done));
            return Ok(Ticket(ticket));
        }
        let mut stats = AppendStats::default();
        // Collect completions first: a batch found durable now needs no overlap.
        self.advance(None);
        let overlap = self.open.write_pos > 0
            && self.durable_sequence >= self.open.first_sequence
            && self.pending.iter().any(|p| !p.is_done());
        let start = if overlap {
            self.open.write_end
        } else {
            self.open.write_pos
        };
        let fits = self.open.write_pos > 0
            && start + (BATCH_RECORD_BYTES + records_bytes) as u64 <= self.open.capacity_bytes;
        let checkpoint = if fits {
            Checkpoint::Without
        } else {
            let groups = self.index.groups.values().filter(|g| !g.is_empty()).count();
            let fresh_bytes = (SEGMENT_HEADER_BYTES
                + BATCH_RECORD_BYTES
                + groups * codec::GROUP_STATE_RECORD_BYTES
                + records_bytes) as u64;
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
            Checkpoint::With {
                bytes: groups * codec::GROUP_STATE_RECORD_BYTES,
            }
        };
        // Nothing fails from here on: the batch is encoded, applied and queued.
        let overlap = fits && overlap;
        let (buf, mut pending) =
            self.encode_batch(batch, checkpoint, records_bytes, ticket, overlap);
        stats.overlapped = overlap;
        stats.records = pending.stats.records;
        stats.log_bytes = pending.stats.log_bytes;
        stats.bytes_written = pending.stats.bytes_written;
        stats.fdatasyncs = 1;
        pending.stats = stats;
        for record in batch {
            if let LogRecord::Entries { group, entries } = record {
                self.index.cache(*group, entries);
            }
            if matches!(
                record,
                LogRecord::Compact { .. } | LogRecord::Truncate { .. }
            ) {
                self.deletion_due = true;
            }
        }
        if pending.stats.rotated || self.deletion_due {
            self.deletion_due = false;
            pending.deletable_below = Some(self.needed_segment());
        }
        pending.state = PendingState::Encoded(buf);
        self.pending.push_back(pending);
        self.advance(None);
        Ok(Ticket(ticket))
    }

    /// Waits until the batch of `ticket` is durable (every earlier one is, too) and reports
    /// it: its stats, or the error that failed it or an earlier batch (a failed write or
    /// `fdatasync` poisons the WAL, and every batch after it then reports
    /// [`WalError::Poisoned`]: none of them was written). Batches are reported in the order
    /// they were submitted: waiting for a later ticket first completes the earlier ones too,
    /// whose own tickets are then spent ([`WalError::Invalid`] if waited for after), and
    /// reports the first error among them, if any.
    pub fn wait(&mut self, ticket: Ticket) -> Result<AppendStats, WalError> {
        self.position(&ticket)?;
        self.advance(Some(ticket.0));
        self.claim(&ticket)
            .expect("advance returns once the batch waited for is done")
    }

    /// [`Wal::wait`] without blocking: `None` while the batch (or an earlier one) is not yet
    /// durable, and the ticket stays valid; else its report, and the ticket is spent. Also
    /// sends the next batch's write out when the one before it has become durable, so a
    /// caller that keeps batches submitted should poll (or wait) now and then.
    pub fn poll(&mut self, ticket: &Ticket) -> Option<Result<AppendStats, WalError>> {
        if let Err(error) = self.position(ticket) {
            return Some(Err(error));
        }
        self.advance(None);
        self.claim(ticket)
    }

    /// Removes the batches up to `ticket`'s when all of them are done, and reports it (or the
    /// first error among them).
    fn claim(&mut self, ticket: &Ticket) -> Option<Result<AppendStats, WalError>> {
        let position = self.position(ticket).ok()?;
        if !self.pending.iter().take(position + 1).all(Pending::is_done) {
            return None;
        }
        let mut first_error = None;
        let mut report = None;
        for pending in self.pending.drain(..=position) {
            let PendingState::Done(result) = pending.state else {
                unreachable!("checked done");
            };
            match result {
                Err(error) if first_error.is_none() => first_error = Some(error),
                Err(_) => {}
                Ok(stats) => report = Some(stats),
            }
        }
        Some(match first_error {
            Some(error) => Err(error),
            None => Ok(report.expect("the batch claimed succeeded")),
        })
    }

    /// Where the batch of `ticket` is among those pending.
    fn position(&self, ticket: &Ticket) -> Result<usize, WalError> {
        let found = self.pending.iter().position(|p| p.ticket == ticket.0);
        found.ok_or_else(|| {
            WalError::Invalid(format!(
                "ticket {} is not in flight: it was reported already (by a wait for a later \
                 ticket, which completes the earlier ones)",
                ticket.0
            ))
        })
    }

    /// Makes the WAL's io_uring signal the eventfd `fd` for every completion it posts: a
    /// caller that waits for the eventfd and then calls [`Wal::poll`] drives the log from an
    /// event loop, never blocking on the disk (only [`Wal::wait`] blocks). The caller keeps
    /// `fd` open while the WAL lives.
    pub fn register_eventfd(&self, fd: std::os::fd::RawFd) -> Result<(), WalError> {
        self.ring
            .register_eventfd(fd)
            .map_err(|e| wal_io_error("register an eventfd with the io_uring", &self.dir, e))
    }

    /// Batches submitted and not yet claimed.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
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

    /// A pending entry for a batch that writes nothing, at the log's current end.
    fn pending_at_end(&self, ticket: u64, state: PendingState) -> Pending {
        Pending {
            ticket,
            sequence: 0,
            overlaps: false,
            segment: self.open.number,
            file: Arc::clone(&self.open.direct),
            write_offset: self.open.write_pos,
            log_range: self.open.write_pos..self.open.write_pos,
            stats: AppendStats::default(),
            deletable_below: None,
            state,
        }
    }

    /// Encodes the batch straight into a write buffer, applies it to the index and moves the
    /// open segment's end past it. The buffer: the segment's partial last block (rewritten,
    /// see the module docs), the segment header (first batch of a segment), the batch record,
    /// the body (the checkpoint, in a segment's first batch, then the records), the end mark,
    /// zeros to a whole block. `records_bytes` is the records' size as `encoded_bytes` gave it.
    fn encode_batch(
        &mut self,
        batch: &[LogRecord],
        checkpoint: Checkpoint,
        records_bytes: usize,
        ticket: u64,
        overlap: bool,
    ) -> (AlignedBuf, Pending) {
        let open = &self.open;
        debug_assert_eq!(open.tail.len() as u64, open.write_pos % BLOCK_BYTES as u64);
        // Overlapping an earlier write: fresh blocks where it ends, nothing rewritten.
        let tail: &[u8] = if overlap { &[] } else { &open.tail };
        let start = if overlap {
            open.write_end
        } else {
            open.write_pos
        };
        let write_offset = start - tail.len() as u64;
        let checkpoint_bytes = match checkpoint {
            Checkpoint::With { bytes } => bytes,
            Checkpoint::Without => 0,
        };
        let mut buf = self.free_bufs.pop().unwrap_or_default();
        buf.clear();
        buf.reserve(
            tail.len()
                + SEGMENT_HEADER_BYTES
                + BATCH_RECORD_BYTES
                + checkpoint_bytes
                + records_bytes
                + END_MARK_BYTES
                + BLOCK_BYTES,
        );
        buf.extend_from_slice(tail);
        let mut position = start;
        if position == 0 {
            let header = SegmentHeader::new(open.number, open.capacity_bytes);
            buf.extend_from_slice(&header.to_bytes());
            position = SEGMENT_HEADER_BYTES as u64;
        }
        let batch_offset = position;
        let batch_at = buf.len();
        buf.extend_from_slice(&[0u8; BATCH_RECORD_BYTES]);
        let body_start = buf.len();
        let mut body = BodyEncoder::new(&mut buf);
        if let Checkpoint::With { .. } = checkpoint {
            for (group, state) in &self.index.groups {
                if !state.is_empty() {
                    body.group_state(*group, state.checkpoint());
                }
            }
        }
        for record in batch {
            body.log_record(record)
                .expect("sized by encoded_bytes, which checks the same");
        }
        let encoded = body.finish();
        assert_eq!(encoded.bytes, checkpoint_bytes + records_bytes, "as sized");
        let header = BatchHeader {
            body_bytes: encoded.bytes as u64,
            body_checksum: encoded.checksum,
            records: encoded.records,
            sequence: self.next_sequence,
            segment: open.number,
            synced_through: self.durable_sequence,
        };
        buf.as_mut_slice()[batch_at..body_start].copy_from_slice(&batch_record_bytes(header));
        let end = batch_offset + (BATCH_RECORD_BYTES + encoded.bytes) as u64;
        let mark = (open.capacity_bytes - end).min(END_MARK_BYTES as u64) as usize;
        buf.extend_from_slice(&[0u8; END_MARK_BYTES][..mark]);
        buf.pad_to_block();
        debug_assert!(write_offset + buf.len() as u64 <= open.capacity_bytes);

        // Check the batch before it is written (its records decode and follow the log's
        // rules), and index it: reads of it are served from here on.
        let body = &buf.as_slice()[body_start..body_start + encoded.bytes];
        let body_base = (batch_offset as usize) + BATCH_RECORD_BYTES;
        recovery::apply_body(
            &mut self.index,
            open.number,
            body_base,
            body,
            encoded.records,
        )
        .unwrap_or_else(|(offset, reason)| {
            panic!("a batch checked before encoding fails to apply at {offset}: {reason}")
        });
        let pending = Pending {
            ticket,
            sequence: self.next_sequence,
            overlaps: overlap,
            segment: open.number,
            file: Arc::clone(&open.direct),
            write_offset,
            log_range: start..end,
            stats: AppendStats {
                records: u64::from(encoded.records),
                log_bytes: end - open.write_pos,
                bytes_written: buf.len() as u64,
                ..AppendStats::default()
            },
            deletable_below: None,
            state: PendingState::Done(Err(WalError::Poisoned)),
        };
        let tail_start = (end - end % BLOCK_BYTES as u64 - write_offset) as usize;
        let tail_end = (end - write_offset) as usize;
        self.open.tail.clear();
        self.open
            .tail
            .extend_from_slice(&buf.as_slice()[tail_start..tail_end]);
        self.open.write_pos = end;
        self.open.write_end = write_offset + buf.len() as u64;
        if start == 0 {
            self.open.first_sequence = self.next_sequence;
        }
        self.next_sequence += 1;
        (buf, pending)
    }

    /// The oldest segment the log needs now: the oldest holding a live entry, or the open
    /// one (whose checkpoint holds every group's state).
    fn needed_segment(&self) -> u64 {
        let groups = self.index.groups.values();
        let needed = groups.filter_map(GroupIndex::oldest_segment).min();
        needed.unwrap_or(self.open.number).min(self.open.number)
    }

    /// Moves the submitted batches along, oldest first: sends out the write of an encoded
    /// batch once every earlier one is durable, or at once when it was placed to overlap
    /// them (see Overlapping writes in the module docs), and collects completed writes, in
    /// order. Blocks only for batches up to ticket `wait_for`.
    fn advance(&mut self, wait_for: Option<u64>) {
        while let Some(i) = self.pending.iter().position(|p| !p.is_done()) {
            self.start_overlapping_writes(i);
            let placeholder = PendingState::Done(Err(WalError::Poisoned));
            let state = std::mem::replace(&mut self.pending[i].state, placeholder);
            self.pending[i].state = match state {
                PendingState::Encoded(buf) if self.poisoned => {
                    self.free_bufs.push(buf);
                    PendingState::Done(Err(WalError::Poisoned))
                }
                PendingState::Encoded(buf) => self.start_write(i, buf),
                PendingState::Writing { ticket, injected } => {
                    let waiting = wait_for.is_some_and(|t| self.pending[i].ticket <= t);
                    let completion = match self.ring.poll(&ticket) {
                        Some(completion) => completion,
                        None if waiting => self.ring.wait(ticket),
                        None => {
                            self.pending[i].state = PendingState::Writing { ticket, injected };
                            return;
                        }
                    };
                    self.free_bufs.push(completion.buf);
                    let result = completion.result.and(injected.map_or(Ok(()), Err));
                    PendingState::Done(self.complete(i, result))
                }
                PendingState::Done(_) => unreachable!("found not done"),
            };
        }
    }

    /// Sends out the writes of the encoded batches after `first` (the oldest not durable)
    /// that were placed to overlap it, in order, while every batch before each is in flight.
    fn start_overlapping_writes(&mut self, first: usize) {
        if !matches!(self.pending[first].state, PendingState::Writing { .. }) {
            return;
        }
        for j in first + 1..self.pending.len() {
            let ready = self.pending[j].overlaps && !self.poisoned;
            match &self.pending[j].state {
                PendingState::Encoded(_) if ready => {
                    let placeholder = PendingState::Done(Err(WalError::Poisoned));
                    let PendingState::Encoded(buf) =
                        std::mem::replace(&mut self.pending[j].state, placeholder)
                    else {
                        unreachable!("matched above")
                    };
                    self.pending[j].state = self.start_write(j, buf);
                }
                PendingState::Encoded(_) => return,
                PendingState::Writing { .. } | PendingState::Done(_) => {}
            }
        }
    }

    /// Sends out the write (`O_DSYNC`: durable when it completes) of pending batch `i`, acting
    /// out armed fault points; poisons the WAL on any failure to submit.
    fn start_write(&mut self, i: usize, buf: AlignedBuf) -> PendingState {
        let pending = &self.pending[i];
        let faults = &self.config.faults;
        let mut request = WriteRequest {
            fd: pending.file.as_raw_fd(),
            offset: pending.write_offset,
            write_bytes: buf.len(),
            sync: Sync::Dsync,
            sync_dir_first: None,
        };
        // The first write into the segment carries it; later batches need it no more: batches
        // are durable in order, and a failure of this one poisons the WAL.
        if self
            .dir_sync_due
            .is_some_and(|segment| pending.segment >= segment)
        {
            request.sync_dir_first = Some(self.dir_file.as_raw_fd());
            self.dir_sync_due = None;
        }
        let mut injected = None;
        match faults.fire(WAL_WRITE) {
            Some(FaultKind::ShortWrite) => {
                // Half the blocks reach the disk, unsynced: a torn write the WAL saw fail.
                request.write_bytes = buf.len() / BLOCK_BYTES / 2 * BLOCK_BYTES;
                request.sync = Sync::None;
                let error = injected_error(WAL_WRITE, FaultKind::ShortWrite);
                injected = Some((Step::Write, error));
            }
            Some(kind) => {
                self.free_bufs.push(buf);
                let error = injected_error(WAL_WRITE, kind);
                return PendingState::Done(Err(self.poison(i, Step::Write, error)));
            }
            None => {
                if let Some(kind) = faults.fire(WAL_FDATASYNC) {
                    request.sync = Sync::None;
                    injected = Some((Step::Fdatasync, injected_error(WAL_FDATASYNC, kind)));
                } else if request.sync_dir_first.is_some() {
                    if let Some(kind) = faults.fire(WAL_DIR_FSYNC) {
                        // The directory step fails: nothing after it in the chain runs.
                        request.sync = Sync::None;
                        request.write_bytes = 0;
                        let error = injected_error(WAL_DIR_FSYNC, kind);
                        injected = Some((Step::DirectoryFsync, error));
                    }
                }
            }
        }
        if request.write_bytes == 0 {
            self.free_bufs.push(buf);
            let (step, error) = injected.expect("only an injected failure writes nothing");
            return PendingState::Done(Err(self.poison(i, step, error)));
        }
        match self.ring.begin(request, buf) {
            Ok(ticket) => PendingState::Writing { ticket, injected },
            Err((buf, error)) => {
                self.free_bufs.push(buf);
                PendingState::Done(Err(self.poison(i, Step::Write, error)))
            }
        }
    }

    /// Pending batch `i`'s write and `fdatasync` completed with `result`: on success it is
    /// durable, and the segments it made obsolete are deleted; on failure the WAL is poisoned.
    fn complete(
        &mut self,
        i: usize,
        result: Result<(), (Step, io::Error)>,
    ) -> Result<AppendStats, WalError> {
        if let Err((step, error)) = result {
            return Err(self.poison(i, step, error));
        }
        self.durable_sequence = self.durable_sequence.max(self.pending[i].sequence);
        let mut stats = self.pending[i].stats.clone();
        if let Some(below) = self.pending[i].deletable_below {
            stats.segments_deleted = self.delete_segments_below(below)?;
        }
        self.ensure_spare();
        Ok(stats)
    }

    fn poison(&mut self, i: usize, step: Step, error: io::Error) -> WalError {
        self.poisoned = true;
        let op = match step {
            Step::Write => "write",
            Step::Fdatasync => "fdatasync",
            Step::DirectoryFsync => {
                return wal_io_error("directory fsync", &self.dir, error);
            }
        };
        wal_io_error(op, &segment_path(&self.dir, self.pending[i].segment), error)
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
            direct: Arc::new(direct),
            read,
            capacity_bytes: self.config.segment_bytes,
            write_pos: 0,
            write_end: 0,
            first_sequence: 0,
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
        // The directory's fsync goes out linked ahead of the first write into the segment
        // (see Rotation); the fault point stands for a rename step that fails here.
        if let Err(error) = self.config.faults.check(WAL_ROTATE) {
            if std::fs::rename(path, &free).is_ok() {
                self.recycled.push(number);
            } else {
                let _ = std::fs::remove_file(path);
            }
            return Err(wal_io_error("directory fsync", &self.dir, error));
        }
        match open_direct(path) {
            Ok(file) => {
                self.dir_sync_due = Some(self.open.number + 1);
                Ok(Some(file))
            }
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
                    // As for a recycled file: the directory's fsync goes out with the first
                    // write into the segment.
                    if let Err(error) = self.config.faults.check(WAL_ROTATE) {
                        let _ = std::fs::remove_file(path);
                        return Err(wal_io_error("directory fsync", &self.dir, error));
                    }
                    self.dir_sync_due = Some(self.open.number + 1);
                    return Ok(file);
                }
            }
        }
        create_segment(&self.dir, path, &self.config)
    }

    /// Deletes the oldest segments below `below`, which the log no longer needed once the
    /// batch that computed it was durable; see the module docs.
    fn delete_segments_below(&mut self, below: u64) -> Result<usize, WalError> {
        assert!(
            self.open.write_pos > 0,
            "the open segment's checkpoint is written"
        );
        let mut deleted = 0;
        while let Some(oldest) = self.sealed.front().filter(|s| s.number < below) {
            assert!(
                self.pending
                    .iter()
                    .all(|p| p.is_done() || p.segment != oldest.number),
                "a segment with a write in flight is never deleted"
            );
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
        let (bytes, record_offset): (Cow<'_, [u8]>, usize) =
            if let Some((buf, at)) = self.pending_bytes(location) {
                (Cow::Borrowed(buf), at)
            } else if location.segment == self.open.number {
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

    /// The write buffer holding the record at `location`, and the record's offset in it, when
    /// the record is in a batch not yet written and synced: the disk may not hold it yet.
    fn pending_bytes(&self, location: Location) -> Option<(&[u8], usize)> {
        let offset = u64::from(location.record_offset);
        let pending = self
            .pending
            .iter()
            .find(|p| p.segment == location.segment && p.log_range.contains(&offset))?;
        let buf = match &pending.state {
            PendingState::Encoded(buf) => buf,
            PendingState::Writing { ticket, .. } => self.ring.buffer(ticket)?,
            PendingState::Done(_) => return None,
        };
        Some((buf.as_slice(), (offset - pending.write_offset) as usize))
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
            .field("in_flight", &self.pending.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}
