//! The apps: what a job computes. [`App`] is the trait a new app implements; `wc`, `indexer`,
//! `grep` and `exec` are built in and found by name with [`app_by_name`].
//!
//! A map task hands its mapper whole lines, in chunks ([`Mapper::map_chunk`]); the mapper emits
//! key/value pairs into an [`Emitter`], which partitions them by [`partition_of`] (FNV-1a of the
//! key, mod R: stable across processes and builds). When the task ends, each partition is sorted
//! by key and, if the app has a combiner ([`App::combine`]), equal keys are combined before the
//! partition is written. A reduce task sorts every map's records for its partition by key and
//! hands each key with all its values to the [`Reducer`], which appends output lines.
//!
//! # Adding an app
//! ```
//! use shardcore::mapreduce::apps::{App, AppError, Emitter, Mapper, Reducer, TaskContext};
//!
//! /// Counts lines per length.
//! struct LineLengths;
//! struct LengthMapper;
//! struct CountReducer;
//!
//! impl Mapper for LengthMapper {
//!     fn map_line(&mut self, line: &[u8], emit: &mut Emitter) -> Result<(), AppError> {
//!         emit.emit(line.len().to_string().as_bytes(), b"1")
//!     }
//! }
//!
//! impl Reducer for CountReducer {
//!     fn reduce(&mut self, key: &[u8], values: &[&[u8]], out: &mut Vec<u8>) -> Result<(), AppError> {
//!         out.extend_from_slice(key);
//!         out.extend_from_slice(format!(" {}\n", values.len()).as_bytes());
//!         Ok(())
//!     }
//! }
//!
//! impl App for LineLengths {
//!     fn mapper(&self, _: &TaskContext) -> Result<Box<dyn Mapper>, AppError> {
//!         Ok(Box::new(LengthMapper))
//!     }
//!     fn reducer(&self, _: &TaskContext) -> Result<Box<dyn Reducer>, AppError> {
//!         Ok(Box::new(CountReducer))
//!     }
//! }
//!
//! let outputs = shardcore::mapreduce::sequential::run_in_memory(
//!     &LineLengths,
//!     &[("doc", b"ab\ncd\nefg\n".as_slice())],
//! )
//! .unwrap();
//! assert_eq!(outputs, "2 2\n3 1\n");
//! ```
//! Register it in [`app_by_name`] to make it available to `shardcore mr`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

/// Longest line a map task accepts: a longer one is a malformed record (and a sign the input is
/// not text), not a reason to buffer without bound.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Most bytes of key/value pairs one map task may hold before writing them: there is no spill
/// to disk, so this bounds a worker core's memory (an app with a combiner stays far below it).
pub const MAX_MAP_OUTPUT_BYTES: usize = 512 << 20;

/// Most bytes an `exec` child may write to stdout in one task, for the same reason.
pub const MAX_EXEC_OUTPUT_BYTES: usize = 512 << 20;

/// Why an app could not process its input: the task fails with this text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppError(pub String);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a task knows about itself.
#[derive(Clone, Debug, Default)]
pub struct TaskContext {
    /// The app's arguments.
    pub app_args: Vec<String>,
    /// The input file (maps), or empty.
    pub file: String,
    /// `map` or `reduce`.
    pub kind: &'static str,
    /// The task's number.
    pub task: u32,
    /// The attempt.
    pub attempt: u32,
    /// The worker core's id.
    pub worker: u64,
}

/// One map task's mapper: gets the split's lines, emits pairs.
pub trait Mapper {
    /// One line, without its newline.
    fn map_line(&mut self, line: &[u8], emit: &mut Emitter) -> Result<(), AppError>;

    /// Whole lines, each ending in `\n` except perhaps the input's last; `offset` is the first
    /// byte's offset in the file. The default calls [`Mapper::map_line`] for each line; an app
    /// that does not care about lines may scan the chunk at once.
    fn map_chunk(&mut self, chunk: &[u8], offset: u64, emit: &mut Emitter) -> Result<(), AppError> {
        let _ = offset;
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            self.map_line(line, emit)?;
        }
        Ok(())
    }

    /// The split is over: emit what was kept back (in-mapper combining).
    fn finish(&mut self, emit: &mut Emitter) -> Result<(), AppError> {
        let _ = emit;
        Ok(())
    }
}

