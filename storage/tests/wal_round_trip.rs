//! The WAL keeps what it acknowledged: appends of many groups read back as written, before and
//! after reopening, across segment rotation and deletion; groups pinning old segments are
//! named; bad requests write nothing; reads never serve a corrupt record.

mod common;

use common::{
    entries, entries_record, hard_state_record, random_batch, small_config, Model, Rng, TempDir,
};
use shardcore_storage::{HardState, LogRecord, Wal, WalConfig, WalError};

/// Many groups, random entries, conflicting appends, hard states, truncations and compactions
/// over small segments (so the log rotates and deletes), checked against a model after every
/// batch and after reopening every 50 batches; reads come from the cache and from disk (a
/// small cache). Seeded: prints `SEED=`.
#[test]
fn random_batches_round_trip_across_reopen() {
    for seed in [1u64, 2, 3] {
        println!("SEED={seed}");
        let dir = TempDir::new("wal-round-trip");
        let config = WalConfig {
            segment_bytes: 16 << 10,
            cache_bytes: 1 << 10,
            max_segments: 4,
            ..WalConfig::new()
        };
        let mut rng = Rng::new(seed);
        let mut model = Model::default();
        let (mut wal, recovery) = Wal::open(dir.path(), config.clone()).unwrap();
        assert_eq!(recovery.records, 0);
        let mut rotations = 0;
        let mut deleted = 0;
        for round in 1..=300u64 {
            let batch = random_batch(&mut rng, &model, 6, 5, 200, round);
            let stats = wal.append(&batch).unwrap();
            assert_eq!(stats.fdatasyncs, 1, "one fdatasync per batch");
            rotations += u64::from(stats.rotated);
            deleted += stats.segments_deleted;
            model.apply(&batch);
            model.check(&wal, &format!("seed {seed}, after batch {round}"));
            assert!(wal.cached_bytes() <= config.cache_bytes);
            if round % 50 == 0 {
                drop(wal);
                let (reopened, recovery) = Wal::open(dir.path(), config.clone()).unwrap();
                wal = reopened;
                assert_eq!(recovery.torn_tail, None);
                model.check(&wal, &format!("seed {seed}, reopened after batch {round}"));
            }
        }
        assert!(rotations > 3, "seed {seed}: only {rotations} rotations");
        assert!(deleted > 0, "seed {seed}: no segment was deleted");
    }
}

/// Entries of one group across several segments read back whole; compacting past them
/// deletes the old segment files (and only those), and the log reopens the same.
#[test]
fn compaction_deletes_segments_behind_every_group() {
    let dir = TempDir::new("wal-delete");
    let config = small_config(8 << 10);
    let (mut wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
    for index in 1..=40 {
        wal.append(&[entries_record(1, index, 1, 1, 1000)]).unwrap();
    }
    let segments = wal.segments();
    assert!(segments >= 4, "{segments} segments");
    assert_eq!(wal.entries(1, 1, 40).unwrap(), entries(1, 1, 40, 1, 1000));
    // A second group with only a hard state in the first segment does not pin it: hard
    // states are checkpointed into every new segment.
    let on_disk = |dir: &std::path::Path| {
        let names = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name());
        names
            .filter(|n| n.to_string_lossy().ends_with(".seg"))
            .count()
    };
    assert_eq!(on_disk(dir.path()), segments);
    let stats = wal
        .append(&[LogRecord::Compact {
            group: 1,
            index: 30,
            term: 1,
        }])
        .unwrap();
    assert!(stats.segments_deleted > 0);
    assert_eq!(wal.segments(), segments - stats.segments_deleted);
    assert_eq!(on_disk(dir.path()), wal.segments());
    assert_eq!(wal.first_index(1), Some(31));
    assert_eq!(wal.entries(1, 31, 40).unwrap(), entries(1, 31, 10, 1, 1000));
    assert!(matches!(wal.entries(1, 30, 40), Err(WalError::Invalid(_))));
    let numbers = wal.segment_numbers();
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), config).unwrap();
    assert_eq!(wal.segment_numbers(), numbers);
    assert_eq!(recovery.groups, vec![1]);
    assert_eq!(wal.first_index(1), Some(31));
    assert_eq!(wal.compacted(1), Some((30, 1)));
    assert_eq!(wal.term(1, 30), Some(1));
    assert_eq!(wal.entries(1, 31, 40).unwrap(), entries(1, 31, 10, 1, 1000));
}

