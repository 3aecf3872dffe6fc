//! Operation histories: what clients saw, one completed operation per JSON line, for the
//! linearizability checker ([`crate::linearizability`]) and for people reading a failure.
//!
//! ```text
//! {"client":3,"op":"append","key":"k42","value":"x","expected":null,"output":null,"ok":true,"call_ns":1000,"return_ns":2500}
//! {"client":4,"op":"get","key":"k42","value":null,"expected":null,"output":"x","ok":true,"call_ns":1200,"return_ns":2600}
//! {"client":5,"op":"put","key":{"base64":"/w=="},"value":"v","expected":null,"output":null,"ok":null,"call_ns":1300,"return_ns":9000}
//! ```
//!
//! # Fields
//! The writer puts every field on every line, in this order, with `null` for an absent value:
//! - `client` (unsigned integer): the client's id; a client issues one operation at a time;
//! - `op`: `get`, `put`, `append`, `delete` or `cas` (compare-and-set);
//! - `key`: the key (never `null`);
//! - `value`: what a `put`, `append` or `cas` writes (`null` for `get` and `delete`);
//! - `expected`: what a `cas` expects to find, `null` meaning "the key is absent" (`null` for
//!   every other operation);
//! - `output`: what the server answered (see below; `null` when it answered no value);
//! - `ok`: `true`, `false` or `null` (see below);
//! - `call_ns`, `return_ns` (unsigned integers): when the client sent the operation and when the
//!   answer (or its timeout) arrived, in nanoseconds from the start of the run;
//!   `call_ns <= return_ns`.
//!
//! The reader also accepts a line without `value`, `expected` or `output` (each then `null`); it
//! rejects unknown fields, so that a misspelt field cannot silently read as `null`.
//!
//! # Keys and values: UTF-8 or base64-tagged
//! Every key, `value`, `expected` and `output` is bytes. The writer writes them as a JSON string
//! when the bytes are valid UTF-8 (JSON escapes for quotes, backslashes and control characters),
//! and otherwise as an object with one field, `{"base64":"..."}`, in the standard base64
//! alphabet (RFC 4648 §4) with `=` padding. The reader accepts either form in any of those four
//! fields, so `"abc"` and `{"base64":"YWJj"}` are the same three bytes.
//!
//! # What each operation means
//! - `get`: `output` is the value read, `null` when the key was absent; `ok` is `true`.
//! - `put` (overwrite), `append` (concatenate; appending to an absent key creates it with the
//!   appended value), `delete` (make the key absent): `output` is `null`, `ok` is `true`.
//! - `cas(key, expected, value)`: `ok` is `true` when it swapped (the key held `expected`, or was
//!   absent when `expected` is `null`) and the key now holds `value`; `ok` is `false` when it did
//!   not swap, and then `output` is the value it found instead (`null` = absent). After a
//!   successful or unknown `cas`, `output` is `null`.
//! - `ok: null`: the client does not know the outcome (it timed out or lost its connection), and
//!   `output` is `null`. The checker treats such a write (`put`, `append`, `delete`, `cas`) as
//!   possibly taking effect at any time after its call, or never (its return is at infinity),
//!   and ignores such a `get`: it observed nothing.
//! - `ok: false` on a `get`, `put`, `append` or `delete`: the server said the operation did not
//!   happen (say, "wrong leader" before anything was proposed), so `output` is `null` and the
//!   checker ignores the operation.
//!
//! [`HistoryOp::validate`] checks these rules; the reader applies it to every line and the
//! writer to every operation, so a history file on disk always follows them.

use std::fmt::{self, Write as _};
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Map, Value};

/// The longest line the reader accepts. A line holds one key and at most two values, each bounded
/// by a protocol frame (16 MiB), base64 adds a third, so 64 MiB is more than any real line and
/// still small enough that a corrupt file without newlines cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// The field names, in the order the writer writes them.
pub const FIELDS: [&str; 9] = [
    "client",
    "op",
    "key",
    "value",
    "expected",
    "output",
    "ok",
    "call_ns",
    "return_ns",
];

/// The kind of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// Read a key.
    Get,
    /// Overwrite a key.
    Put,
    /// Append to a key's value (creating the key when it is absent).
    Append,
    /// Make a key absent.
    Delete,
    /// Write a key only if it holds `expected` (compare-and-set).
    Cas,
}

impl OpKind {
    /// Every kind, in a fixed order.
    pub const ALL: [OpKind; 5] = [
        OpKind::Get,
        OpKind::Put,
        OpKind::Append,
        OpKind::Delete,
        OpKind::Cas,
    ];

