//! One replica of a KV group: requests in, responses out, the Raft core and the store in
//! between. Sans-I/O: the caller owns the `RawNode`, handles its Readies, and feeds this type
//! what they carry (committed entries, read states, role changes, installed snapshots).
//!
//! - A write is proposed with the caller's clock stamped into it and answered when its entry is
//!   applied. If another entry lands at its index (leadership changed), or this replica stops
//!   leading, it is answered "wrong leader" and the client retries with the same sequence
//!   number, which the store de-duplicates.
//! - A linearizable read asks Raft for a read index (thesis §6.4, no log write; a follower
//!   forwards it to the leader) and is served once the applied index reaches it. A serializable
//!   read is served at once from this replica's state and says so.
//! - Everything waiting is bounded in number and in time.
//!
//! The logic is written once for any [`StateMachine`]: [`KvServer`] is it around the KV store,
//! and the shard controller's replica is it around the controller's store.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::command::{ClientId, Consistency, DecodeError};
use super::service::{Refusal, ResponseOf, ServiceRequest, ServiceResponse, StateMachine};
use super::store::{KvStore, SessionLimits};
use crate::raft::{
    Entry, EntryKind, Index, ProposeError, RawNode, ReadState, Role, SoftState, Term,
};

/// Committed entries warmed together before they are applied (see `StateMachine::warm`): enough
/// to overlap the table's cache misses, few enough that the first are still cached when applied.
const WARM_RUN: usize = 16;

/// Who a response goes to: an opaque id the caller gave with the request (a connection and
/// request number in the server, a client endpoint in the simulator).
pub type ReplyTo = u64;

/// One KV replica: the generic replica server around the KV store.
pub type KvServer = ReplicaServer<KvStore>;

/// The KV replica's bounds and policies (the same for every service).
pub type KvServerConfig = ServerConfig;

/// Bounds and policies of one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Take a snapshot once the durable Raft state (hard state and log) passes this many bytes.
    /// `None`: never (the log grows without bound).
    pub max_raft_state_bytes: Option<usize>,
    /// At most this many requests wait at once; more are answered `Busy`.
    pub max_pending_requests: usize,
    /// A request waiting this many ticks is answered `Timeout` (the client retries).
    pub request_timeout_ticks: u64,
    /// The session table's bounds.
    pub sessions: SessionLimits,
}

impl Default for ServerConfig {
    /// 10,000 waiting requests (a few MB of state at most) and 3 s (300 ticks of 10 ms: longer
    /// than an election, so a request survives one leader change).
    fn default() -> ServerConfig {
        ServerConfig {
            max_raft_state_bytes: Some(64 << 20),
            max_pending_requests: 10_000,
            request_timeout_ticks: 300,
            sessions: SessionLimits::default(),
        }
    }
}

#[derive(Clone, Debug)]
struct Waiter {
    reply_to: ReplyTo,
    client: ClientId,
    seq: u64,
    since_tick: u64,
}

#[derive(Clone, Debug)]
struct PendingWrite {
    waiter: Waiter,
    term: Term,
}

#[derive(Clone, Debug)]
struct PendingRead<O> {
    waiter: Waiter,
    op: O,
}

/// One replica's request handling for any service `M`.
pub struct ReplicaServer<M: StateMachine> {
    config: ServerConfig,
    store: M,
    /// Writes proposed here, by log index.
    writes: BTreeMap<Index, PendingWrite>,
    /// Reads waiting for their read index, by context.
    reads_waiting_index: BTreeMap<u64, PendingRead<M::Op>>,
    /// Reads with a read index, waiting for the applied index to reach it.
    reads_waiting_apply: Vec<(Index, PendingRead<M::Op>)>,
    next_read_context: u64,
    applied: Index,
    ticks: u64,
    role: Role,
    term: Term,
    leader_hint: u64,
    responses: Vec<(ReplyTo, ResponseOf<M>)>,
}

impl<M: StateMachine> ReplicaServer<M> {
    /// A replica with an empty store made with the default settings.
    pub fn new(config: ServerConfig) -> ReplicaServer<M> {
        ReplicaServer::with_settings(config, M::Settings::default())
    }

