//! The search for one partition: Wing & Gong's algorithm with Lowe's cache of visited
//! configurations, as Porcupine implements it (`checker.go`, `checkSingle`), plus pruning rules
//! that keep it from wandering on concurrent histories.
//!
//! The operations' call and return events, sorted by time (calls before returns at equal times,
//! so touching intervals count as concurrent), form a doubly linked list. A *configuration* is a
//! set of operations linearized so far and the state they lead to; those operations are
//! *lifted* out of the list. The operations that may come next, the *candidates*, are the calls
//! before the first return left in the list (the operation of that return must be linearized
//! before anything called after it). The search is depth-first: it linearizes a candidate whose
//! recorded output the model accepts, unless the resulting configuration was reached before
//! (Lowe's cache: it led nowhere then and would lead nowhere now); when no candidate is left, it
//! undoes the last one (*unlifts* it, dancing-links style) and tries the next. It succeeds when
//! every operation that returned is linearized (the ones that never returned can follow in any
//! order), and fails when no order works.
//!
//! Porcupine tries every candidate, in call order. This search, at each configuration
//! ([`Search::level`]):
//! - places a *read-only* candidate ([`Model::is_read_only`]) that the model accepts from the
//!   current state as the only child, and never tries read-only candidates it rejects now;
//! - gives up when an operation due to return soon can no longer be accepted whatever the
//!   writes that may still come before it do ([`Model::can_become_legal`]): a read that saw
//!   concurrent appends in another order than the one being tried;
//! - does not place an operation that never returned where it would change nothing;
//! - tries the other candidates in order of their intervals' midpoints, a better guess than
//!   call order at where an operation took effect when latencies vary.
//!
//! Each rule is argued where it is implemented: none loses a linearization that exists, so the
//! verdict is Porcupine's, only reached sooner. The tests compare it with an exhaustive search.
//!
//! What this implementation adds to keep it fast on long histories:
//! - the list is arrays of `u32` links, not pointers; operations are numbered in call order;
//! - the set of linearized operations is a bitset over `u64` words with a Zobrist hash updated
//!   on every change, so hashing a configuration is O(1) whatever the history's length;
//! - cache entries store the set compactly: the index of the first word that is not all ones
//!   (every operation before it is linearized) and the words from there to the last linearized
//!   operation. That window is short, because an operation cannot be linearized after an
//!   earlier-called one returns unlinearized. Operations that never returned are numbered apart,
//!   in their own words, so that one of them left unlinearized does not stretch every window;
//! - the cache key hashes the model's state (through its `Hash`) with the Zobrist hash; entries
//!   with equal hashes are compared for real (window, state), never trusted on the hash alone.
//!
//! When a partition is not linearizable, the report is the deepest dead end the search met.
//! The fast search skips the soon-due check where it saves little, which lets wrong branches
//! run a level or two past the point where an operation became impossible; so a failing
//! partition is searched a second time with the check everywhere, and that search's deepest
//! dead end names the operation at fault ([`Diligence`]).
//!
//! Every candidate looked at, tried, or undone is one *step*; the search stops with
//! [`Outcome::Undecided`] when the budget runs out, so a result never depends on how fast the
//! machine is.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::model::{Model, Timed};

/// How many of the next returns [`Search::soon_due_can_become_legal`] looks at.
const HORIZON_RETURNS: usize = 32;

/// No node: the end of the list or an absent link.
const NIL: u32 = u32::MAX;

/// The result of searching one partition. Operation numbers are indices into the partition's
/// member list (the slice given to [`search`]).
#[derive(Debug)]
pub(crate) enum Outcome<S> {
    /// Every operation was linearized.
    Linearizable {
        /// Steps taken.
        steps: u64,
    },
    /// No order works.
    NotLinearizable {
        /// Steps taken.
        steps: u64,
        /// The longest linearizable order found, in order.
        prefix: Vec<usize>,
        /// The state after `prefix`.
        state: S,
        /// The operation that could not be placed after `prefix`.
        blocked: usize,
        /// The other operations called before `blocked` returned and not in `prefix`.
        pending: Vec<usize>,
    },
    /// The step budget ran out.
    Undecided {
        /// Steps taken: the budget, or a few more (a level's look-ahead is not cut short).
        steps: u64,
    },
}

