//! The client session table for exactly-once writes (Raft thesis §6.3), shared by every
//! service's state machine: which sessions are open, the last sequence each applied, and that
//! sequence's reply.
//!
//! A session is opened by a registration entry and its id is that entry's index, so every
//! replica agrees on it. The table is bounded twice: sessions unused for `session_ttl_ms`
//! expire, and past `max_sessions` the least recently used one is evicted. Time is the leaders'
//! stamps in the entries, never a replica's clock, so every replica expires the same sessions
//! at the same index.

use std::collections::{BTreeMap, BTreeSet};

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTable<T> {
    sessions: BTreeMap<ClientId, Session<T>>,
    /// (last_seen_ms, client) of every session, oldest first: expiry and eviction order.
    by_last_seen: BTreeSet<(u64, ClientId)>,
    /// The newest leader stamp applied (stamps only move it forward).
    now_ms: u64,
    limits: SessionLimits,
}

impl<T: Clone> SessionTable<T> {
    /// An empty table.
    pub fn new(limits: SessionLimits) -> SessionTable<T> {
        SessionTable {
            sessions: BTreeMap::new(),
            by_last_seen: BTreeSet::new(),
            now_ms: 0,
            limits,
        }
    }

    /// Moves the table's clock to a leader's stamp (never back) and expires idle sessions.
    pub fn advance(&mut self, stamp_ms: u64) {
        self.now_ms = self.now_ms.max(stamp_ms);
        let ttl = self.limits.session_ttl_ms;
        while let Some(&(seen, client)) = self.by_last_seen.first() {
            if seen.saturating_add(ttl) >= self.now_ms {
                break;
            }
            self.by_last_seen.remove(&(seen, client));
            self.sessions.remove(&client);
        }
    }

    /// The table's clock: the newest stamp applied.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Opens session `id` (evicting the least recently used one when full); `initial` is the
    /// reply a request with sequence 0 would get (none is ever sent).
    pub fn open(&mut self, id: ClientId, initial: T) {
        while self.sessions.len() >= self.limits.max_sessions.max(1) {
            let &(seen, oldest) = self.by_last_seen.first().expect("table is not empty");
            self.by_last_seen.remove(&(seen, oldest));
            self.sessions.remove(&oldest);
        }
        let session = Session {
            last_seq: 0,
            reply: initial,
            last_seen_ms: self.now_ms,
        };
        self.sessions.insert(id, session);
        self.by_last_seen.insert((self.now_ms, id));
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
        self.by_last_seen.remove(&(session.last_seen_ms, client));
        session.last_seen_ms = self.now_ms;
        self.by_last_seen.insert((self.now_ms, client));
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
            table.by_last_seen.insert((last_seen_ms, client));
        }
        Ok(table)
    }
}
