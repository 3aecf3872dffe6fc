//! Running one task on a worker core's task thread: reading a split, the intermediate file
//! format, reading a partition back, and writing a reduce output atomically. Blocking file
//! I/O throughout (see the module docs of `worker` for why this runs on a plain thread).
//!
//! # Intermediate files
//! `mr-<map>-<partition>-a<attempt>` in the job's intermediate folder: records
//! `[u32 key length][key][u32 value length][value]` (little-endian), sorted by key, then a
//! 16-byte trailer: the record count (u64), the CRC-32C of the records (u32), and the magic
//! `MRI1`. A reader checks the trailer, then every length against the bytes left, so a torn or
//! damaged file is a clear error (the map runs again), never a panic or a wrong answer.
//! Files are written to a temporary name and renamed into place: a reader sees a whole file or
//! none. They are not fsynced: a machine that crashes loses its worker too, and the coordinator
//! then re-runs the worker's maps when a reducer reports their output lost.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::apps::{App, AppError, Emitter, Record, RecordRef, TaskContext, MAX_RECORD_BYTES};
use crate::wire::mapreduce::{Counters, JobSpec, MapTaskSpec, ReduceTaskSpec};

/// Bytes read from an input file at a time: large enough that a read is cheap per byte, small
/// enough that a heartbeat's progress is current.
pub const READ_CHUNK_BYTES: usize = 4 << 20;

/// Most bytes of intermediate data one reduce task loads (it sorts in memory; there is no
/// external merge): a larger partition fails the task and asks for more reduces.
pub const MAX_REDUCE_INPUT_BYTES: u64 = 2 << 30;

const TRAILER_MAGIC: [u8; 4] = *b"MRI1";
const TRAILER_BYTES: usize = 16;

/// Why a task failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskError {
    /// The task's own failure (input, app): counted against its attempts.
    Failed(String),
    /// A map output could not be read: that map runs again.
    MapOutputLost {
        /// The map task.
        map: u32,
        /// Why.
        reason: String,
    },
}

impl From<AppError> for TaskError {
    fn from(error: AppError) -> Self {
        TaskError::Failed(error.0)
    }
}

/// The folder of a job's intermediate files under `dir`.
pub fn intermediate_dir(dir: &Path, job: u64) -> PathBuf {
    dir.join(format!("mr-{job:016x}"))
}

/// The name of one intermediate file.
pub fn intermediate_name(map: u32, partition: u32, attempt: u32) -> String {
    format!("mr-{map}-{partition}-a{attempt}")
}

/// Runs a map task: reads its split, maps, writes one file per partition into `out_dir`.
/// `progress` follows the input bytes consumed.
pub fn run_map(
    app: &dyn App,
    job: &JobSpec,
    spec: &MapTaskSpec,
    ctx: &TaskContext,
    out_dir: &Path,
    progress: &AtomicU64,
) -> Result<Counters, TaskError> {
    let mut mapper = app.mapper(ctx)?;
    let mut emit = Emitter::new(job.reduce_count);
    let mut counters = Counters::default();
    read_split(&spec.file, spec.offset, spec.length, |chunk, offset| {
        check_lines(chunk, offset, &spec.file)?;
        // A plain count of one byte value compiles to vector instructions.
        counters.records_in += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        counters.bytes_in += chunk.len() as u64;
        progress.store(counters.bytes_in, Ordering::Relaxed);
        mapper.map_chunk(chunk, offset, &mut emit)
    })?;
    mapper.finish(&mut emit)?;
    counters.records_out = emit.records();
    fs::create_dir_all(out_dir)
        .map_err(|e| TaskError::Failed(format!("creating {}: {e}", out_dir.display())))?;
    for (partition, records) in emit.into_partitions(app).into_iter().enumerate() {
        let name = intermediate_name(spec.task, partition as u32, spec.attempt);
        let bytes = encode_records(&records);
        counters.bytes_out += bytes.len() as u64;
        write_atomically(&out_dir.join(&name), &bytes, Durability::NoSync)
            .map_err(TaskError::Failed)?;
    }
    Ok(counters)
}