/// With more segments than `max_segments`, the groups whose entries pin the oldest one are
/// named; once they compact, the old segments go and nobody is named.
#[test]
fn groups_pinning_the_oldest_segment_are_asked_to_snapshot() {
    let dir = TempDir::new("wal-pin");
    let config = WalConfig {
        segment_bytes: 8 << 10,
        max_segments: 3,
        ..WalConfig::new()
    };
    let (mut wal, _) = Wal::open(dir.path(), config).unwrap();
    wal.append(&[
        entries_record(7, 1, 1, 1, 100),
        hard_state_record(9, 1, 9, 0),
    ])
    .unwrap();
    let mut index = 1;
    while wal.segments() <= 3 {
        assert!(wal.groups_to_snapshot().is_empty());
        wal.append(&[
            entries_record(8, index, 1, 1, 900),
            LogRecord::Compact {
                group: 8,
                index,
                term: 1,
            },
        ])
        .unwrap();
        index += 1;
    }
    assert_eq!(wal.groups_to_snapshot(), vec![7]);
    let stats = wal
        .append(&[LogRecord::Compact {
            group: 7,
            index: 1,
            term: 1,
        }])
        .unwrap();
    assert!(stats.segments_deleted > 0);
    assert!(wal.segments() <= 2, "{} segments", wal.segments());
    assert!(wal.groups_to_snapshot().is_empty());
    assert_eq!(
        wal.hard_state(9),
        Some(HardState {
            term: 1,
            vote: 9,
            commit: 0
        })
    );
}

/// Requests that break the log's rules are refused before anything is written, and the WAL
/// goes on: a gap, entries out of order, index 0, reaching behind a compaction, compacting
/// backwards, and a batch larger than a segment.
#[test]
fn invalid_requests_write_nothing() {
    let dir = TempDir::new("wal-invalid");
    let config = small_config(8 << 10);
    let (mut wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
    wal.append(&[entries_record(1, 1, 5, 1, 10)]).unwrap();
    wal.append(&[LogRecord::Compact {
        group: 1,
        index: 2,
        term: 1,
    }])
    .unwrap();
    let mut unordered = entries(1, 6, 2, 1, 10);
    unordered.swap(0, 1);
    let bad: Vec<Vec<LogRecord>> = vec![
        vec![entries_record(1, 7, 1, 1, 10)],
        vec![LogRecord::Entries {
            group: 1,
            entries: unordered,
        }],
        vec![entries_record(2, 0, 1, 1, 10)],
        vec![entries_record(1, 2, 1, 1, 10)],
        vec![LogRecord::Truncate {
            group: 1,
            from_index: 2,
        }],
        vec![LogRecord::Compact {
            group: 1,
            index: 1,
            term: 1,
        }],
        // Valid alone, invalid after the truncation before it in the same batch.
        vec![
            LogRecord::Truncate {
                group: 1,
                from_index: 4,
            },
            entries_record(1, 5, 1, 1, 10),
        ],
        vec![LogRecord::Entries {
            group: 3,
            entries: vec![shardcore_storage::WalEntry {
                index: 1,
                term: 1,
                kind: 0,
                data: vec![0u8; 9000].into(),
            }],
        }],
    ];
    for batch in &bad {
        let error = wal.append(batch).unwrap_err();
        assert!(matches!(error, WalError::Invalid(_)), "{batch:?}: {error}");
    }
    assert!(!wal.is_poisoned());
    wal.append(&[entries_record(1, 6, 1, 1, 10)]).unwrap();
    assert_eq!(wal.last_index(1), Some(6));
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), config).unwrap();
    assert_eq!(recovery.groups, vec![1]);
    assert_eq!((wal.first_index(1), wal.last_index(1)), (Some(3), Some(6)));
    assert_eq!(wal.entries(1, 3, 6).unwrap(), entries(1, 3, 4, 1, 10));
}

/// A byte changed on disk under a sealed segment (read through mmap) or the open one (read
/// through pread) is reported as corruption with the file, never returned as data.
#[test]
fn reads_verify_checksums_and_never_serve_a_corrupt_record() {
    let dir = TempDir::new("wal-read-verify");
    let config = WalConfig {
        segment_bytes: 8 << 10,
        cache_bytes: 0,
        ..WalConfig::new()
    };
    let (mut wal, _) = Wal::open(dir.path(), config).unwrap();
    for index in 1..=12 {
        wal.append(&[entries_record(1, index, 1, 1, 1000)]).unwrap();
    }
    assert!(wal.segments() >= 2);
    let numbers = wal.segment_numbers();
    for number in [numbers[0], *numbers.last().unwrap()] {
        let path = dir.path().join(format!("wal-{number:08}.seg"));
        // A byte inside the data of the segment's first entry: past the segment header, the
        // batch record, the checkpoint (none in the first segment, where group 1 had no state
        // yet; one 81-byte group-state record after), the entries record's header, its first
        // index and count, and the entry's term, kind and length.
        let checkpoint = if number == 1 { 0 } else { 81 };
        // The batch record: a 24-byte header and a 40-byte payload.
        let record = 64 + 64 + checkpoint;
        let at = record + 24 + 12 + 13 + 2;
        let flip = |path: &std::path::Path| {
            use std::os::unix::fs::FileExt;
            // Written in place, not truncated: the WAL has the file mapped.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at).unwrap();
            file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
        };
        let good = wal.entries(1, 1, 12).unwrap();
        flip(&path);
        let mut corrupt = 0;
        for index in 1..=12 {
            match wal.entries(1, index, index) {
                Ok(read) => assert_eq!(read[0], good[index as usize - 1], "index {index}"),
                Err(WalError::Corrupt { file, offset, .. }) => {
                    assert_eq!((file, offset), (path.clone(), record));
                    corrupt += 1;
                }
                Err(other) => panic!("segment {number}: {other}"),
            }
        }
        assert_eq!(corrupt, 1, "segment {number}");
        flip(&path);
        assert_eq!(wal.entries(1, 1, 12).unwrap(), good);
    }
}

