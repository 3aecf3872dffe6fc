//! A shard group's log entries and errors, and their encoding.
//!
//! Four kinds of entry go through a group's log: a client's write (the KV service's own
//! [`Command`], so the request shape and the operation encoding are the KV service's), the next
//! configuration, one part of a pulled shard, and the delete of a shard the new owner has
//! installed. Each migration entry names the configuration it belongs to (a part also names the
//! key it continues after); applying it in any other configuration, or out of turn, does
//! nothing, so duplicates and a stale leader's proposals are harmless. Decoding checks every
//! length before reading: a damaged entry is an error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::kv::command::{
    get_bytes, get_u64, get_u8, put_bytes, put_option, Command, DecodeError, MAX_KEY_BYTES,
};
use crate::kv::{KvError, Reply, ServiceResponse};
use crate::raft::NodeId;
use crate::shardctl::command::{get_config, get_u32, put_config};
use crate::shardctl::{Config, ShardId};

/// Largest payload one shard part may carry (and the bound its decoding checks). Raft carries
/// one entry whole, so this is the Raft core's default `max_entry_bytes` (8 MiB); a node's
/// parts are smaller still (`ShardKvServerConfig::part_bytes`). A shard of any size moves, in
/// as many parts as it takes.
pub const MAX_SHARD_PART_BYTES: usize = 8 << 20;

/// What an [`ShardCommand::InstallPart`] entry adds to its payload and its cursor key: the
/// version and tag, the configuration, the shard, the cursor's presence byte and length, the
/// last-part flag and the payload's length (24 bytes), rounded up.
pub const PART_HEADER_BYTES: usize = 32;

/// The most an [`ShardCommand::InstallPart`] entry adds to its payload: its header and the
/// longest cursor key. A part budget this much under an entry limit always fits it.
pub const MAX_PART_OVERHEAD_BYTES: usize = PART_HEADER_BYTES + MAX_KEY_BYTES;

/// The bytes of the [`ShardCommand::InstallPart`] entry that carries `payload` after `after`,
/// within [`PART_HEADER_BYTES`]: what a host checks against its entry limit before proposing.
pub fn part_entry_bytes(after: Option<&Bytes>, payload: &Bytes) -> usize {
    PART_HEADER_BYTES + after.map_or(0, Bytes::len) + payload.len()
}

/// Why a request did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardKvError {
    /// This group does not serve the key's shard in its configuration `config` (it is not the
    /// owner, or it is the owner but the shard has not arrived yet). The client refreshes its
    /// configuration and retries, with the same sequence number.
    WrongGroup {
        /// The configuration the group is in.
        config: u64,
    },
    /// This replica cannot serve it; `leader` is its guess (0: unknown).
    WrongLeader {
        /// The leader hint.
        leader: NodeId,
    },
    /// The key exceeds [`crate::kv::command::MAX_KEY_BYTES`].
    KeyTooLarge,
    /// The value (or the value an append would make) exceeds
    /// [`crate::kv::command::MAX_VALUE_BYTES`].
    ValueTooLarge,
    /// The session is unknown and cannot be opened again (never made by this service, which
    /// opens sessions on first use; kept so the shared refusals map one to one).
    SessionExpired,
    /// Older than the session's latest request in this shard: a late duplicate, not applied.
    Stale,
    /// The server gave up waiting for the request to complete (it may still complete).
    Timeout,
    /// Too many requests are waiting at this replica; retry later.
    Busy,
    /// The shard's session table is full of sessions active within their lifetime: a new
    /// client cannot be admitted to this shard now. Nothing was applied; retry later.
    TooManySessions,
    /// The operation is not one this service takes (sessions need no registration here).
    Unsupported,
}

impl std::fmt::Display for ShardKvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardKvError::WrongGroup { config } => {
                write!(f, "shard not served by this group (its config {config})")
            }
            ShardKvError::WrongLeader { leader: 0 } => write!(f, "not the leader (leader unknown)"),
            ShardKvError::WrongLeader { leader } => write!(f, "not the leader (try node {leader})"),
            ShardKvError::KeyTooLarge => write!(f, "key too long"),
            ShardKvError::ValueTooLarge => write!(f, "value too long"),
            ShardKvError::SessionExpired => write!(f, "client session expired"),
            ShardKvError::Stale => write!(f, "request older than the session's latest"),
            ShardKvError::Timeout => write!(f, "timed out waiting for the request to complete"),
            ShardKvError::Busy => write!(f, "too many requests waiting; retry later"),
            ShardKvError::TooManySessions => write!(f, "shard session table full; retry later"),
            ShardKvError::Unsupported => write!(f, "operation not supported by the sharded KV"),
        }
    }
}

impl std::error::Error for ShardKvError {}

