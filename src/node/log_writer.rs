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
//! would stall the executor for milliseconds to seconds, so a **snapshot thread** owns the
//! core's [`SnapshotStore`] and writes them in order, up to [`MAX_SNAPSHOT_JOBS`] queued. What
//! must wait for a snapshot file, and nothing more:
//! - a snapshot the replica took itself: only its `Compact` record (the log may drop the entries
//!   it covers once the file is durable). The record is taken out of its batch, which goes on
//!   at once, and is logged with the first write after the file is durable. Before this, every
//!   group of the core waited while a large snapshot was written: a 100 MB shard's snapshot
//!   stalled every request on the core for hundreds of milliseconds;
//! - a snapshot from the leader, which replaces the group's log (the batch truncates it): the
//!   batch is held at the head of the queue, with everything behind it, until the file (and
//!   every snapshot queued before it) is durable. These are rare (a lagging follower).
//!
//! So a compaction record is never durable before the snapshot it relies on. A group whose
//! snapshot is being written is not asked for another one when the log finds it pinning the
//! oldest segment (its compaction is on its way).
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

use super::core::{approx_entry_bytes, approx_record_bytes, SnapshotWrite, WriteBatch};
use super::disk::DiskError;
use crate::raft::GroupId;

/// The most batches merged into one log write (besides the byte bound).
const MAX_MERGED_BATCHES: usize = 256;

/// The most snapshot jobs queued for the snapshot thread (the bridge's capacity). Why 4: a
/// core snapshots a group when its log passes a bound or the log asks, rarely more than a few
/// at once; each job holds only references to the snapshots' bytes. A batch whose snapshots
/// find the queue full waits for room.
pub const MAX_SNAPSHOT_JOBS: usize = 4;

/// A job at the snapshot thread: what waits for it.
struct SnapshotJob {
    /// Its groups.
    groups: Vec<GroupId>,
    /// The `Compact` records taken out of their batch, logged once the files are durable.
    deferred: Vec<LogRecord>,
    /// A batch held at the head of the queue until the files are durable.
    holds: Option<u64>,
}

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
    /// every earlier write is) and the last core ticket the write completes (`None` for the
    /// first parts of a batch split over several writes).
    in_flight: VecDeque<(Option<Ticket>, Option<u64>)>,
    /// WAL tickets among `in_flight` (at most [`MAX_IN_FLIGHT_BATCHES`]).
    wal_in_flight: usize,
    merge_bytes: usize,
    /// The snapshot thread's job queue; a job is one batch's snapshots.
    snapshot_jobs: BridgeSender<Vec<SnapshotWrite>>,
    /// Jobs sent and not yet reported done, in order (the thread serves them in order).
    jobs: VecDeque<SnapshotJob>,
    /// The core ticket of the head batch whose snapshots were sent.
    sent_for: Option<u64>,
    /// The core ticket of a held batch whose snapshots are durable.
    released: Option<u64>,
    /// `Compact` records whose snapshots are durable, for the next write.
    compacts_due: Vec<LogRecord>,
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
            jobs: VecDeque::new(),
            sent_for: None,
            released: None,
            compacts_due: Vec::new(),
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

    /// The snapshot thread made its oldest job's snapshots durable.
    pub fn snapshots_written(&mut self) {
        let Some(job) = self.jobs.pop_front() else {
            return;
        };
        self.compacts_due.extend(job.deferred);
        if job.holds.is_some() {
            self.released = job.holds;
        }
    }

    /// True when nothing is queued or in flight (a deferred `Compact` record may still wait
    /// for the next write).
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty() && self.jobs.is_empty()
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
                            let snapshotting = self.jobs.iter().any(|j| j.groups.contains(&group))
                                || self.compacts_due.iter().any(|r| r.group() == group);
                            if !snapshotting && !durable.pinning.contains(&group) {
                                durable.pinning.push(group);
                            }
                        }
                    }
                }
            }
            if let Some(last) = last {
                durable.ticket = Some(*last);
            }
            self.in_flight.pop_front();
        }
        Ok(())
    }

    /// Sends the head batch's snapshots to the snapshot thread (once), taking the `Compact`
    /// records of snapshots the replica took itself out of the batch. False when the batch must
    /// wait: the job queue is full, or its snapshot replaces a log and is not durable yet.
    fn start_snapshots(&mut self) -> Result<bool, DiskError> {
        let Some(head) = self.queue.front_mut() else {
            return Ok(true);
        };
        if head.snapshots.is_empty() {
            return Ok(true);
        }
        let holds = head.snapshots.iter().any(|s| s.replaces_log);
        if self.sent_for != Some(head.ticket) {
            match self.snapshot_jobs.try_send(head.snapshots.clone()) {
                Ok(()) => {}
                Err(shardcore_io::TrySendError::Full(_)) => return Ok(false),
                Err(shardcore_io::TrySendError::Closed(_)) => {
                    return Err(DiskError::Inconsistent(
                        "the snapshot thread is gone".to_string(),
                    ))
                }
            }
            let mut deferred = Vec::new();
            if !holds {
                let snapshots = &head.snapshots;
                let covered = |r: &LogRecord| {
                    matches!(r, LogRecord::Compact { group, index, .. }
                        if snapshots.iter().any(|s| s.group == *group
                            && s.snapshot.meta.index == *index))
                };
                let (compacts, rest): (Vec<LogRecord>, Vec<LogRecord>) =
                    std::mem::take(&mut head.records)
                        .into_iter()
                        .partition(covered);
                deferred = compacts;
                head.records = rest;
            }
            self.jobs.push_back(SnapshotJob {
                groups: head.snapshots.iter().map(|s| s.group).collect(),
                deferred,
                holds: holds.then_some(head.ticket),
            });
            self.sent_for = Some(head.ticket);
        }
        Ok(!holds || self.released == Some(head.ticket))
    }

    /// Submits the next write if there is one and room for it: the `Compact` records whose
    /// snapshots became durable, then every queued batch up to the byte bound, stopping before
    /// a later batch that carries snapshots (it is the head next time). False when nothing was
    /// submitted.
    fn submit_next(&mut self) -> Result<bool, DiskError> {
        if self.wal_in_flight >= MAX_IN_FLIGHT_BATCHES || self.queue.is_empty() {
            return Ok(false);
        }
        if !self.start_snapshots()? {
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
        // One batch alone is written from its own records; several are moved (not copied)
        // into one list after the Compact records that became due.
        let due = std::mem::take(&mut self.compacts_due);
        let records = match taken.as_mut_slice() {
            [one] if due.is_empty() => std::mem::take(&mut one.records),
            _ => due
                .into_iter()
                .chain(taken.into_iter().flat_map(|b| b.records))
                .collect(),
        };
        // A batch can be larger than one write may be (one turn's Ready holds every entry the
        // group received, pipelined Appends included, and the WAL refuses a write larger than a
        // segment, which would stop the node): its records past the bound go in the next
        // write, as a batch of the same ticket, which is reported only when that one is.
        let (records, rest) = split_records(records, self.merge_bytes);
        let reports = if rest.is_empty() {
            Some(last)
        } else {
            self.queue.push_front(WriteBatch {
                ticket: last,
                snapshots: Vec::new(),
                records: rest,
            });
            None
        };
        let ticket = if records.is_empty() {
            None
        } else {
            Some(self.wal.submit(&records)?)
        };
        if ticket.is_some() {
            self.wal_in_flight += 1;
        }
        self.in_flight.push_back((ticket, reports));
        Ok(true)
    }
}

