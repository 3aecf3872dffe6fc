//! What clients ask and what they are told, the size bounds on it, and the encoding of a write
//! command inside a Raft log entry.
//!
//! The log encoding is internal to a group (every replica runs the same code) and versioned by
//! its first byte; the wire protocol between clients and servers lives in `protocol/`. Decoding
//! checks every length before reading, so a damaged entry is an error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::service::{Refusal, ServiceRequest, ServiceResponse};
use crate::raft::NodeId;

/// Longest key accepted. Keys are held in every replica's in-memory index and repeated in
/// every log entry that names them; etcd and TiKV advise keys far below this.
pub const MAX_KEY_BYTES: usize = 4 << 10;
/// Longest value a key may hold, whether written at once or grown by appends. As etcd's default
/// request limit (1.5 MiB): a value travels whole in one log entry and one reply.
pub const MAX_VALUE_BYTES: usize = 1536 << 10;

/// Who asks: a client's session id, chosen by the client (random, so collisions are unlikely).
pub type ClientId = u64;

/// One operation on the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Open a session (Raft thesis §6.3): the new session's id is the index of this entry in
    /// the log, so every replica agrees on it and no retry of an expired session can pass for a
    /// new one. Sent with client 0 and sequence 0.
    Register,
    /// Read a key.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Set a key to a value.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Append to a key's value (an absent key is created).
    Append {
        /// The key.
        key: Bytes,
        /// What to append.
        value: Bytes,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Set a key to `new` only if it holds `expected` (`None`: only if it is absent).
    CompareAndSwap {
        /// The key.
        key: Bytes,
        /// The value the key must hold, or `None` for "absent".
        expected: Option<Bytes>,
        /// The new value.
        new: Bytes,
    },
}

impl Op {
    /// The key the operation touches (empty for `Register`).
    pub fn key(&self) -> &Bytes {
        static NO_KEY: Bytes = Bytes::new();
        match self {
            Op::Register => &NO_KEY,
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Append { key, .. }
            | Op::Delete { key }
            | Op::CompareAndSwap { key, .. } => key,
        }
    }

    /// True for operations that change the store (and so go through the log).
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }

    /// Checks the size bounds; a request that breaks one is refused before it is proposed.
    pub fn check_bounds(&self) -> Result<(), KvError> {
        if self.key().len() > MAX_KEY_BYTES {
            return Err(KvError::KeyTooLarge);
        }
        let value_len = match self {
            Op::Register | Op::Get { .. } | Op::Delete { .. } => 0,
            Op::Put { value, .. } | Op::Append { value, .. } => value.len(),
            Op::CompareAndSwap { expected, new, .. } => {
                new.len().max(expected.as_ref().map_or(0, Bytes::len))
            }
        };
        if value_len > MAX_VALUE_BYTES {
            return Err(KvError::ValueTooLarge);
        }
        Ok(())
    }
}

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Linearizable: through ReadIndex (Raft thesis §6.4), no log write. The default.
    Linearizable,
    /// Serializable: from the replica's own state, which may be stale (etcd's
    /// `--consistency=s`). The reply says so.
    Serializable,
}

/// A client's request: one operation in its session.
pub type Request = ServiceRequest<Op>;

/// A successful result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A read's value (`None`: the key is absent).
    Value(Option<Bytes>),
    /// A put, append or delete took effect.
    Done,
    /// A session was opened.
    Registered {
        /// The new session's id.
        client: ClientId,
    },
    /// A compare-and-swap: whether it swapped, and the value it found.
    Swapped {
        /// True when the key held the expected value and now holds the new one.
        swapped: bool,
        /// The value found before the operation (`None`: absent).
        found: Option<Bytes>,
    },
}

