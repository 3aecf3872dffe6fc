//! The key/value model: `get`, `put`, `append`, `delete` and `cas` on one key at a time, with the
//! history partitioned by key (operations on different keys never constrain each other).
//!
//! The state of a key is its value or absent, where a [`KvValue`] is the bytes plus a polynomial
//! hash of them kept up to date as appends grow the value.
//!
//! **Appends stay unordered until someone looks** ([`KvState`]): an append linearized since the
//! key was last observed joins a set of pending appends instead of being concatenated, and the
//! next operation that observes the value (a get, a compare-and-set) accepts it when the value
//! is the last observed one followed by the pending appends in *some* order that respects real
//! time among them (one that returned before another was called comes first); a put or a delete
//! discards them. Orders of concurrent appends that nobody could tell apart are then one search
//! state instead of n! of them: without this, five clients appending concurrently for ten
//! rounds before one final read is 120^10 orders. Sound: the order the observation finds is a
//! valid order of those appends, and they are the only operations between the two
//! observations. Complete: every concrete order is one of the orders considered. A key whose
//! history holds a compare-and-set of unknown outcome is checked with concrete values instead,
//! since such an operation would have to branch on the hidden order. Appended values grow
//! with the history (a few kilobytes after a thousand appends), and the search clones, hashes
//! and compares the state at every step: the hash makes hashing O(1) and lets unequal values
//! compare unequal without reading them; equal hashes still compare the bytes, so a collision
//! can never make the checker accept a wrong output.

use std::hash::{Hash, Hasher};

use bytes::{Bytes, BytesMut};

use super::model::{Model, Timed};
use crate::history::{display_bytes, display_optional_bytes, HistoryOp, OpKind};

/// How many characters of a key or value a description shows.
const DESCRIBE_CHARS: usize = 48;

/// The base of the value hash: a fixed odd number, so that multiplying by it is invertible
/// modulo 2^64. The hash only has to be fast and to compose across appends: equal hashes are
/// always confirmed by comparing the bytes, so a collision costs time, never a wrong verdict.
const HASH_BASE: u64 = 0x9e37_79b9_7f4a_7c15;
/// HASH_BASE², HASH_BASE³ and HASH_BASE⁴, for hashing four bytes per step.
const HASH_BASE_2: u64 = HASH_BASE.wrapping_mul(HASH_BASE);
const HASH_BASE_3: u64 = HASH_BASE_2.wrapping_mul(HASH_BASE);
const HASH_BASE_4: u64 = HASH_BASE_2.wrapping_mul(HASH_BASE_2);

/// `HASH_BASE^exponent` modulo 2^64.
fn base_power(mut exponent: usize) -> u64 {
    let (mut result, mut square) = (1u64, HASH_BASE);
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = result.wrapping_mul(square);
        }
        square = square.wrapping_mul(square);
        exponent >>= 1;
    }
    result
}

/// `(h(bytes), HASH_BASE^len)`, where `h(b) = Σ (b[i] + 1) · BASE^(len-1-i) mod 2^64`, so that
/// `h(a ++ b) = h(a) · BASE^len(b) + h(b)`. Four bytes per step: the four products are
/// independent, so the dependency chain is one multiply-add per four bytes, not per byte (get
/// outputs are whole values, hashed once each, and long histories read megabytes).
fn poly_hash(bytes: &[u8]) -> (u64, u64) {
    let mut hash = 0u64;
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        let digit = |i: usize| u64::from(c[i]) + 1;
        let block = digit(0)
            .wrapping_mul(HASH_BASE_3)
            .wrapping_add(digit(1).wrapping_mul(HASH_BASE_2))
            .wrapping_add(digit(2).wrapping_mul(HASH_BASE))
            .wrapping_add(digit(3));
        hash = hash.wrapping_mul(HASH_BASE_4).wrapping_add(block);
    }
    for &byte in chunks.remainder() {
        hash = hash
            .wrapping_mul(HASH_BASE)
            .wrapping_add(u64::from(byte) + 1);
    }
    (hash, base_power(bytes.len()))
}

/// A value with its hash.
#[derive(Clone, Debug)]
pub struct KvValue {
    bytes: Bytes,
    hash: u64,
}

impl KvValue {
    /// A value of these bytes.
    pub fn new(bytes: Bytes) -> Self {
        let (hash, _) = poly_hash(&bytes);
        KvValue { bytes, hash }
    }

