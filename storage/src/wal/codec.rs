//! The payloads of the WAL's records, and the batch envelope.
//!
//! Every integer is little-endian.
//!
//! ```text
//! Entries    first index u64, count u32, then per entry: term u64, kind u8, length u32, data
//! HardState  term u64, vote u64, commit u64
//! Snapshot   index u64, term u64                 (LogRecord::Compact)
//! Truncate   from index u64
//! GroupState flags u8 (1: hard state, 2: compaction, 4: live range), then term u64, vote u64,
//!            commit u64, compaction index u64, compaction term u64, first index u64,
//!            last index u64 (fields a flag does not announce are zero)
//! Batch      body bytes u64, body checksum u32 (CRC-32C of the body), records u32,
//!            sequence u64 (one more than the previous batch's), segment u64 (the number of
//!            the segment the batch was written in)
//! ```
//!
//! The batch's segment number is what makes a recycled segment file safe to append into: the
//! file still holds its previous life's batches past the new tail, each naming the older
//! segment it was written in, so recovery never takes one of them for this segment's (see
//! `recovery`).
//!
//! A batch is one `Batch` record followed by its body: the records of one `append`, preceded,
//! in the first batch of a segment, by a checkpoint: one `GroupState` record per group.

use crate::record::{
    encode_record, read_record, ReadOutcome, RecordHeader, RecordKind, SegmentState, HEADER_BYTES,
    MAX_RECORD_BYTES,
};

use super::{HardState, LogRecord, WalEntry, WalError};

/// The size of a `Batch` record's payload.
pub const BATCH_PAYLOAD_BYTES: usize = 32;
/// The size of a `Batch` record, header included: what each batch adds to its body.
pub const BATCH_RECORD_BYTES: usize = HEADER_BYTES + BATCH_PAYLOAD_BYTES;
/// The bytes an `Entries` payload spends before its entries.
pub const ENTRIES_HEADER_BYTES: usize = 12;
/// The bytes an entry spends before its data.
pub const ENTRY_META_BYTES: usize = 13;

/// A batch record's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// The length of the body that follows the batch record.
    pub body_bytes: u64,
    /// CRC-32C of the body.
    pub body_checksum: u32,
    /// How many records the body holds.
    pub records: u32,
    /// The batch's sequence number in the WAL.
    pub sequence: u64,
    /// The number of the segment the batch was written in.
    pub segment: u64,
}

impl BatchHeader {
    /// The payload's bytes.
    pub fn to_bytes(self) -> [u8; BATCH_PAYLOAD_BYTES] {
        let mut bytes = [0u8; BATCH_PAYLOAD_BYTES];
        bytes[0..8].copy_from_slice(&self.body_bytes.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.body_checksum.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.records.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.segment.to_le_bytes());
        bytes
    }

    /// Decodes a payload.
    pub fn decode(payload: &[u8]) -> Result<BatchHeader, &'static str> {
        let mut reader = Reader::new(payload);
        let header = BatchHeader {
            body_bytes: reader.u64()?,
            body_checksum: reader.u32()?,
            records: reader.u32()?,
            sequence: reader.u64()?,
            segment: reader.u64()?,
        };
        reader.finish("batch record of the wrong size")?;
        Ok(header)
    }
}

/// One entry of a decoded `Entries` payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Its index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// Its kind byte.
    pub kind: u8,
    /// Its data.
    pub data: &'a [u8],
    /// Where its meta (term, kind, length) starts in the payload.
    pub payload_offset: u32,
}

/// A decoded record payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A run of entries, contiguous from the first.
    Entries(Vec<EntryRef<'a>>),
    /// A hard state.
    HardState(HardState),
    /// A compaction (snapshot) point.
    Compact {
        /// The snapshot's last index.
        index: u64,
        /// Its term.
        term: u64,
    },
    /// A truncation.
    Truncate {
        /// The first index dropped.
        from_index: u64,
    },
    /// A group's state in a checkpoint.
    GroupState(GroupState),
}

