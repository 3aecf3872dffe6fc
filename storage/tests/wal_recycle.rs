//! Segment recycling: a deleted segment's file is kept (`wal-NNNNNNNN.free`) and renamed into
//! place as a later segment, its earlier log still in it past the new one's end. These tests
//! check that recovery finds exactly the new log in such a file, never an old record, however
//! the old content lines up with the new end; and that the files move between the pool and
//! the log as documented.

mod common;

use std::path::PathBuf;

use common::{entries_record, Model, TempDir};
use shardcore_storage::segment::{free_path, list_free, segment_path};
use shardcore_storage::{LogRecord, Wal, WalConfig, WalError};

/// One batch's place on disk.
#[derive(Clone, Copy, Debug)]
struct Extent {
    segment: u64,
    start: u64,
    end: u64,
}

/// A WAL of small segments run as a node would: group 1 appends one large entry per batch and
/// compacts (snapshots) whenever the WAL asks, so old segments are deleted and recycled; group
/// 2 rewrites its entries 1..=2 in every batch with a new term, so a recycled file holds stale
/// versions of entries that are live now (with other data). Runs until a rotation went into a
/// recycled file and that segment holds at least `batches_in_last` batches.
struct Fixture {
    dir: TempDir,
    config: WalConfig,
    wal: Option<Wal>,
    model: Model,
    /// The model before the last batch.
    before_last: Model,
    extents: Vec<Extent>,
    recycled_rotations: usize,
    round: u64,
}

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 8 << 10,
        max_segments: 3,
        cache_bytes: 0,
        ..WalConfig::new()
    }
}

