//! Opening a WAL: scan its segments in order, rebuild every group's index, hard state and
//! compaction point, truncate a torn tail of the last segment, and refuse to start on
//! corruption anywhere else.
//!
//! # Where a segment's log ends
//! A segment file may be recycled: a deleted segment renamed into place as a new one, still
//! holding its earlier log past the new one's end. So the end of a segment's log is not "only
//! zeros from here on" but what the writer puts after every batch, in the same write: the end
//! mark, a record header's worth of zeros (or the segment's end, with no room for a batch).
//! Scanning a segment's batches in order, what stops the scan is one of:
//! - **the end**: the end mark, or no room for another batch before the segment's end;
//! - **damage**: a batch that fails to read (a header or batch checksum, a cut, a batch of
//!   another segment where this one's next batch or end mark belongs);
//! - **corruption outright**: a record whose checksum holds but which no writer writes there.
//!
//! Then the rest of the segment is searched for a batch of *this* segment (its number in the
//! batch record) with a later sequence: one found means acknowledged writes follow the stop,
//! which is corruption (or a hole: the end mark where a batch was), refused with the file and
//! the stop's offset. None found: the end is the end; damage is a torn write in the last
//! segment (truncated) and corruption in a sealed one (which was synced whole before the next
//! one got a byte). The earlier content of a recycled file never counts as evidence: its
//! batches name the older segment they were written in.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::Mmap;

