//! Unit tests of the Raft core on a tiny synchronous network (raft-rs `harness/src/network.rs`
//! style): messages queue up and are delivered in order unless a link is cut; writes are made
//! durable at once or held back on request. Each test cites the section it checks. The seeded
//! whole-cluster scenarios live in `tests/sim_raft.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::*;

/// A write held back by a slow disk: what it reports when durable, and what it then sends.
type HeldWrite = (Option<(Index, Term)>, Vec<Message>);

struct Net {
    nodes: BTreeMap<NodeId, RawNode>,
    queue: VecDeque<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes whose writes are held back (not yet durable) until `flush`.
    slow_disk: BTreeSet<NodeId>,
    held: BTreeMap<NodeId, Vec<HeldWrite>>,
    applied: BTreeMap<NodeId, Vec<Entry>>,
    reads: BTreeMap<NodeId, Vec<ReadState>>,
    sent: Vec<Message>,
}

fn config(id: NodeId, n: u64) -> Config {
    let mut cfg = Config::new(id, 1, (1..=n).collect(), 1000 + id);
    cfg.election_timeout_ticks = 10;
    cfg.heartbeat_interval_ticks = 2;
    cfg
}

impl Net {
    fn new(n: u64) -> Net {
        Net::with(n, |_| {}, |_| Restore::default())
    }

    fn with(n: u64, tune: impl Fn(&mut Config), restore: impl Fn(NodeId) -> Restore) -> Net {
        let nodes = (1..=n)
            .map(|id| {
                let mut cfg = config(id, n);
                tune(&mut cfg);
                (id, RawNode::new(cfg, restore(id)).expect("valid"))
            })
            .collect();
        Net {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            slow_disk: BTreeSet::new(),
            held: BTreeMap::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            sent: Vec::new(),
        }
    }

    fn node(&mut self, id: NodeId) -> &mut RawNode {
        self.nodes.get_mut(&id).expect("node")
    }

    /// Handles every Ready of `id`, following the contract in `node.rs`.
    fn drain(&mut self, id: NodeId) {
        while self.node(id).has_ready() {
            let rd = self.node(id).ready();
            for m in &rd.messages {
                self.sent.push(m.clone());
            }
            self.queue.extend(rd.messages);
            let last = rd
                .entries
                .last()
                .map(|e| (e.index, e.term))
                .or(rd.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)));
            if self.slow_disk.contains(&id) {
                self.held
                    .entry(id)
                    .or_default()
                    .push((last, rd.persisted_messages));
            } else {
                for m in &rd.persisted_messages {
                    self.sent.push(m.clone());
                }
                self.queue.extend(rd.persisted_messages);
                if let Some((index, term)) = last {
                    self.node(id).persisted(index, term);
                }
            }
            self.applied
                .entry(id)
                .or_default()
                .extend(rd.committed_entries);
            self.reads.entry(id).or_default().extend(rd.read_states);
            self.node(id).advance();
        }
    }

    /// Makes every held write of `id` durable, in order (the disk stays slow for later writes).
    fn flush(&mut self, id: NodeId) {
        for (last, messages) in self.held.remove(&id).unwrap_or_default() {
            self.sent.extend(messages.iter().cloned());
            self.queue.extend(messages);
            if let Some((index, term)) = last {
                self.node(id).persisted(index, term);
            }
        }
        self.drain(id);
    }

    fn deliver_all(&mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.drain(id);
        }
        let mut budget = 100_000;
        while let Some(m) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm");
            if self.cut.contains(&(m.from, m.to)) || self.cut.contains(&(m.to, m.from)) {
                continue;
            }
            let to = m.to;
            self.node(to).step(m).expect("valid message");
            self.drain(to);
        }
    }

    fn tick(&mut self, id: NodeId, times: u32) {
        for _ in 0..times {
            self.node(id).tick();
            self.drain(id);
        }
    }

    fn tick_all(&mut self, times: u32) {
        for _ in 0..times {
            for id in self.nodes.keys().copied().collect::<Vec<_>>() {
                self.tick(id, 1);
            }
            self.deliver_all();
        }
    }

    fn isolate(&mut self, id: NodeId) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id, other));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Elects `id` by letting its election timer fire while the others stay quiet.
    fn elect(&mut self, id: NodeId) {
        self.tick(id, 20);
        self.deliver_all();
        assert!(self.node(id).is_leader(), "node {id} should lead");
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_leader())
            .map(|n| n.id())
            .collect()
    }

    fn propose(&mut self, id: NodeId, data: &'static [u8]) -> Index {
        let index = self
            .node(id)
            .propose(vec![Bytes::from_static(data)])
            .expect("leader");
        self.deliver_all();
        index
    }

    /// Asks `id` for a read (it must think it leads, or know a leader), handling its Ready.
    fn ask_read(&mut self, id: NodeId, context: &'static [u8]) {
        self.node(id)
            .read_index(Bytes::from_static(context))
            .expect("leader or knows one");
        self.drain(id);
    }

    fn count_sent(&self, pred: impl Fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|m| pred(m)).count()
    }
}

