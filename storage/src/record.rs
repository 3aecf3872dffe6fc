//! The WAL record: a fixed 24-byte header, then the payload.
//!
//! ```text
//! offset  size  field
//!      0     4  header checksum   CRC-32C over bytes 4..24, u32 little-endian
//!      4     4  payload length    u32 little-endian, <= MAX_RECORD_BYTES
//!      8     4  payload checksum  CRC-32C over the payload, u32 little-endian
//!     12     8  group id          u64 little-endian: the Raft group the record belongs to
//!     20     1  record type       RecordKind as u8 (0 is never written)
//!     21     3  reserved          zero
//!     24     n  payload
//! ```
//!
//! The header has a checksum of its own so that its length can be trusted before the payload is
//! read: a flipped bit in a length could otherwise make a record in the middle of the log look
//! like one that runs off the end, that is, like a torn write, and recovery would cut away the
//! acknowledged records after it. An all-zero header means "nothing was written here".
//!
//! # Torn or corrupt
//! This module's rule ([`scan`], [`judge`]) is for segments whose unwritten space is zeros. The
//! WAL's own recovery (`wal::recovery`) reads its segments batch by batch with a rule that also
//! holds for recycled segment files, whose space after the log holds an earlier log: there,
//! "nothing written after" becomes "no batch of this segment after", which the segment number
//! in every batch record tells.
//!
//! A crash can tear only the last write, and the last write is at the end of the open (newest)
//! segment; sealed segments were synced before the next one got a byte. So a record that fails to
//! read is:
//! - **torn** when it is in the open segment and nothing was written after it (only zeros or the
//!   end of the file follow its extent; or its header, when the header itself is damaged and
//!   its extent unknown): recovery truncates the log there and goes on; nothing after it was
//!   ever acknowledged, because acknowledgement waits for the sync;
//! - **corrupt** otherwise: a bad record anywhere in a sealed segment, a bad record with written
//!   data after it, or a header whose checksum holds but whose fields no writer produces.
//!   Recovery stops with the offset and the reason and serves nothing from there on.
//!
//! The rule is conservative. A multi-sector write torn with its later sectors landed reads as
//! corrupt and stops the node, which is safe but needs an operator; a marker per group-commit
//! write (its extent and checksum) can narrow this later. And one flipped bit in the payload of
//! the very last record cannot be told from a tear: it is truncated, and Raft re-replicates the
//! entry from the group's other members.

use std::fmt;

/// The size of a record header.
pub const HEADER_BYTES: usize = 24;

/// The largest record payload. Why 16 MiB: a record holds one group's entries from one Ready,
/// and one Raft entry may be up to 8 MiB (the Raft core's default `max_entry_bytes`); the writer
/// splits larger batches over several records. A checksummed header announcing more was written by
/// no shardcore and is corrupt.
pub const MAX_RECORD_BYTES: u32 = 16 << 20;

const HEADER_CHECKSUM_OFFSET: usize = 0;
const LENGTH_OFFSET: usize = 4;
const PAYLOAD_CHECKSUM_OFFSET: usize = 8;
const GROUP_OFFSET: usize = 12;
const KIND_OFFSET: usize = 20;
const RESERVED_OFFSET: usize = 21;

/// What a record's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// A contiguous run of one group's log entries; they replace any stored entries at or after
    /// the first one's index.
    Entries = 1,
    /// One group's hard state (term, vote, commit).
    HardState = 2,
    /// One group's snapshot was persisted at an index: its entries up to there are no longer
    /// needed, and segments wholly behind every group's snapshot can be deleted. The WAL's
    /// `LogRecord::Compact` is written as this kind.
    Snapshot = 3,
    /// One group's log is cut: its entries at and after an index are dropped (a follower's
    /// conflicting suffix, Raft §5.3).
    Truncate = 4,
    /// The envelope of one group-commit write: its payload gives the extent and checksum of
    /// the records that follow it (the batch body), so that recovery takes a batch whole or
    /// not at all, and can tell a torn batch from corruption by the batch's extent. Its group is 0.
    Batch = 5,
    /// One group's state in a segment's checkpoint (the start of its first batch): its hard
    /// state, compaction point and the range of its live entries, so that a segment can be
    /// deleted without losing the only copy of any of them.
    GroupState = 6,
}

