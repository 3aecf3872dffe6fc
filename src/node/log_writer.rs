//! The core's log writer, driven from the core's own executor: batches go into the WAL's
//! io_uring from the executor thread, and the executor learns of their completions from an
//! eventfd that ring signals ([`shardcore_io::EventCounter`]), awaited like any other I/O.
//!
//! Why not a log thread: with one, every batch crossed threads four times per node (executor
//! to log thread, to the kernel's io-wq worker for the `fdatasync`, back to the log thread, back
//! to the executor); the wake-ups were the largest CPU cost at 64 clients and most of the
//! latency at one. Here submission is a plain `io_uring_enter` from the executor and the
//! completion wakes the executor directly.
//!
//! Group commit is unchanged: every batch queued while the WAL's two submissions are in flight
//! ([`MAX_IN_FLIGHT_BATCHES`]) goes into its next write, merged up to `merge_bytes` of records,
//! and completions are reported in ticket order.
//!
//! Snapshot files are the exception: writing one (a whole group's state, fsynced, renamed)
//! would stall the executor for milliseconds, so a **snapshot thread** owns the core's
//! [`SnapshotStore`]. A batch that carries snapshots is held at the head of the queue until the
//! thread reports them durable; only then do its records (and everything behind it) go to the
//! log, so a compaction record is never durable before the snapshot it relies on. Snapshots
//! are rare (a group's log past its bound, or one received from a leader), so the hold is too.
//!
//! Errors are final: the caller stops the node on any [`DiskError`] (fsyncgate: after a
//! failed write or `fdatasync` nothing may be acknowledged, and recovery decides what is
//! durable). What the WAL still does inline on the executor, rarely: a rotation's rename, and
//! the directory `fsync` after deleting segments no group needs (once per segment).

use std::collections::VecDeque;

use shardcore_io::bridge::{BridgeReceiver, BridgeSender};
use shardcore_storage::snapshot::{SnapshotError, SnapshotStore};
use shardcore_storage::wal::{Ticket, MAX_IN_FLIGHT_BATCHES};
use shardcore_storage::{LogRecord, Wal};

use super::core::{SnapshotWrite, WriteBatch};
use super::disk::DiskError;
use crate::raft::GroupId;

/// The most batches merged into one log write (besides the byte bound).
const MAX_MERGED_BATCHES: usize = 256;

/// Batches made durable, reported in ticket order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Every batch up to this core ticket is durable (`None`: no news).
    pub ticket: Option<u64>,
    /// Groups the log asks to snapshot: they pin its oldest segment.
    pub pinning: Vec<GroupId>,
}

/// One core's log writer; see the module docs.
pub struct LogWriter {
    wal: Wal,
    /// Batches not yet submitted, in ticket order.
    queue: VecDeque<WriteBatch>,
    /// Submitted writes, oldest first: the WAL's ticket (`None`: nothing to write, done once
    /// every earlier write is) and the last core ticket the write covers.
    in_flight: VecDeque<(Option<Ticket>, u64)>,
    /// WAL tickets among `in_flight` (at most [`MAX_IN_FLIGHT_BATCHES`]).
    wal_in_flight: usize,
    merge_bytes: usize,
    /// The snapshot thread's job queue; a job is the head batch's snapshots.
    snapshot_jobs: BridgeSender<Vec<SnapshotWrite>>,
    /// The head batch's snapshots are at the snapshot thread.
    snapshot_busy: bool,
    /// The core ticket of the head batch whose snapshots are durable.
    snapshots_done: Option<u64>,
}

impl LogWriter {
    /// A writer over `wal` merging up to `merge_bytes` of records per write, whose snapshot
    /// jobs go to `snapshot_jobs` (served by [`snapshot_thread`]).
    pub fn new(
        wal: Wal,
        merge_bytes: usize,
        snapshot_jobs: BridgeSender<Vec<SnapshotWrite>>,
    ) -> LogWriter {
        LogWriter {
            wal,
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            wal_in_flight: 0,
            merge_bytes,
            snapshot_jobs,
            snapshot_busy: false,
            snapshots_done: None,
        }
    }

    /// Makes the WAL's ring signal `fd` (an eventfd) on every completion.
    pub fn register_eventfd(&self, fd: std::os::fd::RawFd) -> Result<(), DiskError> {
        Ok(self.wal.register_eventfd(fd)?)
    }