    /// The name in the history.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Append => "append",
            OpKind::Delete => "delete",
            OpKind::Cas => "cas",
        }
    }

    /// The kind with this name in the history.
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One operation as one client saw it: one line of a history file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryOp {
    /// The client that issued it.
    pub client: u64,
    /// What it was.
    pub op: OpKind,
    /// The key.
    pub key: Bytes,
    /// What a `put`, `append` or `cas` writes; `None` for `get` and `delete`.
    pub value: Option<Bytes>,
    /// What a `cas` expects to find (`None`: the key absent); `None` for other operations.
    pub expected: Option<Bytes>,
    /// What the server answered: a `get`'s value, or the value a failed `cas` found; `None` for
    /// an absent key or when there is no answer.
    pub output: Option<Bytes>,
    /// `Some(true)`: it happened (a `cas`: it swapped); `Some(false)`: it did not (a `cas`: it
    /// found another value); `None`: the client does not know.
    pub ok: Option<bool>,
    /// When the client sent it, in nanoseconds from the start of the run.
    pub call_ns: u64,
    /// When the answer or the timeout arrived, in nanoseconds from the start of the run.
    pub return_ns: u64,
}

impl HistoryOp {
    /// A successful `get` of `key` that read `output` (`None`: absent).
    pub fn get(client: u64, key: &str, output: Option<&str>, call_ns: u64, return_ns: u64) -> Self {
        HistoryOp {
            output: output.map(|o| Bytes::copy_from_slice(o.as_bytes())),
            ..Self::blank(client, OpKind::Get, key, call_ns, return_ns)
        }
    }

    /// A successful `put` of `value` at `key`.
    pub fn put(client: u64, key: &str, value: &str, call_ns: u64, return_ns: u64) -> Self {
        HistoryOp {
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            ..Self::blank(client, OpKind::Put, key, call_ns, return_ns)
        }
    }

    /// A successful `append` of `value` to `key`.
    pub fn append(client: u64, key: &str, value: &str, call_ns: u64, return_ns: u64) -> Self {
        HistoryOp {
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            ..Self::blank(client, OpKind::Append, key, call_ns, return_ns)
        }
    }

    /// A successful `delete` of `key`.
    pub fn delete(client: u64, key: &str, call_ns: u64, return_ns: u64) -> Self {
        Self::blank(client, OpKind::Delete, key, call_ns, return_ns)
    }

    /// A `cas` of `key` from `expected` (`None`: absent) to `value` that swapped.
    pub fn cas_ok(
        client: u64,
        key: &str,
        expected: Option<&str>,
        value: &str,
        call_ns: u64,
        return_ns: u64,
    ) -> Self {
        HistoryOp {
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            expected: expected.map(|e| Bytes::copy_from_slice(e.as_bytes())),
            ..Self::blank(client, OpKind::Cas, key, call_ns, return_ns)
        }
    }

    /// A `cas` of `key` from `expected` to `value` that did not swap: it found `found`.
    pub fn cas_failed(
        client: u64,
        key: &str,
        expected: Option<&str>,
        value: &str,
        found: Option<&str>,
        call_ns: u64,
        return_ns: u64,
    ) -> Self {
        HistoryOp {
            ok: Some(false),
            output: found.map(|f| Bytes::copy_from_slice(f.as_bytes())),
            ..Self::cas_ok(client, key, expected, value, call_ns, return_ns)
        }
    }

    /// The same operation with an unknown outcome (`ok: null`, no output): the client timed out
    /// at `timeout_ns`.
    pub fn timed_out(self, timeout_ns: u64) -> Self {
        HistoryOp {
            ok: None,
            output: None,
            return_ns: timeout_ns,
            ..self
        }
    }

    fn blank(client: u64, op: OpKind, key: &str, call_ns: u64, return_ns: u64) -> Self {
        HistoryOp {
            client,
            op,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: None,
            expected: None,
            output: None,
            ok: Some(true),
            call_ns,
            return_ns,
        }
    }