impl RecordKind {
    /// Every kind, in wire order.
    pub const ALL: [RecordKind; 6] = [
        RecordKind::Entries,
        RecordKind::HardState,
        RecordKind::Snapshot,
        RecordKind::Truncate,
        RecordKind::Batch,
        RecordKind::GroupState,
    ];

    /// The kind a type byte names, if any.
    pub fn from_byte(byte: u8) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }
}

/// A record header; its checksums are computed from the fields and the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The payload's length, at most [`MAX_RECORD_BYTES`].
    pub length_bytes: u32,
    /// CRC-32C of the payload.
    pub payload_checksum: u32,
    /// The Raft group the record belongs to.
    pub group: u64,
    /// What the payload holds.
    pub kind: RecordKind,
}

/// Whether a segment can end in a torn write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentState {
    /// The newest segment, still being appended to when the node stopped: its end may be torn.
    Open,
    /// An older segment, synced in full before the next one was opened: it cannot be torn.
    Sealed,
}

/// One record read from a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Where the record starts in its segment.
    pub offset: usize,
    /// Its checked header.
    pub header: RecordHeader,
    /// Its checked payload.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Where the next record starts.
    pub fn next_offset(&self) -> usize {
        self.offset + HEADER_BYTES + self.payload.len()
    }
}

/// What is found at an offset of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome<'a> {
    /// A whole, valid record.
    Record(Record<'a>),
    /// No more records: the end of the bytes, or only zeros (preallocated, never written).
    End,
    /// A torn write at the end of the open segment: truncate at `offset` and go on.
    Torn(Damage),
    /// Corruption: stop recovery at `offset`, serve nothing from there on.
    Corrupt(Damage),
}

/// Where a record failed to read and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The offset of the record that failed, in its segment.
    pub offset: usize,
    /// What was wrong with it.
    pub reason: DamageReason,
}

/// What was wrong with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamageReason {
    /// The segment ends inside the header.
    HeaderCut {
        /// The header bytes present.
        available_bytes: usize,
    },
    /// An all-zero header (nothing written here) with written bytes after it.
    WrittenAfterHole,
    /// The header's checksum does not match its bytes.
    HeaderChecksum {
        /// The checksum stored in the header.
        expected: u32,
        /// The checksum of the header's bytes.
        computed: u32,
    },
    /// A checksummed header with a type byte that names no [`RecordKind`].
    UnknownKind {
        /// The type byte found.
        found: u8,
    },
    /// A checksummed header whose reserved bytes are not zero.
    ReservedNotZero,
    /// A checksummed header announcing a payload over [`MAX_RECORD_BYTES`].
    TooLarge {
        /// The announced payload length.
        length_bytes: u32,
    },
    /// The segment ends inside the payload.
    PayloadCut {
        /// The announced payload length.
        length_bytes: u32,
        /// The payload bytes present.
        available_bytes: usize,
    },
    /// The payload's checksum does not match its bytes.
    PayloadChecksum {
        /// The checksum stored in the header.
        expected: u32,
        /// The checksum of the payload's bytes.
        computed: u32,
    },
    /// The segment ends inside a batch body (the records a [`RecordKind::Batch`] announces).
    BatchCut {
        /// The announced body length.
        body_bytes: u64,
        /// The body bytes present.
        available_bytes: usize,
    },
    /// A batch body's checksum does not match its bytes.
    BatchChecksum {
        /// The checksum stored in the batch record.
        expected: u32,
        /// The checksum of the body's bytes.
        computed: u32,
    },
    /// A record whose checksums hold but whose contents no writer produces (a payload of the
    /// wrong size for its kind, a record outside a batch, a log transition that is not
    /// allowed): written as it is, so not torn.
    Malformed {
        /// What is wrong, in a phrase.
        what: &'static str,
    },
}

/// Why a record could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordTooLarge {
    /// The payload's length.
    pub length_bytes: usize,
}