/// Searches for a linearization of the operations `members` (indices into `history`), taking at
/// most `max_steps` steps.
pub(crate) fn search<M: Model>(
    model: &M,
    history: &[Timed<M::Op>],
    members: &[usize],
    max_steps: u64,
) -> Outcome<M::State> {
    let first = Search::new(model, history, members, Diligence::Fast).run(max_steps);
    let Outcome::NotLinearizable { steps, .. } = first else {
        return first;
    };
    // The verdict stands; search again, checking for doomed operations at every level, for a
    // report that names the operation at fault rather than one a wrong branch stumbled on.
    match Search::new(model, history, members, Diligence::Thorough).run(max_steps) {
        Outcome::NotLinearizable {
            steps: again,
            prefix,
            state,
            blocked,
            pending,
        } => Outcome::NotLinearizable {
            steps: steps + again,
            prefix,
            state,
            blocked,
            pending,
        },
        // Out of steps the second time (it takes more per level): keep the first report.
        Outcome::Undecided { .. } => first,
        Outcome::Linearizable { .. } => {
            panic!("the second search found a linearization the first ruled out: a checker bug")
        }
    }
}

/// Where [`Search::soon_due_can_become_legal`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Diligence {
    /// At levels with two candidates or more: with one, a doomed operation is found one level
    /// later anyway, so the check would cost more than it saves.
    Fast,
    /// At every level, so that the search never goes deeper than where an operation became
    /// doomed, and the deepest dead end (the report) is about that operation.
    Thorough,
}

/// One configuration on the search's stack.
struct Level<S> {
    /// Its candidates are `Search::candidates[candidates_at..candidates_end]`, in the order
    /// to try them; `cursor` is the next one.
    candidates_at: usize,
    candidates_end: usize,
    cursor: usize,
    /// The call node linearized to reach it from the level below (`NIL` for the first level).
    via: u32,
    /// The state and the highest linearized finite-operation id before `via`.
    state_before: S,
    max_finite_before: i64,
    /// The return node of an operation that can no longer be accepted from here (see
    /// [`Search::soon_due_can_become_legal`]), or `NIL`.
    doomed: u32,
}

/// The best (deepest) dead end seen, for the report.
struct Best<S> {
    /// Operation ids, in linearization order.
    prefix: Vec<u32>,
    state: S,
    blocked: u32,
    pending: Vec<u32>,
}