    /// Checks the rules of the module docs ("What each operation means"); the error names the
    /// field at fault, as in `"value" must not be null for a put`.
    pub fn validate(&self) -> Result<(), String> {
        let op = match self.op {
            OpKind::Append => "an append",
            OpKind::Get => "a get",
            OpKind::Put => "a put",
            OpKind::Delete => "a delete",
            OpKind::Cas => "a cas",
        };
        if self.return_ns < self.call_ns {
            return Err(format!(
                "\"return_ns\" ({}) is before \"call_ns\" ({})",
                self.return_ns, self.call_ns
            ));
        }
        let writes_value = matches!(self.op, OpKind::Put | OpKind::Append | OpKind::Cas);
        match (&self.value, writes_value) {
            (None, true) => return Err(format!("\"value\" must not be null for {op}")),
            (Some(_), false) => return Err(format!("\"value\" must be null for {op}")),
            _ => {}
        }
        if self.expected.is_some() && self.op != OpKind::Cas {
            return Err(format!("\"expected\" must be null for {op}"));
        }
        // Only a successful get and a failed cas answer a value.
        let answers = match self.op {
            OpKind::Get => self.ok == Some(true),
            OpKind::Cas => self.ok == Some(false),
            OpKind::Put | OpKind::Append | OpKind::Delete => false,
        };
        if self.output.is_some() && !answers {
            let ok = match self.ok {
                Some(true) => "true",
                Some(false) => "false",
                None => "null",
            };
            return Err(format!("\"output\" must be null for {op} with \"ok\":{ok}"));
        }
        Ok(())
    }

    /// Appends the operation to `out` as one JSON object, without a newline. The operation should
    /// be valid ([`HistoryOp::validate`]); this does not check.
    pub fn write_json(&self, out: &mut String) {
        let _ = write!(
            out,
            "{{\"client\":{},\"op\":\"{}\",\"key\":",
            self.client,
            self.op.name()
        );
        write_bytes(out, &self.key);
        out.push_str(",\"value\":");
        write_optional_bytes(out, self.value.as_deref());
        out.push_str(",\"expected\":");
        write_optional_bytes(out, self.expected.as_deref());
        out.push_str(",\"output\":");
        write_optional_bytes(out, self.output.as_deref());
        let ok = match self.ok {
            Some(true) => "true",
            Some(false) => "false",
            None => "null",
        };
        let _ = write!(
            out,
            ",\"ok\":{ok},\"call_ns\":{},\"return_ns\":{}}}",
            self.call_ns, self.return_ns
        );
    }

    /// The operation as one JSON line, newline included (not checked; see [`write_op`]).
    pub fn to_json_line(&self) -> String {
        let mut line = String::with_capacity(128 + self.key.len());
        self.write_json(&mut line);
        line.push('\n');
        line
    }
}

/// Writes one operation as one line. An invalid operation ([`HistoryOp::validate`]) is a bug in
/// whoever recorded it: it is refused with [`io::ErrorKind::InvalidInput`] and nothing is written.
pub fn write_op<W: io::Write + ?Sized>(sink: &mut W, op: &HistoryOp) -> io::Result<()> {
    op.validate()
        .map_err(|problem| io::Error::new(io::ErrorKind::InvalidInput, problem))?;
    sink.write_all(op.to_json_line().as_bytes())
}

/// Writes every operation, one line each, in order (see [`write_op`]).
pub fn write_all<W: io::Write + ?Sized>(sink: &mut W, ops: &[HistoryOp]) -> io::Result<()> {
    let mut line = String::new();
    for op in ops {
        op.validate()
            .map_err(|problem| io::Error::new(io::ErrorKind::InvalidInput, problem))?;
        line.clear();
        op.write_json(&mut line);
        line.push('\n');
        sink.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Writes operations as JSON lines to any byte sink as a run goes, counting them.
#[derive(Debug)]
pub struct HistoryWriter<W: io::Write> {
    sink: W,
    ops: u64,
}

impl<W: io::Write> HistoryWriter<W> {
    /// A writer over `sink` (buffer it: each operation is one `write_all`).
    pub fn new(sink: W) -> HistoryWriter<W> {
        HistoryWriter { sink, ops: 0 }
    }

    /// Writes one operation as one line (see [`write_op`]).
    pub fn record(&mut self, op: &HistoryOp) -> io::Result<()> {
        write_op(&mut self.sink, op)?;
        self.ops += 1;
        Ok(())
    }

    /// How many operations were written.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.sink.flush()?;
        Ok(self.sink)
    }
}

/// Why a history could not be read.
#[derive(Debug)]
pub enum HistoryError {
    /// The file could not be opened.
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Reading failed at this line (1-based).
    Read {
        /// The line being read.
        line: u64,
        /// Why.
        error: io::Error,
    },
    /// This line (1-based) is not a valid operation: the message says which field and why.
    Invalid {
        /// The line.
        line: u64,
        /// What is wrong, naming the field, e.g. `"call_ns" must be an unsigned integer`.
        message: String,
    },
}

impl HistoryError {
    /// The 1-based line at fault, if the error is about a line.
    pub fn line(&self) -> Option<u64> {
        match self {
            HistoryError::Open { .. } => None,
            HistoryError::Read { line, .. } | HistoryError::Invalid { line, .. } => Some(*line),
        }
    }
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Open { path, error } => {
                write!(f, "cannot open {}: {error}", path.display())
            }
            HistoryError::Read { line, error } => write!(f, "line {line}: cannot read: {error}"),
            HistoryError::Invalid { line, message } => write!(f, "line {line}: {message}"),
        }
    }
}

