//! Tidy checks on the source tree itself, run with the other tests.
//!
//! 1. The deterministic core (DESIGN.md, "a deterministic core") names no I/O, no clock and no
//!    unseeded randomness: every `.rs` file under `src/raft`, `src/sim`, `src/rng.rs`, `src/kv`,
//!    the node's pure parts (`src/node/{core,placement}.rs`), `src/wire`, the MapReduce
//!    planner (`src/mapreduce/planner.rs` and its tests), `src/shardctl` and `src/shardkv`
//!    (the sharded KV's groups, migration and clerk) is scanned for the forbidden names
//!    below, and every hit is reported with its file and line. Comment lines (and trailing `//`
//!    comments) are skipped, so the docs may still say what the code must not do.
//! 2. Every source file of every crate starts with a `//!` module doc (STYLE.md: one concept per
//!    module, and a doc that names it).
//!
//! The scanner is plain text matching, not a parser: it catches the names as written, including
//! inside a grouped `use std::{...}`, but not a block comment or a macro that builds a path. It
//! is a tripwire for honest mistakes, with unit tests of its own below.

use std::path::{Path, PathBuf};

/// Names the deterministic core must not use, with why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("glommio", "the runtime belongs in io/"),
    ("tokio", "no runtime in the core"),
    ("std::time", "time arrives as ticks"),
    ("Instant", "time arrives as ticks"),
    ("SystemTime", "time arrives as ticks"),
    ("std::net", "messages arrive as values"),
    ("std::fs", "durability is the caller's, through storage/"),
    ("std::thread", "the core runs on its caller's thread"),
    ("std::env", "configuration arrives as values"),
    ("thread_rng", "randomness comes from a seeded stream"),
    ("rand::", "randomness comes from the seeded `rng` module"),
];

/// The standard-library modules a grouped `use std::{...}` must not bring in.
const FORBIDDEN_STD_MODULES: &[&str] = &["time", "net", "fs", "thread", "env"];

/// The deterministic core's files and folders (relative to the workspace root). The first two
/// must exist, so that a move cannot make the check pass by checking nothing.
const CORE_PATHS: &[&str] = &[
    "src/raft",
    "src/rng.rs",
    "src/sim",
    "src/kv",
    "src/node/core.rs",
    "src/node/placement.rs",
    "src/wire",
    "src/mapreduce/planner.rs",
    "src/mapreduce/planner",
    "src/shardctl",
    "src/shardkv",
];
const CORE_PATHS_REQUIRED: usize = 2;

/// Every crate's source folder: each file in them needs a `//!` doc.
const SOURCE_ROOTS: &[&str] = &["src", "protocol/src", "storage/src", "io/src", "bench/src"];

/// One forbidden name found.
#[derive(Debug, PartialEq, Eq)]
struct Hit {
    /// 1-based line number.
    line: usize,
    /// The forbidden name.
    name: &'static str,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file at or under `path`, sorted.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(path) else {
        return files;
    };
    for entry in entries {
        let entry = entry.expect("readable directory entry").path();
        if entry.is_dir() {
            files.extend(rust_files(&entry));
        } else if entry.extension().is_some_and(|e| e == "rs") {
            files.push(entry);
        }
    }
    files.sort();
    files
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The line without a trailing `//` comment. A `//` after an odd number of quotes is inside a
/// string literal (a URL, say) and stays.
fn strip_trailing_comment(line: &str) -> &str {
    let mut quotes = 0;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        if c == '"' && previous != '\\' {
            quotes += 1;
        }
        if c == '/' && previous == '/' && quotes % 2 == 0 {
            return &line[..at - 1];
        }
        previous = c;
    }
    line
}

/// Does `name` occur in `code` as a whole word? (`Instant` but not `Instantly`; `rand::` but
/// not `operand::`.)
fn contains_word(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + name.len()..].chars().next();
        let starts_word = !before.is_some_and(is_ident_char);
        let ends_word = !name.ends_with(is_ident_char) || !after.is_some_and(is_ident_char);
        starts_word && ends_word
    })
}

/// The top-level items of the first `std::{...}` group in `statement` (`time::Duration`, `fs`).
fn std_group_items(statement: &str) -> Vec<String> {
    let Some(start) = statement.find("std::{") else {
        return Vec::new();
    };
    let mut items = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in statement[start + "std::{".len()..].chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current);
    items
        .into_iter()
        .map(|item| item.trim().to_string())
        .filter(|i| !i.is_empty())
        .collect()
}

/// Every forbidden name in a source text, by line.
fn forbidden_hits(text: &str) -> Vec<Hit> {
    let mut hits = Vec::new();
    // A `use` statement that spans lines is gathered whole to look inside its `std::{...}`.
    let mut statement: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim_start().starts_with("//") {
            continue;
        }
        let code = strip_trailing_comment(raw);
        for (name, _) in FORBIDDEN {
            if contains_word(code, name) {
                hits.push(Hit { line, name });
            }
        }
        let starts_use = code.trim_start().starts_with("use ") || code.contains("pub use ");
        if statement.is_none() && starts_use {
            statement = Some((line, String::new()));
        }
        if let Some((first_line, gathered)) = statement.as_mut() {
            gathered.push_str(code);
            if code.contains(';') {
                for item in std_group_items(gathered) {
                    let module = item.split("::").next().unwrap_or_default().trim();
                    let found = FORBIDDEN.iter().find(|(name, _)| {
                        FORBIDDEN_STD_MODULES.contains(&module) && *name == format!("std::{module}")
                    });
                    if let Some((name, _)) = found {
                        hits.push(Hit {
                            line: *first_line,
                            name,
                        });
                    }
                }
                statement = None;
            }
        }
    }
    hits
}