/// Splits `records` where they pass `budget` bytes (by [`approx_record_bytes`]), cutting an
/// `Entries` record between entries: the first part holds at least one record (or entry), and
/// the order of everything is kept. The second part is empty when all fit.
fn split_records(records: Vec<LogRecord>, budget: usize) -> (Vec<LogRecord>, Vec<LogRecord>) {
    if records.iter().map(approx_record_bytes).sum::<usize>() <= budget {
        return (records, Vec::new());
    }
    let mut first = Vec::new();
    let mut bytes = 0;
    let mut records = records.into_iter();
    for record in records.by_ref() {
        let record_bytes = approx_record_bytes(&record);
        if bytes + record_bytes <= budget || first.is_empty() && !is_entries(&record) {
            bytes += record_bytes;
            first.push(record);
            continue;
        }
        let mut rest = Vec::new();
        match record {
            LogRecord::Entries { group, entries } => {
                let mut fitting = Vec::new();
                let mut later = entries.into_iter();
                for entry in later.by_ref() {
                    let entry_bytes = approx_entry_bytes(&entry);
                    let room =
                        bytes + entry_bytes <= budget || first.is_empty() && fitting.is_empty();
                    if !room {
                        rest.push(LogRecord::Entries {
                            group,
                            entries: std::iter::once(entry).chain(later).collect(),
                        });
                        break;
                    }
                    bytes += entry_bytes;
                    fitting.push(entry);
                }
                if !fitting.is_empty() {
                    first.push(LogRecord::Entries {
                        group,
                        entries: fitting,
                    });
                }
            }
            other => rest.push(other),
        }
        rest.extend(records);
        return (first, rest);
    }
    (first, Vec::new())
}

fn is_entries(record: &LogRecord) -> bool {
    matches!(record, LogRecord::Entries { .. })
}

