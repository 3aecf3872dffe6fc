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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shardcore_storage::record::{
    encode_record, read_record, scan, ReadOutcome, Record, RecordKind, SegmentState,
};
use shardcore_storage::segment::{list_segments, segment_path};
use shardcore_storage::wal::MIN_SEGMENT_BYTES;
use shardcore_storage::{HardState, LogRecord, Wal, WalConfig, WalEntry, WalError};

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
/// The WAL's own recovery, `Wal::open`, which reads segment headers and batch envelopes around
/// these records, is covered by [`wal_open`].
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

/// The most batches a `wal_open` script appends.
const WAL_MAX_BATCHES: usize = 12;
/// The most records in one batch of a `wal_open` script.
const WAL_MAX_RECORDS_PER_BATCH: usize = 4;
/// The most entries in one `Entries` record of a `wal_open` script.
const WAL_MAX_ENTRIES_PER_RECORD: u64 = 3;
/// The largest entry a `wal_open` script writes: a few of these fill a smallest segment, so
/// scripts rotate (and, with compactions, delete segments).
const WAL_MAX_DATA_BYTES: usize = 3072;
/// The groups a `wal_open` script writes to: small and large ids.
const WAL_GROUPS: [u64; 3] = [1, 2, 1 << 40];

/// Target `wal_open`: the input is a script of batches, appended with `Wal::append` to a fresh
/// WAL with the smallest segments (so batches rotate and compactions delete segments), then
/// damage to its segment files (flip a bit, cut the last file, zero a range, append junk), then
/// `Wal::open`. It must not panic, and:
/// - `Ok`: every group's state (entries, hard state, compaction point) is that after some prefix
///   of the acknowledged batches, all of them when nothing was damaged; opening again finds the
///   same state and no torn tail;
/// - `Err`: [`WalError::Corrupt`] naming a segment file that exists. Nothing else is legitimate
///   here: the directory is ours and on a real file system, so I/O errors, a full disk, a held
///   lock or a refused config would be bugs of the WAL (or of this harness).
pub fn wal_open(data: &[u8]) {
    wal_open_outcome(data);
}

/// What one [`wal_open`] input did: for tests that check what the inputs reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalOpenOutcome {
    /// Batches acknowledged.
    pub acknowledged: usize,
    /// Appends that went into a new segment.
    pub rotations: usize,
    /// Segment files on disk before the damage.
    pub segments: usize,
    /// Whether any byte was damaged.
    pub damaged: bool,
    /// `Some(k)`: the open recovered the first `k` batches that changed a state (of
    /// `distinct`); `None`: it refused as corrupt.
    pub recovered: Option<usize>,
    /// The states the acknowledged batches went through after the empty one.
    pub distinct: usize,
}

