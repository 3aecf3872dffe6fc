//! Snapshot files: one durable file per Raft group, replaced atomically, read back in bounded
//! chunks.
//!
//! # The file
//! `snap-<group>-<index>-<term>.snap` in the store's directory (numbers in decimal), holding a
//! fixed 64-byte header and then the snapshot's bytes:
//!
//! ```text
//! offset  size  field
//!      0     8  magic            b"SCSNAP\r\n"
//!      8     4  version          u32 little-endian, 1
//!     12     4  reserved         zero
//!     16     8  group id         u64 little-endian
//!     24     8  index            u64 little-endian: the last log index the snapshot covers
//!     32     8  term             u64 little-endian: the term of the entry at `index`
//!     40     8  data length      u64 little-endian; the file is exactly 64 + length bytes
//!     48     4  data checksum    CRC-32C over the data, u32 little-endian
//!     52     8  reserved         zero
//!     60     4  header checksum  CRC-32C over bytes 0..60, u32 little-endian
//!     64     n  data
//! ```
//!
//! The group, index and term are in the header as well as in the name, and must agree: a file
//! renamed by hand, or a name whose bytes rotted, is caught.
//!
//! # Writing: temp name, fsync, rename, directory fsync
//! [`SnapshotStore::write`] writes `<name>.tmp`, fsyncs it, renames it to `<name>`, and fsyncs the
//! directory; each step is a named fault point (`snapshot.write`, `snapshot.fsync`,
//! `snapshot.rename`, `snapshot.dir_fsync`). Only then is the group's previous snapshot deleted.
//! A crash at any moment leaves either the previous snapshot or the new one as the group's latest,
//! never a half file under a snapshot name: a `.tmp` file is never read, and [`SnapshotStore::open`]
//! deletes it.
//!
//! # Replacing the log prefix atomically
//! A snapshot at `(index, term)` stands for every log entry up to `index`. The rename is the one
//! atomic step that switches a group from the old snapshot to the new one, and recovery decides
//! what of the log survives from the snapshot it finds, by the rule of Raft §7: when the log
//! holds an entry at `index` with `term`, the entries after it are kept; otherwise the whole log
//! is discarded. Before the rename, recovery sees the old snapshot and the log as it was; after
//! it, the new snapshot and the log cut by that rule, whatever the WAL still holds and whether
//! or not the caller's `RecordKind::Snapshot` record (which lets the WAL delete segments behind
//! the snapshot) made it to disk. So the caller writes the snapshot here first, then logs that
//! record: the log never loses entries that no durable snapshot covers.
//!
//! # Reading: verified, in bounded chunks
//! [`SnapshotStore::open`] checks each group's latest snapshot in full (header, name, length and
//! data checksum) and deletes the older ones, which a crash can leave behind the rename; a corrupt latest snapshot is an error naming the file and the offset,
//! never skipped in favour of an older one (that would silently roll the group's state back).
//! A snapshot written by this store is checked in full on its first read. [`SnapshotStore::read_chunk`]
//! then serves at most [`MAX_CHUNK_BYTES`] per call, for InstallSnapshot messages. A chunk read
//! later is not checked again on its own; the sender can put [`SnapshotMeta::data_checksum`] in
//! its last message so that the receiver checks the bytes it assembled end to end before it
//! writes them here.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::fault::{
    injected_error, FaultKind, FaultPoints, SNAPSHOT_DIR_FSYNC, SNAPSHOT_FSYNC, SNAPSHOT_RENAME,
    SNAPSHOT_WRITE,
};

/// The size of a snapshot file's header.
pub const SNAPSHOT_HEADER_BYTES: usize = 64;

/// The first eight bytes of every snapshot file. The `\r\n` catches a file mangled by a text-mode
/// transfer, as in PNG's signature.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SCSNAP\r\n";

/// The header layout version this code writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The most bytes one [`SnapshotStore::read_chunk`] returns. Why 8 MiB: a chunk travels in one
/// InstallSnapshot message, and a frame carries at most 16 MiB (shardcore-protocol's
/// `MAX_FRAME_BYTES`); half of that leaves room for the message's other fields with no
/// arithmetic at the edge. The Raft core asks for 1 MiB chunks by default.
pub const MAX_CHUNK_BYTES: usize = 8 << 20;

/// The size of the reads that verify a whole file's checksum: large enough to run at disk
/// speed, small enough that verifying a snapshot of any size holds this much memory only.
const VERIFY_READ_BYTES: usize = 1 << 20;

const FILE_PREFIX: &str = "snap-";
const FILE_SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 8;
const RESERVED_A_OFFSET: usize = 12;
const GROUP_OFFSET: usize = 16;
const INDEX_OFFSET: usize = 24;
const TERM_OFFSET: usize = 32;
const LENGTH_OFFSET: usize = 40;
const DATA_CHECKSUM_OFFSET: usize = 48;
const RESERVED_B_OFFSET: usize = 52;
const HEADER_CHECKSUM_OFFSET: usize = 60;

/// A durable snapshot: where it stands in its group's log and where its file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The Raft group the snapshot belongs to.
    pub group: u64,
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// The length of the snapshot's data (the file is [`SNAPSHOT_HEADER_BYTES`] longer).
    pub length_bytes: u64,
    /// CRC-32C of the data.
    pub data_checksum: u32,
    /// The snapshot's file.
    pub path: PathBuf,
}

