//! Pipelined appends (`Wal::submit` / `Wal::poll` / `Wal::wait`, two batches in flight): the
//! order batches are reported in, reads of batches not yet durable, rotation while the batch
//! before is in flight, and a failure of one batch poisoning the one submitted after it.

mod common;

use std::collections::VecDeque;
use std::io::ErrorKind;

use common::{entries_record, hard_state_record, random_batch, Model, Rng, TempDir};
use shardcore_storage::fault::{FaultKind, FaultPoints, WAL_FDATASYNC, WAL_WRITE};
use shardcore_storage::{LogRecord, Ticket, Wal, WalConfig, WalError, MAX_IN_FLIGHT_BATCHES};

/// Small segments, so that batches rotate often, and no cache, so that every read of an entry
/// goes to the disk or, before its batch is durable, to the batch's write buffer.
fn config(faults: &FaultPoints) -> WalConfig {
    WalConfig {
        segment_bytes: 16 << 10,
        max_segments: 4,
        cache_bytes: 0,
        faults: faults.clone(),
    }
}

/// Two batches submitted back to back: both readable at once (from their write buffers: the
/// cache is off), a third submission beyond the limit refused, and so is `append` with
/// batches in flight; `poll` reports the first without blocking once durable (and its ticket
/// is spent), `wait` the second; reopening finds both.
#[test]
fn batches_are_reported_in_order_and_readable_before_they_are_durable() {
    let dir = TempDir::new("wal-pipeline-order");
    let faults = FaultPoints::new();
    let (mut wal, _) = Wal::open(dir.path(), config(&faults)).unwrap();
    let mut model = Model::default();
    let first = vec![
        entries_record(1, 1, 3, 1, 2000),
        hard_state_record(1, 1, 1, 0),
    ];
    let second = vec![
        entries_record(1, 4, 2, 1, 2000),
        entries_record(2, 1, 1, 1, 50),
    ];
    let first_ticket = wal.submit(&first).unwrap();
    let second_ticket = wal.submit(&second).unwrap();
    assert_eq!(wal.in_flight(), 2);
    model.apply(&first);
    model.apply(&second);
    model.check(&wal, "both submitted, not yet waited for");
    let third = vec![hard_state_record(2, 1, 2, 0)];
    assert!(matches!(wal.submit(&third), Err(WalError::Invalid(_))));
    assert_eq!(MAX_IN_FLIGHT_BATCHES, 2);
    assert!(matches!(wal.append(&third), Err(WalError::Invalid(_))));
    let first_stats = loop {
        if let Some(result) = wal.poll(&first_ticket) {
            break result.unwrap();
        }
        std::thread::yield_now();
    };
    assert_eq!((first_stats.records, first_stats.fdatasyncs), (2, 1));
    assert!(matches!(
        wal.poll(&first_ticket),
        Some(Err(WalError::Invalid(_)))
    ));
    let second_stats = wal.wait(second_ticket).unwrap();
    assert_eq!(second_stats.records, 2);
    assert_eq!(wal.in_flight(), 0);
    model.check(&wal, "both durable");
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), config(&faults)).unwrap();
    model.check(&wal, "reopened");
}

/// Random batches kept two in flight through segments of 16 KiB: many batches rotate into
/// a new segment while the batch before them is still being written to the old one, and old
/// segments are deleted as groups compact. After every submission the WAL holds everything
/// submitted (reads of batches in flight come from their buffers); every batch is reported
/// once, in order; reopening finds all of them.
#[test]
fn batches_rotate_while_the_one_before_is_in_flight() {
    let seed = 0x5eed_0001;
    println!("SEED={seed}");
    let dir = TempDir::new("wal-pipeline-rotate");
    let faults = FaultPoints::new();
    let (mut wal, _) = Wal::open(dir.path(), config(&faults)).unwrap();
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut in_flight: VecDeque<Ticket> = VecDeque::new();
    let (mut rotated, mut rotated_behind_a_write, mut deleted) = (0, 0, 0);
    for round in 1..=300 {
        let batch = random_batch(&mut rng, &model, 4, 4, 500, round);
        if in_flight.len() == MAX_IN_FLIGHT_BATCHES {
            let stats = wal.wait(in_flight.pop_front().unwrap()).unwrap();
            deleted += stats.segments_deleted;
        }
        let before = wal.segment_numbers();
        let writing = !in_flight.is_empty();
        in_flight.push_back(wal.submit(&batch).unwrap());
        if wal.segment_numbers().last() != before.last() {
            rotated += 1;
            rotated_behind_a_write += usize::from(writing);
        }
        model.apply(&batch);
        model.check(&wal, &format!("SEED={seed} round {round}, submitted"));
    }
    while let Some(ticket) = in_flight.pop_front() {
        deleted += wal.wait(ticket).unwrap().segments_deleted;
    }
    assert!(
        rotated_behind_a_write > 10,
        "{rotated} rotations, {rotated_behind_a_write} behind a write"
    );
    assert!(deleted > 0, "compaction deleted no segment");
    model.check(&wal, "all durable");
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), config(&faults)).unwrap();
    model.check(&wal, &format!("SEED={seed} reopened"));
}

