//! The KV state machine: the data and the client session table, changed only by applying
//! committed log entries in order, so every replica holds the same state at the same index.
//!
//! Exactly-once (Raft thesis §6.3): every write carries its session and sequence number. The
//! session remembers the last sequence applied and its reply; a retry of it gets that reply
//! again without applying twice, an older one is refused as stale, and a request from a session
//! the table does not hold (expired, evicted, never opened) is refused as expired — never
//! applied, because nobody can tell whether an earlier copy was.
//!
//! The table is bounded twice: sessions unused for `session_ttl_ms` expire, and past
//! `max_sessions` the least recently used one is evicted. Time is the leaders' stamps in the
//! entries, never a replica's clock, so every replica expires the same sessions at the same
//! index. The table travels in snapshots with the data.

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::command::*;
use super::data::{apply_write, set, Slot, ValueTooLong};
use super::service::{Refusal, ServiceApplied, StateMachine};
use super::session::{SessionCheck, SessionTable};
use crate::raft::Index;

/// Bounds on the session table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// At most this many sessions are held; opening one more evicts the least recently used.
    pub max_sessions: usize,
    /// A session unused for this long (by the leaders' stamps) expires.
    pub session_ttl_ms: u64,
}

impl Default for SessionLimits {
    /// 100,000 sessions (each holds one cached reply, so the table stays in the tens of MB at
    /// worst) and one hour of idleness, far longer than any client retries one request.
    fn default() -> SessionLimits {
        SessionLimits {
            max_sessions: 100_000,
            session_ttl_ms: 60 * 60 * 1000,
        }
    }
}

/// What applying one entry produced, for whoever waits on it.
pub type Applied = ServiceApplied<Reply, KvError>;

/// The replicated store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStore {
    /// The keys and values. A hash map: the store never needs the keys in order except in a
    /// snapshot, which sorts them (so replicas' snapshots are byte-identical). Each key and
    /// value is one cache-line [`Slot`]; short keys are held in it.
    data: HashSet<Slot>,
    sessions: SessionTable<Result<Reply, KvError>>,
    data_bytes: usize,
    /// Entries that could not be decoded (written by an incompatible version); skipped alike on
    /// every replica.
    undecodable: u64,
}

impl KvStore {
    /// An empty store.
    pub fn new(limits: SessionLimits) -> KvStore {
        KvStore {
            data: HashSet::new(),
            sessions: SessionTable::new(limits),
            data_bytes: 0,
            undecodable: 0,
        }
    }

    /// Applies one committed entry's bytes at `index`.
    pub fn apply(&mut self, index: Index, data: &Bytes) -> Option<Applied> {
        let Ok(command) = Command::decode(data) else {
            self.undecodable += 1;
            return None;
        };
        self.sessions.advance(command.stamp_ms);
        Some(self.apply_command(index, command))
    }

    fn apply_command(&mut self, index: Index, command: Command) -> Applied {
        let Command {
            client, seq, op, ..
        } = command;
        if op == Op::Register {
            // The entry's index is the id: unique, and the same on every replica.
            let id = index;
            self.sessions.open(id, Ok(Reply::Done));
            let result = Ok(Reply::Registered { client: id });
            return Applied {
                client: 0,
                seq: 0,
                result,
            };
        }
        let result = match self.sessions.check(client, seq) {
            SessionCheck::Expired => Err(KvError::SessionExpired),
            SessionCheck::Stale => Err(KvError::Stale),
            SessionCheck::Repeat(reply) => reply,
            SessionCheck::Fresh => {
                let result = self.execute(&op);
                self.sessions.record(client, seq, result.clone());
                result
            }
        };
        Applied {
            client,
            seq,
            result,
        }
    }

    fn execute(&mut self, op: &Op) -> Result<Reply, KvError> {
        apply_write(&mut self.data, &mut self.data_bytes, op)
            .expect("only logged writes are executed")
            .map_err(|ValueTooLong| KvError::ValueTooLarge)
    }

    /// The reply already given to `(client, seq)`, when that is the session's latest: a retry
    /// can be answered without going through the log again.
    pub fn cached_reply(&self, client: ClientId, seq: u64) -> Option<Result<Reply, KvError>> {
        self.sessions.cached_reply(client, seq)
    }

    /// A key's value, as of the last applied entry.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.data.get(key).map(|slot| slot.value.clone())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// Sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Entries skipped because they could not be decoded.
    pub fn undecodable_entries(&self) -> u64 {
        self.undecodable
    }