use crate::record::{
    all_zero, Damage, DamageReason, ReadOutcome, Record, RecordHeader, RecordKind, SegmentState,
    HEADER_BYTES,
};
use crate::segment::{
    free_path, list_free, list_segments, open_direct, preallocate, segment_file_name, segment_path,
    sync_dir, write_zeros, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use crate::uring::{AlignedBuf, Ring, BLOCK_BYTES};

use super::codec::{decode_payload, BatchHeader, BATCH_PAYLOAD_BYTES, BATCH_RECORD_BYTES};
use super::index::Index;
use super::{
    create_segment, wal_io_error, OpenSegment, Recovery, SealedSegment, TornTail, Wal, WalConfig,
    WalError, END_MARK_BYTES, RECYCLED_MAX_SEGMENTS, SPARE_FILE_NAME,
};

/// What scanning one segment found.
struct Scanned {
    /// Where its valid records end (where the next batch goes).
    end: usize,
    /// The torn tail cut off at `end`, if any.
    torn: Option<Damage>,
    /// Where the last batch written past the torn one ends, when batches that overlapped it
    /// were found (cut off too, and zeroed at reopening; see `end_of_log`).
    discard_end: Option<usize>,
    /// The records applied (batch envelopes not counted).
    records: u64,
    /// The size the segment's header says it was made with, when it has a header.
    segment_bytes: Option<u64>,
}

/// Opens the WAL in `dir`; see [`Wal::open`].
pub fn open(
    dir: &Path,
    config: WalConfig,
    lock_wait: Duration,
) -> Result<(Wal, Recovery), WalError> {
    config.check()?;
    std::fs::create_dir_all(dir).map_err(|e| wal_io_error("create directory", dir, e))?;
    let lock = lock_dir(dir, lock_wait)?;
    let mut numbers = list_segments(dir).map_err(|e| wal_io_error("list directory", dir, e))?;
    check_contiguous(dir, &numbers)?;
    remove_spare(dir)?;
    let mut recycled = recycled_files(dir, &numbers, &config)?;
    release_unwritten_last_segments(dir, &mut numbers, &mut recycled, &config)?;
    let mut index = Index::new(config.cache_bytes);
    let mut sequence = None;
    let mut recovery = Recovery {
        groups: Vec::new(),
        records: 0,
        bytes: 0,
        torn_tail: None,
    };
    let mut sealed = Vec::new();
    let mut open_segment = None;
    // A reader thread reads each segment whole, with large O_DIRECT reads, into one of two
    // aligned buffers while this thread scans the one before: disk and checksums overlap, and
    // the disk writes straight into the buffer, with no page-cache copy (that copy and the
    // page cache's upkeep were half of recovery's CPU). (Scanning through the map instead,
    // cold, its page-cluster faults read at about 0.6x the speed of plain reads; the maps stay,
    // for later reads of entries, and cost nothing until touched.)
    let paths: Vec<PathBuf> = numbers.iter().map(|n| segment_path(dir, *n)).collect();
    std::thread::scope(|scope| -> Result<(), WalError> {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Result<AlignedBuf, WalError>>(1);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<AlignedBuf>();
        for _ in 0..2 {
            let _ = empty_tx.send(AlignedBuf::new());
        }
        let reader_paths = &paths;
        scope.spawn(move || {
            for path in reader_paths {
                let Ok(mut buf) = empty_rx.recv() else {
                    return;
                };
                let read = read_whole(path, &mut buf).map(|()| buf);
                if full_tx.send(read).is_err() {
                    return;
                }
            }
        });
        for (position, number) in numbers.iter().copied().enumerate() {
            let path = segment_path(dir, number);
            let last = position + 1 == numbers.len();
            let state = if last {
                SegmentState::Open
            } else {
                SegmentState::Sealed
            };
            let file = OpenOptions::new()
                .read(true)
                .write(last)
                .open(&path)
                .map_err(|e| wal_io_error("open segment", &path, e))?;
            let map = map_file(&file, &path)?;
            let scan_buf = full_rx.recv().map_err(|_| {
                wal_io_error("read segment", &path, io::Error::other("reader stopped"))
            })??;
            let bytes: &[u8] = scan_buf.as_slice();
            let scanned = scan_segment(number, bytes, state, &mut index, &mut sequence).map_err(
                |(offset, reason)| WalError::Corrupt {
                    file: path.clone(),
                    offset: offset as u64,
                    reason,
                },
            )?;
            recovery.records += scanned.records;
            recovery.bytes += scanned.end as u64;
            if !last {
                let map = map.ok_or_else(|| corrupt_empty(&path))?;
                sealed.push(SealedSegment { number, path, map });
                let _ = empty_tx.send(scan_buf);
                continue;
            }
            if let Some(damage) = scanned.torn {
                recovery.torn_tail = Some(TornTail {
                    file: path.clone(),
                    offset: damage.offset as u64,
                    reason: damage.reason.to_string(),
                });
            }
            let tail = bytes[align_down(scanned.end)..scanned.end].to_vec();
            drop(map);
            open_segment = Some(reopen_last(file, number, path, &scanned, tail, &config)?);
        }
        Ok(())
    })?;
    check_nothing_missing(dir, &numbers, &index)?;
    let open = match open_segment {
        Some(open) => open,
        None => new_first_segment(dir, &config)?,
    };
    recovery.groups = index
        .groups
        .iter()
        .filter(|(_, g)| !g.is_empty())
        .map(|(id, _)| *id)
        .collect();
    let ring = Ring::holding(lock.as_raw_fd()).map_err(|e| WalError::Io {
        op: "io_uring_setup (the WAL needs io_uring: Linux 5.6 or later, not disabled by seccomp or sysctl kernel.io_uring_disabled)",
        file: dir.to_path_buf(),
        source: e,
    })?;
    let dir_file = File::open(dir).map_err(|e| wal_io_error("open directory", dir, e))?;
    let mut wal = Wal {
        _lock: lock,
        dir: dir.to_path_buf(),
        dir_file,
        dir_sync_due: None,
        config,
        ring,
        free_bufs: Vec::new(),
        pending: std::collections::VecDeque::new(),
        next_ticket: 0,
        sealed: sealed.into(),
        open,
        index,
        next_sequence: sequence.map_or(1, |s| s + 1),
        // Every batch found is durable now: `reopen_last` synced the last segment.
        durable_sequence: sequence.unwrap_or(0),
        poisoned: false,
        deletion_due: true,
        spare: None,
        recycled,
    };
    wal.ensure_spare();
    Ok((wal, recovery))
}

/// Entries a checkpoint says were live, in segments deleted before the first one found, must be
/// compacted or truncated away by the end of the log: otherwise they are lost.
fn check_nothing_missing(dir: &Path, numbers: &[u64], index: &Index) -> Result<(), WalError> {
    let first = numbers.first().copied().unwrap_or(1);
    for (group, state) in &index.groups {
        if let Some((from, to)) = state.missing {
            return Err(WalError::Corrupt {
                file: segment_path(dir, first),
                offset: 0,
                reason: format!(
                    "group {group}'s entries {from}..={to} are still needed but were in \
                     segments before this one, which are gone"
                ),
            });
        }
    }
    Ok(())
}

/// The name of the lock file in a WAL directory.
pub const LOCK_FILE_NAME: &str = "wal.lock";

/// How long [`Wal::open`] waits for a predecessor's lock. Why 5 s: a process killed with writes in
/// flight keeps the lock until the kernel has completed them and torn its ring down (see
/// [`Ring::holding`]), normally within milliseconds; a disk that stalls longer than this is
/// reported rather than waited on for ever.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting open tries the lock again.
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// Takes an exclusive `flock` on the directory's lock file, so that a second process (or a
/// second `Wal` in this one) cannot append to the same segments. The lock is released when the
/// last reference to the file goes: the `Wal`'s and its ring's (see [`Ring::holding`]), so
/// after a kill -9 only once the dead process's last write has landed. Waits up to
/// `lock_wait` for it.
fn lock_dir(dir: &Path, lock_wait: Duration) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| wal_io_error("open lock file", &path, e))?;
    let started = Instant::now();
    loop {
        // SAFETY: plain system call on an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) if started.elapsed() < lock_wait => {
                std::thread::sleep(LOCK_RETRY)
            }
            Some(libc::EWOULDBLOCK) => {
                return Err(WalError::Invalid(format!(
                    "the WAL in {} is open elsewhere (its lock file {} is still held after \
                     {:?}): one WAL per directory; stop the other process first",
                    dir.display(),
                    path.display(),
                    lock_wait
                )))
            }
            Some(libc::EINTR) => {}
            _ => return Err(wal_io_error("flock", &path, error)),
        }
    }
}