/// A write or fdatasync that fails for one batch while the next is already submitted: the
/// first reports the failure, the second `Poisoned` (it was never written), every later call
/// fails; reopening finds the acknowledged batches, the failed one whole or not at all, and
/// never the one after it.
#[test]
fn a_failed_batch_poisons_the_one_submitted_after_it() {
    let cases = [
        (WAL_FDATASYNC, FaultKind::Error(ErrorKind::Other)),
        (WAL_WRITE, FaultKind::ShortWrite),
        (WAL_WRITE, FaultKind::Error(ErrorKind::Other)),
    ];
    for (point, kind) in cases {
        let context = format!("{point} {kind:?}");
        let dir = TempDir::new("wal-pipeline-poison");
        let faults = FaultPoints::new();
        let (mut wal, _) = Wal::open(dir.path(), config(&faults)).unwrap();
        let mut acknowledged = Model::default();
        for round in 1..=4 {
            let batch = vec![entries_record(1, round * 2 - 1, 2, 1, 3000)];
            wal.append(&batch).unwrap();
            acknowledged.apply(&batch);
        }
        let failing = vec![
            entries_record(1, 9, 3, 1, 3000),
            hard_state_record(1, 1, 1, 8),
        ];
        let after = vec![entries_record(2, 1, 2, 1, 3000)];
        // Armed before the first submission: the batch whose write goes out next fails.
        faults.arm(point, kind);
        let failing_ticket = wal.submit(&failing).unwrap();
        // A write that fails before any I/O poisons at once; otherwise the next batch is
        // queued behind the failing one and never goes out.
        let after_ticket = match wal.submit(&after) {
            Ok(ticket) => Some(ticket),
            Err(WalError::Poisoned) => None,
            Err(error) => panic!("{context}: {error}"),
        };
        match wal.wait(failing_ticket) {
            Err(WalError::Io { .. }) => {}
            other => panic!("{context}: the failing batch reports {other:?}"),
        }
        if let Some(ticket) = after_ticket {
            assert!(
                matches!(wal.wait(ticket), Err(WalError::Poisoned)),
                "{context}: the batch after a failed one is poisoned"
            );
        }
        assert_eq!(faults.fired(point), 1, "{context}");
        assert!(wal.is_poisoned());
        assert!(matches!(wal.submit(&after), Err(WalError::Poisoned)));
        assert!(matches!(wal.entries(1, 1, 2), Err(WalError::Poisoned)));
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), config(&faults)).unwrap();
        if acknowledged.difference(&wal).is_some() {
            let mut with_failing = acknowledged.clone();
            with_failing.apply(&failing);
            with_failing.check(
                &wal,
                &format!("{context}: acknowledged, or those and the failed one"),
            );
        }
        assert_eq!(
            wal.last_index(2),
            None,
            "{context}: the batch after the failure is absent"
        );
    }
}

/// Waiting for a later batch first completes the earlier one too (reports come in order),
/// after which the earlier ticket is spent; a batch with no records takes its turn and
/// reports zero stats.
#[test]
fn waiting_for_a_later_batch_completes_the_earlier_ones() {
    let dir = TempDir::new("wal-pipeline-later");
    let faults = FaultPoints::new();
    let (mut wal, _) = Wal::open(dir.path(), config(&faults)).unwrap();
    let first = wal.submit(&[entries_record(1, 1, 2, 1, 100)]).unwrap();
    let empty = wal
        .submit(&[LogRecord::Entries {
            group: 1,
            entries: Vec::new(),
        }])
        .unwrap();
    assert_eq!(wal.wait(empty).unwrap(), Default::default());
    assert_eq!(wal.in_flight(), 0);
    assert!(
        matches!(wal.wait(first), Err(WalError::Invalid(_))),
        "spent"
    );
    assert_eq!(wal.last_index(1), Some(2));
    let batch = [entries_record(1, 3, 1, 1, 100)];
    assert_eq!(wal.append(&batch).unwrap().records, 1);
}
