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
//!
//! A shard moves in parts ([`Shard::encode_part`]): the keys after a cursor key up to a byte
//! budget, and on the last part the session table. The old owner's frozen copy never changes,
//! so a part is a pure function of the cursor; the new owner records the last key it installed
//! ([`Shard::progress`]) and asks for the part after it.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::{BufMut, Bytes, BytesMut};

use super::command::{Last, ShardKvError};
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
    /// While `Pulling`: the last key installed so far (`None`: no part yet). Always `None`
    /// in any other state.
    progress: Option<Bytes>,
}

/// One part of a frozen shard, decoded: its pairs in key order and, on the last part, the
/// shard's sessions.
#[derive(Debug)]
pub(super) struct DecodedPart {
    /// The keys and values, strictly ascending.
    pub(super) pairs: Vec<(Bytes, Bytes)>,
    /// The session table (the last part only).
    pub(super) sessions: Option<SessionTable<Outcome>>,
}

/// Why a decoded part cannot be installed where it claims to belong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PartError {
    /// A part that is not the last has no key, so it would not move the install on.
    Empty,
    /// Its keys are not strictly ascending, or the first is not after the cursor.
    OutOfOrder,
}

impl Shard {
    /// An empty shard in `state`.
    pub fn new(state: ShardState, limits: SessionLimits) -> Shard {
        Shard {
            state,
            data: BTreeMap::new(),
            data_bytes: 0,
            sessions: SessionTable::new(limits),
            progress: None,
        }
    }

    /// While `Pulling`: the last key installed so far (`None`: no part yet).
    pub fn progress(&self) -> Option<&Bytes> {
        self.progress.as_ref()
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
        self.progress = None;
    }

    /// The part of this frozen shard after key `after` (from the first key when `None`): the
    /// following keys with their values while the payload stays within `budget_bytes` (at
    /// least one pair, so a pair larger than the budget still moves, alone), and when no key
    /// is left and the sessions fit too (or the part would otherwise be empty), the session
    /// table, making it the last part. Reads only the keys it sends (`BTreeMap::range`).
    ///
    /// Payload: the pair count (u64), each key and value length-prefixed, then on the last
    /// part the session clock (u64) and the sessions.
    pub fn encode_part(&self, after: Option<&Bytes>, budget_bytes: usize) -> (Last, Bytes) {
        let start = match after {
            None => Bound::Unbounded,
            Some(key) => Bound::Excluded(key),
        };
        let mut pairs = self
            .data
            .range::<Bytes, _>((start, Bound::Unbounded))
            .peekable();
        let mut buf = BytesMut::with_capacity(budget_bytes.min(self.data_bytes) + 64);
        buf.put_u64_le(0);
        let mut count: u64 = 0;
        while let Some((key, value)) = pairs.peek() {
            let pair_bytes = 8 + key.len() + value.len();
            if count > 0 && buf.len() + pair_bytes > budget_bytes {
                break;
            }
            put_bytes(&mut buf, key);
            put_bytes(&mut buf, value);
            count += 1;
            pairs.next();
        }
        buf[..8].copy_from_slice(&count.to_le_bytes());
        if pairs.peek().is_some() {
            return (Last::No, buf.freeze());
        }
        let mut sessions = BytesMut::with_capacity(16 + 48 * self.sessions.len());
        sessions.put_u64_le(self.sessions.now_ms());
        self.sessions.encode(&mut sessions, put_outcome);
        if count > 0 && buf.len() + sessions.len() > budget_bytes {
            // The sessions come alone in the next part (asked for after this part's last key).
            return (Last::No, buf.freeze());
        }
        buf.put_slice(&sessions);
        (Last::Yes, buf.freeze())
    }