    /// The bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl PartialEq for KvValue {
    fn eq(&self, other: &Self) -> bool {
        // Same hash, then the same allocation (a value passed along unchanged) or the same bytes.
        self.hash == other.hash
            && self.bytes.len() == other.bytes.len()
            && (self.bytes.as_ptr() == other.bytes.as_ptr() || self.bytes == other.bytes)
    }
}

impl Eq for KvValue {}

impl Hash for KvValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A suffix to append, with what `poly_hash` needs to extend a value's hash by it.
#[derive(Clone, Debug)]
pub struct Suffix {
    value: KvValue,
    /// `HASH_BASE^len`.
    power: u64,
}

/// What one key/value operation did, with what the client saw.
#[derive(Clone, Debug)]
pub enum KvAction {
    /// A read that returned this value (`None`: absent).
    Get(Option<KvValue>),
    /// An overwrite.
    Put(KvValue),
    /// An append (to an absent key: creates it).
    Append(Suffix),
    /// A delete.
    Delete,
    /// A compare-and-set that swapped: the key held `expected`, and now holds `value`.
    CasSwapped {
        /// What it expected and found (`None`: absent).
        expected: Option<KvValue>,
        /// What it wrote.
        value: KvValue,
    },
    /// A compare-and-set that did not swap: the key held `found`, not `expected`.
    CasFailed {
        /// What it expected (`None`: absent).
        expected: Option<KvValue>,
        /// What it would have written.
        value: KvValue,
        /// What it found instead (`None`: absent).
        found: Option<KvValue>,
    },
    /// A compare-and-set whose outcome the client does not know: it swaps if it takes effect
    /// while the key holds `expected`, and changes nothing otherwise.
    CasUnknown {
        /// What it expects (`None`: absent).
        expected: Option<KvValue>,
        /// What it writes if it swaps.
        value: KvValue,
    },
}

/// One key/value operation for the checker: its key and what it did.
#[derive(Clone, Debug)]
pub struct KvOp {
    /// The key.
    pub key: Bytes,
    /// What it did and saw.
    pub action: KvAction,
    /// Whether the client saw it complete (`false`: outcome unknown), for descriptions.
    pub known: bool,
    /// A number unique among the operations checked together (an append is known by it while
    /// it is pending).
    pub id: u32,
    /// When it was called (for the real-time order among pending appends).
    pub call_ns: u64,
    /// When it returned (`None`: never, as in [`Timed::return_ns`]).
    pub return_ns: Option<u64>,
    /// Whether an append joins the pending set ([`KvState`]) rather than being concatenated at
    /// once. Set by [`KvOp::enable_lazy_appends`] for keys where that is sound.
    pub lazy: bool,
}

/// An append linearized since the key was last observed, waiting for its place in the order.
#[derive(Clone, Debug)]
struct PendingAppend {
    id: u32,
    suffix: Suffix,
    call_ns: u64,
    return_ns: Option<u64>,
}

/// The state of one key: the value as last observed or written (`base`), followed by the
/// appends linearized since then, in an order not yet decided (`pending`, sorted by id).
#[derive(Clone, Debug, Default)]
pub struct KvState {
    base: Option<KvValue>,
    pending: Vec<PendingAppend>,
}

impl KvState {
    fn settled(value: Option<KvValue>) -> KvState {
        KvState {
            base: value,
            pending: Vec::new(),
        }
    }

    /// The value, when no pending append leaves it open.
    pub fn value(&self) -> Option<&KvValue> {
        debug_assert!(
            self.pending.is_empty(),
            "the value is open while appends are pending"
        );
        self.base.as_ref()
    }

    /// Whether the state can hold `target`: `base` followed by every pending append in some
    /// order that respects real time among them.
    fn can_be(&self, target: &Option<KvValue>) -> bool {
        if self.pending.is_empty() {
            return self.base == *target;
        }
        let Some(target) = target else {
            return false; // an append makes the key present
        };
        let base = self.base.as_ref().map_or(&[][..], |b| &b.bytes[..]);
        let total = base.len()
            + self
                .pending
                .iter()
                .map(|p| p.suffix.value.bytes.len())
                .sum::<usize>();
        if target.bytes.len() != total || !target.bytes.starts_with(base) {
            return false;
        }
        let mut used = vec![false; self.pending.len()];
        let mut failed = std::collections::HashSet::new();
        order_exists(
            &target.bytes[base.len()..],
            &self.pending,
            &mut used,
            &mut failed,
        )
    }
}