/// What went wrong with a snapshot.
#[derive(Debug)]
pub enum SnapshotError {
    /// A file system call failed.
    Io {
        /// The file or directory it was called on.
        path: PathBuf,
        /// What was being done, for the message: "create", "fsync", "rename", ...
        operation: &'static str,
        /// The error the system returned.
        source: io::Error,
    },
    /// A snapshot file is damaged: nothing from it is served.
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The offset in the file where the damage was found (the start of the field, or of
        /// the data when its checksum fails).
        offset: u64,
        /// What was wrong.
        reason: CorruptReason,
    },
    /// A write at an index not after the group's latest snapshot: a group's snapshots only move
    /// forward (Raft §7: a follower ignores a snapshot its log already covers).
    NotNewer {
        /// The group.
        group: u64,
        /// The index of the refused snapshot.
        index: u64,
        /// The index of the group's latest snapshot.
        latest_index: u64,
    },
    /// The group has no snapshot at this index (none at all, or it was replaced by a newer one).
    Missing {
        /// The group.
        group: u64,
        /// The index asked for.
        index: u64,
    },
    /// A chunk asked for from past the snapshot's end.
    OffsetPastEnd {
        /// The group.
        group: u64,
        /// The snapshot's index.
        index: u64,
        /// The offset asked for, into the data.
        offset: u64,
        /// The data's length.
        length_bytes: u64,
    },
}

/// What was wrong with a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorruptReason {
    /// The file name starts and ends like a snapshot's but does not parse.
    BadName,
    /// The file is shorter than a header.
    HeaderCut {
        /// The file's length.
        file_bytes: u64,
    },
    /// The magic bytes are wrong: not a snapshot file.
    BadMagic,
    /// The header's checksum does not match its bytes.
    HeaderChecksum {
        /// The checksum stored in the header.
        expected: u32,
        /// The checksum of the header's bytes.
        computed: u32,
    },
    /// A version this code does not read.
    UnknownVersion {
        /// The version found.
        found: u32,
    },
    /// Reserved header bytes are not zero.
    ReservedNotZero,
    /// The header's group, index or term differ from the file's name.
    NameMismatch {
        /// What the name says: (group, index, term).
        name: (u64, u64, u64),
        /// What the header says: (group, index, term).
        header: (u64, u64, u64),
    },
    /// The file's length is not the header's length plus the data's.
    LengthMismatch {
        /// The data length the header announces.
        length_bytes: u64,
        /// The file's length.
        file_bytes: u64,
    },
    /// The data's checksum does not match the header's.
    DataChecksum {
        /// The checksum stored in the header.
        expected: u32,
        /// The checksum of the data read.
        computed: u32,
    },
}

/// Which snapshot files a [`SnapshotStore`] holds, one latest per group, and the faults to inject
/// into its writes. It owns its directory: it deletes the `snap-*.tmp` files and superseded
/// snapshots it finds there.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    latest: HashMap<u64, Latest>,
    faults: FaultPoints,
}

#[derive(Debug)]
struct Latest {
    meta: SnapshotMeta,
    /// Whether the whole file's checksum has been checked since it was opened or written.
    verified: Verified,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verified {
    Yes,
    NotYet,
}

/// A snapshot file's name, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Name {
    group: u64,
    index: u64,
    term: u64,
}

impl SnapshotStore {
    /// Opens the store in `dir` (created if missing) with no faults armed. See
    /// [`SnapshotStore::open_with_faults`].
    pub fn open(dir: impl AsRef<Path>) -> Result<SnapshotStore, SnapshotError> {
        SnapshotStore::open_with_faults(dir, FaultPoints::default())
    }