    /// A replica with an empty store made with `settings`.
    pub fn with_settings(config: ServerConfig, settings: M::Settings) -> ReplicaServer<M> {
        ReplicaServer {
            config,
            store: M::new(config.sessions, settings),
            writes: BTreeMap::new(),
            reads_waiting_index: BTreeMap::new(),
            reads_waiting_apply: Vec::new(),
            next_read_context: 0,
            applied: 0,
            ticks: 0,
            role: Role::Follower,
            term: 0,
            leader_hint: 0,
            responses: Vec::new(),
        }
    }

    /// A replica restarting from a snapshot taken at `index`.
    pub fn restore(
        config: ServerConfig,
        index: Index,
        snapshot: &Bytes,
    ) -> Result<ReplicaServer<M>, DecodeError> {
        let mut server = ReplicaServer::with_settings(config, M::Settings::default());
        server.store = M::restore(config.sessions, snapshot)?;
        server.applied = index;
        Ok(server)
    }

    /// The store (for reads by tests and tools).
    pub fn store(&self) -> &M {
        &self.store
    }

    /// The index of the last entry applied to the store.
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// Requests waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.writes.len() + self.reads_waiting_index.len() + self.reads_waiting_apply.len()
    }

    /// Handles a client request. `now_ms` is this node's clock, stamped into writes.
    pub fn on_request(
        &mut self,
        raw: &mut RawNode,
        now_ms: u64,
        reply_to: ReplyTo,
        request: ServiceRequest<M::Op>,
    ) {
        let ServiceRequest {
            client,
            seq,
            op,
            consistency,
        } = request;
        let waiter = Waiter {
            reply_to,
            client,
            seq,
            since_tick: self.ticks,
        };
        if let Err(error) = M::check_bounds(&op) {
            return self.answer(waiter, Err(error), consistency);
        }
        if self.pending_requests() >= self.config.max_pending_requests {
            let busy = M::refusal(Refusal::Busy);
            return self.answer(waiter, Err(busy), consistency);
        }
        if M::is_read(&op) {
            self.read(raw, waiter, op, consistency)
        } else {
            self.write(raw, now_ms, waiter, &op)
        }
    }

    fn write(&mut self, raw: &mut RawNode, now_ms: u64, waiter: Waiter, op: &M::Op) {
        // A retry of the session's latest request is answered from the session table.
        if let Some(result) = self.store.cached_reply(waiter.client, waiter.seq) {
            return self.answer(waiter, result, Consistency::Linearizable);
        }
        let entry = M::encode_write(waiter.client, waiter.seq, now_ms, op);
        match raw.propose(vec![entry]) {
            Ok(index) => {
                let term = raw.term();
                self.writes.insert(index, PendingWrite { waiter, term });
            }
            Err(ProposeError::NotLeader { leader }) => {
                self.refuse(waiter, Refusal::WrongLeader { leader })
            }
            Err(ProposeError::TransferInProgress | ProposeError::UnknownNode) => {
                self.refuse(waiter, Refusal::WrongLeader { leader: 0 })
            }
            Err(ProposeError::TooLarge) => self.refuse(waiter, Refusal::TooLarge),
        }
    }

    fn read(&mut self, raw: &mut RawNode, waiter: Waiter, op: M::Op, consistency: Consistency) {
        if consistency == Consistency::Serializable {
            let result = self.store.read(&op);
            return self.answer(waiter, result, Consistency::Serializable);
        }
        self.next_read_context += 1;
        let context = self.next_read_context;
        match raw.read_index(Bytes::copy_from_slice(&context.to_be_bytes())) {
            Ok(()) => {
                self.reads_waiting_index
                    .insert(context, PendingRead { waiter, op });
            }
            Err(_) => {
                let leader = raw.leader();
                self.refuse(waiter, Refusal::WrongLeader { leader })
            }
        }
    }

    /// Applies committed entries in order and answers what waited on them.
    pub fn on_committed(&mut self, entries: &[Entry]) {
        for run in entries.chunks(WARM_RUN) {
            for entry in run {
                if entry.kind == EntryKind::Normal {
                    self.store.warm(&entry.data);
                }
            }
            self.apply_run(run);
        }
        self.serve_reads();
    }

    fn apply_run(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied + 1,
                "entries apply in order, without gaps"
            );
            self.applied = entry.index;
            let applied = match entry.kind {
                EntryKind::Noop => None,
                EntryKind::Normal => self.store.apply(entry.index, &entry.data),
            };
            let Some(pending) = self.writes.remove(&entry.index) else {
                continue;
            };
            let ours = applied.as_ref().is_some_and(|a| {
                a.client == pending.waiter.client
                    && a.seq == pending.waiter.seq
                    && entry.term == pending.term
            });
            match applied {
                Some(applied) if ours => {
                    self.answer(pending.waiter, applied.result, Consistency::Linearizable)
                }
                // Another leader's entry took this index: ours was lost with the old leadership.
                _ => {
                    let leader = self.leader_hint;
                    self.refuse(pending.waiter, Refusal::WrongLeader { leader })
                }
            }
        }
    }

    /// Replaces the store with a snapshot installed from the leader.
    pub fn on_snapshot(&mut self, index: Index, data: &Bytes) -> Result<(), DecodeError> {
        self.store = M::restore(self.config.sessions, data)?;
        self.applied = index;
        // Writes waiting at indexes the snapshot covers cannot be matched any more.
        let covered: Vec<Index> = self.writes.range(..=index).map(|(&i, _)| i).collect();
        for i in covered {
            let pending = self.writes.remove(&i).expect("listed");
            let leader = self.leader_hint;
            self.refuse(pending.waiter, Refusal::WrongLeader { leader });
        }
        self.serve_reads();
        Ok(())
    }

    /// Read indexes from Raft: each read waits until the store has applied its index.
    pub fn on_read_states(&mut self, read_states: &[ReadState]) {
        for rs in read_states {
            let Ok(bytes) = <[u8; 8]>::try_from(&rs.context[..]) else {
                continue;
            };
            if let Some(read) = self.reads_waiting_index.remove(&u64::from_be_bytes(bytes)) {
                self.reads_waiting_apply.push((rs.index, read));
            }
        }
        self.serve_reads();
    }

    fn serve_reads(&mut self) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_waiting_apply)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_waiting_apply = waiting;
        for (_, read) in ready {
            let result = self.store.read(&read.op);
            self.answer(read.waiter, result, Consistency::Linearizable);
        }
    }

    /// A role or term change: writes proposed in an earlier leadership can no longer be
    /// vouched for, so their clients are told to retry (the store de-duplicates the retry).
    pub fn on_soft_state(&mut self, soft: SoftState) {
        self.leader_hint = soft.leader;
        let lost_leadership =
            self.role == Role::Leader && (soft.role != Role::Leader || soft.term != self.term);
        self.role = soft.role;
        self.term = soft.term;
        if lost_leadership {
            let leader = soft.leader;
            for (_, pending) in std::mem::take(&mut self.writes) {
                self.refuse(pending.waiter, Refusal::WrongLeader { leader });
            }
        }
    }

    /// Advances this replica's time by one tick and answers requests that waited too long.
    pub fn tick(&mut self) {
        self.ticks += 1;
        let deadline = self.ticks.saturating_sub(self.config.request_timeout_ticks);
        let expired = |w: &Waiter| w.since_tick < deadline;
        let mut late: Vec<Waiter> = take_expired(&mut self.writes, |p| expired(&p.waiter))
            .into_iter()
            .map(|p| p.waiter)
            .collect();
        late.extend(
            take_expired(&mut self.reads_waiting_index, |r| expired(&r.waiter))
                .into_iter()
                .map(|r| r.waiter),
        );
        let (late_reads, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_waiting_apply)
            .into_iter()
            .partition(|(_, r)| expired(&r.waiter));
        self.reads_waiting_apply = waiting;
        late.extend(late_reads.into_iter().map(|(_, r)| r.waiter));
        for waiter in late {
            self.refuse(waiter, Refusal::Timeout);
        }
    }

    /// True when the durable Raft state has outgrown `max_raft_state_bytes`.
    pub fn wants_snapshot(&self, raft_state_bytes: usize) -> bool {
        self.config
            .max_raft_state_bytes
            .is_some_and(|max| raft_state_bytes >= max)
    }

    /// The store's snapshot bytes, as of [`ReplicaServer::applied_index`].
    pub fn snapshot(&self) -> Bytes {
        self.store.snapshot()
    }

    /// Responses ready to go out, with who they go to.
    pub fn take_responses(&mut self) -> Vec<(ReplyTo, ResponseOf<M>)> {
        std::mem::take(&mut self.responses)
    }

    fn refuse(&mut self, waiter: Waiter, refusal: Refusal) {
        self.answer(waiter, Err(M::refusal(refusal)), Consistency::Linearizable);
    }

    fn answer(
        &mut self,
        waiter: Waiter,
        result: Result<M::Reply, M::Error>,
        consistency: Consistency,
    ) {
        let response = ServiceResponse {
            client: waiter.client,
            seq: waiter.seq,
            result,
            consistency,
        };
        self.responses.push((waiter.reply_to, response));
    }
}

