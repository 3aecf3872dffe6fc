//! A linearizability checker for histories of operations: Wing & Gong's search with Lowe's
//! cache of visited configurations and per-key partitioning, as Porcupine implements it.
//!
//! A history is linearizable when its operations can be put in one order that (1) respects real
//! time: an operation that returned before another was called comes first, and (2) is a legal
//! sequential run of the object ([`Model`]), every operation producing the output the client
//! recorded. Operations whose outcome the client never learned (`ok: null` in a history file)
//! may take effect at any time after their call, or not at all. An append among them that no
//! read shows, on a key with no compare-and-set, is left out before the search: it can always
//! take effect last, where nothing sees it ([`KvOp::drop_unseen_appends`]).
//!
//! # Layout
//! - [`model`]: the [`Model`] trait (initial state, step, partition) and [`Timed`] operations.
//! - [`kv`]: the key/value model ([`KvModel`]): `get`, `put`, `append`, `delete`, `cas`,
//!   partitioned by key.
//! - [`generate`]: linearizable key/value histories of any size and concurrency, for tests and
//!   benchmarks.
//! - `search`: the search for one partition (Porcupine's `checkSingle`, with a compact cache).
//! - this module: [`check`] for any model, [`check_history`] for key/value histories read with
//!   [`crate::history`], and the [`Report`] with its [`Verdict`].
//!
//! # Never a pass by timing out
//! Deciding linearizability is NP-complete; a hard history can take the search forever. Each
//! partition gets a budget of search steps ([`DEFAULT_MAX_STEPS`], or
//! [`CheckOptions::max_steps`]), counted, never timed, so the same history gets the same answer
//! on any machine. A partition that runs out is [`Verdict::Undecided`], which is not a pass:
//! a test must fail on it, as on [`Verdict::NotLinearizable`].
//!
//! ```
//! use shardcore::history::HistoryOp;
//! use shardcore::linearizability::{check_history, Verdict};
//!
//! // Client 1 writes "x" and returns; client 2 then reads the key as absent: a stale read.
//! let history = [
//!     HistoryOp::put(1, "k", "x", 0, 10),
//!     HistoryOp::get(2, "k", None, 20, 30),
//! ];
//! let report = check_history(&history);
//! let Verdict::NotLinearizable(violation) = &report.verdict else { panic!("{report}") };
//! assert_eq!(violation.key, "k");
//! assert_eq!(violation.blocked.index, 1);
//! ```

pub mod generate;
pub mod kv;
pub mod model;
mod search;

use std::fmt;

use bytes::Bytes;

pub use kv::{KvModel, KvOp};
pub use model::{Model, Timed};

use crate::history::HistoryOp;
use search::Outcome;

/// The default step budget per partition (per key). A step is one candidate looked at, tried
/// or undone (see the `search` module). Generated linearizable histories take about 15 steps
/// per operation with 15 clients spread over 5 keys, 50 to 250 with 15 clients on one key
/// (`benches/checker.rs`), so this decides partitions of a million operations and more at
/// ordinary concurrency, while a pathological search stops after about 3 to 4 seconds. Memory
/// stays well below one byte per step (at most one cached configuration per step tried;
/// a search that used the whole budget peaked at about 320 MB).
pub const DEFAULT_MAX_STEPS: u64 = 50_000_000;

/// How many operations before the failure point a [`Violation`] describes.
pub const VIOLATION_PREFIX_TAIL_OPS: usize = 8;

/// How to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// The step budget of each partition (see [`DEFAULT_MAX_STEPS`]).
    pub max_steps: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps: DEFAULT_MAX_STEPS,
        }
    }
}

/// An operation named in a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRef {
    /// Its index in the history given to the checker.
    pub index: usize,
    /// Its client.
    pub client: u64,
    /// When it was called.
    pub call_ns: u64,
    /// When it returned (`None`: outcome unknown).
    pub return_ns: Option<u64>,
    /// What it did and saw ([`Model::describe_op`]).
    pub description: String,
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} client {} [{} ns, ",
            self.index, self.client, self.call_ns
        )?;
        match self.return_ns {
            Some(return_ns) => write!(f, "{return_ns} ns]")?,
            None => f.write_str("no return]")?,
        }
        write!(f, " {}", self.description)
    }
}