impl RecordHeader {
    /// The header for `payload` of `kind` in `group`.
    pub fn for_payload(
        group: u64,
        kind: RecordKind,
        payload: &[u8],
    ) -> Result<RecordHeader, RecordTooLarge> {
        let length_bytes = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= MAX_RECORD_BYTES)
            .ok_or(RecordTooLarge {
                length_bytes: payload.len(),
            })?;
        Ok(RecordHeader {
            length_bytes,
            payload_checksum: crc32c::crc32c(payload),
            group,
            kind,
        })
    }

    /// The header's bytes, its checksum included.
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[LENGTH_OFFSET..PAYLOAD_CHECKSUM_OFFSET]
            .copy_from_slice(&self.length_bytes.to_le_bytes());
        bytes[PAYLOAD_CHECKSUM_OFFSET..GROUP_OFFSET]
            .copy_from_slice(&self.payload_checksum.to_le_bytes());
        bytes[GROUP_OFFSET..KIND_OFFSET].copy_from_slice(&self.group.to_le_bytes());
        bytes[KIND_OFFSET] = self.kind as u8;
        // Reserved bytes stay zero.
        let checksum = crc32c::crc32c(&bytes[LENGTH_OFFSET..]);
        bytes[HEADER_CHECKSUM_OFFSET..LENGTH_OFFSET].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Decodes a header, checking its checksum and every field. Says nothing about the payload.
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Result<RecordHeader, DamageReason> {
        let expected = read_u32(bytes, HEADER_CHECKSUM_OFFSET);
        let computed = crc32c::crc32c(&bytes[LENGTH_OFFSET..]);
        if expected != computed {
            return Err(DamageReason::HeaderChecksum { expected, computed });
        }
        let kind_byte = bytes[KIND_OFFSET];
        let kind = RecordKind::from_byte(kind_byte)
            .ok_or(DamageReason::UnknownKind { found: kind_byte })?;
        if bytes[RESERVED_OFFSET..].iter().any(|b| *b != 0) {
            return Err(DamageReason::ReservedNotZero);
        }
        let length_bytes = read_u32(bytes, LENGTH_OFFSET);
        if length_bytes > MAX_RECORD_BYTES {
            return Err(DamageReason::TooLarge { length_bytes });
        }
        let group = u64::from_le_bytes(
            bytes[GROUP_OFFSET..KIND_OFFSET]
                .try_into()
                .expect("8 bytes"),
        );
        let payload_checksum = read_u32(bytes, PAYLOAD_CHECKSUM_OFFSET);
        Ok(RecordHeader {
            length_bytes,
            payload_checksum,
            group,
            kind,
        })
    }
}

/// Appends one record (header and payload) to `out`, and checks it reads back before the caller
/// can write it anywhere.
pub fn encode_record(
    group: u64,
    kind: RecordKind,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RecordTooLarge> {
    let header = RecordHeader::for_payload(group, kind, payload)?;
    let offset = out.len();
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    debug_assert_eq!(
        read_record(out, offset, SegmentState::Sealed),
        ReadOutcome::Record(Record {
            offset,
            header,
            payload
        })
    );
    Ok(())
}

/// Reads the record at `offset` of a segment's bytes and, when it fails, judges the failure
/// torn or corrupt (see the module docs).
pub fn read_record(segment: &[u8], offset: usize, state: SegmentState) -> ReadOutcome<'_> {
    assert!(
        offset <= segment.len(),
        "offset {offset} past the segment's {} bytes",
        segment.len()
    );
    let rest = &segment[offset..];
    if all_zero(rest) {
        return ReadOutcome::End;
    }
    let damaged = |reason, extent_end: usize| judge(segment, state, offset, reason, extent_end);
    let Some(header_bytes) = rest.first_chunk::<HEADER_BYTES>() else {
        return damaged(
            DamageReason::HeaderCut {
                available_bytes: rest.len(),
            },
            segment.len(),
        );
    };
    let header_end = offset + HEADER_BYTES;
    if all_zero(header_bytes) {
        return damaged(DamageReason::WrittenAfterHole, header_end);
    }
    let header = match RecordHeader::decode(header_bytes) {
        Ok(header) => header,
        Err(reason @ DamageReason::HeaderChecksum { .. }) => return damaged(reason, header_end),
        // The header's checksum holds: these fields were written as they are, by no shardcore.
        Err(reason) => return ReadOutcome::Corrupt(Damage { offset, reason }),
    };
    let length_bytes = header.length_bytes;
    let Some(payload) = rest[HEADER_BYTES..].get(..length_bytes as usize) else {
        let available_bytes = rest.len() - HEADER_BYTES;
        return damaged(
            DamageReason::PayloadCut {
                length_bytes,
                available_bytes,
            },
            segment.len(),
        );
    };
    let computed = crc32c::crc32c(payload);
    if computed != header.payload_checksum {
        let reason = DamageReason::PayloadChecksum {
            expected: header.payload_checksum,
            computed,
        };
        return damaged(reason, header_end + payload.len());
    }
    ReadOutcome::Record(Record {
        offset,
        header,
        payload,
    })
}