    /// Installs a part decoded by [`decode_part`] into this `Pulling` shard, whose install has
    /// reached exactly the part's cursor `after`: merges its pairs and records the new
    /// progress, or on the last part installs the sessions (the caller then makes the shard
    /// `Serving`). Checks first, changes nothing on error.
    pub(super) fn install_part(
        &mut self,
        after: Option<&Bytes>,
        part: DecodedPart,
    ) -> Result<(), PartError> {
        assert!(
            matches!(self.state, ShardState::Pulling { .. }),
            "parts are installed only into a shard being pulled"
        );
        assert_eq!(
            self.progress.as_ref(),
            after,
            "a part continues the install"
        );
        let mut previous = after;
        for (key, _) in &part.pairs {
            if previous.is_some_and(|p| key <= p) {
                return Err(PartError::OutOfOrder);
            }
            previous = Some(key);
        }
        let next = part.pairs.last().map(|(key, _)| key.clone());
        match part.sessions {
            None if next.is_none() => return Err(PartError::Empty),
            None => self.progress = next,
            Some(sessions) => {
                self.sessions = sessions;
                self.progress = None;
            }
        }
        for (key, value) in part.pairs {
            set(&mut self.data, &mut self.data_bytes, key, value);
        }
        Ok(())
    }

    /// Makes this shard `Pulling` from `from` (it held nothing).
    pub(super) fn start_pulling(&mut self, from: GroupId) {
        assert!(
            self.data.is_empty() && self.sessions.is_empty() && self.progress.is_none(),
            "a shard starts pulling from nothing"
        );
        self.state = ShardState::Pulling { from };
    }