impl ShardKvError {
    /// The KV error this is, for the variants the two services share; `None` for the sharded
    /// KV's own (`WrongGroup`, `TooManySessions`, `Unsupported`).
    pub fn as_kv(self) -> Option<KvError> {
        match self {
            ShardKvError::WrongLeader { leader } => Some(KvError::WrongLeader { leader }),
            ShardKvError::KeyTooLarge => Some(KvError::KeyTooLarge),
            ShardKvError::ValueTooLarge => Some(KvError::ValueTooLarge),
            ShardKvError::SessionExpired => Some(KvError::SessionExpired),
            ShardKvError::Stale => Some(KvError::Stale),
            ShardKvError::Timeout => Some(KvError::Timeout),
            ShardKvError::Busy => Some(KvError::Busy),
            ShardKvError::WrongGroup { .. }
            | ShardKvError::TooManySessions
            | ShardKvError::Unsupported => None,
        }
    }
}

impl From<KvError> for ShardKvError {
    fn from(error: KvError) -> ShardKvError {
        match error {
            KvError::WrongLeader { leader } => ShardKvError::WrongLeader { leader },
            KvError::KeyTooLarge => ShardKvError::KeyTooLarge,
            KvError::ValueTooLarge => ShardKvError::ValueTooLarge,
            KvError::SessionExpired => ShardKvError::SessionExpired,
            KvError::Stale => ShardKvError::Stale,
            KvError::Timeout => ShardKvError::Timeout,
            KvError::Busy => ShardKvError::Busy,
        }
    }
}

/// A shard group's answer to a client request (the KV request shape, this service's error).
pub type ShardResponse = ServiceResponse<Reply, ShardKvError>;

/// One entry of a shard group's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardCommand {
    /// A client's write, with its session, sequence and the leader's stamp.
    Client(Command),
    /// Move to this configuration (applied only as the successor of the current one, and only
    /// once every shard is settled).
    Config(Config),
    /// The whole frozen shard in one entry, as versions before chunked transfers wrote it.
    /// Never proposed now; still applied (in configuration `config`, to a `Pulling` shard) so
    /// a log written by such a version replays to the same state.
    Install {
        /// The configuration the shard was gained in.
        config: u64,
        /// The shard.
        shard: ShardId,
        /// The frozen shard ([`super::shard::Shard::encode_transfer`]).
        payload: Bytes,
    },
    /// One part of shard `shard`, pulled from its previous owner as of configuration `config`:
    /// its keys after `after` (from the first key when `None`) up to a byte budget, and on the
    /// last part the shard's sessions. Applied only in configuration `config` while the shard
    /// is `Pulling` and its install has reached exactly `after`; the last part makes it
    /// `Serving`.
    InstallPart {
        /// The configuration the shard was gained in.
        config: u64,
        /// The shard.
        shard: ShardId,
        /// The key this part continues after (`None`: the first part).
        after: Option<Bytes>,
        /// The shard's last part: its payload ends with the sessions.
        last: Last,
        /// The part ([`super::shard::Shard::encode_part`]).
        payload: Bytes,
    },
    /// Delete shard `shard`, which the new owner has installed (applied only in configuration
    /// `config` while the shard is `BePulled`).
    Delete {
        /// The configuration the shard was lost in.
        config: u64,
        /// The shard.
        shard: ShardId,
    },
}

/// Whether a shard part is the shard's last (the one that carries the sessions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Last {
    /// More parts follow.
    No,
    /// The last part: installing it makes the shard `Serving`.
    Yes,
}

const FORMAT_V1: u8 = 1;
const TAG_CLIENT: u8 = 1;
const TAG_CONFIG: u8 = 2;
const TAG_INSTALL: u8 = 3;
const TAG_DELETE: u8 = 4;
const TAG_INSTALL_PART: u8 = 5;

impl ShardCommand {
    /// The entry bytes: version, tag, then the kind's fields (a client write is the KV
    /// service's own command encoding, length-prefixed).
    pub fn encode(&self) -> Bytes {
        if let ShardCommand::Client(command) = self {
            // Sized for the client's write, which would outgrow a default-sized buffer.
            let inner = command.encode();
            let mut buf = BytesMut::with_capacity(2 + inner.len());
            buf.put_u8(FORMAT_V1);
            buf.put_u8(TAG_CLIENT);
            buf.put_slice(&inner);
            return buf.freeze();
        }
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(FORMAT_V1);
        match self {
            ShardCommand::Client(_) => unreachable!("encoded above"),
            ShardCommand::Config(config) => {
                buf.put_u8(TAG_CONFIG);
                put_config(&mut buf, config);
            }
            ShardCommand::Install {
                config,
                shard,
                payload,
            } => {
                buf.put_u8(TAG_INSTALL);
                buf.put_u64_le(*config);
                buf.put_u32_le(*shard);
                put_bytes(&mut buf, payload);
            }
            ShardCommand::InstallPart {
                config,
                shard,
                after,
                last,
                payload,
            } => {
                buf.reserve(part_entry_bytes(after.as_ref(), payload));
                buf.put_u8(TAG_INSTALL_PART);
                buf.put_u64_le(*config);
                buf.put_u32_le(*shard);
                put_option(&mut buf, after.as_ref());
                buf.put_u8(u8::from(*last == Last::Yes));
                put_bytes(&mut buf, payload);
            }
            ShardCommand::Delete { config, shard } => {
                buf.put_u8(TAG_DELETE);
                buf.put_u64_le(*config);
                buf.put_u32_le(*shard);
            }
        }
        buf.freeze()
    }