/// Every record of a segment from its start, and how the segment ends.
pub fn scan(segment: &[u8], state: SegmentState) -> (Vec<Record<'_>>, ReadOutcome<'_>) {
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        match read_record(segment, offset, state) {
            ReadOutcome::Record(record) => {
                offset = record.next_offset();
                records.push(record);
            }
            end => return (records, end),
        }
    }
}

/// Torn or corrupt: a damaged record (or batch) is torn only at the end of the open segment,
/// that is, when nothing was written after its extent (`extent_end`).
pub fn judge(
    segment: &[u8],
    state: SegmentState,
    offset: usize,
    reason: DamageReason,
    extent_end: usize,
) -> ReadOutcome<'_> {
    let damage = Damage { offset, reason };
    let nothing_after = all_zero(&segment[extent_end.min(segment.len())..]);
    match state {
        SegmentState::Open if nothing_after => ReadOutcome::Torn(damage),
        _ => ReadOutcome::Corrupt(damage),
    }
}

/// Whether every byte is zero (never written, in a preallocated segment).
pub fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

fn read_u32(bytes: &[u8; HEADER_BYTES], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

impl fmt::Display for DamageReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageReason::HeaderCut { available_bytes } => {
                write!(
                    f,
                    "segment ends {available_bytes} bytes into a {HEADER_BYTES}-byte header"
                )
            }
            DamageReason::WrittenAfterHole => {
                write!(f, "an empty (all-zero) header with written bytes after it")
            }
            DamageReason::HeaderChecksum { expected, computed } => write!(
                f,
                "header checksum mismatch: stored {expected:#010x}, computed {computed:#010x}"
            ),
            DamageReason::UnknownKind { found } => write!(f, "unknown record type {found}"),
            DamageReason::ReservedNotZero => write!(f, "reserved header bytes are not zero"),
            DamageReason::TooLarge { length_bytes } => write!(
                f,
                "record of {length_bytes} bytes exceeds the limit of {MAX_RECORD_BYTES}"
            ),
            DamageReason::PayloadCut {
                length_bytes,
                available_bytes,
            } => write!(
                f,
                "segment ends {available_bytes} bytes into a {length_bytes}-byte payload"
            ),
            DamageReason::PayloadChecksum { expected, computed } => write!(
                f,
                "payload checksum mismatch: stored {expected:#010x}, computed {computed:#010x}"
            ),
            DamageReason::BatchCut {
                body_bytes,
                available_bytes,
            } => write!(
                f,
                "segment ends {available_bytes} bytes into a {body_bytes}-byte batch"
            ),
            DamageReason::BatchChecksum { expected, computed } => write!(
                f,
                "batch checksum mismatch: stored {expected:#010x}, computed {computed:#010x}"
            ),
            DamageReason::Malformed { what } => write!(f, "malformed record: {what}"),
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad record at offset {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for Damage {}

impl fmt::Display for RecordTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record of {} bytes exceeds the limit of {MAX_RECORD_BYTES}",
            self.length_bytes
        )
    }
}