/// Recent entries are served from the cache within its budget, older ones from disk, and
/// both read the same.
#[test]
fn the_cache_holds_recent_entries_within_its_budget() {
    let dir = TempDir::new("wal-cache");
    let config = WalConfig {
        segment_bytes: 64 << 10,
        cache_bytes: 4 << 10,
        ..WalConfig::new()
    };
    let (mut wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
    for index in 1..=100 {
        wal.append(&[entries_record(index % 3, index / 3 + 1, 1, 1, 300)])
            .unwrap();
        assert!(wal.cached_bytes() <= config.cache_bytes);
    }
    assert!(wal.cached_bytes() > 0);
    let read_all = |wal: &Wal, g: u64| {
        let (first, last) = (wal.first_index(g).unwrap(), wal.last_index(g).unwrap());
        wal.entries(g, first, last).unwrap()
    };
    let cached: Vec<_> = (0..3).map(|g| read_all(&wal, g)).collect();
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), config).unwrap();
    assert_eq!(wal.cached_bytes(), 0);
    for (g, expected) in cached.iter().enumerate() {
        let g = g as u64;
        assert_eq!(&read_all(&wal, g), expected);
    }
}

/// A second WAL on a directory already open is refused (the first holds its lock, and the
/// second gives up after its wait) until the first is dropped.
#[test]
fn one_wal_per_directory() {
    let dir = TempDir::new("wal-lock");
    let (wal, _) = Wal::open(dir.path(), small_config(8 << 10)).unwrap();
    let wait = std::time::Duration::from_millis(50);
    match Wal::open_waiting(dir.path(), small_config(8 << 10), wait) {
        Err(WalError::Invalid(reason)) => assert!(reason.contains("open elsewhere"), "{reason}"),
        other => panic!("{other:?}"),
    }
    drop(wal);
    Wal::open(dir.path(), small_config(8 << 10)).unwrap();
}

/// The oldest segment removed by hand while a group still needs entries in it: the segments
/// left are contiguous, but the next one's checkpoint says which entries lived before it, and
/// recovery refuses rather than serve a log with a hole at its start.
#[test]
fn a_needed_segment_removed_by_hand_is_refused() {
    let dir = TempDir::new("wal-needed");
    let config = small_config(8 << 10);
    let (mut wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
    for index in 1..=40 {
        wal.append(&[entries_record(1, index, 1, 1, 1000)]).unwrap();
    }
    assert!(wal.segments() >= 3);
    drop(wal);
    std::fs::remove_file(dir.path().join("wal-00000001.seg")).unwrap();
    match Wal::open(dir.path(), config) {
        Err(WalError::Corrupt { file, reason, .. }) => {
            assert_eq!(file, dir.path().join("wal-00000002.seg"));
            assert!(reason.contains("still needed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// The next segment is made ahead of need, as a spare file of the full segment size, all
/// zeros, that rotation renames into place (and a new spare is made). A spare a previous run
/// left, whatever it holds (here a copy of a real segment), is removed at open, never read.
#[test]
fn rotation_takes_a_spare_made_ahead_and_recovery_ignores_a_leftover_one() {
    let dir = TempDir::new("wal-spare");
    let config = small_config(16 << 10);
    let spare = dir.path().join(shardcore_storage::wal::SPARE_FILE_NAME);
    let is_blank_segment = |path: &std::path::Path| {
        let bytes = std::fs::read(path).unwrap();
        bytes.len() as u64 == config.segment_bytes && bytes.iter().all(|b| *b == 0)
    };
    let (mut wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
    let mut model = Model::default();
    let batch = [entries_record(1, 1, 1, 1, 1000)];
    wal.append(&batch).unwrap();
    model.apply(&batch);
    drop(wal);
    assert!(is_blank_segment(&spare), "a spare, made in full");

    // A leftover spare holding a segment's bytes: removed, not recovered.
    std::fs::copy(dir.path().join("wal-00000001.seg"), &spare).unwrap();
    let (mut wal, recovery) = Wal::open(dir.path(), config.clone()).unwrap();
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(wal.segment_numbers(), vec![1]);
    model.check(&wal, "after a leftover spare");
    let mut index = 2;
    let mut rotations = 0;
    while rotations < 3 {
        let batch = [entries_record(1, index, 1, 1, 2000)];
        rotations += usize::from(wal.append(&batch).unwrap().rotated);
        model.apply(&batch);
        index += 1;
    }
    assert_eq!(wal.segment_numbers(), vec![1, 2, 3, 4]);
    model.check(&wal, "after rotations");
    drop(wal);
    assert!(is_blank_segment(&spare), "a new spare after each rotation");
    let (wal, recovery) = Wal::open(dir.path(), config).unwrap();
    assert_eq!(recovery.torn_tail, None);
    model.check(&wal, "reopened");
}