/// Whether `rest` is the pending appends not yet `used`, one after another, in an order where
/// none comes before one that returned before it was called. Depth-first, remembering the
/// (position, used set) pairs that led nowhere, so identical values cost no more than distinct.
fn order_exists(
    rest: &[u8],
    pending: &[PendingAppend],
    used: &mut Vec<bool>,
    failed: &mut std::collections::HashSet<(usize, Vec<bool>)>,
) -> bool {
    if used.iter().all(|&u| u) {
        return rest.is_empty();
    }
    if failed.contains(&(rest.len(), used.clone())) {
        return false;
    }
    for i in 0..pending.len() {
        if used[i] {
            continue;
        }
        let candidate = &pending[i];
        let value = &candidate.suffix.value.bytes[..];
        if !rest.starts_with(value) {
            continue;
        }
        // An unused append that returned before this one was called must come first.
        let blocked = pending.iter().zip(used.iter()).any(|(other, &u)| {
            !u && other.id != candidate.id && other.return_ns.is_some_and(|r| r < candidate.call_ns)
        });
        if blocked {
            continue;
        }
        used[i] = true;
        if order_exists(&rest[value.len()..], pending, used, failed) {
            return true;
        }
        used[i] = false;
    }
    failed.insert((rest.len(), used.clone()));
    false
}

impl PartialEq for KvState {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base
            && self.pending.len() == other.pending.len()
            && self
                .pending
                .iter()
                .zip(&other.pending)
                .all(|(a, b)| a.id == b.id)
    }
}

impl Eq for KvState {}

impl Hash for KvState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.base.hash(state);
        for pending in &self.pending {
            state.write_u32(pending.id);
        }
    }
}

impl KvOp {
    /// Leaves out of `ops` (and of `origin`, kept parallel to it) every append of unknown
    /// outcome that no read of its key shows, on keys with no compare-and-set; returns how
    /// many. A read shows an append when its output holds the appended bytes anywhere (an
    /// over-approximation: a coincidence only keeps an append in).
    ///
    /// The verdict is the same without them. Such an append never returned, so real time lets
    /// it take effect last, after every other operation on its key, where it changes no
    /// recorded output: with it placed there, any linearization of the key without it is one
    /// with it. Conversely, in any linearization with it, no read comes between it and the
    /// next put or delete (the read would show it), so only appends (whose outputs do not
    /// depend on the value) see the value it made; without it, every recorded output still
    /// holds. A compare-and-set could see it (one fails on a value holding it), so keys with
    /// one keep theirs.
    ///
    /// Why: the search tries such an append at every point after its call, and a wrong
    /// placement lives until a read refutes it; with several of them, every subset does. A
    /// 27,249-operation history of the `pause` real-process test (6 clients; 8 appends that a
    /// paused leader never committed) used up its 50,000,000 steps on one key.
    pub fn drop_unseen_appends(ops: &mut Vec<Timed<KvOp>>, origin: &mut Vec<usize>) -> usize {
        let mut with_cas = std::collections::BTreeSet::new();
        let mut reads: std::collections::BTreeMap<&Bytes, Vec<&Bytes>> = Default::default();
        for timed in ops.iter() {
            match &timed.op.action {
                KvAction::CasSwapped { .. }
                | KvAction::CasFailed { .. }
                | KvAction::CasUnknown { .. } => {
                    with_cas.insert(&timed.op.key);
                }
                KvAction::Get(Some(value)) => {
                    reads.entry(&timed.op.key).or_default().push(value.bytes())
                }
                _ => {}
            }
        }
        let unseen: Vec<bool> = ops
            .iter()
            .map(|timed| {
                let KvAction::Append(suffix) = &timed.op.action else {
                    return false;
                };
                let appended = &suffix.value.bytes()[..];
                let shown = |output: &&Bytes| memchr::memmem::find(output, appended).is_some();
                timed.return_ns.is_none()
                    && !with_cas.contains(&timed.op.key)
                    && !reads
                        .get(&timed.op.key)
                        .is_some_and(|outputs| outputs.iter().any(shown))
            })
            .collect();
        let mut keep = unseen.iter().map(|&unseen| !unseen);
        ops.retain(|_| keep.next().expect("one flag per operation"));
        let mut keep = unseen.iter().map(|&unseen| !unseen);
        origin.retain(|_| keep.next().expect("one flag per operation"));
        unseen.iter().filter(|&&unseen| unseen).count()
    }