/// Reads the whole lines of split [offset, offset + length) of `path` and hands them to `f` in
/// chunks (with each chunk's file offset). A line belongs to the split its first byte is in:
/// a split not at the file's start skips the line it begins inside, and the last line is read
/// past the split's end.
pub fn read_split(
    path: &str,
    offset: u64,
    length: u64,
    mut f: impl FnMut(&[u8], u64) -> Result<(), AppError>,
) -> Result<(), TaskError> {
    let failed = |what: &str, e: std::io::Error| TaskError::Failed(format!("{what} {path}: {e}"));
    let mut file = File::open(path).map_err(|e| failed("opening input", e))?;
    let end = offset + length;
    // A split not at the start begins inside a line unless the byte before it is a newline.
    let mut skip_first = false;
    if offset > 0 {
        file.seek(SeekFrom::Start(offset - 1))
            .map_err(|e| failed("seeking in input", e))?;
        let mut before = [0u8; 1];
        let n = read_full(&mut file, &mut before).map_err(|e| failed("reading", e))?;
        skip_first = n == 1 && before[0] != b'\n';
    }
    // `pos` is the file offset of buf[0].
    let mut pos = offset;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES + 4096);
    let mut eof = false;
    loop {
        if !eof {
            let before = buf.len();
            buf.resize(before + READ_CHUNK_BYTES, 0);
            let n = read_full(&mut file, &mut buf[before..]).map_err(|e| failed("reading", e))?;
            buf.truncate(before + n);
            eof = n == 0;
        }
        if skip_first {
            match buf.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    buf.drain(..=nl);
                    pos += nl as u64 + 1;
                    skip_first = false;
                }
                None if eof => return Ok(()),
                None => {
                    check_line_length(&buf, pos, path)?;
                    continue;
                }
            }
        }
        // buf starts at the start of a line: does that line belong to this split?
        if pos >= end || (eof && buf.is_empty()) {
            return Ok(());
        }
        // The complete lines in buf; at the end of the file, everything.
        let complete = if eof {
            buf.len()
        } else {
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                None => {
                    check_line_length(&buf, pos, path)?;
                    continue;
                }
            }
        };
        // Lines starting at or after `end` belong to the next split.
        let mut take = complete;
        if pos + complete as u64 > end {
            let cut = (end - pos) as usize;
            take = if buf[cut - 1] == b'\n' {
                cut
            } else {
                buf[cut..complete]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(complete, |nl| cut + nl + 1)
            };
        }
        f(&buf[..take], pos)?;
        buf.drain(..take);
        pos += take as u64;
        if take < complete {
            return Ok(());
        }
    }
}

/// Refuses a chunk of whole lines holding a line longer than [`MAX_RECORD_BYTES`]. Such a line
/// covers a whole aligned block of half that size with no newline in it, so only blocks without
/// one (found with the standard library's byte search) are scanned line by line: the check
/// costs a fraction of a pass over the bytes and finds every long line wherever the chunk
/// boundaries fall.
fn check_lines(chunk: &[u8], offset: u64, path: &str) -> Result<(), AppError> {
    const BLOCK: usize = MAX_RECORD_BYTES / 2;
    let suspicious = chunk
        .chunks_exact(BLOCK)
        .any(|block| !block.contains(&b'\n'));
    if !suspicious {
        return Ok(());
    }
    let mut at = offset;
    for line in chunk.split_inclusive(|&b| b == b'\n') {
        if line.strip_suffix(b"\n").unwrap_or(line).len() > MAX_RECORD_BYTES {
            return Err(AppError(format!(
                "malformed record in {path}: the line at byte offset {at} is longer than \
                 {MAX_RECORD_BYTES} bytes"
            )));
        }
        at += line.len() as u64;
    }
    Ok(())
}