impl Fixture {
    fn new(label: &str) -> Fixture {
        let dir = TempDir::new(label);
        let config = config();
        let (wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
        Fixture {
            dir,
            config,
            wal: Some(wal),
            model: Model::default(),
            before_last: Model::default(),
            extents: Vec::new(),
            recycled_rotations: 0,
            round: 0,
        }
    }

    fn wal(&mut self) -> &mut Wal {
        self.wal.as_mut().expect("open")
    }

    /// Appends the next round's batch and records where it went.
    fn step(&mut self) {
        self.round += 1;
        let round = self.round;
        let next = self.model.groups.get(&1).and_then(|g| g.last_index());
        let next = next.map_or(1, |last| last + 1);
        let mut batch = Vec::new();
        if !self.wal().groups_to_snapshot().is_empty() {
            batch.push(LogRecord::Compact {
                group: 1,
                index: next - 1,
                term: 1,
            });
        }
        batch.push(entries_record(1, next, 1, 1, 1800));
        batch.push(entries_record(2, 1, 2, round, 100));
        let stats = self.wal().append(&batch).unwrap();
        self.recycled_rotations += usize::from(stats.recycled);
        let segment = *self.wal().segment_numbers().last().unwrap();
        let start = match self.extents.last() {
            Some(last) if last.segment == segment => last.end,
            _ => 64,
        };
        let end = if start == 64 {
            stats.log_bytes
        } else {
            start + stats.log_bytes
        };
        self.extents.push(Extent {
            segment,
            start,
            end,
        });
        self.before_last = self.model.clone();
        self.model.apply(&batch);
    }

    /// Steps until the last segment is a recycled file holding `batches_in_last` batches.
    fn run_until_recycled_last(&mut self, batches_in_last: usize) {
        let mut last_rotation_recycled = false;
        loop {
            let rotations = self.recycled_rotations;
            let segments = self.extents.last().map(|e| e.segment);
            self.step();
            if self.extents.last().map(|e| e.segment) != segments {
                last_rotation_recycled = self.recycled_rotations > rotations;
            }
            let last = self.extents.last().unwrap().segment;
            let in_last = self.extents.iter().filter(|e| e.segment == last).count();
            if last_rotation_recycled && in_last >= batches_in_last {
                return;
            }
            assert!(self.round < 1000, "no rotation into a recycled file");
        }
    }

    fn last_segment(&self) -> u64 {
        self.extents.last().unwrap().segment
    }

    fn path(&self, segment: u64) -> PathBuf {
        segment_path(self.dir.path(), segment)
    }

    fn close(&mut self) {
        self.wal = None;
    }

    fn reopen(&mut self) -> Result<shardcore_storage::Recovery, WalError> {
        self.wal = None;
        let (wal, recovery) = Wal::open(self.dir.path(), self.config.clone())?;
        self.wal = Some(wal);
        Ok(recovery)
    }
}

/// Runs the node-like workload for 300 batches, reopening every 7 (so the log's end falls at
/// many places in recycled files' old content): rotations go into recycled files once
/// compaction has deleted segments, `.free` files come and go within the bound, and every
/// reopen recovers exactly what was acknowledged, no torn tail, no stale entry (group 2's old
/// versions of its entries 1..=2 sit in every recycled file).
#[test]
fn recycled_segments_recover_exactly_the_new_log() {
    let mut fixture = Fixture::new("wal-recycle");
    let mut rotations = 0;
    for round in 1..=300 {
        let segments = fixture.wal().segment_numbers().last().copied();
        fixture.step();
        rotations += usize::from(fixture.wal().segment_numbers().last().copied() != segments);
        let model = fixture.model.clone();
        model.check(fixture.wal(), &format!("after batch {round}"));
        let free = list_free(fixture.dir.path()).unwrap();
        assert_eq!(
            free.len(),
            fixture.wal().recycled_segments(),
            "batch {round}"
        );
        assert!(free.len() <= shardcore_storage::wal::RECYCLED_MAX_SEGMENTS);
        if round % 7 == 0 {
            let recovery = fixture.reopen().unwrap();
            assert_eq!(recovery.torn_tail, None, "reopened after batch {round}");
            model.check(fixture.wal(), &format!("reopened after batch {round}"));
        }
    }
    assert!(rotations > 20, "{rotations} rotations");
    // All but the first few rotations (before compaction first deleted anything) reuse files.
    assert!(
        fixture.recycled_rotations + 6 >= rotations,
        "{} of {rotations} rotations into recycled files",
        fixture.recycled_rotations
    );
}

/// A batch of an earlier segment, whole and with good checksums, right where the new log
/// ends in a recycled file (as if the end mark after the last batch were lost) is never
/// applied: it names another segment, so the log ends before it (reported as a torn tail, as
/// nothing of this segment follows), and nothing of it is served.
#[test]
fn a_stale_batch_with_good_checksums_at_the_end_is_never_served() {
    let mut fixture = Fixture::new("wal-recycle-stale");
    fixture.run_until_recycled_last(2);
    fixture.close();
    let last = fixture.last_segment();
    // The first batch of the segment before: a real batch of an older segment.
    let older = *fixture
        .extents
        .iter()
        .find(|e| e.segment == last - 1)
        .unwrap();
    let older_bytes = std::fs::read(fixture.path(last - 1)).unwrap();
    let stale = &older_bytes[older.start as usize..older.end as usize];
    let path = fixture.path(last);
    let mut bytes = std::fs::read(&path).unwrap();
    let end = fixture.extents.last().unwrap().end as usize;
    assert!(end + stale.len() <= bytes.len());
    bytes[end..end + stale.len()].copy_from_slice(stale);
    std::fs::write(&path, &bytes).unwrap();
    let recovery = fixture.reopen().unwrap();
    let torn = recovery.torn_tail.expect("the stale batch ends the log");
    assert_eq!((torn.file, torn.offset), (path, end as u64));
    let model = fixture.model.clone();
    model.check(fixture.wal(), "a stale batch after the end");
    // The end mark is written over it: the next open finds a clean end.
    let recovery = fixture.reopen().unwrap();
    assert_eq!(recovery.torn_tail, None);
    model.check(fixture.wal(), "reopened");
    fixture.step();
    let model = fixture.model.clone();
    model.check(fixture.wal(), "appended after");
}

/// In a recycled last segment, whose bytes after the log's end are never zeros, damage with
/// batches of the segment after it is still told from a torn tail: a zeroed batch record (a
/// hole) or a flipped bit in a middle batch refuses to start, naming the file and the
/// batch's offset; a flipped bit in the last batch is a torn tail, truncated.
#[test]
fn damage_in_a_recycled_segment_is_corruption_unless_nothing_of_it_follows() {
    let mut fixture = Fixture::new("wal-recycle-damage");
    fixture.run_until_recycled_last(3);
    fixture.close();
    let last = fixture.last_segment();
    let path = fixture.path(last);
    let pristine = std::fs::read(&path).unwrap();
    let in_last: Vec<Extent> = fixture
        .extents
        .iter()
        .filter(|e| e.segment == last)
        .copied()
        .collect();
    let middle = in_last[in_last.len() - 2];
    let final_batch = in_last[in_last.len() - 1];
    for (extent, zero_header) in [(middle, true), (middle, false), (final_batch, false)] {
        let mut bytes = pristine.clone();
        let at = extent.start as usize;
        if zero_header {
            bytes[at..at + 24].fill(0);
        } else {
            bytes[at + 60] ^= 4;
        }
        std::fs::write(&path, &bytes).unwrap();
        let result = fixture.reopen();
        if extent.start == final_batch.start {
            let torn = result.unwrap().torn_tail.expect("a torn tail");
            assert_eq!(torn.offset, final_batch.start);
            let before_last = fixture.before_last.clone();
            before_last.check(fixture.wal(), "the last batch torn");
            fixture.close();
            continue;
        }
        match result {
            Err(WalError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!((&file, offset), (&path, middle.start), "{reason}");
                assert!(reason.contains("later batch"), "{reason}");
            }
            other => panic!("damage at {at} (zeroed header: {zero_header}): {other:?}"),
        }
    }
}

/// A recycled file renamed into place as the next segment, with a crash before its first
/// batch, holds an older segment's header and log: recovery releases it back to the pool
/// (it is not the open segment, so the one before stays open and nothing is lost), and the
/// next rotation takes it again.
#[test]
fn a_recycled_segment_never_written_goes_back_to_the_pool() {
    let mut fixture = Fixture::new("wal-recycle-unwritten");
    fixture.run_until_recycled_last(1);
    while fixture.wal().recycled_segments() == 0 {
        fixture.step();
    }
    fixture.close();
    let dir = fixture.dir.path().to_path_buf();
    let free = list_free(&dir).unwrap();
    let last = fixture.last_segment();
    let taken = free[0];
    std::fs::rename(free_path(&dir, taken), fixture.path(last + 1)).unwrap();
    let recovery = fixture.reopen().unwrap();
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(
        fixture.wal().segment_numbers().last().copied(),
        Some(last),
        "the unwritten segment is not part of the log"
    );
    assert!(!fixture.path(last + 1).exists());
    assert_eq!(list_free(&dir).unwrap(), free, "back in the pool");
    let model = fixture.model.clone();
    model.check(fixture.wal(), "after releasing the unwritten segment");
    while fixture.last_segment() == last {
        fixture.step();
    }
    let model = fixture.model.clone();
    model.check(fixture.wal(), "after the next rotation");
    fixture.reopen().unwrap();
    model.check(fixture.wal(), "reopened");
}