impl std::error::Error for HistoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HistoryError::Open { error, .. } | HistoryError::Read { error, .. } => Some(error),
            HistoryError::Invalid { .. } => None,
        }
    }
}

/// Reads operations from JSON lines, one per line, skipping blank lines: an iterator of
/// `Result<HistoryOp, HistoryError>` that stops after the first error.
#[derive(Debug)]
pub struct HistoryReader<R: BufRead> {
    source: R,
    line: u64,
    buffer: Vec<u8>,
    failed: bool,
    max_line_bytes: usize,
}

impl<R: BufRead> HistoryReader<R> {
    /// A reader over `source`.
    pub fn new(source: R) -> HistoryReader<R> {
        Self::with_max_line_bytes(source, MAX_LINE_BYTES)
    }

    /// A reader over `source` that refuses lines longer than `max_line_bytes` (newline
    /// included) instead of [`MAX_LINE_BYTES`].
    pub fn with_max_line_bytes(source: R, max_line_bytes: usize) -> HistoryReader<R> {
        HistoryReader {
            source,
            line: 0,
            buffer: Vec::new(),
            failed: false,
            max_line_bytes,
        }
    }

    /// The next operation; `Ok(None)` at the end of the input.
    pub fn next_op(&mut self) -> Result<Option<HistoryOp>, HistoryError> {
        loop {
            self.line += 1;
            self.buffer.clear();
            let limit = self.max_line_bytes as u64 + 1;
            let read = io::Read::take(&mut self.source, limit).read_until(b'\n', &mut self.buffer);
            match read {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(error) => {
                    return Err(HistoryError::Read {
                        line: self.line,
                        error,
                    })
                }
            }
            if self.buffer.len() > self.max_line_bytes {
                let max = self.max_line_bytes;
                return Err(self.invalid(format!("the line is longer than {max} bytes")));
            }
            if self.buffer.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return parse_line(&self.buffer)
                .map(Some)
                .map_err(|message| self.invalid(message));
        }
    }

    fn invalid(&self, message: String) -> HistoryError {
        HistoryError::Invalid {
            line: self.line,
            message,
        }
    }
}

impl<R: BufRead> Iterator for HistoryReader<R> {
    type Item = Result<HistoryOp, HistoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_op().transpose();
        if matches!(next, Some(Err(_))) {
            self.failed = true;
        }
        next
    }
}

/// Reads a whole history from any buffered source.
pub fn read_all<R: BufRead>(source: R) -> Result<Vec<HistoryOp>, HistoryError> {
    HistoryReader::new(source).collect()
}

/// Reads a whole history file.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<HistoryOp>, HistoryError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|error| HistoryError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    read_all(io::BufReader::new(file))
}

/// Parses one non-blank line; the error message names the field.
fn parse_line(line: &[u8]) -> Result<HistoryOp, String> {
    let value: Value =
        serde_json::from_slice(line).map_err(|error| format!("not valid JSON: {error}"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object".to_string());
    };
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field {unknown:?}"));
    }
    let op_name = match required(&object, "op")? {
        Value::String(name) => name,
        _ => return Err(must("op", "be a string")),
    };
    let Some(op) = OpKind::from_name(op_name) else {
        return Err(format!(
            "\"op\" must be one of get, put, append, delete, cas, not {op_name:?}"
        ));
    };
    let key = match required(&object, "key")? {
        Value::Null => return Err(must("key", "not be null")),
        key => bytes_field("key", key)?,
    };
    let ok = match required(&object, "ok")? {
        Value::Bool(ok) => Some(*ok),
        Value::Null => None,
        _ => return Err(must("ok", "be true, false or null")),
    };
    let record = HistoryOp {
        client: unsigned(&object, "client")?,
        op,
        key,
        value: optional_bytes(&object, "value")?,
        expected: optional_bytes(&object, "expected")?,
        output: optional_bytes(&object, "output")?,
        ok,
        call_ns: unsigned(&object, "call_ns")?,
        return_ns: unsigned(&object, "return_ns")?,
    };
    record.validate()?;
    Ok(record)
}