    /// Restores the install progress of a `Pulling` shard read from a snapshot.
    pub(super) fn set_progress(&mut self, progress: Option<Bytes>) {
        assert!(
            progress.is_none() || matches!(self.state, ShardState::Pulling { .. }),
            "only a shard being pulled has install progress"
        );
        self.progress = progress;
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
    /// order with their values, then the sessions. Every shard is written this way into
    /// snapshots; versions before chunked transfers also moved a whole frozen shard in this
    /// form (a `ShardCommand::Install`, still applied when replayed).
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

/// Decodes a part's payload ([`Shard::encode_part`]; `last` says whether sessions follow the
/// pairs). Every length is checked; nothing may follow.
pub(super) fn decode_part(
    payload: &Bytes,
    last: Last,
    limits: SessionLimits,
) -> Result<DecodedPart, DecodeError> {
    let mut buf = payload.clone();
    let count = get_u64(&mut buf)?;
    // A key and a value take at least 8 bytes of lengths, so a count past that is damage.
    if count > buf.len() as u64 / 8 {
        return Err(DecodeError::TooLong);
    }
    let mut pairs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let key = get_bytes(&mut buf, MAX_KEY_BYTES)?;
        let value = get_bytes(&mut buf, MAX_VALUE_BYTES)?;
        pairs.push((key, value));
    }
    let sessions = match last {
        Last::No => None,
        Last::Yes => {
            let now_ms = get_u64(&mut buf)?;
            Some(SessionTable::decode(limits, now_ms, &mut buf, get_outcome)?)
        }
    };
    if !buf.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(DecodedPart { pairs, sessions })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// A frozen shard with `sizes.len()` keys (`k00`, `k01`, ...) whose values have those sizes,
    /// and two sessions.
    fn frozen(sizes: &[usize]) -> Shard {
        let mut shard = Shard::new(ShardState::Serving, SessionLimits::default());
        for (i, &size) in sizes.iter().enumerate() {
            let op = Op::Put {
                key: b(&format!("k{i:02}")),
                value: Bytes::from(vec![b'v'; size]),
            };
            let client = 1 + i as u64 % 2;
            assert_eq!(
                shard.apply_write(client, 1 + i as u64, 5, &op, 10),
                Ok(Reply::Done)
            );
        }
        shard.state = ShardState::BePulled { to: 2 };
        shard
    }

    /// Pulls `frozen` part by part with `budget_bytes` into a new shard, checking every part on
    /// the way; returns the installed shard and the number of parts.
    fn pull(frozen: &Shard, budget_bytes: usize) -> (Shard, usize) {
        let mut pulled = Shard::new(ShardState::Pulling { from: 1 }, SessionLimits::default());
        for parts in 1..=frozen.len() + 2 {
            let after = pulled.progress().cloned();
            let (last, payload) = frozen.encode_part(after.as_ref(), budget_bytes);
            let part = decode_part(&payload, last, SessionLimits::default()).expect("decodes");
            // Over the budget only when one pair, or the sessions alone, are.
            if payload.len() > budget_bytes {
                assert!(
                    part.pairs.len() == 1 || (part.pairs.is_empty() && last == Last::Yes),
                    "part {parts} of {} bytes over a budget of {budget_bytes}",
                    payload.len()
                );
            }
            pulled.install_part(after.as_ref(), part).expect("in order");
            if last == Last::Yes {
                pulled.state = ShardState::Serving;
                return (pulled, parts);
            }
        }
        panic!("no last part with a budget of {budget_bytes}");
    }

    /// Parts cover every pair exactly once, in key order, whatever the budget: a pair larger
    /// than the budget travels alone, the sessions come with the last part (alone when they do
    /// not fit beside the last pairs), and an empty shard is one last part.
    #[test]
    fn parts_cover_every_pair_once() {
        let sizes = [10, 200, 3, 3, 3, 1000, 50, 0, 7];
        let shard = frozen(&sizes);
        let mut expected = shard.clone();
        expected.state = ShardState::Serving;
        for budget in [0, 1, 16, 40, 64, 100, 300, 1100, 1500, 1 << 20] {
            let (pulled, parts) = pull(&shard, budget);
            assert_eq!(pulled, expected, "budget {budget}");
            if budget <= 16 {
                assert!(
                    parts > sizes.len(),
                    "budget {budget}: one pair a part at most"
                );
            }
            if budget == 1 << 20 {
                assert_eq!(parts, 1, "everything fits one part");
            }
        }
        let empty = frozen(&[]);
        let (pulled, parts) = pull(&empty, 16);
        assert_eq!((pulled.len(), pulled.session_count(), parts), (0, 0, 1));
    }

    /// A part is checked before it changes anything: keys out of order or not after the
    /// cursor, and a part that is neither last nor holds a key, are refused.
    #[test]
    fn bad_parts_change_nothing() {
        let shard = frozen(&[5, 5, 5]);
        let (_, payload) = shard.encode_part(None, 1 << 20);
        let mut pulled = Shard::new(ShardState::Pulling { from: 1 }, SessionLimits::default());
        let decode = |payload: &Bytes, last| {
            decode_part(payload, last, SessionLimits::default()).expect("decodes")
        };
        let mut reversed = decode(&payload, Last::Yes);
        reversed.pairs.reverse();
        let before = pulled.clone();
        assert_eq!(
            pulled.install_part(None, reversed),
            Err(PartError::OutOfOrder)
        );
        let (_, first) = shard.encode_part(None, 1);
        let part = decode(&first, Last::No);
        pulled.install_part(None, part).expect("the first part");
        assert_eq!(pulled.progress(), Some(&b("k00")));
        let again = decode(&first, Last::No);
        let after = pulled.progress().cloned();
        let mid = pulled.clone();
        assert_eq!(
            pulled.install_part(after.as_ref(), again),
            Err(PartError::OutOfOrder),
            "a key not after the cursor"
        );
        let mut empty = BytesMut::new();
        empty.put_u64_le(0);
        let empty = decode(&empty.freeze(), Last::No);
        assert_eq!(
            pulled.install_part(after.as_ref(), empty),
            Err(PartError::Empty)
        );
        assert_eq!(pulled, mid);
        assert_ne!(pulled, before);
    }

    /// Every truncation of a part and every trailing byte is an error, not a panic.
    #[test]
    fn damaged_parts_are_errors() {
        let shard = frozen(&[5, 6]);
        for last in [Last::No, Last::Yes] {
            let (_, payload) = shard.encode_part(None, 1 << 20);
            if last == Last::No {
                assert!(decode_part(&payload, last, SessionLimits::default()).is_err());
                continue;
            }
            for len in 0..payload.len() {
                let cut = payload.slice(..len);
                assert!(decode_part(&cut, last, SessionLimits::default()).is_err());
            }
            let mut longer = payload.to_vec();
            longer.push(0);
            let longer = Bytes::from(longer);
            assert!(decode_part(&longer, last, SessionLimits::default()).is_err());
        }
    }
}