/// Does the text start (after blank lines) with a `//!` module doc?
fn starts_with_module_doc(text: &str) -> bool {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|l| l.starts_with("//!"))
}

fn display(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The deterministic core names no I/O, clock or unseeded randomness.
#[test]
fn deterministic_core_uses_no_io_clock_or_unseeded_randomness() {
    let root = root();
    for required in &CORE_PATHS[..CORE_PATHS_REQUIRED] {
        assert!(
            root.join(required).exists(),
            "{required} is missing: update CORE_PATHS in tidy.rs"
        );
    }
    let mut report = Vec::new();
    let mut scanned = 0;
    for path in CORE_PATHS.iter().flat_map(|p| rust_files(&root.join(p))) {
        scanned += 1;
        let text = std::fs::read_to_string(&path).expect("readable source file");
        for hit in forbidden_hits(&text) {
            let why = FORBIDDEN
                .iter()
                .find(|(name, _)| *name == hit.name)
                .map(|(_, why)| *why);
            let source = text.lines().nth(hit.line - 1).unwrap_or_default().trim();
            report.push(format!(
                "{}:{}: `{}` ({}): {source}",
                display(&path),
                hit.line,
                hit.name,
                why.unwrap_or_default()
            ));
        }
    }
    assert!(
        scanned >= 2,
        "scanned only {scanned} files: is the tree where tidy.rs thinks?"
    );
    assert!(
        report.is_empty(),
        "the deterministic core must not name I/O, clocks or unseeded randomness \
         (DESIGN.md, 'a deterministic core'):\n{}",
        report.join("\n")
    );
}

/// Every source file of every crate starts with a `//!` module doc.
#[test]
fn every_source_file_starts_with_a_module_doc() {
    let root = root();
    let files: Vec<PathBuf> = SOURCE_ROOTS
        .iter()
        .flat_map(|r| rust_files(&root.join(r)))
        .collect();
    assert!(
        files.len() >= SOURCE_ROOTS.len(),
        "found only {} source files",
        files.len()
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|path| !starts_with_module_doc(&std::fs::read_to_string(path).unwrap_or_default()))
        .map(|path| display(path))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` module doc saying what they own:\n{}",
        missing.join("\n")
    );
}

/// The scanner finds forbidden names in code, by line, and nowhere else.
#[test]
fn scanner_finds_forbidden_names() {
    let source = "\
//! Never use std::time here.
use std::collections::HashMap;
use std::time::Duration;
fn f() {
    // Instant::now() would break replay.
    let t = Instant::now(); // and a comment naming SystemTime
    let r = rand::thread_rng();
    let url = \"http://x\"; let s = std::fs::read(url);
}
";
    let hits = forbidden_hits(source);
    let found: Vec<(usize, &str)> = hits.iter().map(|h| (h.line, h.name)).collect();
    assert_eq!(
        found,
        [
            (3, "std::time"),
            (6, "Instant"),
            (7, "thread_rng"),
            (7, "rand::"),
            (8, "std::fs")
        ]
    );
}

/// Whole words only: longer identifiers that contain a forbidden name are fine.
#[test]
fn scanner_matches_whole_words() {
    let source = "let instantly = Instantly::new(); let x = operand::y(); let t = my_tokio_like;";
    assert_eq!(forbidden_hits(source), []);
    assert_eq!(
        forbidden_hits("let x = ::std::env::var(\"SEED\");").len(),
        1
    );
}

/// A grouped `use std::{...}`, on one line or several, is looked inside.
#[test]
fn scanner_looks_inside_grouped_std_imports() {
    let one_line = "use std::{collections::VecDeque, time::Duration};";
    assert_eq!(
        forbidden_hits(one_line),
        [Hit {
            line: 1,
            name: "std::time"
        }]
    );
    let many_lines = "pub use std::{\n    cell::RefCell,\n    fs,\n    net::{TcpStream},\n};\n";
    assert_eq!(
        forbidden_hits(many_lines),
        [
            Hit {
                line: 1,
                name: "std::fs"
            },
            Hit {
                line: 1,
                name: "std::net"
            }
        ]
    );
    assert_eq!(forbidden_hits("use std::{fmt, collections::BTreeMap};"), []);
}

/// The module-doc check accepts `//!` first (after blank lines) and nothing else.
#[test]
fn module_doc_check() {
    assert!(starts_with_module_doc(
        "\n//! What this module owns.\nfn f() {}"
    ));
    assert!(!starts_with_module_doc(
        "/// An item doc, not a module doc.\nfn f() {}"
    ));
    assert!(!starts_with_module_doc("use std::fmt;\n//! Too late.\n"));
    assert!(!starts_with_module_doc(""));
}
