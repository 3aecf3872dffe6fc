//! What the checker checks against: a sequential specification ([`Model`]) and operations with
//! their real-time intervals ([`Timed`]), as in Porcupine's `Model` and `Operation`.

use std::hash::Hash;

/// One operation in a history: what it was (with its recorded output, inside `op`) and when the
/// client called it and saw it return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed<O> {
    /// The client that issued it (for reports only: the checker orders by time, not by client).
    pub client: u64,
    /// The operation with its input and its recorded output.
    pub op: O,
    /// When it was called.
    pub call_ns: u64,
    /// When it returned; `None` when the client never learned the outcome: it may then take
    /// effect at any time after its call, or never (its return is at infinity). Such an
    /// operation has no recorded output, so [`Model::step`] must accept it from every state.
    pub return_ns: Option<u64>,
}

/// A sequential specification: an initial state and a step function that says whether an
/// operation, with the output the history recorded for it, is legal from a state, and if so
/// which state follows. The checker asks whether some order of the history's operations that
/// respects real time (an operation that returned before another was called comes first) is a
/// legal sequence of steps from [`Model::init`].
///
/// `partition` splits a history into independent parts (for a key/value store: one per key),
/// checked one by one; a history is linearizable when every part is (Herlihy & Wing's locality).
pub trait Model {
    /// An operation with its input and recorded output.
    type Op;
    /// The state of the object. The checker keeps one per cached search point, clones it on
    /// every step and hashes it, so keep it small and its `Hash` cheap (hash a digest kept in
    /// the state rather than a large value; `Eq` must still compare for real).
    type State: Clone + Eq + Hash;
    /// What names a partition in reports (for a key/value store: the key).
    type Key: Clone + Ord + std::fmt::Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `op` from `state`, or `None` when `op`'s recorded output is impossible
    /// from `state`. Must be a pure function of its arguments.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;

    /// Whether `op` never changes the state: from every state where [`Model::step`] accepts it,
    /// it leads to that same state (a read; a compare-and-set that reports it did not swap).
    /// The search places such operations as soon as they fit, without trying alternatives, so
    /// answering `true` for an operation that may change some state makes the checker wrong;
    /// `false` is always safe, only slower.
    fn is_read_only(&self, op: &Self::Op) -> bool;

    /// Whether `op` could be accepted from `state`, or from a state reached from it by applying
    /// some of `writes` (operations that are not read-only, each at most once, in any order).
    /// The search asks this about the operations due to return soonest, with the writes that
    /// may come before them, and gives up on a configuration on a `false`: it cuts off orders
    /// of writes that a later read shows did not happen.
    ///
    /// An over-approximation is fine: `true` is always safe (the default), only slower; `false`
    /// must be certain, or the checker rejects linearizable histories.
    fn can_become_legal(&self, state: &Self::State, op: &Self::Op, writes: &[&Self::Op]) -> bool {
        let _ = (state, op, writes);
        true
    }

    /// Whether `state` is decided enough for the search to force a read-only operation the
    /// model accepts from it (see the search's rules). A model whose state can stand for several
    /// concrete states (say, appends whose order is not yet observed) answers `false` for such a
    /// state: a read there also chooses among them, and a later operation may need another
    /// choice. `true` (the default) is right for models whose state is always concrete.
    fn is_settled(&self, state: &Self::State) -> bool {
        let _ = state;
        true
    }

    /// The independent parts of `history`: each a key and the indices (into `history`) of its
    /// operations. Every operation belongs to exactly one part; the order of parts is the order
    /// in which they are checked and reported, so make it deterministic.
    fn partition(&self, history: &[Timed<Self::Op>]) -> Vec<(Self::Key, Vec<usize>)>;

    /// A partition's key for people.
    fn describe_key(&self, key: &Self::Key) -> String;

    /// An operation for people, without its times (the report adds them).
    fn describe_op(&self, op: &Self::Op) -> String;

    /// A state for people.
    fn describe_state(&self, state: &Self::State) -> String;
}
