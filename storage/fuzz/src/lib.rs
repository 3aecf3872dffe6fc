//! The bodies of shardcore-storage's fuzz targets, shared by the cargo-fuzz binaries in
//! `fuzz_targets/` and by the stable smoke test `storage/tests/fuzz_smoke.rs`, which includes this
//! file as a module (so it names nothing but `std` and `shardcore_storage`).
//!
//! An input is read one of two ways, chosen by its first byte, so that a fuzzer gets past the
//! checksums without having to find CRC-32C collisions byte by byte:
//! - **raw**: the rest of the input is a segment's bytes, as found on disk;
//! - **recipe**: the rest describes valid records (group, type, payload) to encode, then damage
//!   to do to the encoded bytes (flip a bit, cut, zero a range, append preallocated zeros).
//!
//! Either way the checks are the same; see [`check_segment`].
#![deny(missing_docs)]

use shardcore_storage::record::{
    encode_record, read_record, scan, ReadOutcome, Record, RecordKind, SegmentState,
};

/// The most records a recipe builds: enough to put damage between records, small enough that
/// an input stays short.
const RECIPE_MAX_RECORDS: usize = 16;
/// The largest payload a recipe builds (most come from the input's own bytes).
const RECIPE_MAX_PAYLOAD_BYTES: usize = 4096;
/// The most damage steps a recipe applies.
const RECIPE_MAX_DAMAGE: usize = 4;
/// The most segments a recovery input splits into.
const MAX_SEGMENTS: usize = 4;

/// Target `record_decode`: decodes one segment, open and sealed, and checks every property of
/// [`check_segment`]; also reads a record at an offset the input picks.
pub fn record_decode(data: &[u8]) {
    let mut input = Input::new(data);
    let probe = input.u32() as usize;
    let segment = input.segment();
    check_segment(&segment);
    // read_record at any offset inside the bytes must judge, never panic.
    let offset = probe % (segment.len() + 1);
    for state in [SegmentState::Open, SegmentState::Sealed] {
        if let ReadOutcome::Record(record) = read_record(&segment, offset, state) {
            check_reencodes(&segment, &record);
        }
    }
}

/// The segment [`record_decode`] decodes from `data` (after its 4-byte probe offset): for
/// tests that check what the inputs reach.
pub fn segment_of(data: &[u8]) -> Vec<u8> {
    let mut input = Input::new(data);
    input.u32();
    input.segment()
}

/// Target `recovery_scan`: the input is a set of up to [`MAX_SEGMENTS`] segment files, oldest
/// first; all are sealed but the last, which is open. They are scanned in order as recovery
/// does: sealed segments end cleanly or stop recovery as corrupt (never torn); the open one may
/// end torn, and truncating it there (or zeroing from there, as in a preallocated file) gives a
/// segment that rescans to the same records and a clean end.
///
/// Not yet covered: the WAL's own recovery, `shardcore_storage::wal::Wal::open`, which reads
/// segment headers and batch envelopes around these records. It landed while this target was
/// written and its format was still moving; the next step is a `wal_open` target that writes a
/// valid WAL (through `Wal::append`), damages its segment files as the recipes here do, opens
/// it, and checks that it recovers a prefix of what was appended or refuses with a file and an
/// offset, never panicking.
pub fn recovery_scan(data: &[u8]) {
    let mut input = Input::new(data);
    let count = 1 + input.byte() as usize % MAX_SEGMENTS;
    let segments: Vec<Vec<u8>> = (0..count).map(|_| input.segment()).collect();
    for (number, segment) in segments.iter().enumerate() {
        let state = if number + 1 == segments.len() {
            SegmentState::Open
        } else {
            SegmentState::Sealed
        };
        let (records, end) = scan(segment, state);
        check_records(segment, &records, &end);
        match end {
            ReadOutcome::End => {}
            ReadOutcome::Torn(damage) => {
                assert_eq!(state, SegmentState::Open, "a sealed segment cannot be torn");
                let truncated = &segment[..damage.offset];
                let mut zeroed = segment.clone();
                zeroed[damage.offset..].fill(0);
                for repaired in [truncated, &zeroed[..]] {
                    let (again, end) = scan(repaired, SegmentState::Open);
                    assert_eq!(
                        again, records,
                        "the records before a tear survive its repair"
                    );
                    assert_eq!(end, ReadOutcome::End, "a repaired tail scans clean");
                }
                return;
            }
            // Recovery stops here with the segment and the offset.
            ReadOutcome::Corrupt(_) => return,
            ReadOutcome::Record(_) => unreachable!("scan ends with an outcome, not a record"),
        }
    }
}

