//! WAL segment files: their names, their header, and creating one durably.
//!
//! A segment is a file of a fixed, preallocated and written size named `wal-NNNNNNNN.seg` after
//! its number (zero-padded so a directory listing sorts in log order; numbers past 8 digits
//! still parse). It starts with a 64-byte header, then batches of records (see [`crate::wal`])
//! from the header's first record offset on, then at least a record header's worth of zeros
//! (the end mark), then whatever the file held before: zeros in a new file, a previous life's
//! records in a recycled one (a deleted segment renamed to `wal-NNNNNNNN.free`, after its old
//! number, and later renamed into place as a new segment instead of making a new file):
//!
//! ```text
//! offset  size  field
//!      0     8  magic                "SHRDWAL\0"
//!      8     4  version              u32 little-endian, 3 (2 had no "synced through" in
//!                                     batches, 1 no segment number)
//!     12     4  first record offset  u32 little-endian, 64
//!     16     8  segment number       u64 little-endian, the number in the file name
//!     24     8  segment bytes        u64 little-endian, the size it was preallocated to
//!     32    28  reserved             zero
//!     60     4  header checksum      CRC-32C over bytes 0..60, u32 little-endian
//! ```
//!
//! The header is written with the segment's first batch, in the same write and under the same
//! `fdatasync`, so a segment whose header is torn holds nothing that was acknowledged.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The size of a segment header; the first record starts right after it.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// The magic bytes a segment file starts with.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHRDWAL\0";
/// The segment format version this code writes and reads. Version 3 added "synced through"
/// to every batch record, which overlapping writes need; version 2 added the segment number,
/// which recycling needs. Older logs are refused, not converted.
pub const SEGMENT_VERSION: u32 = 3;

/// A segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number, as in its file name.
    pub number: u64,
    /// The size the segment was preallocated to.
    pub segment_bytes: u64,
    /// Where its first record starts.
    pub first_record_offset: u32,
}

impl SegmentHeader {
    /// The header of a new segment.
    pub fn new(number: u64, segment_bytes: u64) -> SegmentHeader {
        SegmentHeader {
            number,
            segment_bytes,
            first_record_offset: SEGMENT_HEADER_BYTES as u32,
        }
    }

    /// The header's bytes, checksum included.
    pub fn to_bytes(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.first_record_offset.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.number.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let checksum = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Decodes and checks a header from the start of a segment's bytes.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, &'static str> {
        let Some(bytes) = bytes.first_chunk::<SEGMENT_HEADER_BYTES>() else {
            return Err("segment is shorter than its header");
        };
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        if u32_at(60) != crc32c::crc32c(&bytes[..60]) {
            return Err("segment header checksum mismatch");
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("not a shardcore WAL segment (bad magic)");
        }
        if u32_at(8) != SEGMENT_VERSION {
            return Err("unknown segment format version");
        }
        if bytes[32..60].iter().any(|b| *b != 0) {
            return Err("reserved segment header bytes are not zero");
        }
        let segment_bytes = u64_at(24);
        if segment_bytes % 4096 != 0 || !(2 * 4096..=1 << 30).contains(&segment_bytes) {
            return Err("segment header's size is not a multiple of 4096 between 8 KiB and 1 GiB");
        }
        let first_record_offset = u32_at(12);
        if first_record_offset as usize != SEGMENT_HEADER_BYTES {
            return Err("segment header's first record offset is not 64");
        }
        Ok(SegmentHeader {
            number: u64_at(16),
            segment_bytes,
            first_record_offset,
        })
    }
}

/// The file name of segment `number`.
pub fn segment_file_name(number: u64) -> String {
    format!("wal-{number:08}.seg")
}

/// The segment number a file name names, if it is a segment's.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".seg")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of a deleted segment kept for reuse (recycled), after the number it had.
/// Not a segment name: recovery never reads it.
pub fn free_file_name(number: u64) -> String {
    format!("wal-{number:08}.free")
}

/// The number a recycled segment's file name carries, if it is one's.
pub fn parse_free_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".free")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment numbers in `dir`, in order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    list_numbered(dir, parse_segment_file_name)
}