/// A segment after the last one written, never written itself in this life (all zeros, or a
/// recycled file still holding an earlier segment's header, and no batch of its own), is
/// released: the leftover of a rotation that failed (its removal not durable) or that crashed
/// before its first batch. Left in place it would make the segment before it look sealed, and
/// a torn tail there look like corruption. A recycled file goes back to the pool under the
/// number its header names (the segment it was when deleted, so the name is free again and
/// older than every live segment); an all-zero one is removed. The only segment is kept:
/// appends start in it.
fn release_unwritten_last_segments(
    dir: &Path,
    numbers: &mut Vec<u64>,
    recycled: &mut Vec<u64>,
    config: &WalConfig,
) -> Result<(), WalError> {
    while let [.., _, last] = numbers[..] {
        let path = segment_path(dir, last);
        let file = File::open(&path).map_err(|e| wal_io_error("open segment", &path, e))?;
        let map = map_file(&file, &path)?;
        let bytes = map.as_deref().unwrap_or(&[]);
        let Some(earlier) = unwritten(bytes, last) else {
            return Ok(());
        };
        let reuse = recycled.len() < RECYCLED_MAX_SEGMENTS
            && bytes.len() as u64 == config.segment_bytes
            && earlier.is_some_and(|earlier| !recycled.contains(&earlier));
        drop(map);
        match earlier.filter(|_| reuse) {
            Some(earlier) => {
                std::fs::rename(&path, free_path(dir, earlier))
                    .map_err(|e| wal_io_error("rename unwritten segment for reuse", &path, e))?;
                recycled.push(earlier);
            }
            None => std::fs::remove_file(&path)
                .map_err(|e| wal_io_error("remove empty segment", &path, e))?,
        }
        sync_dir(dir).map_err(|e| wal_io_error("directory fsync", dir, e))?;
        numbers.pop();
    }
    Ok(())
}

/// `Some` when segment `number`'s bytes hold nothing written as that segment: no header of its
/// own (all zeros: `Some(None)`; or an earlier segment's: `Some(Some(earlier))`) and no batch
/// of it anywhere.
fn unwritten(bytes: &[u8], number: u64) -> Option<Option<u64>> {
    let header = &bytes[..bytes.len().min(SEGMENT_HEADER_BYTES)];
    let earlier = match SegmentHeader::decode(bytes) {
        Ok(header) if header.number < number => Some(header.number),
        Ok(_) => return None,
        Err(_) if all_zero(header) => None,
        Err(_) => return None,
    };
    find_batch(bytes, 0, number, 0).is_none().then_some(earlier)
}

/// The recycled segment files found at open, kept for reuse: each must be of the configured
/// segment size and numbered before the first segment (so that none of its batches can name a
/// segment to come), and there are at most [`RECYCLED_MAX_SEGMENTS`]; any other is removed.
/// A WAL with no segment yet keeps none: its numbers start again at 1.
fn recycled_files(dir: &Path, numbers: &[u64], config: &WalConfig) -> Result<Vec<u64>, WalError> {
    let free = list_free(dir).map_err(|e| wal_io_error("list directory", dir, e))?;
    let first = numbers.first().copied().unwrap_or(0);
    let mut kept = Vec::new();
    for number in free {
        let path = free_path(dir, number);
        let size = std::fs::metadata(&path)
            .map_err(|e| wal_io_error("stat recycled segment", &path, e))?
            .len();
        if number < first && size == config.segment_bytes && kept.len() < RECYCLED_MAX_SEGMENTS {
            kept.push(number);
        } else {
            std::fs::remove_file(&path)
                .map_err(|e| wal_io_error("remove recycled segment", &path, e))?;
        }
    }
    Ok(kept)
}

/// Removes a spare segment a previous run left (made, or half made, ahead of need): it holds
/// nothing, and a fresh one is made in the background.
fn remove_spare(dir: &Path) -> Result<(), WalError> {
    let path = dir.join(SPARE_FILE_NAME);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(wal_io_error("remove spare segment", &path, error))
        }
        _ => Ok(()),
    }
}

fn check_contiguous(dir: &Path, numbers: &[u64]) -> Result<(), WalError> {
    for pair in numbers.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(WalError::Corrupt {
                file: segment_path(dir, pair[0] + 1),
                offset: 0,
                reason: format!(
                    "segment missing: {} and {} exist but not the segments between them, so \
                     records between them are lost",
                    segment_file_name(pair[0]),
                    segment_file_name(pair[1])
                ),
            });
        }
    }
    Ok(())
}