struct Search<'a, M: Model> {
    model: &'a M,
    /// Operation id → the operation.
    ops: Vec<&'a M::Op>,
    /// Operation id → its index in `members`.
    member_of: Vec<usize>,
    /// Operation id → the order in which candidates are tried (smaller first).
    try_order: Vec<u128>,
    /// Operation id → whether [`Model::is_read_only`] says so.
    read_only: Vec<bool>,
    /// Node → operation id (node 0 is the head sentinel).
    node_op: Vec<u32>,
    /// Call node → its return node; `NIL` for return nodes and the head.
    node_return: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    linearized: Linearized,
    cache: Cache<M::State>,
    /// The candidates of every level on the stack, level after level.
    candidates: Vec<u32>,
    /// Scratch for [`Search::soon_due_can_become_legal`]: the writes, and where each is.
    writes: Vec<&'a M::Op>,
    write_at: Vec<usize>,
    /// The state after the linearized operations.
    state: M::State,
    /// The highest linearized finite-operation id (-1: none).
    max_finite: i64,
    steps: u64,
    best: Option<Best<M::State>>,
    /// The stack is unchanged below this depth since `best` was taken.
    stable_depth: usize,
    diligence: Diligence,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(
        model: &'a M,
        history: &'a [Timed<M::Op>],
        members: &[usize],
        diligence: Diligence,
    ) -> Self {
        assert!(
            members.len() < (NIL as usize) / 4,
            "a partition of {} operations is too large",
            members.len()
        );
        // Finite operations first, in call order, then the ones that never returned, in call
        // order, from the next word boundary on.
        let mut finite: Vec<usize> = Vec::new();
        let mut pending: Vec<usize> = Vec::new();
        for (member, &index) in members.iter().enumerate() {
            let op = &history[index];
            if let Some(return_ns) = op.return_ns {
                assert!(
                    op.call_ns <= return_ns,
                    "operation {index} returns ({return_ns}) before its call ({})",
                    op.call_ns
                );
                finite.push(member);
            } else {
                pending.push(member);
            }
        }
        let call_of = |member: usize| history[members[member]].call_ns;
        finite.sort_by_key(|&m| (call_of(m), m));
        pending.sort_by_key(|&m| (call_of(m), m));
        let linearized = Linearized::new(finite.len(), pending.len());
        let ids = linearized.id_count();
        let mut ops = Vec::with_capacity(ids);
        let mut member_of = vec![usize::MAX; ids];
        let mut try_order = vec![u128::MAX; ids];
        let mut read_only = vec![false; ids];
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * members.len());
        let numbered = finite.iter().enumerate().map(|(i, &m)| (i, m)).chain(
            pending
                .iter()
                .enumerate()
                .map(|(i, &m)| (linearized.pending_base() + i, m)),
        );
        for (id, member) in numbered {
            let op = &history[members[member]];
            while ops.len() < id {
                // Ids between the finite and the pending numbers stand for no operation and are
                // never in the list; any reference fills their slots.
                ops.push(&op.op);
            }
            ops.push(&op.op);
            member_of[id] = member;
            read_only[id] = model.is_read_only(&op.op);
            // Twice the midpoint (twice the call for an operation that never returned: nothing
            // says it took effect late), then the id, so that the order is total and fixed.
            let midpoint_2 = match op.return_ns {
                Some(return_ns) => u128::from(op.call_ns) + u128::from(return_ns),
                None => u128::from(op.call_ns) * 2,
            };
            try_order[id] = midpoint_2 << 32 | id as u128;
            events.push((op.call_ns, false, id as u32));
            events.push((op.return_ns.unwrap_or(u64::MAX), true, id as u32));
        }
        // Time order; at equal times calls before returns (Porcupine's rule: touching intervals
        // are concurrent); then by id, so the order is a function of the history alone.
        events.sort_unstable();
        let nodes = events.len() + 1;
        let mut node_op = vec![NIL; nodes];
        let mut node_return = vec![NIL; nodes];
        let mut call_node = vec![NIL; ids];
        for (i, &(_, is_return, id)) in events.iter().enumerate() {
            let node = i as u32 + 1;
            node_op[node as usize] = id;
            if is_return {
                node_return[call_node[id as usize] as usize] = node;
            } else {
                call_node[id as usize] = node;
            }
        }
        let next = (0..nodes as u32)
            .map(|n| if n + 1 < nodes as u32 { n + 1 } else { NIL })
            .collect();
        let prev = (0..nodes as u32)
            .map(|n| if n == 0 { NIL } else { n - 1 })
            .collect();
        Search {
            model,
            ops,
            member_of,
            try_order,
            read_only,
            node_op,
            node_return,
            next,
            prev,
            linearized,
            cache: Cache::new(),
            candidates: Vec::new(),
            writes: Vec::new(),
            write_at: vec![0; ids],
            state: model.init(),
            max_finite: -1,
            steps: 0,
            best: None,
            stable_depth: 0,
            diligence,
        }
    }

    fn run(&mut self, max_steps: u64) -> Outcome<M::State> {
        let mut levels: Vec<Level<M::State>> = Vec::new();
        let first = self.level(NIL, self.state.clone(), -1);
        levels.push(first);
        // Done when every operation that returned is linearized: the ones that never returned
        // can follow in any order (each is legal anywhere, see [`Timed::return_ns`]).
        while !self.linearized.all_finite() {
            if self.steps >= max_steps {
                return Outcome::Undecided { steps: self.steps };
            }
            self.steps += 1;
            let level = levels
                .last_mut()
                .expect("the first level stays until the end");
            if level.cursor == level.candidates_end {
                // No candidate left: this configuration leads nowhere. Back up one level.
                if self
                    .best
                    .as_ref()
                    .is_none_or(|b| levels.len() - 1 > b.prefix.len())
                {
                    self.record_best(&levels);
                }
                let dead = levels.pop().expect("a level");
                if levels.is_empty() {
                    return self.not_linearizable();
                }
                self.stable_depth = self.stable_depth.min(levels.len() - 1);
                self.undo(dead);
                continue;
            }
            let node = self.candidates[level.cursor];
            level.cursor += 1;
            let id = self.node_op[node as usize];
            let Some(new_state) = self.model.step(&self.state, self.ops[id as usize]) else {
                debug_assert!(
                    self.linearized.is_finite(id),
                    "an operation that never returned must be legal from every state"
                );
                continue;
            };
            self.linearized.set(id);
            let new_max = if self.linearized.is_finite(id) {
                self.max_finite.max(i64::from(id))
            } else {
                self.max_finite
            };
            if !self
                .cache
                .insert(&self.linearized, new_max, new_state.clone())
            {
                self.linearized.clear(id);
                continue;
            }
            let state_before = std::mem::replace(&mut self.state, new_state);
            let max_finite_before = std::mem::replace(&mut self.max_finite, new_max);
            self.lift(node);
            let level = self.level(node, state_before, max_finite_before);
            levels.push(level);
        }
        Outcome::Linearizable { steps: self.steps }
    }

    /// The level for the configuration just reached through call node `via`, with its
    /// candidates: the calls before the first return in the list, except as follows.
    ///
    /// If one of them is read-only ([`Model::is_read_only`]) and the model accepts it from the
    /// current state, it is the only candidate. Such an operation can always come next: take any
    /// way to finish from here and move it to the front. It is legal there, it changes no state
    /// there nor where it was, so every other operation sees the states it saw; and nothing had
    /// to come before it, since it is before the first return. So when it leads nowhere, no
    /// other choice here can lead anywhere either. (It must be read-only in every state, not
    /// merely leave this one unchanged: a delete of an absent key leaves it absent, but moved to
    /// the front it would no longer delete what it deleted later.) Without this, WGL tries
    /// orders of concurrent writes before each read that could have gone first.
    ///
    /// Read-only candidates the model rejects now are left out: they can only come after some
    /// write. And if one of them can never become acceptable before it returns
    /// ([`Model::can_become_legal`], given the writes called before that return), the level
    /// gets no candidates at all: it leads nowhere. Without this, WGL tries every order of a
    /// run of concurrent appends before finding the one a later read saw.
    fn level(
        &mut self,
        via: u32,
        state_before: M::State,
        max_finite_before: i64,
    ) -> Level<M::State> {
        let candidates_at = self.candidates.len();
        let mut node = self.next[0];
        let settled = self.model.is_settled(&self.state);
        while node != NIL && self.node_return[node as usize] != NIL {
            let id = self.node_op[node as usize] as usize;
            if !self.read_only[id] || !settled {
                self.candidates.push(node);
            } else {
                self.steps += 1;
                if self.model.step(&self.state, self.ops[id]).is_some() {
                    self.candidates.truncate(candidates_at);
                    self.candidates.push(node);
                    return self.new_level(candidates_at, via, state_before, max_finite_before);
                }
            }
            node = self.next[node as usize];
        }
        if node != NIL && self.linearized.is_finite(self.node_op[node as usize]) {
            self.drop_idle_pending(candidates_at);
        }
        let worth_checking = match self.diligence {
            Diligence::Fast => self.candidates.len() - candidates_at >= 2,
            Diligence::Thorough => true,
        };
        let doomed = if worth_checking {
            self.soon_due_can_become_legal()
        } else {
            NIL
        };
        if doomed != NIL {
            self.candidates.truncate(candidates_at);
        }
        let try_order = &self.try_order;
        let node_op = &self.node_op;
        self.candidates[candidates_at..]
            .sort_unstable_by_key(|&node| try_order[node_op[node as usize] as usize]);
        let mut level = self.new_level(candidates_at, via, state_before, max_finite_before);
        level.doomed = doomed;
        level
    }

    /// Removes from the candidates from `candidates_at` on the operations that never returned
    /// and would leave the state as it is, while operations that did return remain.
    ///
    /// Such an operation never has to come here: in any way to finish from here, take it out
    /// and put it at the very end. Nothing it precedes sees a different state (it changed
    /// none), nothing comes after its return (it has none), and it is legal at the end (an
    /// operation without a return has no output to match: see [`Timed::return_ns`]). Without
    /// this, a timed-out compare-and-set expecting a value written much later is placed early
    /// as a no-op, and the search pays for that choice when a read finds it took effect.
    fn drop_idle_pending(&mut self, candidates_at: usize) {
        let mut kept = candidates_at;
        for at in candidates_at..self.candidates.len() {
            let node = self.candidates[at];
            let id = self.node_op[node as usize];
            let idle = !self.linearized.is_finite(id) && {
                self.steps += 1;
                self.model.step(&self.state, self.ops[id as usize]).as_ref() == Some(&self.state)
            };
            if !idle {
                self.candidates[kept] = node;
                kept += 1;
            }
        }
        self.candidates.truncate(kept);
    }

    /// Whether each operation among the next [`HORIZON_RETURNS`] to return may still be
    /// accepted when it is linearized ([`Model::can_become_legal`]), given the writes that may
    /// come before it: those called before its return, other than itself. An operation that
    /// cannot makes this configuration a dead end, whatever comes next: returns the return node
    /// of the first such operation, or `NIL`.
    fn soon_due_can_become_legal(&mut self) -> u32 {
        self.writes.clear();
        let mut returns = 0;
        let mut node = self.next[0];
        while node != NIL && returns < HORIZON_RETURNS {
            let id = self.node_op[node as usize] as usize;
            if self.node_return[node as usize] != NIL {
                if !self.read_only[id] {
                    self.write_at[id] = self.writes.len();
                    self.writes.push(self.ops[id]);
                }
            } else {
                returns += 1;
                self.steps += 1;
                let can = if self.read_only[id] {
                    self.model
                        .can_become_legal(&self.state, self.ops[id], &self.writes)
                } else {
                    // A write cannot come before itself: leave it out for its own check.
                    let at = self.write_at[id];
                    let last = self.writes.len() - 1;
                    self.writes.swap(at, last);
                    let itself = self.writes.pop().expect("the write itself");
                    let can = self
                        .model
                        .can_become_legal(&self.state, self.ops[id], &self.writes);
                    self.writes.push(itself);
                    self.writes.swap(at, last);
                    can
                };
                if !can {
                    return node;
                }
            }
            node = self.next[node as usize];
        }
        NIL
    }

    fn new_level(
        &self,
        candidates_at: usize,
        via: u32,
        state_before: M::State,
        max_finite_before: i64,
    ) -> Level<M::State> {
        Level {
            candidates_at,
            candidates_end: self.candidates.len(),
            cursor: candidates_at,
            via,
            state_before,
            max_finite_before,
            doomed: NIL,
        }
    }

    /// Undoes the operation that led to `dead`, whose configuration led nowhere.
    fn undo(&mut self, dead: Level<M::State>) {
        self.candidates.truncate(dead.candidates_at);
        self.state = dead.state_before;
        self.max_finite = dead.max_finite_before;
        self.linearized.clear(self.node_op[dead.via as usize]);
        self.unlift(dead.via);
    }

    /// Keeps the current stack as the best partial linearization, with the operation that could
    /// not be placed after it: the one the top level found doomed, else the first return in the
    /// list. Only the part of the stack above `stable_depth` changed since the last one, so the
    /// copy costs what was pushed since.
    fn record_best(&mut self, levels: &[Level<M::State>]) {
        let top = levels.last().expect("a level");
        let blocked_return = if top.doomed != NIL {
            top.doomed
        } else {
            self.first_return()
        };
        let blocked = self.node_op[blocked_return as usize];
        let mut pending = Vec::new();
        let mut node = self.next[0];
        while node != blocked_return {
            if self.node_return[node as usize] != NIL && self.node_op[node as usize] != blocked {
                pending.push(self.node_op[node as usize]);
            }
            node = self.next[node as usize];
        }
        let mut prefix = self.best.take().map(|b| b.prefix).unwrap_or_default();
        prefix.truncate(self.stable_depth);
        prefix.extend(
            levels[prefix.len() + 1..]
                .iter()
                .map(|level| self.node_op[level.via as usize]),
        );
        self.stable_depth = prefix.len();
        self.best = Some(Best {
            prefix,
            state: self.state.clone(),
            blocked,
            pending,
        });
    }

    /// The first return node in the list (there is one while the list is not empty).
    fn first_return(&self) -> u32 {
        let mut node = self.next[0];
        while self.node_return[node as usize] != NIL {
            node = self.next[node as usize];
        }
        node
    }

    fn not_linearizable(&mut self) -> Outcome<M::State> {
        let best = self.best.take().expect("recorded at the first dead end");
        let member = |id: u32| self.member_of[id as usize];
        Outcome::NotLinearizable {
            steps: self.steps,
            prefix: best.prefix.iter().map(|&id| member(id)).collect(),
            state: best.state,
            blocked: member(best.blocked),
            pending: best.pending.iter().map(|&id| member(id)).collect(),
        }
    }

    /// Takes a call node and its return node out of the list.
    fn lift(&mut self, call: u32) {
        let ret = self.node_return[call as usize];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Puts a lifted call node and its return node back, in the reverse order of [`Self::lift`]
    /// (their neighbours' links still point where they were: dancing links).
    fn unlift(&mut self, call: u32) {
        let ret = self.node_return[call as usize];
        self.relink(ret);
        self.relink(call);
    }

    fn unlink(&mut self, node: u32) {
        let (prev, next) = (self.prev[node as usize], self.next[node as usize]);
        self.next[prev as usize] = next;
        if next != NIL {
            self.prev[next as usize] = prev;
        }
    }

    fn relink(&mut self, node: u32) {
        let (prev, next) = (self.prev[node as usize], self.next[node as usize]);
        self.next[prev as usize] = node;
        if next != NIL {
            self.prev[next as usize] = node;
        }
    }
}