/// A group's state as a checkpoint records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// Its hard state.
    pub hard_state: Option<HardState>,
    /// Its compaction point (index, term).
    pub compacted: Option<(u64, u64)>,
    /// The first and last index of its live entries.
    pub range: Option<(u64, u64)>,
}

/// The size of a `GroupState` payload.
pub const GROUP_STATE_BYTES: usize = 57;

impl GroupState {
    /// The payload's bytes.
    pub fn to_bytes(self) -> [u8; GROUP_STATE_BYTES] {
        let mut bytes = [0u8; GROUP_STATE_BYTES];
        let hard_state = self.hard_state.unwrap_or_default();
        let compacted = self.compacted.unwrap_or_default();
        let range = self.range.unwrap_or_default();
        bytes[0] = u8::from(self.hard_state.is_some())
            | u8::from(self.compacted.is_some()) << 1
            | u8::from(self.range.is_some()) << 2;
        let fields = [
            hard_state.term,
            hard_state.vote,
            hard_state.commit,
            compacted.0,
            compacted.1,
            range.0,
            range.1,
        ];
        for (i, field) in fields.iter().enumerate() {
            bytes[1 + 8 * i..9 + 8 * i].copy_from_slice(&field.to_le_bytes());
        }
        bytes
    }

    fn decode(reader: &mut Reader<'_>) -> Result<GroupState, &'static str> {
        let flags = reader.u8()?;
        if flags & !7 != 0 {
            return Err("unknown group state flags");
        }
        let mut fields = [0u64; 7];
        for field in &mut fields {
            *field = reader.u64()?;
        }
        let has = |bit: u8| flags & bit != 0;
        let state = GroupState {
            hard_state: has(1).then_some(HardState {
                term: fields[0],
                vote: fields[1],
                commit: fields[2],
            }),
            compacted: has(2).then_some((fields[3], fields[4])),
            range: has(4).then_some((fields[5], fields[6])),
        };
        let absent_zero = (has(1) || fields[..3] == [0; 3])
            && (has(2) || fields[3..5] == [0; 2])
            && (has(4) || fields[5..] == [0; 2]);
        if !absent_zero {
            return Err("group state fields its flags do not announce are not zero");
        }
        if state
            .range
            .is_some_and(|(first, last)| first == 0 || first > last)
        {
            return Err("group state with an empty or zero-based range");
        }
        Ok(state)
    }
}

/// Decodes the payload of a record of `kind` (not `Batch`).
pub fn decode_payload(kind: RecordKind, payload: &[u8]) -> Result<Decoded<'_>, &'static str> {
    let mut reader = Reader::new(payload);
    let decoded = match kind {
        RecordKind::Entries => {
            let first = reader.u64()?;
            let count = reader.u32()?;
            if count == 0 {
                return Err("entries record with no entries");
            }
            // Each entry takes at least its meta: a count that cannot fit is refused before
            // anything is allocated for it.
            if count as usize > payload.len() / ENTRY_META_BYTES {
                return Err("entries record with more entries than bytes");
            }
            let mut entries = Vec::with_capacity(count as usize);
            for i in 0..u64::from(count) {
                let payload_offset = reader.position() as u32;
                let term = reader.u64()?;
                let kind = reader.u8()?;
                let length = reader.u32()?;
                let data = reader.bytes(length as usize)?;
                let index = first.checked_add(i).ok_or("entry index overflows u64")?;
                entries.push(EntryRef {
                    index,
                    term,
                    kind,
                    data,
                    payload_offset,
                });
            }
            Decoded::Entries(entries)
        }
        RecordKind::HardState => Decoded::HardState(HardState {
            term: reader.u64()?,
            vote: reader.u64()?,
            commit: reader.u64()?,
        }),
        RecordKind::Snapshot => Decoded::Compact {
            index: reader.u64()?,
            term: reader.u64()?,
        },
        RecordKind::Truncate => Decoded::Truncate {
            from_index: reader.u64()?,
        },
        RecordKind::GroupState => Decoded::GroupState(GroupState::decode(&mut reader)?),
        RecordKind::Batch => return Err("batch record inside a batch"),
    };
    reader.finish("record payload longer than its fields")?;
    Ok(decoded)
}

/// Reads the entry whose meta starts at `payload_offset` of a checked `Entries` payload.
pub fn entry_at(payload: &[u8], payload_offset: u32) -> Result<(u64, u8, &[u8]), &'static str> {
    let mut reader = Reader::new(payload);
    reader.bytes(payload_offset as usize)?;
    let term = reader.u64()?;
    let kind = reader.u8()?;
    let length = reader.u32()?;
    Ok((term, kind, reader.bytes(length as usize)?))
}