/// Why a request did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvError {
    /// This replica cannot serve it; `leader` is its guess (0: unknown). Try elsewhere.
    WrongLeader {
        /// The leader hint.
        leader: NodeId,
    },
    /// The key exceeds [`MAX_KEY_BYTES`].
    KeyTooLarge,
    /// The value (or the value an append would make) exceeds [`MAX_VALUE_BYTES`].
    ValueTooLarge,
    /// The session is unknown here: it expired, or was evicted from the bounded session table.
    /// The request was not applied now; whether an earlier copy of it was, the client cannot
    /// know. It must start a new session.
    SessionExpired,
    /// The request is older than the session's latest: a late duplicate, not applied.
    Stale,
    /// The server gave up waiting for the request to complete (it may still complete).
    Timeout,
    /// Too many requests are waiting at this replica; retry later.
    Busy,
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::WrongLeader { leader: 0 } => write!(f, "not the leader (leader unknown)"),
            KvError::WrongLeader { leader } => write!(f, "not the leader (try node {leader})"),
            KvError::KeyTooLarge => write!(f, "key longer than {MAX_KEY_BYTES} bytes"),
            KvError::ValueTooLarge => write!(f, "value longer than {MAX_VALUE_BYTES} bytes"),
            KvError::SessionExpired => write!(f, "client session expired; start a new one"),
            KvError::Stale => write!(f, "request older than the session's latest"),
            KvError::Timeout => write!(f, "timed out waiting for the request to complete"),
            KvError::Busy => write!(f, "too many requests waiting; retry later"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<Refusal> for KvError {
    /// A refusal of the shared replica server as this service says it.
    fn from(refusal: Refusal) -> KvError {
        match refusal {
            Refusal::WrongLeader { leader } => KvError::WrongLeader { leader },
            Refusal::Timeout => KvError::Timeout,
            Refusal::Busy => KvError::Busy,
            // The only thing that makes a KV command too large for the log is its value.
            Refusal::TooLarge => KvError::ValueTooLarge,
            Refusal::SessionExpired => KvError::SessionExpired,
        }
    }
}

impl KvError {
    /// The shared replica server's refusal this error is, if it is one.
    pub fn as_refusal(&self) -> Option<Refusal> {
        match *self {
            KvError::WrongLeader { leader } => Some(Refusal::WrongLeader { leader }),
            KvError::Timeout => Some(Refusal::Timeout),
            KvError::Busy => Some(Refusal::Busy),
            KvError::SessionExpired => Some(Refusal::SessionExpired),
            KvError::KeyTooLarge | KvError::ValueTooLarge | KvError::Stale => None,
        }
    }
}

/// The answer to a request.
pub type Response = ServiceResponse<Reply, KvError>;

/// A write as it travels through the log: the session, the operation, and the leader's clock
/// reading when it proposed it (sessions expire by this stamp, never by a replica's clock, so
/// every replica expires the same sessions at the same index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The session.
    pub client: ClientId,
    /// The session's sequence number.
    pub seq: u64,
    /// The proposing leader's clock, in milliseconds.
    pub stamp_ms: u64,
    /// The operation (never a `Get`).
    pub op: Op,
}

/// Why a log entry could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The entry ends before a field does.
    Truncated,
    /// An unknown format version or operation tag.
    UnknownTag(u8),
    /// A length beyond the bounds above.
    TooLong,
    /// Bytes left over after the last field.
    TrailingBytes,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated"),
            DecodeError::UnknownTag(tag) => write!(f, "unknown tag {tag}"),
            DecodeError::TooLong => write!(f, "length beyond bounds"),
            DecodeError::TrailingBytes => write!(f, "trailing bytes"),
        }
    }
}

impl std::error::Error for DecodeError {}

const FORMAT_V1: u8 = 1;
/// An entry's fixed fields before the key: version, tag, client, seq, stamp.
const FIXED_BYTES: usize = 1 + 1 + 8 + 8 + 8;
const TAG_PUT: u8 = 1;
const TAG_APPEND: u8 = 2;
const TAG_DELETE: u8 = 3;
const TAG_CAS: u8 = 4;
const TAG_REGISTER: u8 = 5;

