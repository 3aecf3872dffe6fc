//! Failures at each durability step, injected through the named fault points: a failed write
//! or fdatasync fails the append and poisons the WAL, and reopening recovers exactly the
//! acknowledged batches (the failed one entirely or not at all); a full disk or a failed
//! directory fsync while rotating is a clear error that leaves the WAL usable.

mod common;

use std::io::ErrorKind;

use common::{entries_record, hard_state_record, Model, TempDir};
use shardcore_storage::fault::{
    FaultKind, FaultPoints, WAL_DIR_FSYNC, WAL_FALLOCATE, WAL_FDATASYNC, WAL_ROTATE, WAL_WRITE,
};
use shardcore_storage::{LogRecord, Wal, WalConfig, WalError};

fn config(faults: &FaultPoints) -> WalConfig {
    WalConfig {
        segment_bytes: 64 << 10,
        faults: faults.clone(),
        ..WalConfig::new()
    }
}

/// Five acknowledged batches of two groups; returns the model of what they hold.
fn acknowledged(wal: &mut Wal) -> Model {
    let mut model = Model::default();
    for round in 1..=5 {
        let batch = vec![
            entries_record(1, round * 2 - 1, 2, round, 300),
            hard_state_record(1, round, 1, round * 2),
            entries_record(2, round, 1, round, 3000),
        ];
        wal.append(&batch).unwrap();
        model.apply(&batch);
    }
    model
}

/// A batch spanning several blocks, so that a short write lands part of it.
fn failing_batch() -> Vec<LogRecord> {
    vec![
        entries_record(1, 11, 3, 9, 4000),
        hard_state_record(1, 9, 1, 13),
        entries_record(3, 1, 2, 9, 4000),
    ]
}

/// For each way a write or fdatasync can fail: the append fails with an error naming the
/// step (or the full disk), the WAL is poisoned (appends and reads fail with `Poisoned`), and
/// reopening finds every acknowledged batch and the failed one whole or not at all.
#[test]
fn a_failed_write_or_fdatasync_poisons_and_loses_nothing_acknowledged() {
    let cases = [
        (WAL_WRITE, FaultKind::Error(ErrorKind::Other)),
        (WAL_WRITE, FaultKind::DiskFull),
        (WAL_WRITE, FaultKind::ShortWrite),
        (WAL_FDATASYNC, FaultKind::Error(ErrorKind::Other)),
        (WAL_FDATASYNC, FaultKind::DiskFull),
    ];
    for (point, kind) in cases {
        let context = format!("{point} {kind:?}");
        let dir = TempDir::new("wal-fault");
        let faults = FaultPoints::new();
        let (mut wal, _) = Wal::open(dir.path(), config(&faults)).unwrap();
        let model = acknowledged(&mut wal);
        faults.arm(point, kind);
        let error = wal.append(&failing_batch()).unwrap_err();
        assert_eq!(faults.fired(point), 1, "{context}");
        match (&error, kind) {
            (WalError::DiskFull { file }, FaultKind::DiskFull) => {
                assert_eq!(file, &dir.path().join("wal-00000001.seg"), "{context}");
                assert!(
                    error.to_string().contains("disk full"),
                    "{context}: {error}"
                );
            }
            (WalError::Io { op, .. }, _) => {
                let step = if point == WAL_WRITE {
                    "write"
                } else {
                    "fdatasync"
                };
                assert_eq!(*op, step, "{context}");
                assert!(error.to_string().contains("restart the node"), "{error}");
            }
            _ => panic!("{context}: {error:?}"),
        }
        assert!(wal.is_poisoned(), "{context}");
        let later = wal.append(&[hard_state_record(1, 99, 1, 1)]).unwrap_err();
        assert!(matches!(later, WalError::Poisoned), "{context}: {later}");
        assert!(
            matches!(wal.entries(1, 1, 2), Err(WalError::Poisoned)),
            "{context}"
        );
        drop(wal);

        let (wal, recovery) = Wal::open(dir.path(), WalConfig::new()).unwrap();
        let mut with_failed = model.clone();
        with_failed.apply(&failing_batch());
        let failed_is_there = wal.last_index(3).is_some();
        if failed_is_there {
            with_failed.check(&wal, &context);
        } else {
            model.check(&wal, &context);
        }
        // Where the failed write reached the disk whole (a failed fdatasync after a good
        // write), its batch may be there; where it did not, it is not.
        match kind {
            FaultKind::ShortWrite => {
                assert!(!failed_is_there, "{context}");
                assert!(
                    recovery.torn_tail.is_some(),
                    "{context}: the half-written batch"
                );
            }
            _ if point == WAL_WRITE => assert!(!failed_is_there, "{context}"),
            _ => assert!(recovery.torn_tail.is_none(), "{context}"),
        }
    }
}

/// The test config with 16 KiB segments, so that a few appends rotate.
fn small_segments(faults: &FaultPoints) -> WalConfig {
    WalConfig {
        segment_bytes: 16 << 10,
        ..config(faults)
    }
}