fn data_of(entries: &[Entry]) -> Vec<&[u8]> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Normal)
        .map(|e| &e.data[..])
        .collect()
}

/// Raft §5.2: a single member elects itself and commits on its own durable write.
#[test]
fn single_member_elects_itself_and_commits() {
    let mut net = Net::new(1);
    net.tick(1, 25);
    assert!(net.node(1).is_leader());
    net.propose(1, b"a");
    assert_eq!(data_of(&net.applied[&1]), vec![b"a"]);
}

/// Raft §5.2: three members elect exactly one leader, whose term everyone adopts.
#[test]
fn three_members_elect_one_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    assert_eq!(net.leaders(), vec![1]);
    let term = net.node(1).term();
    assert!((1..=3).all(|id| net.node(id).term() == term && net.node(id).leader() == 1));
}

/// Thesis §9.6: a node cut off from the rest campaigns only in pre-vote rounds, so its term does
/// not grow and it does not depose the leader when it returns.
#[test]
fn pre_vote_keeps_isolated_node_from_bumping_term() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.tick(3, 200);
    assert_eq!(
        net.node(3).term(),
        term,
        "pre-vote must not change the term"
    );
    net.heal();
    net.tick_all(30);
    assert_eq!(net.leaders(), vec![1]);
    assert_eq!(net.node(1).term(), term);
}

/// Without pre-vote the same node does bump its term (the disruption pre-vote prevents).
#[test]
fn without_pre_vote_isolated_node_bumps_term() {
    let mut net = Net::with(3, |c| c.pre_vote = false, |_| Restore::default());
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.tick(3, 200);
    assert!(net.node(3).term() > term);
}

/// Thesis §6.2: a leader that hears from no quorum for an election timeout steps down.
#[test]
fn check_quorum_leader_steps_down() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(1);
    net.tick(1, 25);
    assert!(
        !net.node(1).is_leader(),
        "a leader without a quorum must step down"
    );
}