/// Every property a decoded segment must have, whatever its bytes:
/// - the open and the sealed scan return the same records, which start at 0, follow each other
///   without gaps, and each re-encode to exactly their bytes;
/// - the scan ends where the last record ends; a clean end has only zeros after it;
/// - the two scans judge alike, except that a torn open segment is corrupt when sealed.
pub fn check_segment(segment: &[u8]) {
    let (open_records, open_end) = scan(segment, SegmentState::Open);
    let (sealed_records, sealed_end) = scan(segment, SegmentState::Sealed);
    assert_eq!(
        open_records, sealed_records,
        "records do not depend on state"
    );
    check_records(segment, &open_records, &open_end);
    check_records(segment, &sealed_records, &sealed_end);
    match (open_end, sealed_end) {
        (ReadOutcome::End, ReadOutcome::End) => {}
        (ReadOutcome::Torn(torn), ReadOutcome::Corrupt(corrupt)) => assert_eq!(torn, corrupt),
        (ReadOutcome::Corrupt(a), ReadOutcome::Corrupt(b)) => assert_eq!(a, b),
        (open, sealed) => panic!("open segment ends {open:?}, sealed {sealed:?}"),
    }
}

fn check_records(segment: &[u8], records: &[Record<'_>], end: &ReadOutcome<'_>) {
    let mut next = 0;
    for record in records {
        assert_eq!(record.offset, next, "records follow each other");
        check_reencodes(segment, record);
        next = record.next_offset();
    }
    match end {
        ReadOutcome::End => assert!(
            segment[next..].iter().all(|b| *b == 0),
            "a clean end has only zeros after it"
        ),
        ReadOutcome::Torn(damage) | ReadOutcome::Corrupt(damage) => {
            assert_eq!(damage.offset, next, "the damage is at the next record");
            assert!(damage.offset < segment.len());
        }
        ReadOutcome::Record(_) => panic!("scan ended with a record"),
    }
}

fn check_reencodes(segment: &[u8], record: &Record<'_>) {
    let mut encoded = Vec::new();
    encode_record(
        record.header.group,
        record.header.kind,
        record.payload,
        &mut encoded,
    )
    .expect("a decoded record is within the limit");
    assert_eq!(
        &encoded[..],
        &segment[record.offset..record.next_offset()],
        "record at {} re-encodes to its bytes",
        record.offset
    );
}

/// The input, read front to back; past its end every read is zero.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    fn byte(&mut self) -> u8 {
        let (first, rest) = self.bytes.split_first().unwrap_or((&0, &[]));
        self.bytes = rest;
        *first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn take(&mut self, length_bytes: usize) -> &'a [u8] {
        let (taken, rest) = self.bytes.split_at(length_bytes.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }

    /// One segment: raw bytes (with a length prefix) or built from a recipe.
    fn segment(&mut self) -> Vec<u8> {
        match self.byte() % 2 {
            0 => {
                let length_bytes = self.u16() as usize;
                self.take(length_bytes).to_vec()
            }
            _ => self.recipe(),
        }
    }

    fn recipe(&mut self) -> Vec<u8> {
        let mut segment = Vec::new();
        for _ in 0..self.byte() as usize % (RECIPE_MAX_RECORDS + 1) {
            let group = u64::from(self.byte() % 4) << (8 * (self.byte() % 8));
            let kind = RecordKind::ALL[self.byte() as usize % RecordKind::ALL.len()];
            // Mostly short payloads, now and then a long one; their bytes come from a pattern
            // (the checksums cover them, so their values matter little), which keeps inputs
            // short and leaves the input's bytes for more records and more damage.
            let length_bytes = match self.byte() {
                short @ 0..=249 => short as usize,
                _ => self.u16() as usize % (RECIPE_MAX_PAYLOAD_BYTES + 1),
            };
            let start = self.byte();
            let payload: Vec<u8> = (0..length_bytes)
                .map(|i| start.wrapping_add(i as u8))
                .collect();
            encode_record(group, kind, &payload, &mut segment).expect("within the limit");
        }
        for _ in 0..self.byte() as usize % (RECIPE_MAX_DAMAGE + 1) {
            self.damage(&mut segment);
        }
        segment
    }

    fn damage(&mut self, segment: &mut Vec<u8>) {
        let at = self.u32() as usize % (segment.len() + 1);
        match self.byte() % 4 {
            0 if at < segment.len() => segment[at] ^= 1 << (self.byte() % 8),
            1 => segment.truncate(at),
            2 => {
                let end = (at + self.u16() as usize).min(segment.len());
                segment[at..end].fill(0);
            }
            _ => segment.resize(segment.len() + self.u16() as usize % 8192, 0),
        }
    }
}