    /// Queues `batch`; [`LogWriter::drive`] submits it.
    pub fn push(&mut self, batch: WriteBatch) {
        self.queue.push_back(batch);
    }

    /// The snapshot thread made the head batch's snapshots durable.
    pub fn snapshots_written(&mut self) {
        self.snapshot_busy = false;
        self.snapshots_done = self.queue.front().map(|b| b.ticket);
    }

    /// True when nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty() && !self.snapshot_busy
    }

    /// Collects finished writes (without blocking) and submits what is queued while the WAL
    /// has room; returns what became durable.
    pub fn drive(&mut self) -> Result<Durable, DiskError> {
        let mut durable = Durable::default();
        loop {
            self.reap(&mut durable)?;
            if !self.submit_next()? {
                return Ok(durable);
            }
        }
    }

    /// Reports the finished writes at the front of `in_flight`, in order.
    fn reap(&mut self, durable: &mut Durable) -> Result<(), DiskError> {
        while let Some((ticket, last)) = self.in_flight.front() {
            if let Some(ticket) = ticket {
                match self.wal.poll(ticket) {
                    None => break,
                    Some(result) => {
                        result?;
                        self.wal_in_flight -= 1;
                        for group in self.wal.groups_to_snapshot() {
                            if !durable.pinning.contains(&group) {
                                durable.pinning.push(group);
                            }
                        }
                    }
                }
            }
            durable.ticket = Some(*last);
            self.in_flight.pop_front();
        }
        Ok(())
    }

    /// Submits the next write if there is one and room for it: every queued batch up to the
    /// byte bound, stopping before a batch whose snapshots are not durable yet (whose
    /// snapshots go to the snapshot thread first). False when nothing was submitted.
    fn submit_next(&mut self) -> Result<bool, DiskError> {
        if self.snapshot_busy || self.wal_in_flight >= MAX_IN_FLIGHT_BATCHES {
            return Ok(false);
        }
        let Some(head) = self.queue.front() else {
            return Ok(false);
        };
        if !head.snapshots.is_empty() && self.snapshots_done != Some(head.ticket) {
            let job = head.snapshots.clone();
            self.snapshot_jobs
                .try_send(job)
                .map_err(|_| DiskError::Inconsistent("the snapshot thread is gone".to_string()))?;
            self.snapshot_busy = true;
            return Ok(false);
        }
        let mut taken: Vec<WriteBatch> = Vec::new();
        let mut bytes = 0;
        while let Some(next) = self.queue.front() {
            let next_bytes = next.approx_log_bytes();
            let held_by_snapshots = !next.snapshots.is_empty() && !taken.is_empty();
            let too_big = !taken.is_empty() && bytes + next_bytes > self.merge_bytes;
            if held_by_snapshots || too_big || taken.len() >= MAX_MERGED_BATCHES {
                break;
            }
            bytes += next_bytes;
            taken.extend(self.queue.pop_front());
        }
        let last = taken.last().map_or(0, |b| b.ticket);
        let ticket = match taken.as_slice() {
            [one] if one.records.is_empty() => None,
            [one] => Some(self.wal.submit(&one.records)?),
            many => {
                let records: Vec<LogRecord> = many
                    .iter()
                    .flat_map(|b| b.records.iter().cloned())
                    .collect();
                if records.is_empty() {
                    None
                } else {
                    Some(self.wal.submit(&records)?)
                }
            }
        };
        if ticket.is_some() {
            self.wal_in_flight += 1;
        }
        self.in_flight.push_back((ticket, last));
        Ok(true)
    }
}

