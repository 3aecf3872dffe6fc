//! One shard as a group holds it: where it stands in a migration, its keys and values, and its
//! exactly-once session table, which travels with it from group to group.
//!
//! Sessions are per shard (a client's sequence numbers are its own across all shards, one
//! operation at a time), so a retry that reaches the shard's new owner finds its reply there. A
//! client's first request to a shard opens its session in that shard. The table is bounded:
//! sessions idle past `session_ttl_ms` (by the leaders' stamps) expire, and a full table admits
//! no new client (`TooManySessions`) rather than evicting one that may still retry, because a
//! retry from an evicted session would be applied twice. The clerk stops retrying one request
//! well before the lifetime ends ([`super::client::ShardClerkConfig::give_up_ticks`]).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::command::ShardKvError;
use crate::kv::command::{
    get_bytes, get_option, get_u64, get_u8, put_bytes, put_option, DecodeError, MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
};
use crate::kv::data::{apply_write, set, ValueTooLong};
use crate::kv::session::{SessionCheck, SessionTable};
use crate::kv::{ClientId, Op, Reply, SessionLimits};
use crate::raft::GroupId;

/// A session's remembered result.
pub type Outcome = Result<Reply, ShardKvError>;

/// Where a shard stands in this group, in the group's current configuration. Every transition
/// is a committed command (module docs of [`super`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardState {
    /// Not this group's, and nothing of it is held.
    Absent,
    /// This group's, held and served.
    Serving,
    /// This group's in the current configuration, to be pulled from `from` (its owner in the
    /// previous one); not served until installed.
    Pulling {
        /// The previous owner.
        from: GroupId,
    },
    /// This group's in the previous configuration, `to`'s in the current one: frozen, not
    /// served, kept until `to` has installed it, then deleted.
    BePulled {
        /// The new owner.
        to: GroupId,
    },
}

impl ShardState {
    /// True when the shard needs nothing more in this configuration (the next may be applied).
    pub fn is_settled(self) -> bool {
        matches!(self, ShardState::Absent | ShardState::Serving)
    }
}

/// One shard's state, data and sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Its migration state.
    pub state: ShardState,
    data: BTreeMap<Bytes, Bytes>,
    data_bytes: usize,
    sessions: SessionTable<Outcome>,
}

impl Shard {
    /// An empty shard in `state`.
    pub fn new(state: ShardState, limits: SessionLimits) -> Shard {
        Shard {
            state,
            data: BTreeMap::new(),
            data_bytes: 0,
            sessions: SessionTable::new(limits),
        }
    }

    /// A key's value.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.data.get(key).cloned()
    }

    /// Keys held.
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

    /// The reply a session's latest request got, if `seq` is it.
    pub fn cached_reply(&self, client: ClientId, seq: u64) -> Option<Outcome> {
        self.sessions.cached_reply(client, seq)
    }

    /// Drops the data and sessions (the shard was deleted or never arrived).
    pub fn clear(&mut self, limits: SessionLimits) {
        self.data.clear();
        self.data_bytes = 0;
        self.sessions = SessionTable::new(limits);
    }

    /// Applies a client's write exactly once (the shard must be served): the session decides
    /// whether it is fresh, a retry, or a late duplicate.
    pub fn apply_write(
        &mut self,
        client: ClientId,
        seq: u64,
        stamp_ms: u64,
        op: &Op,
        max_sessions: usize,
    ) -> Outcome {
        self.sessions.advance(stamp_ms);
        let mut check = self.sessions.check(client, seq);
        if check == SessionCheck::Expired {
            // First request of this client in this shard (or after a lifetime of idleness,
            // longer than any clerk retries): open its session here.
            if self.sessions.len() >= max_sessions {
                return Err(ShardKvError::TooManySessions);
            }
            self.sessions.open(client, Ok(Reply::Done));
            check = self.sessions.check(client, seq);
        }
        match check {
            SessionCheck::Expired => unreachable!("the session was just opened"),
            SessionCheck::Stale => Err(ShardKvError::Stale),
            SessionCheck::Repeat(reply) => reply,
            SessionCheck::Fresh => {
                let result = self.execute(op);
                self.sessions.record(client, seq, result.clone());
                result
            }
        }
    }

    fn execute(&mut self, op: &Op) -> Outcome {
        match apply_write(&mut self.data, &mut self.data_bytes, op) {
            None => Err(ShardKvError::Unsupported),
            Some(result) => result.map_err(|ValueTooLong| ShardKvError::ValueTooLarge),
        }
    }

    /// The shard's data and sessions as bytes (not its state): the session clock, the keys in
    /// order with their values, then the sessions. The frozen shard travels in this form from
    /// its old owner to its new one, and every shard is written this way into snapshots.
    pub fn encode_transfer(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(32 + self.data_bytes + 48 * self.sessions.len());
        self.put_transfer(&mut buf);
        buf.freeze()
    }

    pub(super) fn put_transfer(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.sessions.now_ms());
        buf.put_u64_le(self.data.len() as u64);
        for (key, value) in &self.data {
            put_bytes(buf, key);
            put_bytes(buf, value);
        }
        self.sessions.encode(buf, put_outcome);
    }

    /// Reads [`Shard::encode_transfer`]'s form from `buf` into a shard in `state`.
    pub(super) fn get_transfer(
        buf: &mut Bytes,
        state: ShardState,
        limits: SessionLimits,
    ) -> Result<Shard, DecodeError> {
        let mut shard = Shard::new(state, limits);
        let now_ms = get_u64(buf)?;
        let keys = get_u64(buf)?;
        // A key and a value take at least 8 bytes of lengths, so a count past that is damage.
        if keys > buf.len() as u64 / 8 {
            return Err(DecodeError::TooLong);
        }
        for _ in 0..keys {
            let key = get_bytes(buf, MAX_KEY_BYTES)?;
            let value = get_bytes(buf, MAX_VALUE_BYTES)?;
            set(&mut shard.data, &mut shard.data_bytes, key, value);
        }
        shard.sessions = SessionTable::decode(limits, now_ms, buf, get_outcome)?;
        Ok(shard)
    }

    /// Decodes a whole transfer payload (nothing may follow it).
    pub fn decode_transfer(
        payload: &Bytes,
        state: ShardState,
        limits: SessionLimits,
    ) -> Result<Shard, DecodeError> {
        let mut buf = payload.clone();
        let shard = Shard::get_transfer(&mut buf, state, limits)?;
        if !buf.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(shard)
    }
}

fn put_outcome(buf: &mut BytesMut, outcome: &Outcome) {
    match outcome {
        Ok(Reply::Done) => buf.put_u8(0),
        Ok(Reply::Value(value)) => {
            buf.put_u8(1);
            put_option(buf, value.as_ref());
        }
        Ok(Reply::Swapped { swapped, found }) => {
            buf.put_u8(2);
            buf.put_u8(u8::from(*swapped));
            put_option(buf, found.as_ref());
        }
        Ok(Reply::Registered { client }) => {
            buf.put_u8(3);
            buf.put_u64_le(*client);
        }
        // Only results of applied writes are remembered: a value too large is the one error
        // an applied write can have; anything else is written as "unsupported".
        Err(ShardKvError::ValueTooLarge) => buf.put_u8(4),
        Err(_) => buf.put_u8(5),
    }
}

fn get_outcome(buf: &mut Bytes) -> Result<Outcome, DecodeError> {
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
        4 => Err(ShardKvError::ValueTooLarge),
        5 => Err(ShardKvError::Unsupported),
        other => return Err(DecodeError::UnknownTag(other)),
    })
}
