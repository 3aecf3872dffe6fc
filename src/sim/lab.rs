//! The MIT 6.5840 lab tester's helpers (`config.go`: checkOneLeader, checkTerms, nCommitted,
//! one, wait, ...), on virtual time. They keep the lab's retry counts and time bounds so that a
//! ported scenario reads like the original; a check that fails panics with the seed, the time
//! and the recent trace.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::cluster::Cluster;
use crate::raft::{GroupId, Index, NodeId, Term};

/// The lab's `RaftElectionTimeout`: the tester allows an election a whole second.
pub const LAB_ELECTION_TIMEOUT_MS: u64 = 1_000;
/// How long `one` keeps trying before it gives up (the lab: 10 s).
const ONE_TIMEOUT_MS: u64 = 10_000;
/// How long `one` waits for one proposal to commit before proposing again (the lab: 2 s).
const ONE_ATTEMPT_MS: u64 = 2_000;

/// A short printable form of a command for failure messages.
fn show(command: &[u8]) -> String {
    let head = &command[..command.len().min(16)];
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(head).into_owned()
    } else {
        head.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Cluster {
    /// True when `node` is alive and the network (and `group`'s cuts) let it talk.
    pub fn is_up_in(&self, group: GroupId, node: NodeId) -> bool {
        self.is_alive(node)
            && self.network().is_connected(node)
            && !self.network().is_cut_in_group(group, node)
    }

    /// The lab's checkOneLeader: up to 10 times, wait 450-550 ms, then look at the live
    /// connected nodes; a term with two leaders fails; otherwise the leader of the highest term
    /// is returned. No leader after 10 tries (about 5 s) fails.
    pub fn check_one_leader(&mut self, group: GroupId) -> NodeId {
        for _ in 0..10 {
            let ms = 450 + self.harness_rng.range(0, 100);
            self.run_for(ms);
            let mut leaders: BTreeMap<Term, Vec<NodeId>> = BTreeMap::new();
            for node in self.config().node_ids() {
                if self.is_up_in(group, node) && self.is_leader(node, group) {
                    let term = self.term(node, group).expect("a leader is alive");
                    leaders.entry(term).or_default().push(node);
                }
            }
            for (term, nodes) in &leaders {
                if nodes.len() > 1 {
                    let what = format!("check_one_leader: term {term} has leaders {nodes:?}");
                    self.fail(None, Some(group), &what);
                }
            }
            if let Some((_, nodes)) = leaders.last_key_value() {
                return nodes[0];
            }
        }
        self.fail(
            None,
            Some(group),
            "check_one_leader: expected one leader, got none",
        )
    }

    /// The lab's checkNoLeader: no live connected node thinks it leads.
    pub fn check_no_leader(&self, group: GroupId) {
        for node in self.config().node_ids() {
            if self.is_up_in(group, node) && self.is_leader(node, group) {
                let what = format!("check_no_leader: n{node} is leader, but there should be none");
                self.fail(Some(node), Some(group), &what);
            }
        }
    }

    /// The lab's checkTerms: every live connected node is in the same term; returns it.
    pub fn check_terms(&self, group: GroupId) -> Term {
        let mut agreed = None;
        for node in self.config().node_ids() {
            if !self.is_up_in(group, node) {
                continue;
            }
            let term = self.term(node, group).expect("alive");
            match agreed {
                None => agreed = Some(term),
                Some(t) if t != term => {
                    let what = format!("check_terms: servers disagree on term ({t} and {term})");
                    self.fail(Some(node), Some(group), &what);
                }
                Some(_) => {}
            }
        }
        agreed.unwrap_or_else(|| self.fail(None, Some(group), "check_terms: no node is up"))
    }

    /// The lab's nCommitted: how many live nodes have applied `index`, and the entry's data
    /// (empty for a no-op). State-machine safety (checked on every apply) makes them agree.
    pub fn n_committed(&self, group: GroupId, index: Index) -> (usize, Option<Bytes>) {
        let count = self
            .config()
            .node_ids()
            .filter(|&n| self.applied_index(n, group).is_some_and(|a| a >= index))
            .count();
        let data = self.committed(group, index).map(|c| c.data.clone());
        (count, data)
    }

    /// The lab's checkNoAgreement: nobody applied `index`.
    pub fn check_no_agreement(&self, group: GroupId, index: Index) {
        let (n, _) = self.n_committed(group, index);
        if n > 0 {
            let what = format!("{n} nodes committed index {index}, but there is no majority");
            self.fail(None, Some(group), &what);
        }
    }

    /// Tries every live connected node in turn, starting after `*starts`, until one accepts
    /// `command` as leader; returns the index it got.
    fn start_anywhere(
        &mut self,
        group: GroupId,
        command: &Bytes,
        starts: &mut usize,
    ) -> Option<Index> {
        let n = self.config().nodes;
        for _ in 0..n {
            *starts = (*starts + 1) % n;
            let node = *starts as NodeId + 1;
            if self.is_up_in(group, node) {
                if let Ok(index) = self.propose(group, node, command.clone()) {
                    return Some(index);
                }
            }
        }
        None
    }

    /// The lab's `one`: find a leader among live connected nodes, propose `command`, and wait
    /// up to 2 s until at least `expected` live nodes applied it; with `retry`, propose again
    /// after a failed attempt. Fails after 10 s of virtual time (or after one failed attempt
    /// without `retry`). Returns the command's index. `retry` stays a bare bool, against
    /// STYLE.md's habit, so that ported scenarios read exactly like the lab's `one(cmd, n, true)`.
    pub fn one(&mut self, group: GroupId, command: Bytes, expected: usize, retry: bool) -> Index {
        let start_us = self.now_us();
        let mut starts = 0;
        while self.now_us() - start_us < ONE_TIMEOUT_MS * 1000 {
            let Some(index) = self.start_anywhere(group, &command, &mut starts) else {
                self.run_for(50);
                continue;
            };
            let done = |c: &Cluster| {
                let (n, data) = c.n_committed(group, index);
                n >= expected.max(1) && data.as_ref() == Some(&command)
            };
            // Waiting on after another command took the slot would only burn the attempt.
            let taken = |c: &Cluster| c.committed(group, index).is_some_and(|e| e.data != command);
            self.run_until(|c| done(c) || taken(c), ONE_ATTEMPT_MS);
            if done(self) {
                return index;
            }
            if !retry {
                let what = format!("one({}) failed to reach agreement", show(&command));
                self.fail(None, Some(group), &what);
            }
            if !taken(self) {
                self.run_for(50);
            }
        }
        let what = format!("one({}) failed to reach agreement in 10 s", show(&command));
        self.fail(None, Some(group), &what)
    }

    /// `one` for several commands at once, as the lab's concurrent goroutines each calling
    /// `one(cmd, expected, true)`: all are proposed, then each is re-proposed whenever its
    /// attempt fails, until every one is applied by `expected` nodes. Returns their indexes.
    pub fn one_concurrent(
        &mut self,
        group: GroupId,
        commands: &[Bytes],
        expected: usize,
    ) -> Vec<Index> {
        struct Attempt {
            index: Option<Index>,
            started_us: u64,
            done: bool,
        }
        let start_us = self.now_us();
        let mut starts = 0;
        let mut attempts: Vec<Attempt> = commands
            .iter()
            .map(|_| Attempt {
                index: None,
                started_us: 0,
                done: false,
            })
            .collect();
        while self.now_us() - start_us < ONE_TIMEOUT_MS * 1000 {
            for (attempt, command) in attempts.iter_mut().zip(commands) {
                if attempt.done {
                    continue;
                }
                let expired = self.now_us() - attempt.started_us >= ONE_ATTEMPT_MS * 1000;
                let taken = attempt
                    .index
                    .and_then(|i| self.committed(group, i))
                    .is_some_and(|e| e.data != command);
                if attempt.index.is_none() || expired || taken {
                    attempt.index = self.start_anywhere(group, command, &mut starts);
                    attempt.started_us = self.now_us();
                }
            }
            self.run_for(20);
            for (attempt, command) in attempts.iter_mut().zip(commands) {
                if let Some(index) = attempt.index {
                    let (n, data) = self.n_committed(group, index);
                    attempt.done |= n >= expected.max(1) && data.as_ref() == Some(command);
                }
            }
            if attempts.iter().all(|a| a.done) {
                return attempts.iter().map(|a| a.index.expect("done")).collect();
            }
        }
        self.fail(
            None,
            Some(group),
            "one_concurrent: commands failed to reach agreement in 10 s",
        )
    }

    /// The lab's `wait`: wait (10 ms doubling to 1 s, 30 rounds) until `n` live nodes applied
    /// `index`; returns its data. With `start_term`, returns `None` as soon as some node has
    /// moved past that term (the caller's assumptions no longer hold). Fails when too few
    /// nodes applied it.
    pub fn wait(
        &mut self,
        group: GroupId,
        index: Index,
        n: usize,
        start_term: Option<Term>,
    ) -> Option<Bytes> {
        let mut sleep_ms = 10;
        for _ in 0..30 {
            if self.n_committed(group, index).0 >= n {
                break;
            }
            self.run_for(sleep_ms);
            if sleep_ms < 1_000 {
                sleep_ms *= 2;
            }
            if let Some(start) = start_term {
                let moved_on = self
                    .config()
                    .node_ids()
                    .any(|node| self.term(node, group).is_some_and(|t| t > start));
                if moved_on {
                    return None;
                }
            }
        }
        let (count, data) = self.n_committed(group, index);
        if count < n {
            let what = format!("wait: only {count} of {n} nodes decided index {index}");
            self.fail(None, Some(group), &what);
        }
        data
    }

    /// Waits (at most `timeout_ms`) until every live node applied the same index in `group`,
    /// then checks their applications agree; returns that index. State-machine safety makes
    /// equal indexes imply equal histories; this also proves nobody is left behind.
    pub fn check_agreement(&mut self, group: GroupId, timeout_ms: u64) -> Index {
        let settled = |c: &Cluster| {
            let mut applied = c
                .config()
                .node_ids()
                .filter_map(|n| c.applied_index(n, group));
            let first = applied.next();
            first.is_some_and(|f| applied.all(|a| a == f) && f == c.max_committed(group))
        };
        if !self.run_until(settled, timeout_ms) {
            let states: Vec<String> = self
                .config()
                .node_ids()
                .map(|n| format!("n{n}: {:?}", self.applied_index(n, group)))
                .collect();
            let what = format!("check_agreement: applied indexes did not converge: {states:?}");
            self.fail(None, Some(group), &what);
        }
        let apps: Vec<_> = self
            .config()
            .node_ids()
            .filter_map(|n| self.app(n, group))
            .collect();
        if apps.windows(2).any(|w| w[0] != w[1]) {
            self.fail(
                None,
                Some(group),
                &format!("check_agreement: applications differ: {apps:?}"),
            );
        }
        apps[0].applied
    }
}
