//! The client session table for exactly-once writes (Raft thesis §6.3), shared by every
//! service's state machine: which sessions are open, the last sequence each applied, and that
//! sequence's reply.
//!
//! A session is opened by a registration entry and its id is that entry's index, so every
//! replica agrees on it. The table is bounded twice: sessions unused for `session_ttl_ms`
//! expire, and past `max_sessions` the least recently used one is evicted. Time is the leaders'
//! stamps in the entries, never a replica's clock, so every replica expires the same sessions
//! at the same index.

use std::collections::{BTreeMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use super::command::{get_u64, ClientId, DecodeError};
use super::store::SessionLimits;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session<T> {
    last_seq: u64,
    reply: T,
    last_seen_ms: u64,
}

/// What the table says about a request `(client, seq)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck<T> {
    /// The session is unknown (expired, evicted, never opened): do not apply.
    Expired,
    /// Older than the session's latest: a late duplicate, do not apply.
    Stale,
    /// The session's latest: answer with its reply again, do not apply.
    Repeat(T),
    /// New: apply it, then [`SessionTable::record`] the reply.
    Fresh,
}

/// The bounded session table; `T` is the reply a retry gets again.
#[derive(Clone, Debug)]
pub struct SessionTable<T> {
    sessions: BTreeMap<ClientId, Session<T>>,
    /// `(last_seen_ms, client)` for every time a session's last-seen time changed, in that
    /// order, which is time order (the clock only moves forward): expiry and eviction order.
    /// An entry whose session was seen again since, or is gone, is stale and skipped; the
    /// queue is rebuilt from the sessions when stale entries outnumber them. Why not a sorted
    /// set: every write moved its session in it (a remove and an insert), about a tenth of
    /// applying a put.
    touches: VecDeque<(u64, ClientId)>,
    /// The newest leader stamp applied (stamps only move it forward).
    now_ms: u64,
    limits: SessionLimits,
}

/// Equal when the sessions, clock and limits are: the order of touches is derived from them.
impl<T: PartialEq> PartialEq for SessionTable<T> {
    fn eq(&self, other: &SessionTable<T>) -> bool {
        self.sessions == other.sessions
            && self.now_ms == other.now_ms
            && self.limits == other.limits
    }
}

impl<T: Eq> Eq for SessionTable<T> {}

impl<T: Clone> SessionTable<T> {
    /// An empty table.
    pub fn new(limits: SessionLimits) -> SessionTable<T> {
        SessionTable {
            sessions: BTreeMap::new(),
            touches: VecDeque::new(),
            now_ms: 0,
            limits,
        }
    }

    /// Moves the table's clock to a leader's stamp (never back) and expires idle sessions.
    pub fn advance(&mut self, stamp_ms: u64) {
        self.now_ms = self.now_ms.max(stamp_ms);
        let ttl = self.limits.session_ttl_ms;
        while let Some(&(seen, client)) = self.touches.front() {
            if seen.saturating_add(ttl) >= self.now_ms {
                break;
            }
            self.touches.pop_front();
            if self.is_current(seen, client) {
                self.sessions.remove(&client);
            }
        }
    }

    /// Whether `(seen, client)` is the session's latest touch (not stale).
    fn is_current(&self, seen: u64, client: ClientId) -> bool {
        self.sessions
            .get(&client)
            .is_some_and(|s| s.last_seen_ms == seen)
    }

    /// The least recently seen session, the smallest id among those seen last at the same
    /// time (as a set ordered by (last seen, id) would give, so that a table rebuilt from a
    /// snapshot evicts what the original would).
    fn least_recent(&mut self) -> Option<ClientId> {
        while let Some(&(seen, client)) = self.touches.front() {
            if self.is_current(seen, client) {
                break;
            }
            self.touches.pop_front();
        }
        let &(oldest, _) = self.touches.front()?;
        self.touches
            .iter()
            .take_while(|(seen, _)| *seen == oldest)
            .filter(|(seen, client)| self.is_current(*seen, *client))
            .map(|(_, client)| *client)
            .min()
    }