/// One reduce task's reducer: gets each key once, in key order, with all its values.
pub trait Reducer {
    /// Appends this key's output lines to `out`.
    fn reduce(&mut self, key: &[u8], values: &[&[u8]], out: &mut Vec<u8>) -> Result<(), AppError>;

    /// Every key was given: append anything left.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), AppError> {
        let _ = out;
        Ok(())
    }
}

/// A MapReduce application.
pub trait App: Send + Sync {
    /// A mapper for one map task.
    fn mapper(&self, ctx: &TaskContext) -> Result<Box<dyn Mapper>, AppError>;
    /// A reducer for one reduce task.
    fn reducer(&self, ctx: &TaskContext) -> Result<Box<dyn Reducer>, AppError>;
    /// The combiner: folds `values` of one key from one map task into one value in `out` and
    /// returns true, or returns false if the app has none (the default).
    fn combine(&self, key: &[u8], values: &[&[u8]], out: &mut Vec<u8>) -> bool {
        let _ = (key, values, out);
        false
    }
}

/// The built-in apps' names.
pub const APP_NAMES: &[&str] = &["wc", "indexer", "grep", "exec"];

/// A built-in app by name, checked against its arguments.
pub fn app_by_name(name: &str, args: &[String]) -> Result<Box<dyn App>, String> {
    match name {
        "wc" => Ok(Box::new(WordCount)),
        "indexer" => Ok(Box::new(Indexer)),
        "grep" => match args {
            [pattern] if !pattern.is_empty() => Ok(Box::new(Grep {
                pattern: pattern.as_bytes().to_vec(),
            })),
            _ => Err("grep takes one non-empty pattern (--app-arg PATTERN)".to_string()),
        },
        "exec" => match args {
            [map, reduce] => Ok(Box::new(Exec {
                map: map.clone(),
                reduce: reduce.clone(),
            })),
            _ => Err(
                "exec takes a map and a reduce executable (--app-arg MAP --app-arg REDUCE)"
                    .to_string(),
            ),
        },
        other => Err(format!(
            "unknown app {other:?} (built in: {})",
            APP_NAMES.join(", ")
        )),
    }
}

/// The FxHash step (rustc's hasher): a multiply and a rotate per word, several times faster
/// than SipHash on short keys. Maps keyed by input words are not exposed to an adversary who
/// could choose collisions against a job, so DoS resistance buys nothing here.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Bytes of a word kept inside a [`WordKey`].
const INLINE_WORD_BYTES: usize = 22;

/// A word as a hash-map key: up to 22 bytes inline (nearly every word), longer ones on the
/// heap. The table then holds the words themselves, so a lookup reads one cache line instead
/// of following a pointer per probe; it looks up by `&[u8]` like a `Box<[u8]>` key would.
#[derive(Clone, Debug)]
pub enum WordKey {
    /// A short word.
    Inline {
        /// Its length.
        len: u8,
        /// Its bytes, then zeroes.
        bytes: [u8; INLINE_WORD_BYTES],
    },
    /// A long word.
    Heap(Box<[u8]>),
}

impl WordKey {
    /// The key for `word`.
    pub fn new(word: &[u8]) -> WordKey {
        if word.len() <= INLINE_WORD_BYTES {
            let mut bytes = [0u8; INLINE_WORD_BYTES];
            bytes[..word.len()].copy_from_slice(word);
            WordKey::Inline {
                len: word.len() as u8,
                bytes,
            }
        } else {
            WordKey::Heap(word.into())
        }
    }

    /// The word.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WordKey::Inline { len, bytes } => &bytes[..*len as usize],
            WordKey::Heap(bytes) => bytes,
        }
    }
}

