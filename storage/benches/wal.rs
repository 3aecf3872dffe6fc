//! The WAL's append and recovery speed against the device's, in one run:
//! `cargo bench -p shardcore-storage --bench wal`.
//!
//! Prints, for 128 B, 1 KiB and 16 KiB records at batch sizes 1, 16, 64, 256 and 1024:
//! - **WAL**: appends/s and MB/s of payload through `Wal::submit` / `Wal::wait` with two
//!   batches in flight ([`PIPELINE_DEPTH`]; one `fdatasync` per batch): the next batch is
//!   encoded while the last one's write and `fdatasync` run, and its own write and
//!   `fdatasync` go out beside them (the WAL's overlapping writes), as the node's log thread
//!   does when it has the next batch ready (under load), a batch's records spread over 8 groups,
//!   in **steady state**: one WAL serves the whole table,
//!   run as a node runs it: with `max_segments` [`KEEP_SEGMENTS`], the groups
//!   `Wal::groups_to_snapshot` names compact (as after a snapshot) to their last index in the
//!   next batch, so old segments are deleted as new ones fill and their files are recycled.
//!   It is warmed up first, until deleted segments wait for reuse, so that the table measures
//!   a log that has been running, not the first segments of a new one (those are zero-written
//!   ahead of use, which a long-running node does only when its pool of recycled files runs
//!   dry). The `rotations` column says how many rotations a cell made and how many went into
//!   recycled files;
//! - **raw**: the same payload bytes per write (rounded up to 4096) as plain sequential
//!   `O_DIRECT` writes from an aligned buffer into an already-written file, each linked to an
//!   `fdatasync` through io_uring, no format, one at a time: what the device gives;
//! - **raw x2**: the same, with two write + `fdatasync` chains in flight at once (the WAL's
//!   depth), so that the WAL's overlap is also compared with the device at that depth;
//! - **ratio**: WAL MB/s over raw MB/s (the target: >= 80% at batch >= 64), and over
//!   raw x2 MB/s; and >= 1,000,000 appends/s of 128 B records at batch 1024.
//!
//! Then recovery: a 1 GiB log written, the page cache dropped (best effort; the output says
//! whether it was), and the time to reopen it; target >= 1 GB/s. The same bytes are also
//! scanned by `record::scan` straight from the files, the format's own decode speed.
//!
//! `cargo bench -p shardcore-storage --bench wal -- appends` runs only the table, `-- recovery`
//! only recovery; `WAL_BENCH_CELLS=16384x64,128x1024` limits the table to those cells (record
//! bytes x batch records).
//!
//! Numbers only, never pass or fail (DESIGN.md, tests layer 6). Files go to a temporary directory
//! under cargo's target dir (`CARGO_TARGET_TMPDIR`; `SHARDCORE_BENCH_DIR` overrides), which is on
//! a real disk unless the target dir is on tmpfs (the output warns), and are removed at the end.

use std::alloc::{self, Layout};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};
use shardcore_storage::record::{encode_record, scan, ReadOutcome, RecordKind, SegmentState};