/// Removes and returns the values of `map` that `expired` selects, in key order.
fn take_expired<K: Ord + Copy, V>(
    map: &mut BTreeMap<K, V>,
    expired: impl Fn(&V) -> bool,
) -> Vec<V> {
    let keys: Vec<K> = map
        .iter()
        .filter(|(_, v)| expired(v))
        .map(|(&k, _)| k)
        .collect();
    keys.into_iter().filter_map(|k| map.remove(&k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::{KvError, Op, Reply, Request, Response, MAX_KEY_BYTES};
    use crate::raft::{Config, Restore};

    /// A single-member group that has elected itself, with its replica; Readies are handled
    /// the way the node will (persist at once, apply, feed read states).
    struct One {
        raw: RawNode,
        kv: KvServer,
    }

    impl One {
        fn new() -> One {
            let mut raw =
                RawNode::new(Config::new(1, 1, vec![1], 9), Restore::default()).expect("valid");
            let mut kv = KvServer::new(KvServerConfig::default());
            for _ in 0..500 {
                raw.tick();
                drain(&mut raw, &mut kv);
                if raw.is_leader() && raw.applied_index() >= 1 {
                    return One { raw, kv };
                }
            }
            panic!("a single member elects itself");
        }

        fn request(
            &mut self,
            client: ClientId,
            seq: u64,
            op: Op,
            consistency: Consistency,
        ) -> Vec<Response> {
            let request = Request {
                client,
                seq,
                op,
                consistency,
            };
            self.kv.on_request(&mut self.raw, 0, 7, request);
            drain(&mut self.raw, &mut self.kv);
            self.kv
                .take_responses()
                .into_iter()
                .map(|(to, r)| {
                    assert_eq!(to, 7, "answers go where the request came from");
                    r
                })
                .collect()
        }
    }

    fn drain(raw: &mut RawNode, kv: &mut KvServer) {
        while raw.has_ready() {
            let rd = raw.ready();
            if let Some(soft) = rd.soft_state {
                kv.on_soft_state(soft);
            }
            if let Some(last) = rd.entries.last() {
                raw.persisted(last.index, last.term);
            }
            kv.on_committed(&rd.committed_entries);
            kv.on_read_states(&rd.read_states);
            raw.advance();
        }
    }

    fn register(one: &mut One) -> ClientId {
        match &one.request(0, 0, Op::Register, Consistency::Linearizable)[..] {
            [Response {
                result: Ok(Reply::Registered { client }),
                ..
            }] => *client,
            other => panic!("registration: {other:?}"),
        }
    }

    /// A write is answered once applied; a linearizable read through ReadIndex sees it and says
    /// it is linearizable; a serializable read is answered at once and says so.
    #[test]
    fn writes_and_both_read_kinds() {
        let mut one = One::new();
        let c = register(&mut one);
        let put = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        };
        let answers = one.request(c, 1, put, Consistency::Linearizable);
        assert_eq!(answers[0].result, Ok(Reply::Done));
        let get = || Op::Get {
            key: Bytes::from_static(b"k"),
        };
        let answers = one.request(c, 2, get(), Consistency::Linearizable);
        assert_eq!(
            answers[0].result,
            Ok(Reply::Value(Some(Bytes::from_static(b"v"))))
        );
        assert_eq!(answers[0].consistency, Consistency::Linearizable);
        let answers = one.request(c, 3, get(), Consistency::Serializable);
        assert_eq!(
            answers[0].result,
            Ok(Reply::Value(Some(Bytes::from_static(b"v"))))
        );
        assert_eq!(
            answers[0].consistency,
            Consistency::Serializable,
            "the reply says it may be stale"
        );
    }

    /// A retry of the latest request is answered from the session table without a new entry.
    #[test]
    fn retry_is_answered_from_the_session() {
        let mut one = One::new();
        let c = register(&mut one);
        let append = || Op::Append {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"x"),
        };
        one.request(c, 1, append(), Consistency::Linearizable);
        let last = one.raw.last_index();
        let answers = one.request(c, 1, append(), Consistency::Linearizable);
        assert_eq!(answers[0].result, Ok(Reply::Done));
        assert_eq!(
            one.raw.last_index(),
            last,
            "no entry for a retry already applied"
        );
        assert_eq!(one.kv.store().get(b"k"), Some(Bytes::from_static(b"x")));
    }

    /// A member that does not lead answers "wrong leader" with its hint, for writes and for
    /// linearizable reads when it knows no leader; bounds are checked before anything else.
    #[test]
    fn follower_redirects_and_bounds_come_first() {
        let mut raw =
            RawNode::new(Config::new(2, 1, vec![1, 2, 3], 9), Restore::default()).expect("valid");
        let mut kv = KvServer::new(KvServerConfig::default());
        let put = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::new(),
        };
        kv.on_request(
            &mut raw,
            0,
            1,
            Request {
                client: 5,
                seq: 1,
                op: put,
                consistency: Consistency::Linearizable,
            },
        );
        let get = Op::Get {
            key: Bytes::from_static(b"k"),
        };
        kv.on_request(
            &mut raw,
            0,
            1,
            Request {
                client: 5,
                seq: 2,
                op: get,
                consistency: Consistency::Linearizable,
            },
        );
        let big = Op::Get {
            key: Bytes::from(vec![0u8; MAX_KEY_BYTES + 1]),
        };
        kv.on_request(
            &mut raw,
            0,
            1,
            Request {
                client: 5,
                seq: 3,
                op: big,
                consistency: Consistency::Linearizable,
            },
        );
        let results: Vec<_> = kv
            .take_responses()
            .into_iter()
            .map(|(_, r)| r.result)
            .collect();
        assert_eq!(
            results,
            vec![
                Err(KvError::WrongLeader { leader: 0 }),
                Err(KvError::WrongLeader { leader: 0 }),
                Err(KvError::KeyTooLarge)
            ]
        );
    }

    /// Requests that wait too long are answered Timeout, so nothing waits forever.
    #[test]
    fn waiting_is_bounded_in_time() {
        let mut raw =
            RawNode::new(Config::new(1, 1, vec![1, 2, 3], 9), Restore::default()).expect("valid");
        let config = KvServerConfig {
            request_timeout_ticks: 5,
            ..KvServerConfig::default()
        };
        let mut kv = KvServer::new(config);
        // Pretend a leader is known so the read is forwarded and then never answered.
        raw.step(crate::raft::Message {
            group: 1,
            from: 2,
            to: 1,
            term: 1,
            body: crate::raft::MessageBody::Heartbeat {
                commit: 0,
                read_round: 0,
            },
        })
        .expect("valid");
        let get = Op::Get {
            key: Bytes::from_static(b"k"),
        };
        kv.on_request(
            &mut raw,
            0,
            1,
            Request {
                client: 5,
                seq: 1,
                op: get,
                consistency: Consistency::Linearizable,
            },
        );
        assert_eq!(kv.pending_requests(), 1);
        for _ in 0..6 {
            kv.tick();
        }
        let results: Vec<_> = kv
            .take_responses()
            .into_iter()
            .map(|(_, r)| r.result)
            .collect();
        assert_eq!(results, vec![Err(KvError::Timeout)]);
        assert_eq!(kv.pending_requests(), 0);
    }
}
