//! shardcore-storage: the on-disk formats and the durability of one node.
//!
//! Each CPU core owns one write-ahead log shared by every Raft group on that core, so that one
//! `fdatasync` makes a whole batch of groups' entries durable at once (group commit). The log is a
//! sequence of segment files; every record in it carries its group, its type and a CRC-32C, is
//! checked before it is written and again after it is read, and recovery never hands a corrupt
//! record to Raft.
//!
//! # Layout
//! - [`wal`]: the per-core write-ahead log: [`Wal::open`] (recovery), [`Wal::append`] (group
//!   commit: one `fdatasync` per batch of many groups' records), [`Wal::submit`] /
//!   [`Wal::wait`] / [`Wal::poll`] (the same, pipelined: up to two batches in flight, the next
//!   encoded while the last is written), [`Wal::entries`] (cache, else disk with checksums
//!   verified), hard states, compaction, segment rotation and deletion,
//!   and the groups to ask for a snapshot. Its module docs give the design: batches, the
//!   rewritten partial block, checkpoints, deletion, poisoning.
//! - [`segment`]: segment files: names (`wal-00000001.seg`, and `wal-00000001.free` for a
//!   deleted one kept for reuse), the 64-byte header, creating, preallocating and
//!   zero-writing one durably.
//! - [`record`]: the WAL record format (header with length, checksums, group id and record type;
//!   then the payload), its encode and decode, and the classification of a bad record found
//!   during recovery as a torn tail (truncate and go on) or corruption (stop with an error).
//! - [`uring`]: the WAL's I/O: an io_uring with a linked write and `fdatasync`, submitted
//!   ([`uring::Ring::begin`]) and completed ([`uring::Ring::wait`], [`uring::Ring::poll`])
//!   separately, and 4096-aligned buffers for `O_DIRECT`.
//! - [`fault`]: named fault points (`wal.write`, `wal.fdatasync`, `wal.fallocate`, `wal.rotate`,
//!   `snapshot.*`) that tests arm to fail one durability step, once or always.
//! - [`snapshot`]: per-group snapshot files (temp name, fsync, rename, directory fsync), checked
//!   in full when opened and read back in bounded chunks for InstallSnapshot.
//!
//! # Example
//! ```
//! use bytes::Bytes;
//! use shardcore_storage::{HardState, LogRecord, Wal, WalConfig, WalEntry};
//!
//! let dir = std::env::temp_dir().join(format!("shardcore-doc-wal-{}", std::process::id()));
//! let (mut wal, _) = Wal::open(&dir, WalConfig::new()).unwrap();
//! let entry = |index| WalEntry { index, term: 2, kind: 0, data: Bytes::from("put k v") };
//! // Two groups' records, durable after one fdatasync.
//! wal.append(&[
//!     LogRecord::Entries { group: 7, entries: vec![entry(1), entry(2), entry(3)] },
//!     LogRecord::HardState { group: 7, state: HardState { term: 2, vote: 1, commit: 1 } },
//!     LogRecord::Entries { group: 9, entries: vec![entry(1)] },
//! ])
//! .unwrap();
//! // A follower's conflicting suffix: appending at 2 drops 2..=3 first.
//! wal.append(&[LogRecord::Entries { group: 7, entries: vec![entry(2)] }]).unwrap();
//! drop(wal);
//!
//! let (wal, recovery) = Wal::open(&dir, WalConfig::new()).unwrap();
//! assert_eq!(recovery.groups, vec![7, 9]);
//! assert_eq!(wal.last_index(7), Some(2));
//! assert_eq!(wal.entries(7, 1, 2).unwrap()[1].data, "put k v");
//! assert_eq!(wal.hard_state(7).map(|h| h.commit), Some(1));
//! // Dropping the WAL waits for its spare-segment thread, which writes into `dir`.
//! drop(wal);
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! The record layer alone, and its torn-versus-corrupt rule:
//! ```
//! use shardcore_storage::record::{encode_record, scan, ReadOutcome, RecordKind, SegmentState};
//!
//! let mut segment = Vec::new();
//! encode_record(7, RecordKind::Entries, b"entries 1..=3", &mut segment).unwrap();
//! encode_record(7, RecordKind::HardState, b"term 2, vote 1", &mut segment).unwrap();
//!
//! // A crash tore the last write: recovery keeps the first record and truncates the rest.
//! segment.truncate(segment.len() - 3);
//! let (records, end) = scan(&segment, SegmentState::Open);
//! assert_eq!(records.len(), 1);
//! assert!(matches!(end, ReadOutcome::Torn(damage) if damage.offset == records[0].next_offset()));
//!
//! // The same bytes in a sealed segment cannot be torn: they are corrupt, and recovery stops.
//! assert!(matches!(scan(&segment, SegmentState::Sealed).1, ReadOutcome::Corrupt(_)));
//! ```
//!
//! # What exists and what comes
//! Built now: the WAL (segments preallocated, zero-written ahead of need by a background
//! thread or recycled from deleted ones, and appended through io_uring with `O_DIRECT`,
//! group commit, hard states, truncations, compaction, rotation with checkpoints, deletion of
//! segments every group's snapshot has passed, reads from a cache or mmap/pread with checksums
//! verified, recovery with torn-tail truncation and corruption refused with file and offset,
//! pipelined appends with two batches in flight, poisoning after a failed write or sync);
//! snapshot files; fault points. Tested by cutting the
//! last segment at every byte, flipping a bit in every byte of a segment, failing each
//! durability step, and a kill -9 loop (`tests/crash_loop.rs`).
//!
//! Not built yet:
//! - completions driven by the core's runtime: [`Wal::poll`] does not block, but nothing yet
//!   wakes the runtime when the ring completes (an eventfd registered with the ring would);
//!   the node's log thread uses [`Wal::append`];
//!
//! The crate depends on io_uring (directly, not through the `io/` runtime) and memmap2, never on
//! the Raft core: it stores bytes tagged with group ids and leaves their meaning to `shardcore`.
#![deny(missing_docs)]

pub mod fault;
pub mod record;
pub mod segment;
pub mod snapshot;
pub mod uring;
pub mod wal;

pub use fault::{FaultKind, FaultPoints, FaultRepeat};
pub use wal::{
    AppendStats, HardState, LogRecord, Recovery, Ticket, TornTail, Wal, WalConfig, WalEntry,
    WalError, MAX_IN_FLIGHT_BATCHES,
};

pub use record::{
    encode_record, read_record, scan, Damage, DamageReason, ReadOutcome, Record, RecordHeader,
    RecordKind, RecordTooLarge, SegmentState,
};