    /// Opens the store in `dir` (created if missing): deletes stale `snap-*.tmp` files (writes a
    /// crash interrupted), checks every snapshot file's header, finds each group's latest
    /// snapshot and checks its whole data, and deletes the older ones it supersedes.
    ///
    /// A damaged latest snapshot is an error naming the file and offset: falling back to an
    /// older one would silently roll the group back past entries its log no longer holds.
    pub fn open_with_faults(
        dir: impl AsRef<Path>,
        faults: FaultPoints,
    ) -> Result<SnapshotStore, SnapshotError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "create directory", e))?;
        let mut by_group: HashMap<u64, Vec<Name>> = HashMap::new();
        let mut removed_any = false;
        for entry in fs::read_dir(&dir).map_err(|e| io_error(&dir, "list", e))? {
            let entry = entry.map_err(|e| io_error(&dir, "list", e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if !file_name.starts_with(FILE_PREFIX) {
                continue;
            }
            let path = entry.path();
            if file_name.ends_with(TMP_SUFFIX) {
                fs::remove_file(&path).map_err(|e| io_error(&path, "remove stale", e))?;
                removed_any = true;
            } else if file_name.ends_with(FILE_SUFFIX) {
                let name = Name::parse(file_name).ok_or_else(|| SnapshotError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: CorruptReason::BadName,
                })?;
                by_group.entry(name.group).or_default().push(name);
            }
        }
        let mut latest = HashMap::new();
        for (group, mut names) in by_group {
            names.sort();
            let newest = names.pop().expect("a group is listed only with a file");
            let meta = check_header(&dir.join(newest.file_name()), newest)?;
            verify_data(&meta)?;
            // The newest is whole and was renamed into place only after it was synced, so the
            // older ones are no longer needed; they stay only when a crash came between the
            // rename and their deletion.
            for older in names {
                let path = dir.join(older.file_name());
                fs::remove_file(&path).map_err(|e| io_error(&path, "remove superseded", e))?;
                removed_any = true;
            }
            let verified = Verified::Yes;
            latest.insert(group, Latest { meta, verified });
        }
        if removed_any {
            sync_dir(&dir)?;
        }
        Ok(SnapshotStore {
            dir,
            latest,
            faults,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The group's latest durable snapshot, if it has one.
    pub fn latest(&self, group: u64) -> Option<&SnapshotMeta> {
        self.latest.get(&group).map(|latest| &latest.meta)
    }

    /// Every group that has a snapshot, in ascending order.
    pub fn groups(&self) -> Vec<u64> {
        let mut groups: Vec<u64> = self.latest.keys().copied().collect();
        groups.sort_unstable();
        groups
    }

    /// Writes the group's snapshot at `index` (whose entry has `term`) durably, then deletes the
    /// group's previous snapshot. When this returns an error the previous snapshot is still the
    /// group's latest, intact, and no new file is left under a snapshot name.
    pub fn write(
        &mut self,
        group: u64,
        index: u64,
        term: u64,
        data: &[u8],
    ) -> Result<SnapshotMeta, SnapshotError> {
        if let Some(previous) = self.latest(group) {
            if index <= previous.index {
                return Err(SnapshotError::NotNewer {
                    group,
                    index,
                    latest_index: previous.index,
                });
            }
        }
        let name = Name { group, index, term };
        let meta = SnapshotMeta {
            group,
            index,
            term,
            length_bytes: data.len() as u64,
            data_checksum: crc32c::crc32c(data),
            path: self.dir.join(name.file_name()),
        };
        let header = encode_header(&meta);
        // Check the header before it is written, as it will be checked after it is read.
        debug_assert_eq!(
            decode_header(&header, &meta.path).ok(),
            Some(header_fields(&meta))
        );
        let tmp = self.dir.join(name.tmp_file_name());
        if let Err(error) = self.write_synced(&tmp, &header, data) {
            // Best effort: a tmp file left behind is deleted by the next open.
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
        self.publish(&tmp, &meta.path)?;
        // The new snapshot is durable: the previous one may go. A failure to delete it leaves a
        // superseded file that the next open deletes, so it is not the write's failure.
        let previous = self.latest.insert(
            group,
            Latest {
                meta: meta.clone(),
                verified: Verified::NotYet,
            },
        );
        if let Some(previous) = previous {
            if fs::remove_file(&previous.meta.path).is_ok() {
                let _ = sync_dir(&self.dir);
            }
        }
        Ok(meta)
    }

    /// Reads at most `max_bytes` (and at most [`MAX_CHUNK_BYTES`]) of the data of the group's
    /// snapshot at `index`, from `offset`. An empty chunk means `offset` is the end. The whole
    /// file's checksum is checked on the first read after the snapshot was written.
    pub fn read_chunk(
        &mut self,
        group: u64,
        index: u64,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Bytes, SnapshotError> {
        let meta = self.verified(group, index)?;
        if offset > meta.length_bytes {
            return Err(SnapshotError::OffsetPastEnd {
                group,
                index,
                offset,
                length_bytes: meta.length_bytes,
            });
        }
        let remaining = meta.length_bytes - offset;
        let chunk_bytes = max_bytes
            .min(MAX_CHUNK_BYTES)
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let mut chunk = vec![0u8; chunk_bytes];
        let file = File::open(&meta.path).map_err(|e| io_error(&meta.path, "open", e))?;
        file.read_exact_at(&mut chunk, SNAPSHOT_HEADER_BYTES as u64 + offset)
            .map_err(|e| io_error(&meta.path, "read", e))?;
        Ok(Bytes::from(chunk))
    }

    /// Reads the whole data of the group's snapshot at `index`, checked against its checksum.
    pub fn read_all(&mut self, group: u64, index: u64) -> Result<Bytes, SnapshotError> {
        let meta = self.snapshot(group, index)?.clone();
        let data = read_data(&meta)?;
        check_data_checksum(&meta, crc32c::crc32c(&data))?;
        self.latest.get_mut(&group).expect("checked above").verified = Verified::Yes;
        Ok(Bytes::from(data))
    }

    /// Writes the header and the data to `tmp` and syncs it.
    fn write_synced(&self, tmp: &Path, header: &[u8], data: &[u8]) -> Result<(), SnapshotError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(|e| io_error(tmp, "create", e))?;
        self.write_all(&mut file, header, data)
            .map_err(|e| io_error(tmp, "write", e))?;
        // sync_all, not sync_data: the file is new, so its size and its blocks' allocation must
        // reach the disk with the data.
        self.faults
            .check(SNAPSHOT_FSYNC)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(tmp, "fsync", e))
    }

    /// Writes the header and the data, or acts out the fault armed at `snapshot.write`: a short
    /// write puts half the bytes in the file before it fails, as a full disk can.
    fn write_all(&self, file: &mut File, header: &[u8], data: &[u8]) -> io::Result<()> {
        match self.faults.fire(SNAPSHOT_WRITE) {
            None => {
                file.write_all(header)?;
                file.write_all(data)
            }
            Some(FaultKind::ShortWrite) => {
                file.write_all(header)?;
                file.write_all(&data[..data.len() / 2])?;
                Err(injected_error(SNAPSHOT_WRITE, FaultKind::ShortWrite))
            }
            Some(kind) => Err(injected_error(SNAPSHOT_WRITE, kind)),
        }
    }

    /// Renames the synced `tmp` to `path` and syncs the directory, undoing the rename when the
    /// directory sync fails: the caller is told the write failed, so the file must not become
    /// the group's latest at the next open either.
    fn publish(&self, tmp: &Path, path: &Path) -> Result<(), SnapshotError> {
        if let Err(error) = self
            .faults
            .check(SNAPSHOT_RENAME)
            .and_then(|()| fs::rename(tmp, path))
        {
            let _ = fs::remove_file(tmp);
            return Err(io_error(path, "rename", error));
        }
        if let Err(error) = self
            .faults
            .check(SNAPSHOT_DIR_FSYNC)
            .and_then(|()| File::open(&self.dir)?.sync_all())
        {
            // Best effort: whether the rename or this removal reached the disk, the file under
            // the name is whole and synced, so the next open finds a valid snapshot either way.
            let _ = fs::remove_file(path);
            return Err(io_error(&self.dir, "fsync directory", error));
        }
        Ok(())
    }

    /// The group's snapshot at `index`, its whole data checked at least once.
    fn verified(&mut self, group: u64, index: u64) -> Result<SnapshotMeta, SnapshotError> {
        let meta = self.snapshot(group, index)?.clone();
        let latest = self.latest.get_mut(&group).expect("checked above");
        if latest.verified == Verified::NotYet {
            verify_data(&meta)?;
            latest.verified = Verified::Yes;
        }
        Ok(meta)
    }

    fn snapshot(&self, group: u64, index: u64) -> Result<&SnapshotMeta, SnapshotError> {
        self.latest(group)
            .filter(|meta| meta.index == index)
            .ok_or(SnapshotError::Missing { group, index })
    }
}

impl Name {
    fn file_name(&self) -> String {
        format!(
            "{FILE_PREFIX}{}-{}-{}{FILE_SUFFIX}",
            self.group, self.index, self.term
        )
    }

    fn tmp_file_name(&self) -> String {
        format!("{}{TMP_SUFFIX}", self.file_name())
    }

    fn parse(file_name: &str) -> Option<Name> {
        let numbers = file_name
            .strip_prefix(FILE_PREFIX)?
            .strip_suffix(FILE_SUFFIX)?;
        let mut parts = numbers.split('-').map(parse_decimal);
        let name = Name {
            group: parts.next()??,
            index: parts.next()??,
            term: parts.next()??,
        };
        parts.next().is_none().then_some(name)
    }
}

/// A u64 as this store writes it: decimal digits only, no sign, no leading zeros.
fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty();
    let canonical = canonical && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

fn encode_header(meta: &SnapshotMeta) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&SNAPSHOT_MAGIC);
    header[VERSION_OFFSET..RESERVED_A_OFFSET].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[GROUP_OFFSET..INDEX_OFFSET].copy_from_slice(&meta.group.to_le_bytes());
    header[INDEX_OFFSET..TERM_OFFSET].copy_from_slice(&meta.index.to_le_bytes());
    header[TERM_OFFSET..LENGTH_OFFSET].copy_from_slice(&meta.term.to_le_bytes());
    header[LENGTH_OFFSET..DATA_CHECKSUM_OFFSET].copy_from_slice(&meta.length_bytes.to_le_bytes());
    header[DATA_CHECKSUM_OFFSET..RESERVED_B_OFFSET]
        .copy_from_slice(&meta.data_checksum.to_le_bytes());
    // Reserved bytes stay zero.
    let checksum = crc32c::crc32c(&header[..HEADER_CHECKSUM_OFFSET]);
    header[HEADER_CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// The header's fields: (group, index, term, data length, data checksum).
type HeaderFields = (u64, u64, u64, u64, u32);

fn header_fields(meta: &SnapshotMeta) -> HeaderFields {
    (
        meta.group,
        meta.index,
        meta.term,
        meta.length_bytes,
        meta.data_checksum,
    )
}

/// Decodes and checks a header; the error carries the offset of the field found wrong.
fn decode_header(
    header: &[u8; SNAPSHOT_HEADER_BYTES],
    path: &Path,
) -> Result<HeaderFields, SnapshotError> {
    let corrupt = |offset: usize, reason| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if header[MAGIC_OFFSET..VERSION_OFFSET] != SNAPSHOT_MAGIC {
        return Err(corrupt(MAGIC_OFFSET, CorruptReason::BadMagic));
    }
    let expected = read_u32(header, HEADER_CHECKSUM_OFFSET);
    let computed = crc32c::crc32c(&header[..HEADER_CHECKSUM_OFFSET]);
    if expected != computed {
        let reason = CorruptReason::HeaderChecksum { expected, computed };
        return Err(corrupt(HEADER_CHECKSUM_OFFSET, reason));
    }
    let version = read_u32(header, VERSION_OFFSET);
    if version != SNAPSHOT_VERSION {
        let reason = CorruptReason::UnknownVersion { found: version };
        return Err(corrupt(VERSION_OFFSET, reason));
    }
    let reserved_a = &header[RESERVED_A_OFFSET..GROUP_OFFSET];
    let reserved_b = &header[RESERVED_B_OFFSET..HEADER_CHECKSUM_OFFSET];
    if reserved_a.iter().chain(reserved_b).any(|b| *b != 0) {
        let offset = if reserved_a.iter().any(|b| *b != 0) {
            RESERVED_A_OFFSET
        } else {
            RESERVED_B_OFFSET
        };
        return Err(corrupt(offset, CorruptReason::ReservedNotZero));
    }
    Ok((
        read_u64(header, GROUP_OFFSET),
        read_u64(header, INDEX_OFFSET),
        read_u64(header, TERM_OFFSET),
        read_u64(header, LENGTH_OFFSET),
        read_u32(header, DATA_CHECKSUM_OFFSET),
    ))
}

/// Reads and checks the header of the file at `path` against its name and the file's length.
fn check_header(path: &Path, name: Name) -> Result<SnapshotMeta, SnapshotError> {
    let file = File::open(path).map_err(|e| io_error(path, "open", e))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| io_error(path, "stat", e))?
        .len();
    let corrupt = |offset: usize, reason| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if file_bytes < SNAPSHOT_HEADER_BYTES as u64 {
        return Err(corrupt(0, CorruptReason::HeaderCut { file_bytes }));
    }
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| io_error(path, "read", e))?;
    let (group, index, term, length_bytes, data_checksum) = decode_header(&header, path)?;
    if (group, index, term) != (name.group, name.index, name.term) {
        let reason = CorruptReason::NameMismatch {
            name: (name.group, name.index, name.term),
            header: (group, index, term),
        };
        return Err(corrupt(GROUP_OFFSET, reason));
    }
    if Some(file_bytes) != length_bytes.checked_add(SNAPSHOT_HEADER_BYTES as u64) {
        let reason = CorruptReason::LengthMismatch {
            length_bytes,
            file_bytes,
        };
        return Err(corrupt(LENGTH_OFFSET, reason));
    }
    Ok(SnapshotMeta {
        group,
        index,
        term,
        length_bytes,
        data_checksum,
        path: path.to_path_buf(),
    })
}