/// A full disk when preallocating the next segment: the append fails with `DiskFull` naming
/// the new segment, nothing is written, the new file is removed, and the WAL is not poisoned:
/// once space is back the same append succeeds, and everything reopens. A failed directory
/// fsync while rotating behaves the same way with an I/O error naming the directory.
#[test]
fn a_failed_rotation_is_a_clear_error_and_the_wal_goes_on() {
    for (point, kind) in [
        (WAL_FALLOCATE, FaultKind::DiskFull),
        (WAL_ROTATE, FaultKind::Error(ErrorKind::Other)),
    ] {
        let dir = TempDir::new("wal-rotate-fault");
        let faults = FaultPoints::new();
        let config = small_segments(&faults);
        let (mut wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
        let mut model = Model::default();
        let mut index = 1;
        faults.arm(point, kind);
        let error = loop {
            let batch = [entries_record(1, index, 1, 1, 2000)];
            match wal.append(&batch) {
                Ok(_) => {
                    model.apply(&batch);
                    index += 1;
                }
                Err(error) => break error,
            }
        };
        assert_eq!(faults.fired(point), 1);
        let second = dir.path().join("wal-00000002.seg");
        match &error {
            WalError::DiskFull { file } => assert_eq!(file, &second),
            WalError::Io { op, file, .. } => {
                assert_eq!((*op, file.as_path()), ("directory fsync", dir.path()));
            }
            other => panic!("{point}: {other:?}"),
        }
        assert!(!wal.is_poisoned(), "{point}");
        assert!(
            !second.exists(),
            "{point}: the half-made segment is removed"
        );
        model.check(&wal, point);
        let batch = [entries_record(1, index, 1, 1, 2000)];
        let stats = wal.append(&batch).unwrap();
        assert!(stats.rotated);
        model.apply(&batch);
        model.check(&wal, point);
        drop(wal);
        let (wal, recovery) = Wal::open(dir.path(), config).unwrap();
        assert_eq!(recovery.torn_tail, None);
        model.check(&wal, point);
    }
}

/// The directory `fsync` that makes a rotation's new segment name durable runs linked ahead
/// of the first write into the segment. When it fails: the append that rotated fails with an
/// error naming the directory, nothing of it was written (the chain stops there), the WAL is
/// poisoned, and reopening finds every acknowledged batch and nothing of the failed one.
#[test]
fn a_failed_directory_fsync_after_rotation_poisons_and_loses_nothing_acknowledged() {
    let dir = TempDir::new("wal-dir-fsync-fault");
    let faults = FaultPoints::new();
    let config = small_segments(&faults);
    let (mut wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
    let mut model = Model::default();
    faults.arm(WAL_DIR_FSYNC, FaultKind::Error(ErrorKind::Other));
    let mut index = 1;
    let (error, failed) = loop {
        let batch = [entries_record(1, index, 1, 1, 2000)];
        match wal.append(&batch) {
            Ok(stats) => {
                assert!(!stats.rotated, "a rotation's append fails here");
                assert!(index < 1000, "no rotation within 1000 appends");
                model.apply(&batch);
                index += 1;
            }
            Err(error) => break (error, batch),
        }
    };
    assert_eq!(faults.fired(WAL_DIR_FSYNC), 1);
    match &error {
        WalError::Io { op, file, .. } => {
            assert_eq!((*op, file.as_path()), ("directory fsync", dir.path()));
        }
        other => panic!("{other:?}"),
    }
    assert!(wal.is_poisoned());
    assert!(matches!(
        wal.append(&[hard_state_record(1, 99, 1, 1)]),
        Err(WalError::Poisoned)
    ));
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), config).unwrap();
    model.check(&wal, "after a failed directory fsync");
    let failed_index = match &failed[0] {
        LogRecord::Entries { entries, .. } => entries[0].index,
        other => panic!("{other:?}"),
    };
    assert!(
        wal.last_index(1).is_some_and(|last| last < failed_index),
        "the failed batch is absent"
    );
}

/// Errors say what failed, where, and what to do.
#[test]
fn errors_say_what_where_and_what_to_do() {
    let corrupt = WalError::Corrupt {
        file: "/data/wal/wal-00000003.seg".into(),
        offset: 4160,
        reason: "batch checksum mismatch".to_string(),
    };
    let text = corrupt.to_string();
    for part in [
        "wal-00000003.seg",
        "4160",
        "batch checksum mismatch",
        "refuses to start",
    ] {
        assert!(text.contains(part), "{text}");
    }
    let full = WalError::DiskFull {
        file: "/data/wal/wal-00000004.seg".into(),
    }
    .to_string();
    assert!(
        full.contains("wal-00000004.seg") && full.contains("free space"),
        "{full}"
    );
    assert!(WalError::Poisoned.to_string().contains("restart"));
}