impl std::error::Error for RecordTooLarge {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three records of different groups and kinds; the last one's payload is `b"tail"`.
    fn segment() -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for (group, kind, payload) in [
            (7, RecordKind::Entries, &b"entries of group 7"[..]),
            (9, RecordKind::HardState, &[1u8; 24][..]),
            (7, RecordKind::Snapshot, &b"tail"[..]),
        ] {
            offsets.push(bytes.len());
            encode_record(group, kind, payload, &mut bytes).unwrap();
        }
        (bytes, offsets)
    }

    fn offsets_of(records: &[Record<'_>]) -> Vec<usize> {
        records.iter().map(|r| r.offset).collect()
    }

    /// The header's bytes sit where the module docs say, little-endian, with both checksums.
    #[test]
    fn header_layout_is_as_documented() {
        let mut bytes = Vec::new();
        encode_record(
            0x0102_0304_0506_0708,
            RecordKind::HardState,
            b"abc",
            &mut bytes,
        )
        .unwrap();
        assert_eq!(bytes.len(), HEADER_BYTES + 3);
        assert_eq!(&bytes[0..4], &crc32c::crc32c(&bytes[4..24]).to_le_bytes());
        assert_eq!(&bytes[4..8], &3u32.to_le_bytes());
        assert_eq!(&bytes[8..12], &crc32c::crc32c(b"abc").to_le_bytes());
        assert_eq!(&bytes[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bytes[20], 2);
        assert_eq!(&bytes[21..24], &[0, 0, 0]);
        assert_eq!(&bytes[24..], b"abc");
        assert_eq!(
            crc32c::crc32c(b"123456789"),
            0xE306_9283,
            "CRC-32C, not CRC-32"
        );
    }

    /// Records read back in order with their groups, kinds and payloads, and a zero-filled
    /// (preallocated) tail reads as a clean end.
    #[test]
    fn records_round_trip_and_zeros_end_the_log() {
        let (mut bytes, offsets) = segment();
        bytes.resize(bytes.len() + 4096, 0);
        for state in [SegmentState::Open, SegmentState::Sealed] {
            let (records, end) = scan(&bytes, state);
            assert_eq!(offsets_of(&records), offsets);
            assert_eq!(records[0].header.group, 7);
            assert_eq!(records[1].header.kind, RecordKind::HardState);
            assert_eq!(records[2].payload, b"tail");
            assert_eq!(end, ReadOutcome::End);
        }
        assert_eq!(scan(&[], SegmentState::Open), (vec![], ReadOutcome::End));
    }

    /// A crash can cut the open segment at any byte, or leave zeros from any byte on (a
    /// preallocated file): either way recovery keeps every whole record before the cut, reads
    /// the cut record as torn, and never calls it corrupt.
    #[test]
    fn every_cut_of_the_open_segment_is_torn_never_corrupt() {
        let (bytes, offsets) = segment();
        for cut in 0..=bytes.len() {
            let truncated = bytes[..cut].to_vec();
            let mut zeroed = bytes.clone();
            zeroed[cut..].fill(0);
            for damaged in [truncated, zeroed] {
                let (records, end) = scan(&damaged, SegmentState::Open);
                // A record is whole when it ends at or before the cut.
                let ends = offsets[1..].iter().copied().chain([bytes.len()]);
                let whole: Vec<usize> = offsets
                    .iter()
                    .zip(ends)
                    .filter(|(_, end)| *end <= cut)
                    .map(|(o, _)| *o)
                    .collect();
                assert_eq!(offsets_of(&records), whole, "cut at {cut}");
                let boundary = cut == bytes.len() || offsets.contains(&cut);
                match end {
                    ReadOutcome::End => assert!(boundary, "cut at {cut} read as a clean end"),
                    ReadOutcome::Torn(damage) => {
                        assert!(!boundary, "cut at {cut}");
                        assert_eq!(
                            Some(&damage.offset),
                            offsets.get(whole.len()),
                            "cut at {cut}"
                        );
                    }
                    other => panic!("cut at {cut}: {other:?}"),
                }
            }
        }
    }

    /// In a sealed segment nothing can be torn: a cut inside a record is corruption.
    #[test]
    fn a_cut_inside_a_sealed_record_is_corrupt() {
        let (bytes, offsets) = segment();
        for cut in 0..bytes.len() {
            let (_, end) = scan(&bytes[..cut], SegmentState::Sealed);
            if offsets.contains(&cut) {
                assert_eq!(end, ReadOutcome::End, "cut at {cut}");
            } else {
                assert!(
                    matches!(end, ReadOutcome::Corrupt(_)),
                    "cut at {cut}: {end:?}"
                );
            }
        }
    }

    /// A flipped bit is always caught, at the record that holds it. It reads as torn only where
    /// it cannot be told from a tear: in the open segment's last payload. Everywhere else, and
    /// anywhere in a sealed segment, it is corruption.
    #[test]
    fn every_flipped_bit_is_caught_at_its_record() {
        let (bytes, offsets) = segment();
        let last = *offsets.last().unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let byte = bit / 8;
            let holder = *offsets.iter().rev().find(|o| **o <= byte).unwrap();
            for state in [SegmentState::Open, SegmentState::Sealed] {
                let (records, end) = scan(&flipped, state);
                assert_eq!(records.last().map(|r| r.next_offset()).unwrap_or(0), holder);
                let torn = state == SegmentState::Open && byte >= last + HEADER_BYTES;
                match end {
                    ReadOutcome::Torn(d) if torn => assert_eq!(d.offset, holder),
                    ReadOutcome::Corrupt(d) if !torn => assert_eq!(d.offset, holder),
                    other => panic!("bit {bit} in a {state:?} segment: {other:?}"),
                }
            }
        }
    }

    /// Written bytes after an empty header mean a hole in the log, not its end.
    #[test]
    fn a_hole_before_written_bytes_is_corrupt() {
        let (mut bytes, offsets) = segment();
        bytes[offsets[1]..offsets[1] + HEADER_BYTES].fill(0);
        let (records, end) = scan(&bytes, SegmentState::Open);
        assert_eq!(records.len(), 1);
        assert_eq!(
            end,
            ReadOutcome::Corrupt(Damage {
                offset: offsets[1],
                reason: DamageReason::WrittenAfterHole
            })
        );
    }

    /// A header whose checksum holds but whose fields no writer produces is corrupt, even at
    /// the end of the open segment.
    #[test]
    fn a_checksummed_header_with_impossible_fields_is_corrupt() {
        let reseal = |mut header: [u8; HEADER_BYTES]| {
            let checksum = crc32c::crc32c(&header[LENGTH_OFFSET..]);
            header[..LENGTH_OFFSET].copy_from_slice(&checksum.to_le_bytes());
            header
        };
        let good = RecordHeader::for_payload(1, RecordKind::Entries, b"")
            .unwrap()
            .to_bytes();
        let mut unknown = good;
        unknown[KIND_OFFSET] = 0;
        let mut reserved = good;
        reserved[RESERVED_OFFSET + 2] = 1;
        let mut huge = good;
        huge[LENGTH_OFFSET..PAYLOAD_CHECKSUM_OFFSET].copy_from_slice(&u32::MAX.to_le_bytes());
        for (header, reason) in [
            (unknown, DamageReason::UnknownKind { found: 0 }),
            (reserved, DamageReason::ReservedNotZero),
            (
                huge,
                DamageReason::TooLarge {
                    length_bytes: u32::MAX,
                },
            ),
        ] {
            assert_eq!(
                read_record(&reseal(header), 0, SegmentState::Open),
                ReadOutcome::Corrupt(Damage { offset: 0, reason })
            );
        }
    }

    /// Payloads over the limit are refused before anything is written.
    #[test]
    fn oversized_payloads_are_not_encoded() {
        let payload = vec![0u8; MAX_RECORD_BYTES as usize + 1];
        let mut out = Vec::new();
        assert_eq!(
            encode_record(1, RecordKind::Entries, &payload, &mut out),
            Err(RecordTooLarge {
                length_bytes: payload.len()
            })
        );
        assert!(out.is_empty());
    }

    /// The error a refused recovery prints names the offset and what was found.
    #[test]
    fn damage_displays_offset_and_reason() {
        let damage = Damage {
            offset: 4096,
            reason: DamageReason::PayloadCut {
                length_bytes: 100,
                available_bytes: 7,
            },
        };
        assert_eq!(
            damage.to_string(),
            "bad record at offset 4096: segment ends 7 bytes into a 100-byte payload"
        );
    }
}