    /// Rebuilds the queue from the sessions when stale entries outnumber them (amortized:
    /// a sort of the sessions once every as many touches).
    fn compact_touches(&mut self) {
        if self.touches.len() > 2 * self.sessions.len() + 64 {
            self.rebuild_touches();
        }
    }

    /// The queue of touches made from the sessions alone: one entry each, in (last seen,
    /// client) order.
    fn rebuild_touches(&mut self) {
        let mut touches: Vec<(u64, ClientId)> = self
            .sessions
            .iter()
            .map(|(&client, s)| (s.last_seen_ms, client))
            .collect();
        touches.sort_unstable();
        self.touches = touches.into();
    }

    /// The table's clock: the newest stamp applied.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Opens session `id` (evicting the least recently used one when full); `initial` is the
    /// reply a request with sequence 0 would get (none is ever sent).
    pub fn open(&mut self, id: ClientId, initial: T) {
        while self.sessions.len() >= self.limits.max_sessions.max(1) {
            let oldest = self.least_recent().expect("table is not empty");
            self.sessions.remove(&oldest);
        }
        let session = Session {
            last_seq: 0,
            reply: initial,
            last_seen_ms: self.now_ms,
        };
        self.sessions.insert(id, session);
        self.touches.push_back((self.now_ms, id));
        self.compact_touches();
    }

    /// What to do with request `(client, seq)`. A held session is touched (used now).
    pub fn check(&mut self, client: ClientId, seq: u64) -> SessionCheck<T> {
        let verdict = match self.sessions.get(&client) {
            None => return SessionCheck::Expired,
            Some(session) if seq < session.last_seq => SessionCheck::Stale,
            Some(session) if seq == session.last_seq => SessionCheck::Repeat(session.reply.clone()),
            Some(_) => SessionCheck::Fresh,
        };
        self.touch(client);
        verdict
    }

    /// Records the reply of a fresh request (after [`SessionTable::check`] said `Fresh`).
    pub fn record(&mut self, client: ClientId, seq: u64, reply: T) {
        let session = self
            .sessions
            .get_mut(&client)
            .expect("record follows a Fresh check");
        assert!(seq > session.last_seq, "sequences only move forward");
        session.last_seq = seq;
        session.reply = reply;
    }

    fn touch(&mut self, client: ClientId) {
        let session = self
            .sessions
            .get_mut(&client)
            .expect("touch a held session");
        if session.last_seen_ms == self.now_ms {
            return;
        }
        session.last_seen_ms = self.now_ms;
        self.touches.push_back((self.now_ms, client));
        self.compact_touches();
    }