/// [`wal_open`], saying what the input reached.
pub fn wal_open_outcome(data: &[u8]) -> WalOpenOutcome {
    let mut outcome = WalOpenOutcome::default();
    let mut input = Input::new(data);
    let dir = ScratchDir::new();
    let config = WalConfig {
        segment_bytes: MIN_SEGMENT_BYTES * (1 + u64::from(input.byte() % 2)),
        cache_bytes: 1 << 20,
        ..WalConfig::new()
    };
    // states[k]: every group's state after the first k acknowledged batches.
    let mut model = Model::default();
    let mut states = vec![model.view()];
    {
        let (mut wal, _) = Wal::open(dir.path(), config.clone()).expect("a fresh WAL opens");
        for _ in 0..input.byte() as usize % (WAL_MAX_BATCHES + 1) {
            let batch = model.batch(&mut input);
            match wal.append(&batch) {
                Ok(stats) => {
                    outcome.acknowledged += 1;
                    outcome.rotations += usize::from(stats.rotated);
                    for record in &batch {
                        model.apply(record);
                    }
                    let view = model.view();
                    assert_eq!(observe(&wal), view, "the live WAL holds what was appended");
                    if states.last() != Some(&view) {
                        states.push(view);
                    }
                }
                // The script may ask for what the WAL refuses (a batch too big for a segment,
                // say); it writes nothing then.
                Err(WalError::Invalid(_)) => {}
                Err(error) => panic!("append failed: {error}"),
            }
        }
    }
    outcome.segments = list_segments(dir.path()).map_or(0, |n| n.len());
    outcome.distinct = states.len() - 1;
    let damaged = damage_segments(&mut input, dir.path());
    outcome.damaged = damaged;
    match Wal::open(dir.path(), config.clone()) {
        Ok((wal, recovery)) => {
            let found = observe(&wal);
            let Some(k) = states.iter().position(|state| *state == found) else {
                panic!(
                    "recovered a state that is no prefix of the acknowledged batches \
                     ({recovery:?}):\n{found:#?}\nacknowledged, last:\n{:#?}",
                    states.last()
                );
            };
            if !damaged {
                // Compared with the last state, not by `k`: a later batch can come back to an
                // earlier state (a truncation undoing an append), which `position` finds first.
                assert_eq!(
                    states.last(),
                    Some(&found),
                    "an undamaged WAL recovers every batch"
                );
            }
            drop(wal);
            let (again, recovery) =
                Wal::open(dir.path(), config).expect("a recovered WAL opens again");
            assert_eq!(observe(&again), found, "a second recovery finds the same");
            assert_eq!(
                recovery.torn_tail, None,
                "the first recovery removed the torn tail"
            );
            let whole = states.last() == Some(&found);
            outcome.recovered = Some(if whole { states.len() - 1 } else { k });
        }
        Err(WalError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert!(
                file.is_file(),
                "corruption at {offset} ({reason}) in {}, which does not exist",
                file.display()
            );
        }
        Err(error) => panic!("open failed otherwise than as corrupt: {error}"),
    }
    outcome
}

/// A group's state as the WAL shows it (or the model expects it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct GroupView {
    hard_state: Option<HardState>,
    compacted: Option<(u64, u64)>,
    entries: BTreeMap<u64, WalEntry>,
}

/// Every group with any state.
type WalView = BTreeMap<u64, GroupView>;

fn observe(wal: &Wal) -> WalView {
    let mut view = WalView::new();
    for group in WAL_GROUPS {
        let mut state = GroupView {
            hard_state: wal.hard_state(group),
            compacted: wal.compacted(group),
            entries: BTreeMap::new(),
        };
        if let (Some(first), Some(last)) = (wal.first_index(group), wal.last_index(group)) {
            let entries = wal
                .entries(group, first, last)
                .unwrap_or_else(|e| panic!("entries {first}..={last} of group {group}: {e}"));
            state.entries = entries.into_iter().map(|e| (e.index, e)).collect();
        }
        if state != GroupView::default() {
            view.insert(group, state);
        }
    }
    view
}

/// What the acknowledged batches make of each group, kept apart from the WAL.
#[derive(Default)]
struct Model {
    groups: BTreeMap<u64, GroupView>,
}

impl Model {
    fn view(&self) -> WalView {
        let groups = self.groups.iter();
        let live = groups.filter(|(_, state)| **state != GroupView::default());
        live.map(|(group, state)| (*group, state.clone())).collect()
    }

    fn apply(&mut self, record: &LogRecord) {
        let state = self.groups.entry(record.group()).or_default();
        match record {
            LogRecord::Entries { entries, .. } => {
                if let Some(first) = entries.first() {
                    state.entries.split_off(&first.index);
                }
                for entry in entries {
                    state.entries.insert(entry.index, entry.clone());
                }
            }
            LogRecord::HardState { state: hard, .. } => state.hard_state = Some(*hard),
            LogRecord::Truncate { from_index, .. } => {
                state.entries.split_off(from_index);
            }
            LogRecord::Compact { index, term, .. } => {
                state.entries = state.entries.split_off(&(index + 1));
                state.compacted = Some((*index, *term));
            }
        }
    }