    /// Numbers the operations and lets appends stay unordered ([`KvState`]) on every key whose
    /// history has no compare-and-set of unknown outcome.
    pub fn enable_lazy_appends(ops: &mut [Timed<KvOp>]) {
        let mut concrete_keys = std::collections::BTreeSet::new();
        for timed in ops.iter() {
            if matches!(timed.op.action, KvAction::CasUnknown { .. }) {
                concrete_keys.insert(timed.op.key.clone());
            }
        }
        for (id, timed) in ops.iter_mut().enumerate() {
            timed.op.id = u32::try_from(id).expect("fewer than 2^32 operations");
            timed.op.lazy = !concrete_keys.contains(&timed.op.key);
        }
    }
}

impl KvOp {
    /// The checker's view of a history operation, or `None` when the checker ignores it (a
    /// `get` without an answer, or a write the server said did not happen): see the
    /// [`crate::history`] docs. `op` must be valid ([`HistoryOp::validate`]).
    pub fn from_history(op: &HistoryOp) -> Option<Timed<KvOp>> {
        let value = || KvValue::new(op.value.clone().expect("a valid write has a value"));
        let optional = |bytes: &Option<Bytes>| bytes.clone().map(KvValue::new);
        let action = match (op.op, op.ok) {
            (OpKind::Get, Some(true)) => KvAction::Get(optional(&op.output)),
            (OpKind::Get, _) | (OpKind::Put | OpKind::Append | OpKind::Delete, Some(false)) => {
                return None
            }
            (OpKind::Put, _) => KvAction::Put(value()),
            (OpKind::Append, _) => {
                let value = value();
                let (_, power) = poly_hash(value.bytes());
                KvAction::Append(Suffix { value, power })
            }
            (OpKind::Delete, _) => KvAction::Delete,
            (OpKind::Cas, Some(true)) => KvAction::CasSwapped {
                expected: optional(&op.expected),
                value: value(),
            },
            (OpKind::Cas, Some(false)) => KvAction::CasFailed {
                expected: optional(&op.expected),
                value: value(),
                found: optional(&op.output),
            },
            (OpKind::Cas, None) => KvAction::CasUnknown {
                expected: optional(&op.expected),
                value: value(),
            },
        };
        Some(Timed {
            client: op.client,
            op: KvOp {
                key: op.key.clone(),
                action,
                known: op.ok.is_some(),
                id: 0,
                call_ns: op.call_ns,
                return_ns: op.ok.map(|_| op.return_ns),
                lazy: false,
            },
            call_ns: op.call_ns,
            return_ns: op.ok.map(|_| op.return_ns),
        })
    }
}