/// Appends the records of one logical record to `out`; returns how many records it wrote.
/// Entries are split over several records when they exceed [`MAX_RECORD_BYTES`].
pub fn encode_log_record(record: &LogRecord, out: &mut Vec<u8>) -> Result<u32, WalError> {
    let too_large = |e| WalError::Invalid(format!("{e}"));
    match record {
        LogRecord::Entries { group, entries } => encode_entries(*group, entries, out),
        LogRecord::HardState { group, state } => {
            encode_record(*group, RecordKind::HardState, &hard_state_bytes(state), out)
                .map_err(too_large)?;
            Ok(1)
        }
        LogRecord::Truncate { group, from_index } => {
            encode_record(*group, RecordKind::Truncate, &from_index.to_le_bytes(), out)
                .map_err(too_large)?;
            Ok(1)
        }
        LogRecord::Compact { group, index, term } => {
            encode_record(
                *group,
                RecordKind::Snapshot,
                &compact_bytes(*index, *term),
                out,
            )
            .map_err(too_large)?;
            Ok(1)
        }
    }
}

/// A hard state's payload.
pub fn hard_state_bytes(state: &HardState) -> [u8; 24] {
    let mut bytes = [0u8; 24];
    bytes[0..8].copy_from_slice(&state.term.to_le_bytes());
    bytes[8..16].copy_from_slice(&state.vote.to_le_bytes());
    bytes[16..24].copy_from_slice(&state.commit.to_le_bytes());
    bytes
}

/// A compaction's payload.
pub fn compact_bytes(index: u64, term: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[0..8].copy_from_slice(&index.to_le_bytes());
    bytes[8..16].copy_from_slice(&term.to_le_bytes());
    bytes
}