/// Record sizes measured, in bytes.
const RECORD_BYTES: [usize; 3] = [128, 1024, 16 << 10];
/// Batch sizes measured, in records per append.
const BATCH_RECORDS: [usize; 5] = [1, 16, 64, 256, 1024];
/// The groups a batch's records are spread over.
const GROUPS: u64 = 8;
/// How long one round of a cell measures, at most. Why 1 s: 15 cells, measured [`ROUNDS`] times
/// each for the WAL and the raw baseline, stay near a minute and a half, and a second holds
/// hundreds of `fdatasync`s even on a slow disk.
const CELL_TIME: Duration = Duration::from_secs(1);
/// Rounds per cell; the best is reported. Why 3: this is a shared machine (2 cores, other
/// builds running), and the best of three is stable where a single round is not.
const ROUNDS: usize = 3;
/// How many payload bytes one cell writes, at most: the fast cells stop here, not at the time.
const CELL_MAX_PAYLOAD_BYTES: usize = 256 << 20;
/// The fewest writes a cell makes, so that even 16 MiB writes average over a few.
const CELL_MIN_WRITES: usize = 4;
/// The raw baseline's file: written in full once before measuring, and then overwritten from the
/// start round and round, so that an `fdatasync` carries data only and no block allocation.
const RAW_FILE_BYTES: usize = 256 << 20;
/// `O_DIRECT` alignment of buffers, offsets and lengths.
const BLOCK_BYTES: usize = 4096;
/// The recovery log's size: 1 GiB.
const RECOVERY_LOG_BYTES: usize = 1 << 30;
/// The segments the steady-state WAL keeps before it asks groups to snapshot (its
/// `max_segments`). Why 4: a small log on disk, as a node that snapshots often keeps; the
/// number changes how often compaction runs, not what an append costs.
const KEEP_SEGMENTS: usize = 4;
/// Batches the WAL cells keep submitted at once. Why 2: the WAL's limit
/// (`MAX_IN_FLIGHT_BATCHES`), and all a log thread needs to encode one batch while the
/// other is written.
const PIPELINE_DEPTH: usize = 2;

fn main() {
    // `cargo bench` passes `--bench`; `--list` from a harness lists nothing.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let only = |part: &str| {
        let parts = ["appends", "recovery"];
        !args.iter().any(|a| parts.contains(&a.as_str())) || args.iter().any(|a| a == part)
    };
    let dir = bench_dir();
    println!(
        "shardcore-storage WAL benchmark; files in {}",
        dir.display()
    );
    println!("{}", describe_filesystem(&dir));
    if only("appends") {
        appends(&dir);
    }
    if only("recovery") {
        recovery(&dir);
    }
    let _ = fs::remove_dir_all(&dir);
}

/// The table: WAL against raw, cell by cell.
fn appends(dir: &Path) {
    let raw = RawBaseline::new(&dir.join("raw.dat")).expect("raw baseline file");
    let mut steady = wal::Steady::new(&dir.join("wal-steady"));
    println!(
        "WAL in steady state: one WAL for the whole table, 64 MiB segments, max_segments \
         {KEEP_SEGMENTS}; the groups it names for snapshotting compact to their last index in \
         the next batch, so full segments are deleted and their files recycled (warmed up \
         first: {} segments written, {} recycled files waiting). WAL cells pipelined: \
         Wal::submit / Wal::wait with {PIPELINE_DEPTH} batches in flight, the next encoded \
         while the last is written and synced, its write + fdatasync beside the last's. Raw: \
         one write + fdatasync at a time into an already-written file; raw x2: two at a time.",
        steady.segments_written(),
        steady.recycled_waiting()
    );
    println!();
    println!(
        "{:>8} {:>6} | {:>12} {:>10} | {:>12} {:>10} | {:>6} | {:>10} {:>6} | rotations (recycled)",
        "record",
        "batch",
        "WAL app/s",
        "WAL MB/s",
        "raw writes/s",
        "raw MB/s",
        "ratio",
        "x2 MB/s",
        "ratio"
    );
    let cells = selected_cells();
    for record_bytes in RECORD_BYTES {
        for batch_records in BATCH_RECORDS {
            if !cells.is_empty() && !cells.contains(&(record_bytes, batch_records)) {
                continue;
            }
            // WAL and raw alternate, so that a burst of load from elsewhere on the machine
            // hits both; each side keeps its best round.
            let mut best: Option<(Cell, Cell, Cell)> = None;
            let (mut rotations, mut recycled) = (0, 0);
            for _ in 0..ROUNDS {
                let raw_cell = raw
                    .measure(record_bytes, batch_records, 1)
                    .expect("raw cell");
                let wal_cell = steady.measure(record_bytes, batch_records);
                let raw2_cell = raw
                    .measure(record_bytes, batch_records, PIPELINE_DEPTH)
                    .expect("raw x2 cell");
                rotations += wal_cell.rotations;
                recycled += wal_cell.recycled;
                best = Some(match best {
                    None => (wal_cell, raw_cell, raw2_cell),
                    Some((w, r, r2)) => {
                        (w.faster(wal_cell), r.faster(raw_cell), r2.faster(raw2_cell))
                    }
                });
            }
            let (wal_cell, raw_cell, raw2_cell) = best.expect("at least one round");
            print_row(record_bytes, batch_records, wal_cell, raw_cell);
            print!(
                " | {:>10.1} {:>5.0}%",
                raw2_cell.megabytes_per_second(),
                100.0 * wal_cell.megabytes_per_second() / raw2_cell.megabytes_per_second()
            );
            println!(" | {rotations} ({recycled})");
            io::stdout().flush().ok();
        }
    }
    drop(steady);
    drop(raw);
    println!();
}