/// Why a partition is not linearizable: the deepest point the search reached, the operation it
/// could not place there, and what else was open then. (Like Porcupine's longest linearizable
/// prefix: the culprit is usually among `blocked`, `pending` and the end of the prefix.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation<K> {
    /// The partition's key.
    pub key: K,
    /// The key for people.
    pub key_name: String,
    /// The longest linearizable order of the key's operations found (indices into the
    /// history), in that order.
    pub prefix: Vec<usize>,
    /// The last [`VIOLATION_PREFIX_TAIL_OPS`] operations of `prefix`, described.
    pub prefix_tail: Vec<OpRef>,
    /// The state after `prefix`, for people.
    pub state: String,
    /// The operation that could not be placed after `prefix`: no order of the operations that
    /// may come before its return makes its recorded output possible.
    pub blocked: OpRef,
    /// The other operations of the key called before `blocked` returned and not in `prefix`.
    pub pending: Vec<OpRef>,
    /// Steps the partition's search took.
    pub steps: u64,
}

impl<K> Violation<K> {
    fn remap(&mut self, origin: &[usize]) {
        for index in &mut self.prefix {
            *index = origin[*index];
        }
        let refs = self.prefix_tail.iter_mut().chain(&mut self.pending);
        for op in refs.chain(std::iter::once(&mut self.blocked)) {
            op.index = origin[op.index];
        }
    }
}

impl<K> fmt::Display for Violation<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "not linearizable: key {}", self.key_name)?;
        let shown = self.prefix_tail.len();
        write!(
            f,
            "  the longest linearizable order found has {} operation(s) of this key",
            self.prefix.len()
        )?;
        if shown > 0 {
            write!(f, "; its last {shown}:")?;
        }
        writeln!(f)?;
        for op in &self.prefix_tail {
            writeln!(f, "    {op}")?;
        }
        writeln!(
            f,
            "  after it the key holds {}, and no order of the operations left lets this one take \
             effect before it returned:",
            self.state
        )?;
        writeln!(f, "    {}", self.blocked)?;
        if !self.pending.is_empty() {
            writeln!(f, "  also called before it returned, and not placed:")?;
            for op in &self.pending {
                writeln!(f, "    {op}")?;
            }
        }
        write!(f, "  (search steps for this key: {})", self.steps)
    }
}

/// A partition whose search ran out of steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecided<K> {
    /// The first undecided partition's key.
    pub key: K,
    /// The key for people.
    pub key_name: String,
    /// The steps it took: its budget, or a few more (the last step looks at several
    /// operations at once).
    pub steps: u64,
    /// The budget per partition.
    pub max_steps: u64,
    /// How many partitions were undecided in all.
    pub partitions: usize,
}

impl<K> fmt::Display for Undecided<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "undecided: the search for key {} used up its budget of {} steps",
            self.key_name, self.max_steps
        )?;
        if self.partitions > 1 {
            write!(f, " ({} keys undecided in all)", self.partitions)?;
        }
        write!(f, "; this is not a pass")
    }
}

/// The answer for a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<K = Bytes> {
    /// Every partition is linearizable.
    Linearizable,
    /// A partition is not (the first one found, in partition order).
    NotLinearizable(Box<Violation<K>>),
    /// No partition is known not to be linearizable, but some ran out of steps.
    Undecided(Undecided<K>),
}

impl<K> Verdict<K> {
    /// Whether the history is known to be linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// The violation, if the history is not linearizable.
    pub fn violation(&self) -> Option<&Violation<K>> {
        match self {
            Verdict::NotLinearizable(violation) => Some(violation),
            _ => None,
        }
    }
}

impl<K> fmt::Display for Verdict<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable(violation) => violation.fmt(f),
            Verdict::Undecided(undecided) => undecided.fmt(f),
        }
    }
}

/// The verdict with what it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report<K = Bytes> {
    /// The answer.
    pub verdict: Verdict<K>,
    /// Operations in the history given.
    pub ops: usize,
    /// Of those, operations the checker ignored (a `get` without an answer, a write the server
    /// said did not happen, an append of unknown outcome that no read shows on a key without
    /// compare-and-set: see [`KvOp::drop_unseen_appends`]).
    pub ignored: usize,
    /// Partitions (keys) in the history.
    pub partitions: usize,
    /// Partitions searched: all of them, unless one was not linearizable (the search stops
    /// there).
    pub partitions_checked: usize,
    /// Search steps taken, summed over partitions.
    pub steps: u64,
    /// The most steps one partition took.
    pub max_partition_steps: u64,
}