fn check_line_length(buf: &[u8], pos: u64, path: &str) -> Result<(), TaskError> {
    if buf.len() > MAX_RECORD_BYTES {
        return Err(TaskError::Failed(format!(
            "malformed record in {path}: the line at byte offset {pos} is longer than {} bytes",
            MAX_RECORD_BYTES
        )));
    }
    Ok(())
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The bytes of an intermediate file.
pub fn encode_records(records: &[Record]) -> Vec<u8> {
    let size: usize = records.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(size + TRAILER_BYTES);
    for (key, value) in records {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&TRAILER_MAGIC);
    out
}

/// Checks an intermediate file and returns its records as slices of `bytes`.
pub fn decode_records(bytes: &[u8]) -> Result<Vec<RecordRef<'_>>, String> {
    if bytes.len() < TRAILER_BYTES {
        return Err(format!("{} bytes, shorter than its trailer", bytes.len()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
    if trailer[12..16] != TRAILER_MAGIC {
        return Err("no trailer magic (torn or not an intermediate file)".to_string());
    }
    let count = u64::from_le_bytes(trailer[0..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(trailer[8..12].try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".to_string());
    }
    let mut records = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let key = take_field(&mut rest)?;
        let value = take_field(&mut rest)?;
        records.push((key, value));
    }
    if records.len() as u64 != count {
        return Err(format!(
            "{} records where the trailer says {count}",
            records.len()
        ));
    }
    Ok(records)
}

/// Splits one length-prefixed field off the front of `rest`.
fn take_field<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], String> {
    if rest.len() < 4 {
        return Err("a record's length is cut off".to_string());
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    if rest.len() - 4 < len {
        return Err("a record runs past the end".to_string());
    }
    let (field, tail) = rest[4..].split_at(len);
    *rest = tail;
    Ok(field)
}

/// Runs a reduce task. `fetch(map, location)` returns the bytes of this partition of that map's
/// output, or why it could not.
pub fn run_reduce(
    app: &dyn App,
    job: &JobSpec,
    spec: &ReduceTaskSpec,
    ctx: &TaskContext,
    progress: &AtomicU64,
    mut fetch: impl FnMut(&crate::wire::mapreduce::MapLocation) -> Result<Vec<u8>, String>,
) -> Result<Counters, TaskError> {
    let mut counters = Counters::default();
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for location in &spec.inputs {
        let bytes = fetch(location).map_err(|reason| TaskError::MapOutputLost {
            map: location.map,
            reason,
        })?;
        counters.bytes_in += bytes.len() as u64;
        progress.store(counters.bytes_in, Ordering::Relaxed);
        if counters.bytes_in > MAX_REDUCE_INPUT_BYTES {
            return Err(TaskError::Failed(format!(
                "partition {} holds more than {} MiB; run the job with more reduces",
                spec.task,
                MAX_REDUCE_INPUT_BYTES >> 20
            )));
        }
        inputs.push(bytes);
    }
    let mut records = Vec::new();
    for (location, bytes) in spec.inputs.iter().zip(&inputs) {
        let decoded = decode_records(bytes).map_err(|reason| TaskError::MapOutputLost {
            map: location.map,
            reason: format!("map {} partition {}: {reason}", location.map, spec.task),
        })?;
        records.extend(decoded);
    }
    counters.records_in = records.len() as u64;
    // Stable: a key's values stay in map order.
    records.sort_by(|a, b| a.0.cmp(b.0));
    let mut reducer = app.reducer(ctx)?;
    let mut out = Vec::new();
    let mut values: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    while i < records.len() {
        let key = records[i].0;
        values.clear();
        while i < records.len() && records[i].0 == key {
            values.push(records[i].1);
            i += 1;
        }
        reducer.reduce(key, &values, &mut out)?;
        counters.records_out += 1;
    }
    reducer.finish(&mut out)?;
    counters.bytes_out = out.len() as u64;
    let output_dir = Path::new(&job.output_dir);
    fs::create_dir_all(output_dir)
        .map_err(|e| TaskError::Failed(format!("creating {}: {e}", output_dir.display())))?;
    write_atomically(
        &output_dir.join(format!("mr-out-{}", spec.task)),
        &out,
        Durability::Sync,
    )
    .map_err(TaskError::Failed)?;
    Ok(counters)
}

/// Whether [`write_atomically`] makes the file durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename and the folder after it.
    Sync,
    /// Only atomic against a process crash.
    NoSync,
}

/// Writes `bytes` to `path` through a temporary name in the same folder and a rename, so a
/// reader sees the old file or the whole new one. Copies racing on one path (a backup and its
/// original) each write their own temporary file and the last rename wins whole.
pub fn write_atomically(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), String> {
    static UNIQUE: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let temp = path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        if durability == Durability::Sync {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&temp, path)?;
        if durability == Durability::Sync {
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok::<(), std::io::Error>(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&temp);
        format!("writing {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    //! Splits cover every line exactly once wherever the boundaries fall; intermediate files
    //! refuse every truncation and bit flip.
    use super::*;

    fn lines_of_splits(text: &[u8], split: u64) -> Vec<Vec<u8>> {
        let dir = std::env::temp_dir().join(format!("mr-split-{}-{split}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("input");
        fs::write(&path, text).unwrap();
        let mut lines = Vec::new();
        let mut offset = 0;
        loop {
            let length = split.min(text.len() as u64 - offset);
            read_split(path.to_str().unwrap(), offset, length, |chunk, at| {
                assert_eq!(&text[at as usize..at as usize + chunk.len()], chunk);
                for line in chunk.split_inclusive(|&b| b == b'\n') {
                    lines.push(line.to_vec());
                }
                Ok(())
            })
            .unwrap();
            offset += length;
            if offset >= text.len() as u64 {
                break;
            }
        }
        fs::remove_dir_all(&dir).unwrap();
        lines
    }

    #[test]
    fn every_split_size_reads_every_line_once() {
        for text in [
            &b"one\ntwo three\n\nfour\nfive"[..],
            b"a\nb\n",
            b"\n\n\nx",
            b"",
            b"single line no newline",
        ] {
            let whole: Vec<Vec<u8>> = text
                .split_inclusive(|&b| b == b'\n')
                .map(<[u8]>::to_vec)
                .collect();
            for split in 1..=text.len() as u64 + 1 {
                assert_eq!(lines_of_splits(text, split), whole, "split {split}");
            }
        }
    }

    #[test]
    fn intermediate_files_round_trip_and_refuse_damage() {
        let records: Vec<Record> = vec![
            (b"a"[..].into(), b"1"[..].into()),
            (b"bb"[..].into(), b""[..].into()),
        ];
        let bytes = encode_records(&records);
        let decoded = decode_records(&bytes).unwrap();
        assert_eq!(decoded, [(&b"a"[..], &b"1"[..]), (&b"bb"[..], &b""[..])]);
        for len in 0..bytes.len() {
            assert!(decode_records(&bytes[..len]).is_err(), "truncated to {len}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_records(&flipped).is_err(), "bit {bit}");
        }
    }
}