impl Command {
    /// The entry bytes: version, tag, client, seq, stamp, then the operation's fields, each
    /// byte string prefixed by its u32 length (little-endian throughout).
    pub fn encode(&self) -> Bytes {
        // Sized exactly: the buffer is never grown (a put's value used to be left out, so
        // every put's entry was allocated twice and copied once).
        let field = |bytes: &[u8]| 4 + bytes.len();
        let op_bytes = match &self.op {
            Op::Put { key, value } | Op::Append { key, value } => field(key) + field(value),
            Op::CompareAndSwap { key, expected, new } => {
                field(key) + 1 + expected.as_deref().map_or(0, field) + field(new)
            }
            Op::Delete { key } | Op::Get { key } => field(key),
            Op::Register => field(&[]),
        };
        let mut buf = BytesMut::with_capacity(FIXED_BYTES + op_bytes);
        buf.put_u8(FORMAT_V1);
        let tag = match &self.op {
            Op::Put { .. } => TAG_PUT,
            Op::Append { .. } => TAG_APPEND,
            Op::Delete { .. } => TAG_DELETE,
            Op::CompareAndSwap { .. } => TAG_CAS,
            Op::Register => TAG_REGISTER,
            Op::Get { .. } => panic!("reads never enter the log"),
        };
        buf.put_u8(tag);
        buf.put_u64_le(self.client);
        buf.put_u64_le(self.seq);
        buf.put_u64_le(self.stamp_ms);
        put_bytes(&mut buf, self.op.key());
        match &self.op {
            Op::Put { value, .. } | Op::Append { value, .. } => put_bytes(&mut buf, value),
            Op::CompareAndSwap { expected, new, .. } => {
                put_option(&mut buf, expected.as_ref());
                put_bytes(&mut buf, new);
            }
            Op::Register | Op::Delete { .. } | Op::Get { .. } => {}
        }
        buf.freeze()
    }

    /// The key of an encoded command, without decoding the rest: `None` for a registration
    /// or bytes too short to hold a key. Nothing else is checked (a hint for warming the
    /// table; `decode` judges the entry).
    pub fn peek_key(data: &[u8]) -> Option<&[u8]> {
        let (&version, rest) = data.split_first()?;
        if version != FORMAT_V1 || rest.first() == Some(&TAG_REGISTER) {
            return None;
        }
        let len = u32::from_le_bytes(*data.get(FIXED_BYTES..)?.first_chunk::<4>()?) as usize;
        data.get(FIXED_BYTES + 4..)?.get(..len)
    }

    /// Decodes an entry written by [`Command::encode`].
    pub fn decode(data: &Bytes) -> Result<Command, DecodeError> {
        let mut buf = data.clone();
        let version = get_u8(&mut buf)?;
        if version != FORMAT_V1 {
            return Err(DecodeError::UnknownTag(version));
        }
        let tag = get_u8(&mut buf)?;
        let client = get_u64(&mut buf)?;
        let seq = get_u64(&mut buf)?;
        let stamp_ms = get_u64(&mut buf)?;
        let key = get_bytes(&mut buf, MAX_KEY_BYTES)?;
        let op = match tag {
            TAG_PUT => Op::Put {
                key,
                value: get_bytes(&mut buf, MAX_VALUE_BYTES)?,
            },
            TAG_APPEND => Op::Append {
                key,
                value: get_bytes(&mut buf, MAX_VALUE_BYTES)?,
            },
            TAG_DELETE => Op::Delete { key },
            TAG_REGISTER => Op::Register,
            TAG_CAS => {
                let expected = get_option(&mut buf)?;
                let new = get_bytes(&mut buf, MAX_VALUE_BYTES)?;
                Op::CompareAndSwap { key, expected, new }
            }
            other => return Err(DecodeError::UnknownTag(other)),
        };
        if buf.has_remaining() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(Command {
            client,
            seq,
            stamp_ms,
            op,
        })
    }
}

pub(crate) fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u32_le(bytes.len() as u32);
    buf.put_slice(bytes);
}

pub(crate) fn put_option(buf: &mut BytesMut, bytes: Option<&Bytes>) {
    match bytes {
        None => buf.put_u8(0),
        Some(bytes) => {
            buf.put_u8(1);
            put_bytes(buf, bytes);
        }
    }
}

pub(crate) fn get_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.remaining() < 1 {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u8())
}

pub(crate) fn get_u64(buf: &mut Bytes) -> Result<u64, DecodeError> {
    if buf.remaining() < 8 {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u64_le())
}