/// Thesis §10.2.1 and Raft §5.4.2: the leader sends Appends before its own write is durable and
/// counts itself only once it is; entries of an older term are never committed by counting.
#[test]
fn leader_counts_itself_only_when_durable_and_commits_only_current_term() {
    // Nodes 1 and 2 hold an entry of term 2 at index 2 that node 3 lacks.
    let mut net = Net::with(
        3,
        // Restarted members (term 2) with lease reads ignore campaigns for an election
        // timeout; this test is about counting, so it elects at once without them.
        |c| c.lease_reads = false,
        |id| {
            let mut entries = vec![Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Normal,
                data: Bytes::new(),
            }];
            if id != 3 {
                entries.push(Entry {
                    term: 2,
                    index: 2,
                    kind: EntryKind::Normal,
                    data: Bytes::new(),
                });
            }
            Restore {
                hard_state: HardState {
                    term: 2,
                    vote: 0,
                    commit: 1,
                },
                snapshot: None,
                entries,
            }
        },
    );
    // Node 1 campaigns with its disk held back and node 2 unreachable.
    net.slow_disk.insert(1);
    net.cut.insert((1, 2));
    net.tick(1, 20);
    net.deliver_all();
    assert_eq!(
        net.node(1).role(),
        Role::Candidate,
        "pre-vote won with node 3"
    );
    assert!(
        !net.node(1).is_leader(),
        "vote requests wait for the candidate's durable vote"
    );
    net.flush(1);
    net.deliver_all();
    assert!(
        net.node(1).is_leader(),
        "node 3's vote elects node 1 in term 3"
    );
    // Node 1's no-op (index 3) is not durable on node 1 yet, but node 3 acknowledged it and
    // index 2 (term 2) is now on nodes 1 and 3, a majority. Counting replicas must still not
    // commit it: the only current-term entry is held by one durable replica.
    assert!(net
        .sent
        .iter()
        .any(|m| m.from == 1 && matches!(m.body, MessageBody::Append { .. })));
    assert_eq!(net.node(3).last_index(), 3);
    assert_eq!(
        net.node(1).commit_index(),
        1,
        "entry 2 (term 2) must not commit by counting replicas"
    );
    net.flush(1);
    net.deliver_all();
    assert_eq!(
        net.node(1).commit_index(),
        3,
        "durable on 1 and 3: the no-op commits, and with it entry 2"
    );
}

/// Raft §5.3 with fast backup: a follower with 50 conflicting entries from an older term is
/// repaired in a few round trips, not one per entry.
#[test]
fn fast_backup_skips_whole_terms() {
    let entries = |term: Term, n: u64| -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry {
                term: if i == 1 { 1 } else { term },
                index: i,
                kind: EntryKind::Normal,
                data: Bytes::new(),
            })
            .collect()
    };
    let mut net = Net::with(
        3,
        // As above: restarted members, elected at once.
        |c| c.lease_reads = false,
        |id| match id {
            3 => Restore {
                hard_state: HardState {
                    term: 2,
                    vote: 0,
                    commit: 1,
                },
                snapshot: None,
                entries: entries(2, 51),
            },
            _ => Restore {
                hard_state: HardState {
                    term: 3,
                    vote: 0,
                    commit: 1,
                },
                snapshot: None,
                entries: entries(3, 51),
            },
        },
    );
    net.elect(1);
    net.tick_all(5);
    let rejections = net.count_sent(|m| {
        m.from == 3
            && matches!(
                m.body,
                MessageBody::AppendResponse(AppendResponse::Rejected { .. })
            )
    });
    assert!(rejections <= 3, "fast backup took {rejections} rejections");
    assert_eq!(net.node(3).term_at(51), Some(3));
    assert_eq!(net.node(3).last_index(), 52);
}

/// Batching: everything proposed between two Readies travels in one Append per follower, and
/// `max_message_bytes` splits a large backlog.
#[test]
fn proposals_between_readies_are_batched() {
    let mut net = Net::with(
        3,
        |c| c.max_message_bytes = 10 * (Entry::OVERHEAD_BYTES + 100),
        |_| Restore::default(),
    );
    net.elect(1);
    net.sent.clear();
    for _ in 0..30 {
        net.node(1)
            .propose(vec![Bytes::from(vec![7u8; 100])])
            .expect("leader");
    }
    net.deliver_all();
    // The followers learn the last commit index at the leader's next tick.
    net.tick(1, 1);
    net.deliver_all();
    let appends: Vec<usize> = net
        .sent
        .iter()
        .filter(|m| m.to == 2)
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } if !entries.is_empty() => Some(entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(
        appends.len(),
        3,
        "30 entries of 124 B in 1240 B batches: {appends:?}"
    );
    assert!(
        appends.iter().all(|&n| n <= 10),
        "batches exceed max_message_bytes: {appends:?}"
    );
    assert_eq!(
        net.applied[&2]
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .count(),
        30
    );
}