/// The numbers of the recycled segment files in `dir`, in order.
pub fn list_free(dir: &Path) -> io::Result<Vec<u64>> {
    list_numbered(dir, parse_free_file_name)
}

fn list_numbered(dir: &Path, parse: fn(&str) -> Option<u64>) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(number) = entry.file_name().to_str().and_then(parse) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The path of recycled segment file `number` in `dir`.
pub fn free_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(free_file_name(number))
}

/// The path of segment `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(segment_file_name(number))
}

/// Opens a segment for `O_DIRECT` writes.
pub fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Opens (creating or emptying) a segment file for writing with `O_DIRECT`.
pub fn create_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Preallocates `bytes` bytes of `file` (they read as zeros), so that appends do not allocate
/// blocks and a full disk shows up here, before anything is written, rather than in a write.
/// Where the file system cannot preallocate, the file is only extended (sparse).
pub fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size overflows off_t"))?;
    // SAFETY: plain system call on an open descriptor.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP) => file.set_len(bytes.max(file.metadata()?.len())),
        _ => Err(error),
    }
}

/// How many bytes of zeros [`write_zeros`] writes per call. Why 1 MiB: large enough that the
/// calls cost nothing next to the device, small enough to allocate per segment without care.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Writes zeros over `from..to` of `file` (opened with `O_DIRECT`; both offsets multiples of
/// 4096), so that those blocks are *written* rather than preallocated-unwritten. Why: on ext4
/// (and xfs) a block that `fallocate` reserved is an unwritten extent, and the first write to
/// it makes the next `fdatasync` also commit the extent's conversion to written through the
/// journal; a log that appends into preallocated space pays that on every sync. Writing the
/// zeros once, when the segment is made, moves the conversion there. Not synced here.
pub fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    assert!(from % 4096 == 0 && to % 4096 == 0, "aligned zero fill");
    if from >= to {
        return Ok(());
    }
    let chunk = usize::try_from(to - from).map_or(ZERO_CHUNK_BYTES, |n| n.min(ZERO_CHUNK_BYTES));
    let layout = std::alloc::Layout::from_size_align(chunk, 4096).expect("valid layout");
    // SAFETY: a non-zero size with a valid alignment; freed below with the same layout.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` is valid for `chunk` initialised (zero) bytes until freed below.
    let zeros = unsafe { std::slice::from_raw_parts(ptr, chunk) };
    let result = (|| {
        let mut offset = from;
        while offset < to {
            let length = usize::try_from(to - offset).map_or(chunk, |n| n.min(chunk));
            let written = std::os::unix::fs::FileExt::write_at(file, &zeros[..length], offset)?;
            if written == 0 || written % 4096 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short O_DIRECT write of zeros",
                ));
            }
            offset += written as u64;
        }
        Ok(())
    })();
    // SAFETY: allocated above with this layout, and `zeros` is not used after this.
    unsafe { std::alloc::dealloc(ptr, layout) };
    result
}

/// `fsync`s a directory, making the creation, removal or renaming of its entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers round-trip; any flipped bit is refused; names sort in segment order and parse.
    #[test]
    fn header_and_names() {
        let header = SegmentHeader::new(42, 1 << 20);
        let bytes = header.to_bytes();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&flipped).is_err(), "bit {bit}");
        }
        assert!(SegmentHeader::decode(&bytes[..63]).is_err());
        assert_eq!(segment_file_name(1), "wal-00000001.seg");
        assert_eq!(parse_segment_file_name("wal-00000001.seg"), Some(1));
        assert_eq!(
            parse_segment_file_name("wal-123456789.seg"),
            Some(123_456_789)
        );
        assert_eq!(parse_segment_file_name("wal-1.seg"), None);
        assert_eq!(parse_segment_file_name("wal-0000000x.seg"), None);
        assert_eq!(parse_segment_file_name("snap-00000001.seg"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(free_file_name(3), "wal-00000003.free");
        assert_eq!(parse_free_file_name("wal-00000003.free"), Some(3));
        assert_eq!(parse_segment_file_name("wal-00000003.free"), None);
        assert_eq!(parse_free_file_name("wal-00000003.seg"), None);
    }
}