/// How much lower the snapshot thread's scheduling priority is than the executors' (a nice
/// value). Why 10: a large snapshot is a long copy into the page cache; at the same priority it
/// takes its full share of the CPUs from the executors serving requests (a 100 MB shard moving
/// in made other shards' p99 three times worse). At +10 the kernel gives it about a tenth of a
/// contended CPU, and all of an idle one: it still finishes under load, only later.
pub const SNAPSHOT_THREAD_NICE: i32 = 10;

/// The snapshot thread of a core: writes each job's snapshots into `store` (each fsynced and
/// renamed into place; one no newer than the latest is skipped) and reports the job done on
/// `done`, at [`SNAPSHOT_THREAD_NICE`]. A failure stops the process: nothing that waits for
/// the files may be logged or acknowledged.
pub fn snapshot_thread(
    mut store: SnapshotStore,
    jobs: BridgeReceiver<Vec<SnapshotWrite>>,
    done: BridgeSender<()>,
    core: usize,
) {
    // SAFETY: plain syscalls; on Linux a thread id names one thread for setpriority. A failure
    // only leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, SNAPSHOT_THREAD_NICE);
    }
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

    fn open(
        dir: &std::path::Path,
    ) -> (LogWriter, SnapshotStore, BridgeReceiver<Vec<SnapshotWrite>>) {
        let _ = std::fs::remove_dir_all(dir);
        // Small segments: the test's files stay small (a 64 MiB default segment and its spare
        // would be left behind by a failed run).
        let config = WalConfig {
            segment_bytes: 1 << 20,
            ..WalConfig::new()
        };
        let (wal, _) = Wal::open(&dir.join("wal"), config).expect("wal");
        let store = SnapshotStore::open(dir.join("snap")).expect("snapshots");
        let (jobs_tx, jobs_rx) = bridge::channel(MAX_SNAPSHOT_JOBS);
        (LogWriter::new(wal, 1 << 20, jobs_tx), store, jobs_rx)
    }

    fn snapshot_of(group: GroupId, index: u64, replaces_log: bool) -> SnapshotWrite {
        SnapshotWrite {
            group,
            snapshot: Snapshot {
                meta: SnapshotMeta { index, term: 1 },
                data: Bytes::from_static(b"state"),
            },
            replaces_log,
        }
    }

    /// Waits (bounded) for the snapshot thread's next "done", driving the writer meanwhile;
    /// returns the tickets reported durable while waiting.
    fn await_snapshot_done(log: &mut LogWriter, done: &BridgeReceiver<()>) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut reported = Vec::new();
        while done.try_recv().is_err() {
            assert!(
                Instant::now() < deadline,
                "the snapshot thread never answered"
            );
            reported.extend(log.drive().expect("drive").ticket);
            std::thread::sleep(Duration::from_millis(1));
        }
        log.snapshots_written();
        reported
    }

    fn entry_indexes(records: &[LogRecord]) -> Vec<(GroupId, u64)> {
        records
            .iter()
            .flat_map(|r| match r {
                LogRecord::Entries { group, entries } => {
                    entries.iter().map(|e| (*group, e.index)).collect()
                }
                other => vec![(other.group(), 0)],
            })
            .collect()
    }

    /// Records past the budget are cut between entries, keeping their order; the first part
    /// always holds something, even one entry over the budget; records that fit stay whole.
    #[test]
    fn records_split_between_entries_in_order() {
        let hard_state = LogRecord::HardState {
            group: 1,
            state: shardcore_storage::HardState {
                term: 1,
                vote: 1,
                commit: 4,
            },
        };
        let records = vec![entries(1, 1, 10), hard_state, entries(2, 1, 3)];
        let all = entry_indexes(&records);
        let per_entry = approx_entry_bytes(&WalEntry {
            index: 1,
            term: 1,
            kind: 0,
            data: Bytes::from(vec![0u8; 64]),
        });
        for budget in [0, 1, per_entry, 3 * per_entry + 1, 12 * per_entry, 1 << 20] {
            let (first, rest) = split_records(records.clone(), budget);
            assert!(!first.is_empty(), "budget {budget}");
            let first_bytes: usize = first.iter().map(approx_record_bytes).sum();
            assert!(
                first_bytes <= budget.max(per_entry),
                "budget {budget}: {first_bytes}"
            );
            let mut joined = entry_indexes(&first);
            joined.extend(entry_indexes(&rest));
            assert_eq!(joined, all, "budget {budget}");
            assert_eq!(rest.is_empty(), budget >= 14 * per_entry, "budget {budget}");
        }
    }

    /// A batch larger than one write may be goes in several writes (the WAL would refuse it
    /// whole, stopping the node) and is reported once, when its last part is durable.
    #[test]
    fn a_batch_larger_than_a_write_goes_in_parts() {
        let dir =
            std::env::temp_dir().join(format!("shardcore-logwriter-big-{}", std::process::id()));
        let (mut log, _store, _jobs) = open(&dir);
        let big = |from: u64| LogRecord::Entries {
            group: 1,
            entries: (from..from + 3)
                .map(|index| WalEntry {
                    index,
                    term: 1,
                    kind: 0,
                    data: Bytes::from(vec![7u8; 400 << 10]),
                })
                .collect(),
        };
        log.merge_bytes = 512 << 10;
        log.push(batch(1, vec![big(1)], Vec::new()));
        log.push(batch(2, vec![big(4)], Vec::new()));
        let mut reported = Vec::new();
        drive_until(&mut log, &mut reported, |log, _| log.is_idle());
        assert_eq!(reported.last(), Some(&2), "{reported:?}");
        assert!(reported.windows(2).all(|w| w[0] < w[1]), "{reported:?}");
        assert_eq!(log.wal.last_index(1), Some(6));
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Batches merge into writes and are reported in ticket order (a batch with nothing to
    /// write is reported only after the writes before it); a batch with snapshots holds itself
    /// and everything behind it until its snapshots are written, and its files are on disk
    /// before its records are reported durable.
    #[test]
    fn batches_are_reported_in_order_and_wait_for_their_snapshots() {
        let dir = std::env::temp_dir().join(format!("shardcore-logwriter-{}", std::process::id()));
        let (mut log, store, jobs_rx) = open(&dir);
        let mut reported = Vec::new();

        log.push(batch(1, vec![entries(1, 1, 3)], Vec::new()));
        log.push(batch(2, Vec::new(), Vec::new()));
        log.push(batch(3, vec![entries(2, 1, 2)], Vec::new()));
        drive_until(&mut log, &mut reported, |log, _| log.is_idle());
        assert!(reported.windows(2).all(|w| w[0] < w[1]), "{reported:?}");
        assert_eq!(reported.last(), Some(&3));

        // Batch 4 carries a snapshot of group 1 from the leader (it replaces the log); batch 5
        // must wait behind it. No snapshot thread runs yet, so nothing may move.
        let truncate = LogRecord::Truncate {
            group: 1,
            from_index: 4,
        };
        let compact = LogRecord::Compact {
            group: 1,
            index: 3,
            term: 1,
        };
        log.push(batch(
            4,
            vec![truncate, compact],
            vec![snapshot_of(1, 3, true)],
        ));
        log.push(batch(5, vec![entries(2, 3, 1)], Vec::new()));
        for _ in 0..20 {
            assert_eq!(
                log.drive().expect("drive").ticket,
                None,
                "nothing may pass the snapshot"
            );
        }
        let (done_tx, done_rx) = bridge::channel::<()>(MAX_SNAPSHOT_JOBS);
        let writer = std::thread::spawn(move || snapshot_thread(store, jobs_rx, done_tx, 0));
        assert_eq!(await_snapshot_done(&mut log, &done_rx), Vec::<u64>::new());
        assert!(dir.join("snap").read_dir().expect("snap dir").count() > 0);
        drive_until(&mut log, &mut reported, |log, _| log.is_idle());
        // 4 and 5 went in one write (reported by its last ticket), after 3.
        assert_eq!(&reported[reported.len() - 2..], &[3, 5][..], "{reported:?}");
        assert_eq!(log.wal.compacted(1), Some((3, 1)));

        // Batch 6 carries a snapshot group 2 took itself: the batch and the ones behind it go
        // at once, without its Compact record, which is logged with the first write after the
        // file is durable.
        let compact = LogRecord::Compact {
            group: 2,
            index: 2,
            term: 1,
        };
        log.push(batch(
            6,
            vec![entries(1, 4, 1), compact],
            vec![snapshot_of(2, 2, false)],
        ));
        log.push(batch(7, vec![entries(1, 5, 1)], Vec::new()));
        reported.extend(await_snapshot_done(&mut log, &done_rx));
        drive_until(&mut log, &mut reported, |log, _| log.is_idle());
        assert_eq!(reported.last(), Some(&7), "{reported:?}");
        assert_eq!(
            log.wal.compacted(2),
            None,
            "the Compact waits for the next write"
        );
        log.push(batch(8, vec![entries(1, 6, 1)], Vec::new()));
        drive_until(&mut log, &mut reported, |log, _| log.is_idle());
        assert_eq!(log.wal.compacted(2), Some((2, 1)));
        assert_eq!(log.wal.last_index(1), Some(6));
        drop(log);
        writer.join().expect("snapshot thread");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