    /// The reply already given to `(client, seq)`, when that is the session's latest.
    pub fn cached_reply(&self, client: ClientId, seq: u64) -> Option<T> {
        let session = self.sessions.get(&client)?;
        (session.last_seq == seq && seq > 0).then(|| session.reply.clone())
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Appends the sessions (not the clock): count, then client, last sequence, last seen and
    /// the reply (written by `put_reply`) of each.
    pub fn encode(&self, buf: &mut BytesMut, put_reply: impl Fn(&mut BytesMut, &T)) {
        buf.put_u64_le(self.sessions.len() as u64);
        for (client, session) in &self.sessions {
            buf.put_u64_le(*client);
            buf.put_u64_le(session.last_seq);
            buf.put_u64_le(session.last_seen_ms);
            put_reply(buf, &session.reply);
        }
    }

    /// Reads [`SessionTable::encode`]'s bytes into a table whose clock is `now_ms`.
    pub fn decode(
        limits: SessionLimits,
        now_ms: u64,
        buf: &mut Bytes,
        get_reply: impl Fn(&mut Bytes) -> Result<T, DecodeError>,
    ) -> Result<SessionTable<T>, DecodeError> {
        let mut table = SessionTable::new(limits);
        table.now_ms = now_ms;
        for _ in 0..get_u64(buf)? {
            let client = get_u64(buf)?;
            let last_seq = get_u64(buf)?;
            let last_seen_ms = get_u64(buf)?;
            let reply = get_reply(buf)?;
            let session = Session {
                last_seq,
                reply,
                last_seen_ms,
            };
            table.sessions.insert(client, session);
        }
        table.rebuild_touches();
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::rng::Rng;

    /// The table as it was kept before the queue of touches: a set ordered by (last seen,
    /// client). The queue must expire and evict exactly what it would.
    #[derive(Default)]
    struct Reference {
        sessions: BTreeMap<ClientId, u64>,
        by_last_seen: BTreeSet<(u64, ClientId)>,
        now_ms: u64,
    }

    impl Reference {
        fn advance(&mut self, stamp: u64, ttl: u64) {
            self.now_ms = self.now_ms.max(stamp);
            while let Some(&(seen, client)) = self.by_last_seen.first() {
                if seen.saturating_add(ttl) >= self.now_ms {
                    break;
                }
                self.by_last_seen.remove(&(seen, client));
                self.sessions.remove(&client);
            }
        }

        fn open(&mut self, id: ClientId, max: usize) {
            while self.sessions.len() >= max {
                let (seen, oldest) = self.by_last_seen.pop_first().expect("not empty");
                assert_eq!(self.sessions.remove(&oldest), Some(seen));
            }
            self.sessions.insert(id, self.now_ms);
            self.by_last_seen.insert((self.now_ms, id));
        }

        fn touch(&mut self, client: ClientId) -> bool {
            let Some(seen) = self.sessions.get_mut(&client) else {
                return false;
            };
            self.by_last_seen.remove(&(*seen, client));
            *seen = self.now_ms;
            self.by_last_seen.insert((self.now_ms, client));
            true
        }
    }

    /// Random opens, uses and clock moves (many in the same millisecond, so eviction ties
    /// are common), now and then a round trip through encode/decode: the same sessions as
    /// the reference after every step, for many seeds.
    #[test]
    fn expiry_and_eviction_match_an_ordered_set() {
        for seed in 1..=200u64 {
            let mut rng = Rng::stream(seed, "sessions");
            let limits = SessionLimits {
                max_sessions: 1 + rng.range(0, 8) as usize,
                session_ttl_ms: 1 + rng.range(0, 50),
            };
            let mut table: SessionTable<u64> = SessionTable::new(limits);
            let mut reference = Reference::default();
            let mut next_id = 1;
            for step in 0..2000u64 {
                match rng.range(0, 10) {
                    0 => {
                        let stamp = reference.now_ms + rng.range(0, 5);
                        table.advance(stamp);
                        reference.advance(stamp, limits.session_ttl_ms);
                    }
                    1 | 2 => {
                        table.open(next_id, 0);
                        reference.open(next_id, limits.max_sessions);
                        next_id += 1;
                    }
                    3 => {
                        let mut buf = BytesMut::new();
                        table.encode(&mut buf, |b, r| b.put_u64_le(*r));
                        let mut bytes = buf.freeze();
                        table = SessionTable::decode(limits, table.now_ms(), &mut bytes, |b| {
                            get_u64(b)
                        })
                        .expect("decode");
                    }
                    _ => {
                        let client = rng.range(0, next_id);
                        let seq = step + 1;
                        let held = reference.touch(client);
                        match table.check(client, seq) {
                            SessionCheck::Expired => assert!(!held, "SEED={seed} step {step}"),
                            SessionCheck::Fresh => {
                                assert!(held, "SEED={seed} step {step}");
                                table.record(client, seq, seq);
                            }
                            other => panic!("SEED={seed} step {step}: {other:?}"),
                        }
                    }
                }
                let held: BTreeMap<ClientId, u64> = table
                    .sessions
                    .iter()
                    .map(|(&c, s)| (c, s.last_seen_ms))
                    .collect();
                assert_eq!(held, reference.sessions, "SEED={seed} step {step}");
                assert!(
                    table.touches.len() <= 2 * table.sessions.len() + 65,
                    "SEED={seed}: the queue is bounded"
                );
            }
        }
    }
}
