//! Recovery against damaged segments: a cut at every byte of the last segment recovers every
//! batch before the cut and reports the torn one; a flipped bit anywhere is caught, truncated
//! only where it cannot be told from a torn write (the body of the very last batch), and
//! refused with the file and offset everywhere else.

mod common;

use std::path::PathBuf;

use common::{entries_record, hard_state_record, small_config, Model, Rng, TempDir};
use shardcore_storage::{LogRecord, Wal, WalConfig, WalError};

/// One batch's place on disk.
#[derive(Clone, Copy, Debug)]
struct Extent {
    segment: u64,
    start: u64,
    end: u64,
}

/// A WAL of two or more small segments, the last holding at least four batches; the model
/// after every batch; each batch's extent; and the pristine bytes of every segment file.
struct Fixture {
    dir: TempDir,
    config: WalConfig,
    models: Vec<Model>,
    extents: Vec<Extent>,
    pristine: Vec<(PathBuf, Vec<u8>)>,
}

/// A batch of small entries, hard states and truncations over three groups (no compaction:
/// the fixture keeps every segment, so a torn first batch of the last segment is recoverable).
fn small_batch(rng: &mut Rng, model: &Model, round: u64) -> Vec<LogRecord> {
    let group = 1 + rng.below(3);
    let next = model
        .groups
        .get(&group)
        .and_then(|g| g.last_index())
        .map_or(1, |l| l + 1);
    let mut batch = vec![entries_record(group, next, 1 + rng.below(3), round, 40)];
    if rng.below(2) == 0 {
        batch.push(hard_state_record(group, round, group, next));
    }
    if rng.below(4) == 0 && next > 1 {
        batch.push(LogRecord::Truncate {
            group,
            from_index: next,
        });
    }
    batch
}