    /// Decodes an entry written by [`ShardCommand::encode`].
    pub fn decode(data: &Bytes) -> Result<ShardCommand, DecodeError> {
        let mut buf = data.clone();
        let version = get_u8(&mut buf)?;
        if version != FORMAT_V1 {
            return Err(DecodeError::UnknownTag(version));
        }
        let command = match get_u8(&mut buf)? {
            TAG_CLIENT => return Ok(ShardCommand::Client(Command::decode(&buf)?)),
            TAG_CONFIG => ShardCommand::Config(get_config(&mut buf)?),
            TAG_INSTALL => ShardCommand::Install {
                config: get_u64(&mut buf)?,
                shard: get_u32(&mut buf)?,
                payload: get_bytes(&mut buf, MAX_SHARD_PART_BYTES)?,
            },
            TAG_INSTALL_PART => ShardCommand::InstallPart {
                config: get_u64(&mut buf)?,
                shard: get_u32(&mut buf)?,
                after: get_key_option(&mut buf)?,
                last: match get_u8(&mut buf)? {
                    0 => Last::No,
                    1 => Last::Yes,
                    other => return Err(DecodeError::UnknownTag(other)),
                },
                payload: get_bytes(&mut buf, MAX_SHARD_PART_BYTES)?,
            },
            TAG_DELETE => ShardCommand::Delete {
                config: get_u64(&mut buf)?,
                shard: get_u32(&mut buf)?,
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        if buf.has_remaining() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(command)
    }
}

/// An optional key (a part's cursor): [`put_option`]'s form, bounded by [`MAX_KEY_BYTES`].
pub(crate) fn get_key_option(buf: &mut Bytes) -> Result<Option<Bytes>, DecodeError> {
    match get_u8(buf)? {
        0 => Ok(None),
        1 => Ok(Some(get_bytes(buf, MAX_KEY_BYTES)?)),
        other => Err(DecodeError::UnknownTag(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kv::Op;
    use crate::shardctl::Replica;

    /// The errors the two services share map one to one, both ways; the sharded KV's own have
    /// no KV counterpart.
    #[test]
    fn shared_errors_map_to_kv_errors_and_back() {
        let shared = [
            KvError::WrongLeader { leader: 3 },
            KvError::KeyTooLarge,
            KvError::ValueTooLarge,
            KvError::SessionExpired,
            KvError::Stale,
            KvError::Timeout,
            KvError::Busy,
        ];
        for kv in shared {
            assert_eq!(ShardKvError::from(kv).as_kv(), Some(kv), "{kv:?}");
        }
        for own in [
            ShardKvError::WrongGroup { config: 4 },
            ShardKvError::TooManySessions,
            ShardKvError::Unsupported,
        ] {
            assert_eq!(own.as_kv(), None, "{own:?}");
        }
    }
    fn all() -> Vec<ShardCommand> {
        let config = Config {
            num: 3,
            shards: vec![1, 2, 0],
            groups: BTreeMap::from([(1, vec![Replica::on(4)]), (2, vec![Replica::on(5)])]),
        };
        vec![
            ShardCommand::Client(Command {
                client: 9,
                seq: 2,
                stamp_ms: 7,
                op: Op::Append {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                },
            }),
            ShardCommand::Config(config),
            ShardCommand::Install {
                config: 4,
                shard: 2,
                payload: Bytes::from_static(b"frozen"),
            },
            ShardCommand::InstallPart {
                config: 4,
                shard: 2,
                after: None,
                last: Last::No,
                payload: Bytes::from_static(b"first"),
            },
            ShardCommand::InstallPart {
                config: 4,
                shard: 2,
                after: Some(Bytes::new()),
                last: Last::Yes,
                payload: Bytes::new(),
            },
            ShardCommand::InstallPart {
                config: 4,
                shard: 2,
                after: Some(Bytes::from_static(b"k17")),
                last: Last::Yes,
                payload: Bytes::from_static(b"rest"),
            },
            ShardCommand::Delete {
                config: 4,
                shard: 1,
            },
        ]
    }

    /// Every entry kind survives the encoding unchanged.
    #[test]
    fn commands_round_trip() {
        for command in all() {
            assert_eq!(ShardCommand::decode(&command.encode()), Ok(command));
        }
    }

    /// A part's entry takes at most what [`part_entry_bytes`] says, the bound hosts check
    /// against their entry limit.
    #[test]
    fn part_entries_stay_within_their_estimate() {
        for command in all() {
            if let ShardCommand::InstallPart { after, payload, .. } = &command {
                let bound = part_entry_bytes(after.as_ref(), payload);
                assert!(command.encode().len() <= bound, "{command:?}");
            }
        }
    }

    /// Every truncation and every trailing byte is an error, not a panic.
    #[test]
    fn damaged_entries_are_errors() {
        for command in all() {
            let bytes = command.encode();
            for len in 0..bytes.len() {
                assert!(ShardCommand::decode(&bytes.slice(..len)).is_err());
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(ShardCommand::decode(&Bytes::from(longer)).is_err());
        }
    }
}