/// The key/value model, partitioned by key.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type Op = KvOp;
    type State = KvState;
    type Key = Bytes;

    fn init(&self) -> Self::State {
        KvState::default()
    }

    fn step(&self, state: &Self::State, op: &KvOp) -> Option<Self::State> {
        match &op.action {
            KvAction::Get(output) => state
                .can_be(output)
                .then(|| KvState::settled(output.clone())),
            KvAction::Put(value) => Some(KvState::settled(Some(value.clone()))),
            KvAction::Append(suffix) if op.lazy => {
                let mut next = state.clone();
                let pending = PendingAppend {
                    id: op.id,
                    suffix: suffix.clone(),
                    call_ns: op.call_ns,
                    return_ns: op.return_ns,
                };
                let at = next.pending.partition_point(|p| p.id < op.id);
                next.pending.insert(at, pending);
                Some(next)
            }
            KvAction::Append(suffix) => Some(KvState::settled(Some(append(state.value(), suffix)))),
            KvAction::Delete => Some(KvState::settled(None)),
            KvAction::CasSwapped { expected, value } => state
                .can_be(expected)
                .then(|| KvState::settled(Some(value.clone()))),
            KvAction::CasFailed {
                expected, found, ..
            } => {
                (found != expected && state.can_be(found)).then(|| KvState::settled(found.clone()))
            }
            KvAction::CasUnknown { expected, value } => {
                // Only on keys without lazy appends (see `enable_lazy_appends`): concrete.
                let current = state.value().cloned();
                Some(if current == *expected {
                    KvState::settled(Some(value.clone()))
                } else {
                    state.clone()
                })
            }
        }
    }

    /// Reads may be forced only where the value is decided: from a state with pending appends a
    /// read also picks their order, which a later operation may need to be another.
    fn is_settled(&self, state: &Self::State) -> bool {
        state.pending.is_empty()
    }

    fn is_read_only(&self, op: &KvOp) -> bool {
        // A delete or an unknown cas can leave some states as they are, but not all.
        matches!(op.action, KvAction::Get(_) | KvAction::CasFailed { .. })
    }

    /// A value can only come from the current one or from a write that sets one (a put, a
    /// delete, a cas), followed by appends. So the target must start with one of those bases,
    /// and the rest must split into the values of distinct appends among `writes`. That catches
    /// what makes histories of concurrent appends hard: a read that saw the appends in one
    /// order, while the search placed them in another. (Where the split is ambiguous, two
    /// appends fitting at the same place, the answer is a safe `true`.)
    fn can_become_legal(&self, state: &Self::State, op: &KvOp, writes: &[&KvOp]) -> bool {
        let target = match &op.action {
            KvAction::Get(output) => output,
            KvAction::CasFailed {
                expected, found, ..
            } => {
                if found == expected {
                    return false;
                }
                found
            }
            KvAction::CasSwapped { expected, .. } => expected,
            _ => return true,
        };
        let Some(target) = target else {
            // Absent: only a delete makes a present key absent.
            let absent = state.base.is_none() && state.pending.is_empty();
            return absent || writes.iter().any(|w| matches!(w.action, KvAction::Delete));
        };
        let target = &target.bytes[..];
        // Pending appends count as appends that may still come (an over-approximation: they
        // must all come, in fact), so a `false` stays certain.
        let pending: Vec<&[u8]> = state
            .pending
            .iter()
            .map(|p| &p.suffix.value.bytes[..])
            .collect();
        let reaches = |base: Option<&KvValue>, with_pending: bool| {
            let base = base.map_or(&[][..], |b| &b.bytes[..]);
            let extra: &[&[u8]] = if with_pending { &pending } else { &[] };
            may_start_with(target, base)
                && splits_into_appends(&target[base.len()..], writes, extra)
        };
        reaches(state.base.as_ref(), true)
            || writes.iter().any(|w| match &w.action {
                KvAction::Put(value)
                | KvAction::CasSwapped { value, .. }
                | KvAction::CasUnknown { value, .. } => reaches(Some(value), false),
                KvAction::Delete => reaches(None, false),
                _ => false,
            })
    }

    fn partition(&self, history: &[Timed<KvOp>]) -> Vec<(Bytes, Vec<usize>)> {
        let mut by_key: std::collections::BTreeMap<&Bytes, Vec<usize>> = Default::default();
        for (index, op) in history.iter().enumerate() {
            by_key.entry(&op.op.key).or_default().push(index);
        }
        by_key
            .into_iter()
            .map(|(key, ops)| (key.clone(), ops))
            .collect()
    }

    fn describe_key(&self, key: &Bytes) -> String {
        display_bytes(key, DESCRIBE_CHARS)
    }

    fn describe_op(&self, op: &KvOp) -> String {
        let show = |value: &KvValue| display_bytes(value.bytes(), DESCRIBE_CHARS);
        let show_optional = |value: &Option<KvValue>| {
            display_optional_bytes(value.as_ref().map(|v| &v.bytes[..]), DESCRIBE_CHARS)
        };
        let text = match &op.action {
            KvAction::Get(output) => format!("get → {}", show_optional(output)),
            KvAction::Put(value) => format!("put {}", show(value)),
            KvAction::Append(suffix) => format!("append {}", show(&suffix.value)),
            KvAction::Delete => "delete".to_string(),
            KvAction::CasSwapped { expected, value } => {
                format!(
                    "cas {} → {} (swapped)",
                    show_optional(expected),
                    show(value)
                )
            }
            KvAction::CasFailed {
                expected,
                value,
                found,
            } => format!(
                "cas {} → {} (failed, found {})",
                show_optional(expected),
                show(value),
                show_optional(found)
            ),
            KvAction::CasUnknown { expected, value } => {
                format!("cas {} → {}", show_optional(expected), show(value))
            }
        };
        if op.known {
            text
        } else {
            format!("{text} (outcome unknown)")
        }
    }

    fn describe_state(&self, state: &Self::State) -> String {
        let base =
            display_optional_bytes(state.base.as_ref().map(|v| &v.bytes[..]), DESCRIBE_CHARS);
        match state.pending.len() {
            0 => base,
            n => format!("{base} followed by {n} appends in an order not yet observed"),
        }
    }
}

