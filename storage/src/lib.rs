//! shardcore-storage: the on-disk formats and the durability of one node.
//!
//! Each CPU core owns one write-ahead log shared by every Raft group on that core, so that one
//! `fdatasync` makes a whole batch of groups' entries durable at once (group commit). The log is a
//! sequence of segment files; every record in it carries its group, its type and a CRC-32C, is
//! checked before it is written and again after it is read, and recovery never hands a corrupt
//! record to Raft.
//!
//! # Layout
//! - [`record`]: the WAL record format (header with length, checksums, group id and record type;
//!   then the payload), its encode and decode, and the classification of a bad record found
//!   during recovery as a torn tail (truncate and go on) or corruption (stop with an error).
//!
//! # Example
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
//! Built now: the record format and the torn-versus-corrupt rule, tested against truncation at
//! every byte and a flipped bit at every position.
//!
//! Not built yet (arrives with the server):
//! - segments: preallocated files of a named size, appended through io_uring, sealed when full,
//!   read back through memmap2 once sealed; a segment is deleted once every group's snapshot has
//!   passed its last entry;
//! - group commit: a core gathers the Readies of all its groups into one write and one
//!   `fdatasync`, and reports `persisted` to each group when it completes;
//! - hard state (term, vote, commit) records and snapshot files (written to a temporary name,
//!   synced, renamed, directory synced);
//! - crash recovery: scan the segments in order, truncate a torn tail, refuse to start on
//!   corruption with the segment, offset and reason, and rebuild each group's `Restore`;
//! - named fault points (write, checksum, fsync, rename, directory fsync) for the fault-injection
//!   tests.
//!
//! The crate will depend on an io_uring runtime and memmap2, never on the Raft core: it stores
//! bytes tagged with group ids and leaves their meaning to `shardcore`.
#![deny(missing_docs)]

pub mod record;

pub use record::{
    encode_record, read_record, scan, Damage, DamageReason, ReadOutcome, Record, RecordHeader,
    RecordKind, RecordTooLarge, SegmentState,
};