/// Checks the whole data of a snapshot against its checksum, reading it in bounded pieces.
fn verify_data(meta: &SnapshotMeta) -> Result<(), SnapshotError> {
    let path = &meta.path;
    let file = File::open(path).map_err(|e| io_error(path, "open", e))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| io_error(path, "stat", e))?
        .len();
    if file_bytes != SNAPSHOT_HEADER_BYTES as u64 + meta.length_bytes {
        return Err(SnapshotError::Corrupt {
            path: path.clone(),
            offset: LENGTH_OFFSET as u64,
            reason: CorruptReason::LengthMismatch {
                length_bytes: meta.length_bytes,
                file_bytes,
            },
        });
    }
    let mut buffer = vec![0u8; VERIFY_READ_BYTES.min(meta.length_bytes as usize)];
    let mut checksum = 0u32;
    let mut done_bytes = 0u64;
    while done_bytes < meta.length_bytes {
        let piece_bytes = buffer.len().min((meta.length_bytes - done_bytes) as usize);
        let piece = &mut buffer[..piece_bytes];
        file.read_exact_at(piece, SNAPSHOT_HEADER_BYTES as u64 + done_bytes)
            .map_err(|e| io_error(path, "read", e))?;
        checksum = crc32c::crc32c_append(checksum, piece);
        done_bytes += piece_bytes as u64;
    }
    check_data_checksum(meta, checksum)
}