impl std::borrow::Borrow<[u8]> for WordKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::hash::Hash for WordKey {
    // As `[u8]` hashes, which `Borrow` requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for WordKey {
    fn eq(&self, other: &WordKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for WordKey {}

/// The partition of `key` among `reduces`: FNV-1a 64 of the key, mod R. Part of the job's
/// layout across processes, so it is fixed here rather than left to a std hasher.
pub fn partition_of(key: &[u8], reduces: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(reduces.max(1))) as u32
}

/// Calls `f` with every word of `text`: maximal runs of Unicode alphabetic characters (Rust's
/// `char::is_alphabetic`, which is the lab's `unicode.IsLetter` plus the few marks and number
/// letters the Alphabetic property adds). ASCII is judged byte by byte; other characters are
/// decoded. Text that is not UTF-8 is a malformed record: the error gives the offset of the bad
/// byte within `text`.
pub fn for_each_word(text: &[u8], mut f: impl FnMut(&[u8])) -> Result<(), usize> {
    let mut i = 0;
    let mut start: Option<usize> = None;
    while i < text.len() {
        let byte = text[i];
        let (letter, width) = if byte < 0x80 {
            (byte.is_ascii_alphabetic(), 1)
        } else {
            let width = match byte {
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => return Err(i),
            };
            let Some(bytes) = text.get(i..i + width) else {
                return Err(i);
            };
            let Ok(decoded) = std::str::from_utf8(bytes) else {
                return Err(i);
            };
            let c = decoded.chars().next().expect("one char");
            (c.is_alphabetic(), width)
        };
        match (letter, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                f(&text[s..i]);
                start = None;
            }
            _ => {}
        }
        i += width;
    }
    if let Some(s) = start {
        f(&text[s..]);
    }
    Ok(())
}

/// One key/value pair a mapper emitted.
pub type Record = (Box<[u8]>, Box<[u8]>);

/// A key/value pair read back from an intermediate file (slices of its bytes).
pub type RecordRef<'a> = (&'a [u8], &'a [u8]);

/// Collects a map task's pairs by partition.
pub struct Emitter {
    partitions: Vec<Vec<Record>>,
    bytes: usize,
    records: u64,
}

impl Emitter {
    /// An emitter for `reduces` partitions.
    pub fn new(reduces: u32) -> Emitter {
        Emitter {
            partitions: (0..reduces.max(1)).map(|_| Vec::new()).collect(),
            bytes: 0,
            records: 0,
        }
    }

    /// Emits one pair. Fails once the task holds more than [`MAX_MAP_OUTPUT_BYTES`].
    pub fn emit(&mut self, key: &[u8], value: &[u8]) -> Result<(), AppError> {
        self.bytes += key.len() + value.len() + 16;
        if self.bytes > MAX_MAP_OUTPUT_BYTES {
            return Err(AppError(format!(
                "map output exceeds {} MiB in one task (no spill to disk): use smaller splits \
                 or an app with a combiner",
                MAX_MAP_OUTPUT_BYTES >> 20
            )));
        }
        let partition = partition_of(key, self.partitions.len() as u32) as usize;
        self.partitions[partition].push((key.into(), value.into()));
        self.records += 1;
        Ok(())
    }

    /// Pairs emitted so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Each partition sorted by key (stable: equal keys keep their order) and combined.
    pub fn into_partitions(self, app: &dyn App) -> Vec<Vec<Record>> {
        self.partitions
            .into_iter()
            .map(|mut records| {
                records.sort_by(|a, b| a.0.cmp(&b.0));
                combine_sorted(app, records)
            })
            .collect()
    }
}

