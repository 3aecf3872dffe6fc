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
//!            the segment the batch was written in), synced through u64 (every batch with a
//!            sequence at or below it was durable before this one was encoded)
//! ```
//!
//! The batch's segment number is what makes a recycled segment file safe to append into: the
//! file still holds its previous life's batches past the new tail, each naming the older
//! segment it was written in, so recovery never takes one of them for this segment's (see
//! `recovery`).
//!
//! A batch is one `Batch` record followed by its body: the records of one `append`, preceded,
//! in the first batch of a segment, by a checkpoint: one `GroupState` record per group.
//!
//! The WAL encodes a body with [`BodyEncoder`], straight into its aligned write buffer, after
//! sizing it with [`encoded_bytes`] (the size decides rotation, which decides the checkpoint
//! that goes first): each byte is written once, and each checksum summed once.

use crate::record::{
    read_record, ReadOutcome, RecordHeader, RecordKind, SegmentState, HEADER_BYTES,
    MAX_RECORD_BYTES,
};

use super::{HardState, LogRecord, WalEntry, WalError};

/// The size of a `Batch` record's payload.
pub const BATCH_PAYLOAD_BYTES: usize = 40;
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
    /// Every batch with a sequence at or below this one's was durable (its `fdatasync` had
    /// completed) when this batch was encoded. Below `sequence - 1` only when the batch was
    /// written while the one before it was still in flight (see "Overlapping writes" in the
    /// WAL's docs): recovery then knows a damaged batch before this one may be a torn write
    /// rather than corruption.
    pub synced_through: u64,
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
        bytes[32..40].copy_from_slice(&self.synced_through.to_le_bytes());
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
            synced_through: reader.u64()?,
        };
        reader.finish("batch record of the wrong size")?;
        if header.synced_through >= header.sequence {
            return Err("a batch synced through its own sequence or later");
        }
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

/// Where records are encoded: a `Vec<u8>`, or the WAL's aligned write buffer, so that a
/// batch's bytes are written once, straight into the buffer the disk write reads.
pub trait EncodeOut {
    /// The bytes written so far.
    fn as_slice(&self) -> &[u8];
    /// The bytes written so far, to patch a header in place.
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Appends `bytes`.
    fn extend_from_slice(&mut self, bytes: &[u8]);
}

impl EncodeOut for Vec<u8> {
    fn as_slice(&self) -> &[u8] {
        self
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
}

impl EncodeOut for crate::uring::AlignedBuf {
    fn as_slice(&self) -> &[u8] {
        crate::uring::AlignedBuf::as_slice(self)
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        crate::uring::AlignedBuf::as_mut_slice(self)
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        crate::uring::AlignedBuf::extend_from_slice(self, bytes);
    }
}

/// What a batch body holds once encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedBody {
    /// Its length.
    pub bytes: usize,
    /// CRC-32C of all of it: the batch record's body checksum.
    pub checksum: u32,
    /// The records in it.
    pub records: u32,
}

/// Encodes records one after another into a batch body, each byte written once and each
/// checksum computed once, in the pass that writes the bytes it covers:
/// - a record's payload checksum runs along as its payload is written (an entry's meta and
///   data are summed right after they are copied in, while they are in the L1 cache);
/// - its header is written over the room left for it once the payload's checksum is known;
/// - the body's checksum (the batch record's) is not a second pass over the body: it is
///   extended over each header and then *combined* with the payload's checksum
///   ([`crc32c_combine`]), which costs a few dozen instructions whatever the payload's size.
pub struct BodyEncoder<'a, O: EncodeOut> {
    out: &'a mut O,
    start: usize,
    checksum: u32,
    records: u32,
}