/// Pipelining: with answers held back, at most `max_inflight_messages` Appends are outstanding.
#[test]
fn pipelining_is_bounded_by_inflight_window() {
    let mut net = Net::with(
        3,
        |c| {
            c.max_message_bytes = 1;
            c.max_inflight_messages = 4;
        },
        |_| Restore::default(),
    );
    net.elect(1);
    net.slow_disk.insert(2); // node 2 answers nothing until flushed
    let before = net.count_sent(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. }));
    for _ in 0..20 {
        net.node(1)
            .propose(vec![Bytes::from_static(b"e")])
            .expect("leader");
    }
    net.deliver_all();
    let inflight =
        net.count_sent(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. })) - before;
    assert_eq!(inflight, 4, "one entry per Append, four in flight");
    net.slow_disk.remove(&2);
    net.flush(2);
    net.deliver_all();
    assert_eq!(net.node(2).last_index(), net.node(1).last_index());
}

/// Raft §7: a follower whose next entry was compacted gets the snapshot in bounded chunks and
/// then the entries after it.
#[test]
fn install_snapshot_in_chunks() {
    let mut net = Net::with(3, |c| c.snapshot_chunk_bytes = 100, |_| Restore::default());
    net.elect(1);
    net.isolate(3);
    for _ in 0..5 {
        net.propose(1, b"v");
    }
    let applied = net.node(1).applied_index();
    let data = Bytes::from((0..1000u32).map(|i| i as u8).collect::<Vec<u8>>());
    net.node(1).compact(applied, data.clone()).expect("compact");
    net.propose(1, b"after");
    net.heal();
    net.tick_all(10);
    let chunks: Vec<usize> = net
        .sent
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::SnapshotChunk { data, .. } if m.to == 3 => Some(data.len()),
            _ => None,
        })
        .collect();
    assert!(
        chunks.len() >= 10 && chunks.iter().all(|&n| n <= 100),
        "chunks: {chunks:?}"
    );
    assert_eq!(net.node(3).snapshot_meta().index, applied);
    assert_eq!(net.node(3).last_index(), net.node(1).last_index());
    assert_eq!(data_of(&net.applied[&3]).last(), Some(&&b"after"[..]));
}

/// Thesis §6.4: a ReadIndex read completes after one heartbeat round, at the commit index, on
/// the leader and (forwarded) on a follower; a leader cut from its quorum answers none.
#[test]
fn read_index_confirms_leadership() {
    let mut net = Net::with(3, |c| c.lease_reads = false, |_| Restore::default());
    net.elect(1);
    let index = net.propose(1, b"w");
    net.node(1)
        .read_index(Bytes::from_static(b"r1"))
        .expect("leader");
    net.node(2)
        .read_index(Bytes::from_static(b"r2"))
        .expect("knows leader");
    net.deliver_all();
    let r1 = &net.reads[&1];
    assert_eq!(r1.len(), 1);
    assert!(r1[0].index >= index);
    let r2 = &net.reads[&2];
    assert_eq!(r2.len(), 1);
    assert!(r2[0].index >= index);
    net.isolate(1);
    net.ask_read(1, b"r3");
    net.deliver_all();
    net.tick(1, 3);
    net.deliver_all();
    assert_eq!(net.reads[&1].len(), 1, "no quorum, no read");
}