    /// The whole state as bytes: version, clock, the data, then the sessions.
    pub fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(32 + self.data_bytes + 48 * self.sessions.len());
        buf.put_u8(SNAPSHOT_V1);
        buf.put_u64_le(self.sessions.now_ms());
        buf.put_u64_le(self.undecodable);
        buf.put_u64_le(self.data.len() as u64);
        let mut entries: Vec<&Slot> = self.data.iter().collect();
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        for slot in entries {
            put_bytes(&mut buf, slot.key.as_slice());
            put_bytes(&mut buf, &slot.value);
        }
        self.sessions.encode(&mut buf, put_result);
        buf.freeze()
    }

    /// Rebuilds a store from [`KvStore::snapshot`]'s bytes.
    pub fn restore(limits: SessionLimits, bytes: &Bytes) -> Result<KvStore, DecodeError> {
        let mut buf = bytes.clone();
        let version = get_u8(&mut buf)?;
        if version != SNAPSHOT_V1 {
            return Err(DecodeError::UnknownTag(version));
        }
        let mut store = KvStore::new(limits);
        let now_ms = get_u64(&mut buf)?;
        store.undecodable = get_u64(&mut buf)?;
        for _ in 0..get_u64(&mut buf)? {
            let key = get_bytes(&mut buf, MAX_KEY_BYTES)?;
            let value = get_bytes(&mut buf, MAX_VALUE_BYTES)?;
            set(&mut store.data, &mut store.data_bytes, key, value);
        }
        store.sessions = SessionTable::decode(limits, now_ms, &mut buf, get_result)?;
        if !buf.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(store)
    }
}

impl StateMachine for KvStore {
    type Op = Op;
    type Reply = Reply;
    type Error = KvError;
    type Settings = ();

    fn new(limits: SessionLimits, _settings: ()) -> KvStore {
        KvStore::new(limits)
    }

    fn restore(limits: SessionLimits, snapshot: &Bytes) -> Result<KvStore, DecodeError> {
        KvStore::restore(limits, snapshot)
    }

    fn snapshot(&self) -> Bytes {
        KvStore::snapshot(self)
    }

    fn apply(&mut self, index: Index, data: &Bytes) -> Option<Applied> {
        KvStore::apply(self, index, data)
    }

    fn warm(&self, data: &Bytes) {
        if let Some(key) = Command::peek_key(data) {
            std::hint::black_box(self.data.contains(key));
        }
    }

    fn cached_reply(&self, client: ClientId, seq: u64) -> Option<Result<Reply, KvError>> {
        KvStore::cached_reply(self, client, seq)
    }

    fn read(&self, op: &Op) -> Result<Reply, KvError> {
        Ok(Reply::Value(self.get(op.key())))
    }

    fn is_read(op: &Op) -> bool {
        !op.is_write()
    }

    fn check_bounds(op: &Op) -> Result<(), KvError> {
        op.check_bounds()
    }

    fn encode_write(client: ClientId, seq: u64, stamp_ms: u64, op: &Op) -> Bytes {
        let command = Command {
            client,
            seq,
            stamp_ms,
            op: op.clone(),
        };
        command.encode()
    }

    fn register_op() -> Op {
        Op::Register
    }

    fn registered(reply: &Reply) -> Option<ClientId> {
        match reply {
            Reply::Registered { client } => Some(*client),
            _ => None,
        }
    }

    fn refusal(refusal: Refusal) -> KvError {
        KvError::from(refusal)
    }

    fn as_refusal(error: &KvError) -> Option<Refusal> {
        error.as_refusal()
    }
}

const SNAPSHOT_V1: u8 = 1;

fn put_result(buf: &mut BytesMut, result: &Result<Reply, KvError>) {
    match result {
        Ok(Reply::Done) => buf.put_u8(0),
        Ok(Reply::Value(value)) => {
            buf.put_u8(1);
            put_option(buf, value.as_ref());
        }
        Ok(Reply::Swapped { swapped, found }) => {
            buf.put_u8(2);
            buf.put_u8(*swapped as u8);
            put_option(buf, found.as_ref());
        }
        Ok(Reply::Registered { client }) => {
            buf.put_u8(3);
            buf.put_u64_le(*client);
        }
        Err(error) => {
            buf.put_u8(4);
            buf.put_u8(match error {
                KvError::ValueTooLarge => 0,
                KvError::KeyTooLarge => 1,
                _ => 2,
            });
        }
    }
}