fn encode_entries(group: u64, entries: &[WalEntry], out: &mut Vec<u8>) -> Result<u32, WalError> {
    let limit = MAX_RECORD_BYTES as usize;
    let mut records = 0;
    let mut rest = entries;
    // Each record is encoded in place in `out`: its header's room first, then the payload,
    // then the header (with the payload's checksum) over that room; one copy of the data.
    while let Some(first) = rest.first() {
        let start = out.len();
        let payload_start = start + HEADER_BYTES;
        out.resize(payload_start, 0);
        out.extend_from_slice(&first.index.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let mut count = 0usize;
        for entry in rest {
            let need = ENTRY_META_BYTES + entry.data.len();
            if out.len() - payload_start + need > limit {
                break;
            }
            let length = u32::try_from(entry.data.len()).expect("under the record limit");
            out.extend_from_slice(&entry.term.to_le_bytes());
            out.push(entry.kind);
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(&entry.data);
            count += 1;
        }
        if count == 0 {
            out.truncate(start);
            return Err(WalError::Invalid(format!(
                "entry {} of group {group} has {} bytes of data; the limit is {}",
                first.index,
                first.data.len(),
                limit - ENTRIES_HEADER_BYTES - ENTRY_META_BYTES
            )));
        }
        out[payload_start + 8..payload_start + 12].copy_from_slice(&(count as u32).to_le_bytes());
        let header = RecordHeader::for_payload(group, RecordKind::Entries, &out[payload_start..])
            .map_err(|e| WalError::Invalid(e.to_string()))?;
        out[start..payload_start].copy_from_slice(&header.to_bytes());
        debug_assert!(matches!(
            read_record(out, start, SegmentState::Sealed),
            ReadOutcome::Record(record) if record.header == header
        ));
        records += 1;
        rest = &rest[count..];
    }
    Ok(records)
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    fn position(&self) -> usize {
        self.position
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .position
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or("record payload shorter than its fields")?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }

    fn finish(&self, error: &'static str) -> Result<(), &'static str> {
        if self.position == self.bytes.len() {
            Ok(())
        } else {
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{scan, ReadOutcome, SegmentState};
    use bytes::Bytes;

    /// Every logical record encodes to records that decode back to what was written.
    #[test]
    fn payloads_round_trip() {
        let entries: Vec<WalEntry> = (5..8)
            .map(|index| WalEntry {
                index,
                term: 2,
                kind: index as u8,
                data: Bytes::from(vec![index as u8; index as usize]),
            })
            .collect();
        let state = HardState {
            term: 3,
            vote: 1,
            commit: 6,
        };
        let mut out = Vec::new();
        for record in [
            LogRecord::Entries {
                group: 9,
                entries: entries.clone(),
            },
            LogRecord::HardState { group: 9, state },
            LogRecord::Truncate {
                group: 9,
                from_index: 6,
            },
            LogRecord::Compact {
                group: 9,
                index: 5,
                term: 2,
            },
        ] {
            assert_eq!(encode_log_record(&record, &mut out).unwrap(), 1);
        }
        let (records, end) = scan(&out, SegmentState::Sealed);
        assert_eq!(end, ReadOutcome::End);
        let decoded: Vec<Decoded<'_>> = records
            .iter()
            .map(|r| decode_payload(r.header.kind, r.payload).unwrap())
            .collect();
        let Decoded::Entries(read) = &decoded[0] else {
            panic!("{decoded:?}")
        };
        for (entry, read) in entries.iter().zip(read) {
            assert_eq!(
                (entry.index, entry.term, entry.kind, &entry.data[..]),
                (read.index, read.term, read.kind, read.data)
            );
            let at = entry_at(records[0].payload, read.payload_offset).unwrap();
            assert_eq!(at, (read.term, read.kind, read.data));
        }
        assert_eq!(decoded[1], Decoded::HardState(state));
        assert_eq!(decoded[2], Decoded::Truncate { from_index: 6 });
        assert_eq!(decoded[3], Decoded::Compact { index: 5, term: 2 });
        for state in [
            GroupState::default(),
            GroupState {
                hard_state: Some(state),
                compacted: Some((4, 1)),
                range: Some((5, 9)),
            },
            GroupState {
                range: Some((1, 1)),
                ..GroupState::default()
            },
        ] {
            let bytes = state.to_bytes();
            let decoded = decode_payload(RecordKind::GroupState, &bytes);
            assert_eq!(decoded, Ok(Decoded::GroupState(state)));
        }
    }

    /// Payloads of the wrong size for their kind are refused, never read past their end.
    #[test]
    fn malformed_payloads_are_refused() {
        assert!(decode_payload(RecordKind::HardState, &[0; 23]).is_err());
        assert!(decode_payload(RecordKind::HardState, &[0; 25]).is_err());
        assert!(decode_payload(RecordKind::Truncate, &[0; 7]).is_err());
        let mut entries = 1u64.to_le_bytes().to_vec();
        entries.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_payload(RecordKind::Entries, &entries).is_err());
        assert!(decode_payload(RecordKind::Batch, &[0; 32]).is_err());
        assert!(BatchHeader::decode(&[0; 31]).is_err());
        assert!(BatchHeader::decode(&[0; 33]).is_err());
        let header = BatchHeader {
            body_bytes: 1,
            body_checksum: 2,
            records: 3,
            sequence: 4,
            segment: 5,
        };
        assert_eq!(BatchHeader::decode(&header.to_bytes()), Ok(header));
        let mut state = [0u8; GROUP_STATE_BYTES];
        state[0] = 8;
        assert!(
            decode_payload(RecordKind::GroupState, &state).is_err(),
            "unknown flag"
        );
        state[0] = 0;
        state[10] = 1;
        assert!(
            decode_payload(RecordKind::GroupState, &state).is_err(),
            "unannounced field"
        );
        state[0] = 4;
        state[10] = 0;
        assert!(
            decode_payload(RecordKind::GroupState, &state).is_err(),
            "empty range"
        );
    }
}