/// The set of linearized operations: a bitset with an incrementally kept Zobrist hash and the
/// first word that is not all ones.
///
/// Ids `0..finite` are the operations that returned; words `0..finite_words` hold them, and the
/// unused high bits of the last of those words are kept set, so that a fully linearized word
/// reads as all ones. Ids from `pending_base()` on are the operations that never returned, in
/// the remaining words.
struct Linearized {
    words: Vec<u64>,
    finite_words: usize,
    /// The first word below `finite_words` that is not all ones (`finite_words` if none).
    low_word: usize,
    zobrist: u64,
}

impl Linearized {
    fn new(finite: usize, pending: usize) -> Self {
        let finite_words = finite.div_ceil(64);
        let pending_words = pending.div_ceil(64);
        let mut words = vec![0u64; finite_words + pending_words];
        if finite % 64 != 0 {
            words[finite_words - 1] = !0u64 << (finite % 64);
        }
        let mut set = Linearized {
            words,
            finite_words,
            low_word: 0,
            zobrist: 0,
        };
        set.advance_low_word();
        set
    }

    fn pending_base(&self) -> usize {
        self.finite_words * 64
    }

    fn id_count(&self) -> usize {
        self.words.len() * 64
    }

    /// Whether every operation that returned is linearized.
    fn all_finite(&self) -> bool {
        self.low_word == self.finite_words
    }