fn read_data(meta: &SnapshotMeta) -> Result<Vec<u8>, SnapshotError> {
    let path = &meta.path;
    let file = File::open(path).map_err(|e| io_error(path, "open", e))?;
    let length_bytes = usize::try_from(meta.length_bytes).expect("a snapshot fits in memory");
    let mut data = vec![0u8; length_bytes];
    file.read_exact_at(&mut data, SNAPSHOT_HEADER_BYTES as u64)
        .map_err(|e| io_error(path, "read", e))?;
    Ok(data)
}

fn check_data_checksum(meta: &SnapshotMeta, computed: u32) -> Result<(), SnapshotError> {
    if computed == meta.data_checksum {
        return Ok(());
    }
    Err(SnapshotError::Corrupt {
        path: meta.path.clone(),
        offset: SNAPSHOT_HEADER_BYTES as u64,
        reason: CorruptReason::DataChecksum {
            expected: meta.data_checksum,
            computed,
        },
    })
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "fsync directory", e))
}

fn io_error(path: &Path, operation: &'static str, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.to_path_buf(),
        operation,
        source,
    }
}

fn read_u32(bytes: &[u8; SNAPSHOT_HEADER_BYTES], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8; SNAPSHOT_HEADER_BYTES], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io {
                path,
                operation,
                source,
            } => write!(f, "snapshot {operation} of {} failed: {source}", path.display()),
            SnapshotError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "corrupt snapshot file {} at offset {offset}: {reason}",
                path.display()
            ),
            SnapshotError::NotNewer {
                group,
                index,
                latest_index,
            } => write!(
                f,
                "group {group}: snapshot at index {index} is not after the latest, at {latest_index}"
            ),
            SnapshotError::Missing { group, index } => {
                write!(f, "group {group} has no snapshot at index {index}")
            }
            SnapshotError::OffsetPastEnd {
                group,
                index,
                offset,
                length_bytes,
            } => write!(
                f,
                "group {group}: offset {offset} is past the end of the {length_bytes}-byte \
                 snapshot at index {index}"
            ),
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptReason::BadName => write!(f, "the name is not snap-<group>-<index>-<term>.snap"),
            CorruptReason::HeaderCut { file_bytes } => write!(
                f,
                "the file has {file_bytes} bytes, less than a {SNAPSHOT_HEADER_BYTES}-byte header"
            ),
            CorruptReason::BadMagic => write!(f, "not a snapshot file (bad magic)"),
            CorruptReason::HeaderChecksum { expected, computed } => write!(
                f,
                "header checksum mismatch: stored {expected:#010x}, computed {computed:#010x}"
            ),
            CorruptReason::UnknownVersion { found } => {
                write!(f, "unknown snapshot version {found}")
            }
            CorruptReason::ReservedNotZero => write!(f, "reserved header bytes are not zero"),
            CorruptReason::NameMismatch { name, header } => write!(
                f,
                "the name says (group, index, term) = {name:?}, the header {header:?}"
            ),
            CorruptReason::LengthMismatch {
                length_bytes,
                file_bytes,
            } => write!(
                f,
                "the header announces {length_bytes} data bytes, the file has {file_bytes} \
                 bytes in all"
            ),
            CorruptReason::DataChecksum { expected, computed } => write!(
                f,
                "data checksum mismatch: stored {expected:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::ALL_POINTS;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A fresh directory under the system's temp directory, removed when dropped.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(test: &str) -> TestDir {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "shardcore-snapshot-{test}-{}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TestDir(path)
        }

        /// The names of the files in the directory, sorted.
        fn listing(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Deterministic bytes that are not all alike (xorshift), so a misplaced chunk shows.
    fn data(length_bytes: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..length_bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn flip_bit(path: &Path, bit: u64) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, bit / 8).unwrap();
        byte[0] ^= 1 << (bit % 8);
        file.write_all_at(&byte, bit / 8).unwrap();
    }

    fn expect_corrupt(result: Result<SnapshotStore, SnapshotError>) -> (PathBuf, u64, String) {
        match result {
            Err(error @ SnapshotError::Corrupt { .. }) => {
                let message = error.to_string();
                let SnapshotError::Corrupt { path, offset, .. } = error else {
                    unreachable!()
                };
                (path, offset, message)
            }
            other => panic!("expected a corrupt snapshot, got {other:?}"),
        }
    }

    /// A snapshot reads back as written, through the same store and after a reopen; the file
    /// has the documented name and layout, and each group keeps its own latest.
    #[test]
    fn snapshots_round_trip_and_survive_reopen() {
        let dir = TestDir::new("round-trip");
        let payload = data(10_000, 1);
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        assert_eq!(store.latest(7), None);
        let meta = store.write(7, 120, 3, &payload).unwrap();
        store.write(9, 5, 1, b"").unwrap();
        assert_eq!(meta.path, dir.0.join("snap-7-120-3.snap"));
        assert_eq!(meta.length_bytes, 10_000);
        assert_eq!(store.latest(7), Some(&meta));
        assert_eq!(store.read_all(7, 120).unwrap(), payload);

        let bytes = fs::read(&meta.path).unwrap();
        assert_eq!(bytes.len(), SNAPSHOT_HEADER_BYTES + payload.len());
        assert_eq!(&bytes[..8], b"SCSNAP\r\n");
        assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
        assert_eq!(&bytes[16..24], &7u64.to_le_bytes());
        assert_eq!(&bytes[24..32], &120u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &3u64.to_le_bytes());
        assert_eq!(&bytes[40..48], &10_000u64.to_le_bytes());
        assert_eq!(&bytes[48..52], &crc32c::crc32c(&payload).to_le_bytes());
        assert_eq!(&bytes[60..64], &crc32c::crc32c(&bytes[..60]).to_le_bytes());
        assert_eq!(&bytes[64..], &payload[..]);

        drop(store);
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        assert_eq!(store.groups(), vec![7, 9]);
        assert_eq!(store.latest(7), Some(&meta));
        assert_eq!(store.read_all(7, 120).unwrap(), payload);
        assert_eq!(store.read_all(9, 5).unwrap(), Bytes::new());
    }

    /// A newer snapshot replaces the group's previous one, whose file is deleted; an index not
    /// after the latest is refused and changes nothing.
    #[test]
    fn a_newer_snapshot_replaces_the_previous_one() {
        let dir = TestDir::new("replace");
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        store.write(1, 10, 1, b"ten").unwrap();
        store.write(1, 20, 2, b"twenty").unwrap();
        assert_eq!(dir.listing(), vec!["snap-1-20-2.snap"]);
        for index in [20, 15] {
            assert!(matches!(
                store.write(1, index, 2, b"old"),
                Err(SnapshotError::NotNewer {
                    group: 1,
                    latest_index: 20,
                    ..
                })
            ));
        }
        assert!(matches!(
            store.read_chunk(1, 10, 0, 100),
            Err(SnapshotError::Missing {
                group: 1,
                index: 10
            })
        ));
        assert_eq!(store.read_all(1, 20).unwrap(), &b"twenty"[..]);
        assert_eq!(dir.listing(), vec!["snap-1-20-2.snap"]);
    }

    /// Chunks of any size, read one after another, cover the data exactly: no byte missed,
    /// none repeated; the end reads as an empty chunk, past the end is an error, and no chunk
    /// exceeds MAX_CHUNK_BYTES however much is asked for.
    #[test]
    fn chunks_cover_the_data_exactly() {
        let dir = TestDir::new("chunks");
        let payload = data(MAX_CHUNK_BYTES + 100_003, 2);
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        store.write(3, 50, 4, &payload).unwrap();
        for max_bytes in [1, 7, 4096, 65_537, MAX_CHUNK_BYTES, usize::MAX] {
            let mut joined = Vec::new();
            let mut chunks = 0;
            loop {
                let chunk = store
                    .read_chunk(3, 50, joined.len() as u64, max_bytes)
                    .unwrap();
                assert!(chunk.len() <= max_bytes.min(MAX_CHUNK_BYTES));
                if chunk.is_empty() {
                    break;
                }
                joined.extend_from_slice(&chunk);
                chunks += 1;
                // One-byte chunks of 8 MiB take too long to walk; the start of the data
                // and a jump to its end stand for the rest.
                if max_bytes == 1 && chunks == 1000 {
                    let tail_offset = payload.len() - 3;
                    joined.extend_from_slice(&payload[joined.len()..tail_offset]);
                }
            }
            assert!(joined == payload, "chunks of {max_bytes} bytes");
        }
        let end = payload.len() as u64;
        assert!(matches!(
            store.read_chunk(3, 50, end + 1, 10),
            Err(SnapshotError::OffsetPastEnd { offset, .. }) if offset == end + 1
        ));
    }

    /// A failure injected at each durability step (write, fsync, rename, directory fsync), as
    /// an I/O error, a full disk or a short write, fails the write and leaves the previous
    /// snapshot the group's latest, intact and readable, with no new or half file in the
    /// directory, before and after a reopen; the same write then succeeds once disarmed.
    #[test]
    fn a_failure_at_any_step_keeps_the_previous_snapshot() {
        let points = [
            SNAPSHOT_WRITE,
            SNAPSHOT_FSYNC,
            SNAPSHOT_RENAME,
            SNAPSHOT_DIR_FSYNC,
        ];
        let kinds = [
            FaultKind::Error(io::ErrorKind::Other),
            FaultKind::DiskFull,
            FaultKind::ShortWrite,
        ];
        assert!(points.iter().all(|p| ALL_POINTS.contains(p)));
        for point in points {
            for kind in kinds {
                let dir = TestDir::new("faults");
                let faults = FaultPoints::new();
                let mut store = SnapshotStore::open_with_faults(&dir.0, faults.clone()).unwrap();
                let old = data(5000, 3);
                let new = data(7000, 4);
                let previous = store.write(2, 10, 1, &old).unwrap();
                faults.arm(point, kind);
                let error = store.write(2, 20, 2, &new).unwrap_err();
                assert_eq!(faults.fired(point), 1, "{point} {kind:?}");
                assert!(
                    matches!(error, SnapshotError::Io { .. }),
                    "{point} {kind:?}: {error}"
                );
                let context = format!("{point} {kind:?}: {error}");
                assert_eq!(store.latest(2), Some(&previous), "{context}");
                assert_eq!(store.read_all(2, 10).unwrap(), old, "{context}");
                assert_eq!(dir.listing(), vec!["snap-2-10-1.snap"], "{context}");
                drop(store);

                let mut store = SnapshotStore::open_with_faults(&dir.0, faults.clone()).unwrap();
                assert_eq!(store.latest(2), Some(&previous), "{context}");
                assert_eq!(store.read_all(2, 10).unwrap(), old, "{context}");
                let meta = store.write(2, 20, 2, &new).unwrap();
                assert_eq!(store.read_all(2, 20).unwrap(), new, "{context}");
                assert_eq!(dir.listing(), vec!["snap-2-20-2.snap"], "{context}");
                assert_eq!(store.latest(2), Some(&meta));
            }
        }
    }

    /// A crash between the rename and the deletion of the previous snapshot leaves two files;
    /// the next open keeps the newer one and deletes the older.
    #[test]
    fn open_deletes_superseded_snapshots() {
        let dir = TestDir::new("superseded");
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        store.write(4, 10, 1, b"old").unwrap();
        let kept = fs::read(dir.0.join("snap-4-10-1.snap")).unwrap();
        store.write(4, 30, 2, b"new").unwrap();
        fs::write(dir.0.join("snap-4-10-1.snap"), kept).unwrap();
        drop(store);
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        assert_eq!(store.latest(4).map(|m| m.index), Some(30));
        assert_eq!(store.read_all(4, 30).unwrap(), &b"new"[..]);
        assert_eq!(dir.listing(), vec!["snap-4-30-2.snap"]);
    }

    /// Temporary files a crash left behind (half written or whole) are removed on open and
    /// never read; files that are not the store's are left alone.
    #[test]
    fn stale_temporary_files_are_removed_on_open() {
        let dir = TestDir::new("stale-tmp");
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        store.write(5, 10, 1, b"durable").unwrap();
        drop(store);
        fs::write(dir.0.join("snap-5-20-1.snap.tmp"), b"SCSNAP\r\nhalf").unwrap();
        fs::write(dir.0.join("snap-6-1-1.snap.tmp"), b"").unwrap();
        fs::write(dir.0.join("notes.txt"), b"not a snapshot").unwrap();
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        assert_eq!(dir.listing(), vec!["notes.txt", "snap-5-10-1.snap"]);
        assert_eq!(store.groups(), vec![5]);
        assert_eq!(store.read_all(5, 10).unwrap(), &b"durable"[..]);
    }

    /// A flipped bit anywhere in a snapshot file (header or data) is caught when the store
    /// opens, as corruption naming the file and an offset within it.
    #[test]
    fn every_flipped_bit_is_caught_on_open_with_the_file_named() {
        let dir = TestDir::new("bit-open");
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        let meta = store.write(8, 40, 2, &data(32, 5)).unwrap();
        drop(store);
        let file_bytes = SNAPSHOT_HEADER_BYTES as u64 + 32;
        for bit in 0..file_bytes * 8 {
            flip_bit(&meta.path, bit);
            let (path, offset, message) = expect_corrupt(SnapshotStore::open(&dir.0));
            assert_eq!(path, meta.path, "bit {bit}");
            assert!(offset < file_bytes, "bit {bit}");
            assert!(message.contains("snap-8-40-2.snap"), "bit {bit}: {message}");
            flip_bit(&meta.path, bit);
        }
        assert!(SnapshotStore::open(&dir.0).is_ok());
    }

    /// A bit that flips in a snapshot after it was written is caught on its first read, by
    /// read_chunk as by read_all, and the error names the file and the data's offset.
    #[test]
    fn a_flipped_bit_is_caught_on_first_read() {
        let dir = TestDir::new("bit-read");
        let payload = data(3000, 6);
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        let meta = store.write(8, 40, 2, &payload).unwrap();
        flip_bit(&meta.path, (SNAPSHOT_HEADER_BYTES as u64 + 2999) * 8 + 3);
        for read in [
            store.read_chunk(8, 40, 0, 100).map(|_| ()),
            store.read_all(8, 40).map(|_| ()),
        ] {
            match read {
                Err(SnapshotError::Corrupt {
                    path,
                    offset,
                    reason: CorruptReason::DataChecksum { .. },
                }) => {
                    assert_eq!(path, meta.path);
                    assert_eq!(offset, SNAPSHOT_HEADER_BYTES as u64);
                }
                other => panic!("expected a data checksum error, got {other:?}"),
            }
        }
    }

    /// A damaged latest snapshot stops the open even when an older, valid one is present:
    /// falling back would roll the group back.
    #[test]
    fn a_corrupt_latest_is_never_skipped_for_an_older_one() {
        let dir = TestDir::new("no-fallback");
        let mut store = SnapshotStore::open(&dir.0).unwrap();
        store.write(1, 10, 1, b"older").unwrap();
        let older = fs::read(dir.0.join("snap-1-10-1.snap")).unwrap();
        let newer = store.write(1, 20, 1, b"newer").unwrap();
        drop(store);
        fs::write(dir.0.join("snap-1-10-1.snap"), older).unwrap();
        flip_bit(&newer.path, (SNAPSHOT_HEADER_BYTES as u64 + 1) * 8);
        let (path, offset, message) = expect_corrupt(SnapshotStore::open(&dir.0));
        assert_eq!((path, offset), (newer.path, SNAPSHOT_HEADER_BYTES as u64));
        assert!(message.contains("data checksum mismatch"), "{message}");
        assert!(dir.listing().contains(&"snap-1-10-1.snap".to_string()));
    }

    /// Files a crash or an operator can leave are named in the error with the offset of what
    /// is wrong: a cut header, a cut or extended data, a malformed name, a name that
    /// disagrees with the header.
    #[test]
    fn damaged_files_are_named_with_offset_and_reason() {
        // (case, damage done to (file, directory), offset expected, text expected)
        type Case = (&'static str, fn(&Path, &Path), u64, &'static str);
        let cases: [Case; 5] = [
            (
                "header-cut",
                |path, _| fs::write(path, b"SCSNAP\r\n").unwrap(),
                0,
                "less than a 64-byte header",
            ),
            (
                "data-cut",
                |path, _| {
                    let file = OpenOptions::new().write(true).open(path).unwrap();
                    file.set_len(70).unwrap();
                },
                LENGTH_OFFSET as u64,
                "announces 100 data bytes, the file has 70",
            ),
            (
                "data-extended",
                |path, _| {
                    let file = OpenOptions::new().write(true).open(path).unwrap();
                    file.set_len(200).unwrap();
                },
                LENGTH_OFFSET as u64,
                "the file has 200",
            ),
            (
                "bad-name",
                |_, dir| fs::write(dir.join("snap-1-x-2.snap"), b"").unwrap(),
                0,
                "the name is not snap-<group>-<index>-<term>.snap",
            ),
            (
                "renamed",
                |path, dir| fs::rename(path, dir.join("snap-1-11-2.snap")).unwrap(),
                GROUP_OFFSET as u64,
                "the name says (group, index, term) = (1, 11, 2), the header (1, 10, 2)",
            ),
        ];
        for (case, damage, expected_offset, expected_text) in cases {
            let dir = TestDir::new(case);
            let mut store = SnapshotStore::open(&dir.0).unwrap();
            let meta = store.write(1, 10, 2, &data(100, 7)).unwrap();
            drop(store);
            damage(&meta.path, &dir.0);
            let (_, offset, message) = expect_corrupt(SnapshotStore::open(&dir.0));
            assert_eq!(offset, expected_offset, "{case}: {message}");
            assert!(message.contains(expected_text), "{case}: {message}");
            assert!(message.contains(&dir.0.display().to_string()), "{message}");
        }
    }
}