fn map_file(file: &File, path: &Path) -> Result<Option<Mmap>, WalError> {
    let len = file
        .metadata()
        .map_err(|e| wal_io_error("stat segment", path, e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: segment files are only written by this WAL, which has not opened them yet, and
    // sealed segments are never written again; the map is read-only. Recovery does not read
    // through it (see `read_whole`): later reads of old entries fault in what they touch.
    let map = unsafe { Mmap::map(file) }.map_err(|e| wal_io_error("mmap segment", path, e))?;
    Ok(Some(map))
}

/// The most bytes one read of recovery asks for. Why 8 MiB: large enough that the disk
/// streams, small enough that a segment takes several, read at once (see
/// [`RECOVERY_READS_IN_FLIGHT`]).
const RECOVERY_READ_BYTES: usize = 8 << 20;

/// Reads of one segment in flight at once. Why 4: one `O_DIRECT` read at a time leaves the
/// device idle between requests (no readahead fills the gap): on this machine's virtual disk
/// one at a time read 0.9-1.0 GB/s where the page cache's readahead reached 1.3-1.8; a few in
/// flight keep it busy, and a segment (64 MiB) has 8 reads to share out.
const RECOVERY_READS_IN_FLIGHT: usize = 4;

/// Reads the whole segment at `path` into `buf` (reused; grown, never zeroed again) with large
/// reads: `O_DIRECT` for its whole blocks, [`RECOVERY_READS_IN_FLIGHT`] at a time, so the disk
/// writes straight into the aligned buffer without a page-cache copy, and plain reads for what
/// is left (the part block of a file cut short while it was being made, or all of it where the
/// file system refuses `O_DIRECT`).
fn read_whole(path: &Path, buf: &mut AlignedBuf) -> Result<(), WalError> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = File::open(path).map_err(|e| wal_io_error("open segment", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| wal_io_error("stat segment", path, e))?
        .len() as usize;
    buf.set_len(len);
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let mut done = 0;
    if let Ok(direct) = direct {
        let blocks = &mut buf.as_mut_slice()[..align_down(len)];
        done = read_blocks_direct(&direct, blocks);
    }
    while done < len {
        let end = (done + RECOVERY_READ_BYTES).min(len);
        match file.read_at(&mut buf.as_mut_slice()[done..end], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(wal_io_error("read segment", path, e)),
        }
    }
    buf.set_len(done);
    Ok(())
}

/// Fills `blocks` (whole blocks from the file's start) from `direct` with `O_DIRECT` reads of
/// [`RECOVERY_READ_BYTES`], several in flight; returns how many bytes from the start were read
/// without a gap (less than all on a refusal or a short read: plain reads go on from there).
fn read_blocks_direct(direct: &File, blocks: &mut [u8]) -> usize {
    use std::os::unix::fs::FileExt;
    let chunks: Vec<(usize, &mut [u8])> = blocks
        .chunks_mut(RECOVERY_READ_BYTES)
        .enumerate()
        .map(|(i, chunk)| (i * RECOVERY_READ_BYTES, chunk))
        .collect();
    let read_chunk = |(offset, chunk): (usize, &mut [u8])| -> bool {
        let mut done = 0;
        while done < chunk.len() {
            match direct.read_at(&mut chunk[done..], (offset + done) as u64) {
                Ok(n) if n > 0 && n % BLOCK_BYTES == 0 => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return false,
            }
        }
        true
    };
    let count = chunks.len();
    let mut lanes: Vec<Vec<(usize, &mut [u8])>> =
        (0..RECOVERY_READS_IN_FLIGHT).map(|_| Vec::new()).collect();
    for (i, chunk) in chunks.into_iter().enumerate() {
        lanes[i % RECOVERY_READS_IN_FLIGHT].push(chunk);
    }
    // Each lane reads its chunks in order; a chunk's success is recorded by its index.
    let mut whole = vec![false; count];
    std::thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .into_iter()
            .map(|lane| {
                scope.spawn(move || {
                    lane.into_iter()
                        .map(|(offset, chunk)| {
                            (offset / RECOVERY_READ_BYTES, read_chunk((offset, chunk)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            // A lane that panicked read nothing we can trust: its chunks stay not whole.
            if let Ok(results) = handle.join() {
                for (index, ok) in results {
                    whole[index] = ok;
                }
            }
        }
    });
    let prefix = whole.iter().take_while(|ok| **ok).count();
    (prefix * RECOVERY_READ_BYTES).min(blocks.len())
}

fn corrupt_empty(path: &Path) -> WalError {
    WalError::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        reason: "an older segment is empty: it has no header".to_string(),
    }
}

/// Scans one segment's batches into `index`. `Err` holds the offset and reason of corruption.
fn scan_segment(
    number: u64,
    bytes: &[u8],
    state: SegmentState,
    index: &mut Index,
    sequence: &mut Option<u64>,
) -> Result<Scanned, (usize, String)> {
    let segment_bytes = match SegmentHeader::decode(bytes) {
        Ok(header) if header.number == number => header.segment_bytes,
        decoded => return scan_headerless(number, bytes, state, decoded, *sequence),
    };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut records = 0;
    loop {
        let read = match read_batch(bytes, offset, number, segment_bytes) {
            Err(Stop::End) => overlapping_batch(bytes, offset, number, segment_bytes, *sequence)
                .map(|(at, batch)| {
                    offset = at;
                    batch
                })
                .ok_or(Stop::End),
            read => read,
        };
        let (batch, body_start, body) = match read {
            Ok(batch) => batch,
            Err(stop) => {
                let scanned = (records, segment_bytes);
                return end_of_log(number, bytes, state, offset, stop, *sequence, scanned);
            }
        };
        if let Some(previous) = *sequence {
            if batch.sequence != previous + 1 {
                let reason = format!(
                    "batch sequence {} does not follow the previous batch's {previous}",
                    batch.sequence
                );
                return Err((offset, reason));
            }
        }
        *sequence = Some(batch.sequence);
        records += apply_body(index, number, body_start, body, batch.records)?;
        offset = body_start + body.len();
    }
}

/// At the end mark at `offset`: the batch that overlapped the previous write, if one was
/// written. It starts where that write ended, at the block boundary past the end mark, and is
/// this segment's next batch: exactly the sequence after `sequence` (see Overlapping writes
/// in the WAL's docs). Anything else there (zeros, a recycled file's earlier log, a batch
/// discarded by an earlier recovery) is not the log.
fn overlapping_batch(
    bytes: &[u8],
    offset: usize,
    number: u64,
    segment_bytes: u64,
    sequence: Option<u64>,
) -> Option<(usize, ReadBatch<'_>)> {
    let previous = sequence?;
    let room = usize::try_from(segment_bytes).map_or(usize::MAX, |b| b.saturating_sub(offset));
    let at = (offset + room.min(END_MARK_BYTES)).next_multiple_of(BLOCK_BYTES);
    // A file cut short (a crash while it was being made) may end before that boundary.
    if at <= offset || at >= bytes.len() {
        return None;
    }
    match read_batch(bytes, at, number, segment_bytes) {
        Ok(batch) if batch.0.sequence == previous + 1 => Some((at, batch)),
        _ => None,
    }
}

/// A batch [`read_batch`] found whole: its record, where its body starts, and the body.
type ReadBatch<'a> = (BatchHeader, usize, &'a [u8]);

/// Why the scan of a segment's batches stopped; see the module docs.
enum Stop {
    /// The end mark, or no room for another batch.
    End,
    /// A batch that failed to read: torn or corrupt, by what follows.
    Damaged(DamageReason),
    /// A checksummed record no writer writes there: corrupt whatever follows.
    Corrupt(String),
}

/// The batch at `offset` of segment `number` (of `segment_bytes`), checked whole: its record,
/// its segment number and its body's checksum; with where its body starts, and the body.
fn read_batch(
    bytes: &[u8],
    offset: usize,
    number: u64,
    segment_bytes: u64,
) -> Result<ReadBatch<'_>, Stop> {
    let room = usize::try_from(segment_bytes).map_or(usize::MAX, |b| b.saturating_sub(offset));
    if room < BATCH_RECORD_BYTES {
        return Err(Stop::End);
    }
    let rest = &bytes[offset..];
    let Some(header_bytes) = rest.first_chunk::<HEADER_BYTES>() else {
        if all_zero(rest) {
            return Err(Stop::End);
        }
        let available_bytes = rest.len();
        return Err(Stop::Damaged(DamageReason::HeaderCut { available_bytes }));
    };
    if all_zero(header_bytes) {
        return Err(Stop::End);
    }
    let header = match RecordHeader::decode(header_bytes) {
        Ok(header) => header,
        Err(reason @ DamageReason::HeaderChecksum { .. }) => return Err(Stop::Damaged(reason)),
        // The header's checksum holds: these fields were written as they are, by no shardcore.
        Err(reason) => return Err(Stop::Corrupt(reason.to_string())),
    };
    if header.kind != RecordKind::Batch {
        return Err(Stop::Corrupt("a record outside a batch".to_string()));
    }
    let length_bytes = header.length_bytes;
    let Some(payload) = rest[HEADER_BYTES..].get(..length_bytes as usize) else {
        let available_bytes = rest.len() - HEADER_BYTES;
        let reason = DamageReason::PayloadCut {
            length_bytes,
            available_bytes,
        };
        return Err(Stop::Damaged(reason));
    };
    let computed = crc32c::crc32c(payload);
    if computed != header.payload_checksum {
        let expected = header.payload_checksum;
        let reason = DamageReason::PayloadChecksum { expected, computed };
        return Err(Stop::Damaged(reason));
    }
    let batch = BatchHeader::decode(payload).map_err(|e| Stop::Corrupt(e.to_string()))?;
    if batch.segment != number {
        let what = "a batch of another segment (a recycled file's earlier log) where this \
                    segment's next batch or end mark belongs";
        return Err(Stop::Damaged(DamageReason::Malformed { what }));
    }
    let body_start = offset + HEADER_BYTES + payload.len();
    let body_end = usize::try_from(batch.body_bytes)
        .ok()
        .and_then(|b| body_start.checked_add(b));
    let Some(body) = body_end.and_then(|end| bytes.get(body_start..end)) else {
        let reason = DamageReason::BatchCut {
            body_bytes: batch.body_bytes,
            available_bytes: bytes.len() - body_start,
        };
        return Err(Stop::Damaged(reason));
    };
    let computed = crc32c::crc32c(body);
    if computed != batch.body_checksum {
        let expected = batch.body_checksum;
        let reason = DamageReason::BatchChecksum { expected, computed };
        return Err(Stop::Damaged(reason));
    }
    Ok((batch, body_start, body))
}

/// Judges where a segment's scan stopped, at `offset`: the end, a torn tail, or corruption
/// (see the module docs). `sequence` is the last batch's applied before the stop.
fn end_of_log(
    number: u64,
    bytes: &[u8],
    state: SegmentState,
    offset: usize,
    stop: Stop,
    sequence: Option<u64>,
    (records, segment_bytes): (u64, u64),
) -> Result<Scanned, (usize, String)> {
    let reason = match stop {
        Stop::Corrupt(reason) => return Err((offset, reason)),
        Stop::End => None,
        Stop::Damaged(reason) => Some(reason),
    };
    let last = sequence.unwrap_or(0);
    let mut discard_end = None;
    let mut from = offset + 1;
    while let Some(later) = find_batch(bytes, from, number, last) {
        let batch = batch_at(bytes, later);
        // Written while the batch due here was in flight: it and that one were never
        // acknowledged, and a crash may keep either. Past the last segment's end only.
        let overlapped = batch.synced_through <= last && state == SegmentState::Open;
        if !overlapped {
            let what = reason.unwrap_or(DamageReason::WrittenAfterHole);
            return Err((
                offset,
                format!(
                    "{what}; a later batch of this segment (synced through {}) follows at \
                     offset {later}",
                    batch.synced_through
                ),
            ));
        }
        let end = later + BATCH_RECORD_BYTES;
        let end = usize::try_from(batch.body_bytes).map_or(bytes.len(), |b| end.saturating_add(b));
        discard_end = Some(end.min(bytes.len()));
        from = later + 1;
    }
    let reason = match (reason, discard_end) {
        (None, Some(_)) => Some(DamageReason::WrittenAfterHole),
        (reason, _) => reason,
    };
    let segment_bytes = Some(segment_bytes);
    match (reason, state) {
        (None, _) if offset > SEGMENT_HEADER_BYTES => Ok(Scanned {
            end: offset,
            torn: None,
            discard_end: None,
            records,
            segment_bytes,
        }),
        // A header without its first batch (they are one write): in the last segment, that
        // write torn; the header is written again, with a checkpoint, next time.
        (None, SegmentState::Open) => {
            let reason = DamageReason::Malformed {
                what: "a segment header without its first batch",
            };
            Ok(torn_at(
                offset,
                Damage { offset, reason },
                records,
                segment_bytes,
                discard_end,
            ))
        }
        (None, SegmentState::Sealed) => {
            Err((offset, "a sealed segment without batches".to_string()))
        }
        (Some(reason), SegmentState::Open) => Ok(torn_at(
            offset,
            Damage { offset, reason },
            records,
            segment_bytes,
            discard_end,
        )),
        (Some(reason), SegmentState::Sealed) => Err((offset, reason.to_string())),
    }
}

/// A segment without a header of its own: never written in this life (all zeros, or a
/// recycled file's earlier header), or, in the last segment, its first write (header and
/// first batch together) torn. Either way it holds nothing acknowledged, unless a batch of
/// it follows: then its header was lost, which is corruption.
fn scan_headerless(
    number: u64,
    bytes: &[u8],
    state: SegmentState,
    decoded: Result<SegmentHeader, &'static str>,
    sequence: Option<u64>,
) -> Result<Scanned, (usize, String)> {
    let reason = match decoded {
        Ok(header) => {
            let reason = format!(
                "segment header names segment {}, not the file name's {number}",
                header.number
            );
            if header.number > number || state == SegmentState::Sealed {
                return Err((0, reason));
            }
            None
        }
        Err(reason) if state == SegmentState::Sealed => return Err((0, reason.to_string())),
        Err(_) if all_zero(&bytes[..bytes.len().min(SEGMENT_HEADER_BYTES)]) => None,
        Err(what) => Some(DamageReason::Malformed { what }),
    };
    if let Some(later) = find_batch(bytes, 0, number, sequence.unwrap_or(0)) {
        let what = reason.map_or("no header of this segment".to_string(), |r| r.to_string());
        return Err((0, format!("{what}; yet a batch of it is at offset {later}")));
    }
    Ok(Scanned {
        end: 0,
        torn: reason.map(|reason| Damage { offset: 0, reason }),
        discard_end: None,
        records: 0,
        segment_bytes: None,
    })
}

/// Where the first batch record of segment `number` with a sequence after `after_sequence`
/// starts, at or after `from`: evidence that the segment's log goes on past that point.
/// Records may start at any byte, so every offset is a candidate; a word-at-a-time test for
/// a batch record's type byte skips the offsets that cannot be one, eight at a time, so that
/// the search over the rest of a segment costs little next to reading it.
pub fn find_batch(bytes: &[u8], from: usize, number: u64, after_sequence: u64) -> Option<usize> {
    const KIND_AT: usize = 20;
    const LENGTH_AT: usize = 4;
    const KIND: u8 = RecordKind::Batch as u8;
    let last_start = bytes.len().checked_sub(BATCH_RECORD_BYTES)?;
    let mut at = from;
    while at <= last_start {
        let lanes = (last_start + 1 - at).min(8);
        let kinds = bytes[at + KIND_AT..].first_chunk::<8>();
        let maybe = match kinds {
            Some(kinds) if lanes == 8 => has_byte(u64::from_le_bytes(*kinds), KIND),
            _ => true,
        };
        if maybe {
            for candidate in at..at + lanes {
                if bytes[candidate + KIND_AT] == KIND
                    && bytes[candidate + LENGTH_AT] == BATCH_PAYLOAD_BYTES as u8
                    && is_batch_of(&bytes[candidate..], number, after_sequence)
                {
                    return Some(candidate);
                }
            }
        }
        at += lanes;
    }
    None
}

/// The batch record at `at`, which [`find_batch`] found whole and checked.
fn batch_at(bytes: &[u8], at: usize) -> BatchHeader {
    let payload = &bytes[at + HEADER_BYTES..at + BATCH_RECORD_BYTES];
    BatchHeader::decode(payload).expect("find_batch checked it")
}

/// Whether any byte of `word` may be `byte` (no false negatives; rare false positives).
fn has_byte(word: u64, byte: u8) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS != 0
}

/// Whether `bytes` start with a whole, checked batch record of segment `number` whose sequence
/// is after `after_sequence` (its body is not looked at).
fn is_batch_of(bytes: &[u8], number: u64, after_sequence: u64) -> bool {
    let Some(header_bytes) = bytes.first_chunk::<HEADER_BYTES>() else {
        return false;
    };
    let Ok(header) = RecordHeader::decode(header_bytes) else {
        return false;
    };
    let payload = &bytes[HEADER_BYTES..];
    if header.kind != RecordKind::Batch || header.length_bytes as usize != BATCH_PAYLOAD_BYTES {
        return false;
    }
    let Some(payload) = payload.get(..BATCH_PAYLOAD_BYTES) else {
        return false;
    };
    if crc32c::crc32c(payload) != header.payload_checksum {
        return false;
    }
    BatchHeader::decode(payload)
        .is_ok_and(|batch| batch.segment == number && batch.sequence > after_sequence)
}

/// The log ends at a torn batch at `offset`. The first batch of a segment goes out in one
/// write with the segment's header: when it is torn, so is the header, and the segment starts
/// afresh from offset 0.
fn torn_at(
    offset: usize,
    damage: Damage,
    records: u64,
    segment_bytes: Option<u64>,
    discard_end: Option<usize>,
) -> Scanned {
    let offset = if offset == SEGMENT_HEADER_BYTES {
        0
    } else {
        offset
    };
    Scanned {
        end: offset,
        torn: Some(Damage { offset, ..damage }),
        discard_end,
        records,
        segment_bytes,
    }
}

/// Applies the records of one batch body, which starts at `base` in segment `segment`, and
/// checks it holds `expected_records`. A failure is corruption: the batch's checksum held,
/// so its records were written as they are. `Err` holds the offset and reason.
///
/// The body's bytes are known good, so each record's payload checksum is not computed again;
/// record headers are still decoded and checked. The WAL calls this for a body it just
/// encoded (it computed those checksums from these very bytes; another pass over every byte
/// would sit in series with the next write), and recovery for a body whose batch checksum it
/// has just checked: that CRC-32C covers every byte of every record, so a second CRC over the
/// same bytes finds nothing the first missed; reads from disk later ([`super::Wal::entries`])
/// check each record's own checksum anyway.
pub fn apply_body(
    index: &mut Index,
    segment: u64,
    base: usize,
    body: &[u8],
    expected_records: u32,
) -> Result<u64, (usize, String)> {
    let mut offset = 0;
    let mut records = 0u64;
    while offset < body.len() {
        let at = base + offset;
        let record = match read_encoded_record(body, offset) {
            ReadOutcome::Record(record) => record,
            ReadOutcome::End => return Err((at, "zeros inside a batch".to_string())),
            ReadOutcome::Torn(damage) | ReadOutcome::Corrupt(damage) => {
                return Err((at, damage.reason.to_string()))
            }
        };
        let decoded = decode_payload(record.header.kind, record.payload)
            .map_err(|e| (at, format!("malformed record: {e}")))?;
        let group = record.header.group;
        let shape = index
            .groups
            .get(&group)
            .map(|g| g.shape())
            .unwrap_or_default();
        shape.apply(&decoded).map_err(|e| {
            (
                at,
                format!("group {group}: a log change no writer makes: {e}"),
            )
        })?;
        let record_offset = u32::try_from(at).expect("segments are under 4 GiB");
        index.apply(group, &decoded, segment, record_offset);
        records += 1;
        offset = record.next_offset();
    }
    if records != u64::from(expected_records) {
        return Err((
            base,
            format!("batch announces {expected_records} records and holds {records}"),
        ));
    }
    Ok(records)
}

/// The record at `offset` of a body this WAL just encoded: its header decoded and checked, its
/// payload's checksum not computed again (see [`apply_body`]).
fn read_encoded_record(body: &[u8], offset: usize) -> ReadOutcome<'_> {
    let damage = |reason| ReadOutcome::Corrupt(Damage { offset, reason });
    let rest = &body[offset..];
    let Some(header_bytes) = rest.first_chunk::<HEADER_BYTES>() else {
        return damage(DamageReason::HeaderCut {
            available_bytes: rest.len(),
        });
    };
    let header = match RecordHeader::decode(header_bytes) {
        Ok(header) => header,
        Err(reason) => return damage(reason),
    };
    let length_bytes = header.length_bytes;
    let Some(payload) = rest[HEADER_BYTES..].get(..length_bytes as usize) else {
        return damage(DamageReason::PayloadCut {
            length_bytes,
            available_bytes: rest.len() - HEADER_BYTES,
        });
    };
    ReadOutcome::Record(Record {
        offset,
        header,
        payload,
    })
}

/// Makes the last segment ready for appends at `end`. A file shorter than its segment size
/// (cut) is truncated at `end`, preallocated again and its zeros written (see
/// `segment::write_zeros`). A torn tail in a whole file gets the end mark written over it:
/// the block at `end` rewritten with the log's bytes up to `end` and zeros after, so the torn
/// batch's record is gone and the next scan (or a rotation away from this segment, which
/// leaves it sealed) finds the log's end right there. Either way synced before any append.
fn reopen_last(
    file: File,
    number: u64,
    path: PathBuf,
    scanned: &Scanned,
    tail: Vec<u8>,
    config: &WalConfig,
) -> Result<OpenSegment, WalError> {
    let len = file
        .metadata()
        .map_err(|e| wal_io_error("stat segment", &path, e))?
        .len();
    // A segment with batches keeps the size its header gives; one without is written from
    // its start, header included, with the configured size.
    let capacity_bytes = match scanned.segment_bytes {
        Some(bytes) if scanned.end > 0 => bytes,
        _ => config.segment_bytes,
    };
    let direct = open_direct(&path).map_err(|e| direct_error(&path, e))?;
    let end = scanned.end as u64;
    if len < capacity_bytes {
        file.set_len(end)
            .map_err(|e| wal_io_error("truncate torn tail", &path, e))?;
        preallocate(&file, capacity_bytes).map_err(|e| wal_io_error("fallocate", &path, e))?;
        // The blocks past the end are unwritten extents again: write their zeros, as when a
        // segment is made (see `segment::write_zeros`).
        let zeros_from = end.next_multiple_of(BLOCK_BYTES as u64);
        write_zeros(&direct, zeros_from, capacity_bytes)
            .map_err(|e| wal_io_error("write zeros to truncated segment", &path, e))?;
        file.sync_all()
            .map_err(|e| wal_io_error("fsync truncated segment", &path, e))?;
    } else if scanned.torn.is_some() {
        let marked = write_end_mark(&direct, end, &tail, capacity_bytes)
            .map_err(|e| wal_io_error("write end mark over torn tail", &path, e))?;
        // Batches written past the torn one are cut off too: zero them, so that no later
        // scan meets them where an overlapping batch could start (see `overlapping_batch`).
        if let Some(discard_end) = scanned.discard_end {
            let to = (discard_end as u64)
                .next_multiple_of(BLOCK_BYTES as u64)
                .min(capacity_bytes);
            if to > marked {
                write_zeros(&direct, marked, to)
                    .map_err(|e| wal_io_error("zero batches past torn tail", &path, e))?;
            }
        }
    }
    // Whatever the last life wrote is durable before anything new says it is (a new batch's
    // synced through counts every batch found here).
    direct
        .sync_data()
        .map_err(|e| wal_io_error("fdatasync recovered segment", &path, e))?;
    Ok(OpenSegment {
        number,
        path,
        direct: std::sync::Arc::new(direct),
        read: file,
        capacity_bytes,
        write_pos: end,
        write_end: end.next_multiple_of(BLOCK_BYTES as u64).min(capacity_bytes),
        first_sequence: 0,
        tail,
    })
}

/// Writes `tail` (the log's bytes from the block boundary before `end` up to it) and the end
/// mark after it, padded with zeros to whole blocks, at the block boundary before `end`;
/// returns where that write ends.
fn write_end_mark(direct: &File, end: u64, tail: &[u8], capacity_bytes: u64) -> io::Result<u64> {
    let mark = (capacity_bytes - end).min(END_MARK_BYTES as u64) as usize;
    let mut buf = AlignedBuf::new();
    buf.extend_from_slice(tail);
    buf.extend_from_slice(&[0u8; END_MARK_BYTES][..mark]);
    let start = end - tail.len() as u64;
    if buf.is_empty() {
        return Ok(start);
    }
    buf.pad_to_block();
    std::os::unix::fs::FileExt::write_all_at(direct, buf.as_slice(), start)?;
    Ok(start + buf.len() as u64)
}

fn new_first_segment(dir: &Path, config: &WalConfig) -> Result<OpenSegment, WalError> {
    let path = segment_path(dir, 1);
    let direct = create_segment(dir, &path, config)?;
    let read = File::open(&path).map_err(|e| wal_io_error("open segment", &path, e))?;
    Ok(OpenSegment {
        number: 1,
        path,
        direct: std::sync::Arc::new(direct),
        read,
        capacity_bytes: config.segment_bytes,
        write_pos: 0,
        write_end: 0,
        first_sequence: 0,
        tail: Vec::new(),
    })
}

/// An `O_DIRECT` open failed: say so plainly when the file system refuses direct I/O.
pub fn direct_error(path: &Path, error: io::Error) -> WalError {
    let op = if error.raw_os_error() == Some(libc::EINVAL) {
        "open with O_DIRECT (the file system does not support direct I/O: put the WAL on ext4 or xfs, not tmpfs)"
    } else {
        "open segment for writing"
    };
    wal_io_error(op, path, error)
}

fn align_down(offset: usize) -> usize {
    offset - offset % BLOCK_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode_record;

    fn batch_record(segment: u64, sequence: u64) -> Vec<u8> {
        let header = BatchHeader {
            body_bytes: 0,
            body_checksum: 0,
            records: 0,
            sequence,
            segment,
            synced_through: sequence - 1,
        };
        let mut out = Vec::new();
        encode_record(0, RecordKind::Batch, &header.to_bytes(), &mut out).unwrap();
        out
    }

    /// The search past a bad spot finds a batch record of the segment with a later sequence
    /// at any byte offset, in zeros or in noise, and nothing else: not a batch of another
    /// segment (a recycled file's earlier log), not one of an earlier sequence, not one with
    /// a flipped bit, not one cut by the end of the bytes.
    #[test]
    fn find_batch_finds_only_later_batches_of_this_segment() {
        let noise: Vec<u8> = (0..3000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for background in [vec![0u8; 3000], noise] {
            assert_eq!(find_batch(&background, 0, 9, 0), None);
            for at in (0..background.len() - BATCH_RECORD_BYTES).step_by(37) {
                let mut bytes = background.clone();
                bytes[at..at + BATCH_RECORD_BYTES].copy_from_slice(&batch_record(9, 5));
                assert_eq!(find_batch(&bytes, 0, 9, 4), Some(at), "at {at}");
                assert_eq!(find_batch(&bytes, at + 1, 9, 4), None, "past it");
                assert_eq!(find_batch(&bytes, 0, 9, 5), None, "not later");
                assert_eq!(find_batch(&bytes, 0, 10, 0), None, "another segment");
                assert_eq!(
                    find_batch(&bytes[..at + BATCH_RECORD_BYTES - 1], 0, 9, 0),
                    None,
                    "cut"
                );
                bytes[at + 30] ^= 1;
                assert_eq!(find_batch(&bytes, 0, 9, 0), None, "a flipped bit");
            }
        }
    }
}