    fn is_finite(&self, id: u32) -> bool {
        (id as usize) < self.pending_base()
    }

    fn set(&mut self, id: u32) {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        debug_assert_eq!(self.words[word] & bit, 0, "operation {id} linearized twice");
        self.words[word] |= bit;
        self.zobrist ^= zobrist(id);
        if word == self.low_word {
            self.advance_low_word();
        }
    }

    fn clear(&mut self, id: u32) {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        debug_assert_ne!(self.words[word] & bit, 0, "operation {id} not linearized");
        self.words[word] &= !bit;
        self.zobrist ^= zobrist(id);
        if word < self.low_word {
            self.low_word = word;
        }
    }

    fn advance_low_word(&mut self) {
        while self.low_word < self.finite_words && self.words[self.low_word] == !0 {
            self.low_word += 1;
        }
    }

    /// The words that, with `low_word`, determine the set given the highest linearized finite
    /// id: from `low_word` to that id's word (none when it is below `low_word`).
    fn window(&self, max_finite: i64) -> &[u64] {
        let end = if max_finite < 0 {
            0
        } else {
            (max_finite as usize / 64 + 1).max(self.low_word)
        };
        &self.words[self.low_word..end]
    }

    fn pending_words(&self) -> &[u64] {
        &self.words[self.finite_words..]
    }
}