/// The cells named by `WAL_BENCH_CELLS` (e.g. `16384x64,16384x1024`: record bytes x batch
/// records), to look at a few cells closely (under `perf`, say); empty: every cell.
fn selected_cells() -> Vec<(usize, usize)> {
    let Ok(list) = std::env::var("WAL_BENCH_CELLS") else {
        return Vec::new();
    };
    list.split(',')
        .filter(|cell| !cell.trim().is_empty())
        .map(|cell| {
            let parsed = cell
                .trim()
                .split_once('x')
                .and_then(|(record, batch)| Some((record.parse().ok()?, batch.parse().ok()?)));
            parsed.unwrap_or_else(|| {
                panic!("WAL_BENCH_CELLS: {cell:?} is not RECORDxBATCH (e.g. 16384x64)")
            })
        })
        .collect()
}

/// One measured cell.
#[derive(Clone, Copy, Debug)]
struct Cell {
    /// Appends (records) for the WAL, writes for the raw baseline.
    operations: usize,
    payload_bytes: usize,
    elapsed: Duration,
    /// WAL only: segment rotations, and those into recycled files.
    rotations: usize,
    recycled: usize,
}

impl Cell {
    fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    fn faster(self, other: Cell) -> Cell {
        if other.megabytes_per_second() > self.megabytes_per_second() {
            other
        } else {
            self
        }
    }