/// Folds runs of equal keys with the app's combiner, if it has one. Records move, never copy:
/// a partition without equal keys (wc, whose mapper already combined) passes through as is.
fn combine_sorted(app: &dyn App, records: Vec<Record>) -> Vec<Record> {
    let has_runs = records.windows(2).any(|w| w[0].0 == w[1].0);
    if !has_runs {
        return records;
    }
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    let mut combined = Vec::new();
    let mut run: Vec<Record> = Vec::new();
    let mut flush = |run: &mut Vec<Record>, out: &mut Vec<Record>| {
        if run.len() > 1 {
            let values: Vec<&[u8]> = run.iter().map(|r| &*r.1).collect();
            combined.clear();
            if app.combine(&run[0].0, &values, &mut combined) {
                let key = std::mem::take(&mut run[0].0);
                out.push((key, combined.as_slice().into()));
                run.clear();
                return;
            }
        }
        out.append(run);
    };
    for record in records {
        if run.first().is_some_and(|first| first.0 != record.0) {
            flush(&mut run, &mut out);
        }
        run.push(record);
    }
    flush(&mut run, &mut out);
    out
}

fn parse_count(value: &[u8]) -> Result<u64, AppError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| AppError(format!("bad count {:?}", String::from_utf8_lossy(value))))
}

/// Word count: `<word> <count>` lines.
pub struct WordCount;

/// wc's mapper counts in a hash map and emits each word once, at the end (in-mapper combining:
/// the paper's combiner applied as words arrive, so the sort sees one pair per distinct word).
struct WordCountMapper {
    counts: FxHashMap<WordKey, u64>,
}

impl Mapper for WordCountMapper {
    fn map_line(&mut self, line: &[u8], _: &mut Emitter) -> Result<(), AppError> {
        count_words(&mut self.counts, line)
            .map_err(|at| AppError(format!("invalid UTF-8 at byte {at} of a line")))
    }

    fn map_chunk(&mut self, chunk: &[u8], offset: u64, _: &mut Emitter) -> Result<(), AppError> {
        count_words(&mut self.counts, chunk).map_err(|at| {
            AppError(format!(
                "malformed record: invalid UTF-8 at byte offset {}",
                offset + at as u64
            ))
        })
    }

    fn finish(&mut self, emit: &mut Emitter) -> Result<(), AppError> {
        for (word, count) in self.counts.drain() {
            emit.emit(word.as_bytes(), count.to_string().as_bytes())?;
        }
        Ok(())
    }
}

/// Most entries a word-count table may keep allocated between tasks (about 8 MiB).
const MAX_KEPT_WORD_TABLE_ENTRIES: usize = 1 << 18;

thread_local! {
    /// The last word-count table of this thread, emptied, kept for the next map task: a task
    /// thread runs many tasks over the same vocabulary, and a fresh table would be grown again
    /// through every doubling (each a full rehash) for each one.
    static SPARE_WORD_TABLE: std::cell::RefCell<Option<FxHashMap<WordKey, u64>>> =
        const { std::cell::RefCell::new(None) };
}

impl Drop for WordCountMapper {
    fn drop(&mut self) {
        if self.counts.capacity() <= MAX_KEPT_WORD_TABLE_ENTRIES {
            let mut counts = std::mem::take(&mut self.counts);
            counts.clear();
            SPARE_WORD_TABLE.with(|spare| *spare.borrow_mut() = Some(counts));
        }
    }
}

/// Adds every word of `text` to `counts`; the error is the offset of a byte that is not UTF-8.
pub fn count_words(counts: &mut FxHashMap<WordKey, u64>, text: &[u8]) -> Result<(), usize> {
    for_each_word(text, |word| match counts.get_mut(word) {
        Some(count) => *count += 1,
        None => {
            counts.insert(WordKey::new(word), 1);
        }
    })
}

struct SumReducer;

impl Reducer for SumReducer {
    fn reduce(&mut self, key: &[u8], values: &[&[u8]], out: &mut Vec<u8>) -> Result<(), AppError> {
        let mut total = 0u64;
        for value in values {
            total += parse_count(value)?;
        }
        out.extend_from_slice(key);
        out.push(b' ');
        out.extend_from_slice(total.to_string().as_bytes());
        out.push(b'\n');
        Ok(())
    }
}

impl App for WordCount {
    fn mapper(&self, _: &TaskContext) -> Result<Box<dyn Mapper>, AppError> {
        let counts = SPARE_WORD_TABLE.with(|spare| spare.borrow_mut().take());
        Ok(Box::new(WordCountMapper {
            counts: counts.unwrap_or_default(),
        }))
    }