fn get_result(buf: &mut Bytes) -> Result<Result<Reply, KvError>, DecodeError> {
    Ok(match get_u8(buf)? {
        0 => Ok(Reply::Done),
        1 => Ok(Reply::Value(get_option(buf)?)),
        2 => {
            let swapped = get_u8(buf)? != 0;
            Ok(Reply::Swapped {
                swapped,
                found: get_option(buf)?,
            })
        }
        3 => Ok(Reply::Registered {
            client: get_u64(buf)?,
        }),
        4 => Err(match get_u8(buf)? {
            0 => KvError::ValueTooLarge,
            1 => KvError::KeyTooLarge,
            _ => KvError::Stale,
        }),
        other => return Err(DecodeError::UnknownTag(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    struct Log {
        store: KvStore,
        index: Index,
    }

    impl Log {
        fn new(limits: SessionLimits) -> Log {
            Log {
                store: KvStore::new(limits),
                index: 0,
            }
        }
        fn apply(&mut self, client: ClientId, seq: u64, stamp_ms: u64, op: Op) -> Applied {
            self.index += 1;
            let entry = Command {
                client,
                seq,
                stamp_ms,
                op,
            }
            .encode();
            self.store.apply(self.index, &entry).expect("decodes")
        }
        fn register(&mut self, stamp_ms: u64) -> ClientId {
            match self.apply(0, 0, stamp_ms, Op::Register).result {
                Ok(Reply::Registered { client }) => client,
                other => panic!("registration failed: {other:?}"),
            }
        }
    }

    /// Put, append, delete and compare-and-swap do what their names say.
    #[test]
    fn operations() {
        let mut log = Log::new(SessionLimits::default());
        let c = log.register(0);
        log.apply(
            c,
            1,
            0,
            Op::Put {
                key: b("k"),
                value: b("a"),
            },
        );
        log.apply(
            c,
            2,
            0,
            Op::Append {
                key: b("k"),
                value: b("b"),
            },
        );
        log.apply(
            c,
            3,
            0,
            Op::Append {
                key: b("new"),
                value: b("x"),
            },
        );
        assert_eq!(log.store.get(b"k"), Some(b("ab")));
        assert_eq!(log.store.get(b"new"), Some(b("x")));
        let cas = |expected: Option<&str>| Op::CompareAndSwap {
            key: b("k"),
            expected: expected.map(b),
            new: b("c"),
        };
        let failed = log.apply(c, 4, 0, cas(Some("zz"))).result;
        assert_eq!(
            failed,
            Ok(Reply::Swapped {
                swapped: false,
                found: Some(b("ab"))
            })
        );
        let done = log.apply(c, 5, 0, cas(Some("ab"))).result;
        assert_eq!(
            done,
            Ok(Reply::Swapped {
                swapped: true,
                found: Some(b("ab"))
            })
        );
        log.apply(c, 6, 0, Op::Delete { key: b("k") });
        assert_eq!(log.store.get(b"k"), None);
        let absent = log.apply(c, 7, 0, cas(None)).result;
        assert_eq!(
            absent,
            Ok(Reply::Swapped {
                swapped: true,
                found: None
            })
        );
        assert_eq!(log.store.data_bytes(), "k".len() + 1 + "new".len() + 1);
    }

    /// Thesis §6.3: a retried command is applied once and the retry gets the first answer; an
    /// older one is stale.
    #[test]
    fn retries_apply_at_most_once() {
        let mut log = Log::new(SessionLimits::default());
        let c = log.register(0);
        let append = Op::Append {
            key: b("k"),
            value: b("x"),
        };
        assert_eq!(log.apply(c, 1, 0, append.clone()).result, Ok(Reply::Done));
        assert_eq!(log.apply(c, 1, 0, append.clone()).result, Ok(Reply::Done));
        assert_eq!(
            log.store.get(b"k"),
            Some(b("x")),
            "the retry must not append again"
        );
        log.apply(c, 2, 0, append.clone());
        assert_eq!(log.apply(c, 1, 0, append).result, Err(KvError::Stale));
        assert_eq!(log.store.get(b"k"), Some(b("xx")));
        assert_eq!(log.store.cached_reply(c, 2), Some(Ok(Reply::Done)));
    }

    /// Sessions expire by the leaders' stamps, and a request of an expired session is refused
    /// rather than applied: nobody knows whether an earlier copy of it was.
    #[test]
    fn sessions_expire_by_log_time() {
        let limits = SessionLimits {
            max_sessions: 10,
            session_ttl_ms: 1000,
        };
        let mut log = Log::new(limits);
        let old = log.register(0);
        let young = log.register(900);
        log.apply(
            young,
            1,
            1500,
            Op::Put {
                key: b("k"),
                value: b("v"),
            },
        );
        assert_eq!(
            log.store.session_count(),
            1,
            "the idle session expired at 1500"
        );
        let late = log
            .apply(
                old,
                1,
                1500,
                Op::Put {
                    key: b("k"),
                    value: b("w"),
                },
            )
            .result;
        assert_eq!(late, Err(KvError::SessionExpired));
        assert_eq!(log.store.get(b"k"), Some(b("v")));
        // A stamp from a slower clock does not move time back.
        log.apply(
            young,
            2,
            10,
            Op::Put {
                key: b("k"),
                value: b("z"),
            },
        );
        assert_eq!(log.store.session_count(), 1);
    }

    /// Past max_sessions the least recently used session is evicted, deterministically.
    #[test]
    fn session_table_is_bounded() {
        let limits = SessionLimits {
            max_sessions: 3,
            session_ttl_ms: u64::MAX / 2,
        };
        let mut log = Log::new(limits);
        let ids: Vec<ClientId> = (0..3).map(|t| log.register(t)).collect();
        log.apply(
            ids[0],
            1,
            5,
            Op::Put {
                key: b("k"),
                value: b("v"),
            },
        );
        let fourth = log.register(6);
        assert_eq!(log.store.session_count(), 3);
        let evicted = log.apply(ids[1], 1, 7, Op::Delete { key: b("k") }).result;
        assert_eq!(
            evicted,
            Err(KvError::SessionExpired),
            "the least recently used goes"
        );
        assert!(log
            .apply(ids[0], 2, 7, Op::Delete { key: b("k") })
            .result
            .is_ok());
        assert!(log
            .apply(fourth, 1, 7, Op::Delete { key: b("k") })
            .result
            .is_ok());
    }

    /// Appends cannot grow a value past MAX_VALUE_BYTES; the refusal is itself deterministic.
    #[test]
    fn append_respects_value_bound() {
        let mut log = Log::new(SessionLimits::default());
        let c = log.register(0);
        let half = Bytes::from(vec![1u8; MAX_VALUE_BYTES / 2 + 1]);
        log.apply(
            c,
            1,
            0,
            Op::Put {
                key: b("k"),
                value: half.clone(),
            },
        );
        let result = log
            .apply(
                c,
                2,
                0,
                Op::Append {
                    key: b("k"),
                    value: half,
                },
            )
            .result;
        assert_eq!(result, Err(KvError::ValueTooLarge));
        assert_eq!(
            log.store.get(b"k").map(|v| v.len()),
            Some(MAX_VALUE_BYTES / 2 + 1)
        );
    }

    /// A snapshot carries the data and the session table: a restored store answers retries the
    /// same way and expires the same sessions.
    #[test]
    fn snapshot_round_trip() {
        let limits = SessionLimits {
            max_sessions: 10,
            session_ttl_ms: 1000,
        };
        let mut log = Log::new(limits);
        let c = log.register(0);
        log.apply(
            c,
            1,
            10,
            Op::Put {
                key: b("k"),
                value: b("v"),
            },
        );
        log.apply(
            c,
            2,
            20,
            Op::CompareAndSwap {
                key: b("k"),
                expected: None,
                new: b("x"),
            },
        );
        let restored = KvStore::restore(limits, &log.store.snapshot()).expect("decodes");
        assert_eq!(restored, log.store);
        let bytes = log.store.snapshot();
        for len in 0..bytes.len() {
            assert!(
                KvStore::restore(limits, &bytes.slice(..len)).is_err(),
                "prefix {len}"
            );
        }
    }

    /// An entry that does not decode is skipped on every replica alike.
    #[test]
    fn undecodable_entries_are_skipped() {
        let mut store = KvStore::new(SessionLimits::default());
        assert_eq!(store.apply(1, &b("garbage")), None);
        assert_eq!(store.undecodable_entries(), 1);
    }
}