impl<'a, O: EncodeOut> BodyEncoder<'a, O> {
    /// A body starting at the end of `out`.
    pub fn new(out: &'a mut O) -> BodyEncoder<'a, O> {
        let start = out.as_slice().len();
        BodyEncoder {
            out,
            start,
            checksum: 0,
            records: 0,
        }
    }

    /// Appends the records of one logical record. Entries are split over several records when
    /// they exceed [`MAX_RECORD_BYTES`]; an entry that cannot fit in one is
    /// [`WalError::Invalid`], refused before any of its bytes are written (see
    /// [`encoded_bytes`], which a caller runs first to size the body).
    pub fn log_record(&mut self, record: &LogRecord) -> Result<(), WalError> {
        match record {
            LogRecord::Entries { group, entries } => self.entries(*group, entries)?,
            LogRecord::HardState { group, state } => {
                self.small(*group, RecordKind::HardState, &hard_state_bytes(state));
            }
            LogRecord::Truncate { group, from_index } => {
                self.small(*group, RecordKind::Truncate, &from_index.to_le_bytes());
            }
            LogRecord::Compact { group, index, term } => {
                self.small(*group, RecordKind::Snapshot, &compact_bytes(*index, *term));
            }
        }
        Ok(())
    }

    /// Appends one group's checkpoint record.
    pub fn group_state(&mut self, group: u64, state: GroupState) {
        self.small(group, RecordKind::GroupState, &state.to_bytes());
    }

    /// The body's length, checksum and record count.
    pub fn finish(self) -> EncodedBody {
        debug_assert_eq!(
            crc32c::crc32c(&self.out.as_slice()[self.start..]),
            self.checksum,
            "the combined checksum is the body's"
        );
        EncodedBody {
            bytes: self.out.as_slice().len() - self.start,
            checksum: self.checksum,
            records: self.records,
        }
    }

    /// A record with a small fixed payload.
    fn small(&mut self, group: u64, kind: RecordKind, payload: &[u8]) {
        let header_at = self.out.as_slice().len();
        self.out.extend_from_slice(&[0u8; HEADER_BYTES]);
        self.out.extend_from_slice(payload);
        self.close_record(header_at, group, kind, crc32c::crc32c(payload));
    }

    /// Entries, split over as many records as the limit needs.
    fn entries(&mut self, group: u64, entries: &[WalEntry]) -> Result<(), WalError> {
        let mut rest = entries;
        while let Some(first) = rest.first() {
            let (count, _) = entries_that_fit(group, rest)?;
            let header_at = self.out.as_slice().len();
            self.out.extend_from_slice(&[0u8; HEADER_BYTES]);
            let mut prefix = [0u8; ENTRIES_HEADER_BYTES];
            prefix[..8].copy_from_slice(&first.index.to_le_bytes());
            prefix[8..].copy_from_slice(&(count as u32).to_le_bytes());
            self.out.extend_from_slice(&prefix);
            let mut checksum = 0;
            let mut summed_to = header_at + HEADER_BYTES;
            for entry in &rest[..count] {
                let length = u32::try_from(entry.data.len()).expect("under the record limit");
                let mut meta = [0u8; ENTRY_META_BYTES];
                meta[..8].copy_from_slice(&entry.term.to_le_bytes());
                meta[8] = entry.kind;
                meta[9..].copy_from_slice(&length.to_le_bytes());
                self.out.extend_from_slice(&meta);
                self.out.extend_from_slice(&entry.data);
                let written = self.out.as_slice();
                if written.len() - summed_to >= CHECKSUM_RUN_BYTES {
                    // The bytes just written, still in the cache: the one pass that sums them.
                    checksum = crc32c::crc32c_append(checksum, &written[summed_to..]);
                    summed_to = written.len();
                }
            }
            let written = self.out.as_slice();
            checksum = crc32c::crc32c_append(checksum, &written[summed_to..]);
            self.close_record(header_at, group, RecordKind::Entries, checksum);
            rest = &rest[count..];
        }
        Ok(())
    }

    /// Writes the header of the record whose room starts at `header_at` (its payload follows,
    /// to the end of `out`, with checksum `payload_checksum`), and extends the body's checksum
    /// over the record.
    fn close_record(
        &mut self,
        header_at: usize,
        group: u64,
        kind: RecordKind,
        payload_checksum: u32,
    ) {
        let payload_at = header_at + HEADER_BYTES;
        let length_bytes = self.out.as_slice().len() - payload_at;
        let header = RecordHeader {
            length_bytes: u32::try_from(length_bytes)
                .ok()
                .filter(|length| *length <= MAX_RECORD_BYTES)
                .expect("records are split under the limit"),
            payload_checksum,
            group,
            kind,
        };
        let bytes = header.to_bytes();
        self.out.as_mut_slice()[header_at..payload_at].copy_from_slice(&bytes);
        self.checksum = crc32c::crc32c_append(self.checksum, &bytes);
        self.checksum = crc32c_combine(self.checksum, payload_checksum, length_bytes);
        self.records += 1;
        debug_assert!(matches!(
            read_record(self.out.as_slice(), header_at, SegmentState::Sealed),
            ReadOutcome::Record(record) if record.header == header
        ));
    }
}

/// The bytes and records that `record` encodes to, as [`BodyEncoder::log_record`] will write
/// them; [`WalError::Invalid`] for an entry too large for any record. Reads only lengths.
pub fn encoded_bytes(record: &LogRecord) -> Result<(usize, u32), WalError> {
    let small = |payload_bytes: usize| Ok((HEADER_BYTES + payload_bytes, 1));
    match record {
        LogRecord::Entries { group, entries } => {
            let (mut bytes, mut records) = (0, 0);
            let mut rest = &entries[..];
            while !rest.is_empty() {
                let (count, payload_bytes) = entries_that_fit(*group, rest)?;
                bytes += HEADER_BYTES + payload_bytes;
                records += 1;
                rest = &rest[count..];
            }
            Ok((bytes, records))
        }
        LogRecord::HardState { .. } => small(24),
        LogRecord::Truncate { .. } => small(8),
        LogRecord::Compact { .. } => small(16),
    }
}

/// How many freshly written payload bytes are summed at once. Why 16 KiB: a CRC-32C call over
/// a short slice runs one 8-byte step at a time, each waiting for the last (three cycles); from
/// a few hundred bytes on it runs three streams side by side, three times as fast. Summing each
/// small entry on its own took more time than encoding it; 16 KiB runs are long enough for the
/// fast path and short enough to be still in the L1 or L2 cache after they were copied in.
const CHECKSUM_RUN_BYTES: usize = 16 << 10;

/// The bytes of one checkpoint record.
pub const GROUP_STATE_RECORD_BYTES: usize = HEADER_BYTES + GROUP_STATE_BYTES;

/// How many of `entries` (from the first) go into one record, and that record's payload size:
/// as many as fit under [`MAX_RECORD_BYTES`].
fn entries_that_fit(group: u64, entries: &[WalEntry]) -> Result<(usize, usize), WalError> {
    let limit = MAX_RECORD_BYTES as usize;
    let mut payload_bytes = ENTRIES_HEADER_BYTES;
    let mut count = 0;
    for entry in entries {
        let need = ENTRY_META_BYTES + entry.data.len();
        if payload_bytes + need > limit {
            break;
        }
        payload_bytes += need;
        count += 1;
    }
    if count == 0 {
        let first = &entries[0];
        return Err(WalError::Invalid(format!(
            "entry {} of group {group} has {} bytes of data; the limit is {}",
            first.index,
            first.data.len(),
            limit - ENTRIES_HEADER_BYTES - ENTRY_META_BYTES
        )));
    }
    Ok((count, payload_bytes))
}

/// Appends the records of one logical record to `out`; returns how many records it wrote.
/// Entries are split over several records when they exceed [`MAX_RECORD_BYTES`]. The tests'
/// way to encode records one at a time; the WAL encodes whole bodies ([`BodyEncoder`]).
#[cfg(test)]
pub fn encode_log_record(record: &LogRecord, out: &mut Vec<u8>) -> Result<u32, WalError> {
    let mut body = BodyEncoder::new(out);
    body.log_record(record)?;
    Ok(body.finish().records)
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

/// A batch record (header and payload) for `header`.
pub fn batch_record_bytes(header: BatchHeader) -> [u8; BATCH_RECORD_BYTES] {
    let payload = header.to_bytes();
    let record = RecordHeader::for_payload(0, RecordKind::Batch, &payload).expect("small");
    let mut bytes = [0u8; BATCH_RECORD_BYTES];
    bytes[..HEADER_BYTES].copy_from_slice(&record.to_bytes());
    bytes[HEADER_BYTES..].copy_from_slice(&payload);
    bytes
}

/// The CRC-32C polynomial, bit-reversed (the form the checksum is computed in).
const CRC32C_POLYNOMIAL: u32 = 0x82F6_3B78;

/// `x^(8 * 2^k) mod P` for each `k`: the operator that appends `2^k` zero bytes to a CRC.
const CRC32C_ZEROS: [u32; 64] = {
    let mut table = [0u32; 64];
    // x^8: in the bit-reversed form x^0 is the top bit.
    table[0] = 1 << (31 - 8);
    let mut k = 1;
    while k < 64 {
        table[k] = multiply_mod_p(table[k - 1], table[k - 1]);
        k += 1;
    }
    table
};

/// `a * b mod P` over GF(2), bit-reversed; `a` must not be zero (it is always a power of x).
const fn multiply_mod_p(a: u32, mut b: u32) -> u32 {
    let mut mask = 1u32 << 31;
    let mut product = 0;
    loop {
        if a & mask != 0 {
            product ^= b;
            if a & (mask - 1) == 0 {
                return product;
            }
        }
        mask >>= 1;
        b = if b & 1 != 0 {
            (b >> 1) ^ CRC32C_POLYNOMIAL
        } else {
            b >> 1
        };
    }
}

/// The CRC-32C of `a` followed by `b`, from `crc32c(a)`, `crc32c(b)` and `b`'s length: one
/// multiplication per set bit of the length (zlib's `crc32_combine`, with a table of powers).
/// The `crc32c` crate's `crc32c_combine` builds its matrices on every call: tens of
/// microseconds, where this takes well under one.
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    let mut operator = 1u32 << 31;
    let mut rest = len_b as u64;
    let mut k = 0;
    while rest != 0 {
        if rest & 1 != 0 {
            operator = multiply_mod_p(CRC32C_ZEROS[k], operator);
        }
        rest >>= 1;
        k += 1;
    }
    multiply_mod_p(operator, crc_a) ^ crc_b
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

    /// Combining two checksums gives the checksum of the concatenation, at every length from
    /// none to past a megabyte.
    #[test]
    fn checksums_combine() {
        let bytes: Vec<u8> = (0..(3 << 20) as u32)
            .map(|i| (i * 31 + i / 251) as u8)
            .collect();
        let lengths = (0..70).chain([255, 4096, 65_537, 1 << 20, (1 << 20) + 12_345]);
        for split in [0, 1, 24, 1000] {
            for length in lengths.clone() {
                let (a, b) = bytes[..split + length].split_at(split);
                let whole = crc32c::crc32c(&bytes[..split + length]);
                let combined = crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len());
                assert_eq!(combined, whole, "split {split}, length {length}");
                let theirs = crc32c::crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len());
                assert_eq!(combined, theirs);
            }
        }
    }

    /// A body encoded in one pass holds the same bytes as its records encoded one by one, and
    /// its checksum and size are what `encoded_bytes` and a CRC over the whole body give, also
    /// when entries are split over several records.
    #[test]
    fn bodies_encode_in_one_pass() {
        let big = Bytes::from(vec![7u8; (MAX_RECORD_BYTES as usize) / 3]);
        let entries = |from: u64, count: u64, data: &Bytes| -> Vec<WalEntry> {
            (from..from + count)
                .map(|index| WalEntry {
                    index,
                    term: 3,
                    kind: 1,
                    data: data.clone(),
                })
                .collect()
        };
        let batch = vec![
            LogRecord::Entries {
                group: 1,
                entries: entries(1, 5, &big),
            },
            LogRecord::HardState {
                group: 1,
                state: HardState {
                    term: 3,
                    vote: 2,
                    commit: 1,
                },
            },
            LogRecord::Entries {
                group: 2,
                entries: entries(4, 40, &Bytes::from_static(b"small entry")),
            },
            LogRecord::Truncate {
                group: 2,
                from_index: 30,
            },
            LogRecord::Compact {
                group: 1,
                index: 2,
                term: 3,
            },
        ];
        let mut one_by_one = Vec::new();
        let mut planned = (0, 0);
        for record in &batch {
            encode_log_record(record, &mut one_by_one).unwrap();
            let (bytes, records) = encoded_bytes(record).unwrap();
            planned = (planned.0 + bytes, planned.1 + records);
        }
        let mut out = b"prefix".to_vec();
        let mut body = BodyEncoder::new(&mut out);
        body.group_state(9, GroupState::default());
        for record in &batch {
            body.log_record(record).unwrap();
        }
        let encoded = body.finish();
        let body_bytes = &out[6 + GROUP_STATE_RECORD_BYTES..];
        assert_eq!(body_bytes, &one_by_one[..]);
        assert_eq!((body_bytes.len(), encoded.records - 1), planned);
        assert_eq!(
            encoded.records,
            1 + 3 + 1 + 1 + 1 + 1,
            "the big run is split in three"
        );
        assert_eq!(encoded.checksum, crc32c::crc32c(&out[6..]));
        assert_eq!(encoded.bytes, out.len() - 6);
        let too_big = LogRecord::Entries {
            group: 4,
            entries: entries(1, 1, &Bytes::from(vec![0u8; MAX_RECORD_BYTES as usize])),
        };
        assert!(matches!(encoded_bytes(&too_big), Err(WalError::Invalid(_))));
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
        assert!(decode_payload(RecordKind::Batch, &[0; 40]).is_err());
        assert!(BatchHeader::decode(&[0; 39]).is_err());
        assert!(BatchHeader::decode(&[0; 41]).is_err());
        let header = BatchHeader {
            body_bytes: 1,
            body_checksum: 2,
            records: 3,
            sequence: 4,
            segment: 5,
            synced_through: 2,
        };
        assert_eq!(BatchHeader::decode(&header.to_bytes()), Ok(header));
        let ahead = BatchHeader {
            synced_through: 4,
            ..header
        };
        assert!(BatchHeader::decode(&ahead.to_bytes()).is_err());
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