    fn reducer(&self, _: &TaskContext) -> Result<Box<dyn Reducer>, AppError> {
        Ok(Box::new(SumReducer))
    }

    fn combine(&self, _: &[u8], values: &[&[u8]], out: &mut Vec<u8>) -> bool {
        let total: Option<u64> = values.iter().map(|v| parse_count(v).ok()).sum();
        match total {
            Some(total) => {
                out.extend_from_slice(total.to_string().as_bytes());
                true
            }
            None => false,
        }
    }
}

/// Inverted index: `<word> <n> <doc1>,<doc2>,...` with the documents (input paths) sorted.
pub struct Indexer;

struct IndexerMapper {
    doc: String,
    words: HashSet<Box<[u8]>, BuildHasherDefault<FxHasher>>,
}

impl Mapper for IndexerMapper {
    fn map_line(&mut self, line: &[u8], _: &mut Emitter) -> Result<(), AppError> {
        self.map_chunk(line, 0, &mut Emitter::new(1))
    }

    fn map_chunk(&mut self, chunk: &[u8], offset: u64, _: &mut Emitter) -> Result<(), AppError> {
        let words = &mut self.words;
        for_each_word(chunk, |word| {
            if !words.contains(word) {
                words.insert(word.into());
            }
        })
        .map_err(|at| {
            AppError(format!(
                "malformed record: invalid UTF-8 at byte offset {}",
                offset + at as u64
            ))
        })
    }

    fn finish(&mut self, emit: &mut Emitter) -> Result<(), AppError> {
        for word in self.words.drain() {
            emit.emit(&word, self.doc.as_bytes())?;
        }
        Ok(())
    }
}

struct IndexerReducer;

impl Reducer for IndexerReducer {
    fn reduce(&mut self, key: &[u8], values: &[&[u8]], out: &mut Vec<u8>) -> Result<(), AppError> {
        // A document split across map tasks shows up once per split.
        let mut docs: Vec<&[u8]> = values.to_vec();
        docs.sort_unstable();
        docs.dedup();
        out.extend_from_slice(key);
        out.extend_from_slice(format!(" {} ", docs.len()).as_bytes());
        out.extend_from_slice(&docs.join(&b","[..]));
        out.push(b'\n');
        Ok(())
    }
}

impl App for Indexer {
    fn mapper(&self, ctx: &TaskContext) -> Result<Box<dyn Mapper>, AppError> {
        Ok(Box::new(IndexerMapper {
            doc: ctx.file.clone(),
            words: HashSet::default(),
        }))
    }

    fn reducer(&self, _: &TaskContext) -> Result<Box<dyn Reducer>, AppError> {
        Ok(Box::new(IndexerReducer))
    }
}

/// Lines containing a pattern (a plain substring): `<file>:<byte offset>:<line>`, sorted by
/// file and offset within each output file.
pub struct Grep {
    pattern: Vec<u8>,
}

struct GrepMapper {
    pattern: Vec<u8>,
    file: String,
}

impl Mapper for GrepMapper {
    fn map_line(&mut self, line: &[u8], emit: &mut Emitter) -> Result<(), AppError> {
        self.map_chunk(line, 0, emit)
    }