pub(crate) fn get_bytes(buf: &mut Bytes, max_len: usize) -> Result<Bytes, DecodeError> {
    if buf.remaining() < 4 {
        return Err(DecodeError::Truncated);
    }
    let len = buf.get_u32_le() as usize;
    if len > max_len {
        return Err(DecodeError::TooLong);
    }
    if buf.remaining() < len {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.split_to(len))
}

pub(crate) fn get_option(buf: &mut Bytes) -> Result<Option<Bytes>, DecodeError> {
    match get_u8(buf)? {
        0 => Ok(None),
        1 => Ok(Some(get_bytes(buf, MAX_VALUE_BYTES)?)),
        other => Err(DecodeError::UnknownTag(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Every write kind survives the log encoding unchanged.
    #[test]
    fn commands_round_trip() {
        let ops = [
            Op::Put {
                key: b("k"),
                value: b("v"),
            },
            Op::Append {
                key: b("k"),
                value: b(""),
            },
            Op::Delete { key: b("k") },
            Op::Register,
            Op::CompareAndSwap {
                key: b("k"),
                expected: None,
                new: b("n"),
            },
            Op::CompareAndSwap {
                key: b(""),
                expected: Some(b("e")),
                new: b("n"),
            },
        ];
        for op in ops {
            let cmd = Command {
                client: 7,
                seq: 9,
                stamp_ms: 11,
                op,
            };
            let encoded = cmd.encode();
            // The key found without decoding is the decoded one's (none for a registration),
            // and no cut of the bytes makes it read past them.
            let key = (cmd.op != Op::Register).then(|| cmd.op.key().clone());
            assert_eq!(Command::peek_key(&encoded), key.as_deref(), "{cmd:?}");
            for cut in 0..encoded.len() {
                if let Some(found) = Command::peek_key(&encoded[..cut]) {
                    assert_eq!(Some(found), key.as_deref(), "cut at {cut}");
                }
            }
            assert_eq!(
                encoded.len(),
                FIXED_BYTES
                    + cmd.op.key().len()
                    + match &cmd.op {
                        Op::Put { value, .. } | Op::Append { value, .. } => 8 + value.len(),
                        Op::CompareAndSwap { expected, new, .. } => {
                            4 + 1 + expected.as_ref().map_or(0, |e| 4 + e.len()) + 4 + new.len()
                        }
                        _ => 4,
                    }
            );
            assert_eq!(Command::decode(&encoded), Ok(cmd));
        }
    }

    /// Every truncation and every trailing byte of an encoded command is an error, not a panic.
    #[test]
    fn damaged_entries_are_errors() {
        let cmd = Command {
            client: 1,
            seq: 2,
            stamp_ms: 3,
            op: Op::CompareAndSwap {
                key: b("key"),
                expected: Some(b("old")),
                new: b("new"),
            },
        };
        let bytes = cmd.encode();
        for len in 0..bytes.len() {
            assert!(
                Command::decode(&bytes.slice(..len)).is_err(),
                "prefix of {len} bytes"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            Command::decode(&Bytes::from(longer)),
            Err(DecodeError::TrailingBytes)
        );
        let mut bad = bytes.to_vec();
        bad[0] = 9;
        assert_eq!(
            Command::decode(&Bytes::from(bad)),
            Err(DecodeError::UnknownTag(9))
        );
    }

    /// Oversize keys and values are refused with their own errors.
    #[test]
    fn bounds_are_checked() {
        let big_key = Bytes::from(vec![0u8; MAX_KEY_BYTES + 1]);
        let big_value = Bytes::from(vec![0u8; MAX_VALUE_BYTES + 1]);
        assert_eq!(
            Op::Get { key: big_key }.check_bounds(),
            Err(KvError::KeyTooLarge)
        );
        let put = Op::Put {
            key: b("k"),
            value: big_value,
        };
        assert_eq!(put.check_bounds(), Err(KvError::ValueTooLarge));
        assert_eq!(Op::Delete { key: b("k") }.check_bounds(), Ok(()));
    }
}