fn must(field: &str, what: &str) -> String {
    format!("\"{field}\" must {what}")
}

fn required<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a Value, String> {
    object
        .get(field)
        .ok_or_else(|| format!("\"{field}\" is missing"))
}

fn unsigned(object: &Map<String, Value>, field: &str) -> Result<u64, String> {
    required(object, field)?
        .as_u64()
        .ok_or_else(|| must(field, "be an unsigned integer"))
}

fn optional_bytes(object: &Map<String, Value>, field: &str) -> Result<Option<Bytes>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => bytes_field(field, value).map(Some),
    }
}

/// A key or value: a JSON string (its UTF-8 bytes) or `{"base64":"..."}`.
fn bytes_field(field: &str, value: &Value) -> Result<Bytes, String> {
    const SHAPE: &str = "be a string or {\"base64\":\"...\"}";
    match value {
        Value::String(text) => Ok(Bytes::copy_from_slice(text.as_bytes())),
        Value::Object(tagged) if tagged.len() == 1 => match tagged.get("base64") {
            Some(Value::String(encoded)) => base64_decode(encoded)
                .map(Bytes::from)
                .map_err(|problem| format!("\"{field}\" is not valid base64: {problem}")),
            _ => Err(must(field, SHAPE)),
        },
        _ => Err(must(field, SHAPE)),
    }
}

fn write_optional_bytes(out: &mut String, value: Option<&[u8]>) {
    match value {
        Some(bytes) => write_bytes(out, bytes),
        None => out.push_str("null"),
    }
}

/// Bytes as a JSON string when they are UTF-8, else as `{"base64":"..."}`.
fn write_bytes(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => write_string(out, text),
        Err(_) => {
            out.push_str("{\"base64\":\"");
            base64_encode(bytes, out);
            out.push_str("\"}");
        }
    }
}

