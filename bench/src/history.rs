//! Operation histories: one JSON object per line, one line per operation a client issued, for
//! the linearizability checker and for people reading a failure.
//!
//! ```text
//! {"client":3,"op":"append","key":"k42","value":"x","expected":null,"output":null,"ok":true,"call_ns":1000,"return_ns":2500}
//! ```
//!
//! Fields always appear in this order, every one of them, with `null` for an absent value:
//! - `client`: the client's id; a client issues one operation at a time;
//! - `op`: `get`, `put`, `append` or `cas` (compare-and-set);
//! - `key`, `value` (what a write writes), `expected` (what a `cas` expects to find);
//! - `output`: what the server answered (a `get`'s value; `null` when the key was absent or the
//!   operation answers nothing);
//! - `ok`: `true` when the operation took effect, `false` when the server said it did not, and
//!   `null` when the client cannot know (it timed out): a checker must treat such an operation
//!   as possibly taking effect at any time after its call;
//! - `call_ns`, `return_ns`: when the client sent it and when the answer (or the timeout)
//!   arrived, in nanoseconds from the start of the run, `call_ns <= return_ns`.
//!
//! The serializer is written by hand: it is small, has no dependency, and fixes the field order.

use std::fmt::Write as _;
use std::io;

/// The kind of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read a key.
    Get,
    /// Overwrite a key.
    Put,
    /// Append to a key's value.
    Append,
    /// Write a key only if its value is `expected`.
    Cas,
}

impl Op {
    /// The name in the history.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Append => "append",
            Op::Cas => "cas",
        }
    }
}

/// What a client knows about an operation's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It took effect (`true`).
    Ok,
    /// The server said it did not take effect (`false`), e.g. a `cas` that found another value.
    Failed,
    /// The client cannot know (`null`): it timed out or lost the connection.
    Unknown,
}

/// One operation as one client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    /// The client that issued it.
    pub client: u64,
    /// What it was.
    pub op: Op,
    /// The key.
    pub key: String,
    /// What a write writes (`None` for a `get`).
    pub value: Option<String>,
    /// What a `cas` expects to find (`None` otherwise, or when it expects the key absent).
    pub expected: Option<String>,
    /// What the server answered (`None`: absent key, or nothing to answer).
    pub output: Option<String>,
    /// Whether it took effect.
    pub ok: Outcome,
    /// When the client sent it, in nanoseconds from the start of the run.
    pub call_ns: u64,
    /// When the answer or the timeout arrived, in nanoseconds from the start of the run.
    pub return_ns: u64,
}

impl HistoryRecord {
    /// Appends the record to `out` as one JSON object, without a newline.
    pub fn write_json(&self, out: &mut String) {
        // A record that returns before its call would make every checker's answer meaningless.
        assert!(
            self.call_ns <= self.return_ns,
            "history record returns ({}) before its call ({})",
            self.return_ns,
            self.call_ns
        );
        let ok = match self.ok {
            Outcome::Ok => "true",
            Outcome::Failed => "false",
            Outcome::Unknown => "null",
        };
        let _ = write!(
            out,
            "{{\"client\":{},\"op\":\"{}\",\"key\":",
            self.client,
            self.op.name()
        );
        write_string(out, &self.key);
        out.push_str(",\"value\":");
        write_optional_string(out, self.value.as_deref());
        out.push_str(",\"expected\":");
        write_optional_string(out, self.expected.as_deref());
        out.push_str(",\"output\":");
        write_optional_string(out, self.output.as_deref());
        let _ = write!(
            out,
            ",\"ok\":{ok},\"call_ns\":{},\"return_ns\":{}}}",
            self.call_ns, self.return_ns
        );
    }

    /// The record as one JSON line, newline included.
    pub fn to_json_line(&self) -> String {
        let mut line = String::with_capacity(128 + self.key.len());
        self.write_json(&mut line);
        line.push('\n');
        line
    }
}

/// Writes records as JSON lines to any byte sink (a buffered file, usually).
#[derive(Debug)]
pub struct HistoryWriter<W: io::Write> {
    sink: W,
    line: String,
    records: u64,
}

impl<W: io::Write> HistoryWriter<W> {
    /// A writer over `sink`.
    pub fn new(sink: W) -> HistoryWriter<W> {
        HistoryWriter {
            sink,
            line: String::new(),
            records: 0,
        }
    }

    /// Writes one record as one line.
    pub fn record(&mut self, record: &HistoryRecord) -> io::Result<()> {
        self.line.clear();
        record.write_json(&mut self.line);
        self.line.push('\n');
        self.sink.write_all(self.line.as_bytes())?;
        self.records += 1;
        Ok(())
    }

    /// How many records were written.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.sink.flush()?;
        Ok(self.sink)
    }
}

fn write_optional_string(out: &mut String, value: Option<&str>) {
    match value {
        Some(text) => write_string(out, text),
        None => out.push_str("null"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn append() -> HistoryRecord {
        HistoryRecord {
            client: 3,
            op: Op::Append,
            key: "k42".into(),
            value: Some("x".into()),
            expected: None,
            output: None,
            ok: Outcome::Ok,
            call_ns: 1000,
            return_ns: 2500,
        }
    }

    /// The line the module docs show, byte for byte: every field, in order, nulls included.
    #[test]
    fn golden_line() {
        assert_eq!(
            append().to_json_line(),
            "{\"client\":3,\"op\":\"append\",\"key\":\"k42\",\"value\":\"x\",\"expected\":null,\
             \"output\":null,\"ok\":true,\"call_ns\":1000,\"return_ns\":2500}\n"
        );
    }

    /// Each op and each outcome has its own spelling; a cas shows its expected value.
    #[test]
    fn ops_and_outcomes() {
        let names: Vec<&str> = [Op::Get, Op::Put, Op::Append, Op::Cas]
            .map(Op::name)
            .to_vec();
        assert_eq!(names, ["get", "put", "append", "cas"]);
        let cas = HistoryRecord {
            op: Op::Cas,
            expected: Some("old".into()),
            value: Some("new".into()),
            output: Some("other".into()),
            ok: Outcome::Failed,
            ..append()
        };
        let line = cas.to_json_line();
        assert!(line.contains("\"op\":\"cas\",\"key\":\"k42\",\"value\":\"new\",\"expected\":\"old\",\"output\":\"other\",\"ok\":false"), "{line}");
        let timed_out = HistoryRecord {
            ok: Outcome::Unknown,
            ..append()
        };
        assert!(timed_out.to_json_line().contains("\"ok\":null,"));
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

    /// The writer puts one record on each line and counts them.
    #[test]
    fn writer_writes_lines() {
        let mut writer = HistoryWriter::new(Vec::new());
        writer.record(&append()).unwrap();
        writer
            .record(&HistoryRecord {
                client: 4,
                op: Op::Get,
                value: None,
                ..append()
            })
            .unwrap();
        assert_eq!(writer.records(), 2);
        let text = String::from_utf8(writer.finish().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].starts_with("{\"client\":4,\"op\":\"get\",\"key\":\"k42\",\"value\":null,")
        );
    }

    /// A record that returns before its call is a bug in the recorder, caught before writing.
    #[test]
    #[should_panic(expected = "before its call")]
    fn return_before_call_is_refused() {
        HistoryRecord {
            call_ns: 5,
            return_ns: 4,
            ..append()
        }
        .to_json_line();
    }
}