fn fixture(label: &str) -> Fixture {
    let dir = TempDir::new(label);
    let config = small_config(8 << 10);
    let (mut wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
    let mut rng = Rng::new(7);
    let mut models = vec![Model::default()];
    let mut extents: Vec<Extent> = Vec::new();
    for round in 1.. {
        let batch = small_batch(&mut rng, models.last().unwrap(), round);
        let stats = wal.append(&batch).unwrap();
        let segment = *wal.segment_numbers().last().unwrap();
        let extent = match extents.last() {
            Some(last) if last.segment == segment => Extent {
                segment,
                start: last.end,
                end: last.end + stats.log_bytes,
            },
            _ => Extent {
                segment,
                start: 64,
                end: stats.log_bytes,
            },
        };
        extents.push(extent);
        let mut model = models.last().unwrap().clone();
        model.apply(&batch);
        models.push(model);
        let in_last = extents.iter().filter(|e| e.segment == segment).count();
        if wal.segments() >= 2 && in_last >= 4 {
            break;
        }
    }
    assert_eq!(wal.segment_numbers()[0], 1);
    let pristine = wal
        .segment_numbers()
        .iter()
        .map(|n| {
            let path = dir.path().join(format!("wal-{n:08}.seg"));
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    Fixture {
        dir,
        config,
        models,
        extents,
        pristine,
    }
}

impl Fixture {
    /// Puts every segment back as it was, and removes segments a test's appends added.
    fn restore(&self) {
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if !self.pristine.iter().any(|(p, _)| *p == path) {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (path, bytes) in &self.pristine {
            std::fs::write(path, bytes).unwrap();
        }
    }

    fn last_segment(&self) -> u64 {
        self.extents.last().unwrap().segment
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.path().join(format!("wal-{segment:08}.seg"))
    }

    /// The batches wholly before `cut` of the last segment, counted from the first batch.
    fn batches_before(&self, cut: u64) -> usize {
        let last = self.last_segment();
        self.extents
            .iter()
            .filter(|e| e.segment < last || e.end <= cut)
            .count()
    }

    /// Where a zeroing cut at `cut` of the last segment really cuts: at the end of the batch
    /// it falls in when every byte from the cut to that end was zero already.
    fn effective_cut(&self, cut: u64) -> u64 {
        let last = self.last_segment();
        let bytes = &self.pristine.last().unwrap().1;
        let extent = self
            .extents
            .iter()
            .find(|e| e.segment == last && cut < e.end);
        match extent {
            Some(e) if bytes[cut as usize..e.end as usize].iter().all(|b| *b == 0) => e.end,
            _ => cut,
        }
    }

    /// The batch holding byte `at` of `segment`: its start (0 inside the segment header,
    /// which is part of the segment's first write).
    fn batch_start(&self, segment: u64, at: u64) -> u64 {
        if at < 64 {
            return 0;
        }
        let extent = self
            .extents
            .iter()
            .find(|e| e.segment == segment && e.start <= at && at < e.end);
        extent.unwrap().start
    }
}

enum Cut {
    /// The file ends at the cut.
    Truncated,
    /// The file keeps its size, zeros from the cut on (a preallocated segment).
    Zeroed,
}

/// Truncates (or zeroes) the last segment at every byte from 0 to its end, reopens, and checks
/// that every batch ending at or before the cut is there and nothing after; that a cut inside
/// a batch is reported as a torn tail with the file and the batch's start (0 for the first
/// batch, which carries the segment header); and that the WAL appends and reopens cleanly
/// after cutting the tail off.
#[test]
fn every_cut_of_the_last_segment_recovers_the_batches_before_it() {
    let fixture = fixture("wal-cut");
    let last = fixture.last_segment();
    let path = fixture.path(last);
    let end = fixture.extents.last().unwrap().end;
    let boundaries: Vec<u64> = fixture
        .extents
        .iter()
        .filter(|e| e.segment == last)
        .map(|e| e.end)
        .collect();
    for cut in 0..=end {
        for how in [Cut::Truncated, Cut::Zeroed] {
            fixture.restore();
            let mut bytes = fixture.pristine.last().unwrap().1.clone();
            match how {
                Cut::Truncated => bytes.truncate(cut as usize),
                Cut::Zeroed => bytes[cut as usize..].fill(0),
            }
            std::fs::write(&path, &bytes).unwrap();
            let (mut wal, recovery) = Wal::open(fixture.dir.path(), fixture.config.clone())
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            // Zeros from the cut on that were zeros anyway (a batch ending in zero bytes) cut
            // nothing: the batch is whole.
            let effective = match how {
                Cut::Zeroed => fixture.effective_cut(cut),
                Cut::Truncated => cut,
            };
            let whole = fixture.batches_before(effective);
            let model = &fixture.models[whole];
            model.check(&wal, &format!("cut at {cut}"));
            let expected_torn = if effective == 0 || boundaries.contains(&effective) {
                None
            } else {
                let torn = fixture.extents[whole];
                Some(if torn.start == 64 { 0 } else { torn.start })
            };
            let torn = recovery.torn_tail.as_ref();
            assert_eq!(torn.map(|t| t.offset), expected_torn, "cut at {cut}");
            if let Some(torn) = torn {
                assert_eq!(torn.file, path, "cut at {cut}");
            }
            // The tail is clean: a new batch goes after the last good one and reads back.
            // (Checked on one variant: it costs an fdatasync.)
            if matches!(how, Cut::Zeroed) {
                continue;
            }
            let next = model
                .groups
                .get(&1)
                .and_then(|g| g.last_index())
                .map_or(1, |l| l + 1);
            let batch = [entries_record(1, next, 2, 99, 40)];
            wal.append(&batch).unwrap();
            drop(wal);
            let (wal, recovery) = Wal::open(fixture.dir.path(), fixture.config.clone()).unwrap();
            assert_eq!(recovery.torn_tail, None, "cut at {cut}, reopened");
            let mut model = model.clone();
            model.apply(&batch);
            model.check(&wal, &format!("cut at {cut}, reopened after an append"));
        }
    }
}

/// Flips one bit in every byte written in the last segment and in the first batches of an
/// earlier one (segment header, batch record header and payload, every record's header fields
/// and payload). Only a flip in the last batch of the last segment reads as a torn write (no
/// batch of the segment follows it: it cannot be told from one, since the bytes after a
/// batch may be a recycled file's earlier log) and is truncated; every other flip refuses to
/// start, naming the file and the start of the batch holding the flip.
#[test]
fn a_flipped_bit_is_truncated_only_in_the_last_batch_and_refused_elsewhere() {
    let fixture = fixture("wal-flip");
    let last = fixture.last_segment();
    let last_batch = *fixture.extents.last().unwrap();
    let earlier = fixture.extents.iter().filter(|e| e.segment == 1).take(3);
    let earlier_end = earlier.map(|e| e.end).max().unwrap();
    let mut torn_cases = 0;
    for (segment, end) in [(1, earlier_end), (last, last_batch.end)] {
        let path = fixture.path(segment);
        let pristine = &fixture.pristine.iter().find(|(p, _)| *p == path).unwrap().1;
        for at in 0..end {
            fixture.restore();
            let mut bytes = pristine.clone();
            bytes[at as usize] ^= 1 << (at % 8);
            std::fs::write(&path, &bytes).unwrap();
            let result = Wal::open(fixture.dir.path(), fixture.config.clone());
            let in_last_batch = segment == last && at >= last_batch.start;
            match result {
                Ok((wal, recovery)) if in_last_batch => {
                    let torn = recovery.torn_tail.expect("a torn tail");
                    assert_eq!((torn.file, torn.offset), (path.clone(), last_batch.start));
                    let before = fixture.models.len() - 2;
                    fixture.models[before].check(&wal, &format!("flip at {at}"));
                    torn_cases += 1;
                }
                Err(WalError::Corrupt {
                    file,
                    offset,
                    reason,
                }) if !in_last_batch => {
                    let expected = fixture.batch_start(segment, at);
                    assert_eq!(
                        (&file, offset),
                        (&path, expected),
                        "flip at {at} of segment {segment}: {reason}"
                    );
                }
                Ok((_, recovery)) => panic!(
                    "flip at {at} of segment {segment} recovered: {:?}",
                    recovery.torn_tail
                ),
                Err(error) => panic!("flip at {at} of segment {segment}: {error}"),
            }
        }
    }
    assert_eq!(torn_cases, last_batch.end - last_batch.start);
}

/// A segment missing between two others loses the records in it: recovery refuses, naming
/// the missing file. An empty (never written) segment after the last one, left by a rotation
/// that failed or crashed, is removed, and the segment before it is still the open one: its
/// torn tail is truncated, not taken for corruption.
#[test]
fn a_missing_segment_is_refused_and_an_empty_last_one_is_removed() {
    let fixture = fixture("wal-missing");
    let last = fixture.last_segment();
    let empty = fixture.path(last + 1);
    std::fs::write(&empty, vec![0u8; 8 << 10]).unwrap();
    let last_batch = *fixture.extents.last().unwrap();
    let mut bytes = fixture.pristine.last().unwrap().1.clone();
    bytes[(last_batch.start + last_batch.end) as usize / 2..].fill(0);
    std::fs::write(fixture.path(last), &bytes).unwrap();
    let (wal, recovery) = Wal::open(fixture.dir.path(), fixture.config.clone()).unwrap();
    assert!(!empty.exists());
    let torn = recovery.torn_tail.expect("the cut batch");
    assert_eq!(
        (torn.file, torn.offset),
        (fixture.path(last), last_batch.start)
    );
    fixture.models[fixture.models.len() - 2].check(&wal, "empty segment after a torn one");
    drop(wal);
    std::fs::remove_file(fixture.path(last)).unwrap();
    std::fs::write(&empty, vec![1u8; 100]).unwrap();
    match Wal::open(fixture.dir.path(), fixture.config.clone()) {
        Err(error @ WalError::Corrupt { .. }) => {
            let WalError::Corrupt { file, .. } = &error else {
                unreachable!()
            };
            assert_eq!(file, &fixture.path(last));
            assert!(error.to_string().contains("segment missing"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}