    fn megabytes_per_second(&self) -> f64 {
        self.payload_bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

fn print_row(record_bytes: usize, batch_records: usize, wal: Cell, raw: Cell) {
    print!(
        "{:>8} {:>6} | {:>12.0} {:>10.1} | {:>12.0} {:>10.1} | {:>5.0}%",
        size_name(record_bytes),
        batch_records,
        wal.per_second(),
        wal.megabytes_per_second(),
        raw.per_second(),
        raw.megabytes_per_second(),
        100.0 * wal.megabytes_per_second() / raw.megabytes_per_second()
    );
}

fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// The raw baseline: O_DIRECT writes, each linked to an fdatasync, through io_uring.
struct RawBaseline {
    file: File,
    path: PathBuf,
    ring: IoUring,
    buffer: AlignedBuffer,
}

impl RawBaseline {
    fn new(path: &Path) -> io::Result<RawBaseline> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        let largest_write_bytes = round_up(RECORD_BYTES[2] * BATCH_RECORDS[4]);
        let mut buffer = AlignedBuffer::new(largest_write_bytes);
        // Not zeros: a device or file system that special-cases zero blocks must not flatter
        // the baseline.
        for (i, byte) in buffer.as_mut_slice().iter_mut().enumerate() {
            *byte = (i % 251) as u8 + 1;
        }
        let mut written_bytes = 0;
        while written_bytes < RAW_FILE_BYTES {
            let piece =
                &buffer.as_slice()[..largest_write_bytes.min(RAW_FILE_BYTES - written_bytes)];
            std::os::unix::fs::FileExt::write_all_at(&file, piece, written_bytes as u64)?;
            written_bytes += piece.len();
        }
        file.sync_all()?;
        Ok(RawBaseline {
            file,
            path: path.to_path_buf(),
            ring: IoUring::new(8)?,
            buffer,
        })
    }

    /// Writes of one cell's size, each linked to an fdatasync, `depth` of them in flight at
    /// once (at consecutive offsets, so no block is in two writes).
    fn measure(&self, record_bytes: usize, batch_records: usize, depth: usize) -> io::Result<Cell> {
        let payload_bytes = record_bytes * batch_records;
        let write_bytes = round_up(payload_bytes);
        let mut cell = Cell {
            operations: 0,
            payload_bytes: 0,
            elapsed: Duration::ZERO,
            rotations: 0,
            recycled: 0,
        };
        let mut offset = 0;
        // Completions outstanding per chain (a write and its fdatasync each), by chain id.
        let mut in_flight: Vec<u64> = Vec::with_capacity(depth);
        let mut next_chain = 0u64;
        let start = Instant::now();
        loop {
            let more = cell.operations + in_flight.len() < CELL_MIN_WRITES
                || (start.elapsed() < CELL_TIME && cell.payload_bytes < CELL_MAX_PAYLOAD_BYTES);
            if more && in_flight.len() < depth {
                if offset + write_bytes > RAW_FILE_BYTES {
                    offset = 0;
                }
                self.submit_synced(next_chain, offset, write_bytes)?;
                in_flight.push(next_chain);
                next_chain += 1;
                offset += write_bytes;
                continue;
            }
            if in_flight.is_empty() {
                break;
            }
            let chain = self.wait_one(write_bytes)?;
            in_flight.retain(|&c| c != chain);
            cell.operations += 1;
            cell.payload_bytes += payload_bytes;
        }
        cell.elapsed = start.elapsed();
        Ok(cell)
    }

    /// Submits one write of `length_bytes` at `offset`, linked to an fdatasync, as `chain`.
    fn submit_synced(&self, chain: u64, offset: usize, length_bytes: usize) -> io::Result<()> {
        let fd = types::Fd(self.file.as_raw_fd());
        let write = opcode::Write::new(fd, self.buffer.as_slice().as_ptr(), length_bytes as u32)
            .offset(offset as u64)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(chain << 1);
        let fsync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(chain << 1 | 1);
        // SAFETY: the buffer outlives the operations: `measure` waits for every chain it
        // submitted before it returns, and `self` (which owns the buffer) outlives it. The
        // kernel only reads the buffer, so chains in flight at once may share it.
        unsafe {
            // The ring is used by one thread; `submission_shared` avoids needing `&mut self`.
            let mut queue = self.ring.submission_shared();
            queue.push(&write).map_err(io::Error::other)?;
            queue.push(&fsync).map_err(io::Error::other)?;
        }
        self.ring.submit()?;
        Ok(())
    }

    /// Waits until some chain's fdatasync completes (its write completed before it); returns
    /// the chain.
    fn wait_one(&self, length_bytes: usize) -> io::Result<u64> {
        loop {
            // SAFETY: as above, one thread uses the ring.
            for completion in unsafe { self.ring.completion_shared() } {
                let result = completion.result();
                if result < 0 {
                    return Err(io::Error::from_raw_os_error(-result));
                }
                let chain = completion.user_data() >> 1;
                if completion.user_data() & 1 == 0 {
                    if result as usize != length_bytes {
                        let error = io::Error::new(io::ErrorKind::WriteZero, "short write");
                        return Err(error);
                    }
                } else {
                    return Ok(chain);
                }
            }
            self.ring.submit_and_wait(1)?;
        }
    }
}

impl Drop for RawBaseline {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A zeroed buffer aligned to [`BLOCK_BYTES`], as O_DIRECT needs.
struct AlignedBuffer {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuffer {
    fn new(length_bytes: usize) -> AlignedBuffer {
        let layout = Layout::from_size_align(length_bytes, BLOCK_BYTES).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        AlignedBuffer { ptr, layout }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `layout.size()` initialised bytes while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

fn round_up(bytes: usize) -> usize {
    bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// The WAL side of the table and the recovery log.
mod wal {
    use super::*;
    use bytes::Bytes;
    use shardcore_storage::wal::{AppendStats, LogRecord, Ticket, Wal, WalConfig, WalEntry};
    use std::collections::VecDeque;

    /// The steady-state WAL: one for the whole table, compacting as a node does.
    pub struct Steady {
        dir: PathBuf,
        wal: Option<Wal>,
        segments_written: usize,
    }

    impl Steady {
        /// Opens a fresh WAL in `dir` and writes 16 KiB entries until compaction has deleted
        /// segments and their files wait for reuse.
        pub fn new(dir: &Path) -> Steady {
            let _ = fs::remove_dir_all(dir);
            let config = WalConfig {
                max_segments: KEEP_SEGMENTS,
                ..WalConfig::new()
            };
            let (wal, _) = Wal::open(dir, config).expect("open a fresh WAL");
            let mut steady = Steady {
                dir: dir.to_path_buf(),
                wal: Some(wal),
                segments_written: 1,
            };
            let mut batches = Batches::new(steady.wal(), RECORD_BYTES[2], 256);
            while steady.wal().recycled_segments() < 2 {
                steady.append(&mut batches);
            }
            steady
        }

        fn wal(&mut self) -> &mut Wal {
            self.wal.as_mut().expect("open")
        }

        /// Segments the WAL has opened so far.
        pub fn segments_written(&self) -> usize {
            self.segments_written
        }

        /// Deleted segments waiting for reuse now.
        pub fn recycled_waiting(&self) -> usize {
            self.wal.as_ref().map_or(0, Wal::recycled_segments)
        }

        /// Appends the next batch, with a compaction of every group the WAL asks to snapshot
        /// (to its last index before this batch: the snapshot a node would take now).
        fn append(&mut self, batches: &mut Batches) -> AppendStats {
            let ticket = self.submit(batches);
            let stats = self.wal().wait(ticket).expect("append");
            self.segments_written += usize::from(stats.rotated);
            stats
        }

        /// Submits the next batch, as `append`, without waiting for it.
        fn submit(&mut self, batches: &mut Batches) -> Ticket {
            let wal = self.wal.as_mut().expect("open");
            let snapshot = wal.groups_to_snapshot();
            let ticket = if snapshot.is_empty() {
                wal.submit(batches.next())
            } else {
                let mut batch: Vec<LogRecord> = snapshot
                    .iter()
                    .filter_map(|group| {
                        let index = wal.last_index(*group)?;
                        let term = wal.term(*group, index)?;
                        Some(LogRecord::Compact {
                            group: *group,
                            index,
                            term,
                        })
                    })
                    .collect();
                batch.extend_from_slice(batches.next());
                wal.submit(&batch)
            };
            ticket.expect("submit")
        }

        /// Waits for the oldest batch in flight.
        fn wait(&mut self, in_flight: &mut VecDeque<Ticket>, cell: &mut Cell) {
            let ticket = in_flight.pop_front().expect("a batch in flight");
            let stats = self.wal().wait(ticket).expect("append");
            self.segments_written += usize::from(stats.rotated);
            cell.rotations += usize::from(stats.rotated);
            cell.recycled += usize::from(stats.recycled);
        }

        /// A cell measured through `Wal::submit` and `Wal::wait`, [`PIPELINE_DEPTH`] batches
        /// in flight.
        pub fn measure(&mut self, record_bytes: usize, batch_records: usize) -> Cell {
            let mut batches = Batches::new(self.wal(), record_bytes, batch_records);
            let mut cell = Cell {
                operations: 0,
                payload_bytes: 0,
                elapsed: Duration::ZERO,
                rotations: 0,
                recycled: 0,
            };
            let mut in_flight = VecDeque::with_capacity(PIPELINE_DEPTH);
            let start = Instant::now();
            while cell.operations < CELL_MIN_WRITES * batch_records
                || (start.elapsed() < CELL_TIME && cell.payload_bytes < CELL_MAX_PAYLOAD_BYTES)
            {
                if in_flight.len() == PIPELINE_DEPTH {
                    self.wait(&mut in_flight, &mut cell);
                }
                in_flight.push_back(self.submit(&mut batches));
                cell.operations += batch_records;
                cell.payload_bytes += batch_records * record_bytes;
            }
            while !in_flight.is_empty() {
                self.wait(&mut in_flight, &mut cell);
            }
            cell.elapsed = start.elapsed();
            cell
        }
    }

    impl Drop for Steady {
        fn drop(&mut self) {
            self.wal = None;
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// Writes a log of at least `log_bytes` of 16 KiB entries in appends of 4 MiB; returns
    /// the payload bytes written.
    pub fn write_log(dir: &Path, log_bytes: usize) -> usize {
        let (mut wal, _) = Wal::open(dir, WalConfig::new()).expect("open a fresh WAL");
        let record_bytes = RECORD_BYTES[2];
        let batch_records = 256;
        let mut batches = Batches::new(&wal, record_bytes, batch_records);
        let mut written_bytes = 0;
        while written_bytes < log_bytes {
            wal.append(batches.next()).expect("append");
            written_bytes += record_bytes * batch_records;
        }
        written_bytes
    }

    /// Times `Wal::open` over the log in `dir`; returns the time, the records recovered and
    /// the bytes of log scanned.
    pub fn time_open(dir: &Path) -> (Duration, u64, u64) {
        let start = Instant::now();
        let (wal, recovery) = Wal::open(dir, WalConfig::new()).expect("recover the log");
        let elapsed = start.elapsed();
        drop(wal);
        (elapsed, recovery.records, recovery.bytes)
    }

    /// Batches of `batch_records` entries of one size, spread round-robin over [`GROUPS`]
    /// groups, built once and renumbered for each append so that building them costs the
    /// measurement nothing but the new indexes.
    struct Batches {
        /// With 8 or more records per batch, one template holding every group; with fewer,
        /// one template per group, taken in turn.
        templates: Vec<Vec<LogRecord>>,
        turn: usize,
        next_index: [u64; GROUPS as usize],
    }

    impl Batches {
        /// Batches continuing each group's log in `wal`.
        fn new(wal: &Wal, record_bytes: usize, batch_records: usize) -> Batches {
            let data = Bytes::from(vec![0x5au8; record_bytes]);
            let entries = |count| {
                (0..count)
                    .map(|_| WalEntry {
                        index: 0,
                        term: 1,
                        kind: 0,
                        data: data.clone(),
                    })
                    .collect::<Vec<_>>()
            };
            let groups = GROUPS as usize;
            let templates = if batch_records >= groups {
                assert_eq!(batch_records % groups, 0, "whole batches per group");
                let per_group = batch_records / groups;
                vec![(0..GROUPS)
                    .map(|group| LogRecord::Entries {
                        group,
                        entries: entries(per_group),
                    })
                    .collect()]
            } else {
                (0..GROUPS)
                    .map(|group| {
                        vec![LogRecord::Entries {
                            group,
                            entries: entries(batch_records),
                        }]
                    })
                    .collect()
            };
            Batches {
                templates,
                turn: 0,
                next_index: std::array::from_fn(|group| {
                    wal.last_index(group as u64).map_or(1, |last| last + 1)
                }),
            }
        }

        fn next(&mut self) -> &[LogRecord] {
            let turn = self.turn;
            self.turn = (turn + 1) % self.templates.len();
            let batch = &mut self.templates[turn];
            for record in batch.iter_mut() {
                let LogRecord::Entries { group, entries } = record else {
                    unreachable!("only entries are built");
                };
                let next = &mut self.next_index[*group as usize];
                for entry in entries {
                    entry.index = *next;
                    *next += 1;
                }
            }
            batch
        }
    }
}

/// Recovery: `Wal::open` over a 1 GiB log, from a cold page cache; and, for reference, the
/// record format's own decode speed: `record::scan` over a 1 GiB set of plain record segments.
fn recovery(dir: &Path) {
    let log_dir = dir.join("recovery-wal");
    let payload_bytes = wal::write_log(&log_dir, RECOVERY_LOG_BYTES);
    let file_bytes = directory_bytes(&log_dir);
    let cache = drop_page_cache(&log_dir);
    let (elapsed, records, log_bytes) = wal::time_open(&log_dir);
    println!(
        "recovery: a WAL of {:.2} GiB of log ({:.2} GiB of entry data in 16 KiB entries; \
         {:.2} GiB of preallocated files)",
        log_bytes as f64 / (1u64 << 30) as f64,
        payload_bytes as f64 / (1u64 << 30) as f64,
        file_bytes as f64 / (1u64 << 30) as f64,
    );
    println!(
        "  Wal::open:    {:>6.2} GB/s of log ({:.2} s, {records} records, {cache})",
        log_bytes as f64 / elapsed.as_secs_f64() / 1e9,
        elapsed.as_secs_f64()
    );
    let _ = fs::remove_dir_all(&log_dir);

    let format_dir = dir.join("recovery-format");
    fs::create_dir_all(&format_dir).expect("recovery dir");
    write_format_log(&format_dir, RECOVERY_LOG_BYTES).expect("format log");
    let cache = drop_page_cache(&format_dir);
    let start = Instant::now();
    let (records, scanned_bytes) = scan_directory(&format_dir).expect("scan");
    let elapsed = start.elapsed();
    println!(
        "  record::scan: {:>6.2} GB/s ({:.2} s, {records} records, {cache}; read + check + \
         decode of plain record segments, for reference)",
        scanned_bytes as f64 / elapsed.as_secs_f64() / 1e9,
        elapsed.as_secs_f64(),
    );
    let _ = fs::remove_dir_all(&format_dir);
}

/// Segments of 64 MiB holding 16 KiB Entries records over 8 groups, as the WAL will write.
fn write_format_log(dir: &Path, log_bytes: usize) -> io::Result<()> {
    const SEGMENT_BYTES: usize = 64 << 20;
    let payload = vec![0x5au8; RECORD_BYTES[2]];
    let mut segment = Vec::with_capacity(SEGMENT_BYTES);
    for number in 0..log_bytes.div_ceil(SEGMENT_BYTES) {
        segment.clear();
        let mut group = 0;
        while segment.len() + payload.len() + 24 <= SEGMENT_BYTES {
            encode_record(group % GROUPS, RecordKind::Entries, &payload, &mut segment)
                .expect("within the limit");
            group += 1;
        }
        let mut file = File::create(dir.join(format!("{number:020}.seg")))?;
        file.write_all(&segment)?;
        file.sync_all()?;
    }
    Ok(())
}

/// Reads every segment file in name order and scans it, the last one as open; returns the
/// records found and the bytes read.
fn scan_directory(dir: &Path) -> io::Result<(usize, usize)> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    paths.sort();
    let mut records = 0;
    let mut bytes = 0;
    let mut buffer = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        buffer.clear();
        io::Read::read_to_end(&mut File::open(path)?, &mut buffer)?;
        let state = if i + 1 == paths.len() {
            SegmentState::Open
        } else {
            SegmentState::Sealed
        };
        let (found, end) = scan(&buffer, state);
        assert!(
            matches!(end, ReadOutcome::End),
            "{}: {end:?}",
            path.display()
        );
        records += found.len();
        bytes += buffer.len();
    }
    Ok((records, bytes))
}

fn directory_bytes(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len() as usize)
                .sum()
        })
        .unwrap_or(0)
}

/// Syncs `dir`'s files and drops the page cache; says whether the reads to come are cold.
fn drop_page_cache(dir: &Path) -> &'static str {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(file) = File::open(entry.path()) {
            let _ = file.sync_all();
        }
    }
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    match fs::write("/proc/sys/vm/drop_caches", "3\n") {
        Ok(()) => "page cache dropped",
        Err(_) => "page cache NOT dropped (warm)",
    }
}

/// The file system type of `dir`, with a warning for memory-backed ones.
fn describe_filesystem(dir: &Path) -> String {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `stat` is written by statfs before it is read; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return "file system: unknown (statfs failed)".into();
    }
    match stat.f_type {
        libc::TMPFS_MAGIC => "file system: tmpfs -- WARNING: memory, not a disk".into(),
        libc::EXT4_SUPER_MAGIC => "file system: ext4".into(),
        libc::XFS_SUPER_MAGIC => "file system: xfs".into(),
        libc::BTRFS_SUPER_MAGIC => "file system: btrfs".into(),
        other => format!("file system: type {other:#x}"),
    }
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("SHARDCORE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = base.join(format!("shardcore-wal-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("bench dir");
    dir
}
