//! Opening a WAL: scan its segments in order, rebuild every group's index, hard state and
//! compaction point, truncate a torn tail of the last segment, and refuse to start on
//! corruption anywhere else.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::{Advice, Mmap};

use crate::record::{
    all_zero, judge, read_record, Damage, DamageReason, ReadOutcome, Record, RecordHeader,
    RecordKind, SegmentState, HEADER_BYTES,
};
use crate::segment::{
    list_segments, open_direct, preallocate, segment_file_name, segment_path, sync_dir,
    write_zeros, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use crate::uring::{AlignedBuf, Ring, BLOCK_BYTES};

use super::codec::{decode_payload, BatchHeader};
use super::index::Index;
use super::{
    create_segment, wal_io_error, OpenSegment, Recovery, SealedSegment, TornTail, Wal, WalConfig,
    WalError, SPARE_FILE_NAME,
};

/// What scanning one segment found.
struct Scanned {
    /// Where its valid records end (where the next batch goes).
    end: usize,
    /// The torn tail cut off at `end`, if any.
    torn: Option<Damage>,
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
    remove_empty_last_segments(dir, &mut numbers)?;
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
        if let Some(next) = numbers.get(position + 1) {
            // Start reading the next segment while this one is scanned.
            prefetch(&segment_path(dir, *next));
        }
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
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
    let mut wal = Wal {
        _lock: lock,
        dir: dir.to_path_buf(),
        config,
        ring,
        buf: Some(AlignedBuf::new()),
        records_buf: Vec::new(),
        checkpoint_buf: Vec::new(),
        sealed: sealed.into(),
        open,
        index,
        next_sequence: sequence.map_or(1, |s| s + 1),
        poisoned: false,
        deletion_due: true,
        spare: None,
    };
    wal.spare = super::start_spare(dir, wal.config.segment_bytes);
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

/// A segment after the last one written, never written itself (all zeros), is removed: it is
/// the leftover of a rotation that failed (its removal not durable) or that crashed before
/// its first batch. Left in place it would make the segment before it look sealed, and a torn
/// tail there look like corruption. The only segment is kept: appends start in it.
fn remove_empty_last_segments(dir: &Path, numbers: &mut Vec<u64>) -> Result<(), WalError> {
    while let [.., _, last] = numbers[..] {
        let path = segment_path(dir, last);
        let file = File::open(&path).map_err(|e| wal_io_error("open segment", &path, e))?;
        let map = map_file(&file, &path)?;
        if !all_zero(map.as_deref().unwrap_or(&[])) {
            return Ok(());
        }
        std::fs::remove_file(&path).map_err(|e| wal_io_error("remove empty segment", &path, e))?;
        sync_dir(dir).map_err(|e| wal_io_error("directory fsync", dir, e))?;
        numbers.pop();
    }
    Ok(())
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
    // sealed segments are never written again; the map is read-only.
    let map = unsafe { Mmap::map(file) }.map_err(|e| wal_io_error("mmap segment", path, e))?;
    // Recovery reads the whole segment front to back: ask for it all now, so the disk reads
    // it in large requests ahead of the scan instead of faulting it in a page cluster at a
    // time (cold, that halved the scan's speed). Advice only: a failure changes nothing.
    let _ = map.advise(Advice::Sequential);
    let _ = map.advise(Advice::WillNeed);
    Ok(Some(map))
}

/// Asks the kernel to read `path` into the page cache ahead of need (advice only).
fn prefetch(path: &Path) {
    if let Ok(file) = File::open(path) {
        // SAFETY: plain system call on an open descriptor.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
    }
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
        Ok(header) if header.number == number => Some(header.segment_bytes),
        Ok(header) => {
            return Err((
                0,
                format!(
                    "segment header names segment {}, not the file name's {number}",
                    header.number
                ),
            ))
        }
        // A new segment's header goes out with its first batch: in the last segment, a bad
        // header with nothing written after it is that first write, torn (or never made).
        Err(reason) => {
            let rest = bytes.get(SEGMENT_HEADER_BYTES..).unwrap_or(&[]);
            if state == SegmentState::Open && all_zero(rest) {
                let torn = (!all_zero(bytes)).then_some(Damage {
                    offset: 0,
                    reason: DamageReason::Malformed { what: reason },
                });
                return Ok(Scanned {
                    end: 0,
                    torn,
                    records: 0,
                    segment_bytes: None,
                });
            }
            return Err((0, reason.to_string()));
        }
    };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut records = 0;
    loop {
        let record = match read_record(bytes, offset, state) {
            ReadOutcome::Record(record) => record,
            ReadOutcome::End if offset == SEGMENT_HEADER_BYTES => {
                // A header without its first batch (they are one write): in the last segment,
                // that write torn; the header is written again, with a checkpoint, next time.
                if state == SegmentState::Sealed {
                    return Err((offset, "a sealed segment without batches".to_string()));
                }
                let reason = DamageReason::Malformed {
                    what: "a segment header without its first batch",
                };
                return Ok(Scanned {
                    end: 0,
                    torn: Some(Damage { offset: 0, reason }),
                    records,
                    segment_bytes,
                });
            }
            ReadOutcome::End => {
                return Ok(Scanned {
                    end: offset,
                    torn: None,
                    records,
                    segment_bytes,
                })
            }
            ReadOutcome::Torn(damage) => {
                return Ok(torn_at(offset, damage, records, segment_bytes))
            }
            ReadOutcome::Corrupt(damage) => return Err((damage.offset, damage.reason.to_string())),
        };
        if record.header.kind != RecordKind::Batch {
            return Err((offset, "a record outside a batch".to_string()));
        }
        let batch = BatchHeader::decode(record.payload).map_err(|e| (offset, e.to_string()))?;
        let body_start = record.next_offset();
        let available = bytes.len() - body_start;
        let body_end = usize::try_from(batch.body_bytes)
            .ok()
            .and_then(|b| body_start.checked_add(b));
        let Some(body) = body_end.and_then(|end| bytes.get(body_start..end)) else {
            let reason = DamageReason::BatchCut {
                body_bytes: batch.body_bytes,
                available_bytes: available,
            };
            let extent_end = bytes.len();
            let scanned = (records, segment_bytes);
            return torn_or_corrupt(bytes, state, offset, reason, extent_end, scanned);
        };
        let computed = crc32c::crc32c(body);
        if computed != batch.body_checksum {
            let reason = DamageReason::BatchChecksum {
                expected: batch.body_checksum,
                computed,
            };
            let extent_end = body_start + body.len();
            let scanned = (records, segment_bytes);
            return torn_or_corrupt(bytes, state, offset, reason, extent_end, scanned);
        }
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

fn torn_or_corrupt(
    bytes: &[u8],
    state: SegmentState,
    offset: usize,
    reason: DamageReason,
    extent_end: usize,
    (records, segment_bytes): (u64, Option<u64>),
) -> Result<Scanned, (usize, String)> {
    match judge(bytes, state, offset, reason, extent_end) {
        ReadOutcome::Torn(damage) => Ok(torn_at(offset, damage, records, segment_bytes)),
        _ => Err((offset, reason.to_string())),
    }
}

/// The log ends at a torn batch at `offset`. The first batch of a segment goes out in one
/// write with the segment's header: when it is torn, so is the header, and the segment starts
/// afresh from offset 0.
fn torn_at(offset: usize, damage: Damage, records: u64, segment_bytes: Option<u64>) -> Scanned {
    let offset = if offset == SEGMENT_HEADER_BYTES {
        0
    } else {
        offset
    };
    Scanned {
        end: offset,
        torn: Some(Damage { offset, ..damage }),
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

/// Makes the last segment ready for appends at `end`: a torn tail (and anything after it) is
/// zeroed by truncating the file there and preallocating it again, then synced, so that the
/// next scan finds zeros after the last good batch rather than the torn bytes.
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
    if scanned.torn.is_some() || len < capacity_bytes {
        let end = scanned.end as u64;
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
    }
    Ok(OpenSegment {
        number,
        path,
        direct,
        read: file,
        capacity_bytes,
        write_pos: scanned.end as u64,
        tail,
    })
}

fn new_first_segment(dir: &Path, config: &WalConfig) -> Result<OpenSegment, WalError> {
    let path = segment_path(dir, 1);
    let direct = create_segment(dir, &path, config)?;
    let read = File::open(&path).map_err(|e| wal_io_error("open segment", &path, e))?;
    Ok(OpenSegment {
        number: 1,
        path,
        direct,
        read,
        capacity_bytes: config.segment_bytes,
        write_pos: 0,
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