/// Thesis §6.4.1: once a quorum acknowledged a heartbeat, the leader answers reads at once, with
/// no round, also when cut off, but only until the lease (7 ticks here: an election timeout of
/// 10, less a fifth, less one) has run from that heartbeat's sending; then a read waits for a
/// round that a leader without its quorum never completes.
#[test]
fn lease_reads_answer_at_once_until_the_lease_ends() {
    let mut net = Net::new(3);
    net.elect(1);
    let index = net.propose(1, b"w");
    net.tick(1, 2);
    net.deliver_all();
    net.sent.clear();
    net.ask_read(1, b"r1");
    assert_eq!(net.reads[&1].len(), 1, "answered from the lease");
    assert!(net.reads[&1][0].index >= index);
    assert_eq!(
        net.count_sent(|m| matches!(m.body, MessageBody::Heartbeat { .. })),
        0,
        "no round for a lease read"
    );
    net.isolate(1);
    net.ask_read(1, b"r2");
    assert_eq!(
        net.reads[&1].len(),
        2,
        "inside its lease a cut-off leader still answers"
    );
    net.tick(1, 7);
    net.deliver_all();
    if net.node(1).is_leader() {
        net.ask_read(1, b"r3");
        net.deliver_all();
        net.tick(1, 1);
        net.deliver_all();
    }
    assert_eq!(
        net.reads[&1].len(),
        2,
        "a lease ends, and no quorum confirms a round"
    );
}

/// A leader that began handing over leadership answers no more reads from its lease: the
/// target's campaign is honored inside leases.
#[test]
fn a_transfer_ends_the_lease() {
    let mut net = Net::new(3);
    net.elect(1);
    net.propose(1, b"w");
    net.tick(1, 2);
    net.deliver_all();
    net.cut.insert((1, 3));
    net.node(1).transfer_leader(3).expect("leader");
    net.ask_read(1, b"r");
    assert!(
        net.reads.get(&1).is_none_or(|r| r.is_empty()),
        "no lease read once a transfer began"
    );
    // A round confirmed by node 2 still answers it.
    net.deliver_all();
    assert_eq!(net.reads[&1].len(), 1);
}

/// With lease reads, a member that restarted with state ignores campaigns for its first
/// election timeout (it may have just acknowledged a leader's heartbeat); a fresh cluster and
/// members past that window elect as usual.
#[test]
fn restarted_members_ignore_campaigns_for_an_election_timeout() {
    let restarted = |_| Restore {
        hard_state: HardState {
            term: 2,
            vote: 0,
            commit: 0,
        },
        snapshot: None,
        entries: Vec::new(),
    };
    let mut net = Net::with(3, |_| {}, restarted);
    net.tick(1, 20);
    net.deliver_all();
    assert!(
        !net.node(1).is_leader(),
        "voters inside their first election timeout"
    );
    net.tick_all(40);
    assert_eq!(net.leaders().len(), 1, "elected once the windows passed");

    let mut net = Net::with(3, |c| c.lease_reads = false, restarted);
    net.tick(1, 20);
    net.deliver_all();
    assert!(
        net.node(1).is_leader(),
        "without lease reads there is no window"
    );
}

/// Thesis §3.10: leadership moves to the named follower; proposals are refused meanwhile.
#[test]
fn leadership_transfer() {
    let mut net = Net::new(3);
    net.elect(1);
    net.propose(1, b"a");
    net.node(1).transfer_leader(3).expect("leader");
    assert_eq!(
        net.node(1).propose(vec![Bytes::from_static(b"b")]),
        Err(ProposeError::TransferInProgress)
    );
    net.deliver_all();
    assert_eq!(net.leaders(), vec![3]);
    net.propose(3, b"c");
    net.tick(3, 1);
    net.deliver_all();
    assert_eq!(data_of(&net.applied[&1]), vec![&b"a"[..], b"c"]);
}