/// A JSON string (RFC 8259 §7): quotes and backslashes escaped, control characters escaped,
/// everything else as it is (the output stays UTF-8).
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The standard base64 alphabet (RFC 4648 §4).
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the base64 encoding of `bytes` (standard alphabet, `=` padding) to `out`.
pub fn base64_encode(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let group = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (group >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(BASE64_ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

/// Decodes base64 (standard alphabet, `=` padding required, no whitespace), strictly: the
/// unused bits of the last group must be zero, so every byte string has exactly one encoding.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let input = text.as_bytes();
    if input.len() % 4 != 0 {
        return Err(format!(
            "its length ({}) is not a multiple of 4",
            input.len()
        ));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let groups = input.len() / 4;
    for (index, group) in input.chunks(4).enumerate() {
        let last = index + 1 == groups;
        let padding = group.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return Err("misplaced '=' padding".to_string());
        }
        let mut bits: u32 = 0;
        for (position, &c) in group[..4 - padding].iter().enumerate() {
            let sextet = sextet(c).ok_or_else(|| {
                format!(
                    "invalid character {:?} at offset {}",
                    char::from(c),
                    index * 4 + position
                )
            })?;
            bits |= u32::from(sextet) << (18 - 6 * position);
        }
        let bytes = bits.to_be_bytes();
        let decoded = &bytes[1..4 - padding];
        if bits & (0x00ff_ffff >> (8 * (3 - padding))) != 0 && padding > 0 {
            return Err("nonzero bits after the last byte".to_string());
        }
        out.extend_from_slice(decoded);
    }
    Ok(out)
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Bytes for people: `"text"` (quoted and escaped) when UTF-8, else `base64:...`; values longer
/// than `max_chars` are cut, with their length in bytes shown.
pub fn display_bytes(bytes: &[u8], max_chars: usize) -> String {
    let mut shown = match std::str::from_utf8(bytes) {
        Ok(text) => format!("{text:?}"),
        Err(_) => {
            let mut out = String::from("base64:");
            base64_encode(bytes, &mut out);
            out
        }
    };
    if shown.chars().count() > max_chars {
        shown = shown.chars().take(max_chars).collect();
        let _ = write!(shown, "…({} bytes)", bytes.len());
    }
    shown
}

/// [`display_bytes`] of an optional value, `absent` for `None`.
pub fn display_optional_bytes(bytes: Option<&[u8]>, max_chars: usize) -> String {
    match bytes {
        Some(bytes) => display_bytes(bytes, max_chars),
        None => "absent".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base64 matches the RFC 4648 §10 test vectors both ways, and the decoder refuses bad input.
    #[test]
    fn base64_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            let mut out = String::new();
            base64_encode(plain.as_bytes(), &mut out);
            assert_eq!(out, encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        for bad in [
            "Zg", "Zg=", "Z===", "Zm9v!A==", "Zg==Zg==", "Zh==", "Zm9=", "Zm 9",
        ] {
            assert!(base64_decode(bad).is_err(), "{bad:?} decoded");
        }
        let all: Vec<u8> = (0..=255).collect();
        let mut out = String::new();
        base64_encode(&all, &mut out);
        assert_eq!(base64_decode(&out).unwrap(), all);
    }

    /// Quotes, backslashes and every control character are escaped; other text passes as is.
    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        write_string(&mut out, "a\"b\\c\nd\re\tf\u{8}\u{c}\u{0}\u{1f}\u{7f}é☃");
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\nd\\re\\tf\\b\\f\\u0000\\u001f\u{7f}é☃\""
        );
        for c in (0u8..0x20).map(char::from) {
            let mut out = String::new();
            write_string(&mut out, &c.to_string());
            assert!(
                out.len() > 3 && !out.chars().any(|o| u32::from(o) < 0x20),
                "{c:?} → {out:?}"
            );
        }
    }

    fn append() -> HistoryOp {
        HistoryOp::append(3, "k42", "x", 1000, 2500)
    }

    /// The line the module docs show, byte for byte: every field, in order, nulls included.
    #[test]
    fn golden_line() {
        assert_eq!(
            append().to_json_line(),
            "{\"client\":3,\"op\":\"append\",\"key\":\"k42\",\"value\":\"x\",\"expected\":null,\
             \"output\":null,\"ok\":true,\"call_ns\":1000,\"return_ns\":2500}\n"
        );
        let docs_example =
            "{\"client\":5,\"op\":\"put\",\"key\":{\"base64\":\"/w==\"},\"value\":\"v\",\
             \"expected\":null,\"output\":null,\"ok\":null,\"call_ns\":1300,\"return_ns\":9000}\n";
        let op = read_all(docs_example.as_bytes()).unwrap().remove(0);
        assert_eq!(op.key, Bytes::from_static(&[0xff]));
        assert_eq!(op.ok, None);
        assert_eq!(op.to_json_line(), docs_example);
    }

    /// Each kind and each outcome has its own spelling, and a failed cas shows what it found.
    #[test]
    fn kinds_and_outcomes() {
        let names: Vec<&str> = OpKind::ALL.map(OpKind::name).to_vec();
        assert_eq!(names, ["get", "put", "append", "delete", "cas"]);
        for kind in OpKind::ALL {
            assert_eq!(OpKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(OpKind::from_name("Get"), None);
        let line =
            HistoryOp::cas_failed(1, "k42", Some("old"), "new", Some("other"), 0, 1).to_json_line();
        assert!(
            line.contains(
                "\"op\":\"cas\",\"key\":\"k42\",\"value\":\"new\",\"expected\":\"old\",\
                 \"output\":\"other\",\"ok\":false"
            ),
            "{line}"
        );
        assert!(append()
            .timed_out(9)
            .to_json_line()
            .contains("\"ok\":null,"));
    }

    /// Every kind of operation, with text, escapes, empty and non-UTF-8 keys and values, is
    /// written and read back unchanged; non-UTF-8 bytes are written base64-tagged.
    #[test]
    fn round_trip() {
        let bytes = |b: &[u8]| Bytes::copy_from_slice(b);
        let mut ops = vec![
            HistoryOp::get(1, "k", None, 0, 5),
            HistoryOp::get(1, "k", Some("quote\" slash\\ nl\n ☃"), 6, 7),
            HistoryOp::put(2, "", "", 1, 2),
            append(),
            HistoryOp::delete(4, "k", 8, 9),
            HistoryOp::cas_ok(5, "k", None, "v", 10, 11),
            HistoryOp::cas_failed(5, "k", Some("a"), "b", None, 12, 13),
            HistoryOp::put(6, "k", "v", 14, 15).timed_out(u64::MAX),
        ];
        let mut binary = HistoryOp::cas_failed(7, "k", Some("a"), "b", Some("c"), 0, 0);
        binary.key = bytes(&[0xff, 0x00, 0xfe]);
        binary.value = Some(bytes(&[0x80]));
        binary.expected = Some(bytes(b"ok \xe2\x98"));
        binary.output = Some(bytes(&[0xc3, 0x28, 0x00]));
        binary.client = u64::MAX;
        ops.push(binary);
        let mut out = Vec::new();
        write_all(&mut out, &ops).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.lines().count(), ops.len());
        assert!(text.contains("\"key\":{\"base64\":\"/wD+\"}"), "{text}");
        assert!(text.contains("\"value\":{\"base64\":\"gA==\"}"), "{text}");
        assert_eq!(read_all(&out[..]).unwrap(), ops);
        // One at a time, through the writer that counts.
        let mut writer = HistoryWriter::new(Vec::new());
        for op in &ops {
            writer.record(op).unwrap();
        }
        assert_eq!(writer.ops(), ops.len() as u64);
        assert_eq!(writer.finish().unwrap(), out);
    }

    /// The reader takes either spelling of bytes in any of the four fields, leaves out missing
    /// optional fields as null, and skips blank lines while counting them.
    #[test]
    fn reader_is_liberal_in_spelling() {
        let text = "\n  \r\n{\"client\":1,\"op\":\"cas\",\"key\":{\"base64\":\"YWJj\"},\
            \"value\":{\"base64\":\"\"},\"expected\":{\"base64\":\"eA==\"},\
            \"output\":\"y\",\"ok\":false,\"call_ns\":1,\"return_ns\":2}\r\n\
            {\"op\":\"get\",\"ok\":true,\"key\":\"abc\",\"client\":2,\"return_ns\":9,\"call_ns\":3}";
        let ops = read_all(text.as_bytes()).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].key, "abc");
        assert_eq!(ops[0].value.as_deref(), Some(&b""[..]));
        assert_eq!(ops[0].expected.as_deref(), Some(&b"x"[..]));
        assert_eq!(ops[1], HistoryOp::get(2, "abc", None, 3, 9));
        // A bad line after two blank ones is line 3.
        let error = read_all("\n\n{}".as_bytes()).unwrap_err();
        assert_eq!(error.line(), Some(3));
    }

    fn error_of(line: &str) -> String {
        let text = format!("{}\n{line}\n", append().to_json_line().trim_end());
        match read_all(text.as_bytes()) {
            Ok(ops) => panic!("accepted {line}: {ops:?}"),
            Err(error) => {
                assert_eq!(error.line(), Some(2), "{error}");
                error.to_string()
            }
        }
    }

    /// Malformed lines are refused with their line number and the field at fault, never a
    /// panic.
    #[test]
    fn malformed_lines_name_line_and_field() {
        let good = append().to_json_line();
        let good = good.trim_end();
        let with = |field: &str, value: &str| {
            let start = good.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
            let end = start + good[start..].find([',', '}']).unwrap();
            format!("{}{value}{}", &good[..start], &good[end..])
        };
        let cases = [
            (
                with("call_ns", "-1"),
                "line 2: \"call_ns\" must be an unsigned integer",
            ),
            (
                with("call_ns", "1.5"),
                "line 2: \"call_ns\" must be an unsigned integer",
            ),
            (
                with("return_ns", "\"9\""),
                "line 2: \"return_ns\" must be an unsigned integer",
            ),
            (
                with("client", "null"),
                "line 2: \"client\" must be an unsigned integer",
            ),
            (
                with("return_ns", "999"),
                "line 2: \"return_ns\" (999) is before \"call_ns\" (1000)",
            ),
            (
                with("op", "\"incr\""),
                "line 2: \"op\" must be one of get, put, append, delete, cas, not \"incr\"",
            ),
            (with("op", "3"), "line 2: \"op\" must be a string"),
            (
                with("ok", "1"),
                "line 2: \"ok\" must be true, false or null",
            ),
            (with("key", "null"), "line 2: \"key\" must not be null"),
            (
                with("key", "7"),
                "line 2: \"key\" must be a string or {\"base64\":\"...\"}",
            ),
            (
                with("value", "null"),
                "line 2: \"value\" must not be null for an append",
            ),
            (
                with("expected", "\"e\""),
                "line 2: \"expected\" must be null for an append",
            ),
            (
                with("output", "\"o\""),
                "line 2: \"output\" must be null for an append with \"ok\":true",
            ),
            (
                with("value", "{\"base64\":\"Zg=\"}"),
                "line 2: \"value\" is not valid base64: its length (3) is not a multiple of 4",
            ),
            (
                with("value", "{\"base64\":\"Zg==\",\"x\":1}"),
                "line 2: \"value\" must be a string or {\"base64\":\"...\"}",
            ),
            (
                with("value", "{\"hex\":\"00\"}"),
                "line 2: \"value\" must be a string or {\"base64\":\"...\"}",
            ),
            (
                good.replace("\"ok\":true,", ""),
                "line 2: \"ok\" is missing",
            ),
            (
                good.replace("\"op\":\"append\",", ""),
                "line 2: \"op\" is missing",
            ),
            (
                good.replace("\"ok\"", "\"okay\""),
                "line 2: unknown field \"okay\"",
            ),
            ("[1,2]".to_string(), "line 2: expected a JSON object"),
        ];
        for (line, message) in cases {
            assert_eq!(error_of(&line), message, "{line}");
        }
        for line in ["{", "{\"client\":1,}", "nul", &good[..good.len() - 1]] {
            assert!(
                error_of(line).starts_with("line 2: not valid JSON: "),
                "{line}"
            );
        }
        assert!(error_of("{\"a\":\"\u{ff}\"}\u{0}").starts_with("line 2: not valid JSON"));
        // Bytes that are not UTF-8 outside a base64 string are not JSON either.
        let mut raw = good.as_bytes().to_vec();
        raw[good.find("k42").unwrap()] = 0xff;
        let error = read_all(&raw[..]).unwrap_err();
        assert!(
            error.to_string().starts_with("line 1: not valid JSON"),
            "{error}"
        );
    }

    /// The iterator stops after the first error, and a line over the limit is refused without
    /// being read whole.
    #[test]
    fn errors_end_the_reading() {
        let text = format!("x\n{}", append().to_json_line());
        let mut reader = HistoryReader::new(text.as_bytes());
        assert!(matches!(
            reader.next(),
            Some(Err(HistoryError::Invalid { line: 1, .. }))
        ));
        assert!(reader.next().is_none());
        let long = append().to_json_line();
        let mut reader = HistoryReader::with_max_line_bytes(long.as_bytes(), 20);
        let error = reader.next().unwrap().unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 1: the line is longer than 20 bytes"
        );
        let mut reader = HistoryReader::with_max_line_bytes(long.as_bytes(), long.len());
        assert_eq!(reader.next().unwrap().unwrap(), append());
    }

    /// The writer refuses an invalid operation and writes nothing of it.
    #[test]
    fn writer_refuses_invalid_operations() {
        let mut out = Vec::new();
        let backwards = HistoryOp::put(1, "k", "v", 5, 4);
        let error = write_op(&mut out, &backwards).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("before \"call_ns\""), "{error}");
        let mut get_with_value = HistoryOp::get(1, "k", None, 0, 1);
        get_with_value.value = Some(Bytes::from_static(b"v"));
        assert!(write_all(&mut out, &[append(), get_with_value]).is_err());
        assert_eq!(out, append().to_json_line().as_bytes());
    }

    /// `read_file` reads what `write_all` wrote, and names the file it cannot open.
    #[test]
    fn files() {
        let path =
            std::env::temp_dir().join(format!("shardcore-history-{}.jsonl", std::process::id()));
        let ops = [append(), HistoryOp::get(1, "k42", Some("x"), 3000, 3100)];
        let mut file = std::fs::File::create(&path).unwrap();
        write_all(&mut file, &ops).unwrap();
        drop(file);
        assert_eq!(read_file(&path).unwrap(), ops);
        std::fs::remove_file(&path).unwrap();
        let error = read_file(&path).unwrap_err();
        assert!(matches!(error, HistoryError::Open { .. }));
        assert!(error.to_string().starts_with("cannot open "), "{error}");
        assert_eq!(error.line(), None);
    }

    /// Bytes for people: quoted text, base64 for the rest, long values cut with their length.
    #[test]
    fn display_of_bytes() {
        assert_eq!(display_bytes(b"a\"b", 20), "\"a\\\"b\"");
        assert_eq!(display_bytes(&[0xff], 20), "base64:/w==");
        assert_eq!(display_bytes(b"abcdefgh", 4), "\"abc…(8 bytes)");
        assert_eq!(display_optional_bytes(None, 4), "absent");
    }
}