    fn map_chunk(&mut self, chunk: &[u8], offset: u64, emit: &mut Emitter) -> Result<(), AppError> {
        let mut at = 0usize;
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            if contains(text, &self.pattern) {
                // The key sorts by file, then by offset (zero-padded).
                let key = format!("{}\0{:020}", self.file, offset + at as u64);
                emit.emit(key.as_bytes(), text)?;
            }
            at += line.len();
        }
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

struct GrepReducer;

impl Reducer for GrepReducer {
    fn reduce(&mut self, key: &[u8], values: &[&[u8]], out: &mut Vec<u8>) -> Result<(), AppError> {
        let split = key.iter().position(|&b| b == 0).unwrap_or(key.len());
        let offset = std::str::from_utf8(key.get(split + 1..).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        for value in values {
            out.extend_from_slice(&key[..split]);
            out.extend_from_slice(format!(":{offset}:").as_bytes());
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        Ok(())
    }
}

impl App for Grep {
    fn mapper(&self, ctx: &TaskContext) -> Result<Box<dyn Mapper>, AppError> {
        Ok(Box::new(GrepMapper {
            pattern: self.pattern.clone(),
            file: ctx.file.clone(),
        }))
    }

    fn reducer(&self, _: &TaskContext) -> Result<Box<dyn Reducer>, AppError> {
        Ok(Box::new(GrepReducer))
    }
}

/// Hadoop-streaming style: the map executable reads the split's lines on stdin and writes
/// `key<TAB>value` lines on stdout; the reduce executable reads its partition's pairs as
/// `key<TAB>value` lines sorted by key and writes output lines. Both get `SHARDCORE_MR_KIND`,
/// `SHARDCORE_MR_TASK`, `SHARDCORE_MR_ATTEMPT`, `SHARDCORE_MR_WORKER` and (maps)
/// `SHARDCORE_MR_FILE` in their environment. A non-zero exit or a line without a tab fails the
/// task, with the end of the child's stderr in the reason.
pub struct Exec {
    map: String,
    reduce: String,
}

/// A child process with a thread collecting its stdout and one collecting its stderr.
struct Streaming {
    program: String,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<JoinHandle<std::io::Result<Vec<u8>>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// How much of a failed child's stderr the failure reason keeps.
const STDERR_TAIL_BYTES: usize = 2048;

impl Streaming {
    fn start(program: &str, ctx: &TaskContext) -> Result<Streaming, AppError> {
        let mut child = Command::new(program)
            .env("SHARDCORE_MR_KIND", ctx.kind)
            .env("SHARDCORE_MR_TASK", ctx.task.to_string())
            .env("SHARDCORE_MR_ATTEMPT", ctx.attempt.to_string())
            .env("SHARDCORE_MR_WORKER", format!("{:x}", ctx.worker))
            .env("SHARDCORE_MR_FILE", &ctx.file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| AppError(format!("starting {program}: {e}")))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let stdout = std::thread::spawn(move || {
            let mut out = Vec::new();
            (&mut stdout)
                .take(MAX_EXEC_OUTPUT_BYTES as u64 + 1)
                .read_to_end(&mut out)?;
            Ok(out)
        });
        let stderr = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stderr.read_to_end(&mut out);
            out
        });
        Ok(Streaming {
            program: program.to_string(),
            stdin: child.stdin.take(),
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), AppError> {
        let stdin = self.stdin.as_mut().expect("open until finish");
        // A child that exits early closes its stdin: the exit status tells why, below.
        if stdin.write_all(bytes).is_err() {
            self.stdin = None;
            return Err(self.finish().err().unwrap_or_else(|| {
                AppError(format!("{} stopped reading its input", self.program))
            }));
        }
        Ok(())
    }

    /// Closes stdin, waits for the child, returns its stdout.
    fn finish(&mut self) -> Result<Vec<u8>, AppError> {
        self.stdin = None;
        let stdout = self.stdout.take().map(|h| h.join());
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        let status = self
            .child
            .wait()
            .map_err(|e| AppError(format!("waiting for {}: {e}", self.program)))?;
        let tail = stderr.unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail[tail.len().saturating_sub(STDERR_TAIL_BYTES)..])
            .trim()
            .to_string();
        if !status.success() {
            return Err(AppError(format!(
                "{} exited with {status}; stderr: {tail:?}",
                self.program
            )));
        }
        let out = match stdout {
            Some(Ok(Ok(out))) => out,
            _ => {
                return Err(AppError(format!(
                    "reading {}'s output failed",
                    self.program
                )))
            }
        };
        if out.len() > MAX_EXEC_OUTPUT_BYTES {
            return Err(AppError(format!(
                "{} wrote more than {} MiB",
                self.program,
                MAX_EXEC_OUTPUT_BYTES >> 20
            )));
        }
        Ok(out)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct ExecMapper {
    child: Streaming,
}

impl Mapper for ExecMapper {
    fn map_line(&mut self, line: &[u8], _: &mut Emitter) -> Result<(), AppError> {
        self.child.write(line)?;
        self.child.write(b"\n")
    }

    fn map_chunk(&mut self, chunk: &[u8], _: u64, _: &mut Emitter) -> Result<(), AppError> {
        self.child.write(chunk)
    }

    fn finish(&mut self, emit: &mut Emitter) -> Result<(), AppError> {
        let out = self.child.finish()?;
        for (number, line) in out.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let Some(tab) = line.iter().position(|&b| b == b'\t') else {
                return Err(AppError(format!(
                    "malformed record: line {} of {}'s output has no tab",
                    number + 1,
                    self.child.program
                )));
            };
            emit.emit(&line[..tab], &line[tab + 1..])?;
        }
        Ok(())
    }
}

struct ExecReducer {
    child: Streaming,
}

impl Reducer for ExecReducer {
    fn reduce(&mut self, key: &[u8], values: &[&[u8]], _: &mut Vec<u8>) -> Result<(), AppError> {
        let mut lines = Vec::new();
        for value in values {
            lines.extend_from_slice(key);
            lines.push(b'\t');
            lines.extend_from_slice(value);
            lines.push(b'\n');
        }
        self.child.write(&lines)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), AppError> {
        out.extend_from_slice(&self.child.finish()?);
        Ok(())
    }
}

impl App for Exec {
    fn mapper(&self, ctx: &TaskContext) -> Result<Box<dyn Mapper>, AppError> {
        Ok(Box::new(ExecMapper {
            child: Streaming::start(&self.map, ctx)?,
        }))
    }

    fn reducer(&self, ctx: &TaskContext) -> Result<Box<dyn Reducer>, AppError> {
        Ok(Box::new(ExecReducer {
            child: Streaming::start(&self.reduce, ctx)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    //! Word splitting, partitions and the combiner, on hand-made inputs.
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word(text.as_bytes(), |w| {
            out.push(String::from_utf8(w.to_vec()).unwrap())
        })
        .unwrap();
        out
    }

    #[test]
    fn words_are_runs_of_letters() {
        assert_eq!(
            words("Hello, world! it's 42x"),
            ["Hello", "world", "it", "s", "x"]
        );
        assert_eq!(
            words("café naïve Ωμέγα—日本語"),
            ["café", "naïve", "Ωμέγα", "日本語"]
        );
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(for_each_word(b"ab\xffcd", |_| {}), Err(2));
        assert_eq!(for_each_word(b"ab\xc3", |_| {}), Err(2));
    }

    #[test]
    fn word_keys_look_up_by_bytes() {
        let mut counts = FxHashMap::default();
        let long = "x".repeat(40);
        count_words(&mut counts, format!("a bb a {long} {long}").as_bytes()).unwrap();
        assert_eq!(counts.get(&b"a"[..]), Some(&2));
        assert_eq!(counts.get(&b"bb"[..]), Some(&1));
        assert_eq!(counts.get(long.as_bytes()), Some(&2));
        assert_eq!(counts.get(&b"c"[..]), None);
    }

    #[test]
    fn partitions_are_stable() {
        // Pinned: outputs of a job written by one build must be read by another.
        assert_eq!(partition_of(b"hello", 10), partition_of(b"hello", 10));
        assert_eq!(partition_of(b"", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as u32);
    }

    #[test]
    fn the_combiner_folds_equal_keys() {
        let mut emit = Emitter::new(1);
        for key in ["b", "a", "b", "b"] {
            emit.emit(key.as_bytes(), b"2").unwrap();
        }
        let parts = emit.into_partitions(&WordCount);
        let got: Vec<(&[u8], &[u8])> = parts[0].iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(got, [(&b"a"[..], &b"2"[..]), (&b"b"[..], &b"6"[..])]);
    }
}