/// A leader that is not the preferred leader hands it the group at the end of a check period
/// in which it heard from it and found it caught up; not while it is cut off, and the
/// preferred leader keeps the group once it has it. Entries committed before are kept.
#[test]
fn the_preferred_leader_takes_the_group_once_caught_up() {
    let mut net = Net::with(3, |c| c.preferred_leader = 3, |_| Restore::default());
    net.isolate(3);
    net.elect(1);
    net.propose(1, b"a");
    net.tick(1, 1);
    net.deliver_all();
    // Two check periods (election timeouts) of nodes 1 and 2; node 3 is never ticked, so it
    // never campaigns on its own.
    let two_periods = |net: &mut Net| {
        for _ in 0..20 {
            net.tick(1, 1);
            net.tick(2, 1);
            net.deliver_all();
        }
    };
    two_periods(&mut net);
    assert_eq!(
        net.leaders(),
        vec![1],
        "no hand-over to an unreachable member"
    );
    net.heal();
    // Node 3 catches up from the heartbeats and takes over at the end of a period.
    two_periods(&mut net);
    assert_eq!(
        net.leaders(),
        vec![3],
        "the caught-up preferred leader leads"
    );
    net.propose(3, b"b");
    net.tick_all(25);
    assert_eq!(net.leaders(), vec![3], "and keeps leading");
    assert_eq!(data_of(&net.applied[&1]), vec![&b"a"[..], b"b"]);
}

/// A follower that nothing else tells learns a new commit index at the leader's next tick,
/// from a commit-only Append (or the heartbeat, when the tick is one's), one message per
/// follower however many commits came before it; an Append carrying entries tells it sooner.
#[test]
fn idle_followers_learn_the_commit_at_the_next_tick() {
    let told = |net: &Net, to: NodeId| {
        net.count_sent(|m| {
            m.to == to
                && match &m.body {
                    MessageBody::Append { entries, .. } => entries.is_empty(),
                    MessageBody::Heartbeat { .. } => true,
                    _ => false,
                }
        })
    };
    let mut net = Net::new(3);
    net.elect(1);
    net.tick(1, 1);
    net.deliver_all();
    net.sent.clear();
    net.propose(1, b"a");
    net.propose(1, b"b");
    assert_eq!(data_of(&net.applied[&1]), vec![&b"a"[..], b"b"]);
    // "b"'s Append carried "a"'s commit; nothing has told them "b" is committed yet.
    assert_eq!(data_of(&net.applied[&2]), vec![&b"a"[..]]);
    assert_eq!(told(&net, 2), 0);
    net.tick(1, 1);
    net.deliver_all();
    for follower in [2, 3] {
        assert_eq!(data_of(&net.applied[&follower]), vec![&b"a"[..], b"b"]);
        assert_eq!(told(&net, follower), 1);
    }
    // Nothing new committed: the next tick (not a heartbeat's) sends nothing.
    net.tick(1, 1);
    net.deliver_all();
    assert_eq!(told(&net, 2), 1);
}

/// Raft §5.2 (Figure 2, "persistent state"): a vote is promised only after it is durable.
#[test]
fn vote_answer_waits_for_durable_vote() {
    let mut net = Net::new(3);
    net.slow_disk.insert(2);
    net.slow_disk.insert(3);
    net.tick(1, 25);
    net.deliver_all();
    assert!(!net.node(1).is_leader());
    assert_eq!(net.node(2).hard_state().vote, 1);
    net.flush(2);
    net.deliver_all();
    assert!(net.node(1).is_leader());
}

/// A node hosts many groups: messages for another group are refused, not misapplied.
#[test]
fn messages_for_another_group_are_refused() {
    let mut node = RawNode::new(config(1, 3), Restore::default()).expect("valid");
    let m = Message {
        group: 2,
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::TimeoutNow,
    };
    assert_eq!(node.step(m), Err(StepError::WrongGroup));
    let m = Message {
        group: 1,
        from: 9,
        to: 1,
        term: 1,
        body: MessageBody::TimeoutNow,
    };
    assert_eq!(node.step(m), Err(StepError::UnknownPeer));
}

/// Restored state that no correct caller could have written is refused with a reason.
#[test]
fn bad_restore_is_refused() {
    let gap = Restore {
        hard_state: HardState {
            term: 1,
            vote: 0,
            commit: 0,
        },
        snapshot: None,
        entries: vec![Entry {
            term: 1,
            index: 2,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }],
    };
    assert!(matches!(
        RawNode::new(config(1, 3), gap),
        Err(ConfigError::BadRestore(_))
    ));
}