/// The snapshot thread of a core: writes each job's snapshots into `store` (each fsynced and
/// renamed into place; one no newer than the latest is skipped) and reports the job done on
/// `done`. A failure stops the process: the batch waiting for it must never be acknowledged.
pub fn snapshot_thread(
    mut store: SnapshotStore,
    jobs: BridgeReceiver<Vec<SnapshotWrite>>,
    done: BridgeSender<()>,
    core: usize,
) {
    while let Some(job) = jobs.recv_blocking() {
        for s in &job {
            let meta = s.snapshot.meta;
            match store.write(s.group, meta.index, meta.term, &s.snapshot.data) {
                Ok(_) | Err(SnapshotError::NotNewer { .. }) => {}
                Err(e) => super::server::storage_failed(core, &DiskError::Snapshot(e)),
            }
        }
        if done.send_blocking(()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use shardcore_io::bridge;
    use shardcore_storage::{WalConfig, WalEntry};

    use super::*;
    use crate::raft::{Snapshot, SnapshotMeta};

    fn entries(group: GroupId, from: u64, count: u64) -> LogRecord {
        LogRecord::Entries {
            group,
            entries: (from..from + count)
                .map(|index| WalEntry {
                    index,
                    term: 1,
                    kind: 0,
                    data: Bytes::from(vec![index as u8; 64]),
                })
                .collect(),
        }
    }

    fn batch(ticket: u64, records: Vec<LogRecord>, snapshots: Vec<SnapshotWrite>) -> WriteBatch {
        WriteBatch {
            ticket,
            snapshots,
            records,
        }
    }

    /// Drives until `done` says so, bounded at 10 s; returns every durable ticket reported.
    fn drive_until(
        log: &mut LogWriter,
        reported: &mut Vec<u64>,
        done: impl Fn(&LogWriter, &[u64]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(log, reported) {
            assert!(Instant::now() < deadline, "stuck; reported {reported:?}");
            let durable = log.drive().expect("drive");
            reported.extend(durable.ticket);
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Batches merge into writes and are reported in ticket order (a batch with nothing to
    /// write is reported only after the writes before it); a batch with snapshots holds itself
    /// and everything behind it until its snapshots are written, and its files are on disk
    /// before its records are reported durable.
    #[test]
    fn batches_are_reported_in_order_and_wait_for_their_snapshots() {
        let dir = std::env::temp_dir().join(format!("shardcore-logwriter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open(&dir.join("wal"), WalConfig::new()).expect("wal");
        let store = SnapshotStore::open(dir.join("snap")).expect("snapshots");
        let (jobs_tx, jobs_rx) = bridge::channel(1);
        let (done_tx, done_rx) = bridge::channel::<()>(1);
        let mut log = LogWriter::new(wal, 1 << 20, jobs_tx);
        let mut reported = Vec::new();

        log.push(batch(1, vec![entries(1, 1, 3)], Vec::new()));
        log.push(batch(2, Vec::new(), Vec::new()));
        log.push(batch(3, vec![entries(2, 1, 2)], Vec::new()));
        drive_until(&mut log, &mut reported, |log, _| log.is_idle());
        assert!(reported.windows(2).all(|w| w[0] < w[1]), "{reported:?}");
        assert_eq!(reported.last(), Some(&3));

        // Batch 4 carries a snapshot of group 1; batch 5 must wait behind it.
        let snapshot = SnapshotWrite {
            group: 1,
            snapshot: Snapshot {
                meta: SnapshotMeta { index: 3, term: 1 },
                data: Bytes::from_static(b"state at 3"),
            },
        };
        let compact = LogRecord::Compact {
            group: 1,
            index: 3,
            term: 1,
        };
        log.push(batch(4, vec![compact], vec![snapshot]));
        log.push(batch(5, vec![entries(2, 3, 1)], Vec::new()));
        let durable = log.drive().expect("drive");
        assert_eq!(durable.ticket, None, "nothing may pass the snapshot");
        assert!(!log.is_idle());
        // The snapshot thread writes it; until it says so, nothing moves.
        let writer = std::thread::spawn(move || snapshot_thread(store, jobs_rx, done_tx, 0));
        let deadline = Instant::now() + Duration::from_secs(10);
        while done_rx.try_recv().is_err() {
            assert!(
                Instant::now() < deadline,
                "the snapshot thread never answered"
            );
            assert_eq!(log.drive().expect("drive").ticket, None);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(dir.join("snap").read_dir().expect("snap dir").count() > 0);
        log.snapshots_written();
        drive_until(&mut log, &mut reported, |log, _| log.is_idle());
        // 4 and 5 went in one write (reported by its last ticket), after 3.
        assert_eq!(&reported[reported.len() - 2..], &[3, 5][..], "{reported:?}");
        drop(log);
        writer.join().expect("snapshot thread");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