/// How many bytes at the end of a prefix [`may_start_with`] compares.
const PREFIX_TAIL_BYTES: usize = 32;

/// Whether `value` may start with `prefix`: false only when certain. Compares the last
/// [`PREFIX_TAIL_BYTES`] of the prefix only: values grow by appends, so two values that differ
/// usually differ near their ends, and comparing kilobytes at every check would cost more than
/// the rare pruning it adds.
fn may_start_with(value: &[u8], prefix: &[u8]) -> bool {
    if prefix.len() > value.len() {
        return false;
    }
    let from = prefix.len().saturating_sub(PREFIX_TAIL_BYTES);
    value[from..prefix.len()] == prefix[from..]
}

/// Whether `rest` may be the values of distinct appends among `writes`, one after another:
/// false only when certain. Walks `rest` from the front; where no unused append fits, false;
/// where more than one fits (or one is empty, or there are too many writes to track), true.
fn splits_into_appends(rest: &[u8], writes: &[&KvOp], pending: &[&[u8]]) -> bool {
    if writes.len() + pending.len() > 128 {
        return true;
    }
    let appends: Vec<&[u8]> = writes
        .iter()
        .filter_map(|w| match &w.action {
            KvAction::Append(suffix) => Some(&suffix.value.bytes[..]),
            _ => None,
        })
        .chain(pending.iter().copied())
        .collect();
    let mut used: u128 = 0;
    let mut at = 0;
    while at < rest.len() {
        let rest = &rest[at..];
        let mut fits = None;
        for (i, &value) in appends.iter().enumerate() {
            if used & 1 << i == 0 && value.len() <= rest.len() && same_bytes(value, rest) {
                if fits.is_some() || value.is_empty() {
                    return true;
                }
                fits = Some((i, value.len()));
            }
        }
        let Some((i, len)) = fits else {
            return false;
        };
        used |= 1 << i;
        at += len;
    }
    true
}

/// Whether `value` equals the start of `rest` (`value.len() <= rest.len()`): the bytes from the
/// end first, where values written by different clients differ, and without a library call for
/// the short values appends usually carry.
fn same_bytes(value: &[u8], rest: &[u8]) -> bool {
    value
        .iter()
        .rev()
        .zip(rest[..value.len()].iter().rev())
        .all(|(a, b)| a == b)
}

/// `state ++ suffix` (the suffix alone when the key is absent), with its hash.
fn append(state: Option<&KvValue>, suffix: &Suffix) -> KvValue {
    let Some(current) = state else {
        return suffix.value.clone();
    };
    let mut bytes = BytesMut::with_capacity(current.bytes.len() + suffix.value.bytes.len());
    bytes.extend_from_slice(&current.bytes);
    bytes.extend_from_slice(&suffix.value.bytes);
    KvValue {
        bytes: bytes.freeze(),
        hash: current
            .hash
            .wrapping_mul(suffix.power)
            .wrapping_add(suffix.value.hash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash of an appended value equals the hash of the whole value computed afresh, and
    /// equality looks at the bytes, not only the hash.
    #[test]
    fn append_keeps_the_hash() {
        let mut state: Option<KvValue> = None;
        let mut whole = Vec::new();
        for part in ["", "a", "bc", "\u{0}", "defghijklmnop", "☃"] {
            let value = KvValue::new(Bytes::from(part));
            let (_, power) = poly_hash(part.as_bytes());
            state = Some(append(state.as_ref(), &Suffix { value, power }));
            whole.extend_from_slice(part.as_bytes());
            assert_eq!(state, Some(KvValue::new(Bytes::from(whole.clone()))));
        }
        let forged = KvValue {
            bytes: Bytes::from_static(b"xyz"),
            hash: KvValue::new(Bytes::from_static(b"abc")).hash,
        };
        assert_ne!(forged, KvValue::new(Bytes::from_static(b"abc")));
        // Leading zero bytes change the hash (each byte counts as byte + 1).
        assert_ne!(poly_hash(b"\0a").0, poly_hash(b"a").0);
    }
}