/// A pseudo-random 64-bit value per operation id (SplitMix64's finalizer), for Zobrist hashing.
fn zobrist(id: u32) -> u64 {
    mix(u64::from(id)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fast non-cryptographic hasher for model states (FxHash's rotate-xor-multiply). States are
/// expected to hash a few words (see [`Model::State`]).
#[derive(Default)]
struct StateHasher(u64);

impl Hasher for StateHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(tail) ^ (rest.len() as u64) << 56);
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_u8(&mut self, byte: u8) {
        self.write_u64(u64::from(byte));
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

/// Passes through keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

/// One visited configuration: a linearized set (see [`Linearized::window`]) and a state.
struct CacheEntry<S> {
    low_word: u32,
    /// Where its words start in [`Cache::words`]: the window, then the pending words.
    words_at: usize,
    window_len: u32,
    state: S,
    /// The next entry with the same hash, or `NIL`.
    next: u32,
}

/// The configurations visited: Lowe's cache, Porcupine's `cache map[uint64][]cacheEntry`.
struct Cache<S> {
    /// Hash → the first entry with that hash.
    heads: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    entries: Vec<CacheEntry<S>>,
    words: Vec<u64>,
}

impl<S: Eq + Hash> Cache<S> {
    fn new() -> Self {
        Cache {
            heads: HashMap::default(),
            entries: Vec::new(),
            words: Vec::new(),
        }
    }

    /// Adds (`set`, `state`) unless it is already there; true when it was added.
    fn insert(&mut self, set: &Linearized, max_finite: i64, state: S) -> bool {
        let mut hasher = StateHasher::default();
        state.hash(&mut hasher);
        let hash = mix(hasher.finish() ^ set.zobrist);
        let window = set.window(max_finite);
        let pending = set.pending_words();
        let head = self.heads.get(&hash).copied().unwrap_or(NIL);
        let mut at = head;
        while at != NIL {
            let entry = &self.entries[at as usize];
            let words = &self.words[entry.words_at..];
            if entry.low_word as usize == set.low_word
                && entry.window_len as usize == window.len()
                && words[..window.len()] == *window
                && words[window.len()..window.len() + pending.len()] == *pending
                && entry.state == state
            {
                return false;
            }
            at = entry.next;
        }
        assert!(
            self.entries.len() < NIL as usize,
            "search cache full: lower the step budget"
        );
        let words_at = self.words.len();
        self.words.extend_from_slice(window);
        self.words.extend_from_slice(pending);
        self.heads.insert(hash, self.entries.len() as u32);
        self.entries.push(CacheEntry {
            low_word: set.low_word as u32,
            words_at,
            window_len: window.len() as u32,
            state,
            next: head,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window plus `low_word` identify the set: equal sets give equal windows whatever
    /// order they were built in, and the padding bits keep a finished word all ones.
    #[test]
    fn windows_are_canonical() {
        let mut a = Linearized::new(130, 3);
        let mut b = Linearized::new(130, 3);
        for id in [0, 1, 2, 65, 64] {
            a.set(id);
        }
        for id in [64, 2, 1, 65, 0, 7] {
            b.set(id);
        }
        b.clear(7);
        assert_eq!(a.low_word, 0);
        assert_eq!(a.window(65), b.window(65));
        assert_eq!(a.zobrist, b.zobrist);
        for id in 0..130 {
            if a.words[id / 64] & (1 << (id % 64)) == 0 {
                a.set(id as u32);
            }
        }
        assert_eq!(a.low_word, 3, "all finite words full, padding included");
        assert!(a.window(129).is_empty());
        a.set(a.pending_base() as u32 + 2);
        assert_eq!(a.pending_words(), &[4]);
        a.clear(3);
        assert_eq!(a.low_word, 0);
        assert_eq!(a.window(129).len(), 3);
    }
}