impl<K> fmt::Display for Report<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.verdict)?;
        write!(
            f,
            "{} operations ({} ignored), {} keys ({} searched), {} steps (at most {} for one key)",
            self.ops,
            self.ignored,
            self.partitions,
            self.partitions_checked,
            self.steps,
            self.max_partition_steps
        )
    }
}

/// Checks a history of any model, partition by partition in the order [`Model::partition`]
/// gives, stopping at the first partition that is not linearizable. Indices in the report are
/// indices into `history`. Panics if an operation returns before its call.
pub fn check<M: Model>(
    model: &M,
    history: &[Timed<M::Op>],
    options: &CheckOptions,
) -> Report<M::Key> {
    let partitions = model.partition(history);
    let mut report = Report {
        verdict: Verdict::Linearizable,
        ops: history.len(),
        ignored: 0,
        partitions: partitions.len(),
        partitions_checked: 0,
        steps: 0,
        max_partition_steps: 0,
    };
    let mut undecided: Option<Undecided<M::Key>> = None;
    for (key, members) in partitions {
        let outcome = search::search(model, history, &members, options.max_steps);
        report.partitions_checked += 1;
        let steps = match &outcome {
            Outcome::Linearizable { steps }
            | Outcome::NotLinearizable { steps, .. }
            | Outcome::Undecided { steps } => *steps,
        };
        report.steps += steps;
        report.max_partition_steps = report.max_partition_steps.max(steps);
        match outcome {
            Outcome::Linearizable { .. } => {}
            Outcome::Undecided { steps } => match &mut undecided {
                Some(first) => first.partitions += 1,
                None => {
                    undecided = Some(Undecided {
                        key_name: model.describe_key(&key),
                        key,
                        steps,
                        max_steps: options.max_steps,
                        partitions: 1,
                    })
                }
            },
            Outcome::NotLinearizable {
                steps,
                prefix,
                state,
                blocked,
                pending,
            } => {
                let describe = |member: usize| op_ref(model, history, members[member]);
                let tail_from = prefix.len().saturating_sub(VIOLATION_PREFIX_TAIL_OPS);
                report.verdict = Verdict::NotLinearizable(Box::new(Violation {
                    key_name: model.describe_key(&key),
                    key,
                    prefix_tail: prefix[tail_from..].iter().map(|&m| describe(m)).collect(),
                    prefix: prefix.iter().map(|&m| members[m]).collect(),
                    state: model.describe_state(&state),
                    blocked: describe(blocked),
                    pending: pending.iter().map(|&m| describe(m)).collect(),
                    steps,
                }));
                return report;
            }
        }
    }
    if let Some(undecided) = undecided {
        report.verdict = Verdict::Undecided(undecided);
    }
    report
}

fn op_ref<M: Model>(model: &M, history: &[Timed<M::Op>], index: usize) -> OpRef {
    let op = &history[index];
    OpRef {
        index,
        client: op.client,
        call_ns: op.call_ns,
        return_ns: op.return_ns,
        description: model.describe_op(&op.op),
    }
}

/// Checks a key/value history (as read by [`crate::history::read_all`]) with the default
/// budget. Indices in the report are indices into `history`.
pub fn check_history(history: &[HistoryOp]) -> Report {
    check_history_with(history, &CheckOptions::default())
}

/// Checks a key/value history with these options. Panics if an operation is invalid
/// ([`HistoryOp::validate`]; the history reader never returns one).
pub fn check_history_with(history: &[HistoryOp], options: &CheckOptions) -> Report {
    let mut ops = Vec::with_capacity(history.len());
    let mut origin = Vec::with_capacity(history.len());
    for (index, op) in history.iter().enumerate() {
        if let Err(problem) = op.validate() {
            panic!("history operation #{index} is invalid: {problem}: {op:?}");
        }
        if let Some(timed) = KvOp::from_history(op) {
            ops.push(timed);
            origin.push(index);
        }
    }
    KvOp::drop_unseen_appends(&mut ops, &mut origin);
    KvOp::enable_lazy_appends(&mut ops);
    let mut report = check(&KvModel, &ops, options);
    report.ops = history.len();
    report.ignored = history.len() - ops.len();
    if let Verdict::NotLinearizable(violation) = &mut report.verdict {
        violation.remap(&origin);
    }
    report
}