    /// A batch the input describes, mostly valid for the current state (the WAL refuses the
    /// rest whole, which is checked too).
    fn batch(&self, input: &mut Input<'_>) -> Vec<LogRecord> {
        let count = 1 + input.byte() as usize % WAL_MAX_RECORDS_PER_BATCH;
        // Records within a batch see the state as the batch leaves it so far.
        let mut scratch = Model {
            groups: self.groups.clone(),
        };
        let mut batch = Vec::with_capacity(count);
        for _ in 0..count {
            let group = WAL_GROUPS[input.byte() as usize % WAL_GROUPS.len()];
            let state = scratch.groups.get(&group).cloned().unwrap_or_default();
            let compacted = state.compacted.map_or(0, |(index, _)| index);
            let last = state
                .entries
                .keys()
                .next_back()
                .copied()
                .unwrap_or(compacted);
            let term = state.entries.values().next_back().map_or(1, |e| e.term);
            let record = match input.byte() % 8 {
                0..=3 => {
                    // Append after the last entry, or overwrite a suffix.
                    let back = u64::from(input.byte() % 4);
                    let first = last.saturating_sub(back).max(compacted) + 1;
                    let count = 1 + u64::from(input.byte()) % WAL_MAX_ENTRIES_PER_RECORD;
                    let term = term + u64::from(input.byte() % 2);
                    let entries = (first..first + count)
                        .map(|index| {
                            // Mostly short, one in four long, so that segments fill.
                            let length_bytes = match input.byte() {
                                long if long % 4 == 3 => {
                                    let units = 1 + input.byte() as usize % 12;
                                    (units * 256).min(WAL_MAX_DATA_BYTES)
                                }
                                short => short as usize % 32,
                            };
                            let start = input.byte();
                            let data: Vec<u8> = (0..length_bytes)
                                .map(|i| start.wrapping_add(i as u8))
                                .collect();
                            WalEntry {
                                index,
                                term,
                                kind: input.byte() % 3,
                                data: data.into(),
                            }
                        })
                        .collect();
                    LogRecord::Entries { group, entries }
                }
                4 | 5 => LogRecord::HardState {
                    group,
                    state: HardState {
                        term: term + u64::from(input.byte() % 2),
                        vote: u64::from(input.byte() % 4),
                        commit: last.saturating_sub(u64::from(input.byte() % 4)),
                    },
                },
                6 => LogRecord::Truncate {
                    group,
                    from_index: (last + 1).saturating_sub(u64::from(input.byte() % 4)),
                },
                _ => LogRecord::Compact {
                    group,
                    index: last.saturating_sub(u64::from(input.byte() % 4)),
                    term,
                },
            };
            scratch.apply(&record);
            batch.push(record);
        }
        batch
    }
}

/// Damages the WAL's segment files as the input says; whether it changed any byte.
fn damage_segments(input: &mut Input<'_>, dir: &Path) -> bool {
    let numbers = list_segments(dir).expect("list the WAL's segments");
    if numbers.is_empty() {
        return false;
    }
    let mut damaged = false;
    for _ in 0..input.byte() as usize % (RECIPE_MAX_DAMAGE + 1) {
        let which = input.byte() as usize % numbers.len();
        let kind = input.byte() % 4;
        // Cuts are of the last file (a torn or lost tail); the rest hit any file.
        let number = numbers[if kind == 1 { numbers.len() - 1 } else { which }];
        let path = segment_path(dir, number);
        let mut bytes = std::fs::read(&path).expect("read a segment");
        let before = bytes.clone();
        // Offsets mostly fall in the written part and just after it, where damage matters.
        let written = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let span = (written + 64).min(bytes.len());
        let at = input.u32() as usize % (span + 1);
        match kind {
            0 if at < bytes.len() => bytes[at] ^= 1 << (input.byte() % 8),
            0 => {}
            1 => bytes.truncate(at),
            2 => {
                let end = (at + 1 + input.u16() as usize % 512).min(bytes.len());
                bytes[at.min(end)..end].fill(0);
            }
            _ => {
                let length_bytes = 1 + input.byte() as usize % 64;
                let junk = input.take(length_bytes);
                bytes.extend_from_slice(junk);
            }
        }
        if bytes != before {
            std::fs::write(&path, &bytes).expect("write a damaged segment");
            damaged = true;
        }
    }
    damaged
}

/// A fresh directory under the system's temp dir, removed when dropped (also on a panic).
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new() -> ScratchDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "shardcore-fuzz-wal-open-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        ScratchDir { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
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
